"""SegNet caffemodels imported by layer name, caffe-segnet's "BN" blob layout included.

The files are written here with the test's own protobuf writer. Their layout follows the
release: alexgkendall/caffe-segnet at commit 344c113bf1832886f1cbe9f33ffe28a3beeaf412,
`src/caffe/layers/bn_layer.cpp` (a BN layer holds two blobs, scale and shift, each 1 x C x 1 x 1;
in INFERENCE mode it computes scale * x + shift) and `src/caffe/layers/upsample_layer.cpp` (no
blobs; values go back to the pooling mask's indices); alexgkendall/SegNet-Tutorial at commit
bb68b64e72cb004b3ed927fee0f5624dd8097498, `Scripts/compute_bn_statistics.py` (the statistics
are folded into those two blobs, nothing else is stored) and `Models/segnet_basic_train.prototxt`
(layer names; LRN local_size 5, alpha 1e-4, beta 0.75).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from protobuf_writer import length_field
from test_models_caffe import _blob

from fcnseg.cli import main
from fcnseg.engine.checkpoint import load_weights
from fcnseg.engine.loading import load_model
from fcnseg.models import build_model
from fcnseg.models.caffe import CaffeModelError, expected_layer_names, load_caffemodel

CONVS = ["conv1", "conv2", "conv3", "conv4", "conv_decode4", "conv_decode3", "conv_decode2"]
CONVS += ["conv_decode1"]


def _layer(name: str, kind: str, blobs: list[np.ndarray]) -> bytes:
    body = length_field(1, name.encode()) + length_field(2, kind.encode())
    body += b"".join(length_field(7, _blob(blob)) for blob in blobs)
    return length_field(100, body)


def _segnet_basic_blobs(classes: int, classifier: str, seed: int = 0) -> dict[str, list]:
    """Random blobs of SegNet-Basic, keyed by release layer name, in Caffe's shapes."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, list] = {}
    channels = 3
    for name in CONVS:
        blobs[name] = [
            rng.standard_normal((64, channels, 7, 7)).astype(np.float32) * 0.02,
            rng.standard_normal(64).astype(np.float32) * 0.1,
        ]
        blobs[f"{name}_bn"] = [
            rng.uniform(0.5, 1.5, (1, 64, 1, 1)).astype(np.float32),
            rng.standard_normal((1, 64, 1, 1)).astype(np.float32) * 0.1,
        ]
        channels = 64
    blobs[classifier] = [
        rng.standard_normal((classes, 64, 1, 1)).astype(np.float32) * 0.1,
        rng.standard_normal(classes).astype(np.float32),
    ]
    return blobs


def _write(path, blobs: dict[str, list], bn_type: str = "BN") -> None:
    data = length_field(1, b"segnet") + _layer("data", "Input", [])
    data += _layer("norm", "LRN", [])
    for name, layer_blobs in blobs.items():
        kind = bn_type if name.endswith("_bn") else "Convolution"
        data += _layer(name, kind, layer_blobs)
        if name == "conv4_bn":
            data += _layer("upsample4", "Upsample", [])
    path.write_bytes(data)


def _release_forward(blobs: dict[str, list], classifier: str, image: torch.Tensor):
    """SegNet-Basic's inference as the release computes it, straight from the blobs."""

    def conv_bn(x, name, relu):
        weight, bias = (torch.from_numpy(b) for b in blobs[name])
        x = F.conv2d(x, weight, bias, padding=3)
        scale, shift = (torch.from_numpy(b) for b in blobs[f"{name}_bn"])
        x = x * scale + shift  # BN in INFERENCE mode: 1 x C x 1 x 1 blobs broadcast
        return F.relu(x) if relu else x

    x = F.local_response_norm(image, 5, alpha=1e-4, beta=0.75, k=1.0)
    masks = []
    for name in CONVS[:4]:
        x = conv_bn(x, name, relu=True)
        size = x.shape[-2:]
        x, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
        masks.append((indices, size))
    for name in CONVS[4:]:
        indices, size = masks.pop()
        x = F.max_unpool2d(x, indices, 2, 2, output_size=size)
        x = conv_bn(x, name, relu=False)
    weight, bias = (torch.from_numpy(b) for b in blobs[classifier])
    return F.conv2d(x, weight, bias)


