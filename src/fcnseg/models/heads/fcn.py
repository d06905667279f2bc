"""The FCN skip head (`FCNHead`): FCN-32s, -16s, -8s and -4s as one decode head.

The paper's central idea is that a classifier becomes a dense predictor by scoring its deepest
features (FCN-32s) and then refining that coarse score with scores of shallower, finer features,
fused by summation after 2x upsampling (FCN-16s adds pool4, FCN-8s pool3). Here the backbone
contract (features "s4".."s32") replaces VGG's pools, so the same head serves every encoder, and
"fcn4s" is the paper's step taken once more. The authors' exact VGG16/AlexNet/GoogLeNet nets
are `fcnseg.models.paper_fcn.PaperFCN`; this module is the same idea on modern encoders.

Geometry. Modern encoders pad convolutions symmetrically, so feature i of a stride-s map is
centred on input pixel i*s. Upsampling therefore places coarse sample i at fine position i*f and
interpolates linearly between such knots (a transposed convolution with the 2f-1 "tent" kernel,
which for odd f is exactly Caffe's bilinear filler). Because a piecewise-linear function on the
coarse knots is also piecewise linear on the finer knots, upsampling by 2 and then by 16 equals
upsampling by 32: an FCN-16s initialised from an FCN-32s (zero skip scores) reproduces its output
exactly, which is the premise of the paper's stage-wise training. The bottom/right border beyond
the last feature centre is extended by replicating the last row/column, so any input size works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.heads.base import DecodeHead
from fcnseg.models.protocol import FCN_VARIANTS, UpsampleMode, fcn_variant, upsample_mode
from fcnseg.models.shell import SegmentationShell

#: Feature maps each FCN variant fuses, coarse to fine (paper section 4.2; "4s" one step further).
FCN_VARIANT_STREAMS: dict[str, tuple[str, ...]] = {
    "fcn32s": ("s32",),
    "fcn16s": ("s32", "s16"),
    "fcn8s": ("s32", "s16", "s8"),
    "fcn4s": ("s32", "s16", "s8", "s4"),
}
#: The variant a head gets when the caller names none.
DEFAULT_VARIANT = "fcn8s"
#: The paper stage whose solver the `paper` preset uses for each variant; FCN-4s, which the paper
#: does not have, takes its finest stage's.
FCN_PAPER_STAGES: dict[str, str] = {
    "fcn32s": "fcn32s",
    "fcn16s": "fcn16s",
    "fcn8s": "fcn8s",
    "fcn4s": "fcn8s",
}

#: Knots always appended by KnotUpsample: backbones give at least ceil(size / stride) features,
#: which need at most one extra knot; 2 also covers floor-size features.
_MIN_KNOT_PAD: int = 2


def tent_kernel_1d(factor: int) -> Tensor:
    """Length 2f-1 weights 1 - |x - (f-1)| / f: linear interpolation between knots f apart.

    With stride f, input sample i contributes 1 at output i*f + f-1 and fades linearly to 0 at
    the neighbouring knots, so the output is the piecewise-linear interpolant of the samples.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    offsets = torch.arange(2 * factor - 1, dtype=torch.float64) - (factor - 1)
    return (1.0 - offsets.abs() / factor).to(torch.float32)


class KnotUpsample(nn.Module):
    """Upsample by an integer factor so that input pixel i lands on output pixel i*factor.

    Modes: "deconv_frozen" (per-class transposed convolution with the tent kernel, frozen: the FCN
    release keeps its upsampling fixed), "deconv_learnable" (same initialisation, trained, as the
    paper allows for the 2x fusion layers) and "bilinear" (F.interpolate on the same knots; no
    parameters, identical output to the frozen deconv). The deconvolution is depthwise: the
    bilinear initialisation is diagonal anyway, and a dense C x C kernel would cost C times more.
    """

    def __init__(self, channels: int, factor: int, mode: UpsampleMode = "deconv_frozen") -> None:
        super().__init__()
        mode = upsample_mode(mode)
        if factor < 1:
            raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
        self.factor = factor
        self.mode = mode
        self.deconv: nn.ConvTranspose2d | None = None
        if mode != "bilinear" and factor > 1:
            size = 2 * factor - 1
            self.deconv = nn.ConvTranspose2d(
                channels, channels, size, stride=factor, groups=channels, bias=False
            )
            line = tent_kernel_1d(factor)
            with torch.no_grad():
                self.deconv.weight.copy_(torch.outer(line, line).expand(channels, 1, size, size))
            self.deconv.weight.requires_grad_(mode == "deconv_learnable")

    def forward(self, x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """Upsample `x` and crop to `size` (height, width): knots i*factor, replicate border."""
        # No int(): kept as traced sizes, the crops below stay symbolic in ONNX/TorchScript.
        height, width = size[0], size[1]
        factor = self.factor
        # Knots needed: the last output pixel (size-1) must lie at or before the last knot.
        # Always pad (at least _MIN_KNOT_PAD knots): knots beyond the needed ones only reach
        # outputs past the crop, so the result is unchanged, and a traced graph has no
        # size-dependent branch (export stays correct at every size; fcnseg.export checks it).
        pad_h = max(math.ceil((int(height) - 1) / factor) - (x.shape[-2] - 1), _MIN_KNOT_PAD)
        pad_w = max(math.ceil((int(width) - 1) / factor) - (x.shape[-1] - 1), _MIN_KNOT_PAD)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if factor == 1:
            return x[..., :height, :width]
        if self.deconv is None:
            knots_h, knots_w = x.shape[-2], x.shape[-1]
            x = F.interpolate(
                x,
                size=((knots_h - 1) * factor + 1, (knots_w - 1) * factor + 1),
                mode="bilinear",
                align_corners=True,
            )
            return x[..., :height, :width]
        offset = factor - 1
        return self.deconv(x)[..., offset : offset + height, offset : offset + width]


class ScoreBranch(nn.Module):
    """Scores one feature map: optional 3x3 conv+BN+ReLU block, then a 1x1 class scorer.

    `head_channels=0` is the paper's direct 1x1 scoring; a small block helps thin modern
    features (e.g. 40 channels at stride 8) that were never trained to be linearly separable.
    `zero_init` makes a skip branch contribute nothing at first (paper: "zero-initialized").
    """

    def __init__(
        self, in_channels: int, num_classes: int, head_channels: int = 0, zero_init: bool = False
    ) -> None:
        super().__init__()
        if head_channels < 0:
            raise ModelOptionError(f"head_channels must be >= 0, got {head_channels}")
        self.block: nn.Module = nn.Identity()
        if head_channels > 0:
            self.block = nn.Sequential(
                nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(head_channels),
                nn.ReLU(inplace=True),
            )
            in_channels = head_channels
        self.score = nn.Conv2d(in_channels, num_classes, 1)
        if zero_init:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.block(x))


