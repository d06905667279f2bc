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
