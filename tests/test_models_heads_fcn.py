"""FCN skip head: output size for any input, exact stage-wise initialisation, real encoders."""

from __future__ import annotations

import pytest
import torch
from model_helpers import PoolBackbone, copy_same_named

from fcnseg.models.backbones import build_backbone
from fcnseg.models.backbones.base import Backbone
from fcnseg.models.heads.fcn import FCNHead, KnotUpsample, SkipFCN, tent_kernel_1d
from fcnseg.models.segmenters import build_fcn

ODD_SIZES = [(33, 47), (97, 61)]


def skip_fcn(
    backbone: Backbone,
    num_classes: int,
    variant: str = "fcn8s",
    head_channels: int = 0,
    upsample: str = "deconv_frozen",
) -> SkipFCN:
    """The FCN head on `backbone`, in the shell (what `build_fcn` makes of a named encoder)."""
    head = FCNHead(
        backbone.channels, backbone.strides, num_classes, variant, head_channels, upsample
    )
    return SkipFCN(backbone, head)


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
    model = skip_fcn(PoolBackbone(), 5, variant, upsample=upsample).eval()
    for size in ODD_SIZES:
        assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


@pytest.mark.parametrize("output_stride,factors", [(16, (1, 2)), (8, (1, 1))])
def test_atrous_backbone_fuses_equal_strides_without_upsampling(output_stride, factors):
    model = skip_fcn(PoolBackbone(output_stride), 3, "fcn8s", head_channels=4).eval()
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
    coarse_model = skip_fcn(PoolBackbone(), 4, coarse, head_channels).eval()
    _randomise_skips(coarse_model)
    fine_model = skip_fcn(PoolBackbone(), 4, fine, head_channels).eval()
    assert "head.score_fr.score.weight" in copy_same_named(fine_model, coarse_model)
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        expected, actual = coarse_model(x), fine_model(x)
    assert torch.allclose(expected, actual, atol=1e-5)
    # ... and the new skip really is wired in: changing it changes the output.
    _randomise_skips(fine_model)
    with torch.no_grad():
        assert not torch.allclose(expected, fine_model(x), atol=1e-3)


def test_frozen_upsampling_is_not_trained_but_learnable_is():
    frozen = skip_fcn(PoolBackbone(), 3, "fcn8s")
    learnable = skip_fcn(PoolBackbone(), 3, "fcn8s", upsample="deconv_learnable")
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
            model = skip_fcn(backbone, 3, variant).eval()
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
            copy_same_named(finer, previous)
            assert torch.allclose(finer(x), expected, atol=1e-4), variant
            previous = finer