class FCNHead(DecodeHead):
    """Coarse-to-fine skip fusion over backbone features (`score_fr`, `score_s16`, ...).

    Each finer stream adds a zero-initialised score to the coarser fused score upsampled to its
    resolution (`upscore_s16`, ...); atrous stages with equal strides fuse without upsampling.
    `upscore_final` brings the finest fused score to the requested size. The sub-module names
    are the state-dict keys of the shipped CamVid weights: never rename them.
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        variant: str = DEFAULT_VARIANT,
        head_channels: int = 0,
        upsample: UpsampleMode = "deconv_frozen",
    ) -> None:
        variant = fcn_variant(variant)
        super().__init__(
            channels,
            strides,
            num_classes,
            FCN_VARIANT_STREAMS[variant],
            who=variant,
            hint="choose a coarser variant",
        )
        self.streams = self.in_features
        self.variant = variant
        self.score_fr = ScoreBranch(channels["s32"], num_classes, head_channels)
        previous = "s32"
        for name in self.streams[1:]:
            factor, remainder = divmod(strides[previous], strides[name])
            if remainder or factor < 1:
                raise ValueError(
                    f"feature {name} (stride {strides[name]}) is not an integer refinement of "
                    f"{previous} (stride {strides[previous]})"
                )
            self.add_module(
                f"score_{name}",
                ScoreBranch(channels[name], num_classes, head_channels, zero_init=True),
            )
            self.add_module(f"upscore_{name}", KnotUpsample(num_classes, factor, upsample))
            previous = name
        self.output_stride = strides[previous]
        self.upscore_final = KnotUpsample(num_classes, self.output_stride, upsample)

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """Each stream's 1x1 class scorer and every class-wide upsampling deconvolution (absent
        in "bilinear" mode, which has no parameters); the 3x3 blocks before the scorers are not
        class-shaped and transfer to other classes."""
        scorers = [f"score_{name}.score" for name in self.streams[1:]]
        upsamplers = [f"upscore_{name}" for name in self.streams[1:]] + ["upscore_final"]
        deconvs = [
            f"{name}.deconv" for name in upsamplers if getattr(self, name).deconv is not None
        ]
        return ("score_fr.score", *scorers, *deconvs)

    def forward(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        score = self.score_fr(features["s32"])
        for name in self.streams[1:]:
            skip = getattr(self, f"score_{name}")(features[name])
            score = getattr(self, f"upscore_{name}")(score, skip.shape[-2:]) + skip
        return self.upscore_final(score, out_size)


class SkipFCN(SegmentationShell):
    """The segmentation shell with the FCN skip head: what every `fcn*s_<encoder>` name builds.

    Nothing but a name over the shell: exported files record the class (ONNX metadata
    `model_name`), and "SkipFCN" is what the shipped CamVid models have always been called.
    """

    head: FCNHead

    @property
    def variant(self) -> str:
        """The FCN variant of the head ("fcn32s" .. "fcn4s")."""
        return self.head.variant


def fcn_name_prefix(options: Mapping[str, Any]) -> str:
    """The registered-name prefix of an FCN head built with `options` ("fcn8s" by default)."""
    return fcn_variant(options.get("variant", DEFAULT_VARIANT))


#: Registered-name prefix -> head options, one per variant (fcn32s_<encoder>, ...).
FCN_PRESETS: dict[str, dict[str, Any]] = {variant: {"variant": variant} for variant in FCN_VARIANTS}
