"""U-Net as published (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, arXiv:1505.04597), checked against the paper's figure 1 and
section 2: channels 64-128-256-512-1024, valid 3x3 convolutions, 2x2 pools and up-convolutions,
23 convolutional layers, a 572 x 572 tile giving 388 x 388. The authors' release prototxt
(u-net-release-2015-10-02, phseg_v5-train.prototxt) is not in the reference index this project
can search (only third-party derivatives of it are), so the numbers here come from the paper.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg import constants
from fcnseg.errors import DataError, ModelOptionError, UsageError
from fcnseg.inference import predict_logits
from fcnseg.inference.overlap_tile import WithTileGeometry, overlap_tile_logits
from fcnseg.models import build_model
from fcnseg.models.mirror import mirror_indices, mirror_pad
from fcnseg.models.unet2015 import (
    UNet2015,
    is_valid_input,
    nearest_valid_input,
    valid_input_covering,
    valid_output,
)

#: Figure 1, level by level: (input channels, output channels) of each 3x3 convolution pair of
#: the contracting path; the expansive path mirrors it with a 2x2 up-convolution halving the
#: channels and a concatenation doubling them back; then a 1x1 convolution to the classes.
FIGURE1_LEVELS = [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]


def figure1_layers(in_channels: int, classes: int) -> list[tuple[int, int, int]]:
    """(kernel side, in, out) of the 23 convolutions of figure 1, written from the figure."""
    layers = []
    for level, (cin, cout) in enumerate(FIGURE1_LEVELS):
        cin = in_channels if level == 0 else cin
        layers += [(3, cin, cout), (3, cout, cout)]
    for cin, cout in reversed(FIGURE1_LEVELS[1:]):
        # cout -> cin: up-convolution 2x2 halving, then two 3x3 on the concatenation
        layers += [(2, cout, cin), (3, 2 * cin, cin), (3, cin, cin)]
    layers.append((1, 64, classes))
    return layers


def test_the_paper_net_has_figure_1s_23_layers_and_parameters():
    with torch.device("meta"):
        model = build_model("unet2015", 2, in_channels=1)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    expected = figure1_layers(1, 2)
    assert len(convolutions) == len(expected) == 23  # "In total the network has 23 conv layers"
    shapes = [(m.kernel_size[0], m.in_channels, m.out_channels) for m in convolutions]
    assert sorted(shapes) == sorted(expected)
    assert all(m.padding == (0, 0) for m in convolutions)  # valid convolutions only
    count = sum(k * k * cin * cout + cout for k, cin, cout in expected)
    assert sum(p.numel() for p in model.parameters()) == count == 31_030_658
    # The release's layer names (with "_" for "-"): first, bottom, up-convolutions, score.
    names = dict(model.named_modules())
    for name in ("conv_d0a_b", "conv_d4b_c", "dropout_d4c", "upconv_u1d_u0a", "conv_u0d_score"):
        assert name in names


def test_a_572_tile_gives_388_and_every_level_has_figure_1s_size():
    with torch.device("meta"):
        model = build_model("unet2015", 2, in_channels=1).eval()
        sizes: dict[str, int] = {}
        for name in ("conv_d0b_c", "conv_d1b_c", "conv_d2b_c", "conv_d3b_c", "conv_d4b_c"):
            getattr(model, name).register_forward_hook(
                lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])
            )
        for name in ("conv_u3c_d", "conv_u2c_d", "conv_u1c_d", "conv_u0c_d"):
            getattr(model, name).register_forward_hook(
                lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])
            )
        out = model.valid_forward(torch.empty(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert sizes == {
        "conv_d0b_c": 568, "conv_d1b_c": 280, "conv_d2b_c": 136, "conv_d3b_c": 64,
        "conv_d4b_c": 28, "conv_u3c_d": 52, "conv_u2c_d": 100, "conv_u1c_d": 196,
        "conv_u0c_d": 388,
    }  # fmt: skip
    assert constants.UNET2015_TILE_INPUT - 2 * constants.UNET2015_CONTEXT == 388


def test_the_valid_size_rule_and_its_one_line_refusal():
    assert [s for s in range(150, 600) if is_valid_input(s)][:3] == [188, 204, 220]
    assert is_valid_input(572) and not is_valid_input(571) and not is_valid_input(172)
    assert nearest_valid_input(570) == 572 and nearest_valid_input(10) == 188
    assert valid_output(572) == 388 and valid_input_covering(388) == 572
    assert valid_input_covering(389) == 588
    assert UNet2015.tile_output_size(390) == 388 and UNet2015.tile_output_size(25) == 20
    model = build_model("unet2015", 2, width_divisor=16).eval()
    with pytest.raises(DataError, match=r"input side 571 is not a valid tile.*use 572") as caught:
        model.valid_forward(torch.zeros(1, 3, 572, 571))
    assert "\n" not in str(caught.value)
    assert build_model("unet2015", 2, in_channels=1).normalization == "per_channel"
    with pytest.raises(ModelOptionError, match="no pretrained weights"):
        build_model("unet2015", 2, pretrained=True)


def test_mirror_padding_reflects_any_width():
    assert mirror_indices(4, 3, 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert torch.equal(
        mirror_pad(x, 2, 1, 3, 2), torch.nn.functional.pad(x, (3, 2, 2, 1), "reflect")
    )
    assert mirror_pad(torch.ones(1, 1, 1, 1), 5, 5, 5, 5).shape == (1, 1, 11, 11)


def _net() -> UNet2015:
    """A narrow unet2015 with weights large enough that a wrong tile shows."""
    torch.manual_seed(0)
    model = build_model("unet2015", 3, width_divisor=16).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    return model


@pytest.mark.parametrize("size", [(64, 96), (1, 1), (5, 300), (203, 190)])
def test_forward_keeps_any_input_size(size):
    with torch.no_grad():
        assert _net()(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_forward_is_one_mirrored_tile_on_the_images_pooling_grid():
    """The forward's tile starts 96 px (6 x 16) above the image, so any image crop starting on a
    multiple of 16 sees the same pooling grid: its valid output is the forward's, bit for bit."""
    model, x = _net(), torch.randn(1, 3, 300, 420)
    with torch.no_grad():
        whole = model(x)
        aligned = model.valid_forward(x[..., 16 : 16 + 204, 32 : 32 + 220])
        shifted = model.valid_forward(x[..., 10 : 10 + 204, 20 : 20 + 220])
    assert torch.allclose(whole[..., 108:128, 124:160], aligned, atol=1e-5)
    assert not torch.allclose(whole[..., 102:122, 112:148], shifted, atol=1e-3)


