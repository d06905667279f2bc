"""Runtimes in every command (issue 17): the ONNX graph is exported and checked once per weights
file and export options, cached beside the weights (or in the user cache when that folder cannot
be written), reused, and gives the same predictions as PyTorch through eval and predict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module
from PIL import Image

from fcnseg.cli import main
from fcnseg.errors import UsageError
from fcnseg.inference import graph_cache, runtimes
from fcnseg.inference.graph_cache import (
    CHECK_SIZES,
    ExportOptions,
    RuntimeUnusable,
    beside_cache_dir,
    find_cached,
)
from fcnseg.inference.runtimes import resolve_runtime

require_module("onnx", "pip install -e '.[export]'")
require_module("onnxruntime", "pip install -e '.[export]'")

MODEL = "fcn8s_mobilenet_v2"
TINY_OPTIONS = {"num_images": 3, "size": [64, 80]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(weights file of a small random model in its own folder, folder of 3 scene PNGs)."""
    from model_helpers import synthetic_weights

    from fcnseg.data.datasets.registry import build_dataset

    root = tmp_path_factory.mktemp("runtimes")
    (root / "weights").mkdir()
    weights = synthetic_weights(root / "weights" / "tiny.safetensors", MODEL, TINY_OPTIONS)
    images = root / "images"
    images.mkdir()
    dataset = build_dataset("synthetic", None, "test", num_images=3, size=(70, 90))
    for index in range(len(dataset)):
        image, _ = dataset.load(index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / f"scene_{index}.png")
    return weights, images


