"""DeepLab v2's atrous spatial pyramid pooling head on a residual encoder (`ASPPHead`).

Why this form: in the authors' ResNet-101 release, ASPP is not the VGG16 net's four fc6-fc7-fc8
branches but four 3x3 convolutions straight from the last residual block to the labels, dilated
by 6, 12, 18 and 24 and summed (fc1_voc12_c0 ... fc1_voc12_c3 -> fc1_voc12; constants.py has
the rates). The encoder runs atrous at output stride 8 (the registered `deeplab_aspp_<encoder>`
presets set `output_stride=8`), and the summed scores are interpolated bilinearly between their
centres to the input size, as the VGG16 DeepLab nets do (`models.deeplab`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fcnseg.constants import DEEPLAB_ASPP_RATES, DEEPLAB_EXPERIMENT, DEEPLAB_OUTPUT_STRIDE
from fcnseg.errors import ModelOptionError
from fcnseg.models.heads.base import DecodeHead
from fcnseg.models.heads.fcn import KnotUpsample

#: The feature map ASPP reads: the deepest stage (stride 8 when the encoder is atrous).
ASPP_FEATURES: tuple[str, ...] = ("s32",)
#: Registered-name prefix -> head options; `output_stride` is the shell's (DeepLab's stride 8).
ASPP_PRESETS: dict[str, dict[str, object]] = {
    "deeplab_aspp": {"output_stride": DEEPLAB_OUTPUT_STRIDE}
}
#: Backbones registered with this head: the torchvision ones, whose atrous option
#: (`output_stride` 8) is tested; the timm entries leave dilation to each architecture.
ASPP_ENCODERS: tuple[str, ...] = ("resnet18", "resnet50", "resnet101", "mobilenet_v2")
#: Gaussian filler of the release's fc1_voc12_c* (`std: 0.01`, bias 0).
_SCORE_STD = 0.01


class ASPPHead(DecodeHead):
    """Sum of dilated 3x3 class scorers on the deepest features, then interpolation.

    Args:
        channels, strides: the backbone's feature channels and strides.
        num_classes: classes scored.
        rates: dilation (= padding) of each branch, fc1_voc12_c0 first.
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        rates: Sequence[int] = DEEPLAB_ASPP_RATES,
    ) -> None:
        super().__init__(channels, strides, num_classes, ASPP_FEATURES, who="aspp")
        if not rates or any(int(rate) != rate or rate < 1 for rate in rates):
            raise ModelOptionError(
                f"rates must be positive integers, e.g. [6, 12, 18, 24]; got {rates}"
            )
        self.rates = tuple(int(rate) for rate in rates)
        #: The release's layer names, one per rate.
        self.branch_names = tuple(
            f"fc1_{DEEPLAB_EXPERIMENT}_c{index}" for index in range(len(self.rates))
        )
        width = channels[ASPP_FEATURES[0]]
        for name, rate in zip(self.branch_names, self.rates, strict=True):
            conv = nn.Conv2d(width, num_classes, 3, padding=rate, dilation=rate)
            nn.init.normal_(conv.weight, 0.0, _SCORE_STD)
            nn.init.zeros_(conv.bias)
            self.add_module(name, conv)
        self.interp = KnotUpsample(num_classes, strides[ASPP_FEATURES[0]], "bilinear")

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """Every branch: each is a class scorer (no class-free layer between it and the
        encoder), so all are re-initialised for other classes and take `score_lr_mult`."""
        return self.branch_names

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        x = features[ASPP_FEATURES[0]]
        scores = [getattr(self, name)(x) for name in self.branch_names]
        return self.interp(torch.stack(scores).sum(dim=0), out_size)