def test_overlap_tiles_cover_any_image_and_match_a_single_valid_pass():
    model, x = _net(), torch.randn(2, 3, 70, 101)
    with torch.no_grad():
        tiled = predict_logits(model, x, "overlap_tile", tile_size=25)  # -> 20 px tiles
        mirrored = mirror_pad(x, 92, 92, 92, 92)
        single = model.valid_forward(mirrored[..., 20 : 20 + 204, 40 : 40 + 204])
        # The last column of tiles ends flush with the border (81..101, not 100..120), and so
        # does the last row (50..70), written over the rows of the tile before it.
        last = model.valid_forward(mirrored[..., 20 : 20 + 204, 81 : 81 + 204])
        corner = model.valid_forward(mirrored[..., 50 : 50 + 204, 81 : 81 + 204])
        # An exported graph: no valid_forward, only the forward and the model's geometry.
        graph = overlap_tile_logits(WithTileGeometry(model.forward, model), x, 25)
    assert tiled.shape == (2, 3, 70, 101)
    assert torch.allclose(tiled[..., 20:40, 40:60], single, atol=1e-5)
    assert torch.allclose(tiled[..., 20:40, 81:101], last, atol=1e-5)
    assert torch.allclose(tiled[..., 50:70, 81:101], corner, atol=1e-5)
    assert torch.allclose(graph, tiled, atol=1e-5)


def test_overlap_tile_refuses_a_model_without_context():
    model = build_model("fpnlite_resnet18", 3, pretrained=False).eval()
    with pytest.raises(UsageError, match="declares its context.*--mode sliding"):
        predict_logits(model, torch.randn(1, 3, 64, 64), "overlap_tile", tile_size=32)
