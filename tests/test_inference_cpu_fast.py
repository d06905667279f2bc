"""CPU fast-path helpers (fcnseg.inference.cpu_fast): folding is exact, layouts are transparent."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.inference.cpu_fast import (
    ChannelsLast,
    argmax_agreement,
    count_batchnorms,
    find_conv_bn_pairs,
    fold_conv_bn,
    optimize_for_cpu,
)


class Block(nn.Module):
    """conv/bn as attributes (not a Sequential), plus a residual, like MobileNet/EfficientNet."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv_dw(F.relu(self.bn1(self.conv_pw(x)))))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.block = Block(8)
        self.pre_act_bn = nn.BatchNorm2d(8)  # input is a ReLU output: must not be folded
        self.score = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(F.relu(self.stem(x)))
        y = self.score(self.pre_act_bn(F.relu(y)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.3, 3)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_pairs_found_outside_sequentials_and_not_after_activations() -> None:
    model = _randomised(Net())
    pairs = find_conv_bn_pairs(model, torch.randn(1, 3, 16, 16))
    assert sorted(pairs) == [
        ("block.conv_dw", "block.bn2"),
        ("block.conv_pw", "block.bn1"),
        ("stem.0", "stem.1"),
    ]


def test_fold_is_exact_and_removes_the_folded_batchnorms() -> None:
    model = _randomised(Net())
    images = torch.randn(2, 3, 21, 27)
    folded = fold_conv_bn(model, images[:1])
    assert count_batchnorms(model) == 4
    assert count_batchnorms(folded) == 1  # only the pre-activation BN stays
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model(images), atol=1e-5, rtol=1e-4)
    assert count_batchnorms(model) == 4  # the original is untouched


def test_channels_last_wrapper_returns_standard_layout() -> None:
    model = _randomised(Net())
    fast = ChannelsLast(fold_conv_bn(model, torch.randn(1, 3, 16, 16)))
    images = torch.randn(1, 3, 19, 23)
    with torch.no_grad():
        out = fast(images)
        assert out.is_contiguous()
        torch.testing.assert_close(out, model(images), atol=1e-5, rtol=1e-4)


def test_optimize_for_cpu_bf16_keeps_most_argmax() -> None:
    model = _randomised(Net())
    images = torch.randn(1, 3, 32, 32)
    fast = optimize_for_cpu(model, images, bf16=True)
    with torch.no_grad():
        agreement = argmax_agreement(model(images), fast(images))
    assert agreement > 0.9
    assert fast(images).dtype == torch.float32


def test_argmax_agreement_counts_pixels() -> None:
    a = torch.zeros(1, 2, 2, 2)
    a[0, 1, 0, 0] = 1.0
    assert argmax_agreement(a, torch.zeros(1, 2, 2, 2)) == pytest.approx(0.75)
