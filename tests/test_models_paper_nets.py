"""The paper nets' builders: torchvision / file encoder weights, fc transplants, registry, policy."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fcnseg.models import build_model, list_models, model_info
from fcnseg.models.backbones.vgg import VGG16_BLOCKS
from fcnseg.models.paper_fcn import PaperFCN
from fcnseg.models.paper_nets import fcn32s_alexnet, fcn32s_googlenet, fcn_vgg16
from fcnseg.models.surgery import _torchvision_enum, transplant_linear

#: Narrowest VGG16 that keeps every width whole (64 / 64 = 1 channel): same geometry, ~no compute.
GEOMETRY_DIVISOR = 64
#: Narrow but realistic widths for numerical tests (8 channels in conv1_1).
SMALL_DIVISOR = 8
VGG_NAMES = [
    f"{variant}_vgg16{suffix}"
    for variant in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
    for suffix in ("", "_padded")
]


# --- weights ------------------------------------------------------------------------------------


def _torchvision_format_vgg16_state(divisor: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict laid out like torchvision's VGG16 (features.N, classifier.0/3), narrowed."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    index, in_channels = 0, 3
    for widths in VGG16_BLOCKS:
        for width in widths:
            out_channels = width // divisor
            state[f"features.{index}.weight"] = torch.randn(
                out_channels, in_channels, 3, 3, generator=generator
            )
            state[f"features.{index}.bias"] = torch.randn(out_channels, generator=generator)
            index += 2  # conv, relu
            in_channels = out_channels
        index += 1  # pool
    fc = 4096 // divisor
    state["classifier.0.weight"] = torch.randn(fc, in_channels * 49, generator=generator)
    state["classifier.0.bias"] = torch.randn(fc, generator=generator)
    state["classifier.3.weight"] = torch.randn(fc, fc, generator=generator)
    state["classifier.3.bias"] = torch.randn(fc, generator=generator)
    state["classifier.6.weight"] = torch.randn(1000, fc, generator=generator)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_weights_from_file(tmp_path, suffix: str) -> None:
    state = _torchvision_format_vgg16_state(SMALL_DIVISOR)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = build_model("fcn8s_vgg16", 21, encoder_weights=str(path), width_divisor=SMALL_DIVISOR)
    torch.testing.assert_close(model.encoder.conv1_1.weight, state["features.0.weight"])
    torch.testing.assert_close(model.encoder.conv5_3.bias, state["features.28.bias"])
    torch.testing.assert_close(model.fc6.weight.flatten(1), state["classifier.0.weight"])
    torch.testing.assert_close(model.fc7.weight.flatten(1), state["classifier.3.weight"])
    assert model.normalization == "imagenet"


def test_encoder_weights_from_weights_enum_like_object() -> None:
    """torchvision enums are used through `get_state_dict`; a stand-in avoids the download."""

    class FakeWeights:
        def get_state_dict(self, progress: bool = True) -> dict[str, torch.Tensor]:
            return _torchvision_format_vgg16_state(SMALL_DIVISOR, seed=5)

    model = fcn_vgg16(2, encoder_weights=FakeWeights(), width_divisor=SMALL_DIVISOR)
    expected = _torchvision_format_vgg16_state(SMALL_DIVISOR, seed=5)["features.2.weight"]
    torch.testing.assert_close(model.encoder.conv1_2.weight, expected)
    assert _torchvision_enum("VGG16_Weights.IMAGENET1K_V1") is not None
    assert _torchvision_enum("weights/vgg16.pth") is None


def test_encoder_weights_errors(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fcn_vgg16(2, encoder_weights=missing, width_divisor=GEOMETRY_DIVISOR)
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="resnet.pth.*missing"):
        fcn_vgg16(2, encoder_weights=wrong, width_divisor=GEOMETRY_DIVISOR)
    narrow = _torchvision_format_vgg16_state(SMALL_DIVISOR)
    with pytest.raises(ValueError, match="shape"):
        fcn_vgg16(2, encoder_weights=narrow, width_divisor=GEOMETRY_DIVISOR)


@pytest.fixture(scope="module")
def torchvision_vgg16() -> nn.Module:
    torch.manual_seed(3)
    model = torchvision.models.vgg16(weights=None).eval()
    with torch.no_grad():
        for param in model.classifier.parameters():
            param.normal_(0.0, 0.02)  # randomise the biases too (torchvision zeroes them)
    return model


@pytest.mark.slow
def test_transplanted_fc_layers_equal_classifier(torchvision_vgg16: nn.Module) -> None:
    fc6_linear, fc7_linear = torchvision_vgg16.classifier[0], torchvision_vgg16.classifier[3]
    fc6 = nn.Conv2d(512, 4096, 7)
    fc7 = nn.Conv2d(4096, 4096, 1)
    transplant_linear(fc6, fc6_linear.weight, fc6_linear.bias)
    transplant_linear(fc7, fc7_linear.weight, fc7_linear.bias)
    x = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        hidden = fc6_linear(x.flatten(1))
        torch.testing.assert_close(fc6(x).flatten(1), hidden, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            fc7(hidden[..., None, None]).flatten(1), fc7_linear(hidden), atol=1e-4, rtol=1e-4
        )


@pytest.mark.slow
def test_full_width_fcn8s_loads_torchvision_vgg16(torchvision_vgg16: nn.Module) -> None:
    """Real widths: torchvision's VGG16 state dict loads as is, and the sizes still match."""
    model = fcn_vgg16(21, variant="fcn8s", encoder_weights=torchvision_vgg16.state_dict()).eval()
    expected = sum(p.numel() for p in torchvision_vgg16.features.parameters())
    expected += sum(p.numel() for i in (0, 3) for p in torchvision_vgg16.classifier[i].parameters())
    ours = sum(p.numel() for p in model.encoder.parameters())
    ours += sum(p.numel() for p in (*model.fc6.parameters(), *model.fc7.parameters()))
    assert ours == expected
    torch.testing.assert_close(model.encoder.conv3_2.weight, torchvision_vgg16.features[12].weight)
    torch.testing.assert_close(model.fc6.weight.flatten(1), torchvision_vgg16.classifier[0].weight)
    with torch.no_grad():
        for height, width in [(1, 1), (33, 20)]:
            assert model(torch.randn(1, 3, height, width)).shape == (1, 21, height, width)


