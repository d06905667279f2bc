"""The ONNX graph cache proves its contents (issue 22, item 4): inference/cache_entries.py and its
use in inference/graph_cache.py.

The attack of the issue: two models of one architecture export graphs of exactly the same size,
so a graph of model B copied over model A's entry (with or without B's sidecar; dynamic or
fixed-size) passed the old byte-count check and ran as A, reported "argmax agreement 100.00%".
Now the sidecar records the SHA-256 of the weights and of the graph, both checked on every load;
a failing entry is named in one line on stderr, removed and exported again, and what runs is
A's graph (its outputs equal model A's).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import require_module
from torch import nn

from fcnseg.errors import FcnsegError
from fcnseg.inference import graph_cache
from fcnseg.inference.cache_entries import CacheEntry, file_sha256, write_record
from fcnseg.inference.graph_cache import (
    ExportOptions,
    RuntimeUnusable,
    cache_record,
    find_cached,
)
from fcnseg.inference.runtimes import FixedSizeGraphs, resolve_runtime

require_module("onnx", "pip install -e '.[export]'")
require_module("onnxruntime", "pip install -e '.[export]'")

SIZE = (40, 56)


def tiny(seed: int) -> nn.Module:
    """A small net; two seeds give two models of one architecture (graphs of equal size)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1)).eval()
    model.normalization = "imagenet"
    model.num_classes = 5
    return model


def weights_file(folder: Path, name: str) -> Path:
    """A stand-in weights file: the cache keys and proves by its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    path.write_bytes(f"weights of model {name}".encode())
    return path


@pytest.fixture
def two(tmp_path):
    """(model A, weights A, model B, weights B), B's dynamic graph already cached."""
    a, b = tiny(0), tiny(1)
    weights_a = weights_file(tmp_path / "a", "a")
    weights_b = weights_file(tmp_path / "b", "b")
    resolve_runtime(b, weights_b, "onnxruntime", log=None)
    return a, weights_a, b, weights_b


def entry_of(weights: Path, options: ExportOptions | None = None) -> CacheEntry:
    entry = find_cached(weights, options or ExportOptions())
    assert entry is not None
    return entry


def agrees_with(runnable, model: nn.Module, size=SIZE) -> bool:
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return torch.allclose(runnable(image), model(image), atol=1e-4)


