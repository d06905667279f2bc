"""Training loop: one function, `train(config)`, from recipe to run directory.

What a run directory holds (rank 0 writes it): `config.yaml` (the resolved recipe),
`versions.json`, `metrics.csv`, `val_scores.jsonl` (every validation's per-class IU),
`tensorboard/`, `checkpoints/last.pt` and `best.pt`,
`model.safetensors` (best weights, self-describing), `summary.json`.

Exact resume: augmentation is seeded per sample from (seed, epoch, index), the epoch order from
(seed, epoch), the learning rate is a function of the step, and a checkpoint stores the model,
optimiser, scaler, RNG streams and the position (epoch, batches consumed) at an optimiser-step
boundary. Restarting from it replays exactly the computation the interrupted run would have
done, which the SIGKILL test checks bit for bit on CPU.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fcnseg.config import Config, config_from_dict
from fcnseg.engine import distributed
from fcnseg.engine.checkpoint import (
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
    unwrap,
)
from fcnseg.engine.evaluate import eval_loader, evaluate, format_scores, scores_json
from fcnseg.engine.schedules import apply_lr, lr_factor
from fcnseg.losses import PixelCrossEntropy, SoftJaccardLoss, WeightedSumLoss

#: Parameter-name prefixes that belong to the (pretrained) encoder, for `encoder_lr_mult`.
#: A parameter belongs to the encoder when a module on its path has one of these names; matching
#: any path component (not just the first) covers wrappers such as fusion streams
#: (`rgb.backbone.`) and benchmark adapters (`model.encoder.`).
ENCODER_MODULE_NAMES: frozenset[str] = frozenset({"backbone", "encoder", "features"})
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


@dataclass
class TrainResult:
    """What `train` returns: where the run lives and how it ended."""

    run_dir: Path | None
    steps: int
    epochs_done: int
    best_mean_iu: float | None
    last_scores: dict[str, Any] | None
    stopped: str
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: unknown; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here; use --device cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_data_root(root: str | None) -> str | None:
    """A relative root that does not exist here is looked up in the data directory."""
    if root is None:
        return None
    path = Path(root).expanduser()
    if path.is_absolute() or path.exists():
        return str(path)
    from fcnseg.data.io import default_data_dir

    candidate = default_data_dir() / path
    return str(candidate) if candidate.exists() else str(path)


def build_datasets(config: Config) -> tuple[Dataset, Dataset | None]:
    """Train and validation sets of the recipe (transforms are attached once the model is known)."""
    from fcnseg.data.datasets.registry import build_dataset

    data = config.data
    root = resolve_data_root(data.root)
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(
            f"data.root {data.root!r}: directory not found (also looked in the data directory); "
            "pass --data-root or data.root=PATH"
        )
    train_set = build_dataset(data.format, root, data.train_split, **data.options)
    val_set = None
    if data.val_split:
        val_set = build_dataset(data.format, root, data.val_split, **eval_options(config))
    return train_set, val_set


def eval_options(config: Config) -> dict[str, Any]:
    """Dataset options of the validation/test splits: `data.options` updated by `val_options`."""
    return {**config.data.options, **config.data.val_options}


def attach_transforms(config: Config, normalization: str, train_set: Any, val_set: Any) -> None:
    """Give datasets built without a transform the recipe's train/eval pipelines."""
    from fcnseg.data.transforms import eval_transform, train_transform

    data = config.data
    if getattr(train_set, "transform", "absent") is None:
        train_set.transform = train_transform(
            normalization,
            crop_size=tuple(data.crop_size) if data.crop_size else None,
            scale_range=tuple(data.scale_range),
            hflip=data.hflip,
            jitter=data.jitter,
            ignore_index=train_set.ignore_index,
        )
    if val_set is not None and getattr(val_set, "transform", "absent") is None:
        val_set.transform = eval_transform(
            normalization, tuple(data.val_size) if data.val_size else None
        )


