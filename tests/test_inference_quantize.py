"""int8 export (fcnseg.inference.quantize): which images calibrate, the agreement that gates the
int8 graph, the refusals, and the whole path on a small random net.

A random-weight net says nothing about int8 accuracy (benchmarks/engines_camvid.py measures that
on CamVid); here the mechanics are checked: calibration selection, the QDQ graph in the cache and
at --out, its metadata, and the refusal when the int8 graph disagrees with PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module
from PIL import Image

from fcnseg.engine.exporting import export_int8
from fcnseg.errors import DataError, UsageError
from fcnseg.inference import quantize
from fcnseg.inference.quantize import (
    _evenly,
    _Reader,
    argmax_agreement,
    calibration_images,
    quantize_int8,
)


def _write_images(folder: Path, count: int, size: tuple[int, int] = (24, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"im{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# --- calibration selection --------------------------------------------------------------------
def test_evenly_spreads_over_the_whole_split():
    assert _evenly(4, 4) == [0, 1, 2, 3]
    assert _evenly(10, 3) == [0, 1, 2]  # more asked than there are: every one
    assert _evenly(4, 100) == [0, 25, 50, 75]  # not the first four (one sequence of a video)
    assert _evenly(1, 7) == [0]


def test_folder_calibration_picks_spread_images_in_name_order(tmp_path):
    _write_images(tmp_path / "images", 6)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "nested").mkdir()
    images, source = calibration_images(tmp_path / "images", "imagenet", count=3)
    assert len(images) == 3 and source == f"folder {tmp_path / 'images'}, 3 of 6 images"
    assert all(image.shape == (1, 3, 24, 32) and image.dtype == torch.float32 for image in images)
    # Normalised (ImageNet mean/std), not raw bytes.
    assert all(float(image.abs().max()) < 3.0 for image in images)
    again, _ = calibration_images(tmp_path / "images", "imagenet", count=3)
    assert all(torch.equal(a, b) for a, b in zip(images, again, strict=True))


def test_dataset_calibration_reads_the_named_split(tmp_path):
    images, source = calibration_images(tmp_path, "imagenet", data_format="synthetic", count=2)
    assert len(images) == 2 and source.startswith("synthetic train split of")
    assert "2 of" in source


def test_calibration_refusals_name_the_fix(tmp_path):
    with pytest.raises(UsageError, match="--calibration-images"):
        calibration_images(tmp_path, "imagenet", count=0)
    with pytest.raises(FileNotFoundError, match="--calibrate .*missing"):
        calibration_images(tmp_path / "missing", "imagenet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--format"):
        calibration_images(tmp_path / "empty", "imagenet")


# --- the reader and the agreement gate --------------------------------------------------------
def test_reader_yields_each_image_once_then_rewinds():
    images = [torch.full((1, 3, 2, 2), float(i)) for i in range(2)]
    reader = _Reader("input", images)
    first = reader.get_next()
    assert set(first) == {"input"} and first["input"].dtype == np.float32
    assert reader.get_next()["input"][0, 0, 0, 0] == 1.0 and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["input"][0, 0, 0, 0] == 0.0


def test_agreement_is_pixel_weighted_gated_and_names_the_worst_image():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    images = [torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4, 4)]
    same = argmax_agreement(model, model, images)
    assert same["argmax_agreement"] == 1.0 and same["passed"]
    assert same["inputs"] == "2 calibration images" and same["worst_image_agreement"] == 1.0
    flipped = argmax_agreement(model, lambda x: -model(x), images)
    assert flipped["argmax_agreement"] < quantize.INT8_MIN_AGREEMENT and not flipped["passed"]

    def heads(x):
        return {"semantic": model(x), "geometric": -model(x)}

    assert argmax_agreement(heads, heads, images)["argmax_agreement"] == 1.0  # first head


def test_no_calibration_images_is_refused_before_any_export(tmp_path):
    with pytest.raises(DataError, match="at least one image"):
        quantize_int8(torch.nn.Conv2d(3, 2, 1), tmp_path / "w.safetensors", [], log=None)
    assert list(tmp_path.iterdir()) == []


# --- the whole path on a tiny net --------------------------------------------------------------
class TinyNet(torch.nn.Module):
    """Two convolutions with the attributes export needs: the whole int8 path in a second or two
    (a registry model takes minutes on a loaded 2-core CPU)."""

    in_channels = 3
    normalization = "imagenet"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.score = torch.nn.Conv2d(8, 4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(torch.relu(self.features(images)))


@pytest.fixture
def tiny_source(tmp_path, monkeypatch) -> Path:
    """A stand-in weights file for TinyNet: engine.exporting's load_model answers with the net.

    The cache is keyed by the file's bytes, so any file will do; how real weights load is
    engine/loading's business (tests/test_inference_runtimes.py runs `fcnseg export --int8` end to end).
    """
    from types import SimpleNamespace

    from fcnseg.engine import exporting

    weights = tmp_path / "weights" / "tiny.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"tiny net stand-in")

    def load(weights_arg, checkpoint=None, run=None):
        assert Path(weights_arg) == weights and checkpoint is None and run is None
        return SimpleNamespace(
            model=TinyNet(), metadata={"normalization": "imagenet"}, source=weights
        )

    monkeypatch.setattr(exporting, "load_model", load)
    return weights


def test_export_int8_writes_a_qdq_graph_cached_for_the_int8_engine(tiny_source, tmp_path):
    require_module("onnxruntime", "pip install -e '.[export]'")
    import onnx

    images = tmp_path / "images"
    _write_images(images, 3)
    out = tmp_path / "int8.onnx"
    entry, record = export_int8(out, images, weights=tiny_source, count=2, log=None)
    assert out.read_bytes() == entry.onnx.read_bytes()
    assert entry.onnx.parent.name == "tiny.safetensors.onnx-cache"  # beside the weights
    graph = onnx.load(str(out))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    props = {prop.key: prop.value for prop in graph.metadata_props}
    assert props["precision"] == "int8" and props["normalization"] == "imagenet"
    assert json.loads(props["calibration"])["images"] == 2
    assert record["calibration"] == {"source": f"folder {images}, 2 of 3 images", "images": 2}
    assert record["check"]["passed"] and record["check"]["argmax_agreement"] > 0.9


def test_a_disagreeing_int8_graph_is_refused_and_not_written(tiny_source, tmp_path, monkeypatch):
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import ExportError

    images = tmp_path / "images"
    _write_images(images, 2)
    monkeypatch.setattr(quantize, "INT8_MIN_AGREEMENT", 1.01)  # no graph can reach it
    out = tmp_path / "refused.onnx"
    with pytest.raises(ExportError, match="not cached.*use --engine onnxruntime"):
        export_int8(out, images, weights=tiny_source, log=None)
    assert not out.exists()
    # Nothing of the refused graph stays in the cache: only the fp32 graph and its sidecar, so
    # `--engine onnxruntime-int8` cannot pick it up later.
    cache = tiny_source.parent / "tiny.safetensors.onnx-cache"
    fp32_key = quantize.ExportOptions(opset=17).key()
    assert sorted(p.name.split("-")[1] for p in cache.iterdir()) == [
        f"{fp32_key}.json",
        f"{fp32_key}.onnx",
    ]


def test_export_int8_reports_a_bad_model_source_before_reading_images(tmp_path):
    from fcnseg.errors import FcnsegError

    # Neither the weights nor the calibration folder exist: the model source is named first.
    with pytest.raises((FcnsegError, FileNotFoundError), match="nothing.safetensors"):
        export_int8(
            tmp_path / "x.onnx", tmp_path / "no-images", weights=tmp_path / "nothing.safetensors"
        )
