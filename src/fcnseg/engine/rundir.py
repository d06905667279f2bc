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

A resumed run reopens its directory and appends to metrics.csv and val_scores.jsonl, after
dropping the rows written past its checkpoint's step (they belong to the part of the run that
was lost, and the resumed run writes them again).

Hardening (issue 14): one writer at a time holds an exclusive `flock` on `.lock` inside the
directory (a second `train --resume RUN` or `--out RUN --force` is refused in one line and
writes nothing); temporary files left by killed atomic writes (`.<name>.*.tmp`) are removed
when the directory is opened; every file is written with the mode `open()` would give it
(0666 minus the umask), atomically where a torn file would matter (config, summary).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.config import Config
from fcnseg.engine import distributed
from fcnseg.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from fcnseg.errors import OutputError
from fcnseg.io_utils import atomic_write

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
#: The file whose `flock` marks the directory as in use by one training process.
LOCK_FILE = ".lock"
#: Folders of a run directory that atomic writes put temporary files in.
ATOMIC_FOLDERS = (".", "checkpoints")


class RunLock:
    """An exclusive, non-blocking `flock` on `<run>/.lock`, held while a process trains there.

    Why flock: the kernel drops it when the holder dies (SIGKILL included), so a crashed run
    never leaves a stale lock behind, and it needs no clean-up. The lock file itself stays (it
    is empty but for the holder's pid, read for the error message); deleting it on release
    would let a waiting process lock an unlinked inode while a third creates a new one.
    """

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock `run_dir` (an existing directory) or raise OutputError naming the holder."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = ""
            try:
                pid = path.read_text().strip()
                holder = f" (pid {pid})" if pid.isdigit() else ""
            except OSError:
                pass
            raise OutputError(
                f"{run_dir}: another fcnseg process{holder} is training in this run directory; "
                "wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(run_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def run_dir_of(resume: str | Path) -> Path:
    """The run directory of a `--resume` source: itself, or the run holding its checkpoint."""
    path = Path(resume)
    return path if path.is_dir() else path.parent.parent


def claim_run_directory(
    resume: str | Path | None, out: str | Path | None, force: bool
) -> RunLock | None:
    """Lock the run directory this process will write before anything reads or builds.

    Resuming, the directory exists and is locked now, so the checkpoint read next cannot be
    replaced under us and a second resume is refused before it builds anything. A new run
    into an existing non-empty `out` is refused here unless forced (and nothing is written into
    it); forced, it is locked like a resumed one. A new or empty directory is locked by
    `RunDirectory.open` once it exists. Only rank 0 writes, so only rank 0 locks.
    """
    if not distributed.is_main():
        return None
    if resume is not None:
        run_dir = run_dir_of(resume)
        return RunLock.acquire(run_dir) if run_dir.is_dir() else None
    if out is None:
        return None
    path = Path(out)
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise _not_empty(path)
        return RunLock.acquire(path)
    return None


def _not_empty(path: Path) -> OutputError:
    return OutputError(
        f"{path}: run directory exists and is not empty; use --resume {path} to continue it, "
        "--force to overwrite, or another --out"
    )


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete `.<name>.*.tmp` files that killed atomic writes left (checkpoints are ~MBs each).

    Safe only under the run lock: then no other process can be writing one right now.
    """
    removed = []
    for folder in ATOMIC_FOLDERS:
        directory = run_dir / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _row_step(fields: list[str], step_column: int) -> int | None:
    try:
        return int(fields[step_column])
    except (IndexError, ValueError):
        return None


def truncate_rows_after(run_dir: Path, step: int) -> None:
    """Drop metrics.csv rows and val_scores.jsonl records past `step` (and torn last lines).

    A run killed after its last checkpoint has logged rows that the resumed run, starting again
    from that checkpoint, logs once more; without this the files would hold them twice. The
    files are rewritten atomically, so a kill during the rewrite loses nothing.
    """
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        text = metrics.read_text()
        lines = text.splitlines(keepends=True)
        kept = lines[:1]
        column = METRIC_COLUMNS.index("step")
        for line in lines[1:]:
            if not line.endswith("\n"):
                continue  # torn by a kill mid-append
            fields = next(csv.reader(io.StringIO(line)), [])
            row_step = _row_step(fields, column)
            if row_step is not None and row_step <= step:
                kept.append(line)
        if kept != lines:
            atomic_write(metrics, lambda tmp: tmp.write_text("".join(kept)))
    scores = run_dir / VAL_SCORES_FILE
    if scores.is_file():
        lines = scores.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if line.endswith("\n") and isinstance(record, dict):
                if isinstance(record.get("step"), int) and record["step"] <= step:
                    kept.append(line)
        if kept != lines:
            atomic_write(scores, lambda tmp: tmp.write_text("".join(kept)))


def _write_text(path: Path, text: str) -> None:
    """A small file written atomically (a kill never leaves half a config or summary)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


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
        raise _not_empty(out)
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

    def __init__(self, path: Path | None, resumed: bool, lock: RunLock | None = None) -> None:
        self.path = path
        self.writer = None
        self.lock = lock
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
        cls,
        config: Config,
        out: str | Path | None,
        *,
        force: bool,
        resumed: bool,
        lock: RunLock | None = None,
        resume_step: int | None = None,
    ) -> RunDirectory:
        """Rank 0: create (or, resuming, reopen) the directory under its lock, clear what a
        killed run left (stale temporaries; rows past `resume_step`), and write config.yaml and
        versions.json; other ranks get a path-less instance.

        `lock` is the one `claim_run_directory` took; without it the directory is locked here.
        """
        if not distributed.is_main():
            return cls(None, resumed)
        path = Path(out) if resumed else new_run_dir(config, out, force)  # type: ignore[arg-type]
        path.mkdir(parents=True, exist_ok=True)
        if lock is None or not lock.held:
            lock = RunLock.acquire(path)
        try:
            remove_stale_temporaries(path)
            if resumed and resume_step is not None:
                truncate_rows_after(path, resume_step)
            elif not resumed:
                # A forced run into an old directory starts its own records.
                (path / VAL_SCORES_FILE).unlink(missing_ok=True)
            _write_text(path / "config.yaml", config.to_yaml())
            _write_text(path / "versions.json", json.dumps(package_versions(), indent=2) + "\n")
            return cls(path, resumed, lock)
        except BaseException:
            lock.release()
            raise

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
            _write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        """Close TensorBoard's writer (the lock is released by `release`, after the summary)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def release(self) -> None:
        """Give up the run lock: another process may now resume this directory."""
        if self.lock is not None:
            self.lock.release()
