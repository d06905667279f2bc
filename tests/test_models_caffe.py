"""Caffe .caffemodel import: files written here in the protobuf wire format, both layer formats."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from protobuf_writer import int_field, length_field, varint

from fcnseg.cli import main
from fcnseg.engine.loading import load_model
from fcnseg.models import build_model
from fcnseg.models.caffe import CaffeModelError, load_caffemodel, read_caffemodel

# --- a minimal protobuf writer (the test's own, independent of the reader under test) ---


_varint, _field, _int_field = varint, length_field, int_field


def _blob(array: np.ndarray, legacy: bool = False, packed: bool = True) -> bytes:
    if legacy:  # num, channels, height, width (V1-era files)
        dims = [1] * (4 - array.ndim) + list(array.shape)  # Caffe pads leading axes with 1
        head = b"".join(
            _int_field(number, dim) for number, dim in zip((1, 2, 3, 4), dims, strict=True)
        )
    else:
        head = _field(7, _field(1, b"".join(_varint(d) for d in array.shape)))
    values = array.astype("<f4").ravel()
    if packed:
        data = _field(5, values.tobytes())
    else:  # one fixed32 per value
        data = b"".join(_varint(5 << 3 | 5) + struct.pack("<f", v) for v in values)
    return head + data


def _caffemodel(layers: list[tuple[str, list[np.ndarray]]], v1: bool = False, **blob_kw) -> bytes:
    out = _field(1, b"FCN-8s")  # NetParameter.name
    for name, blobs in layers:
        if v1:
            body = _field(4, name.encode()) + b"".join(
                _field(6, _blob(b, **blob_kw)) for b in blobs
            )
            out += _field(2, body)
        else:
            body = _field(1, name.encode()) + _field(2, b"Convolution")
            body += b"".join(_field(7, _blob(b, **blob_kw)) for b in blobs)
            out += _field(100, body)
    # A data layer with no blobs, as in real deploy nets.
    out += _field(100, _field(1, b"data") + _field(2, b"Input"))
    return out


def _layers_of(model: torch.nn.Module, seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """Random Caffe layers with the names and shapes of `model`'s weighted modules."""
    rng = np.random.default_rng(seed)
    layers = []
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not path or not isinstance(weight, torch.Tensor):
            continue
        blobs = [rng.standard_normal(tuple(weight.shape)).astype(np.float32)]
        if isinstance(getattr(module, "bias", None), torch.Tensor):
            blobs.append(rng.standard_normal(tuple(module.bias.shape)).astype(np.float32))
        layers.append((path.rsplit(".", 1)[-1], blobs))
    return layers


def _small_fcn8s():
    return build_model("fcn8s_vgg16", 21, pretrained=False, width_divisor=16)


@pytest.mark.parametrize(
    "options", [{}, {"v1": True, "legacy": True}, {"packed": False}], ids=["v2", "v1", "unpacked"]
)
def test_every_layer_lands_by_name(tmp_path: Path, options: dict) -> None:
    model = _small_fcn8s()
    layers = _layers_of(model)
    path = tmp_path / "fcn8s.caffemodel"
    path.write_bytes(_caffemodel(layers, **options))
    loaded, unused = load_caffemodel(model, path)
    assert unused == [] and len(loaded) == len(layers)
    state = model.state_dict()
    for name, blobs in layers:
        key = "encoder." + name if f"encoder.{name}.weight" in state else name
        np.testing.assert_array_equal(state[f"{key}.weight"].numpy(), blobs[0])
        if len(blobs) > 1:
            np.testing.assert_array_equal(state[f"{key}.bias"].numpy(), blobs[1])


def test_ilsvrc_inner_product_becomes_convolution_and_partial_keeps_score_init(tmp_path):
    model = _small_fcn8s()
    layers = [(n, b) for n, b in _layers_of(model) if n.startswith(("conv", "fc"))]
    # The classifier caffemodel stores fc6/fc7 as InnerProduct: 2-D weights.
    layers = [
        (n, [b[0].reshape(b[0].shape[0], -1), b[1]]) if n.startswith("fc") else (n, b)
        for n, b in layers
    ]
    layers.append(("fc8", [np.zeros((1000, 4), np.float32), np.zeros(1000, np.float32)]))
    path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    path.write_bytes(_caffemodel(layers))
    with pytest.raises(CaffeModelError, match="score_fr"):
        load_caffemodel(_small_fcn8s(), path)
    loaded, unused = load_caffemodel(model, path, strict=False)
    assert unused == ["fc8"] and "fc6" in loaded
    fc6 = dict(layers)["fc6"][0]
    np.testing.assert_array_equal(model.fc6.weight.detach().numpy().reshape(fc6.shape), fc6)
    assert model.score_fr.weight.abs().sum() == 0  # still the paper's zero initialisation


def test_wrong_shape_and_bad_files_are_one_line_errors(tmp_path):
    model = _small_fcn8s()
    layers = _layers_of(build_model("fcn8s_vgg16", 5, pretrained=False, width_divisor=16))
    path = tmp_path / "other.caffemodel"
    path.write_bytes(_caffemodel(layers))
    with pytest.raises(CaffeModelError, match=r"layer score_fr weight has shape \[5, "):
        load_caffemodel(model, path)
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CaffeModelError, match="cut.caffemodel: not a readable caffemodel"):
        read_caffemodel(truncated)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text('name: "FCN"\n')
    with pytest.raises(CaffeModelError, match="deploy.prototxt"):
        read_caffemodel(prototxt)
    with pytest.raises(FileNotFoundError, match="missing.caffemodel"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def test_cli_writes_weights_that_predict_like_the_loaded_net(tmp_path, capsys):
    reference = build_model(
        "fcn8s_vgg16", 21, pretrained=False, width_divisor=16, normalization="caffe_bgr"
    )
    layers = _layers_of(reference, seed=1)
    source = tmp_path / "fcn8s-heavy-pascal.caffemodel"
    source.write_bytes(_caffemodel(layers))
    load_caffemodel(reference, source)
    out = tmp_path / "fcn8s.safetensors"
    args = ["import-caffe", str(source), "--model", "fcn8s_vgg16", "--out", str(out)]
    assert main([*args, "--options", "width_divisor=16"]) == 0
    loaded = load_model(weights=out)
    model, meta = loaded.model, loaded.metadata
    assert meta["normalization"] == "caffe_bgr" and meta["classes"][0] == "background"
    image = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference.eval()(image))
    # A caffemodel for another net: exit 2, one line naming the file, nothing written.
    other = tmp_path / "other.safetensors"
    assert (
        main(["import-caffe", str(source), "--model", "fcn32s_alexnet", "--out", str(other)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fcn8s-heavy-pascal.caffemodel" in err
    assert not other.exists()
