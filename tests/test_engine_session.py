"""InferenceSession: one way from a weights file to labels for eval, predict and serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import synthetic_weights
from PIL import Image

from fcnseg.engine.device import resolve_device
from fcnseg.engine.metadata import validate_weights_metadata
from fcnseg.engine.session import InferenceSession, choose_spec
from fcnseg.errors import UsageError
from fcnseg.inference.spec import InferenceSpec

MODEL = "fcn8s_mobilenet_v2"
OPTIONS = {"num_images": 2, "size": [48, 64]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A small random model's weights, its recipe naming the synthetic dataset."""
    path = tmp_path_factory.mktemp("session") / "tiny.safetensors"
    return synthetic_weights(path, MODEL, OPTIONS)


def test_eval_predict_and_serve_give_the_sessions_labels(weights, tmp_path):
    from fcnseg.data.datasets.registry import build_dataset
    from fcnseg.engine.predict import run_prediction
    from fcnseg.engine.run_eval import run_evaluation
    from fcnseg.serve import load_pool

    session = InferenceSession.load(weights=weights, device="cpu")
    assert session.spec == InferenceSpec() and session.runtime.name == "torch"
    dataset = build_dataset("synthetic", None, "val", **OPTIONS)
    images = [dataset.load(index)[0] for index in range(len(dataset))]
    expected = [session.labels([image])[0].numpy() for image in images]

    seen: list[np.ndarray] = []
    result = run_evaluation(
        weights=weights,
        device="cpu",
        out=tmp_path / "eval.json",
        batch_hook=lambda data, loader: lambda predicted, target: seen.extend(predicted.numpy()),
    )
    assert result.session.runtime.name == "torch" and result.payload["source"] == str(weights)
    assert [labels.tolist() for labels in seen] == [labels.tolist() for labels in expected]

    folder = tmp_path / "in"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    report = run_prediction([str(folder)], tmp_path / "out", weights=weights, device="cpu")
    assert report.counts() == (2 * len(images), 0)
    for index, labels in enumerate(expected):
        written = np.asarray(Image.open(tmp_path / "out" / f"{index}.png"))
        assert (written == labels).all()

    pool = load_pool(weights=weights)
    try:
        for image, labels in zip(images, expected, strict=True):
            served = pool.segment(image.permute(1, 2, 0).numpy()).labels
            assert (served == labels).all()
        assert pool.describe()["weights"] == weights.name
    finally:
        pool.close()


def test_spec_comes_from_the_command_line_else_the_weights():
    raw = {
        "model": "m",
        "num_classes": 1,
        "classes": ["a"],
        "palette": [[0, 0, 0]],
        "normalization": "imagenet",
        "inference": {"mode": "multiscale", "options": {"scales": [1.0, 1.25], "flip": True}},
    }
    metadata = validate_weights_metadata(raw, "w")
    recommended = choose_spec(metadata, None, None)
    assert recommended.mode == "multiscale" and recommended.scales == (1.0, 1.25)
    overridden = choose_spec(metadata, None, {"scales": (1.5,)})
    assert overridden.options() == {"scales": (1.5,), "flip": True}
    assert choose_spec(metadata, "whole", {}) == InferenceSpec()
    with pytest.raises(UsageError, match="command line: inference scales"):
        choose_spec(metadata, None, {"scales": (0.0,)})


def test_auto_device_follows_the_runtime(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "onnxruntime").type == "cpu"
    assert resolve_device("auto", "onnxruntime-int8").type == "cpu"
    assert resolve_device("auto", "torch").type == "cuda"
    assert resolve_device("auto").type == "cuda"
