"""`train(config)`: from recipe to run directory, as a composition of the engine's parts.

    engine/device.py   which device (and torchrun rank), seeding
    engine/rundir.py   where a resumed run continues; the run directory and its files
    engine/setup.py    datasets, model, loss, optimiser and weights metadata from the recipe
    engine/loop.py     train one epoch, validate, fit (AMP, DDP, time budget, checkpoints)

Exact resume is the loop's property (see engine/loop.py): a run killed at any point and resumed
from its last checkpoint ends with the same weights, bit for bit on CPU.

What can fail is made to fail before the run directory is created or touched: the recipe is
resolved first (engine/recipe.py: its preset applied, its options checked), the directory is
locked (a second writer is refused), then the recipe is built, then the training and
validation data are checked (data/check.preflight); only then is anything written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from fcnseg.config import Config
from fcnseg.data.check import preflight
from fcnseg.engine import distributed
from fcnseg.engine.clock import Stopwatch
from fcnseg.engine.device import seed_everything, training_device
from fcnseg.engine.loop import TrainingLoop, TrainResult
from fcnseg.engine.recipe import resolve_recipe
from fcnseg.engine.rundir import RunDirectory, claim_run_directory, resume_point
from fcnseg.engine.setup import prepare_training

__all__ = ["TrainResult", "train", "train_from_recipe"]


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
    clock = Stopwatch()
    # The preset applied and the free-form options checked: a recipe error writes nothing.
    config = resolve_recipe(config)
    with training_device(config.train.device) as device:
        lock = claim_run_directory(resume, out, force)
        run: RunDirectory | None = None
        try:
            checkpoint, out = resume_point(resume, out)
            seed_everything(config.train.seed, config.train.deterministic)
            # Every recipe error is raised here, before the run directory exists.
            setup = prepare_training(
                config,
                device,
                model=model,
                train_set=train_set,
                val_set=val_set,
                initialise=checkpoint is None,
            )
            # Every bad file that can be found cheaply is found here, not mid-epoch.
            preflight(setup.train_set, setup.val_set)
            loop = TrainingLoop(config, setup, device, clock)
            if checkpoint is not None:
                loop.restore(checkpoint)
            run = RunDirectory.open(
                config,
                out,
                force=force,
                resumed=checkpoint is not None,
                lock=lock,
                resume_step=loop.step if checkpoint is not None else None,
            )
            result = loop.fit(run)
        finally:
            if run is not None:
                run.release()
            if lock is not None:
                lock.release()
        distributed.barrier()
        return result


def train_from_recipe(
    recipe: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    force: bool = False,
) -> TrainResult:
    """`fcnseg train`: the recipe file (or, resuming without one, the recipe the run stored)
    with `overrides` applied, then `train`.

    Why here and not in the CLI: a script that resumes a run must find its recipe the same way.
    """
    from fcnseg.config import load_config
    from fcnseg.engine.checkpoint import config_from_checkpoint

    if resume and not recipe:
        config = config_from_checkpoint(resume, list(overrides))
    else:
        config = load_config(recipe, list(overrides))
    return train(config, out=out, resume=resume, force=force)
