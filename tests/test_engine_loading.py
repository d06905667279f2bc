"""engine.loading: one LoadedModel from weights, a checkpoint or a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fcnseg.engine.checkpoint import save_checkpoint, save_weights, weights_metadata
from fcnseg.engine.loading import LoadedModel, load_model
from fcnseg.errors import UsageError, WeightsError
from fcnseg.models import build_model

MODEL = "fcn8s_mobilenet_v2"
RECIPE = {"data": {"format": "synthetic", "val_split": "val"}}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[torch.nn.Module, dict, Path]:
    torch.manual_seed(0)
    model = build_model(MODEL, 3, pretrained=False)
    meta = weights_metadata(
        MODEL,
        {},
        num_classes=3,
        classes=["a", "b", "c"],
        palette=[[0, 0, 0], [1, 2, 3], [4, 5, 6]],
        normalization=str(model.normalization),
        ignore_index=255,
        data_format="synthetic",
        step=7,
    )
    return model, meta, tmp_path_factory.mktemp("loading")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_weights_file(parts):
    model, meta, folder = parts
    path = folder / "w.safetensors"
    save_weights(path, model, meta)
    loaded = load_model(weights=path)
    assert isinstance(loaded, LoadedModel) and loaded.source == path
    assert same_weights(loaded.model, model) and not loaded.model.training
    assert loaded.metadata.as_dict() == json.loads(json.dumps(meta)) and loaded.recipe is None
    # Source and recipe belong to the loaded result, never to the metadata.
    assert "source" not in loaded.metadata and loaded.as_dict()["source"] == str(path)


def test_checkpoint_gives_its_recipe(parts):
    model, meta, folder = parts
    path = folder / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta, "config": RECIPE})
    loaded = load_model(checkpoint=path)
    assert loaded.source == path and loaded.recipe == RECIPE
    assert same_weights(loaded.model, model) and "config" not in loaded.metadata


def test_run_directory_prefers_released_weights_then_best_checkpoint(parts):
    model, meta, folder = parts
    run = folder / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": model.state_dict(), "meta": meta})
    (run / "config.yaml").write_text("data:\n  format: synthetic\n")
    from_checkpoint = load_model(run=run)
    assert from_checkpoint.source == run / "checkpoints" / "best.pt"
    assert from_checkpoint.recipe == {"data": {"format": "synthetic"}}  # the run's config.yaml
    save_weights(run / "model.safetensors", model, meta)
    assert load_model(run=run).source == run / "model.safetensors"


def test_refusals_are_one_line(parts, tmp_path):
    model, meta, _ = parts
    with pytest.raises(UsageError, match="exactly one"):
        load_model()
    with pytest.raises(UsageError, match="exactly one"):
        load_model(weights="a", run="b")
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_model(run=tmp_path / "nowhere")
    wrong = tmp_path / "wrong.safetensors"
    save_weights(wrong, build_model(MODEL, 5, pretrained=False), meta)
    with pytest.raises(WeightsError, match="do not fit model") as caught:
        load_model(weights=wrong)
    assert "\n" not in str(caught.value)
