"""Hostile run directories (issue 14, part B): what a careless user, a crash or a full disk does
to `fcnseg train`, each case asserting the exit status, a one-line stderr without a traceback,
that nothing was lost and that nothing was written outside the output folder.

Kinds (see CASES at the end, which RESULTS.md's table counts): locks, pre-flight failures (a bad
file at different positions of the training list, and in the validation list), stale temporary
files, resumed rows, a full disk, file modes, SIFT Flow (multi-head) data check / class weights /
train / eval, an empty validation shard under torchrun, and the SIGKILL fault test.

The network is the registry's paper FCN-32s at 1/64 width (`model.options={width_divisor: 64}`)
on 32x32 images, one torch thread: a CLI training run takes a fraction of a second.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.engine.checkpoint import load_checkpoint

HERE = Path(__file__).resolve()

TINY_MODEL = [
    "model.name=fcn32s_vgg16_padded",
    "model.options={width_divisor: 64}",
    "model.pretrained=false",
]
TRAIN = [
    "data.crop_size=[32, 32]",
    "data.scale_range=[1.0, 1.0]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.device=cpu",
    "train.progress=false",
    "train.log_every=1",
    "train.seed=5",
]
SYNTHETIC = ["data.format=synthetic", "data.options={num_images: 4, size: [32, 32]}"]
SYNTHETIC += ["data.val_options={num_images: 2}"]
CAMVID_CLASSES, CAMVID_VOID = 11, 11


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: two threads on a loaded 2-core machine make each step ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A working directory inside tmp_path (the only place a command may write)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


# ------------------------------------------------------------------------------ helpers
def snapshot(root: Path, exclude: Path | None = None) -> dict[str, tuple[int, str]]:
    """Relative path -> (mode, sha1) of every file under `root` (but `exclude`)."""
    state = {}
    for path in sorted(root.rglob("*")):
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            state[str(path.relative_to(root))] = (path.stat().st_mode & 0o777, digest)
    return state


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run `fcnseg ARGS` in-process; returns (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2, exactly one stderr line, no traceback, and the line names what it must."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def train_synthetic(capsys, out: Path, *extra: str) -> None:
    code, err = cli(capsys, "train", "--out", out, *TINY_MODEL, *SYNTHETIC, *TRAIN, *extra)
    assert code == 0, err


def metric_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))


def val_records(run: Path) -> list[dict]:
    path = run / "val_scores.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def no_temporaries(run: Path) -> bool:
    return not [p for p in run.rglob("*.tmp")]


# ---------------------------------------------------------------------- CamVid fixture
def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def camvid_root(root: Path, train: int = 6, val: int = 2, size: int = 32) -> Path:
    """A CamVid copy (SegNet list layout) of `train` + `val` random 32x32 pairs."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        lines = []
        for index in range(count):
            stem = f"{split}{index:03d}"
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            mask = rng.integers(0, CAMVID_CLASSES + 1, (size, size), dtype=np.uint8)
            write_png(root / split / f"{stem}.png", image)
            write_png(root / f"{split}annot" / f"{stem}.png", mask)
            lines.append(
                f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png"
            )
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def camvid_args(root: Path) -> list[str]:
    """`--data-root ROOT` and the overrides for the CamVid fixture (options before overrides)."""
    return ["--data-root", str(root), *TINY_MODEL, *TRAIN, "data.format=camvid", "data.options={}"]


def spoil(root: Path, split: str, index: int, how: str) -> Path:
    """Make sample `index` of `split` bad in one of the ways users' data is bad."""
    stem = f"{split}{index:03d}"
    image, mask = root / split / f"{stem}.png", root / f"{split}annot" / f"{stem}.png"
    if how == "garbage":  # not an image at all (a renamed text file)
        image.write_bytes(b"this is not a PNG\n" * 20)
        return image
    if how == "truncated":  # a valid header, half the data
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return image
    if how == "size":  # the mask of another resolution
        write_png(mask, np.zeros((16, 16), dtype=np.uint8))
        return mask
    if how == "labels":  # a class id the dataset does not have
        write_png(mask, np.full((32, 32), 42, dtype=np.uint8))
        return mask
    if how == "missing":
        image.unlink()
        return image
    raise ValueError(how)