def test_alexnet_and_googlenet_load_torchvision_layout() -> None:
    alexnet = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR)
    state = {
        key: torch.randn(alexnet.encoder.state_dict()[ours].shape)
        for key, ours in alexnet.encoder.torchvision_keys.items()
    }
    assert "features.10.weight" in state  # torchvision's conv5
    state["classifier.1.weight"] = torch.randn(alexnet.fc6.weight.shape).flatten(1)
    state["classifier.1.bias"] = torch.randn(alexnet.fc6.bias.shape)
    state["classifier.4.weight"] = torch.randn(alexnet.fc7.weight.shape).flatten(1)
    state["classifier.4.bias"] = torch.randn(alexnet.fc7.bias.shape)
    loaded = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR, encoder_weights=state)
    torch.testing.assert_close(loaded.encoder.conv5.weight, state["features.10.weight"])
    torch.testing.assert_close(loaded.fc6.weight.flatten(1), state["classifier.1.weight"])
    googlenet = fcn32s_googlenet(2, width_divisor=SMALL_DIVISOR)
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    assert set(googlenet.encoder.torchvision_keys) <= set(reference.state_dict())
    assert googlenet.normalization == "tf_lite"


# --- registry --------------------------------------------------------------------


def test_registry_and_builder_options() -> None:
    names = set(list_models())
    assert {*VGG_NAMES, "fcn32s_alexnet", "fcn32s_googlenet"} <= names
    assert isinstance(model_info("fcn8s_vgg16").weights_available(), bool)
    model = build_model(
        "fcn16s_vgg16", 5, normalization="caffe_bgr", width_divisor=GEOMETRY_DIVISOR
    )
    assert isinstance(model, PaperFCN) and model.normalization == "caffe_bgr"
    with pytest.raises(ValueError, match="normalization"):
        build_model("fcn16s_vgg16", 5, normalization="bgr", width_divisor=GEOMETRY_DIVISOR)
    with pytest.raises(ValueError, match="width_divisor"):
        build_model("fcn16s_vgg16", 5, width_divisor=3)


def test_pretrained_without_weights_is_a_one_line_error_or_auto_fallback() -> None:
    from fcnseg.models import build_model

    with pytest.raises(ValueError, match="encoder_weights=PATH") as info:
        build_model("fcn32s_vgg16", num_classes=3, pretrained=True, width_divisor=16)
    assert "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="random weights"):
        model = build_model("fcn32s_vgg16", num_classes=3, pretrained="auto", width_divisor=16)
    assert model(torch.zeros(1, 3, 40, 40)).shape == (1, 3, 40, 40)
