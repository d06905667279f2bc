"""FCN skip head: output size for any input, exact stage-wise initialisation, registry entries."""

from __future__ import annotations

import pytest
import torch

from fcnseg.models import build_model, list_models
from fcnseg.models.backbones import build_backbone
from fcnseg.models.backbones.base import Backbone
from fcnseg.models.skip_fcn import (
    FCNHead,
    KnotUpsample,
    SkipFCN,
    build_fcn,
    tent_kernel_1d,
)
from fcnseg.models.surgery import init_finer_from_coarser

ODD_SIZES = [(33, 47), (97, 61)]


class PoolBackbone(Backbone):
    """Tiny deterministic backbone: strided convolutions with PyTorch's symmetric padding."""

    def __init__(self, output_stride: int = 32, width: int = 4) -> None:
        super().__init__()
        self.channels, self.strides = {}, {}
        self.normalization = "imagenet"
        layers, in_channels, stride = [], 3, 1
        for level in range(5):
            step = 2 if stride < output_stride else 1
            dilation = 1 if step == 2 else 2
            layers.append(torch.nn.Conv2d(in_channels, width, 3, step, dilation, dilation))
            stride *= step
            in_channels = width
            if level >= 1:
                self.channels[f"s{2 ** (level + 1)}"] = width
                self.strides[f"s{2 ** (level + 1)}"] = stride
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x):
        out = {}
        for level, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if level >= 1:
                out[f"s{2 ** (level + 1)}"] = x
        return out


def _randomise_skips(model: torch.nn.Module) -> None:
    for name, parameter in model.named_parameters():
        if "score_s" in name:
            torch.nn.init.normal_(parameter)


def test_tent_kernel_interpolates_linearly():
    assert torch.allclose(tent_kernel_1d(2), torch.tensor([0.5, 1.0, 0.5]))
    assert tent_kernel_1d(4).tolist() == [0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError):
        tent_kernel_1d(0)


@pytest.mark.parametrize("mode", ["deconv_frozen", "deconv_learnable"])
def test_deconv_upsampling_equals_knot_aligned_bilinear(mode):
    x = torch.randn(2, 3, 5, 4)
    deconv = KnotUpsample(3, 4, mode)(x, (19, 13))
    bilinear = KnotUpsample(3, 4, "bilinear")(x, (19, 13))
    assert deconv.shape == (2, 3, 19, 13)
    assert torch.allclose(deconv, bilinear, atol=1e-5)
    # Knots: input pixel i sits at output pixel 4 i; beyond the last knot the border is held.
    assert torch.allclose(deconv[..., ::4, ::4], x, atol=1e-6)
    assert torch.allclose(deconv[..., 16:, :], deconv[..., 16:17, :].expand_as(deconv[..., 16:, :]))


def test_upsample_by_two_then_sixteen_equals_thirty_two():
    x = torch.randn(1, 2, 3, 4)
    two = KnotUpsample(2, 2)
    once = KnotUpsample(2, 32)(x, (70, 101))
    twice = KnotUpsample(2, 16)(two(x, (5, 7)), (70, 101))
    assert torch.allclose(once, twice, atol=1e-5)


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s", "fcn4s"])
@pytest.mark.parametrize("upsample", ["deconv_frozen", "bilinear"])
def test_output_matches_any_input_size(variant, upsample):
    model = SkipFCN(PoolBackbone(), 5, variant, upsample=upsample).eval()
    for size in ODD_SIZES:
        assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


@pytest.mark.parametrize("output_stride,factors", [(16, (1, 2)), (8, (1, 1))])
def test_atrous_backbone_fuses_equal_strides_without_upsampling(output_stride, factors):
    model = SkipFCN(PoolBackbone(output_stride), 3, "fcn8s", head_channels=4).eval()
    assert model.head.output_stride == 8
    assert (model.head.upscore_s16.factor, model.head.upscore_s8.factor) == factors
    for size in ODD_SIZES:
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("head_channels", [0, 6])
@pytest.mark.parametrize(
    "coarse,fine", [("fcn32s", "fcn16s"), ("fcn16s", "fcn8s"), ("fcn8s", "fcn4s")]
)
def test_finer_initialised_from_coarser_gives_identical_output(coarse, fine, head_channels):
    torch.manual_seed(0)
    coarse_model = SkipFCN(PoolBackbone(), 4, coarse, head_channels).eval()
    _randomise_skips(coarse_model)
    fine_model = SkipFCN(PoolBackbone(), 4, fine, head_channels).eval()
    copied = init_finer_from_coarser(fine_model, coarse_model)
    assert "head.score_fr.score.weight" in copied
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        expected, actual = coarse_model(x), fine_model(x)
    assert torch.allclose(expected, actual, atol=1e-5)
    # ... and the new skip really is wired in: changing it changes the output.
    _randomise_skips(fine_model)
    with torch.no_grad():
        assert not torch.allclose(expected, fine_model(x), atol=1e-3)


def test_frozen_upsampling_is_not_trained_but_learnable_is():
    frozen = SkipFCN(PoolBackbone(), 3, "fcn8s")
    learnable = SkipFCN(PoolBackbone(), 3, "fcn8s", upsample="deconv_learnable")
    assert not frozen.head.upscore_s8.deconv.weight.requires_grad
    assert learnable.head.upscore_s8.deconv.weight.requires_grad


def test_head_rejects_bad_configuration():
    backbone = PoolBackbone()
    with pytest.raises(ValueError, match="variant"):
        FCNHead(backbone.channels, backbone.strides, 3, "2s")
    without_s4 = {k: v for k, v in backbone.channels.items() if k != "s4"}
    with pytest.raises(ValueError, match="lacks"):
        FCNHead(without_s4, backbone.strides, 3, "fcn4s")
    with pytest.raises(ValueError, match="upsample"):
        FCNHead(backbone.channels, backbone.strides, 3, "fcn8s", upsample="nearest")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        SkipFCN(backbone, 3)(torch.randn(3, 8, 8))


