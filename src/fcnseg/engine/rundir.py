"""The run directory: what a training run leaves on disk, and where a resumed run picks up.

Layout (rank 0 writes it; other ranks hold a `RunDirectory` without a path, whose writers do
nothing, so the loop has one code path):

    config.yaml        the resolved recipe (every default and override filled in)
    versions.json      python, platform, fcnseg, torch, ... versions
    metrics.csv        one row per `train.log_every` steps and per epoch (METRIC_COLUMNS)
    val_scores.jsonl   every validation's full scores, per-class IU included
    tensorboard/       the same numbers as scalars
    checkpoints/       last.pt (every epoch end / checkpoint_every steps), best.pt
    model.safetensors  the best weights (else the last), self-describing
    summary.json       how the run ended

A resumed run reopens its directory and appends to metrics.csv and val_scores.jsonl.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.config import Config
from fcnseg.engine import distributed
from fcnseg.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights

METRIC_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "lr",
    "pixel_accuracy",
    "mean_accuracy",
    "mean_iu",
    "frequency_weighted_iu",
    "elapsed_s",
)

#: Per-validation scores with per-class IU, one JSON object a line, in the run directory.
VAL_SCORES_FILE = "val_scores.jsonl"


def resume_point(
    resume: str | Path | None, out: str | Path | None
) -> tuple[dict[str, Any] | None, str | Path | None]:
    """(checkpoint, run directory) to continue from `resume` (a run directory or a checkpoint in
    its `checkpoints/`), or (None, `out`) for a new run. Loaded before anything else, so a bad
    checkpoint is a one-line error that writes nothing."""
    if resume is None:
        return None, out
    checkpoint = load_checkpoint(resume)
    path = Path(resume)
    return checkpoint, path if path.is_dir() else path.parent.parent


def new_run_dir(config: Config, out: str | Path | None, force: bool) -> Path:
    """`out`, or `<out_root>/<name>-<timestamp>`; refuses a non-empty directory unless forced."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(config.out_root) / f"{config.name}-{stamp}"
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(
            f"{out}: run directory exists and is not empty; use --resume {out} to continue it, "
            "--force to overwrite, or another --out"
        )
    return out


def package_versions() -> dict[str, str]:
    """The versions that decide whether a run can be reproduced (written to versions.json)."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("fcnseg", "torch", "torchvision", "timm", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["cuda"] = str(torch.version.cuda)
    return versions


class RunDirectory:
    """Writers of one run directory; every method is a no-op when `path` is None (other ranks)."""

    def __init__(self, path: Path | None, resumed: bool) -> None:
        self.path = path
        self.writer = None
        if path is None:
            return
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.metrics_path = path / "metrics.csv"
        if not (resumed and self.metrics_path.exists()):
            with open(self.metrics_path, "w", newline="") as stream:
                csv.writer(stream).writerow(METRIC_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path / "tensorboard"))
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            self.writer = None

    @classmethod
    def open(
        cls, config: Config, out: str | Path | None, *, force: bool, resumed: bool
    ) -> RunDirectory:
        """Rank 0: create (or, resuming, reopen) the directory and write config.yaml and
        versions.json; other ranks get a path-less instance."""
        if not distributed.is_main():
            return cls(None, resumed)
        path = Path(out) if resumed else new_run_dir(config, out, force)  # type: ignore[arg-type]
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(config.to_yaml())
        (path / "versions.json").write_text(json.dumps(package_versions(), indent=2) + "\n")
        return cls(path, resumed)

    def log(self, row: dict[str, Any]) -> None:
        """Append a metrics.csv row (missing columns empty) and its numbers to TensorBoard."""
        if self.path is None:
            return
        with open(self.metrics_path, "a", newline="") as stream:
            csv.writer(stream).writerow([row.get(column, "") for column in METRIC_COLUMNS])
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, float):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()

    def log_validation(self, epoch: int, step: int, scores: dict[str, Any]) -> None:
        """Append one validation's full scores, per-class IU included, to val_scores.jsonl.

        metrics.csv keeps a fixed set of columns, but a recipe is often decided by one thin
        class (CamVid's Pole), whose curve needs its own record; TensorBoard gets each class's
        IU as `val_iu/<class>` for the same reason.
        """
        if self.path is None:
            return
        line = json.dumps({"epoch": epoch, "step": step, **scores})
        with open(self.path / VAL_SCORES_FILE, "a") as stream:
            stream.write(line + "\n")
        if self.writer is not None:
            for name, value in scores.get("per_class_iu", {}).items():
                if value is not None:
                    self.writer.add_scalar(f"val_iu/{name}", value, step)
            self.writer.flush()

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> None:
        """`checkpoints/<name>` (last.pt, best.pt), written atomically."""
        if self.path is not None:
            save_checkpoint(self.path / "checkpoints" / name, state)

    def save_weights(self, model: nn.Module, metadata: dict[str, Any]) -> None:
        """model.safetensors: the weights with their self-description."""
        if self.path is not None:
            save_weights(self.path / "model.safetensors", model, metadata)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json: how the run ended (read by benchmarks and people, not by resume)."""
        if self.path is not None:
            (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
