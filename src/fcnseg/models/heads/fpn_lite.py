"""A light feature-pyramid head (`FPNLiteHead`): the worked example of adding a decode head.

Why it is here: it proves the head slot. It is one class and one row of the head table
(`fcnseg.models.heads.HEADS`), and registration then offers it on every backbone as
`fpnlite_<encoder>`. What it computes is the top-down pathway of a feature pyramid network
(Lin et al., 2017) cut to the minimum: 1x1 lateral projections of s32, s16 and s8 to one width,
summed coarse to fine after bilinear upsampling, one 3x3 conv+BN+ReLU, a 1x1 class score, and a
bilinear resize to the requested size. Unlike the FCN head it fuses features, not scores, which
is the design the paper's skips were later generalised into.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.heads.base import DecodeHead

#: Feature maps the pyramid fuses, coarse to fine.
FPN_LITE_FEATURES: tuple[str, ...] = ("s32", "s16", "s8")


class FPNLiteHead(DecodeHead):
    """Top-down sum of 1x1 laterals on s32/s16/s8, one 3x3 smoothing block, 1x1 score.

    Args:
        channels, strides: the backbone's feature channels and strides.
        num_classes: classes scored.
        pyramid_channels: width every lateral projects to (the pyramid's one width).
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        pyramid_channels: int = 64,
    ) -> None:
        super().__init__(channels, strides, num_classes, FPN_LITE_FEATURES, who="fpnlite")
        if pyramid_channels < 1:
            raise ModelOptionError(f"pyramid_channels must be >= 1, got {pyramid_channels}")
        self.lateral = nn.ModuleDict(
            {name: nn.Conv2d(channels[name], pyramid_channels, 1) for name in self.in_features}
        )
        self.smooth = nn.Sequential(
            nn.Conv2d(pyramid_channels, pyramid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(pyramid_channels),
            nn.ReLU(inplace=True),
        )
        self.score = nn.Conv2d(pyramid_channels, num_classes, 1)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The 1x1 class scorer: the laterals and the smoothing block transfer to other classes."""
        return ("score",)

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        merged: Tensor | None = None
        for name in self.in_features:
            lateral = self.lateral[name](features[name])
            if merged is not None:
                lateral = lateral + _resize(merged, lateral.shape[-2:])
            merged = lateral
        assert merged is not None  # in_features is never empty
        return _resize(self.score(self.smooth(merged)), out_size)


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
