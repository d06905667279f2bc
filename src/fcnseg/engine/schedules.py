"""Learning-rate schedules as pure functions of the optimiser step.

A schedule that is a function of the step alone needs no state of its own in a checkpoint: the
step counter restores it exactly, which is what makes resume bit-exact.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

SCHEDULES = ("fixed", "poly", "cosine")


def lr_factor(
    step: int,
    total_steps: int,
    schedule: str,
    warmup_steps: int = 0,
    poly_power: float = 0.9,
    budget_spent: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    Linear warmup from 1/(warmup+1) to 1 over `warmup_steps` steps, then "fixed" (the paper's
    Caffe `lr_policy: fixed`), "poly" ((1 - t)^power, as DeepLab) or "cosine" (to zero), where t
    runs from 0 at the end of warmup to 1 at `total_steps`, or to `budget_spent` (the share of
    a time budget used, 0 to 1) when that is further along: a run stopped by its clock then
    still ends near the schedule's final rate.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule: unknown {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "fixed":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span, budget_spent))
    if schedule == "poly":
        return (1.0 - progress) ** poly_power
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def budget_spent(elapsed_s: float, max_minutes: float | None, span: str) -> float:
    """Share (0 to 1) of the time budget `max_minutes` used after `elapsed_s` seconds when the
    schedule spans the budget (`train.schedule_span=budget`), else 0 (the step count alone)."""
    if span != "budget" or max_minutes is None:
        return 0.0
    return min(1.0, elapsed_s / (60 * max_minutes)) if max_minutes > 0 else 1.0


def apply_lr(optimizer: Optimizer, factor: float) -> None:
    """Set every group's lr to its `base_lr` (base lr x group multiplier) times `factor`."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
