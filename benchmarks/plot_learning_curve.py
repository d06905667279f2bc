"""Learning curve of a run: training loss and validation mean IU against step, as a PNG.

Steps, not wall-clock time, go on the x axis: a resumed run's clock restarts, its steps do not.

    .venv/bin/python benchmarks/plot_learning_curve.py runs/camvid_fcn4s_lite0 \
        --out benchmarks/camvid_fcn4s_lite0_curve.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.csv; pass a run directory written by `fcnseg train`")
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = read_metrics(args.run_dir)
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    val = [(int(r["step"]), 100 * float(r["mean_iu"])) for r in rows if r["mean_iu"]]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(*zip(*train, strict=True), color="tab:blue", linewidth=1, label="train loss")
    loss_axis.set_xlabel("step (batch 8)")
    loss_axis.set_ylabel("training loss (weighted CE)", color="tab:blue")
    iu_axis = loss_axis.twinx()
    if val:
        iu_axis.plot(*zip(*val, strict=True), color="tab:red", marker="o", label="val mean IU")
    iu_axis.set_ylabel("val mean IU (%)", color="tab:red")
    loss_axis.set_title(f"{args.run_dir.name}: CamVid train 367 / val 101 at 360x480")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
