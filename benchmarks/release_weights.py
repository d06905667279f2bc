"""Release a trained run as `weights/<name>.safetensors` plus a model card.

The best weights of the run are evaluated on the validation split in fp32 and, stored as fp16,
evaluated again; the fp16 file is shipped only if mean IU moves by less than 0.1 point (issue 8's
rule), otherwise fp32. The card records data, recipe, commit, the four FCN metrics, per-class IoU
and the licence note of the data. Example:

    .venv/bin/python benchmarks/release_weights.py runs/camvid_fcn4s_lite0 \
        --name camvid_fcn4s_lite0 --data-root ../shared/data/camvid

A model trained in stages (CamVid: configs/camvid_fcn4s_lite0.yaml, then the hi-res fine-tune
configs/camvid_fcn4s_lite0_hires.yaml initialised from it) is released from its last stage's run
with `--earlier-runs` naming the earlier stages' run directories, so that the card lists every
recipe and counts the training time of all stages.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from fcnseg.cli import main as fcnseg_main
from fcnseg.engine.checkpoint import (
    load_weights,
    save_weights,
    update_weights_metadata,
    write_weights,
)
from fcnseg.engine.loading import load_model
from fcnseg.io_utils import atomic_write

#: Largest mean-IU change (fraction) for which the fp16 file may replace the fp32 one.
FP16_TOLERANCE = 0.001
CAMVID_LICENCE = (
    "CamVid (Brostow, Fauqueur, Cipolla, 'Semantic Object Classes in Video: A High-Definition "
    "Ground Truth Database', Pattern Recognition Letters 2008), SegNet 11-class split: research "
    "and non-commercial use, with attribution. The weights are derived from it and from the "
    "EfficientNet-Lite0 ImageNet weights (Apache-2.0)."
)


def evaluate_file(
    weights: Path, data_root: str, split: str, out_json: Path, mode: str | None = "whole"
) -> dict:
    """`fcnseg eval` of a weights file; mode None runs the inference stored in the file."""
    args = ["eval", "--weights", str(weights), "--split", split, "--device", "cpu"]
    args += ["--data-root", data_root, "--out", str(out_json)]
    if mode is not None:
        args += ["--mode", mode]
    if fcnseg_main(args) != 0:
        raise SystemExit(f"evaluation of {weights} failed")
    return json.loads(out_json.read_text())


def write_fp16(source: Path, target: Path) -> None:
    tensors, metadata = load_weights(source)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
    write_weights(target, half, {**metadata, "dtype": "float16"})


def score_tables(scores: dict) -> str:
    """The four FCN scores and the per-class IoU / accuracy table, in percent, as Markdown."""
    accuracy = scores["per_class_accuracy"]
    rows = "\n".join(
        f"| {cls} | {100 * (iu or 0):.1f} | {100 * (accuracy[cls] or 0):.1f} |"
        for cls, iu in scores["per_class_iu"].items()
    )
    return f"""| pixel acc. | mean acc. | mean IU | f.w. IU |
|---|---|---|---|
| {100 * scores["pixel_accuracy"]:.1f} | {100 * scores["mean_accuracy"]:.1f} | {100 * scores["mean_iu"]:.1f} | {100 * scores["frequency_weighted_iu"]:.1f} |

| class | IoU | accuracy |
|---|---|---|
{rows}
"""


def stage_line(run_dir: Path, first: bool = False) -> tuple[str, str, float]:
    """One training stage: (card line, recipe path, minutes), from the run's config and summary."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    minutes = summary["elapsed_s"] / 60
    recipe = f"configs/{config['name']}.yaml"
    init = config["model"].get("init")
    start = ""
    if init:
        start = (
            f", initialised from {init}"
            if first
            else f", initialised from the previous stage ({init})"
        )
    teacher = config["train"].get("distill_from")
    if teacher:
        start += (
            f", distilling from {teacher} (weight {config['train']['distill_weight']}, "
            f"temperature {config['train']['distill_temperature']})"
        )
    line = (
        f"`{recipe}`{start}: {summary['stopped']} after {summary['steps']} steps "
        f"({summary['epochs_done']} epochs), {minutes:.0f} minutes"
    )
    return line, recipe, minutes


