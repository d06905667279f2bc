"""The segmentation shell: any head plugs in; scale, pad and crop are exact at odd sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import PoolBackbone

from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.heads import FCNHead, FPNLiteHead
from fcnseg.models.heads.base import DecodeHead
from fcnseg.models.segmenters import build_fcn
from fcnseg.models.shell import SegmentationShell, pad_to_multiple

ODD_SIZES = [(33, 47), (97, 61), (1, 1)]


class RecordingBackbone(PoolBackbone):
    """PoolBackbone that keeps the last input it saw (the padded, scaled image)."""

    def forward(self, x):
        self.seen = x
        return super().forward(x)


class PositionHead(DecodeHead):
    """Toy head: ignores the features' values and returns out_size maps of pixel coordinates.

    Channel 0 is the row index, channel 1 the column index, so what survives the shell's crop
    says exactly which pixels of the padded frame the caller gets back.
    """

    def __init__(self, channels, strides, num_classes: int = 2) -> None:
        super().__init__(channels, strides, num_classes, ("s8",))
        self.out_sizes: list[tuple[int, int]] = []

    def forward(self, features, out_size):
        height, width = int(out_size[0]), int(out_size[1])
        self.out_sizes.append((height, width))
        batch = features["s8"].shape[0]
        rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
        cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
        return torch.stack([rows, cols]).expand(batch, 2, height, width)


class ScoreS16Head(DecodeHead):
    """Toy head with parameters: a 1x1 score on s16, bilinearly resized to out_size."""

    def __init__(self, channels, strides, num_classes: int) -> None:
        super().__init__(channels, strides, num_classes, ("s16",))
        self.score = torch.nn.Conv2d(channels["s16"], num_classes, 1)

    def forward(self, features, out_size):
        score = self.score(features["s16"])
        return F.interpolate(score, size=out_size, mode="bilinear", align_corners=False)


def _shell(head_class, backbone=None, **shell_options) -> SegmentationShell:
    backbone = backbone or PoolBackbone()
    return SegmentationShell(
        backbone, head_class(backbone.channels, backbone.strides, 3), **shell_options
    ).eval()


@pytest.mark.parametrize("size", ODD_SIZES)
def test_pads_to_the_stride_and_crops_back_exactly(size):
    backbone = RecordingBackbone()
    model = SegmentationShell(backbone, PositionHead(backbone.channels, backbone.strides))
    x = torch.randn(2, 3, *size)
    out = model(x)
    padded = tuple(-(-side // 32) * 32 for side in size)
    assert model.head.out_sizes == [padded] and backbone.seen.shape[-2:] == padded
    # The image sits at the top left of the padded frame; the padding is zeros (mean colour).
    torch.testing.assert_close(backbone.seen[..., : size[0], : size[1]], x)
    assert (
        backbone.seen[..., size[0] :, :].eq(0).all() and backbone.seen[..., size[1] :].eq(0).all()
    )
    assert out.shape == (2, 2, *size)
    assert torch.equal(out[0, 0, :, 0], torch.arange(size[0], dtype=torch.float32))
    assert torch.equal(out[0, 1, 0], torch.arange(size[1], dtype=torch.float32))


def test_pad_multiple_and_pad_mode_are_the_callers_choice():
    backbone = RecordingBackbone()
    head = PositionHead(backbone.channels, backbone.strides)
    model = SegmentationShell(backbone, head, pad_multiple=64, pad_mode="reflect")
    x = torch.randn(1, 3, 33, 47)
    assert model(x).shape == (1, 2, 33, 47)
    torch.testing.assert_close(backbone.seen, F.pad(x, (0, 17, 0, 31), mode="reflect"))


def test_input_scale_runs_the_head_on_the_resized_image_and_returns_input_size():
    torch.manual_seed(0)
    plain = _shell(ScoreS16Head)
    scaled = _shell(ScoreS16Head, input_scale=1.5)
    scaled.load_state_dict(plain.state_dict())
    image = torch.randn(1, 3, 41, 57)
    with torch.no_grad():
        out = scaled(image)
        big = F.interpolate(image, scale_factor=1.5, mode="bilinear", align_corners=False)
        by_hand = F.interpolate(plain(big), size=(41, 57), mode="bilinear", align_corners=False)
    assert out.shape == (1, 3, 41, 57)
    torch.testing.assert_close(out, by_hand)


def test_input_scale_on_a_real_encoder_equals_the_net_run_by_hand():
    torch.manual_seed(0)
    options = {"encoder": "efficientnet_lite0", "pretrained": False, "upsample": "bilinear"}
    plain = build_fcn(5, variant="fcn8s", **options).eval()
    scaled = build_fcn(5, variant="fcn8s", input_scale=1.5, **options).eval()
    scaled.load_state_dict(plain.state_dict())
    image = torch.randn(1, 3, 61, 97)
    with torch.no_grad():
        out = scaled(image)
        big = F.interpolate(image, scale_factor=1.5, mode="bilinear", align_corners=False)
        by_hand = F.interpolate(plain(big), size=(61, 97), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, by_hand)
        assert not torch.allclose(out, plain(image), atol=1e-3)


@pytest.mark.parametrize("head_class", [PositionHead, ScoreS16Head, FCNHead, FPNLiteHead])
@pytest.mark.parametrize("output_stride", [32, 8])
def test_any_head_plugs_in_at_any_size(head_class, output_stride):
    torch.manual_seed(0)
    backbone = PoolBackbone(output_stride)
    if head_class is PositionHead:
        head = head_class(backbone.channels, backbone.strides)
    else:
        head = head_class(backbone.channels, backbone.strides, 3)
    model = SegmentationShell(backbone, head).eval()
    assert model.num_classes == head.num_classes and model.normalization == "imagenet"
    assert model.pad_multiple == output_stride
    with torch.no_grad():
        for size in ODD_SIZES[:2]:
            out = model(torch.randn(1, 3, *size))
            assert out.shape == (1, head.num_classes, *size) and torch.isfinite(out).all()


def test_a_head_that_reads_a_missing_feature_is_a_one_line_option_error():
    complete = PoolBackbone()
    head = FCNHead(complete.channels, complete.strides, 3, "fcn4s")
    lacking = PoolBackbone()
    del lacking.channels["s4"], lacking.strides["s4"]
    with pytest.raises(ModelOptionError, match=r"needs backbone features \['s4'\]") as error:
        SegmentationShell(lacking, head)
    assert "\n" not in str(error.value) and "s8" in str(error.value)
    with pytest.raises(ModelOptionError, match="lacks"):
        FCNHead(lacking.channels, lacking.strides, 3, "fcn4s")


def test_a_head_built_for_other_strides_is_refused():
    head = ScoreS16Head(PoolBackbone(32).channels, PoolBackbone(32).strides, 3)
    with pytest.raises(ModelOptionError, match="strides") as error:
        SegmentationShell(PoolBackbone(8), head)
    assert "\n" not in str(error.value)


def test_bad_options_and_inputs_are_one_line_errors():
    with pytest.raises(ModelOptionError, match="input_scale"):
        _shell(ScoreS16Head, input_scale=0.0)
    with pytest.raises(ModelOptionError, match="pad_mode"):
        _shell(ScoreS16Head, pad_mode="wrap")
    with pytest.raises(DataError, match="N x 3 x H x W"):
        _shell(ScoreS16Head)(torch.randn(3, 8, 8))
    with pytest.raises(ModelOptionError, match="num_classes"):
        ScoreS16Head(PoolBackbone().channels, PoolBackbone().strides, 0)


def test_pad_to_multiple_pads_bottom_right_only():
    x = torch.ones(1, 3, 10, 33)
    padded = pad_to_multiple(x, 32)
    assert padded.shape == (1, 3, 32, 64)
    assert padded[..., :10, :33].eq(1).all() and padded.sum() == x.sum()
    assert pad_to_multiple(padded, 32).shape == padded.shape
