"""The training loop: train one epoch, validate, and `fit` (epochs until done or out of time).

Exact resume: augmentation is seeded per sample from (seed, epoch, index), the epoch order from
(seed, epoch), the learning rate is a function of the step, and a checkpoint stores the model,
optimiser, scaler, RNG streams and the position (epoch, batches consumed) at an optimiser-step
boundary. Restarting from it (`TrainingLoop.restore`) replays exactly the computation the
interrupted run would have done, which the SIGKILL test checks bit for bit on CPU.

Also here, because they shape each step: gradient accumulation (DDP syncs only on a group's
last batch), AMP (bf16 autocast on CPU, fp16 + GradScaler on CUDA), the time budget
(`train.max_minutes`, rank 0's clock decides for all ranks), the checkpoint cadence and the
divergence guard (engine/divergence.py: a non-finite loss or weight stops the run before a save).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fcnseg.config import Config
from fcnseg.engine import distributed, progress
from fcnseg.engine.bn_statistics import recompute_on_training_set
from fcnseg.engine.checkpoint import rng_state, set_rng_state, unwrap
from fcnseg.engine.clock import Stopwatch
from fcnseg.engine.divergence import DivergenceGuard, TrainingDiverged
from fcnseg.engine.evaluate import eval_loader, evaluate, format_scores, scores_json
from fcnseg.engine.rundir import RunDirectory
from fcnseg.engine.schedules import apply_lr, budget_spent, lr_factor
from fcnseg.engine.setup import TrainingSetup
from fcnseg.losses import PerHeadLoss
from fcnseg.metrics import SegmentationScores
from fcnseg.models.protocol import auxiliary_logits, is_multi_head, map_heads


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


def _loss_of(criterion: nn.Module, logits: Any, masks: Any) -> Tensor:
    """The loss of a batch; multi-head models sum their heads' losses (each head with its own
    criterion when the criterion is a PerHeadLoss, e.g. per-head class weights)."""
    if is_multi_head(logits):
        if not is_multi_head(masks):
            raise ValueError("a multi-head model needs a dataset returning a dict of masks")
        if isinstance(criterion, PerHeadLoss):
            return criterion(logits, masks)
        return sum(criterion(logits[key], masks[key]) for key in logits)  # type: ignore[return-value]
    return criterion(logits, masks)


def _to(value: Any, device: torch.device) -> Any:
    return map_heads(value, lambda item: item.to(device, non_blocking=True))


class TrainingLoop:
    """The loop state (position, best score, running loss) and the steps that advance it."""

    def __init__(
        self, config: Config, setup: TrainingSetup, device: torch.device, clock: Stopwatch
    ) -> None:
        self.config = config
        self.cfg = config.train
        self.setup = setup
        self.model: nn.Module = setup.model
        self.optimizer = setup.optimizer
        self.device = device
        self.clock = clock
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cfg.amp and device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

        self.samples = distributed.SeededSamples(setup.train_set, self.cfg.seed)
        self.sampler = distributed.EpochSampler(
            len(setup.train_set), self.cfg.batch_size, self.cfg.seed
        )
        self.loader = DataLoader(
            self.samples,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed),
            drop_last=False,
        )
        self.batches_per_epoch = self.sampler.batches_per_epoch()
        steps_per_epoch = -(-self.batches_per_epoch // self.cfg.accumulate)
        self.total_steps = steps_per_epoch * self.cfg.epochs
        if self.cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

        # The position: what a checkpoint stores, together with the model/optimiser states.
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.best_mean_iu: float | None = None
        self.stopped = "completed"
        self.last_scores: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.loss_sum, self.loss_count = 0.0, 0
        self._improved = False  # a validation beat best_mean_iu; best.pt follows last.pt
        self.run = RunDirectory(None, resumed=False)
        self.guard = DivergenceGuard()
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed

    # ------------------------------------------------------------------ checkpoint state
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything `restore` needs to continue exactly, plus the recipe and the weights
        description (so `fcnseg eval --checkpoint` and `train --resume` need nothing else)."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_mean_iu": self.best_mean_iu,
            "elapsed_s": self.clock.elapsed(),
            "config": self.config.to_dict(),
            "meta": self.setup.metadata,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `checkpoint_state`."""
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = int(checkpoint["epoch"])
        self.batch_in_epoch = int(checkpoint["batch_in_epoch"])
        self.step = int(checkpoint["step"])
        self.best_mean_iu = checkpoint.get("best_mean_iu")
        set_rng_state(checkpoint["rng"])
        self.clock.continue_from(float(checkpoint.get("elapsed_s", 0.0)))
        self.saved_step = self.step

    def _save_last(self) -> dict[str, Any] | None:
        """Write checkpoints/last.pt (atomically: a kill or a full disk leaves the previous one);
        returns the state written, which a new best reuses (rank 0 only). Weights that are no
        longer finite stop the run instead (every rank checks: their weights are the same)."""
        self._check_weights()
        if self.run.path is None:
            return None
        state = self.checkpoint_state()
        self.run.save_checkpoint("last.pt", state)
        self.saved_step = self.step
        return state

    def _check_weights(self) -> None:
        where = {"epoch": self.epoch, "step": self.step, "saved_step": self.saved_step}
        self.guard.check_weights(unwrap(self.model), where, self.cfg.lr)

    # -------------------------------------------------------------------------- the loop
    def fit(self, run: RunDirectory) -> TrainResult:
        """Epochs until `train.epochs`, `train.max_steps` or the time budget; then the final
        weights (when no validation chose best ones) and summary.json."""
        self.run = run
        self.model = distributed.wrap_model(self.model, self.device)
        self.model.train()
        diverged: TrainingDiverged | None = None
        try:
            while (
                self.epoch < self.cfg.epochs
                and self.step < self.total_steps
                and self.stopped == "completed"
            ):
                self.train_one_epoch()
                self._end_epoch()
            if self.setup.val_set is None or self.best_mean_iu is None:
                run.save_weights(self.model, {**self.setup.metadata, "step": self.step})
        except TrainingDiverged as error:
            self.stopped, diverged = "diverged", error
        finally:
            run.close()
        result = TrainResult(
            run_dir=run.path,
            steps=self.step,
            epochs_done=self.epoch,
            best_mean_iu=self.best_mean_iu,
            last_scores=self.last_scores,
            stopped=self.stopped,
            history=self.history,
        )
        run.write_summary(
            {
                "stopped": self.stopped,
                "steps": self.step,
                "epochs_done": self.epoch,
                "best_mean_iu": self.best_mean_iu,
                "last_scores": self.last_scores,
                "elapsed_s": self.clock.elapsed(),
                "device": str(self.device),
                "world_size": distributed.world_size(),
                **({"diverged": self.guard.record} if diverged is not None else {}),
            }
        )
        if diverged is not None:
            raise diverged
        return result

    def _log_row(self) -> dict[str, Any]:
        """The start of a metrics row: position, mean training loss since the last row, lr."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": self.loss_sum / max(1, self.loss_count),
            "lr": float(self.optimizer.param_groups[-1]["lr"]),
        }

    def train_one_epoch(self) -> None:
        """Run the rest of the current epoch: from `batch_in_epoch` to its end, or until
        `max_steps` or the time budget stops it (then `stopped` says "time_budget")."""
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self.samples.epoch = self.epoch
        bar = progress.epoch_bar(self.cfg, self.epoch, self.batches_per_epoch, self.batch_in_epoch)
        tick = time.monotonic()
        for images, masks in self.loader:
            group_start = (self.batch_in_epoch // cfg.accumulate) * cfg.accumulate
            group_size = min(cfg.accumulate, self.batches_per_epoch - group_start)
            last_in_group = self.batch_in_epoch + 1 == group_start + group_size
            images = _to(images, self.device)
            self._accumulate(images, _to(masks, self.device), group_size, last_in_group)
            if not last_in_group:
                if bar is not None:
                    bar.update(1)
                continue
            where = {"epoch": self.epoch, "step": self.step + 1, "saved_step": self.saved_step}
            self.guard.check_step(self.device, where, self.cfg.lr)
            self._optimizer_step()
            if bar is not None:
                progress.show(
                    bar,
                    tick,
                    images.shape[0],
                    self.loss_sum / max(1, self.loss_count),
                    self.optimizer.param_groups[-1]["lr"],
                )
            if self._after_step():
                break
        if bar is not None:
            bar.close()

    def _accumulate(self, images: Tensor, masks: Any, group_size: int, last_in_group: bool) -> None:
        """Forward and backward one batch, its gradient scaled as 1/`group_size` of the step's."""
        cfg, model, device = self.cfg, self.model, self.device
        sync = last_in_group or not distributed.is_distributed()
        # Accumulated batches skip DDP's gradient all-reduce until the group's last one.
        with model.no_sync() if not sync else contextlib.nullcontext():  # type: ignore[operator]
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=cfg.amp):
                logits = model(images)
                loss = _loss_of(self.setup.criterion, logits, masks)
                auxiliary = auxiliary_logits(unwrap(model))
                if auxiliary is not None and cfg.aux_weight > 0:
                    # Deep supervision (PSPNet): the head's extra scores, training only.
                    loss = loss + cfg.aux_weight * _loss_of(self.setup.criterion, auxiliary, masks)
                if self.setup.distillation is not None:
                    loss = loss + self.setup.distillation(images, logits)
            if cfg.loss_normalization == "sum":
                # Caffe's unnormalised loss is per image (normalised by the batch size).
                loss = loss / images.shape[0]
            self.scaler.scale(loss / group_size).backward()
        value = float(loss.detach())
        self.guard.see_loss(value)
        self.loss_sum += value
        self.loss_count += 1
        self.batch_in_epoch += 1

    def _optimizer_step(self) -> None:
        """One optimiser step at the learning rate of the current step counter."""
        cfg = self.cfg
        spent = budget_spent(self.clock.elapsed(), cfg.max_minutes, cfg.schedule_span)
        if cfg.schedule_span == "budget":  # rank 0's clock: one rate; no collective otherwise
            spent = distributed.broadcast_value(spent, self.device)
        schedule = (cfg.schedule, cfg.warmup_steps, cfg.poly_power)
        factor = lr_factor(self.step, self.total_steps, *schedule, budget_spent=spent)
        apply_lr(self.optimizer, factor)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _after_step(self) -> bool:
        """Log, check the time budget (rank 0's clock, for all ranks) and save mid-epoch
        checkpoints after an optimiser step; True when the epoch must stop here."""
        cfg = self.cfg
        if self.step % cfg.log_every == 0 and self.run.path is not None:
            self.run.log({**self._log_row(), "elapsed_s": self.clock.elapsed()})
        over_budget = cfg.max_minutes is not None and self.clock.elapsed() > 60 * cfg.max_minutes
        over_budget = distributed.broadcast_flag(over_budget, self.device)
        if self.batch_in_epoch < self.batches_per_epoch and (
            over_budget or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
        ):
            self._save_last()  # mid-epoch; the epoch's end saves in _end_epoch
        if over_budget:
            self.stopped = "time_budget"
        return over_budget or self.step >= self.total_steps

    def _end_epoch(self) -> None:
        """Advance past a finished epoch, validate when due, log the epoch row, save last.pt."""
        self._check_weights()  # before validation: non-finite weights would score garbage
        epoch_complete = self.batch_in_epoch >= self.batches_per_epoch
        if epoch_complete:
            self.epoch += 1
            self.batch_in_epoch = 0
        is_last = (
            self.epoch >= self.cfg.epochs
            or self.step >= self.total_steps
            or self.stopped != "completed"
        )
        validate_now = self.setup.val_set is not None and (
            is_last
            or (self.cfg.val_every and epoch_complete and self.epoch % self.cfg.val_every == 0)
        )
        row = self._log_row()
        self.loss_sum, self.loss_count = 0.0, 0
        if validate_now:
            self.validate()
            assert self.last_scores is not None
            row.update(
                {
                    key: float(value or 0.0)
                    for key, value in self.last_scores.items()
                    if not isinstance(value, dict)
                }
            )
        row["elapsed_s"] = self.clock.elapsed()
        self.history.append(row)
        self.run.log(row)
        state = self._save_last()
        if state is not None:
            self._save_best(state)

    def validate(self) -> SegmentationScores:
        """Score the validation split; a new best writes best.pt and model.safetensors."""
        train_set = self.setup.train_set
        if self.cfg.bn_statistics == "recompute":
            recompute_on_training_set(
                unwrap(self.model),
                train_set,
                self.cfg.batch_size,
                self.cfg.bn_statistics_batches,
                self.device,
            )
        # The bare module: DDP's forward would broadcast buffers, a collective that hangs when
        # the ranks' validation shards differ in length.
        scores = evaluate(
            unwrap(self.model),
            eval_loader(
                self.setup.val_set, self.config.eval.batch_size, self.config.data.num_workers
            ),
            self.setup.num_classes,
            train_set.ignore_index,
            self.device,
            mode=self.config.eval.mode,
            options=self.config.eval.options,
            amp=self.cfg.amp,
        )
        self.last_scores = scores_json(scores, train_set.classes)
        self.run.log_validation(self.epoch, self.step, self.last_scores)
        improved = self.best_mean_iu is None or scores.mean_iu > self.best_mean_iu
        if improved:
            self.best_mean_iu = scores.mean_iu
            self._improved = True
        if distributed.is_main():
            summary = format_scores(scores, train_set.classes).splitlines()[0]
            print(f"[epoch {self.epoch}, step {self.step}] {summary}", flush=True)
        return scores

    def _save_best(self, state: dict[str, Any]) -> None:
        """best.pt and model.safetensors after a validation that improved the mean IU.

        Written after last.pt (see `_end_epoch`): a full disk or a kill between the writes then
        leaves a last.pt to resume from, never a best.pt without one.
        """
        if not self._improved:
            return
        self._improved = False
        if self.run.path is not None and distributed.is_main():
            self.run.save_checkpoint("best.pt", state)
            self.run.save_weights(
                self.model,
                {**self.setup.metadata, "step": self.step, "mean_iu": self.best_mean_iu},
            )
