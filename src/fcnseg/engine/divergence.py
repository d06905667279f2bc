"""Divergence: a non-finite loss or weights stop the run before anything of them is saved.

Why a guard and not a warning: a learning rate far too large turns every weight into NaN within
a step or two, and the run used to go on to "completed", exit 0, with NaN weights written into
model.safetensors and last.pt (so not even a resume could recover). Now the first non-finite
training loss (checked once per optimiser step, on every rank) or a non-finite weight found
before a save stops the run: the previous checkpoint is the last finite one and stays as it
is, summary.json records the stop, and `fcnseg train` exits with status 2 and one line.

The loss check costs nothing extra: the loop already reads each batch's loss as a Python float
for its running mean. The weights check runs only before a save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fcnseg.errors import TrainingDiverged

__all__ = ["DivergenceGuard", "TrainingDiverged", "nonfinite_parameter"]


def nonfinite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding a NaN or an infinity, else None."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on some rank (the ranks must stop together or the others hang)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


@dataclass
class DivergenceGuard:
    """Watches the training losses; `record` is what summary.json keeps of a stop."""

    #: The first non-finite loss of the current optimiser step (None: all finite so far).
    bad_loss: float | None = None
    record: dict[str, Any] | None = None

    def see_loss(self, value: float) -> None:
        if not math.isfinite(value) and self.bad_loss is None:
            self.bad_loss = value

    def check_step(self, device: torch.device, where: dict[str, Any], lr: float) -> None:
        """Before an optimiser step: stop (every rank) when a loss of the step was non-finite."""
        if _any_rank(self.bad_loss is not None, device):
            what = (
                f"the training loss is {self.bad_loss}"
                if self.bad_loss is not None
                else ("another rank's training loss is not finite")
            )
            self.stop(what, where, lr)

    def check_weights(self, model: nn.Module, where: dict[str, Any], lr: float) -> None:
        """Before a save: stop when a weight is non-finite (the same on every rank under DDP,
        whose gradients are averaged, so every rank stops here together)."""
        name = nonfinite_parameter(model)
        if name is not None:
            self.stop(f"weight {name!r} is not finite", where, lr)

    def stop(self, what: str, where: dict[str, Any], lr: float) -> None:
        """Record the stop and raise the one-line error naming the kept checkpoint and the fix."""
        saved = where.get("saved_step")
        kept = (
            f"checkpoints/last.pt (step {saved}), the last finite checkpoint, was kept"
            if saved is not None
            else "no checkpoint had been written yet"
        )
        self.record = {"reason": what, **where}
        raise TrainingDiverged(
            f"training diverged at epoch {where['epoch'] + 1}, step {where['step']}: {what}; "
            f"stopped without saving these weights; {kept}; start again with a smaller "
            f"train.lr (was {lr:g}) or check the data and loss settings"
        )