def one_line(capsys, *words: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def test_sidecar_records_the_weights_and_graph_hashes(two):
    a, weights_a, _, _ = two
    resolved = resolve_runtime(a, weights_a, "onnxruntime", log=None)
    record = json.loads(resolved.onnx_path.with_suffix(".json").read_text())
    assert record["weights_sha256"] == hashlib.sha256(weights_a.read_bytes()).hexdigest()
    assert record["onnx_sha256"] == hashlib.sha256(resolved.onnx_path.read_bytes()).hexdigest()
    assert record["onnx_bytes"] == resolved.onnx_path.stat().st_size


@pytest.mark.parametrize("with_sidecar", [False, True], ids=["graph-only", "graph-and-sidecar"])
def test_graph_of_other_weights_copied_in_is_exported_again(two, capsys, with_sidecar):
    a, weights_a, b, weights_b = two
    mine = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    theirs = entry_of(weights_b)
    assert mine.stat().st_size == theirs.onnx.stat().st_size  # a byte count cannot tell
    capsys.readouterr()
    shutil.copyfile(theirs.onnx, mine)
    if with_sidecar:
        shutil.copyfile(theirs.sidecar, mine.with_suffix(".json"))
    again = resolve_runtime(a, weights_a, "onnxruntime", log=None)
    why = "other weights" if with_sidecar else "does not match the hash"
    one_line(capsys, str(mine), why, "exporting again")
    assert again.origin == "exported" and again.onnx_path == mine
    assert agrees_with(again.runnable, a) and not agrees_with(again.runnable, b)
    assert file_sha256(mine) == entry_of(weights_a).record()["onnx_sha256"]


def test_changed_bytes_are_exported_again(two, capsys):
    a, weights_a, _, _ = two
    graph = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    graph.write_bytes(bytes(data))
    capsys.readouterr()
    again = resolve_runtime(a, weights_a, "auto", log=None)
    one_line(capsys, "does not match the hash")
    assert again.name == "onnxruntime" and again.origin == "exported"
    assert agrees_with(again.runnable, a)


def test_random_bytes_with_a_matching_sidecar_give_one_line_not_a_traceback(two, capsys):
    """Random bytes whose hash the sidecar agrees with (a forged or re-hashed record): the
    proof passes, onnxruntime cannot parse the graph, and that is one line and a new export."""
    a, weights_a, _, _ = two
    graph = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    graph.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    sidecar = graph.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["onnx_sha256"] = file_sha256(graph)
    sidecar.write_text(json.dumps(record))
    capsys.readouterr()
    again = resolve_runtime(a, weights_a, "onnxruntime", log=None)
    one_line(capsys, "cannot be opened by onnxruntime")
    assert again.origin == "exported" and agrees_with(again.runnable, a)


def test_random_bytes_are_exported_again(two, capsys):
    a, weights_a, _, _ = two
    graph = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    graph.write_bytes(b"\x00\xff" * 500)
    capsys.readouterr()
    again = resolve_runtime(a, weights_a, "onnxruntime", log=None)
    one_line(capsys, "does not match the hash")
    assert again.origin == "exported" and agrees_with(again.runnable, a)


def test_fixed_size_graph_of_other_weights_is_exported_again(two, capsys):
    a, weights_a, b, weights_b = two
    fixed = ExportOptions(dynamic=False, size=SIZE)
    image = torch.randn(1, 3, *SIZE)
    for model, weights in ((a, weights_a), (b, weights_b)):
        router = resolve_runtime(model, weights, "onnxruntime", log=None).runnable
        router(image), router(image)  # the second call at a size makes its graph
        assert router.fixed_sizes == [list(SIZE)]
    mine, theirs = entry_of(weights_a, fixed), entry_of(weights_b, fixed)
    shutil.copyfile(theirs.onnx, mine.onnx)
    capsys.readouterr()
    router = resolve_runtime(a, weights_a, "onnxruntime", log=None).runnable
    assert isinstance(router, FixedSizeGraphs)
    router(image), router(image)
    one_line(capsys, str(mine.onnx), "does not match the hash")
    assert agrees_with(router.graphs[SIZE], a) and not agrees_with(router.graphs[SIZE], b)


def test_failed_check_keeps_the_record_not_the_graph(tmp_path, monkeypatch):
    a = tiny(0)
    weights_a = weights_file(tmp_path / "a", "a")
    real = graph_cache.runtime_check

    def failing(*args, **kwargs):
        return {**real(*args, **kwargs), "passed": False, "argmax_agreement": 0.5}

    monkeypatch.setattr(graph_cache, "runtime_check", failing)
    with pytest.raises(RuntimeUnusable, match="disagrees"):
        resolve_runtime(a, weights_a, "onnxruntime", log=None)
    folder = weights_a.parent / f"{weights_a.name}.onnx-cache"
    assert [p.suffix for p in folder.iterdir()] == [".json"]  # the graph is gone
    monkeypatch.setattr(graph_cache, "runtime_check", lambda *a, **k: pytest.fail("re-checked"))
    auto = resolve_runtime(a, weights_a, "auto", log=None)
    assert auto.name == "torch" and "disagrees" in auto.reason


def test_unremovable_bad_entry_is_one_line(two, capsys):
    """A folder where the graph should be: it cannot be read nor removed; one line, and auto
    still runs (on PyTorch) with the reason."""
    a, weights_a, _, _ = two
    graph = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    graph.unlink()
    (graph / "inside").mkdir(parents=True)
    capsys.readouterr()
    with pytest.raises(FcnsegError) as caught:
        resolve_runtime(a, weights_a, "onnxruntime", log=None)
    assert "\n" not in str(caught.value) and "cannot be removed" in str(caught.value)
    auto = resolve_runtime(a, weights_a, "auto", log=None)
    assert auto.name == "torch" and "cannot be removed" in auto.reason


def test_int8_entry_is_proved_too(two, capsys):
    """An int8 entry (made here from the fp32 graph: the proof does not care what is inside)
    that was tampered with is refused in one line naming the fix, and removed."""
    a, weights_a, _, _ = two
    fp32 = resolve_runtime(a, weights_a, "onnxruntime", log=None).onnx_path
    options = ExportOptions(int8=True)
    entry = CacheEntry.in_folder(fp32.parent, graph_cache.cache_name(weights_a, options))
    shutil.copyfile(fp32, entry.onnx)
    check = {"passed": True, "argmax_agreement": 1.0}
    write_record(entry, cache_record(weights_a, options, check, 0.0))
    assert resolve_runtime(a, weights_a, "onnxruntime-int8", log=None).origin == "cache"
    entry.onnx.write_bytes(entry.onnx.read_bytes()[:-10] + b"0123456789")
    capsys.readouterr()
    with pytest.raises(RuntimeUnusable) as caught:
        resolve_runtime(a, weights_a, "onnxruntime-int8", log=None)
    message = str(caught.value)
    assert "does not match the hash" in message and "--int8" in message and "\n" not in message
    assert not entry.exists()
    assert capsys.readouterr().err == ""  # the error is the one line, said once by the CLI


def test_predict_with_random_bytes_in_the_cache_is_one_line(tmp_path):
    """Through the command: the graph in the cache replaced by random bytes (same size, so the
    old byte count agreed); predict says so in one line, exports again and succeeds."""
    from image_bytes import png_bytes
    from test_hostile_inputs import run_cli
    from test_inference_runtimes import MODEL

    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model

    torch.manual_seed(0)
    model = build_model(MODEL, 5, pretrained=False)
    meta = weights_metadata(
        MODEL,
        {},
        num_classes=5,
        classes=list("abcde"),
        palette=[[i * 40, 0, 0] for i in range(5)],
        normalization=str(model.normalization),
        ignore_index=255,
        data_format="folder",
    )
    weights = tmp_path / "w" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(weights, model, meta)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png_bytes(48, 64))
    argv = ["predict", "--weights", str(weights), "in", "--engine", "onnxruntime"]
    code, _, stderr = run_cli([*argv, "--out", "first", "--device", "cpu"], tmp_path)
    assert code == 0 and not stderr.strip(), stderr
    graph = next(weights.parent.glob("*.onnx-cache/*.onnx"))
    size = graph.stat().st_size
    graph.write_bytes(torch.randint(0, 256, (size,), dtype=torch.uint8).numpy().tobytes())
    code, stdout, stderr = run_cli([*argv, "--out", "second", "--device", "cpu"], tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 0 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "does not match the hash" in lines[0] and "exporting again" in lines[0]
    assert "(exported, argmax agreement" in stdout
    assert (tmp_path / "second" / "a.png").read_bytes() == (
        tmp_path / "first" / "a.png"
    ).read_bytes()
