"""`import_caffe_release` (fcnseg.engine.caffe_import): a caffemodel -> weights with the metadata
of the release net it is, as `fcnseg import-caffe` writes them.

The caffemodels are written by the test's own protobuf writer (tests/test_models_caffe.py);
the nets are the paper's, narrowed 16 times so that a file is a few hundred kilobytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models_caffe import _caffemodel, _layers_of

from fcnseg.engine.caffe_import import CaffeImport, import_caffe_release
from fcnseg.engine.checkpoint import load_weights
from fcnseg.engine.loading import load_model
from fcnseg.errors import UsageError
from fcnseg.models import build_model
from fcnseg.models.caffe import CaffeModelError, load_caffemodel

NARROW = {"width_divisor": 16}


def _context_caffemodel(tmp_path, extra_layer: bool = False):
    """A pascalcontext-fcn8s-like file: 60 classes, the release's layer names."""
    reference = build_model(
        "fcn8s_vgg16", 60, pretrained=False, normalization="caffe_bgr", **NARROW
    ).eval()
    layers = _layers_of(reference, seed=2)
    if extra_layer:
        layers.append(("fc8_extra", [np.zeros((3, 2), np.float32)]))
    path = tmp_path / "pascalcontext-fcn8s-heavy.caffemodel"
    path.write_bytes(_caffemodel(layers))
    load_caffemodel(reference, path, strict=True)
    return path, reference, len(layers)


def test_release_picks_model_classes_and_metadata(tmp_path):
    source, reference, count = _context_caffemodel(tmp_path, extra_layer=True)
    out = tmp_path / "context.safetensors"
    result = import_caffe_release(source, out=out, release="pascalcontext-fcn8s", options=NARROW)
    assert result == CaffeImport(out, "fcn8s_vgg16", result.loaded, ["fc8_extra"])
    assert len(result.loaded) == count - 1
    _, meta = load_weights(out)
    # The release scores "everything else" before the 59 PASCAL-Context classes.
    assert meta["classes"][0] == "everything else" and len(meta["classes"]) == 60
    assert meta["palette"][0] == [0, 0, 0] and len(meta["palette"]) == 60
    assert meta["release_net"] == "pascalcontext-fcn8s" and meta["data_format"] == "context"
    assert meta["normalization"] == "caffe_bgr"
    assert meta["converted_from"] == source.name
    loaded = load_model(weights=out)
    model, meta = loaded.model, loaded.metadata
    image = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image))


def test_model_without_release_defaults_to_voc_and_partial_keeps_missing_layers(tmp_path):
    model = build_model("fcn8s_vgg16", 21, pretrained=False, **NARROW)
    layers = [(name, blobs) for name, blobs in _layers_of(model) if not name.startswith("score")]
    source = tmp_path / "encoder-only.caffemodel"
    source.write_bytes(_caffemodel(layers))
    out = tmp_path / "voc.safetensors"
    with pytest.raises(CaffeModelError, match="score_fr"):
        import_caffe_release(source, out=out, model="fcn8s_vgg16", options=NARROW)
    assert not out.exists()
    result = import_caffe_release(
        source, out=out, model="fcn8s_vgg16", partial=True, options=NARROW
    )
    assert result.unused == [] and len(result.loaded) == len(layers)
    _, meta = load_weights(out)
    assert meta["data_format"] == "voc" and meta["classes"][0] == "background"
    assert "release_net" not in meta


def test_import_needs_a_release_or_a_model(tmp_path):
    with pytest.raises(UsageError, match="--release NET"):
        import_caffe_release(tmp_path / "x.caffemodel", out=tmp_path / "x.safetensors")
    with pytest.raises(CaffeModelError, match="unknown release net"):
        import_caffe_release(
            tmp_path / "x.caffemodel", out=tmp_path / "x.safetensors", release="voc-fcn9s"
        )
    assert list(tmp_path.iterdir()) == []