def median_frequency_weights(dataset: Any) -> list[float]:
    """Median-frequency class weights of `dataset` (decoded masks, no augmentation), computed
    by the same scan as `fcnseg data check` so both report identical numbers."""
    from fcnseg.data.check import scan_dataset

    problems, statistics = scan_dataset(dataset, max_problems=1)
    if problems:
        raise ValueError(f"data.class_weights: cannot scan the training set: {problems[0]}")
    return statistics.median_frequency_weights


def parameter_groups(model: nn.Module, lr: float, encoder_mult: float, weight_decay: float):
    """Encoder parameters (see ENCODER_MODULE_NAMES) at lr x encoder_mult, the rest at lr."""
    encoder, head = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        in_encoder = not ENCODER_MODULE_NAMES.isdisjoint(name.split(".")[:-1])
        (encoder if in_encoder else head).append(parameter)
    groups = []
    if encoder:
        groups.append({"params": encoder, "base_lr": lr * encoder_mult, "name": "encoder"})
    if head:
        groups.append({"params": head, "base_lr": lr, "name": "head"})
    for group in groups:
        group["lr"] = group["base_lr"]
        group["weight_decay"] = weight_decay
    return groups


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    train = config.train
    groups = parameter_groups(model, train.lr, train.encoder_lr_mult, train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(groups, lr=train.lr)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("fcnseg", "torch", "torchvision", "timm", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["cuda"] = str(torch.version.cuda)
    return versions


def model_metadata(config: Config, model: nn.Module, dataset: Any) -> dict[str, Any]:
    """What a weights file needs to be used on its own (see checkpoint.save_weights)."""
    return {
        "model": config.model.name,
        "model_options": config.model.options,
        "num_classes": int(dataset.num_classes),
        "classes": list(dataset.classes),
        "palette": [list(colour) for colour in dataset.palette],
        "normalization": getattr(unwrap(model), "normalization", "imagenet"),
        "ignore_index": int(dataset.ignore_index),
        "data_format": config.data.format,
    }


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


def _loss_of(criterion: nn.Module, logits: Any, masks: Any) -> Tensor:
    if isinstance(logits, dict):
        if not isinstance(masks, dict):
            raise ValueError("a multi-head model needs a dataset returning a dict of masks")
        return sum(criterion(logits[key], masks[key]) for key in logits)  # type: ignore[return-value]
    return criterion(logits, masks)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {key: item.to(device, non_blocking=True) for key, item in value.items()}
    return value.to(device, non_blocking=True)


class _RunFiles:
    """Rank-0 writers of the run directory (no-ops on other ranks)."""

    def __init__(self, run_dir: Path | None, resume: bool) -> None:
        self.run_dir = run_dir
        self.writer = None
        if run_dir is None:
            return
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.csv"
        if not (resume and self.metrics_path.exists()):
            with open(self.metrics_path, "w", newline="") as stream:
                csv.writer(stream).writerow(METRIC_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            self.writer = None

    def log(self, row: dict[str, Any]) -> None:
        if self.run_dir is None:
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
        if self.run_dir is None:
            return
        line = json.dumps({"epoch": epoch, "step": step, **scores})
        with open(self.run_dir / VAL_SCORES_FILE, "a") as stream:
            stream.write(line + "\n")
        if self.writer is not None:
            for name, value in scores.get("per_class_iu", {}).items():
                if value is not None:
                    self.writer.add_scalar(f"val_iu/{name}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(
    config: Config,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    model: nn.Module | None = None,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
) -> TrainResult:
    """Train according to `config`; returns where the run was written and how it ended.

    Args:
        out: run directory (default `runs/<name>-<timestamp>`).
        resume: a run directory or checkpoint to continue exactly where it stopped.
        force: allow writing into a non-empty `out`.
        model, train_set, val_set: objects to use instead of those the recipe names (Python
            users with their own network or data; datasets need the `SegmentationDataset`
            metadata: classes, palette, ignore_index, num_classes).
    """
    started = time.monotonic()
    device = resolve_device(config.train.device)
    ddp_device = distributed.setup(device.type)
    if ddp_device is not None:
        device = ddp_device
    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        resume_path = Path(resume)
        out = resume_path if resume_path.is_dir() else resume_path.parent.parent
    train_cfg = config.train
    seed_everything(train_cfg.seed, train_cfg.deterministic)

    if train_set is None:
        train_set, built_val = build_datasets(config)
        val_set = built_val if val_set is None else val_set
    dataset_meta = train_set
    num_classes = dataset_meta.num_classes  # type: ignore[attr-defined]
    if model is None:
        from fcnseg.models.zoo import build_model

        model = build_model(
            config.model.name,
            num_classes,
            pretrained=config.model.pretrained,
            **config.model.options,
        )
    normalization = getattr(model, "normalization", "imagenet")
    attach_transforms(config, normalization, train_set, val_set)
    if config.model.init and checkpoint is None:
        _initialise_from(model, config.model.init, num_classes)
    model.to(device)

    class_weights = config.data.class_weights
    if class_weights == "median_frequency":
        class_weights = median_frequency_weights(train_set)
    if isinstance(class_weights, list) and len(class_weights) != num_classes:
        raise ValueError(
            f"data.class_weights: {len(class_weights)} weights for {num_classes} classes; give "
            "one per class"
        )
    ignore_index = dataset_meta.ignore_index  # type: ignore[attr-defined]
    criterion: nn.Module = PixelCrossEntropy(
        ignore_index=ignore_index,
        class_weights=class_weights,
        normalization=train_cfg.loss_normalization,
    )
    if train_cfg.jaccard_weight < 0:
        raise ValueError(f"train.jaccard_weight must be >= 0, got {train_cfg.jaccard_weight}")
    if train_cfg.jaccard_weight > 0 and train_cfg.loss_normalization != "mean":
        raise ValueError(
            "train.jaccard_weight needs train.loss_normalization=mean (a per-pixel-summed "
            "cross-entropy would dwarf an IoU term in [0, 1])"
        )
    if train_cfg.jaccard_weight > 0:
        criterion = WeightedSumLoss(
            [(1.0, criterion), (train_cfg.jaccard_weight, SoftJaccardLoss(ignore_index))]
        )
    criterion = criterion.to(device)

    optimizer = build_optimizer(config, model)
    use_scaler = train_cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    seeded_train = distributed.SeededSamples(train_set, train_cfg.seed)
    sampler = distributed.EpochSampler(len(train_set), train_cfg.batch_size, train_cfg.seed)
    loader = DataLoader(
        seeded_train,
        batch_size=train_cfg.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(train_cfg.seed),
        drop_last=False,
    )
    batches_per_epoch = sampler.batches_per_epoch()
    steps_per_epoch = -(-batches_per_epoch // train_cfg.accumulate)
    total_steps = steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps is not None:
        total_steps = min(total_steps, train_cfg.max_steps)

    epoch, batch_in_epoch, step = 0, 0, 0
    best_mean_iu: float | None = None
    if checkpoint is not None:
        unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        epoch = int(checkpoint["epoch"])
        batch_in_epoch = int(checkpoint["batch_in_epoch"])
        step = int(checkpoint["step"])
        best_mean_iu = checkpoint.get("best_mean_iu")
        set_rng_state(checkpoint["rng"])
        # The time budget (train.max_minutes) covers the whole run, not each resumed part.
        started = time.monotonic() - float(checkpoint.get("elapsed_s", 0.0))

    run_dir: Path | None = None
    if distributed.is_main():
        run_dir = Path(out) if checkpoint is not None else new_run_dir(config, out, force)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        (run_dir / "versions.json").write_text(json.dumps(package_versions(), indent=2) + "\n")
    files = _RunFiles(run_dir, resume=checkpoint is not None)
    meta = model_metadata(config, model, dataset_meta)

    if distributed.is_distributed():
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def state(epoch_: int, batch_: int) -> dict[str, Any]:
        return {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"step": step, "total_steps": total_steps},
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "epoch": epoch_,
            "batch_in_epoch": batch_,
            "step": step,
            "sampler_seed": train_cfg.seed,
            "best_mean_iu": best_mean_iu,
            "elapsed_s": time.monotonic() - started,
            "config": config.to_dict(),
            "meta": meta,
        }

    def save_last(epoch_: int, batch_: int) -> None:
        if run_dir is not None:
            save_checkpoint(run_dir / "checkpoints" / "last.pt", state(epoch_, batch_))

    world = distributed.world_size()
    history: list[dict[str, Any]] = []
    last_scores: dict[str, Any] | None = None
    stopped = "completed"
    loss_sum, loss_count = 0.0, 0
    model.train()
    try:
        while epoch < train_cfg.epochs and step < total_steps and stopped == "completed":
            sampler.set_epoch(epoch, batch_in_epoch)
            seeded_train.epoch = epoch
            bar = None
            if train_cfg.progress and distributed.is_main():
                from tqdm import tqdm

                bar = tqdm(
                    total=batches_per_epoch,
                    initial=batch_in_epoch,
                    desc=f"epoch {epoch + 1}/{train_cfg.epochs}",
                    dynamic_ncols=True,
                    leave=False,
                )
            tick = time.monotonic()
            for images, masks in loader:
                group_start = (batch_in_epoch // train_cfg.accumulate) * train_cfg.accumulate
                group_size = min(train_cfg.accumulate, batches_per_epoch - group_start)
                last_in_group = batch_in_epoch + 1 == group_start + group_size
                images, masks = _to(images, device), _to(masks, device)
                sync = last_in_group or not distributed.is_distributed()
                context = model.no_sync() if not sync else _null_context()
                with context:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=train_cfg.amp):
                        logits = model(images)
                        loss = _loss_of(criterion, logits, masks)
                    if train_cfg.loss_normalization == "sum":
                        # Caffe's unnormalised loss is per image (normalised by the batch size).
                        loss = loss / images.shape[0]
                    scaler.scale(loss / group_size).backward()
                loss_sum += float(loss.detach())
                loss_count += 1
                batch_in_epoch += 1
                if not last_in_group:
                    if bar is not None:
                        bar.update(1)
                    continue
                factor = lr_factor(
                    step,
                    total_steps,
                    train_cfg.schedule,
                    train_cfg.warmup_steps,
                    train_cfg.poly_power,
                )
                apply_lr(optimizer, factor)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if bar is not None:
                    elapsed = max(1e-9, time.monotonic() - tick)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss_sum / max(1, loss_count):.4g}",
                        lr=f"{optimizer.param_groups[-1]['lr']:.3g}",
                        img_s=f"{bar.n * images.shape[0] * world / elapsed:.1f}" if bar.n else "-",
                    )
                if step % train_cfg.log_every == 0 and run_dir is not None:
                    files.log(
                        {
                            "epoch": epoch,
                            "step": step,
                            "train_loss": loss_sum / max(1, loss_count),
                            "lr": float(optimizer.param_groups[-1]["lr"]),
                            "elapsed_s": time.monotonic() - started,
                        }
                    )
                over_budget = (
                    train_cfg.max_minutes is not None
                    and time.monotonic() - started > 60 * train_cfg.max_minutes
                )
                over_budget = distributed.broadcast_flag(over_budget, device)
                if batch_in_epoch < batches_per_epoch and (
                    over_budget
                    or (train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0)
                ):
                    save_last(epoch, batch_in_epoch)
                if over_budget:
                    stopped = "time_budget"
                if over_budget or step >= total_steps:
                    break
            if bar is not None:
                bar.close()
            epoch_complete = batch_in_epoch >= batches_per_epoch
            if epoch_complete:
                epoch += 1
                batch_in_epoch = 0
            is_last = epoch >= train_cfg.epochs or step >= total_steps or stopped != "completed"
            validate_now = val_set is not None and (
                is_last
                or (train_cfg.val_every and epoch_complete and epoch % train_cfg.val_every == 0)
            )
            row: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "train_loss": loss_sum / max(1, loss_count),
                "lr": float(optimizer.param_groups[-1]["lr"]),
            }
            loss_sum, loss_count = 0.0, 0
            if validate_now:
                # The bare module: DDP's forward would broadcast buffers, a collective that
                # hangs when the ranks' validation shards differ in length.
                scores = evaluate(
                    unwrap(model),
                    eval_loader(val_set, config.eval.batch_size, config.data.num_workers),
                    num_classes,
                    dataset_meta.ignore_index,  # type: ignore[attr-defined]
                    device,
                    mode=config.eval.mode,
                    options=config.eval.options,
                    amp=train_cfg.amp,
                )
                last_scores = scores_json(scores, dataset_meta.classes)  # type: ignore[attr-defined]
                files.log_validation(epoch, step, last_scores)
                row.update(
                    {
                        key: float(value or 0.0)
                        for key, value in last_scores.items()
                        if not isinstance(value, dict)
                    }
                )
                improved = best_mean_iu is None or scores.mean_iu > best_mean_iu
                if improved:
                    best_mean_iu = scores.mean_iu
                if distributed.is_main():
                    print(
                        f"[epoch {epoch}, step {step}] "
                        + format_scores(scores, dataset_meta.classes).splitlines()[0],
                        flush=True,
                    )  # type: ignore[attr-defined]
                    if improved and run_dir is not None:
                        save_checkpoint(
                            run_dir / "checkpoints" / "best.pt", state(epoch, batch_in_epoch)
                        )
                        save_weights(
                            run_dir / "model.safetensors",
                            model,
                            {**meta, "step": step, "mean_iu": scores.mean_iu},
                        )
            row["elapsed_s"] = time.monotonic() - started
            history.append(row)
            files.log(row)
            save_last(epoch, batch_in_epoch)
        if run_dir is not None and (val_set is None or best_mean_iu is None):
            save_weights(run_dir / "model.safetensors", model, {**meta, "step": step})
    finally:
        files.close()
    result = TrainResult(
        run_dir=run_dir,
        steps=step,
        epochs_done=epoch,
        best_mean_iu=best_mean_iu,
        last_scores=last_scores,
        stopped=stopped,
        history=history,
    )
    if run_dir is not None:
        summary = {
            "stopped": stopped,
            "steps": step,
            "epochs_done": epoch,
            "best_mean_iu": best_mean_iu,
            "last_scores": last_scores,
            "elapsed_s": time.monotonic() - started,
            "device": str(device),
            "world_size": world,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    distributed.barrier()
    return result


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _initialise_from(model: nn.Module, source: str, num_classes: int) -> None:
    """Copy every same-named, same-shaped tensor from weights/checkpoint `source` (fine-tuning,
    or the paper's stage-wise init of FCN-16s from FCN-32s)."""
    path = Path(source)
    if not path.is_file():
        # Runs before the run directory is made, so a later stage (FCN-16s from FCN-32s,
        # CamVid's hi-res fine-tune) started before its earlier stage writes nothing.
        raise FileNotFoundError(
            f"model.init {source}: file not found; train the earlier stage first or "
            "pass model.init=PATH to its model.safetensors"
        )
    if path.suffix == ".safetensors":
        tensors, _ = load_weights(path)
    else:
        tensors = load_checkpoint(path)["model"]
    own = model.state_dict()
    matched = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"model.init {source}: no tensor matches this model; check model.name")
    model.load_state_dict(matched, strict=False)


def config_from_checkpoint(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The recipe a checkpoint was trained with, plus overrides (e.g. more epochs)."""
    return config_from_dict(load_checkpoint(path)["config"], overrides)