# ================================================================================ locks
def test_lock_refuses_resume_while_another_process_trains(work, capsys):
    from fcnseg.engine.rundir import RunLock

    run = work / "run"
    train_synthetic(capsys, run)
    before = snapshot(work)
    holder = RunLock.acquire(run)  # another open file description: flock conflicts
    try:
        code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    finally:
        holder.release()
    assert_one_line_error(code, err, str(run), "another fcnseg process", f"pid {os.getpid()}")
    assert snapshot(work) == before


def test_lock_refuses_forced_out_while_another_process_trains(work, capsys):
    from fcnseg.engine.rundir import RunLock

    run = work / "run"
    train_synthetic(capsys, run)
    before = snapshot(work)
    holder = RunLock.acquire(run)
    try:
        code, err = cli(capsys, "train", "--out", run, "--force", *TINY_MODEL, *SYNTHETIC, *TRAIN)
    finally:
        holder.release()
    assert_one_line_error(code, err, "another fcnseg process")
    assert snapshot(work) == before


def test_lock_held_by_a_real_process_then_freed_by_its_death(work, capsys):
    """A second process holds the flock; killing it (SIGKILL) frees the directory."""
    run = work / "run"
    train_synthetic(capsys, run)
    script = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(run / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(work)
        code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
        assert_one_line_error(code, err, f"pid {holder.pid}")
        assert snapshot(work) == before
    finally:
        holder.kill()
        holder.wait(timeout=30)
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, err
    assert load_checkpoint(run)["epoch"] == 2


def test_lock_is_released_after_a_run_and_after_a_failed_one(work, capsys, monkeypatch):
    from fcnseg.engine.rundir import RunLock

    run = work / "run"
    train_synthetic(capsys, run)
    RunLock.acquire(run).release()  # a finished run holds nothing
    import fcnseg.engine.loop as loop

    def boom(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(loop.TrainingLoop, "train_one_epoch", boom)
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert_one_line_error(code, err, "Input/output error")
    RunLock.acquire(run).release()  # a failed run released it too


def test_existing_run_without_force_is_refused_before_anything_is_written(work, capsys):
    run = work / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(work)
    code, err = cli(capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert_one_line_error(code, err, "--resume", "--force")
    assert snapshot(work) == before  # not even a lock file


# ============================================================================ preflight
@pytest.mark.parametrize(
    ("position", "how", "expected"),
    [
        ("first", "garbage", "not a readable image"),
        ("middle", "truncated", "cannot decode"),
        ("last", "size", "re-export it at the image's size"),
        ("middle", "labels", "label values [42]"),
        ("last", "missing", "missing"),
    ],
)
def test_preflight_bad_training_file_stops_before_the_run_directory(
    work, capsys, position, how, expected
):
    root = camvid_root(work / "CamVid")
    index = {"first": 0, "middle": 3, "last": 5}[position]
    bad = spoil(root, "train", index, how)
    before = snapshot(work)
    run = work / "run"
    code, err = cli(capsys, "train", "--out", run, *camvid_args(root))
    assert_one_line_error(code, err, bad.name, expected)
    assert not run.exists()
    assert snapshot(work) == before


def test_preflight_bad_validation_file(work, capsys):
    root = camvid_root(work / "CamVid")
    bad = spoil(root, "val", 1, "size")
    run = work / "run"
    code, err = cli(capsys, "train", "--out", run, *camvid_args(root))
    assert_one_line_error(code, err, "validation data", bad.name)
    assert not run.exists()


def test_preflight_reads_every_header_of_a_large_list(work, capsys):
    """Beyond PREFLIGHT_FULL_DECODE samples only a spread sample is decoded, but every file's
    header is read: a non-image at an index outside the decoded sample is still found."""
    from fcnseg.data.check import PREFLIGHT_FULL_DECODE, preflight_indices

    count = PREFLIGHT_FULL_DECODE + 16
    root = camvid_root(work / "CamVid", train=count, val=1, size=32)
    sampled = set(preflight_indices(count))
    index = next(i for i in range(count) if i not in sampled)
    bad = spoil(root, "train", index, "garbage")
    code, err = cli(capsys, "train", "--out", work / "run", *camvid_args(root))
    assert_one_line_error(code, err, bad.name)
    assert not (work / "run").exists()
    assert 0 in sampled and count - 1 in sampled and len(sampled) == PREFLIGHT_FULL_DECODE


def test_preflight_on_resume_leaves_the_run_as_it_was(work, capsys):
    root = camvid_root(work / "CamVid")
    run = work / "run"
    code, err = cli(capsys, "train", "--out", run, *camvid_args(root))
    assert code == 0, err
    spoil(root, "train", 2, "labels")
    before = snapshot(run)
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2", "--data-root", root)
    assert_one_line_error(code, err, "train002.png")
    assert snapshot(run) == before


def test_preflight_keeps_the_run_identical(tmp_path):
    """The pre-flight decodes samples but draws nothing from the global RNG streams."""
    from test_engine_train import run_tiny

    import fcnseg.engine.train as train_module

    first = run_tiny(tmp_path / "a", epochs=1, checkpoint_every=0)
    original = train_module.preflight
    train_module.preflight = lambda *args, **kwargs: None
    try:
        second = run_tiny(tmp_path / "b", epochs=1, checkpoint_every=0)
    finally:
        train_module.preflight = original
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert first.steps == second.steps


# =========================================================================== stale tmp
def test_stale_temporaries_are_removed_on_resume_and_nothing_else(work, capsys):
    run = work / "run"
    train_synthetic(capsys, run)
    stale = [
        run / "checkpoints" / ".last.pt.k2j3h4.tmp",
        run / ".summary.json.x8y7.tmp",
        run / ".model.safetensors.abcd.tmp",
    ]
    for path in stale:
        path.write_bytes(os.urandom(4096))
    keep = run / "notes.tmp"  # a user's file, not an atomic write's
    keep.write_text("mine")
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, err
    assert not any(path.exists() for path in stale)
    assert keep.read_text() == "mine"
    assert no_temporaries(run) or [p.name for p in run.rglob("*.tmp")] == ["notes.tmp"]


# ======================================================================== resumed rows
def _steps(rows: list[dict]) -> list[tuple[str, str]]:
    return [(str(r["epoch"]), str(r["step"])) for r in rows]


def test_resume_drops_rows_past_the_checkpoint(work, capsys):
    """A run killed after logging rows past its last checkpoint (emulated: rows and a torn
    line appended) resumes to exactly the rows of an uninterrupted run."""
    reference, run = work / "reference", work / "run"
    train_synthetic(capsys, reference, "train.epochs=2")
    train_synthetic(capsys, run)
    with open(run / "metrics.csv", "a") as stream:
        stream.write("1,3,0.5,0.01,,,,,1.0\n1,4,0.4,0.01,,,,,2.0\n2,4,0.4")  # torn last line
    with open(run / "val_scores.jsonl", "a") as stream:
        stream.write(json.dumps({"epoch": 2, "step": 4, "mean_iu": 0.9}) + '\n{"epoch": 3,')
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, err
    assert _steps(metric_rows(run)) == _steps(metric_rows(reference))
    assert _steps(val_records(run)) == _steps(val_records(reference))
    assert [r["mean_iu"] for r in val_records(run)] == [
        pytest.approx(r["mean_iu"]) for r in val_records(reference)
    ]


def test_resume_of_a_finished_run_appends_without_duplicates(work, capsys):
    run = work / "run"
    train_synthetic(capsys, run)
    first = metric_rows(run)
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=3")
    assert code == 0, err
    rows = metric_rows(run)
    assert rows[: len(first)] == first  # nothing lost
    assert len(set(_steps(rows))) == len(rows)  # nothing twice
    assert [r["step"] for r in val_records(run)] == [2, 4, 6]


def test_forced_new_run_starts_its_own_records(work, capsys):
    run = work / "run"
    train_synthetic(capsys, run, "train.epochs=2")
    code, err = cli(capsys, "train", "--out", run, "--force", *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert code == 0, err
    assert [r["step"] for r in val_records(run)] == [2]
    assert _steps(metric_rows(run)) == [("0", "1"), ("0", "2"), ("1", "2")]


# =========================================================================== full disk
def _full_disk(monkeypatch, names: set[str]) -> list[Path]:
    """Writes of files named `names` fail half-way with ENOSPC (through the real atomic writer,
    so its clean-up runs); returns the paths that failed."""
    import fcnseg.engine.checkpoint as checkpoint
    from fcnseg.io_utils import atomic_write

    failed: list[Path] = []

    def full(path, write):
        if Path(path).name not in names:
            return atomic_write(path, write)

        def half_then_enospc(tmp: Path) -> None:
            tmp.write_bytes(b"\0" * 1024)
            failed.append(Path(path))
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return atomic_write(path, half_then_enospc)

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    return failed


def test_full_disk_on_last_checkpoint_keeps_the_previous_one(work, capsys, monkeypatch):
    run = work / "run"
    train_synthetic(capsys, run)
    previous = (run / "checkpoints" / "last.pt").read_bytes()
    failed = _full_disk(monkeypatch, {"last.pt"})
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert_one_line_error(code, err, "No space left on device", "free some space")
    assert failed and (run / "checkpoints" / "last.pt").read_bytes() == previous
    assert no_temporaries(run)
    monkeypatch.undo()
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, err
    assert load_checkpoint(run)["step"] == 4
    assert len(set(_steps(metric_rows(run)))) == len(metric_rows(run))


def test_full_disk_on_best_checkpoint_leaves_a_resumable_last(work, capsys, monkeypatch):
    """last.pt is written before best.pt, so a full disk at best.pt still leaves a resumable
    run at the new position (the failure the issue saw: best.pt but no last.pt)."""
    run = work / "run"
    _full_disk(monkeypatch, {"best.pt"})
    code, err = cli(capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert_one_line_error(code, err, "No space left on device")
    assert load_checkpoint(run)["step"] == 2
    assert not (run / "checkpoints" / "best.pt").exists() and no_temporaries(run)
    monkeypatch.undo()
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, err


def test_full_disk_on_weights_file(work, capsys, monkeypatch):
    run = work / "run"
    _full_disk(monkeypatch, {"model.safetensors"})
    code, err = cli(capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert_one_line_error(code, err, "No space left on device")
    assert load_checkpoint(run)["step"] == 2 and no_temporaries(run)


def test_full_disk_inside_torch_save_is_one_line(work, capsys, monkeypatch):
    """torch.save reports a full disk as RuntimeError("[enforce fail at inline_container.cc]
    unexpected pos ..."), without the errno: emulated as the real writer fails, half a file
    then that error, with the disk reporting no free space."""
    import types

    import fcnseg.engine.checkpoint as checkpoint

    run = work / "run"
    train_synthetic(capsys, run)
    previous = (run / "checkpoints" / "last.pt").read_bytes()

    def torch_save_on_a_full_disk(payload, path):
        Path(path).write_bytes(b"PK" * 300)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", torch_save_on_a_full_disk)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=0))
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert_one_line_error(code, err, "last.pt", "No space left on device", "free some space")
    assert (run / "checkpoints" / "last.pt").read_bytes() == previous and no_temporaries(run)


def test_full_disk_inside_safetensors_is_one_line(work, capsys, monkeypatch):
    """safetensors reports a full disk as SafetensorError("... I/O error: No space left on
    device (os error 28) ..."): emulated as the real writer fails, half a file then that."""
    import safetensors.torch
    from safetensors import SafetensorError

    def save_file_on_a_full_disk(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 100)
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28) at path "
            f'"{path}"'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", save_file_on_a_full_disk)
    run = work / "run"
    code, err = cli(capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert_one_line_error(code, err, "model.safetensors", "No space left on device")
    assert load_checkpoint(run)["step"] == 2 and no_temporaries(run)
    assert not (run / "model.safetensors").exists()


def test_pickled_weights_are_one_stderr_line_in_a_real_process(work):
    """A pickle that is not plain tensors, as encoder weights and as model.init: torch's own
    warning about the pickle protocol must not reach stderr before fcnseg's one line (pytest
    captures warnings in-process, so this runs the CLI as a user does)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD-RAN",))

    evil = work / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}, protocol=4))
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "fcnseg.cli", "train", "--out", str(work / "run")]
    options = f"model.options={{width_divisor: 64, encoder_weights: {evil}}}"
    for extra, says in (
        (options, "cannot read encoder weights"),
        (f"model.init={evil}", "evil.pt"),
    ):
        done = subprocess.run(
            [*base, *TINY_MODEL, *SYNTHETIC, *TRAIN, extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert_one_line_error(done.returncode, done.stderr, says)
        assert "PAYLOAD-RAN" not in done.stdout and not (work / "run").exists()


# =========================================================================== divergence
def finite_tensors(tensors: dict) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for t in tensors.values()
        if torch.is_tensor(t) and t.is_floating_point()
    )


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_divergence_of_a_real_learning_rate_stops_with_one_line(work, capsys):
    """lr 10 with the unnormalised (Caffe) loss: the loss overflows within a few steps. The run
    stops at the first non-finite loss, exit 2, and what it saved is the last finite state."""
    from safetensors.torch import load_file

    run = work / "run"
    recipe = ["train.lr=10", "train.optimizer=sgd", "train.loss_normalization=sum"]
    code, err = cli(
        capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN, *recipe, "train.epochs=6"
    )
    assert_one_line_error(
        code, err, "training diverged", "the last finite checkpoint, was kept", "train.lr"
    )
    summary = summary_of(run)
    assert summary["stopped"] == "diverged" and "completed" not in err
    kept = load_checkpoint(run)
    assert kept["step"] == summary["diverged"]["saved_step"] < 12
    assert finite_tensors(kept["model"])
    assert finite_tensors(load_file(str(run / "model.safetensors")))
    assert no_temporaries(run)


def test_nan_loss_on_resume_keeps_every_saved_file_as_it_was(work, capsys, monkeypatch):
    import fcnseg.engine.loop as loop
    from fcnseg.engine.rundir import RunLock

    run = work / "run"
    train_synthetic(capsys, run)
    kept = ["checkpoints/last.pt", "checkpoints/best.pt", "model.safetensors"]
    before = {name: (run / name).read_bytes() for name in kept}
    rows = metric_rows(run)
    real_loss = loop._loss_of
    monkeypatch.setattr(loop, "_loss_of", lambda *a: real_loss(*a) * float("nan"))
    code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert_one_line_error(
        code, err, "epoch 2, step 3", "loss is nan", "checkpoints/last.pt (step 2)", "train.lr"
    )
    assert {name: (run / name).read_bytes() for name in kept} == before
    assert summary_of(run)["stopped"] == "diverged"
    assert summary_of(run)["diverged"]["step"] == 3
    assert metric_rows(run) == rows  # no row of the diverged step
    RunLock.acquire(run).release()  # the lock was released


def test_non_finite_weights_are_never_saved(work, capsys, monkeypatch):
    """The last optimiser step of a run makes a weight infinite (no loss follows to show it):
    the check before the save stops the run; no checkpoint or weights file is written."""
    import fcnseg.engine.loop as loop

    real_step = loop.TrainingLoop._optimizer_step

    def step_then_poison(self):
        real_step(self)
        if self.step == 2:
            with torch.no_grad():
                next(iter(self.model.parameters())).view(-1)[0] = float("inf")

    monkeypatch.setattr(loop.TrainingLoop, "_optimizer_step", step_then_poison)
    run = work / "run"
    code, err = cli(capsys, "train", "--out", run, *TINY_MODEL, *SYNTHETIC, *TRAIN)
    assert_one_line_error(code, err, "is not finite", "no checkpoint had been written yet")
    assert not (run / "model.safetensors").exists()
    assert not list((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").exists() else True
    assert summary_of(run)["stopped"] == "diverged"
    assert not val_records(run)  # the poisoned weights were not scored either


# =============================================================================== modes
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_run_file_has_the_umask_mode(work, capsys, umask):
    previous = os.umask(umask)
    try:
        run = work / "run"
        train_synthetic(capsys, run)
        code, err = cli(capsys, "train", "--resume", run, "train.epochs=2")
        assert code == 0, err
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    modes = {
        str(p.relative_to(run)): oct(p.stat().st_mode & 0o777)
        for p in run.rglob("*")
        if p.is_file()
    }
    assert {oct(expected)} == set(modes.values()), modes


# ============================================================================ SIFT Flow
def siftflow_root(root: Path) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from test_data_siftflow import _labels, _write_sample

    names = {"trainval": ["coast_a", "street_b", "forest_c"], "test": ["highway_d"]}
    seed = 0
    for split, split_names in names.items():
        for name in split_names:
            _write_sample(root, name, *_labels(seed), seed)
            seed += 1
        (root / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    return root


SIFTFLOW = [
    "data.format=siftflow",
    "data.train_split=trainval",
    "data.val_split=test",
    "data.options={}",
    "data.crop_size=null",
    "data.hflip=false",
    "model.name=multihead",
    "model.pretrained=false",
    "model.options={base: fcn32s_vgg16_padded, heads: {semantic: 33, geometric: 3}, "
    "width_divisor: 64}",
    "train.epochs=1",
    "train.batch_size=1",
    "train.device=cpu",
    "train.progress=false",
]


def test_siftflow_data_check_reports_both_heads(work, capsys):
    root = siftflow_root(work / "sift")
    code = main(["data", "check", "--format", "siftflow", "--root", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "no problems found" in out
    assert "[train:geometric]" in out and "vertical" in out and "awning" in out


def test_siftflow_data_check_lists_a_corrupt_label_file(work, capsys):
    from fcnseg.constants import SIFTFLOW_SUBDIR

    root = siftflow_root(work / "sift")
    bad = root / "GeoLabels" / SIFTFLOW_SUBDIR / "street_b.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing")
    code = main(["data", "check", "--format", "siftflow", "--root", str(root)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert "1 problem(s)" in out and "street_b.mat" in out


def test_siftflow_trains_with_median_frequency_weights_and_evaluates(work, capsys):
    root = siftflow_root(work / "sift")
    run = work / "run"
    args = ["train", "--out", run, "--data-root", root, *SIFTFLOW]
    code, err = cli(capsys, *args, "data.class_weights=median_frequency")
    assert code == 0, err
    assert load_checkpoint(run)["step"] == 3
    code, err = cli(capsys, "eval", "--run", run, "--split", "test", "--device", "cpu")
    assert code == 0, err
    scores = json.loads((run / "eval-siftflow-test.json").read_text())
    assert set(scores["heads"]) == {"semantic", "geometric"}
    assert len(scores["heads"]["geometric"]["per_class_iu"]) == 3


def test_siftflow_per_head_weights_are_each_heads_own():
    """Each head is balanced over its own classes: 33 semantic and 3 geometric weights."""
    from fcnseg.config import config_from_dict
    from fcnseg.engine.setup import build_criterion
    from fcnseg.losses import PerHeadLoss

    class Masks:
        head_class_info = __import__(
            "fcnseg.data.datasets.siftflow", fromlist=["SIFTFlow"]
        ).SIFTFlow.head_class_info
        classes = head_class_info["semantic"].names
        ignore_index = 255
        num_classes = 33
        samples = ["a"]

        def __len__(self) -> int:
            return 1

        def load(self, index: int):
            semantic = torch.arange(16).reshape(4, 4) % 4
            return torch.zeros(3, 4, 4, dtype=torch.uint8), {
                "semantic": semantic,
                "geometric": (torch.arange(16).reshape(4, 4) < 12).long(),
            }

    config = config_from_dict({"data": {"class_weights": "median_frequency"}})
    criterion = build_criterion(config, Masks(), 33)
    assert isinstance(criterion, PerHeadLoss)
    weights = {name: loss.class_weights for name, loss in criterion.heads.items()}
    assert weights["semantic"].shape == (33,) and weights["geometric"].shape == (3,)
    assert weights["geometric"][0] > weights["geometric"][1]  # class 0 (4 px) is the rarer


def test_siftflow_preflight_catches_a_wrong_size_label(work, capsys):
    import scipy.io

    from fcnseg.constants import SIFTFLOW_SUBDIR

    root = siftflow_root(work / "sift")
    bad = root / "SemanticLabels" / SIFTFLOW_SUBDIR / "forest_c.mat"
    scipy.io.savemat(bad, {"S": np.ones((8, 8))})
    code, err = cli(capsys, "train", "--out", work / "run", "--data-root", root, *SIFTFLOW)
    assert_one_line_error(code, err, "forest_c.mat")
    assert not (work / "run").exists()


# ======================================================================== empty shard
def test_empty_shard_scores_nothing_but_joins(monkeypatch):
    """One process standing in for a rank with an empty shard: every head's matrix exists and
    is reduced, and no head without pixels is reported."""
    from fcnseg.engine.evaluate import evaluate, evaluate_heads, expected_heads
    from fcnseg.metrics import ConfusionMatrix

    reduced: list[int] = []
    monkeypatch.setattr(ConfusionMatrix, "reduce_", lambda self: reduced.append(self.num_classes))

    class TwoHeads(torch.nn.Module):
        head_classes = {"semantic": 33, "geometric": 3}

        def forward(self, x):  # pragma: no cover - never called: the shard is empty
            raise AssertionError

    assert expected_heads(TwoHeads(), 33) == {"semantic": 33, "geometric": 3}
    assert evaluate_heads(TwoHeads(), [], 33, 255) == {}
    assert sorted(reduced) == [3, 33]
    assert evaluate(TwoHeads(), [], 33, 255).mean_iu == 0.0


@pytest.mark.slow
def test_torchrun_two_ranks_one_validation_image(tmp_path):
    """2 gloo processes, 1 validation image: rank 1's shard is empty. Validation must finish
    (it hung when rank 1 skipped the reduction); a timeout turns a hang into a failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc_per_node", "2", str(HERE), "ddp", str(tmp_path / "run")]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("validation with an empty shard hung (no all_reduce on the empty rank)")
    assert done.returncode == 0, done.stderr[-3000:]
    records = val_records(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4]
    assert all(r["mean_iu"] is not None for r in records)


def _ddp_child(out: str) -> None:
    from test_engine_train import TinySegNet, tiny_config, tiny_datasets

    from fcnseg.engine.train import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_set, val_set = tiny_datasets(num_train=8, num_val=1)
    model = TinySegNet(train_set.num_classes)
    config = tiny_config(batch_size=2, accumulate=1, epochs=2, checkpoint_every=0)
    train(config, out=out, model=model, train_set=train_set, val_set=val_set)
    # train() leaves the process group it joined (an open one can abort the exit: SIGABRT).
    assert not torch.distributed.is_initialized(), "train() left the process group open"


# ============================================================ SIGKILL during checkpoint writes
class BigTinyNet(torch.nn.Module):
    """TinySegNet plus an unused 16 MB tensor, so that a checkpoint write takes long enough
    for a kill at a random moment to land inside it."""

    normalization = "imagenet"
    in_channels = 3

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        sys.path.insert(0, str(HERE.parent))
        from test_engine_train import TinySegNet

        self.num_classes = num_classes
        self.head_classes: dict[str, int] = {}
        self.net = TinySegNet(num_classes)
        self.register_buffer("ballast", torch.zeros(4_000_000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


FAULT_EPOCHS = 12  # 2 steps an epoch: 24 checkpoints, each kill consumes at most 2


def _fault_train(out: str, resume: bool, events) -> None:
    """Train (or resume) the fault-test run; print "save" before each last.pt write."""
    from test_engine_train import tiny_config, tiny_datasets

    import fcnseg.engine.rundir as rundir
    from fcnseg.engine.train import train

    original = rundir.save_checkpoint

    def announced(path, state):
        if path.name == "last.pt":
            events.write(f"save {state['step']}\n")
            events.flush()
        original(path, state)

    rundir.save_checkpoint = announced
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_set, val_set = tiny_datasets(num_train=8, num_val=2)
    model = BigTinyNet(train_set.num_classes)
    config = tiny_config(epochs=FAULT_EPOCHS, checkpoint_every=1, val_every=4)
    train(
        config,
        out=out,
        resume=out if resume else None,
        model=model,
        train_set=train_set,
        val_set=val_set,
    )


def _zygote() -> None:
    """Import torch once, then fork a training child per request (a fresh interpreter costs
    ~5 s on a loaded 2-core machine). Request: {"out", "resume", "kill_after", "delay"}; the
    zygote kills the child `delay` seconds after its `kill_after`-th "save" (0: never) and
    answers {"status": ..., "saves": ...}."""
    import fcnseg.engine.train  # noqa: F401 - imported before forking

    for line in sys.stdin:
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: train, report saves on the pipe
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # the zygote's stdout carries only its answers
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the child
            status = 0
            try:
                with os.fdopen(write_fd, "w") as events:
                    _fault_train(request["out"], request["resume"], events)
            except BaseException:  # noqa: BLE001 - reported as the exit status
                import traceback

                traceback.print_exc()
                status = 1
            os._exit(status)
        os.close(write_fd)
        saves = 0
        with os.fdopen(read_fd) as events:
            for event in events:
                saves += event.startswith("save")
                if request["kill_after"] and saves == request["kill_after"]:
                    time.sleep(request["delay"])
                    os.kill(pid, signal.SIGKILL)
                    break
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status, "saves": saves}), flush=True)


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_resume_is_bit_identical(tmp_path):
    """10 SIGKILLs at random moments during last.pt writes (a seeded random save, then a random
    delay of 0-40 ms into it; the first run is killed at its second save at the earliest, as a
    run killed in its first write has no checkpoint yet); after each, last.pt loads; the run resumed after the last kill
    ends with exactly the parameters of an uninterrupted run, and metrics.csv has no row
    twice."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    zygote = subprocess.Popen(
        [sys.executable, str(HERE), "zygote"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    rng = random.Random(14)

    def request(out: Path, resume: bool, kill_after: int = 0, delay: float = 0.0) -> dict:
        message = {"out": str(out), "resume": resume, "kill_after": kill_after, "delay": delay}
        zygote.stdin.write(json.dumps(message) + "\n")
        zygote.stdin.flush()
        return json.loads(zygote.stdout.readline())

    try:
        started = time.monotonic()
        reference = request(tmp_path / "reference", resume=False)
        assert reference["status"] == 0, reference
        run = tmp_path / "run"
        leftovers, steps = 0, []
        for kill in range(10):
            answer = request(
                run,
                resume=kill > 0,
                kill_after=rng.randint(2 if kill == 0 else 1, 2),
                delay=0.04 * rng.random(),
            )
            assert os.WIFSIGNALED(answer["status"]), answer  # killed, not finished
            assert os.WTERMSIG(answer["status"]) == signal.SIGKILL
            leftovers += not no_temporaries(run)
            steps.append(load_checkpoint(run)["step"])  # loads after every kill
        final = request(run, resume=True)
        assert final["status"] == 0, final
        elapsed = time.monotonic() - started
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    expected, got = load_checkpoint(tmp_path / "reference"), load_checkpoint(run)
    assert got["step"] == expected["step"] == 2 * FAULT_EPOCHS
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    for key, value in expected["optimizer"]["state"].items():
        assert torch.equal(
            value["momentum_buffer"], got["optimizer"]["state"][key]["momentum_buffer"]
        )
    assert _steps(metric_rows(run)) == _steps(metric_rows(tmp_path / "reference"))
    assert _steps(val_records(run)) == _steps(val_records(tmp_path / "reference"))
    assert no_temporaries(run)
    assert steps == sorted(steps)
    print(f"fault test: kills left a .tmp {leftovers}/10 times; steps {steps}; {elapsed:.1f} s")


# ================================================================================ corpus
#: Test -> kind, for the corpus table in benchmarks/RESULTS.md (parametrised tests count once
#: per parameter set).
CASES: dict[str, str] = {
    "test_lock_refuses_resume_while_another_process_trains": "lock",
    "test_lock_refuses_forced_out_while_another_process_trains": "lock",
    "test_lock_held_by_a_real_process_then_freed_by_its_death": "lock",
    "test_lock_is_released_after_a_run_and_after_a_failed_one": "lock",
    "test_existing_run_without_force_is_refused_before_anything_is_written": "lock",
    "test_preflight_bad_training_file_stops_before_the_run_directory": "preflight",
    "test_preflight_bad_validation_file": "preflight",
    "test_preflight_reads_every_header_of_a_large_list": "preflight",
    "test_preflight_on_resume_leaves_the_run_as_it_was": "preflight",
    "test_preflight_keeps_the_run_identical": "preflight",
    "test_stale_temporaries_are_removed_on_resume_and_nothing_else": "stale tmp",
    "test_resume_drops_rows_past_the_checkpoint": "resumed rows",
    "test_resume_of_a_finished_run_appends_without_duplicates": "resumed rows",
    "test_forced_new_run_starts_its_own_records": "resumed rows",
    "test_full_disk_on_last_checkpoint_keeps_the_previous_one": "full disk",
    "test_full_disk_on_best_checkpoint_leaves_a_resumable_last": "full disk",
    "test_full_disk_on_weights_file": "full disk",
    "test_full_disk_inside_torch_save_is_one_line": "full disk",
    "test_full_disk_inside_safetensors_is_one_line": "full disk",
    "test_pickled_weights_are_one_stderr_line_in_a_real_process": "pickle",
    "test_divergence_of_a_real_learning_rate_stops_with_one_line": "divergence",
    "test_nan_loss_on_resume_keeps_every_saved_file_as_it_was": "divergence",
    "test_non_finite_weights_are_never_saved": "divergence",
    "test_every_run_file_has_the_umask_mode": "modes",
    "test_siftflow_data_check_reports_both_heads": "siftflow",
    "test_siftflow_data_check_lists_a_corrupt_label_file": "siftflow",
    "test_siftflow_trains_with_median_frequency_weights_and_evaluates": "siftflow",
    "test_siftflow_per_head_weights_are_each_heads_own": "siftflow",
    "test_siftflow_preflight_catches_a_wrong_size_label": "siftflow",
    "test_empty_shard_scores_nothing_but_joins": "empty shard",
    "test_torchrun_two_ranks_one_validation_image": "empty shard",
    "test_sigkill_during_checkpoint_writes_then_resume_is_bit_identical": "kill",
}


def test_corpus_lists_every_case():
    names = {name for name in globals() if name.startswith("test_")}
    assert names - {"test_corpus_lists_every_case"} == set(CASES)


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        _zygote()
    elif sys.argv[1] == "ddp":
        _ddp_child(sys.argv[2])
