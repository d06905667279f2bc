"""RGB-D fusion: the FCN paper's NYUDv2 nets (section 4.3), for any registered model.

Two wrappers turn any registered single-input FCN into the paper's RGB-D variants:

- Early fusion (`expand_input_channels`, registry name "early_fusion"): the first convolution
  takes N channels (RGB + depth: 4). Its RGB filters are kept; the extra input channels start
  from a documented rule: "mean" (each extra channel gets the mean of the filter's RGB weights,
  so a depth edge excites the filter as a grey-level edge of the same contrast would) or "zero"
  (the net starts out computing exactly its RGB function and learns to use depth).
- Late fusion (`LateFusionFCN`, "late_fusion"): two complete FCN streams, one on RGB and one on
  HHA, whose class scores are summed and trained end to end.

The paper's third composite, SIFT Flow's multi-task net, is `fcnseg.models.multihead`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.factory import build_model
from fcnseg.models.protocol import as_heads, like_output, map_heads
from fcnseg.models.registry import register_model

ChannelRule = Literal["mean", "zero"]
CHANNEL_RULES: tuple[str, ...] = ("mean", "zero")
#: Channels of an RGB image, which every registered model's first convolution consumes.
RGB_CHANNELS = 3
#: Keys of the dict input a late-fusion model accepts.
LATE_FUSION_KEYS: tuple[str, str] = ("rgb", "hha")
#: What a stream returns: logits, or named heads' logits for multi-head streams.
ModelOutput = Tensor | dict[str, Tensor]


# --- Early fusion ---------------------------------------------------------------------------


def find_first_conv(model: nn.Module, in_channels: int = RGB_CHANNELS) -> tuple[str, nn.Conv2d]:
    """Name and module of the first `nn.Conv2d` (registration order) taking `in_channels`.

    Registration order is the order modules are created in `__init__`, which for every encoder
    in fcnseg (and torchvision/timm) puts the stem convolution first. Subclasses of Conv2d
    (e.g. timm's Conv2dSame) count, which is why the layer is edited in place, not replaced.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return name, module
    raise ModelOptionError(
        f"{type(model).__name__}: no Conv2d with {in_channels} input channels found; "
        "expand_input_channels needs a model whose stem is a 2-D convolution"
    )


def expand_input_channels(
    model: nn.Module, n_channels: int, rule: ChannelRule = "mean"
) -> nn.Module:
    """Make `model` accept N-channel input (RGB first, extra channels after), in place.

    The first convolution's weight grows from C_out x 3 x k x k to C_out x N x k x k: the RGB
    part is kept, the extra part is set by `rule` ("mean": the mean over the RGB filters;
    "zero": zeros). Sets `model.in_channels = n_channels`, which models that validate their
    input read. Returns the model for chaining.
    """
    if rule not in CHANNEL_RULES:
        raise ModelOptionError(f"rule must be one of {CHANNEL_RULES}, got {rule!r}")
    if n_channels < RGB_CHANNELS:
        raise ModelOptionError(
            f"n_channels must be >= {RGB_CHANNELS} (RGB plus extra channels), got {n_channels}"
        )
    name, conv = find_first_conv(model)
    if conv.groups != 1:
        raise ModelOptionError(f"first conv {name!r} is grouped; cannot add input channels to it")
    old = conv.weight.detach()
    extra = n_channels - RGB_CHANNELS
    if rule == "mean":
        added = old.mean(dim=1, keepdim=True).expand(-1, extra, -1, -1)
    else:
        added = old.new_zeros(old.shape[0], extra, *old.shape[2:])
    conv.weight = nn.Parameter(
        torch.cat([old, added], dim=1).contiguous(), requires_grad=conv.weight.requires_grad
    )
    conv.in_channels = n_channels
    model.in_channels = n_channels
    return model


@register_model(
    "early_fusion",
    description="Early RGB-D fusion: any model with an N-channel first conv (base=..., NYUDv2)",
    family="fusion",
    release_solver="nyud-{stage}-color-d",
    base="fcn8s_resnet18",
    in_channels=RGB_CHANNELS + 1,
    rule="mean",
)
def build_early_fusion(
    num_classes: int, *, base: str, in_channels: int, rule: ChannelRule, **kwargs: Any
) -> nn.Module:
    """`base` built with `num_classes`, its first convolution expanded to `in_channels`."""
    return expand_input_channels(build_model(base, num_classes, **kwargs), in_channels, rule)


# --- Late fusion ----------------------------------------------------------------------------


def _add_scores(first: ModelOutput, second: ModelOutput) -> ModelOutput:
    """Head-wise sum of two streams' outputs, in the shape the streams return."""
    second_heads = as_heads(second)
    return like_output(
        {name: score + second_heads[name] for name, score in as_heads(first).items()}, first
    )


class LateFusionFCN(nn.Module):
    """Two FCN streams (RGB and HHA) whose class scores are summed (FCN paper, "RGB-HHA").

    Input: either a dict {"rgb": N x 3 x H x W, "hha": N x 3 x H x W}, or one N x 6 x H x W
    tensor with RGB in channels 0-2 and HHA in 3-5 (the NYUDv2 loader's default, so that the
    training loop moves and batches a single tensor). Each part must already be normalised
    for its stream. Output: the summed logits, N x C x H x W (or a dict of them when the
    streams are multi-head).
    """

    def __init__(
        self,
        rgb_model: nn.Module,
        hha_model: nn.Module,
        stream_weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__()
        self.rgb = rgb_model
        self.hha = hha_model
        #: Coefficients of the RGB and HHA scores in the sum. The paper says "sum"; the
        #: release's nyud-fcn32s-color-hha averages (Eltwise SUM with coeff 0.5, 0.5), which
        #: only scales the logits (same argmax) but changes the loss, so imported release
        #: weights need (0.5, 0.5) to compute the release's scores.
        self.stream_weights = (float(stream_weights[0]), float(stream_weights[1]))
        self.normalization: str = rgb_model.normalization
        self.in_channels = 2 * RGB_CHANNELS
        self.num_classes: int = rgb_model.num_classes
        self.head_classes: dict[str, int] = dict(rgb_model.head_classes)

    def split_input(self, x: Tensor | Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(rgb, hha) parts of a dict or a 6-channel tensor; bad input is a one-line error."""
        if isinstance(x, Mapping):
            missing = [key for key in LATE_FUSION_KEYS if key not in x]
            if missing:
                raise DataError(f"late fusion input dict lacks {missing}; pass keys 'rgb', 'hha'")
            return x["rgb"], x["hha"]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"late fusion expects N x {self.in_channels} x H x W (RGB then HHA) or a dict "
                f"{{'rgb', 'hha'}}, got shape {tuple(x.shape)}"
            )
        return x[:, :RGB_CHANNELS], x[:, RGB_CHANNELS:]

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> ModelOutput:
        rgb, hha = self.split_input(x)
        first, second = self.rgb(rgb), self.hha(hha)
        if self.stream_weights != (1.0, 1.0):
            rgb_weight, hha_weight = self.stream_weights
            first = map_heads(first, lambda scores: scores * rgb_weight)
            second = map_heads(second, lambda scores: scores * hha_weight)
        return _add_scores(first, second)


@register_model(
    "late_fusion",
    description="Late RGB+HHA fusion: two `base` streams with summed scores (NYUDv2)",
    family="fusion",
    release_solver="nyud-{stage}-color-hha",
    base="fcn8s_resnet18",
)
def build_late_fusion(
    num_classes: int,
    *,
    base: str,
    stream_weights: tuple[float, float] | list[float] = (1.0, 1.0),
    **kwargs: Any,
) -> LateFusionFCN:
    """Two independently initialised `base` models (both from the same pretrained weights)."""
    if len(stream_weights) != 2:
        raise ModelOptionError(
            f"stream_weights must be two numbers (RGB, HHA), got {stream_weights!r}"
        )
    return LateFusionFCN(
        build_model(base, num_classes, **kwargs),
        build_model(base, num_classes, **kwargs),
        (float(stream_weights[0]), float(stream_weights[1])),
    )