def card(
    name: str,
    run_dir: Path,
    scores: dict,
    dtype: str,
    size_mb: float,
    earlier_runs: tuple[Path, ...] = (),
) -> str:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    stages = [stage_line(run, i == 0) for i, run in enumerate((*earlier_runs, run_dir))]
    total_minutes = sum(minutes for _, _, minutes in stages)
    recipe_lines = "\n".join(f"  {i + 1}. {line}" for i, (line, _, _) in enumerate(stages))
    commands = "; then ".join(f"`fcnseg train --config {recipe}`" for _, recipe, _ in stages)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"""# {name}

FCN skip head on an ImageNet-pretrained encoder, trained by fcnseg on a 2-core CPU.

- Model: `{config["model"]["name"]}` (options {config["model"].get("options", {})}), {dtype},
  {size_mb:.1f} MB. Input: RGB, normalisation preset stored in the file's metadata.
- Data: CamVid 11 classes, SegNet split: trained on train (367 images), selected on val (101);
  void (id 11) ignored in loss and metrics.
- Recipe, stage by stage (resolved copies in each run's config.yaml); training wall clock
  {total_minutes:.0f} minutes in all on the 2-core CPU:
{recipe_lines}
- Commit: {commit}. Reproduce: {commands}, then
  `python benchmarks/release_weights.py RUN_DIR --name {name} --data-root ROOT`
  (with `--earlier-runs` naming the earlier stages' run directories).

## Validation scores ({scores["split"]}, {scores["images"]} images, full 360x480, mode {scores["mode"]})

{score_tables(scores)}
## Use

    fcnseg predict --weights weights/{name}.safetensors image.png --out predictions
    fcnseg eval --weights weights/{name}.safetensors --data-root ROOT --split test

## Licence

{CAMVID_LICENCE}
"""


def recommended_section(name: str, scales: list[float], scores: dict) -> str:
    """Card section for the inference stored in the file (what `fcnseg eval` runs by default)."""
    factors = " ".join(f"{scale:g}" for scale in scales)
    return f"""
## Default inference stored in the file: flip + scales {factors}

`fcnseg eval/predict --weights weights/{name}.safetensors` run it unless `--mode` is given
(`--mode whole` gives the table above). Scores on {scores["split"]} ({scores["images"]} images):

{score_tables(scores)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--out-dir", type=Path, default=Path("weights"))
    parser.add_argument(
        "--recommend-scales",
        type=float,
        nargs="+",
        default=None,
        help="store flip + these multi-scale factors as the file's default inference and add "
        "its scores to the card (chosen beforehand, e.g. with benchmarks/tta_scales.py)",
    )
    parser.add_argument(
        "--earlier-runs",
        type=Path,
        nargs="*",
        default=[],
        help="run directories of the earlier training stages, in order (listed on the card)",
    )
    parser.add_argument(
        "--note",
        type=Path,
        default=None,
        help="a Markdown file appended to the card (e.g. speed measured by another benchmark)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="best = the run's model.safetensors (best val mean IU during training); "
        "last = checkpoints/last.pt (the end of the schedule)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        best = args.run_dir / "model.safetensors"
        if args.checkpoint == "last":
            loaded = load_model(None, args.run_dir / "checkpoints" / "last.pt", None)
            model, meta = loaded.model, loaded.metadata
            best = tmp_dir / "last.safetensors"
            save_weights(best, model, meta.as_dict())
        fp32 = evaluate_file(best, args.data_root, args.split, tmp_dir / "fp32.json")
        half_path = tmp_dir / "fp16.safetensors"
        write_fp16(best, half_path)
        fp16 = evaluate_file(half_path, args.data_root, args.split, tmp_dir / "fp16.json")
        change = abs(fp16["mean_iu"] - fp32["mean_iu"])
        use_half = change < FP16_TOLERANCE
        print(
            f"mean IU fp32 {fp32['mean_iu']:.5f}, fp16 {fp16['mean_iu']:.5f}: "
            f"{'shipping fp16' if use_half else 'shipping fp32'}"
        )
        chosen, scores = (half_path, fp16) if use_half else (best, fp32)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        target = args.out_dir / f"{args.name}.safetensors"
        data = chosen.read_bytes()
        atomic_write(target, lambda path: path.write_bytes(data))
    size_mb = target.stat().st_size / 1e6
    dtype = "fp16" if use_half else "fp32"
    text = card(args.name, args.run_dir, scores, dtype, size_mb, tuple(args.earlier_runs))
    text += (
        f"\nfp32 mean IU {100 * fp32['mean_iu']:.2f}; fp16 mean IU {100 * fp16['mean_iu']:.2f}.\n"
    )
    if args.recommend_scales:
        inference = {"mode": "multiscale", "options": {"scales": args.recommend_scales}}
        update_weights_metadata(target, inference=inference)
        with tempfile.TemporaryDirectory() as tmp:
            recommended = evaluate_file(
                target, args.data_root, args.split, Path(tmp) / "r.json", mode=None
            )
        text += recommended_section(args.name, args.recommend_scales, recommended)
    if args.note is not None:
        text += "\n" + args.note.read_text()
    (args.out_dir / f"{args.name}.md").write_text(text)
    print(f"wrote {target} ({size_mb:.1f} MB) and {args.out_dir / (args.name + '.md')}")


if __name__ == "__main__":
    main()
