"""`fcnseg demo` as a function: train on the built-in synthetic scenes, score the test split,
predict a few scenes written as image files.

Why a function: the demo is the README's first command and the smallest end-to-end check of the
library (recipe -> run directory -> scores -> prediction files). As a function a script or test
runs the same sequence the command does, and the command only prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
#: Test-split scenes written as PNG files for the prediction step.
DEMO_INPUTS = 4


@dataclass
class DemoResult:
    """Where the demo wrote its run, scores and predictions."""

    run_dir: Path
    #: The evaluation of the test split (fcnseg.engine.run_eval.EvalRun).
    scores: Any
    #: The prediction of the demo inputs (fcnseg.engine.predict's result).
    predictions: Any
    predictions_dir: Path


def run_demo(
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train configs/demo.yaml (+ `overrides`) into `out`, evaluate, predict; `echo` receives the
    lines the command prints, as each step ends (a long run says where it writes first)."""
    from fcnseg.config import load_config
    from fcnseg.engine.predict import run_prediction
    from fcnseg.engine.run_eval import run_evaluation
    from fcnseg.engine.train import train

    say = echo or (lambda line: None)
    config = load_config(DEMO_CONFIG, list(overrides))
    trained = train(config, out=out)
    run_dir = trained.run_dir
    assert run_dir is not None
    say(f"run directory: {run_dir}")
    if trained.stopped == "time_budget":
        say(budget_message(run_dir, trained, config.train))
    device = config.train.device
    progress = sys.stderr.isatty()
    scores = run_evaluation(
        run=run_dir, split="test", device=device, mode="whole", progress=progress
    )
    say(scores.report())
    say(f"scores written to {scores.out}")
    images = write_demo_inputs(config, run_dir / "demo_inputs")
    predictions_dir = run_dir / "predictions"
    predictions = run_prediction(
        [str(images)], predictions_dir, run=run_dir, device=device, mode="whole", progress=progress
    )
    say(f"{len(predictions.files)} images -> {len(predictions.written)} files in {predictions_dir}")
    return DemoResult(run_dir, scores, predictions, predictions_dir)


def budget_message(run_dir: Path, trained: Any, train_config: Any) -> str:
    """Why the demo's training stopped early and the exact command that finishes it.

    Why an override and not a plain `--resume`: the budget (`train.max_minutes`) covers the
    whole run, resumes included (engine/loop.py), so that a run killed and resumed behaves as one
    that was not; a plain `--resume` of a run stopped by it would stop again after one step.
    `train.max_minutes=null` lifts the budget for the resumed part, the epochs still bound it.
    """
    import json

    epochs, done = train_config.epochs, trained.epochs_done
    summary = json.loads((run_dir / "summary.json").read_text())
    per_epoch = float(summary.get("elapsed_s", 0.0)) / done if done else 0.0
    estimate = f", about {max(1, round(per_epoch * (epochs - done) / 60))} more minutes"
    estimate = estimate if per_epoch else ""
    return (
        f"training stopped: time budget train.max_minutes={train_config.max_minutes:g} reached "
        f"after {done} of {epochs} epochs ({trained.steps} steps); the scores below are of this "
        f"shorter run. To train the other {epochs - done} epochs{estimate}: "
        f".venv/bin/fcnseg train --resume {run_dir} train.max_minutes=null"
    )


def write_demo_inputs(config: Any, folder: Path, count: int = DEMO_INPUTS) -> Path:
    """A few test-split scenes as PNG files, so the demo exercises predict on real files."""
    from PIL import Image

    from fcnseg.config import eval_options
    from fcnseg.engine.setup import build_eval_dataset

    dataset = build_eval_dataset(config.data.format, None, "test", eval_options(config.data))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, len(dataset))):
        image, _ = dataset.load(index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"scene_{index}.png")
    return folder
