"""Learning curve of a run: training loss and validation mean IU against step, as a PNG.

Steps, not wall-clock time, go on the x axis: a resumed run's clock restarts, its steps do not.
`--classes` adds those classes' val IU, read from the run's val_scores.jsonl (runs trained
before that file existed have only the mean).

    .venv/bin/python benchmarks/plot_learning_curve.py runs/camvid_fcn4s_lite0 \
        --out benchmarks/camvid_fcn4s_lite0_curve.png --classes Pole
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.csv; pass a run directory written by `fcnseg train`")
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def describe_batch(run_dir: Path) -> str:
    """'batch B' (x accumulation) from the run's resolved config.yaml, for the x-axis label."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "batch unknown"
    train = (yaml.safe_load(path.read_text()) or {}).get("train", {})
    batch, accumulate = train.get("batch_size", "?"), train.get("accumulate", 1)
    return f"batch {batch}" + (f" x {accumulate} accumulated" if accumulate != 1 else "")


def read_class_curves(run_dir: Path, classes: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Val IU (%) by step of each named class; a repeated step (after a resume) keeps the last."""
    if not classes:
        return {}
    path = run_dir / "val_scores.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no per-class scores in this run; drop --classes")
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        by_step[int(record["step"])] = record["per_class_iu"]
    curves = {}
    for name in classes:
        if not any(name in scores for scores in by_step.values()):
            raise SystemExit(f"--classes {name}: not a class of this run")
        curves[name] = [
            (step, 100 * scores[name])
            for step, scores in sorted(by_step.items())
            if scores.get(name) is not None
        ]
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", nargs="*", default=[], help="also plot these classes' IU")
    args = parser.parse_args()
    class_curves = read_class_curves(args.run_dir, args.classes)
    rows = read_metrics(args.run_dir)
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    val = [(int(r["step"]), 100 * float(r["mean_iu"])) for r in rows if r["mean_iu"]]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(*zip(*train, strict=True), color="tab:blue", linewidth=1, label="train loss")
    loss_axis.set_xlabel(f"optimiser step ({describe_batch(args.run_dir)})")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    iu_axis = loss_axis.twinx()
    if val:
        iu_axis.plot(*zip(*val, strict=True), color="tab:red", marker="o", label="val mean IU")
    for name, curve in class_curves.items():
        iu_axis.plot(*zip(*curve, strict=True), linestyle="--", marker=".", label=f"val {name} IU")
    iu_axis.set_ylabel("val IU (%)", color="tab:red")
    if class_curves:
        iu_axis.legend(loc="lower right")
    loss_axis.set_title(f"{args.run_dir.name}: training loss and validation IU")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
