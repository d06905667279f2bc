"""ENet (Paszke et al. 2016): the paper's Table 1 as one whole net, registered as `enet`.

Why a whole net and not a head: ENet has no separate encoder; its early downsampling, its
bottleneck stages and its unpooling decoder were designed together for speed, and it is trained
from scratch. The layers follow Table 1 and the authors' Torch7 release (e-lab/ENet-training,
train/models/encoder.lua and decoder.lua; commits in constants.py):

    initial       3x3 conv stride 2 (13 maps) beside 2x2 max-pool of the image, concatenated: 16
    stage 1       bottleneck1.0 downsampling to 64, then 4 regular bottlenecks 1.1-1.4
    stage 2       bottleneck2.0 downsampling to 128, then 2.1 regular, 2.2 dilated 2,
                  2.3 asymmetric 5, 2.4 dilated 4, 2.5 regular, 2.6 dilated 8,
                  2.7 asymmetric 5, 2.8 dilated 16
    stage 3       stage 2 again without 2.0
    stage 4       bottleneck4.0 upsampling to 64 (max-unpooling with 2.0's indices), 4.1, 4.2
    stage 5       bottleneck5.0 upsampling to 16 (unpooling with 1.0's indices), 5.1
    fullconv      2x2 transposed convolution stride 2 to the classes

An encoder bottleneck is a 1x1 projection to a quarter of the output width (a 2x2 stride-2
convolution when downsampling), the main convolution (3x3, dilated 3x3, or 5x1 then 1x5), a 1x1
expansion, BN after each and PReLU after the first two, spatial dropout (0.01 in stage 1, 0.1
later), summed with the shortcut (max-pooled and zero-padded in channels when downsampling) and
a PReLU. The decoder bottlenecks use ReLU and no dropout, and their shortcut of an upsampling
bottleneck is a 1x1 conv + BN then max-unpooling, as in decoder.lua. Projections carry no bias
(paper section 4); the 3x3 and the second asymmetric convolution do, as in the release.
Inputs are padded to a multiple of 8 and the logits cropped back, so any size works.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.constants import ENET_DROPOUT_LATER, ENET_DROPOUT_STAGE1, ENET_INTERNAL_RATIO
from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.registry import register_model
from fcnseg.models.unpool import max_unpool
from fcnseg.models.weights import Pretrained

#: Batch-norm epsilon of the release (`nn.SpatialBatchNormalization(n, 1e-3)`).
BN_EPS = 1e-3
#: Total downsampling of ENet (three stride-2 steps); inputs are padded to a multiple of it.
ENET_STRIDE = 8

Kind = Literal["regular", "dilated", "asymmetric"]
#: Bottlenecks 2.1-2.8 (and 3.1-3.8): (kind, dilation or kernel), paper Table 1.
STAGE2_PLAN: tuple[tuple[Kind, int], ...] = (
    ("regular", 1),
    ("dilated", 2),
    ("asymmetric", 5),
    ("dilated", 4),
    ("regular", 1),
    ("dilated", 8),
    ("asymmetric", 5),
    ("dilated", 16),
)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def main_convolution(channels: int, kind: Kind, size: int) -> list[nn.Module]:
    """The bottleneck's middle convolution: 3x3, 3x3 dilated by `size`, or `size`x1 then 1x`size`."""
    if kind == "regular":
        return [nn.Conv2d(channels, channels, 3, padding=1)]
    if kind == "dilated":
        return [nn.Conv2d(channels, channels, 3, padding=size, dilation=size)]
    pad = (size - 1) // 2
    return [
        nn.Conv2d(channels, channels, (size, 1), padding=(pad, 0), bias=False),
        nn.Conv2d(channels, channels, (1, size), padding=(0, pad)),
    ]