def test_registry_lists_every_encoder_and_variant():
    """Through the zoo, as the CLI sees it (needs every registering module importable)."""
    names = set(list_models())
    for encoder in ("efficientnet_lite0", "resnet18", "resnet50", "resnet101", "mobilenet_v2"):
        for variant in ("fcn32s", "fcn16s", "fcn8s", "fcn4s"):
            assert f"{variant}_{encoder}" in names
    assert "fcn8s_timm" in names
    model = build_model("fcn32s_efficientnet_lite0", 2, pretrained=False)
    assert model.variant == "fcn32s" and model.head.score_fr.score.out_channels == 2


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s", "fcn4s"])
def test_efficientnet_lite0_fcn_keeps_input_size(variant):
    model = build_fcn(11, encoder="efficientnet_lite0", variant=variant, pretrained=False).eval()
    assert model.normalization == "tf_lite"
    with torch.no_grad():
        for size in ODD_SIZES:
            assert model(torch.randn(1, 3, *size)).shape == (1, 11, *size)


ENCODERS = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_keeps_odd_input_sizes_for_every_variant(encoder):
    backbone = build_backbone(encoder, pretrained=False).eval()
    with torch.no_grad():
        for variant in ("fcn32s", "fcn16s", "fcn8s", "fcn4s"):
            model = SkipFCN(backbone, 3, variant).eval()
            for size in ODD_SIZES:
                assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size), variant


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_v2"])
def test_fcn8s_on_output_stride_8_backbone(encoder):
    model = build_fcn(3, encoder=encoder, variant="fcn8s", pretrained=False, output_stride=8)
    with torch.no_grad():
        for size in ODD_SIZES:
            assert model.eval()(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_efficientnet_lite0_fcn8s_atrous_output_stride_8():
    model = build_fcn(
        2, encoder="efficientnet_lite0", variant="fcn8s", pretrained=False, output_stride=8
    ).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 2, 33, 47)


def test_generic_timm_fcn():
    model = build_fcn(3, encoder="timm", variant="fcn8s", pretrained=False, timm_name="resnet10t")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)
    with pytest.raises(ValueError, match="unknown option"):
        build_fcn(3, encoder="timm", timm_name="resnet10t", colour="red")


def test_model_table_counts_parameters_and_flops():
    from fcnseg.models.table import format_model_table, model_table
    from fcnseg.models.weights import offline_weights_available

    names = ["fcn8s_resnet18", "fcn8s_resnet50", "fcn8s_mobilenet_v2"]
    rows = {row.name: row for row in model_table(names)}
    assert set(rows) == set(names)
    assert 11e6 < rows["fcn8s_resnet18"].parameters < 12e6  # ResNet-18 trunk is 11.2M
    assert rows["fcn8s_resnet50"].gflops > rows["fcn8s_resnet18"].gflops > 0
    assert rows["fcn8s_mobilenet_v2"].weights_offline == offline_weights_available("mobilenet_v2")
    # Convolutional cost grows with the pixel count: half the side, about a quarter the FLOPs.
    (small,) = model_table(["fcn8s_mobilenet_v2"], size=256)
    assert small.gflops * 4 == pytest.approx(rows["fcn8s_mobilenet_v2"].gflops, rel=0.05)
    (fast,) = model_table(["fcn8s_resnet18"], flops=False)
    assert fast.gflops is None and fast.parameters == rows["fcn8s_resnet18"].parameters
    assert "fcn8s_resnet50" in format_model_table(list(rows.values()))


def test_stage_wise_initialisation_is_exact_on_a_real_encoder():
    """32s -> 16s -> 8s on EfficientNet-Lite0 (TF 'same' padding): outputs stay identical."""
    torch.manual_seed(0)
    backbone_options = {"encoder": "efficientnet_lite0", "pretrained": False}
    previous = build_fcn(4, variant="fcn32s", **backbone_options).eval()
    x = torch.randn(1, 3, 45, 67)
    with torch.no_grad():
        expected = previous(x)
        for variant in ("fcn16s", "fcn8s"):
            finer = build_fcn(4, variant=variant, **backbone_options).eval()
            init_finer_from_coarser(finer, previous)
            assert torch.allclose(finer(x), expected, atol=1e-4), variant
            previous = finer


def test_input_scale_runs_the_net_on_the_resized_image_and_returns_input_size():
    torch.manual_seed(0)
    plain = build_fcn(
        5, encoder="efficientnet_lite0", variant="fcn8s", pretrained=False, upsample="bilinear"
    ).eval()
    scaled = build_fcn(
        5,
        encoder="efficientnet_lite0",
        variant="fcn8s",
        pretrained=False,
        upsample="bilinear",
        input_scale=1.5,
    ).eval()
    scaled.load_state_dict(plain.state_dict())
    image = torch.randn(1, 3, 61, 97)
    with torch.no_grad():
        out = scaled(image)
        assert out.shape == (1, 5, 61, 97)
        # The same net run by hand on the 1.5x image, logits resized back, is the same output.
        big = torch.nn.functional.interpolate(
            image, scale_factor=1.5, mode="bilinear", align_corners=False
        )
        by_hand = torch.nn.functional.interpolate(
            plain(big), size=(61, 97), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(out, by_hand)
        assert not torch.allclose(out, plain(image), atol=1e-3)
    with pytest.raises(ValueError, match="input_scale"):
        build_fcn(5, encoder="efficientnet_lite0", pretrained=False, input_scale=0.0)
