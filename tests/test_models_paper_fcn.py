"""PaperFCN: crop offsets as the release's, output sizes, upsampling modes, stage-wise init."""

from __future__ import annotations

import pytest
import torch
import torchvision
from model_helpers import copy_same_named
from torch import nn

from fcnseg.constants import (
    FCN_ATONCE_POOL4_SCALE,
    FCN_CONV1_PAD,
    FCN_KNOWN_CROP_OFFSETS,
)
from fcnseg.models import build_model
from fcnseg.models.geometry import BilinearResize, CoordMap, layer_map
from fcnseg.models.paper_nets import fcn32s_alexnet, fcn32s_googlenet, fcn_vgg16

#: Narrowest VGG16 that keeps every width whole (64 / 64 = 1 channel): same geometry, ~no compute.
GEOMETRY_DIVISOR = 64
#: Narrow but realistic widths for numerical tests (8 channels in conv1_1).
SMALL_DIVISOR = 8
VGG_NAMES = [
    f"{variant}_vgg16{suffix}"
    for variant in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
    for suffix in ("", "_padded")
]
#: 50 sizes from 1 to 600, odd and even, used once as height and once (reversed) as width.
SIZES = list(range(1, 600, 12))


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter non-trivial values (score layers start at zero by design)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


# --- crop offsets and output geometry ---------------------------------------------------------


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
def test_derived_crop_offsets_equal_caffe_release(variant: str) -> None:
    model = fcn_vgg16(2, variant=variant, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets == FCN_KNOWN_CROP_OFFSETS[variant]
    assert model.encoder.conv1_1.padding == (FCN_CONV1_PAD, FCN_CONV1_PAD)


def test_atonce_has_fcn8s_offsets() -> None:
    model = fcn_vgg16(2, variant="fcn8s", at_once=True, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets == FCN_KNOWN_CROP_OFFSETS["fcn8s"]


def test_offsets_follow_the_layers_not_a_table() -> None:
    """Changing conv1_1's padding must change the derived offsets (nothing is hard-coded)."""
    model = fcn_vgg16(2, variant="fcn32s", padded=True, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets["final"] != FCN_KNOWN_CROP_OFFSETS["fcn32s"]["final"]


def test_alexnet_upsamples_with_odd_kernel_like_release() -> None:
    """A 64 kernel leaves AlexNet half a pixel off; the derivation picks 63, as the release."""
    model = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR)
    assert model.upscore.kernel_size == (63, 63)
    assert model.upscore.stride == (32, 32)


@pytest.mark.parametrize("name", VGG_NAMES)
@pytest.mark.parametrize("upsample", ["deconv_frozen", "bilinear"])
def test_vgg_output_size_equals_input_size(name: str, upsample: str) -> None:
    model = build_model(name, 3, width_divisor=GEOMETRY_DIVISOR, upsample=upsample).eval()
    with torch.no_grad():
        for size in SIZES:
            height, width = size, SIZES[-1] + 1 - size
            out = model(torch.randn(1, 3, height, width))
            assert out.shape == (1, 3, height, width), (name, upsample, height, width)


@pytest.mark.parametrize(
    "builder",
    [
        lambda: fcn32s_alexnet(3, width_divisor=16),
        lambda: fcn32s_googlenet(3, width_divisor=SMALL_DIVISOR),
    ],
    ids=["alexnet", "googlenet"],
)
def test_alexnet_googlenet_output_size(builder) -> None:
    model = builder().eval()
    with torch.no_grad():
        for size in SIZES:
            height, width = size, SIZES[-1] + 1 - size
            assert model(torch.randn(1, 3, height, width)).shape == (1, 3, height, width)


def test_inception_block_keeps_coordinates() -> None:
    """GoogLeNet's parallel branches must each map pixels onto themselves to be concatenated."""
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    assert layer_map(net.inception3a) == CoordMap()
    net.inception3a.branch2[1].conv.padding = (0, 0)
    with pytest.raises(ValueError, match="different geometry"):
        layer_map(net.inception3a)


def _linearised(model: nn.Module) -> nn.Module:
    """Same geometry, but linear with symmetric kernels: every layer's response to an input
    pixel is centred on the pixel the coordinate map says. Max pooling becomes average pooling,
    ReLU the identity, every conv a positive constant; upsampling stays bilinear."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MaxPool2d):
            replacement = nn.AvgPool2d(
                child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode
            )
            setattr(model, name, replacement)
        elif isinstance(child, nn.ReLU):
            setattr(model, name, nn.Identity())
        elif type(child) is nn.Conv2d:
            with torch.no_grad():
                child.weight.fill_(1.0 / child.weight[0].numel())
                if child.bias is not None:
                    child.bias.zero_()
        else:
            _linearised(child)
    return model


@pytest.mark.parametrize(
    "builder",
    [
        *(
            (lambda name=name: build_model(name, 1, width_divisor=GEOMETRY_DIVISOR))
            for name in VGG_NAMES
        ),
        lambda: fcn_vgg16(1, variant="fcn8s", upsample="bilinear", width_divisor=64),
        lambda: fcn32s_alexnet(1, width_divisor=16),
        lambda: fcn32s_googlenet(1, width_divisor=SMALL_DIVISOR),
    ],
    ids=[*VGG_NAMES, "fcn8s_vgg16_bilinear", "alexnet", "googlenet"],
)
def test_output_pixel_is_centred_on_its_input_pixel(builder) -> None:
    """End-to-end check of every crop: the input-gradient of output pixel (y, x) of the
    linearised net is symmetric about (y, x). A crop off by one pixel moves its centroid."""
    model = _linearised(builder()).double().eval()
    size = 512
    image = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    rows = torch.arange(size, dtype=torch.float64)
    for y, x in [(256, 256), (251, 262)]:
        image.grad = None
        model(image)[0, 0, y, x].backward()
        weight = image.grad.sum(dim=(0, 1))
        assert weight.min() >= 0 and weight[0].abs().max() == 0  # support inside the image
        centre_y = float((weight.sum(1) * rows).sum() / weight.sum())
        centre_x = float((weight.sum(0) * rows).sum() / weight.sum())
        assert centre_y == pytest.approx(y, abs=1e-6) and centre_x == pytest.approx(x, abs=1e-6)


def test_bilinear_mode_rejects_half_pixel_geometry() -> None:
    with pytest.raises(ValueError, match="deconv_frozen"):
        fcn32s_alexnet(2, upsample="bilinear", width_divisor=SMALL_DIVISOR)


# --- upsampling options, at-once scaling -------------------------------------------------------


def test_upsample_modes() -> None:
    frozen = fcn_vgg16(4, variant="fcn8s", width_divisor=GEOMETRY_DIVISOR)
    assert not frozen.upscore8.weight.requires_grad
    assert frozen.upscore8.kernel_size == (16, 16) and frozen.upscore2.kernel_size == (4, 4)
    learnable = fcn_vgg16(
        4, variant="fcn8s", upsample="deconv_learnable", width_divisor=GEOMETRY_DIVISOR
    )
    assert learnable.upscore8.weight.requires_grad
    interp = fcn_vgg16(4, variant="fcn8s", upsample="bilinear", width_divisor=GEOMETRY_DIVISOR)
    assert isinstance(interp.upscore8, BilinearResize)
    with pytest.raises(ValueError, match="upsample"):
        fcn_vgg16(4, upsample="nearest", width_divisor=GEOMETRY_DIVISOR)


def test_atonce_scales_pool4_before_scoring() -> None:
    regular = _randomise(fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR))
    at_once = fcn_vgg16(3, variant="fcn16s", at_once=True, width_divisor=SMALL_DIVISOR).eval()
    copy_same_named(at_once, regular)
    with torch.no_grad():
        nn.init.zeros_(regular.score_pool4.bias)
        nn.init.zeros_(at_once.score_pool4.bias)
        x = torch.randn(1, 3, 40, 40)
        scores_regular = regular.forward_scores(x)
        scores_at_once = at_once.forward_scores(x)
    offset = regular.crop_offsets["pool4"]
    up = regular.upscore2(scores_regular["score_fr"])
    skip_regular = scores_regular["fuse_pool4"] - up
    skip_at_once = scores_at_once["fuse_pool4"] - up
    assert offset >= 0 and skip_regular.abs().max() > 0
    torch.testing.assert_close(skip_at_once, skip_regular * FCN_ATONCE_POOL4_SCALE)


# --- stage-wise initialisation ------------------------------------------------------------------


def test_fcn16s_from_fcn32s_adds_exactly_nothing() -> None:
    """Paper 4.2: the 16s net starts from 32s with a zero pool4 score, so before training it
    computes the 32s scores; only its (bilinear) upsampling path differs."""
    coarse = _randomise(fcn_vgg16(3, variant="fcn32s", width_divisor=SMALL_DIVISOR))
    fine = fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR).eval()
    copied = copy_same_named(fine, coarse)
    shared = [k for k in coarse.state_dict() if not k.startswith("upscore")]
    assert set(shared) <= set(copied)
    x = torch.randn(1, 3, 45, 38)
    with torch.no_grad():
        coarse_scores = coarse.forward_scores(x)
        fine_scores = fine.forward_scores(x)
        torch.testing.assert_close(fine_scores["score_fr"], coarse_scores["score_fr"])
        up = fine.upscore2(coarse_scores["score_fr"])
        torch.testing.assert_close(
            fine_scores["fuse_pool4"],
            up[..., : fine_scores["fuse_pool4"].shape[-2], : fine_scores["fuse_pool4"].shape[-1]],
        )
        final = fine.upscore16(up)
        start = fine.crop_offsets["final"]
        torch.testing.assert_close(
            fine_scores["out"], final[..., start : start + 45, start : start + 38]
        )


def test_fcn8s_from_fcn16s_keeps_the_16s_fusion() -> None:
    coarse = _randomise(fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR))
    fine = fcn_vgg16(3, variant="fcn8s", width_divisor=SMALL_DIVISOR).eval()
    copied = copy_same_named(fine, coarse)
    assert "score_pool4.weight" in copied and "score_pool3.weight" not in copied
    x = torch.randn(1, 3, 52, 61)
    with torch.no_grad():
        coarse_scores = coarse.forward_scores(x)
        fine_scores = fine.forward_scores(x)
    assert coarse_scores["fuse_pool4"].abs().max() > 0
    torch.testing.assert_close(fine_scores["fuse_pool4"], coarse_scores["fuse_pool4"])
    up = fine.upscore_pool4(fine_scores["fuse_pool4"])
    fused = fine_scores["fuse_pool3"]
    torch.testing.assert_close(fused, up[..., : fused.shape[-2], : fused.shape[-1]])
