"""Early and late RGB-D fusion, on a tiny stand-in and on registered models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg import build_model, list_models
from fcnseg.constants import NYUD_NUM_CLASSES
from fcnseg.losses import PixelCrossEntropy
from fcnseg.models.fusion import LateFusionFCN, expand_input_channels, find_first_conv

SIZE = (32, 48)
REAL_BASE = "fcn8s_resnet18"


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.body = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return F.relu(self.body(F.relu(self.stem(x))))


class TinyFCN(nn.Module):
    """A stand-in FCN: a backbone, a class-dependent score layer, bilinear upsampling."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = TinyBackbone()
        self.score = nn.Conv2d(8, num_classes, 1)
        # The model contract (fcnseg.models.protocol.SegmentationModel).
        self.num_classes = num_classes
        self.normalization = "imagenet"
        self.in_channels = 3
        self.head_classes: dict[str, int] = {}

    def forward(self, x):
        score = self.score(self.backbone(x))
        return F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _images(channels: int = 3, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *SIZE, generator=torch.Generator().manual_seed(0))


def _real_model_available() -> bool:
    return REAL_BASE in list_models()


needs_real = pytest.mark.skipif(
    not _real_model_available(), reason=f"{REAL_BASE} is not registered in this checkout"
)


# --- Early fusion ---------------------------------------------------------------------------


def test_expand_input_channels_zero_rule_keeps_the_rgb_function():
    torch.manual_seed(0)
    model = TinyFCN(5).eval()
    rgb = _images()
    with torch.no_grad():
        before = model(rgb)
        expand_input_channels(model, 4, rule="zero")
        depth = torch.randn(2, 1, *SIZE)
        after = model(torch.cat([rgb, depth], 1))
    torch.testing.assert_close(after, before)
    assert model.in_channels == 4 and model.backbone.stem.in_channels == 4


def test_expand_input_channels_mean_rule_copies_the_mean_rgb_filter():
    torch.manual_seed(0)
    model = TinyFCN(5)
    old = model.backbone.stem.weight.detach().clone()
    expand_input_channels(model, 5, rule="mean")
    new = model.backbone.stem.weight
    assert new.shape == (8, 5, 3, 3)
    torch.testing.assert_close(new[:, :3], old)
    for extra in (3, 4):
        torch.testing.assert_close(new[:, extra], old.mean(dim=1))
    # An extra channel equal to the grey level adds what the mean filter sees in it.
    assert new.requires_grad


def test_expand_input_channels_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rule must be"):
        expand_input_channels(TinyFCN(2), 4, rule="random")
    with pytest.raises(ValueError, match="n_channels"):
        expand_input_channels(TinyFCN(2), 2)
    with pytest.raises(ValueError, match="no Conv2d"):
        find_first_conv(nn.Sequential(nn.Linear(3, 3)))


@needs_real
def test_early_fusion_registered_model_trains_on_rgbd():
    model = build_model("early_fusion", NYUD_NUM_CLASSES, base=REAL_BASE, pretrained=False)
    x = _images(4, batch=1)
    logits = model(x)
    assert logits.shape == (1, NYUD_NUM_CLASSES, *SIZE)
    target = torch.randint(0, NYUD_NUM_CLASSES, (1, *SIZE))
    PixelCrossEntropy()(logits, target).backward()
    name, conv = find_first_conv(model, in_channels=4)
    assert conv.weight.grad is not None and conv.weight.grad[:, 3].abs().sum() > 0
    assert model.normalization in ("imagenet", "tf_lite", "caffe_bgr")


# --- Late fusion ----------------------------------------------------------------------------


def test_late_fusion_sums_the_two_streams_and_accepts_dict_or_six_channels():
    torch.manual_seed(0)
    rgb_model, hha_model = TinyFCN(4), TinyFCN(4)
    fused = LateFusionFCN(rgb_model, hha_model)
    rgb, hha = _images(), _images() * 0.5 + 1
    expected = rgb_model(rgb) + hha_model(hha)
    torch.testing.assert_close(fused({"rgb": rgb, "hha": hha}), expected)
    torch.testing.assert_close(fused(torch.cat([rgb, hha], 1)), expected)
    fused(torch.cat([rgb, hha], 1)).sum().backward()
    assert rgb_model.score.weight.grad is not None and hha_model.score.weight.grad is not None


def test_late_fusion_rejects_wrong_inputs():
    fused = LateFusionFCN(TinyFCN(2), TinyFCN(2))
    with pytest.raises(ValueError, match="N x 6 x H x W"):
        fused(_images(4))
    with pytest.raises(ValueError, match="lacks"):
        fused({"rgb": _images()})


@needs_real
def test_late_fusion_registered_model_forward_loss_backward():
    model = build_model("late_fusion", NYUD_NUM_CLASSES, base=REAL_BASE, pretrained=False)
    x = _images(6, batch=1)
    logits = model(x)
    assert logits.shape == (1, NYUD_NUM_CLASSES, *SIZE)
    PixelCrossEntropy()(logits, torch.randint(0, NYUD_NUM_CLASSES, (1, *SIZE))).backward()
    assert all(p.grad is not None for p in model.hha.parameters() if p.requires_grad)


class TwoHeadFCN(nn.Module):
    """A stream that returns named heads, as a multi-head model does."""

    def __init__(self) -> None:
        super().__init__()
        self.semantic, self.geometric = TinyFCN(4), TinyFCN(2)
        self.normalization, self.in_channels = "imagenet", 3
        self.num_classes, self.head_classes = 4, {"semantic": 4, "geometric": 2}

    def forward(self, x):
        return {"semantic": self.semantic(x), "geometric": self.geometric(x)}


def test_late_fusion_weights_each_stream_and_sums_tensors_or_heads():
    torch.manual_seed(0)
    rgb, hha = _images(), _images() * 0.5 + 1
    single = LateFusionFCN(TinyFCN(4), TinyFCN(4), stream_weights=(0.5, 0.25))
    expected = single.rgb(rgb) * 0.5 + single.hha(hha) * 0.25
    torch.testing.assert_close(single({"rgb": rgb, "hha": hha}), expected)
    heads = LateFusionFCN(TwoHeadFCN(), TwoHeadFCN(), stream_weights=(0.5, 0.25))
    out = heads({"rgb": rgb, "hha": hha})
    assert list(out) == ["semantic", "geometric"] and heads.head_classes == {
        "semantic": 4,
        "geometric": 2,
    }
    for name in out:
        expected = heads.rgb(rgb)[name] * 0.5 + heads.hha(hha)[name] * 0.25
        torch.testing.assert_close(out[name], expected)
