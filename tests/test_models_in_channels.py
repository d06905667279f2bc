"""`in_channels=N` for every encoder (the timm/smp first-layer rule) and one `pretrained` rule
for every registered name: random unless weights are asked for."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model, list_models
from fcnseg.models.weights import adapted_first_layer_weight

#: The RGB-D wrappers give `in_channels` their own meaning (RGB plus depth channels: early
#: fusion) or feed two RGB-sized streams (late fusion); every other name takes any count.
RGBD_WRAPPERS = ("early_fusion", "late_fusion")
BAND_MODELS = [name for name in list_models() if name not in RGBD_WRAPPERS]


def test_one_channel_is_the_sum_of_the_rgb_filters():
    rgb = torch.randn(16, 3, 3, 3)
    grey = adapted_first_layer_weight(rgb, 1)
    assert torch.equal(grey, rgb.sum(1, keepdim=True))
    x = torch.rand(1, 1, 9, 9)
    # A grey image responds as the colour image (x, x, x) did.
    assert torch.allclose(F.conv2d(x, grey), F.conv2d(x.expand(-1, 3, -1, -1), rgb), atol=1e-5)


@pytest.mark.parametrize("bands", [2, 4, 8, 13])
def test_n_channels_repeat_rgb_cyclically_scaled_by_three_over_n(bands):
    rgb = torch.randn(8, 3, 3, 3)
    adapted = adapted_first_layer_weight(rgb, bands)
    assert adapted.shape == (8, bands, 3, 3)
    for channel in range(bands):
        assert torch.allclose(adapted[:, channel], rgb[:, channel % 3] * 3 / bands)
    assert torch.equal(adapted_first_layer_weight(rgb, 3), rgb)


@pytest.mark.slow
@pytest.mark.parametrize("bands", [1, 8])
def test_every_encoder_takes_any_band_count(bands):
    failures = []
    for name in BAND_MODELS:
        try:
            with torch.device("meta"):
                model = build_model(name, 5, in_channels=bands)
                # two images: PSPNet's batch-normalised 1x1 pyramid bin refuses one in training
                output = model(torch.empty(2, bands, 64, 64))
            logits = output if isinstance(output, torch.Tensor) else next(iter(output.values()))
            assert model.in_channels == bands and model.normalization == "per_channel"
            assert tuple(logits.shape[-2:]) == (64, 64)
        except Exception as error:  # noqa: BLE001 - collect every name that fails
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert failures == []


def _resnet18_file(tmp_path):
    torch.manual_seed(4)
    classifier = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    return path, classifier.conv1.weight.detach()


@pytest.mark.parametrize("bands", [1, 8])
def test_imagenet_first_layer_is_adapted_after_loading(tmp_path, bands):
    path, conv1 = _resnet18_file(tmp_path)
    model = build_model("fcn8s_resnet18", 3, encoder_weights=str(path), in_channels=bands)
    stem = model.backbone.stem[0].weight.detach()
    assert torch.allclose(stem, adapted_first_layer_weight(conv1, bands))
    rgb = build_model("fcn8s_resnet18", 3, encoder_weights=str(path))
    assert torch.equal(rgb.backbone.stem[0].weight.detach(), conv1)
    assert rgb.normalization == "imagenet"  # RGB keeps the weights' preset


def test_rgb_presets_are_refused_for_other_band_counts():
    with pytest.raises(ModelOptionError, match="normalization='imagenet' has 3 channels"):
        build_model("fcn8s_resnet18", 3, in_channels=8, normalization="imagenet")


@pytest.mark.slow
def test_every_name_is_random_unless_weights_are_asked_for(monkeypatch):
    """One rule across the table (torchvision's): no weights file is looked for or read."""
    from fcnseg.models import paper_nets
    from fcnseg.models.backbones import timm as timm_backbones
    from fcnseg.models.backbones import torchvision as tv_backbones
    from fcnseg.models.weights import OfflineWeights

    def refuse(*args, **kwargs):
        raise AssertionError("weights were looked for without being asked for")

    monkeypatch.setattr(OfflineWeights, "find", refuse)
    monkeypatch.setattr(paper_nets, "load_classifier_weights", refuse)
    monkeypatch.setattr(tv_backbones, "load_state_dict_file", refuse)
    monkeypatch.setattr(timm_backbones, "load_state_dict_file", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" would warn when falling back
        for name in list_models():
            with torch.device("meta"):
                build_model(name, 4)


def test_asking_for_absent_weights_is_one_line_for_every_family(monkeypatch):
    from fcnseg.models.weights import OfflineWeights

    monkeypatch.setattr(OfflineWeights, "find", lambda self: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    for name in ("fcn8s_resnet18", "fcn8s_efficientnet_lite0", "fcn8s_vgg16"):
        with pytest.raises((ModelOptionError, FileNotFoundError)) as caught:
            with torch.device("meta"):
                build_model(name, 4, pretrained=True)
        assert "\n" not in str(caught.value) and "pretrained=False" in str(caught.value)
