"""`run_demo` (fcnseg.engine.demo): the README's first run as a function, at a toy size."""

from __future__ import annotations

import json

from fcnseg.engine.demo import DEMO_CONFIG, run_demo, write_demo_inputs

TINY_DEMO = [
    "model.pretrained=false",
    "data.options={num_images: 4, size: [32, 32]}",
    "data.val_options={num_images: 3}",
    "data.crop_size=[32, 32]",
    "train.epochs=1",
    "train.progress=false",
    "train.device=cpu",
]


def test_run_demo_trains_scores_and_predicts_in_its_run_directory(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", TINY_DEMO, echo=lines.append)
    assert result.run_dir == tmp_path / "demo"
    assert (result.run_dir / "model.safetensors").is_file()
    scores = json.loads((result.run_dir / "eval-synthetic-test.json").read_text())
    assert scores["split"] == "test" and scores["images"] == 3
    assert result.scores.payload["mean_iu"] == scores["mean_iu"]
    assert result.predictions_dir == result.run_dir / "predictions"
    assert len(list(result.predictions_dir.glob("*_overlay.jpg"))) == 3  # min(4, test images)
    # What the command prints, in order, as each step ends.
    assert lines[0] == f"run directory: {result.run_dir}"
    assert lines[2] == f"scores written to {result.scores.out}"
    assert (
        lines[3]
        == f"3 images -> {len(result.predictions.written)} files in {result.predictions_dir}"
    )


def test_demo_inputs_are_test_scenes_as_png(tmp_path):
    from PIL import Image

    from fcnseg.config import load_config

    config = load_config(DEMO_CONFIG, ["data.options={num_images: 5, size: [32, 48]}"])
    folder = write_demo_inputs(config, tmp_path / "inputs", count=2)
    files = sorted(path.name for path in folder.iterdir())
    assert files == ["scene_0.png", "scene_1.png"]
    assert Image.open(folder / "scene_1.png").size == (48, 32)


def test_a_demo_stopped_by_its_budget_says_so_and_the_printed_resume_finishes_it(tmp_path):
    from fcnseg.engine.train import train_from_recipe

    lines: list[str] = []
    # A budget of a few milliseconds: training stops after its first step.
    overrides = [
        *TINY_DEMO,
        "data.options={num_images: 16, size: [32, 32]}",  # 4 steps an epoch
        "train.batch_size=4",
        "train.epochs=3",
        "train.max_minutes=0.00001",
    ]
    result = run_demo(tmp_path / "demo", overrides, echo=lines.append)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["stopped"] == "time_budget" and summary["steps"] == 1
    message = lines[1]
    assert message.startswith("training stopped: time budget train.max_minutes=1e-05 reached")
    assert "after 0 of 3 epochs (1 steps)" in message
    command = message.split("To train the other 3 epochs: ")[1]
    assert command == f".venv/bin/fcnseg train --resume {result.run_dir} train.max_minutes=null"
    # The command as printed (its arguments, through the same function `fcnseg train` calls).
    arguments = command.split()[3:]
    resumed = train_from_recipe(None, arguments[1:], resume=arguments[0])
    assert resumed.stopped == "completed" and resumed.steps == 3 * 4
    assert resumed.epochs_done == 3


def test_a_demo_within_its_budget_prints_no_budget_line(tmp_path):
    lines: list[str] = []
    run_demo(tmp_path / "demo", TINY_DEMO, echo=lines.append)
    assert not any(line.startswith("training stopped") for line in lines)
