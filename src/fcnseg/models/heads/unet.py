"""A padded U-Net decoder (`UNetHead`): the expansive path of U-Net on any encoder of the table.

Why padded, next to the exact `unet2015`: behind a pretrained encoder the decoder's job is the
same as in the paper (bring coarse, semantic features back to full resolution, concatenating the
encoder's map of each level), but padded 3x3 convolutions keep every level's size, so no
cropping or mirrored tiles are needed and the shell's pad-to-stride suffices. Each step, coarse
to fine over s32 -> s16 -> s8 -> s4: upsample to the skip's size (bilinear rather than the
paper's 2x2 up-convolution, so that atrous encoders whose s16/s32 share a stride work too),
concatenate the skip, two 3x3 conv+BN+ReLU that halve the width; then a 1x1 class score and a
bilinear resize from stride 4 to the requested size. Widths are kept small by default (128, 64,
32 from `decoder_channels` = 32) so the head is light next to the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.heads.base import DecodeHead

#: Feature maps the decoder reads, coarse to fine: the deepest first, then one skip per level.
UNET_FEATURES: tuple[str, ...] = ("s32", "s16", "s8", "s4")


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers += [
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class UNetHead(DecodeHead):
    """U-Net expansive path on s32/s16/s8/s4 with padded convolutions, 1x1 score.

    Args:
        channels, strides: the backbone's feature channels and strides.
        num_classes: classes scored.
        decoder_channels: width of the finest (s4) step; each coarser step doubles it.
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        decoder_channels: int = 32,
    ) -> None:
        super().__init__(channels, strides, num_classes, UNET_FEATURES, who="unet")
        if decoder_channels < 1:
            raise ModelOptionError(f"decoder_channels must be >= 1, got {decoder_channels}")
        deepest, *skips = self.in_features
        widths = [decoder_channels * 2 ** (len(skips) - 1 - i) for i in range(len(skips))]
        self.steps = nn.ModuleList()
        incoming = channels[deepest]
        for skip, width in zip(skips, widths, strict=True):
            self.steps.append(_block(incoming + channels[skip], width))
            incoming = width
        self.score = nn.Conv2d(incoming, num_classes, 1)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The 1x1 class scorer: the decoder steps transfer to other classes."""
        return ("score",)

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        deepest, *skips = self.in_features
        x = features[deepest]
        for name, step in zip(skips, self.steps, strict=True):
            skip = features[name]
            x = _resize(x, skip.shape[-2:])
            x = step(torch.cat([x, skip], dim=1))
        return _resize(self.score(x), out_size)


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
