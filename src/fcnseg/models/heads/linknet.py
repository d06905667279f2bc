"""LinkNet's decoder (`LinkNetHead`): light decoder blocks, each added to an encoder map.

Why it is here: LinkNet (Chaurasia & Culurciello, VCIP 2017) shows that a decoder can stay tiny
when it gets the encoder's spatial information back by *addition*, not concatenation: each
decoder block is 1x1 conv m -> m/4, 3x3 full (transposed) convolution stride 2, 1x1 conv
m/4 -> n, every conv followed by BN and ReLU, and its output is summed with the encoder map of
the next finer stride. A final block (3x3 full-conv stride 2 to 32 channels, 3x3 conv 32, 2x2
full-conv stride 2 to the classes) returns to the input resolution. On ResNet-18
(`linknet_resnet18`) the widths are the paper's table: blocks (512 -> 256), (256 -> 128),
(128 -> 64), (64 -> 64), and the parameter count is the paper's 11.5 M (tested).

One difference from the authors' code (e-lab/pytorch-linknet, models/linknet.py): the finest
decoder block there is added to the *input* of encoder block 1 (the stem's max-pool output);
the backbone contract here exposes stage outputs, so it is added to the stride-4 stage output.
Both have the same shape (64 x H/4 x W/4 on ResNet-18), so the layers and their parameters are
the same; only that one sum reads a tensor one residual stage later.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fcnseg.constants import LINKNET_BLOCK_REDUCTION, LINKNET_FINAL_CHANNELS
from fcnseg.errors import ModelOptionError
from fcnseg.models.heads.base import DecodeHead

#: Maps the decoder reads, coarse to fine, and the stride each must lie at.
LINKNET_FEATURES: tuple[str, ...] = ("s32", "s16", "s8", "s4")
LINKNET_STRIDES: dict[str, int] = {"s32": 32, "s16": 16, "s8": 8, "s4": 4}


def bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 m -> m/4, 3x3 full-conv (stride 2, or 1 for the finest block), 1x1 m/4 -> n; each
    with BN + ReLU and without bias (the release's `bias=False`)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        inner = max(1, inputs // LINKNET_BLOCK_REDUCTION)
        super().__init__(
            nn.Conv2d(inputs, inner, 1, bias=False),
            *bn_relu(inner),
            nn.ConvTranspose2d(
                inner, inner, 3, stride, padding=1, output_padding=stride - 1, bias=False
            ),
            *bn_relu(inner),
            nn.Conv2d(inner, outputs, 1, bias=False),
            *bn_relu(outputs),
        )


class LinkNetHead(DecodeHead):
    """Decoder blocks s32 -> s16 -> s8 -> s4 (each summed with the encoder map), a stride-1
    block at s4, and the final full-convolution block to the input resolution.

    Args:
        channels, strides: the backbone's feature channels and strides (output stride 32: the
            decoder doubles the resolution once per block).
        num_classes: classes scored.
        final_channels: width of the final block (paper: 32).
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        final_channels: int = LINKNET_FINAL_CHANNELS,
    ) -> None:
        super().__init__(channels, strides, num_classes, LINKNET_FEATURES, who="linknet")
        if any(strides[name] != stride for name, stride in LINKNET_STRIDES.items()):
            raise ModelOptionError(
                f"linknet needs an encoder at output stride 32 (maps at {LINKNET_STRIDES}), got "
                f"{ {name: strides[name] for name in LINKNET_FEATURES} }; drop output_stride"
            )
        if final_channels < 1:
            raise ModelOptionError(f"final_channels must be >= 1, got {final_channels}")
        pairs = list(zip(LINKNET_FEATURES, LINKNET_FEATURES[1:], strict=False))
        self.decoders = nn.ModuleDict(
            {
                coarse: LinkNetDecoderBlock(channels[coarse], channels[fine], 2)
                for coarse, fine in pairs
            }
        )
        finest = channels["s4"]
        self.decoders["s4"] = LinkNetDecoderBlock(finest, finest, 1)
        self.final = nn.Sequential(
            nn.ConvTranspose2d(finest, final_channels, 3, 2, padding=1, output_padding=1),
            *bn_relu(final_channels),
            nn.Conv2d(final_channels, final_channels, 3, padding=1),
            *bn_relu(final_channels),
        )
        self.score = nn.ConvTranspose2d(final_channels, num_classes, 2, 2)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The final 2x2 full convolution is the only layer with one channel per class."""
        return ("score",)

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        x = features["s32"]
        for coarse, fine in zip(LINKNET_FEATURES, LINKNET_FEATURES[1:], strict=False):
            x = features[fine] + self.decoders[coarse](x)
        x = features["s4"] + self.decoders["s4"](x)
        logits = self.score(self.final(x))
        if logits.shape[-2:] != tuple(out_size):
            raise ModelOptionError(
                f"linknet returned {tuple(logits.shape[-2:])} logits for {tuple(out_size)}; the "
                "shell must pad inputs to a multiple of 32"
            )
        return logits
