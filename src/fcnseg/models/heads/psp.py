"""PSPNet's pyramid pooling head (`PSPHead`), with its training-only auxiliary head.

Why it is here: PSPNet (Zhao et al., CVPR 2017) is the FCN family's answer to missing global
context: the last feature map of a dilated encoder (output stride 8) is average-pooled into 1x1,
2x2, 3x3 and 6x6 bins, each bin map reduced to C/4 channels, upsampled back and concatenated
with the map itself, so every pixel's score sees the whole image. The layer widths follow the
authors' release (constants: PSPNET_*). The auxiliary head scores the stride-16 stage's map
during training only (deep supervision, weight 0.4 in the loss, `train.aux_weight`); the shell
hands its logits to the training loop (`SegmentationShell.auxiliary_logits`) and evaluation,
export and serving never run it.

Pooling uses `pooling.adaptive_avg_pool` (matrix products over runtime sizes) so that an
exported ONNX graph stays correct at every input size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.constants import (
    PSPNET_AUX_CHANNELS,
    PSPNET_BINS,
    PSPNET_BOTTLENECK_CHANNELS,
    PSPNET_DROPOUT,
)
from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.heads.base import DecodeHead
from fcnseg.models.heads.pooling import adaptive_avg_pool

#: The map the pyramid pools, and the one the auxiliary head scores.
PSP_FEATURES: tuple[str, ...] = ("s32", "s16")


def conv_bn_relu(inputs: int, outputs: int, kernel: int) -> list[nn.Module]:
    """Convolution (no bias: BN follows), batch norm, ReLU: the unit of every PSPNet branch."""
    return [
        nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


class PyramidBranch(nn.Module):
    """One bin size: adaptive average pool, 1x1 conv + BN + ReLU, bilinear back to the map."""

    def __init__(self, channels: int, reduced: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.reduce = nn.Sequential(*conv_bn_relu(channels, reduced, 1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.reduce(adaptive_avg_pool(x, self.bins))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ScoreBlock(nn.Sequential):
    """3x3 conv + BN + ReLU, spatial dropout, 1x1 class score (PSPNet's `cls` and `aux`)."""

    def __init__(self, inputs: int, width: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            *conv_bn_relu(inputs, width, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, num_classes, 1),
        )


class PSPHead(DecodeHead):
    """Pyramid pooling (bins 1/2/3/6) on s32, concatenated, 3x3 block, 1x1 score; an auxiliary
    score of s16 in training.

    Args:
        channels, strides: the backbone's feature channels and strides (built at output stride
            8 by the registered `pspnet_<encoder>` names: both maps then lie at stride 8).
        num_classes: classes scored.
        bottleneck_channels: width of the 3x3 block after the concatenation (release: 512).
        aux_channels: width of the auxiliary head's 3x3 block (release: 256).
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        bottleneck_channels: int = PSPNET_BOTTLENECK_CHANNELS,
        aux_channels: int = PSPNET_AUX_CHANNELS,
    ) -> None:
        super().__init__(channels, strides, num_classes, PSP_FEATURES, who="pspnet")
        if bottleneck_channels < 1 or aux_channels < 1:
            raise ModelOptionError(
                f"pspnet: bottleneck_channels and aux_channels must be >= 1, got "
                f"{bottleneck_channels} and {aux_channels}"
            )
        deep = channels["s32"]
        reduced = max(1, deep // len(PSPNET_BINS))
        self.pyramid = nn.ModuleList(PyramidBranch(deep, reduced, bins) for bins in PSPNET_BINS)
        fused = deep + reduced * len(PSPNET_BINS)
        self.classifier = ScoreBlock(fused, bottleneck_channels, num_classes, PSPNET_DROPOUT)
        self.aux = ScoreBlock(channels["s16"], aux_channels, num_classes, PSPNET_DROPOUT)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The 1x1 scores of the main and the auxiliary head (the last layer of each block)."""
        return (f"classifier.{len(self.classifier) - 1}", f"aux.{len(self.aux) - 1}")

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        deep = features["s32"]
        if self.training and deep.shape[0] < 2:
            # The 1x1 bin's batch norm sees one value per channel: PyTorch refuses to train it.
            # (The training sampler drops a last partial batch, so only batch_size 1 gets here.)
            raise DataError(
                "pspnet trains on batches of 2 or more images (its 1x1 pyramid bin is batch-"
                "normalised); set train.batch_size >= 2"
            )
        fused = torch.cat([deep, *(branch(deep) for branch in self.pyramid)], dim=1)
        return _resize(self.classifier(fused), out_size)

    def auxiliary_logits(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        """Scores of the stride-16 stage (deep supervision), for the training loss only."""
        return _resize(self.aux(features["s16"]), out_size)


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
