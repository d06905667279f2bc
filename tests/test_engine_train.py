"""Training engine: schedules, presets, a tiny run end to end, and bit-exact resume after SIGKILL.

The network is a two-layer conv net with dropout (so the resume test also covers the RNG
streams) on 32x32 synthetic scenes, so the whole file runs in seconds on a shared CPU.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fcnseg.config import config_from_dict
from fcnseg.engine.checkpoint import load_checkpoint, load_weights
from fcnseg.engine.schedules import lr_factor

HERE = Path(__file__).resolve()


class TinySegNet(nn.Module):
    """conv3x3 -> ReLU -> dropout -> conv1x1: logits at the input size."""

    normalization = "imagenet"
    in_channels = 3

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        # The model contract (fcnseg.models.protocol) that train() checks.
        self.num_classes = num_classes
        self.head_classes: dict[str, int] = {}
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2)
        )
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def tiny_datasets(num_train: int = 8, num_val: int = 4):
    from fcnseg.data.datasets.registry import build_dataset

    train_set = build_dataset("synthetic", None, "train", num_images=num_train, size=(32, 32))
    val_set = build_dataset("synthetic", None, "val", num_images=num_val, size=(32, 32))
    return train_set, val_set


def tiny_config(**train_overrides):
    train = {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "epochs": 2,
        "batch_size": 2,
        "accumulate": 2,
        "checkpoint_every": 1,
        "seed": 3,
        "deterministic": True,
        "device": "cpu",
        "progress": False,
        "log_every": 1,
        "warmup_steps": 1,
    }
    train.update(train_overrides)
    raw = {
        "name": "tiny",
        "data": {"crop_size": [24, 24], "scale_range": [0.75, 1.25], "jitter": 0.1},
        "train": train,
    }
    return config_from_dict(raw)


def run_tiny(out: Path, resume: Path | None = None, **train_overrides):
    from fcnseg.engine.train import train

    torch.manual_seed(0)
    train_set, val_set = tiny_datasets()
    model = TinySegNet(train_set.num_classes)
    return train(
        tiny_config(**train_overrides),
        out=out,
        resume=resume,
        model=model,
        train_set=train_set,
        val_set=val_set,
    )


# ----------------------------------------------------------------------------- schedules
def test_schedules_shape():
    assert lr_factor(0, 100, "fixed") == 1.0
    assert lr_factor(50, 100, "poly", poly_power=1.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, "poly") == pytest.approx(0.0)
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    warm = [lr_factor(s, 100, "fixed", warmup_steps=4) for s in range(6)]
    assert warm == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    with pytest.raises(ValueError, match="train.schedule"):
        lr_factor(0, 10, "step")


def test_schedule_over_the_budget_takes_the_further_of_steps_and_clock():
    # 10 of 100 steps but 80% of the time budget spent: the rate is the 80% point's.
    assert lr_factor(10, 100, "poly", poly_power=1.0, budget_spent=0.8) == pytest.approx(0.2)
    # The clock behind the step count: the step count decides.
    assert lr_factor(90, 100, "poly", poly_power=1.0, budget_spent=0.5) == pytest.approx(0.1)
    assert lr_factor(10, 100, "cosine", budget_spent=1.0) == pytest.approx(0.0)
    assert lr_factor(10, 100, "fixed", budget_spent=1.0) == 1.0
    # Warmup stays counted in steps.
    assert lr_factor(0, 100, "poly", warmup_steps=4, budget_spent=0.9) == pytest.approx(0.2)


def _weights_moved(tmp_path: Path, **train_overrides) -> bool:
    from fcnseg.engine.train import train

    torch.manual_seed(0)
    train_set, val_set = tiny_datasets()
    model = TinySegNet(train_set.num_classes)
    before = [p.detach().clone() for p in model.parameters()]
    train(
        tiny_config(**train_overrides),
        out=tmp_path / "run",
        model=model,
        train_set=train_set,
        val_set=val_set,
    )
    return any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_budget_span_decays_the_rate_of_a_run_its_clock_stops(tmp_path):
    # A budget of ~0 s: the one step the run takes is past the whole budget, so a poly
    # schedule over the budget steps at rate 0 (weights untouched) while the step-count
    # schedule steps at its full rate.
    tiny_budget = {"max_minutes": 1e-9, "schedule": "poly", "warmup_steps": 0}
    assert not _weights_moved(tmp_path / "a", schedule_span="budget", **tiny_budget)
    assert _weights_moved(tmp_path / "b", schedule_span="steps", **tiny_budget)


def test_budget_span_needs_a_budget():
    from fcnseg.errors import RecipeError

    with pytest.raises(RecipeError, match="train.schedule_span.*train.max_minutes"):
        tiny_config(schedule_span="budget")
    assert tiny_config(schedule_span="budget", max_minutes=5).train.schedule_span == "budget"


# ----------------------------------------------------------------------------- training
def test_tiny_run_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    result = run_tiny(out)
    assert result.stopped == "completed"
    assert result.steps == 4  # 2 epochs x (4 batches / accumulate 2)
    for name in (
        "config.yaml",
        "versions.json",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.pt").is_file()
    assert (out / "checkpoints" / "best.pt").is_file()
    assert any((out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and 0.0 <= summary["best_mean_iu"] <= 1.0
    tensors, meta = load_weights(out / "model.safetensors")
    assert meta["num_classes"] == 6 and meta["normalization"] == "imagenet"
    assert "head.weight" in tensors
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) > 2
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 4 and checkpoint["epoch"] == 2
    # One JSON line per validation (val_every defaults to every epoch), per-class IU included,
    # agreeing with metrics.csv's mean IU of the same step.
    lines = (out / "val_scores.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(len(r["per_class_iu"]) == 6 for r in records)
    last_row = dict(zip(rows[0].split(","), rows[-1].split(","), strict=True))
    assert float(last_row["mean_iu"]) == pytest.approx(records[-1]["mean_iu"])


def test_train_resolves_the_recipe_first(tmp_path):
    """train() applies the preset to what the recipe left unset and saves the resolved recipe;
    a recipe error is raised before the run directory exists."""
    from fcnseg import constants
    from fcnseg.engine.train import train
    from fcnseg.errors import ModelOptionError

    out = tmp_path / "run"
    run_tiny(out, preset="paper", epochs=1, checkpoint_every=0)
    saved = load_checkpoint(out)["config"]["train"]
    assert (saved["schedule"], saved["loss_normalization"]) == ("fixed", "sum")
    assert saved["weight_decay"] == constants.PAPER_WEIGHT_DECAY
    assert (saved["lr"], saved["batch_size"]) == (0.05, 2)  # the recipe's own values win
    bad = config_from_dict({"train": {"device": "cpu"}}, ["model.options={depth: 3}"])
    with pytest.raises(ModelOptionError, match="model.options: unknown key 'depth'"):
        train(bad, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_training_reduces_loss(tmp_path):
    result = run_tiny(tmp_path / "run", epochs=6, lr=0.1, checkpoint_every=0)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]


def test_refuses_existing_run_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="--resume"):
        run_tiny(out)
    assert (out / "keep.txt").read_text() == "x"


def test_time_budget_stops_with_checkpoint(tmp_path):
    result = run_tiny(tmp_path / "run", max_minutes=0.0)
    assert result.stopped == "time_budget"
    assert result.steps == 1
    assert load_checkpoint(tmp_path / "run")["step"] == 1


def test_median_frequency_weights_favour_rare_classes():
    from fcnseg.engine.setup import median_frequency_weights

    train_set, _ = tiny_datasets(num_train=4)
    weights = torch.tensor(median_frequency_weights(train_set))
    counts = torch.zeros(train_set.num_classes)
    image_pixels = torch.zeros(train_set.num_classes)
    for index in range(len(train_set)):
        mask = train_set.load(index)[1]
        mask = mask[mask < train_set.num_classes]
        per_image = torch.bincount(mask, minlength=train_set.num_classes).float()
        counts += per_image
        image_pixels += (per_image > 0).float() * mask.numel()
    present = counts > 0
    frequency = counts[present] / image_pixels[present]
    # w_c * f_c is the same median frequency for every present class; absent classes get 0.
    products = weights[present] * frequency
    assert torch.allclose(products, products[0].expand_as(products), rtol=1e-5)
    assert products[0] == pytest.approx(statistics.median(frequency.tolist()), rel=1e-5)
    assert (weights[~present] == 0).all()
    assert weights[present].argmin() == frequency.argmax()


def test_bf16_autocast_on_cpu_trains(tmp_path):
    result = run_tiny(tmp_path / "run", amp=True, epochs=1, checkpoint_every=0)
    assert result.steps == 2
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)


def test_class_weights_must_match_class_count(tmp_path):
    from fcnseg.engine.train import train

    train_set, val_set = tiny_datasets(num_train=2, num_val=1)
    config = tiny_config()
    config.data.class_weights = [1.0, 2.0]
    with pytest.raises(ValueError, match="2 weights for 6 classes"):
        train(config, out=tmp_path / "r", model=TinySegNet(6), train_set=train_set, val_set=val_set)


# ----------------------------------------------------------------------------- resume
def _child(out: str, mode: str) -> None:
    """Subprocess body: `full` trains, `killed` SIGKILLs itself after the step-3 checkpoint
    (mid-epoch), `resume` continues the killed run."""
    torch.set_num_threads(1)
    if mode == "killed":
        import fcnseg.engine.rundir as rundir

        original = rundir.save_checkpoint

        def save_then_die(path, state):
            original(path, state)
            if state["step"] == 3 and path.name == "last.pt":
                os.kill(os.getpid(), signal.SIGKILL)

        rundir.save_checkpoint = save_then_die
    resume = Path(out) if mode == "resume" else None
    run_tiny(Path(out), resume=resume, epochs=3)


def _spawn(out: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(HERE), str(out), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    full = _spawn(tmp_path / "full", "full")
    assert full.returncode == 0, full.stderr
    killed = _spawn(tmp_path / "cut", "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = load_checkpoint(tmp_path / "cut")
    assert checkpoint["step"] == 3 and 0 < checkpoint["batch_in_epoch"] < 4  # mid-epoch
    resumed = _spawn(tmp_path / "cut", "resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = load_checkpoint(tmp_path / "full")
    final = load_checkpoint(tmp_path / "cut")
    assert final["step"] == reference["step"] == 6
    for key, value in reference["model"].items():
        assert torch.equal(value, final["model"][key]), key
    for key, value in reference["optimizer"]["state"].items():
        assert torch.equal(
            value["momentum_buffer"], final["optimizer"]["state"][key]["momentum_buffer"]
        )


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])


def test_time_budget_counts_the_time_before_a_resume(tmp_path):
    first = run_tiny(tmp_path / "run", max_minutes=0.0)
    assert first.stopped == "time_budget" and first.steps == 1
    spent = load_checkpoint(tmp_path / "run")["elapsed_s"]
    assert spent > 0
    # A resumed run whose budget is already spent stops after one more step, not a fresh budget.
    budget_minutes = spent / 60 / 2
    second = run_tiny(tmp_path / "run", resume=tmp_path / "run", max_minutes=budget_minutes)
    assert second.stopped == "time_budget"
    assert second.steps == 2


def test_jaccard_term_changes_training_and_is_checked(tmp_path):
    plain = run_tiny(tmp_path / "plain", epochs=1, checkpoint_every=0)
    with_iou = run_tiny(tmp_path / "iou", epochs=1, checkpoint_every=0, jaccard_weight=1.0)
    assert with_iou.history[0]["train_loss"] > plain.history[0]["train_loss"]  # extra term >= 0
    with pytest.raises(ValueError, match=r"train.jaccard_weight: -1.0 is outside \[0, 1000\]"):
        run_tiny(tmp_path / "neg", jaccard_weight=-1.0)
    with pytest.raises(ValueError, match="loss_normalization=mean"):
        run_tiny(tmp_path / "sum", jaccard_weight=1.0, loss_normalization="sum")


# -------------------------------------------------------------------------- distillation
def _teacher_file(folder: Path, num_classes: int, normalization: str = "imagenet") -> Path:
    """A registry model saved as a weights file, usable as `train.distill_from`."""
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model

    torch.manual_seed(1)
    model = build_model("fcn8s_mobilenet_v2", num_classes, pretrained=False)
    meta = weights_metadata(
        "fcn8s_mobilenet_v2",
        {},
        num_classes=num_classes,
        classes=[f"c{i}" for i in range(num_classes)],
        palette=[[i, i, i] for i in range(num_classes)],
        normalization=normalization,
        ignore_index=255,
        data_format="synthetic",
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "teacher.safetensors", model, meta)
    return folder / "teacher.safetensors"


def test_distillation_term_is_a_tempered_kl_that_pulls_toward_the_teacher():
    from fcnseg.losses import DistillationLoss

    teacher = nn.Conv2d(3, 5, 1)
    images = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        same = teacher(images)
    loss = DistillationLoss(teacher, weight=2.0, temperature=3.0)
    assert float(loss(images, same)) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros_like(same, requires_grad=True)
    value = loss(images, student)
    # By hand: 2 * 3^2 * mean over pixels of KL(softmax(t/3) || softmax(0)).
    soft = torch.softmax(same / 3.0, dim=1)
    uniform = torch.log_softmax(torch.zeros_like(same), 1)
    expected = 2.0 * 9.0 * (soft * (soft.log() - uniform)).sum(1).mean()
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-5)
    value.backward()
    with torch.no_grad():
        stepped = student - 0.5 * student.grad
    assert float(loss(images, stepped)) < float(value.detach())
    assert all(not p.requires_grad for p in teacher.parameters())
    loss.train()
    assert not teacher.training
    with pytest.raises(ValueError, match="temperature > 0"):
        DistillationLoss(teacher, temperature=0.0)


def test_distillation_from_a_teacher_file_trains_and_is_checked(tmp_path):
    train_set, _ = tiny_datasets()
    teacher = _teacher_file(tmp_path / "teacher", train_set.num_classes)
    plain = run_tiny(tmp_path / "plain", epochs=1, checkpoint_every=0)
    taught = run_tiny(tmp_path / "taught", epochs=1, checkpoint_every=0, distill_from=str(teacher))
    assert taught.stopped == "completed"
    # The same seed and batches: the distillation term (>= 0) is all that differs.
    assert taught.history[0]["train_loss"] > plain.history[0]["train_loss"]
    config = load_checkpoint(tmp_path / "taught" / "checkpoints" / "last.pt")["config"]
    assert config["train"]["distill_from"] == str(teacher)
    with pytest.raises(ValueError, match="distill_from .*file not found"):
        run_tiny(tmp_path / "missing", distill_from=str(tmp_path / "nope.safetensors"))
    assert not (tmp_path / "missing").exists()
    other = _teacher_file(tmp_path / "other", train_set.num_classes + 1)
    with pytest.raises(ValueError, match="same classes"):
        run_tiny(tmp_path / "classes", distill_from=str(other))
    with pytest.raises(ValueError, match="loss_normalization=mean"):
        run_tiny(tmp_path / "sum", distill_from=str(teacher), loss_normalization="sum")
    with pytest.raises(ValueError, match=r"train.distill_weight: -1.0 is outside"):
        run_tiny(tmp_path / "neg", distill_from=str(teacher), distill_weight=-1.0)