class InitialBlock(nn.Module):
    """3x3 stride-2 conv to 13 maps beside the 2x2 max-pooled image: 16 maps at half size."""

    def __init__(self, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = bn(out_channels)
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class EncoderBottleneck(nn.Module):
    """Regular / dilated / asymmetric bottleneck, or the downsampling one (returns indices)."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        dropout: float,
        kind: Kind = "regular",
        size: int = 1,
        downsample: bool = False,
    ) -> None:
        super().__init__()
        inner = outputs // ENET_INTERNAL_RATIO
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.extra_channels = outputs - inputs
        self.main = nn.Sequential(
            nn.Conv2d(inputs, inner, stride, stride, bias=False),
            bn(inner),
            nn.PReLU(inner),
            *main_convolution(inner, kind, size),
            bn(inner),
            nn.PReLU(inner),
            nn.Conv2d(inner, outputs, 1, bias=False),
            bn(outputs),
            nn.Dropout2d(dropout),
        )
        self.prelu = nn.PReLU(outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        shortcut, indices = x, None
        if self.downsample:
            shortcut, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.prelu(self.main(x) + shortcut), indices


class DecoderBottleneck(nn.Module):
    """Regular decoder bottleneck, or the upsampling one (transposed 3x3 in the main branch,
    1x1 conv + BN + max-unpooling in the shortcut); ReLU, no dropout (decoder.lua)."""

    def __init__(self, inputs: int, outputs: int, upsample: bool = False) -> None:
        super().__init__()
        inner = outputs // ENET_INTERNAL_RATIO
        middle: nn.Module = (
            nn.ConvTranspose2d(inner, inner, 3, 2, padding=1, output_padding=1)
            if upsample
            else nn.Conv2d(inner, inner, 3, padding=1)
        )
        self.main = nn.Sequential(
            nn.Conv2d(inputs, inner, 1, bias=False),
            bn(inner),
            nn.ReLU(inplace=True),
            middle,
            bn(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, outputs, 1, bias=False),
            bn(outputs),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inputs, outputs, 1, bias=False), bn(outputs))
            if upsample or inputs != outputs
            else nn.Identity()
        )
        self.upsample = upsample

    def forward(
        self, x: Tensor, indices: Tensor | None = None, pooled: Tensor | None = None
    ) -> Tensor:
        shortcut = self.shortcut(x)
        if self.upsample:
            assert indices is not None and pooled is not None
            shortcut = max_unpool(shortcut, indices, pooled)
        return F.relu(self.main(x) + shortcut)


class ENet(nn.Module):
    """ENet for `num_classes` classes: N x C x H x W normalised images -> N x classes x H x W
    (C = `in_channels`, the paper's 3; the initial block's convolution gives 16 - C maps beside
    the C pooled bands, so C is at most 15)."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1:
            raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
        if not 1 <= in_channels <= 15:
            raise ModelOptionError(
                f"enet takes 1 to 15 input bands (its initial block concatenates them with 16 - "
                f"bands convolution maps), got in_channels={in_channels}"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        #: Trained from scratch; RGB inputs are standardised with the ImageNet mean/std preset,
        #: other band counts with numbers measured per band (`data check`), as segmenters do.
        self.normalization = "imagenet" if in_channels == 3 else "per_channel"
        self.head_classes: dict[str, int] = {}
        #: Exported graphs are checked by their labels (fcnseg.export.export_tolerance): float
        #: noise of another runtime can flip a near-tie in a pooling window and move an
        #: unpooled value, which changes logits locally but not the segmentation.
        self.export_check = "argmax"
        self.initial = InitialBlock(in_channels, 16)
        stage1 = [EncoderBottleneck(16, 64, ENET_DROPOUT_STAGE1, downsample=True)]
        stage1 += [EncoderBottleneck(64, 64, ENET_DROPOUT_STAGE1) for _ in range(4)]
        self.stage1 = nn.ModuleList(stage1)
        stage2 = [EncoderBottleneck(64, 128, ENET_DROPOUT_LATER, downsample=True)]
        stage2 += [EncoderBottleneck(128, 128, ENET_DROPOUT_LATER, k, s) for k, s in STAGE2_PLAN]
        self.stage2 = nn.ModuleList(stage2)
        self.stage3 = nn.ModuleList(
            EncoderBottleneck(128, 128, ENET_DROPOUT_LATER, k, s) for k, s in STAGE2_PLAN
        )
        self.stage4 = nn.ModuleList(
            [DecoderBottleneck(128, 64, upsample=True)]
            + [DecoderBottleneck(64, 64) for _ in range(2)]
        )
        self.stage5 = nn.ModuleList(
            [DecoderBottleneck(64, 16, upsample=True), DecoderBottleneck(16, 16)]
        )
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, 2)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The final transposed convolution is the only class-shaped layer."""
        return ("fullconv",)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"ENet expects a normalised N x {self.in_channels} x H x W batch, got shape "
                f"{tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        # Zeros at the bottom/right up to a multiple of 8 (the mean colour after normalisation;
        # the shell's rule, written out here because the shell's module imports the heads).
        pad_bottom = (ENET_STRIDE - height % ENET_STRIDE) % ENET_STRIDE
        pad_right = (ENET_STRIDE - width % ENET_STRIDE) % ENET_STRIDE
        y = self.initial(F.pad(x, (0, pad_right, 0, pad_bottom)))
        pooled1 = y
        y, indices1 = self.stage1[0](y)
        for block in self.stage1[1:]:
            y, _ = block(y)
        pooled2 = y
        y, indices2 = self.stage2[0](y)
        for block in [*self.stage2[1:], *self.stage3]:
            y, _ = block(y)
        y = self.stage4[0](y, indices2, pooled2)
        for block in self.stage4[1:]:
            y = block(y)
        y = self.stage5[0](y, indices1, pooled1)
        y = self.stage5[1](y)
        return self.fullconv(y)[..., :height, :width]


@register_model(
    "enet",
    description="ENet (Paszke et al. 2016, Table 1): bottlenecks, max-unpooling decoder; "
    "trained from scratch",
    family="enet",
)
def build_enet(num_classes: int, pretrained: Pretrained = False, in_channels: int = 3) -> ENet:
    """The paper's ENet, random (trained from scratch as in the paper; no weights exist to
    load, so `pretrained=True` is refused in one line and "auto" means random)."""
    if pretrained is True:
        raise ModelOptionError(
            "enet is trained from scratch and has no pretrained weights; set model.pretrained=false"
        )
    return ENet(num_classes, in_channels)
