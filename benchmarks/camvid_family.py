"""The FCN family on one CamVid bench (issue 25 item 5): accuracy on val against speed at 360x480.

Question answered: trained under one CPU budget, where do SegNet, SegNet-Basic, Bayesian
SegNet-Basic, U-Net, PSPNet, ENet and LinkNet land against the FCN models, in mean IU and in
images/s, and does any of them beat the shipped fast CamVid model on both?

Each row is a weights file (a `fcnseg train` run's model.safetensors, or a shipped model) and gets
- val scores from `fcnseg eval --trimap 2,5,10,20` run as a subprocess (mean IU, per-class IU,
  the trimap bands; whole 360x480 images, each net's own normalisation and input scale),
- images/s at 360x480, batch 1, torch eager and onnxruntime, every row timed round-robin in ONE
  process so that the shared machine's load falls on every row alike (medians of --rounds),
- parameters, GFLOPs of one 360x480 forward (torch's FLOP counter, multiply and add counted
  apart), and the peak RSS of a fresh process that loads the row and runs 10 forwards
  (camvid_pareto.peak_rss_mib).

Writes the markdown table to stdout, the numbers to --json, and the plot of mean IU against
images/s (onnxruntime, torch as hollow markers) to --plot.

Run (after training the recipes, see benchmarks/RESULTS.md "The FCN family on CamVid"):
    .venv/bin/python benchmarks/camvid_family.py --data-root ../shared/data/camvid \
        --run segnet_basic=/work/bench25/segnet_basic ...
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from camvid_pareto import SIZE, Row, open_row, peak_rss_mib  # benchmarks/ is on sys.path
from engines_camvid import load as load_average

from fcnseg.engine.loading import load_model
from fcnseg.inference.bench import count_gflops, time_interleaved
from fcnseg.inference.graph_cache import RuntimeUnusable

ENGINES = ("torch", "onnxruntime")
TRIMAP_WIDTHS = "2,5,10,20"


def score(label: str, weights: Path, data_root: str, work: Path, threads: int) -> dict[str, Any]:
    """`fcnseg eval` of one weights file on CamVid val with trimap bands (cached in --work)."""
    out = work / f"eval-{label}.json"
    if not out.is_file():
        command = [
            sys.executable,
            "-m",
            "fcnseg.cli",
            "eval",
            "--weights",
            str(weights),
            "--data-root",
            data_root,
            "--format",
            "camvid",
            "--trimap",
            TRIMAP_WIDTHS,
            "--out",
            str(out),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def with_recomputed_bn(weights: Path, data_root: str, batches: int, work: Path) -> Path:
    """A copy of `weights` whose BN statistics are averaged over the first `batches` batches of
    4 CamVid training images (the SegNet release's compute_bn_statistics.py; what
    `train.bn_statistics=recompute` does before each validation) for runs trained before that
    option existed."""
    from fcnseg.engine.bn_statistics import recompute_on_training_set
    from fcnseg.engine.checkpoint import load_weights, write_weights
    from fcnseg.engine.run_eval import eval_split

    copy = work / f"{weights.parent.name}-bn{batches}.safetensors"
    if copy.is_file():
        return copy
    tensors, meta = load_weights(weights)
    loaded = load_model(weights=weights)
    train_set = eval_split(loaded, data_format="camvid", data_root=data_root, split="train")[0]
    recompute_on_training_set(loaded.model, train_set, 4, batches)
    state = loaded.model.state_dict()
    if set(state) != set(tensors):
        raise SystemExit(f"{weights}: the model's state keys differ from the file's")
    write_weights(copy, {k: v.detach().contiguous() for k, v in state.items()}, dict(meta))
    return copy


def _cell(row: dict[str, Any], key: str, engine: str, spec: str) -> str:
    """A number of the table, or "refused" where the export check refused that engine."""
    value = row[key].get(engine)
    return "refused" if value is None else format(value, spec)


def cost(weights: Path) -> tuple[int, float, int]:
    """(parameters, GFLOPs at 360x480, input bands) of the model the weights describe."""
    model = load_model(weights=weights).model.eval()
    bands = int(getattr(model, "in_channels", 3) or 3)
    parameters = sum(p.numel() for p in model.parameters())
    return parameters, count_gflops(model, torch.zeros(1, bands, *SIZE)), bands


def parse_rows(args: argparse.Namespace) -> dict[str, Path]:
    """label -> weights: the shipped FCN models first, then each --run / --weights."""
    rows = {
        "FCN-4s lite0 fast (shipped)": Path("weights/camvid_fcn4s_lite0_fast.safetensors"),
        "FCN-4s lite0 two-stage (shipped)": Path("weights/camvid_fcn4s_lite0.safetensors"),
    }
    for spec in args.run:
        label, run = spec.split("=", 1)
        rows[label] = Path(run) / "model.safetensors"
    for label, path in rows.items():
        if not path.is_file():
            raise SystemExit(f"{path}: no weights for row {label!r}; train it or drop the row")
    return rows


def plot(results: dict[str, dict[str, Any]], path: Path, title: str, threads: int) -> None:
    """Mean IU against images/s: filled markers onnxruntime, hollow torch, one colour a row."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.5, 5.5), dpi=110)
    colours = plt.get_cmap("tab10")
    for index, (label, row) in enumerate(results.items()):
        colour = colours(index % 10)
        iu = 100 * row["mean_iu"]
        eager = row["images_per_s"]["torch"]
        ort = row["images_per_s"].get("onnxruntime", eager)  # refused export: torch only
        axes.plot([eager, ort], [iu, iu], color=colour, linewidth=1, alpha=0.6)
        axes.scatter([eager], [iu], facecolors="none", edgecolors=[colour], s=50)
        axes.scatter([ort], [iu], color=colour, s=50, label=label)
        axes.annotate(
            label.replace(" (shipped)", ""),
            (ort, iu),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel(
        f"images/s at 360x480, batch 1, {threads} CPU thread(s) (log scale; filled: "
        "onnxruntime, hollow: torch eager)"
    )
    axes.set_ylabel("CamVid val mean IU (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", default=[], help="LABEL=RUN_DIR (repeatable)")
    parser.add_argument("--data-root", default="../shared/data/camvid")
    parser.add_argument("--work", default="/tmp/fcnseg-family", help="eval JSONs go here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--bn-recompute",
        action="append",
        default=[],
        help="LABEL=BATCHES: score and time that row with BN statistics averaged over BATCHES "
        "batches of 4 training images (for runs trained without train.bn_statistics=recompute)",
    )
    parser.add_argument("--json", default="benchmarks/camvid_family.json")
    parser.add_argument("--plot", default="benchmarks/camvid_family.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = parse_rows(args)
    for spec in args.bn_recompute:
        label, batches = spec.rsplit("=", 1)
        rows[label] = with_recomputed_bn(rows[label], args.data_root, int(batches), work)

    results: dict[str, dict[str, Any]] = {}
    for label, weights in rows.items():
        scores = score(
            label.split(" (")[0].replace(" ", "_"), weights, args.data_root, work, args.threads
        )
        parameters, gflops, _ = cost(weights)
        results[label] = {
            "weights": str(weights),
            "mean_iu": scores["mean_iu"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "mean_accuracy": scores["mean_accuracy"],
            "per_class_iu": scores["per_class_iu"],
            "trimap_mean_iu": {w: band["mean_iu"] for w, band in scores["trimap"].items()},
            "parameters": parameters,
            "gflops": gflops,
        }
        print(f"# scored {label}: mean IU {100 * scores['mean_iu']:.2f}", file=sys.stderr)

    opened: dict[tuple[str, str], Any] = {}
    for label, weights in rows.items():
        for engine in ENGINES:
            try:
                opened[(label, engine)] = open_row(Row(label, weights, 1.0, engine))[0]
            except RuntimeUnusable as refusal:  # the export check refused the graph
                results[label].setdefault("refused", {})[engine] = str(refusal).split(": ", 1)[-1]
    image = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    calls = {key: (lambda run=runnable: run(image)) for key, runnable in opened.items()}
    started = datetime.datetime.now(datetime.UTC)
    before = load_average()
    with torch.inference_mode():
        times = time_interleaved(calls, args.rounds, warmup=2)
    after = load_average()
    for label, weights in rows.items():
        results[label]["images_per_s"] = {
            engine: 1 / statistics.median(times[(label, engine)])
            for engine in ENGINES
            if (label, engine) in times
        }
        results[label]["peak_rss_mib"] = {
            engine: peak_rss_mib(Row(label, weights, 1.0, engine), args.threads)
            for engine in ENGINES
            if (label, engine) in times
        }

    header = (
        f"{started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {args.threads} threads, batch 1, {SIZE[0]}x{SIZE[1]}, "
        f"{args.rounds} rounds round-robin; load average (1/5/15 min) {before} before timing, "
        f"{after} after"
    )
    print(f"# {header}\n")
    classes = list(next(iter(results.values()))["per_class_iu"])
    print(
        "| model | val mean IU | pixel acc | trimap 2 px / 10 px mean IU | params (M) | GFLOPs | "
        "images/s torch | images/s onnxruntime | peak RSS MiB torch / ort |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, row in results.items():
        print(
            f"| {label} | {100 * row['mean_iu']:.2f} | {100 * row['pixel_accuracy']:.1f} | "
            f"{100 * row['trimap_mean_iu']['2']:.1f} / {100 * row['trimap_mean_iu']['10']:.1f} | "
            f"{row['parameters'] / 1e6:.2f} | {row['gflops']:.1f} | "
            f"{_cell(row, 'images_per_s', 'torch', '.2f')} | "
            f"{_cell(row, 'images_per_s', 'onnxruntime', '.2f')} | "
            f"{_cell(row, 'peak_rss_mib', 'torch', '.0f')} / "
            f"{_cell(row, 'peak_rss_mib', 'onnxruntime', '.0f')} |"
        )
    print("\nPer-class IU (%):\n")
    print("| model | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for label, row in results.items():
        cells = " | ".join(f"{100 * row['per_class_iu'][name]:.1f}" for name in classes)
        print(f"| {label} | {cells} |")
    Path(args.json).write_text(json.dumps({"header": header, "rows": results}, indent=1) + "\n")
    plot(
        results,
        Path(args.plot),
        f"CamVid val: the FCN family on one CPU budget ({header[:16]})",
        args.threads,
    )
    for label, row in results.items():
        for engine, reason in row.get("refused", {}).items():
            print(f"\n{label}, {engine}: refused by the export check: {reason}")
    print(f"\n# load average after: {load_average()}")


if __name__ == "__main__":
    main()
