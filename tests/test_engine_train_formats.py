"""The recipes of docs/data_formats.md train and evaluate end to end on each format's fixture
(a few steps of a small model), with `data.class_map` and `data.augment` from the recipe."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from annotation_fixtures import WRITERS

from fcnseg.config import config_from_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "data_formats.md"


def doc_recipes() -> dict[str, dict]:
    """`# recipe: <format>` YAML blocks of the docs page, by format."""
    blocks = re.findall(r"```yaml\n# recipe: (\w+)\n(.*?)```", DOC.read_text(), re.S)
    return {fmt: yaml.safe_load(body) for fmt, body in blocks}


def test_the_docs_have_a_recipe_per_format():
    assert set(doc_recipes()) == set(WRITERS)


def _train_and_evaluate(raw: dict, tmp_path: Path):
    from fcnseg.engine.run_eval import run_evaluation
    from fcnseg.engine.train import train

    result = train(config_from_dict(raw), out=tmp_path / "run")
    assert result.steps == raw["train"]["max_steps"]
    evaluation = run_evaluation(run=result.run_dir, device="cpu", out=tmp_path / "eval.json")
    payload = json.loads((tmp_path / "eval.json").read_text())
    return result, evaluation, payload


@pytest.mark.parametrize(
    "fmt",
    [
        pytest.param(f, marks=pytest.mark.skipif(find_spec("pycocotools") is None, reason="coco"))
        if f == "coco"
        else f
        for f in sorted(WRITERS)
    ],
)
def test_doc_recipe_trains_and_evaluates(tmp_path, fmt):
    WRITERS[fmt](tmp_path / "data")
    raw = doc_recipes()[fmt]
    raw["data"]["root"] = str(tmp_path / "data")
    _, evaluation, payload = _train_and_evaluate(raw, tmp_path)
    assert evaluation.data_format == fmt and evaluation.split == "val"
    assert len(evaluation.dataset) >= 1
    assert "road" in json.dumps(payload) and "car" in json.dumps(payload)


def test_class_map_and_augment_from_the_recipe(tmp_path):
    WRITERS["cvat"](tmp_path / "data")
    raw = doc_recipes()["cvat"]
    raw["data"].update(
        root=str(tmp_path / "data"),
        class_map={"car": "vehicle", "road": "vehicle"},
        augment="pipeline_factories:flip_crop_v2",
        crop_size=[24, 24],
    )
    result, evaluation, payload = _train_and_evaluate(raw, tmp_path)
    assert evaluation.dataset.classes == ("background", "vehicle")
    stored = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert stored["data"]["class_map"] == {"car": "vehicle", "road": "vehicle"}
    assert "vehicle" in json.dumps(payload) and "car" not in json.dumps(payload)


def test_the_weights_carry_the_class_map_to_eval(tmp_path):
    """`fcnseg eval --weights` on the unmerged data scores the merged classes: the weights file
    stores the recipe's data.class_map (without it the class counts differ and eval refuses)."""
    from fcnseg.engine.checkpoint import load_weights
    from fcnseg.engine.run_eval import run_evaluation

    WRITERS["cvat"](tmp_path / "data")
    raw = doc_recipes()["cvat"]
    class_map = {"car": "vehicle", "road": "vehicle"}
    raw["data"].update(root=str(tmp_path / "data"), class_map=class_map)
    result, _, _ = _train_and_evaluate(raw, tmp_path)
    weights = result.run_dir / "model.safetensors"
    assert dict(load_weights(weights)[1].class_map) == class_map
    evaluation = run_evaluation(
        weights=weights,
        data_root=str(tmp_path / "data"),
        data_format="cvat",
        device="cpu",
        out=tmp_path / "eval-weights.json",
    )
    assert evaluation.dataset.classes == ("background", "vehicle")


def test_a_bad_augment_path_stops_before_the_run_directory(tmp_path):
    from fcnseg.engine.train import train
    from fcnseg.errors import RecipeError

    WRITERS["cvat"](tmp_path / "data")
    raw = doc_recipes()["cvat"]
    raw["data"].update(root=str(tmp_path / "data"), augment="pipeline_factories:missing")
    with pytest.raises(RecipeError, match="has no callable 'missing'"):
        train(config_from_dict(raw), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
