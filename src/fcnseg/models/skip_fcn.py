"""The FCN skip head on any backbone (`SkipFCN`): FCN-32s, -16s, -8s and -4s as one class.

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

import functools
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.protocol import UpsampleMode, fcn_variant, upsample_mode
from fcnseg.models.registry import register_model
from fcnseg.models.weights import Pretrained

#: Feature maps each FCN variant fuses, coarse to fine (paper section 4.2; "4s" one step further).
FCN_VARIANT_STREAMS: dict[str, tuple[str, ...]] = {
    "fcn32s": ("s32",),
    "fcn16s": ("s32", "s16"),
    "fcn8s": ("s32", "s16", "s8"),
    "fcn4s": ("s32", "s16", "s8", "s4"),
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
    release keeps its upsampling fixed), "learnable" (same initialisation, trained, as the paper
    allows for the 2x fusion layers, "deconv_learnable") and "bilinear" (F.interpolate on the same knots; no
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


class FCNHead(nn.Module):
    """Coarse-to-fine skip fusion over backbone features (`score_fr`, `score_s16`, ...).

    Each finer stream adds a zero-initialised score to the coarser fused score upsampled to its
    resolution (`upscore_s16`, ...); atrous stages with equal strides fuse without upsampling.
    `upscore_final` brings the finest fused score to the input size.
    """

    def __init__(
        self,
        channels: dict[str, int],
        strides: dict[str, int],
        num_classes: int,
        variant: str = "fcn8s",
        head_channels: int = 0,
        upsample: UpsampleMode = "deconv_frozen",
    ) -> None:
        super().__init__()
        variant = fcn_variant(variant)
        if num_classes < 1:
            raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
        self.streams = FCN_VARIANT_STREAMS[variant]
        missing = [name for name in self.streams if name not in channels]
        if missing:
            raise ModelOptionError(
                f"{variant} needs backbone features {missing} that this backbone lacks "
                f"(it has {sorted(channels)}); choose a coarser variant"
            )
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

    def forward(self, features: dict[str, Tensor], size: tuple[int, int] | torch.Size) -> Tensor:
        score = self.score_fr(features["s32"])
        for name in self.streams[1:]:
            skip = getattr(self, f"score_{name}")(features[name])
            score = getattr(self, f"upscore_{name}")(score, skip.shape[-2:]) + skip
        return self.upscore_final(score, size)


class SkipFCN(nn.Module):
    """Backbone + FCN skip head: normalised N x 3 x H x W images -> N x C x H x W logits."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        variant: str = "fcn8s",
        head_channels: int = 0,
        upsample: UpsampleMode = "deconv_frozen",
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not input_scale > 0:
            raise ModelOptionError(f"input_scale must be a positive factor, got {input_scale}")
        self.backbone = backbone
        self.head = FCNHead(
            backbone.channels, backbone.strides, num_classes, variant, head_channels, upsample
        )
        self.num_classes = num_classes
        self.variant = self.head.variant
        #: Input preset the encoder weights expect (see fcnseg.data.transforms.normalize).
        self.normalization: str = backbone.normalization
        #: A single-tensor output (see fcnseg.models.protocol.SegmentationModel).
        self.head_classes: dict[str, int] = {}
        #: Input channels; early fusion (fcnseg.models.fusion.expand_input_channels) raises it.
        self.in_channels: int = 3
        #: Inputs are zero-padded (the mean colour, after normalisation) at the bottom/right to a
        #: multiple of the output stride and the logits cropped back. Why: encoders with
        #: TF-"same" padding (EfficientNet-Lite) place their stride-2 samples differently when a
        #: stage's size is odd, so a net trained on crops that are multiples of 32 is misaligned
        #: by a fraction of a stride at other sizes; on CamVid val (360 rows) this padding was
        #: worth +6 mean IU points (benchmarks/RESULTS.md). Set to 1 to disable.
        self.pad_multiple: int = backbone.output_stride
        #: The net runs on the input resized by this factor and its logits are resized back, so
        #: predictions stay at the caller's resolution. Why: thin structures (CamVid's poles are
        #: 1-3 px wide at 360x480) vanish at a stride-4 head; seen larger they survive. Training
        #: crops are resized by the same factor inside the net, so train and test agree (a 224x288
        #: crop at 1.5 costs what a 336x432 crop costs at 1.0).
        self.input_scale: float = float(input_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.score_features(self.trunk_features(x), x)

    @property
    def trunk_module_names(self) -> tuple[str, ...]:
        """Children computing `trunk_features`; the heads of a multi-head net share them."""
        return ("backbone",)

    def trunk_features(self, x: Tensor) -> tuple[dict[str, Tensor], torch.Size, torch.Size]:
        """(backbone features, padded size, scaled size) of `x`: what no class count shapes."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"SkipFCN expects a normalised N x {self.in_channels} x H x W batch, "
                f"got shape {tuple(x.shape)}"
            )
        if self.input_scale != 1.0:
            x = F.interpolate(
                x,
                scale_factor=self.input_scale,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
        padded = pad_to_multiple(x, self.pad_multiple)
        return self.backbone(padded), padded.shape[-2:], x.shape[-2:]

    def score_features(
        self, shared: tuple[dict[str, Tensor], torch.Size, torch.Size], x: Tensor
    ) -> Tensor:
        """The logits of `x` from `trunk_features(x)` (see fcnseg.models.multihead)."""
        features, padded_size, (scaled_height, scaled_width) = shared
        height, width = x.shape[-2:]
        logits = self.head(features, padded_size)
        logits = logits[..., :scaled_height, :scaled_width]
        if self.input_scale != 1.0:
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        return logits


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "constant") -> Tensor:
    """Pad the bottom/right of an N x C x H x W batch so H and W are multiples of `multiple`.

    "constant" pads zeros, which after normalisation is the mean colour. Callers crop their
    output back to the input's size.
    """
    height, width = x.shape[-2:]
    pad_bottom = (multiple - height % multiple) % multiple
    pad_right = (multiple - width % multiple) % multiple
    return F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode)


# --- Registry -------------------------------------------------------------------------------


def build_fcn(
    num_classes: int,
    *,
    encoder: str,
    variant: str = "fcn8s",
    pretrained: Pretrained = True,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    upsample: UpsampleMode = "deconv_frozen",
    head_channels: int = 0,
    timm_name: str | None = None,
    input_scale: float = 1.0,
    **unexpected: Any,
) -> SkipFCN:
    """Builder behind every `fcn*_<encoder>` registry entry (see SkipFCN and FCNHead)."""
    name = f"{fcn_variant(variant)}_{encoder}"
    if unexpected:
        raise ModelOptionError(f"{name}: unknown option(s) {sorted(unexpected)}")
    backbone = build_backbone(
        encoder,
        pretrained=pretrained,
        encoder_weights=encoder_weights,
        output_stride=output_stride,
        timm_name=timm_name,
        model_name=name,
    )
    return SkipFCN(backbone, num_classes, variant, head_channels, upsample, input_scale)


#: The paper stage whose solver the `paper` preset uses for each variant; FCN-4s, which the paper
#: does not have, takes its finest stage's.
_PAPER_STAGE = {"fcn32s": "fcn32s", "fcn16s": "fcn16s", "fcn8s": "fcn8s", "fcn4s": "fcn8s"}


def _register_all() -> None:
    """Register fcn{32,16,8,4}s for every named backbone, plus the generic timm entries."""
    for encoder, entry in BACKBONES.items():
        for variant in FCN_VARIANT_STREAMS:
            if encoder == "timm":
                register_model(
                    f"{variant}_timm",
                    description=f"{variant} skip head on any timm features_only model (timm_name=...)",
                    family="fcn-timm",
                    paper_stage=_PAPER_STAGE[variant],
                    encoder="timm",
                    variant=variant,
                    pretrained=False,
                    timm_name="convnext_atto",
                )(build_fcn)
                continue
            register_model(
                f"{variant}_{encoder}",
                description=f"{variant} skip head on {entry.description}",
                family=f"fcn-{encoder}",
                weights_available=functools.partial(entry.weights_available, encoder),
                paper_stage=_PAPER_STAGE[variant],
                encoder=encoder,
                variant=variant,
            )(build_fcn)


_register_all()
