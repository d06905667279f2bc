"""`--mc-samples` end to end (issue 25, item 2): predict's files, eval's JSON, the Python API,
serve's answer, and the one-line refusals (a net without dropout, the shipped CamVid models, an
ONNX engine, --tiled).

The net with dropout is the paper's FCN-32s on VGG16 (drop6 / drop7 after fc6 / fc7, as in the
release's train prototxt) with every width divided by 16, so a pass takes milliseconds.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "camvid_fcn4s_lite0.safetensors"
MODEL, OPTIONS = "fcn32s_vgg16", {"width_divisor": 16}
SYNTHETIC = {"num_images": 2, "size": [32, 32]}


@pytest.fixture(scope="module")
def dropout_weights(tmp_path_factory) -> Path:
    """A weights file of a net with dropout (untrained: the tests check sampling, not accuracy)."""
    from fcnseg.data.datasets.registry import get_dataset_class
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model

    info = get_dataset_class("synthetic").class_info
    torch.manual_seed(0)
    model = build_model(MODEL, len(info.names), **OPTIONS)
    meta = weights_metadata(
        MODEL,
        OPTIONS,
        num_classes=len(info.names),
        classes=list(info.names),
        palette=[list(c) for c in info.palette],
        normalization=model.normalization,
        ignore_index=info.ignore_index,
        data_format="synthetic",
    )
    meta["config"] = {"data": {"format": "synthetic", "options": SYNTHETIC, "val_split": "val"}}
    path = tmp_path_factory.mktemp("mc") / "dropout.safetensors"
    save_weights(path, model, meta)
    return path


def scene(path: Path, height: int = 40, width: int = 56) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_the_uncertainty_beside_the_labels(tmp_path, capsys, dropout_weights):
    image = scene(tmp_path / "street.png")
    out = tmp_path / "out"
    argv = ["predict", str(image), "--weights", str(dropout_weights), "--out", str(out)]
    assert main([*argv, "--mc-samples", "4", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "1 images -> 4 files" in printed
    assert "mc-dropout: 4 samples per image (seed 5)" in printed and "ms per image" in printed
    heat = Image.open(out / "street_uncertainty.png")
    raw = np.asarray(Image.open(out / "street_uncertainty16.png"))
    assert heat.mode == "RGB" and heat.size == (56, 40)
    assert raw.dtype == np.uint16 and raw.shape == (40, 56)
    # The API with the same seed computes the same labels and uncertainty.
    labels, uncertainty = fcnseg.load(dropout_weights, device="cpu").predict(
        image, mc_samples=4, seed=5
    )
    assert np.array_equal(np.asarray(Image.open(out / "street.png")), labels)
    assert np.abs(raw / 65535.0 - uncertainty).max() <= 1 / 65535
    # Without --mc-samples: no uncertainty files.
    plain = tmp_path / "plain"
    assert (
        main(["predict", str(image), "--weights", str(dropout_weights), "--out", str(plain)]) == 0
    )
    assert sorted(p.name for p in plain.iterdir()) == ["street.png", "street_overlay.jpg"]


def test_the_api_returns_the_uncertainty(dropout_weights, tmp_path):
    segmenter = fcnseg.load(dropout_weights, device="cpu")
    image = np.asarray(Image.open(scene(tmp_path / "a.png")))
    labels, probs, uncertainty = segmenter.predict(image, probs=True, mc_samples=6)
    assert uncertainty.shape == labels.shape == (40, 56) and uncertainty.dtype == np.float32
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0 and uncertainty.mean() > 0
    assert np.array_equal(probs.argmax(0), labels)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(0) / np.log(len(probs))
    assert np.allclose(uncertainty, entropy, atol=1e-5)
    again = segmenter.predict(image, mc_samples=6)
    assert np.array_equal(again[0], labels) and np.array_equal(again[1], uncertainty)
    assert isinstance(segmenter.predict(image), np.ndarray)  # plain calls unchanged


def test_eval_samples_and_records_how(tmp_path, capsys, dropout_weights):
    out = tmp_path / "scores.json"
    argv = ["eval", "--weights", str(dropout_weights), "--out", str(out)]
    assert main([*argv, "--mc-samples", "3"]) == 0
    assert "mc-dropout: 3 samples per image (seed 0)" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["mc_dropout"]["samples"] == 3 and payload["mc_dropout"]["ms_per_image"] > 0
    assert payload["engine"] == "torch"
    assert main(argv) == 0
    assert "mc_dropout" not in json.loads(out.read_text())


def test_auto_engine_samples_in_pytorch_and_an_onnx_session_refuses(dropout_weights):
    from fcnseg.engine.session import InferenceSession

    sampling = InferenceSession.load(
        weights=dropout_weights, device="cpu", runtime="auto", mc_samples=2
    )
    assert sampling.runtime.name == "torch" and "--mc-samples" in sampling.runtime.reason
    assert sampling.mc is not None and sampling.mc.samples == 2
    onnx = fcnseg.load(dropout_weights, device="cpu", runtime="onnxruntime")
    with pytest.raises(UsageError, match="the onnxruntime graph is exported with dropout off"):
        onnx.predict(np.zeros((32, 32, 3), np.uint8), mc_samples=2)


def one_line_refusal(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err


@pytest.mark.parametrize("command", ["predict", "eval", "serve"])
def test_the_shipped_camvid_models_have_no_dropout_and_are_refused(tmp_path, capsys, command):
    if not SHIPPED.is_file():
        pytest.fail(f"{SHIPPED} is shipped with the repository and missing")
    extra = {"predict": [str(scene(tmp_path / "a.png")), "--out", str(tmp_path / "o")]}
    argv = [command, *extra.get(command, []), "--weights", str(SHIPPED), "--mc-samples", "4"]
    if command == "serve":
        require_module("fastapi", "pip install -e '.[test]'")
    one_line_refusal(
        capsys,
        argv,
        "model fcn4s_efficientnet_lite0 has no dropout layers; --mc-samples needs a net with "
        "dropout such as bayesian_segnet_*",
    )
    assert not (tmp_path / "o").exists()


def test_the_api_refuses_a_net_without_dropout():
    with pytest.raises(UsageError, match="has no dropout layers"):
        fcnseg.load(SHIPPED, device="cpu").predict(np.zeros((8, 8, 3), np.uint8), mc_samples=2)


@pytest.mark.parametrize("engine", ["onnxruntime", "onnxruntime-int8"])
def test_onnx_engines_are_refused_before_any_work(tmp_path, capsys, engine, dropout_weights):
    # predict: before the weights load (a missing file would be the error otherwise).
    missing = str(tmp_path / "nothing.safetensors")
    image = str(scene(tmp_path / "a.png"))
    expected = f"--mc-samples needs --engine torch (or auto): the {engine} graph"
    predict = ["predict", image, "--out", str(tmp_path / "o"), "--weights", missing]
    one_line_refusal(capsys, [*predict, "--engine", engine, "--mc-samples", "2"], expected)
    # eval: before the split is read or a graph exported.
    scores = tmp_path / "scores.json"
    evaluate = ["eval", "--weights", str(dropout_weights), "--out", str(scores)]
    one_line_refusal(capsys, [*evaluate, "--engine", engine, "--mc-samples", "2"], expected)
    assert not scores.exists() and not (tmp_path / "o").exists()


def test_bad_counts_and_tiled_rasters_are_refused(tmp_path, capsys, dropout_weights):
    image = str(scene(tmp_path / "a.png"))
    base = ["predict", image, "--out", str(tmp_path / "o"), "--weights", str(dropout_weights)]
    one_line_refusal(capsys, [*base, "--mc-samples", "0"], "--mc-samples must be between 1")
    one_line_refusal(capsys, [*base, "--mc-samples", "2", "--tiled"], "does not work with --tiled")


def test_serve_answers_with_the_uncertainty(dropout_weights, tmp_path):
    require_module("fastapi", "pip install -e '.[test]'")
    from fastapi.testclient import TestClient

    from fcnseg.serve import create_app, load_pool

    pool = load_pool(dropout_weights, device="cpu", mc_samples=3, seed=1)
    client = TestClient(create_app(pool))
    described = client.get("/v1/model").json()
    assert described["mc_dropout"]["samples"] == 3 and described["mc_dropout"]["seed"] == 1
    upload = scene(tmp_path / "up.png").read_bytes()
    answer = client.post("/v1/segment", files={"image": ("up.png", upload, "image/png")})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    heat = Image.open(io.BytesIO(base64.b64decode(data["uncertainty_png"])))
    assert heat.mode == "RGB" and heat.size == (56, 40) and data["mc_samples"] == 3
    # The same numbers as the API with the same seed, and the page can show them.
    _, uncertainty = fcnseg.load(dropout_weights, device="cpu").predict(
        tmp_path / "up.png", mc_samples=3, seed=1
    )
    assert data["mean_uncertainty"] == pytest.approx(float(uncertainty.mean()), abs=1e-4)
    page = client.get("/").text
    assert 'id="show-uncertainty"' in page and "data.uncertainty_png" in page
    plain = TestClient(create_app(load_pool(dropout_weights, device="cpu")))
    answer = plain.post("/v1/segment", files={"image": ("up.png", upload, "image/png")})
    assert answer.status_code == 200 and "uncertainty_png" not in answer.json()
    pool.close()
