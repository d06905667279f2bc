"""The backbone contract every encoder in fcnseg fulfils.

A backbone maps an image batch to named feature maps whose keys name their stride ("s4", "s8",
"s16", "s32"). The FCN skip head only needs this contract, which is what makes "any classifier
becomes a segmenter" true in code: a new encoder is one class, not a new copy of the head.
"""

from __future__ import annotations

from torch import Tensor, nn


def stride_key(stride: int) -> str:
    """Name of the feature map at `stride` ("s8" for 8): one spelling everywhere."""
    return f"s{stride}"


class Backbone(nn.Module):
    """Base class: subclasses set `channels` and `strides` and implement `forward`.

    Attributes:
        channels: feature name -> channel count, e.g. {"s8": 40, "s16": 112, "s32": 320}.
        strides: feature name -> stride relative to the input, e.g. {"s8": 8, ...}. With atrous
            (dilated) stages several names can share one stride; keys stay the nominal names of
            the stages ("s16", "s32") so that heads can address them uniformly.
        normalization: the input preset the pretrained weights expect ("imagenet", "tf_lite",
            ...; fcnseg.data.transforms.normalize), which the model built on it reports.
        in_channels: channels of the input image (3; `adapt_input_channels` changes it).
    """

    channels: dict[str, int]
    strides: dict[str, int]
    normalization: str
    in_channels: int = 3

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def output_stride(self) -> int:
        """Stride of the deepest feature map."""
        return max(self.strides.values())