def test_segnet_basic_caffemodel_loads_and_computes_the_releases_inference(tmp_path):
    blobs = _segnet_basic_blobs(11, "conv_classifier")
    source = tmp_path / "segnet_basic_camvid.caffemodel"
    _write(source, blobs)
    model = build_model("segnet_basic", 11, pretrained=False)
    for module in model.modules():  # statistics of some other training: the file replaces them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    loaded, unused = load_caffemodel(model, source)
    assert loaded == [name for name in expected_layer_names(model)]
    assert unused == []
    image = torch.rand(1, 3, 45, 61) * 255
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(image), _release_forward(blobs, "conv_classifier", image)
        )


def test_cli_release_net_writes_camvid_weights_with_raw_bgr_input(tmp_path, capsys):
    """The model zoo's SegNet-Basic names its classifier dense_softmax_inner_prod: an alias."""
    blobs = _segnet_basic_blobs(11, "dense_softmax_inner_prod", seed=3)
    source = tmp_path / "segnet_basic_camvid.caffemodel"
    _write(source, blobs)
    out = tmp_path / "segnet_basic.safetensors"
    assert (
        main(["import-caffe", str(source), "--release", "camvid-segnet-basic", "--out", str(out)])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    _, meta = load_weights(out)
    assert meta["model"] == "segnet_basic" and meta["normalization"] == "caffe_bgr_raw"
    assert meta["classes"][0] == "Sky" and len(meta["classes"]) == 11
    model = load_model(weights=out).model
    image = torch.rand(1, 3, 40, 52) * 255
    with torch.no_grad():
        torch.testing.assert_close(
            model(image), _release_forward(blobs, "dense_softmax_inner_prod", image)
        )


def test_bayesian_segnet_basic_takes_the_same_file(tmp_path):
    blobs = _segnet_basic_blobs(11, "conv_classifier", seed=4)
    source = tmp_path / "net.caffemodel"
    _write(source, blobs)
    model = build_model("bayesian_segnet_basic", 11, pretrained=False)
    load_caffemodel(model, source)
    image = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():  # eval: dropout off, the deterministic release inference
        torch.testing.assert_close(
            model.eval()(image), _release_forward(blobs, "conv_classifier", image)
        )


def test_model_option_without_release_keeps_the_raw_bgr_input(tmp_path):
    source = tmp_path / "net.caffemodel"
    _write(source, _segnet_basic_blobs(11, "conv_classifier"))
    out = tmp_path / "w.safetensors"
    args = ["import-caffe", str(source), "--model", "segnet_basic", "--format", "camvid"]
    assert main([*args, "--out", str(out)]) == 0
    assert load_weights(out)[1]["normalization"] == "caffe_bgr_raw"


@pytest.mark.parametrize(
    "change,message",
    [
        ("shape", "conv2_bn scale has shape"),
        ("blobs", "conv2_bn has 3 blob"),
        ("type", "'BatchNorm' layer"),
    ],
)
def test_bad_bn_layers_are_one_line_errors_naming_the_layer(tmp_path, change, message):
    blobs = _segnet_basic_blobs(11, "conv_classifier")
    if change == "shape":
        blobs["conv2_bn"][0] = np.ones((1, 32, 1, 1), np.float32)
    elif change == "blobs":
        blobs["conv2_bn"].append(np.ones((1, 64, 1, 1), np.float32))
    source = tmp_path / "bad.caffemodel"
    _write(source, blobs, bn_type="BatchNorm" if change == "type" else "BN")
    with pytest.raises(CaffeModelError, match=message) as error:
        load_caffemodel(build_model("segnet_basic", 11, pretrained=False), source)
    assert "\n" not in str(error.value) and "bad.caffemodel" in str(error.value)


def test_segnet_vgg16_looks_up_the_prototxts_weighted_layers():
    """Models/segnet_train.prototxt: 26 convolutions, 25 of them followed by a BN layer."""
    with torch.device("meta"):
        model = build_model("segnet_vgg16", 11, pretrained=False)
    names = expected_layer_names(model)
    assert len(names) == 51
    assert names[:3] == ["conv1_1", "conv1_1_bn", "conv1_2"]
    assert names[-3:] == ["conv1_2_D", "conv1_2_D_bn", "conv1_1_D"]
    assert "upsample5" not in names and "pool1" not in names