def _fresh_copy(weights: Path, folder: Path) -> Path:
    """The weights in a new folder, so each test starts with an empty cache."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / weights.name
    copy.write_bytes(weights.read_bytes())
    return copy


def _load(weights: Path):
    """(model, LoadedModel) of a weights file."""
    from fcnseg.engine.loading import load_model

    loaded = load_model(weights=weights)
    return loaded.model, loaded


def test_graph_cached_once_checked_once_and_reused(tiny, tmp_path, monkeypatch):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    first = resolve_runtime(model, loaded.source, "onnxruntime", log=None)
    assert first.name == "onnxruntime" and first.origin == "exported"
    assert first.onnx_path is not None and first.onnx_path.parent == beside_cache_dir(weights)
    sidecar = first.onnx_path.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    check = record["check"]
    assert check["passed"] and check["argmax_agreement"] >= 0.999
    assert [entry["size"] for entry in check["per_size"]] == [list(s) for s in CHECK_SIZES]
    assert record["weights_sha256"].startswith(first.onnx_path.name[:16])
    stamps = (first.onnx_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds a checked graph")

    monkeypatch.setattr("fcnseg.export.export_onnx", no_export)
    monkeypatch.setattr(graph_cache, "runtime_check", no_export)
    second = resolve_runtime(model, loaded.source, "auto", log=None)
    assert second.name == "onnxruntime" and second.origin == "cache"
    assert second.onnx_path == first.onnx_path
    assert (first.onnx_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in beside_cache_dir(weights).iterdir()) == sorted(
        [first.onnx_path.name, sidecar.name]
    )


def test_key_follows_weights_bytes_and_options(tiny, tmp_path):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    first = resolve_runtime(model, loaded.source, "onnxruntime", log=None)
    assert ExportOptions(opset=18).key() != ExportOptions().key()
    assert ExportOptions(int8=True).key() != ExportOptions().key()
    assert find_cached(weights, ExportOptions(opset=18)) is None
    # Retrained weights under the same name: a new key, the old entry is not used.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    from fcnseg.engine.checkpoint import save_weights

    save_weights(weights, model, loaded.metadata.as_dict())
    second = resolve_runtime(model, str(weights), "onnxruntime", log=None)
    assert second.origin == "exported" and second.onnx_path != first.onnx_path


def test_auto_falls_back_to_torch_with_a_reason(tiny, tmp_path, monkeypatch):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    on_gpu = resolve_runtime(model, loaded.source, "auto", device="cuda", log=None)
    assert on_gpu.name == "torch" and "CPU" in on_gpu.reason
    with pytest.raises(UsageError, match="CPU"):
        resolve_runtime(model, loaded.source, "onnxruntime", device="cuda", log=None)
    no_file = resolve_runtime(model, None, "auto", log=None)
    assert no_file.name == "torch" and "weights file" in no_file.reason
    monkeypatch.setattr(runtimes, "onnxruntime_available", lambda: False)
    missing = resolve_runtime(model, loaded.source, "auto", log=None)
    assert missing.name == "torch" and "not installed" in missing.reason
    assert not beside_cache_dir(weights).exists()


def test_failed_check_is_recorded_and_not_repeated(tiny, tmp_path, monkeypatch):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    real_check = graph_cache.runtime_check

    def failing(*args, **kwargs):
        return {**real_check(*args, **kwargs), "passed": False, "argmax_agreement": 0.5}

    monkeypatch.setattr(graph_cache, "runtime_check", failing)
    with pytest.raises(RuntimeUnusable, match="disagrees"):
        resolve_runtime(model, loaded.source, "onnxruntime", log=None)
    monkeypatch.setattr(graph_cache, "runtime_check", lambda *a, **k: pytest.fail("checked again"))
    auto = resolve_runtime(model, loaded.source, "auto", log=None)
    assert auto.name == "torch" and "disagrees" in auto.reason


def test_unwritable_weights_folder_uses_the_user_cache(tiny, tmp_path, monkeypatch):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real = graph_cache.folder_writable
    blocked = beside_cache_dir(weights)
    monkeypatch.setattr(graph_cache, "folder_writable", lambda f: f != blocked and real(f))
    resolved = resolve_runtime(model, loaded.source, "onnxruntime", log=None)
    user = tmp_path / "xdg" / "fcnseg" / "onnx-cache"
    assert resolved.onnx_path is not None and resolved.onnx_path.parent == user
    assert sorted(p.suffix for p in user.iterdir()) == [".json", ".onnx"]
    assert not blocked.exists()
    assert sorted(p.name for p in weights.parent.iterdir()) == [weights.name]
    again = resolve_runtime(model, loaded.source, "auto", log=None)
    assert again.origin == "cache" and again.onnx_path == resolved.onnx_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_weights_folder_uses_the_user_cache(tiny, tmp_path, monkeypatch):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    weights.parent.chmod(0o555)
    try:
        resolved = resolve_runtime(model, loaded.source, "onnxruntime", log=None)
    finally:
        weights.parent.chmod(0o755)
    assert resolved.onnx_path is not None and str(resolved.onnx_path).startswith(
        str(tmp_path / "xdg")
    )


@pytest.mark.parametrize(
    ("mode", "options"),
    [("whole", {}), ("sliding", {"tile_size": 48}), ("multiscale", {"scales": (0.75, 1.25)})],
)
def test_every_inference_mode_runs_on_the_graph(tiny, tmp_path, mode, options):
    from fcnseg.inference import predict_logits

    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    runnable = resolve_runtime(model, loaded.source, "onnxruntime", log=None).runnable
    images = torch.randn(2, 3, 75, 101, generator=torch.Generator().manual_seed(1))
    expected = predict_logits(model, images, mode, **options)
    got = predict_logits(runnable, images, mode, **options)
    assert got.shape == expected.shape
    assert float((got.argmax(1) == expected.argmax(1)).float().mean()) >= 0.999


def test_predict_torch_and_onnxruntime_agree(tiny, tmp_path, capsys):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    outputs = {}
    for engine in ("torch", "onnxruntime"):
        out = tmp_path / engine
        args = ["predict", "--weights", str(weights), str(tiny[1]), "--out", str(out)]
        assert main([*args, "--engine", engine, "--no-overlay", "--device", "cpu"]) == 0
        assert f"engine: {engine}" in capsys.readouterr().out
        outputs[engine] = {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}
    assert outputs["torch"].keys() == outputs["onnxruntime"].keys() and len(outputs["torch"]) == 3
    same = sum(
        int((outputs["torch"][k] == outputs["onnxruntime"][k]).sum()) for k in outputs["torch"]
    )
    total = sum(a.size for a in outputs["torch"].values())
    assert same / total >= 0.999


def test_eval_json_carries_the_engine(tiny, tmp_path, capsys):
    weights = _fresh_copy(tiny[0], tmp_path / "w")
    scores = {}
    for engine in ("torch", "auto"):
        out = tmp_path / f"{engine}.json"
        args = ["eval", "--weights", str(weights), "--mode", "whole", "--device", "cpu"]
        assert main([*args, "--engine", engine, "--out", str(out)]) == 0
        payload = json.loads(out.read_text())
        scores[engine] = payload
        expected = "torch" if engine == "torch" else "onnxruntime"
        assert payload["engine"] == expected
        assert payload["engine_details"]["requested"] == engine
        assert f"engine: {expected}" in capsys.readouterr().out
    assert scores["auto"]["engine_details"]["check"]["passed"]
    assert abs(scores["torch"]["mean_iu"] - scores["auto"]["mean_iu"]) < 1e-3


def test_int8_export_is_cached_for_the_int8_engine(tiny, tmp_path, capsys, monkeypatch):
    from fcnseg.inference import quantize

    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    with pytest.raises(RuntimeUnusable, match="export"):
        resolve_runtime(model, loaded.source, "onnxruntime-int8", log=None)
    # A random-weight net is no test of int8 accuracy (the CamVid benchmark is); here the
    # mechanics: calibration, QDQ graph, cache entry, metadata, engine.
    monkeypatch.setattr(quantize, "INT8_MIN_AGREEMENT", 0.0)
    out = tmp_path / "int8.onnx"
    args = ["export", "--weights", str(weights), "--to", "onnx", "--int8", "--out", str(out)]
    assert main([*args, "--calibrate", str(tiny[1]), "--calibration-images", "2"]) == 0
    assert "int8" in capsys.readouterr().out and out.is_file()
    import onnx

    graph = onnx.load(str(out))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["precision"] == "int8" and props["normalization"] == loaded.metadata.normalization
    resolved = resolve_runtime(model, loaded.source, "onnxruntime-int8", log=None)
    assert (
        resolved.name == "onnxruntime-int8" and resolved.onnx_path.read_bytes() == out.read_bytes()
    )
    assert resolved.record["calibration"]["images"] == 2
    logits = resolved.runnable(torch.randn(1, 3, 64, 80))
    assert logits.shape == (1, loaded.metadata.num_classes, 64, 80)
    eval_out = tmp_path / "int8.json"
    args = ["eval", "--weights", str(weights), "--mode", "whole", "--out", str(eval_out)]
    assert main([*args, "--engine", "onnxruntime-int8", "--device", "cpu"]) == 0
    assert json.loads(eval_out.read_text())["engine"] == "onnxruntime-int8"


def test_int8_usage_errors_exit_2(tiny, tmp_path, capsys):
    weights = str(tiny[0])
    out = str(tmp_path / "x.onnx")
    assert main(["export", "--weights", weights, "--to", "onnx", "--int8", "--out", out]) == 2
    assert "--calibrate" in capsys.readouterr().err
    args = ["export", "--weights", weights, "--to", "torchscript", "--out", out]
    assert main([*args, "--calibrate", str(tmp_path)]) == 2
    assert "--int8" in capsys.readouterr().err


def test_multi_head_model_runs_on_the_graph(tmp_path):
    """SIFT Flow style: one trunk, two heads; the graph returns both and evaluation sees the
    declared heads on the ORT engine as on the module."""
    from fcnseg.engine.evaluate import expected_heads
    from fcnseg.inference import predict_logits
    from fcnseg.models import build_model

    torch.manual_seed(0)
    heads = {"semantic": 5, "geometric": 3}
    model = build_model("multihead", 5, base=MODEL, heads=heads, pretrained=False).eval()
    weights = tmp_path / "multi.safetensors"
    weights.write_bytes(b"stand-in bytes: the cache key is the file's hash")
    resolved = resolve_runtime(model, weights, "onnxruntime", log=None)
    assert resolved.name == "onnxruntime" and resolved.record["check"]["passed"]
    assert expected_heads(resolved.runnable, 5) == expected_heads(model, 5)
    images = torch.randn(1, 3, 70, 90)
    for mode, options in (("whole", {}), ("multiscale", {"scales": (1.0, 1.5)})):
        got = predict_logits(resolved.runnable, images, mode, **options)
        expected = predict_logits(model, images, mode, **options)
        assert got.keys() == expected.keys() == heads.keys()
        for head in heads:
            agreement = (got[head].argmax(1) == expected[head].argmax(1)).float().mean()
            assert float(agreement) >= 0.999


def test_a_size_that_comes_back_gets_its_own_checked_graph(tiny, tmp_path, monkeypatch):
    from fcnseg.inference.runtimes import FixedSizeGraphs

    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    runnable = resolve_runtime(model, loaded.source, "onnxruntime", log=None).runnable
    assert isinstance(runnable, FixedSizeGraphs)
    image = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(2))
    expected = model(image)
    first = runnable(image)
    assert runnable.fixed_sizes == []  # one call: the dynamic graph, nothing exported
    second = runnable(image)
    assert runnable.fixed_sizes == [[70, 90]]
    for got in (first, second):
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-4)
    entry = find_cached(weights, ExportOptions(dynamic=False, size=(70, 90)))
    assert entry is not None
    record = entry.record()
    assert record["options"]["size"] == [70, 90] and record["check"]["passed"]
    assert {tuple(item["size"]) for item in record["check"]["per_size"]} == {(70, 90)}
    # A batch of two keeps to the dynamic graph; no new size is recorded for it.
    assert runnable(image.repeat(2, 1, 1, 1)).shape[0] == 2
    assert runnable.fixed_sizes == [[70, 90]]
    # A new process finds the fixed-size graph in the cache: nothing is exported again.
    monkeypatch.setattr("fcnseg.export.export_onnx", lambda *a, **k: pytest.fail("exported"))
    again = resolve_runtime(model, loaded.source, "onnxruntime", log=None).runnable
    again(image)
    assert torch.allclose(again(image), expected, atol=1e-4)
    assert again.fixed_sizes == [[70, 90]]


def test_fixed_size_graphs_are_capped_and_failures_stay_dynamic(tiny, tmp_path, monkeypatch):
    from fcnseg.inference.runtimes import FixedSizeGraphs

    weights = _fresh_copy(tiny[0], tmp_path / "w")
    model, loaded = _load(weights)
    dynamic = resolve_runtime(model, loaded.source, "onnxruntime", log=None).runnable.dynamic
    logged: list[str] = []
    capped = FixedSizeGraphs(model, weights, dynamic, log=logged.append, max_sizes=1)
    small, large = torch.randn(1, 3, 64, 80), torch.randn(1, 3, 72, 96)
    for _ in range(3):
        capped(small)
        capped(large)
    assert capped.fixed_sizes == [[64, 80]]
    real_export = runtimes.export_checked

    def failing(model, weights_path, options, **kwargs):
        if options.size is not None:
            raise RuntimeUnusable("the graph disagrees with PyTorch")
        return real_export(model, weights_path, options, **kwargs)

    monkeypatch.setattr(runtimes, "export_checked", failing)
    failed = FixedSizeGraphs(model, weights, dynamic, log=logged.append)
    outputs = [failed(large) for _ in range(3)]
    assert failed.fixed_sizes == [] and len(outputs) == 3
    assert sum("no fixed-size graph for 72x96" in line for line in logged) == 1
    assert torch.allclose(outputs[-1], model(large), atol=1e-4)
