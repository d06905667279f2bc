"""The paper's FCNs: VGG16 FCN-32s / 16s / 8s / 8s-at-once, AlexNet (CaffeNet as released, and
torchvision's) and GoogLeNet FCN-32s.

One class, `PaperFCN`, builds every variant; a variant is only (a) which pooling layers feed skips
and (b) whether the skips are pre-scaled ("at once" training). Layer names follow the authors'
Caffe release (fc6, score_fr, upscore2, score_pool4, ...), so converted Caffe weights load by
name and `init_finer_from_coarser` carries a coarser stage into a finer one.

Every fused map is aligned by cropping with an offset derived at construction from the layers'
kernels, strides and paddings (`fcnseg.models.geometry`), exactly as Caffe's coord_map does; the
paper-exact nets reproduce the release's offsets (19; 5, 27; 5, 9, 31).

"Padded" variants drop the 100-pixel padding of conv1_1 and pad fc6 by 3 instead: cheaper (no
198 extra rows and columns through VGG16), any input size, same weights.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.constants import (
    CAFFENET_FC6_KERNEL,
    FCN_ATONCE_POOL3_SCALE,
    FCN_ATONCE_POOL4_SCALE,
    FCN_DROPOUT,
    FCN_FC6_KERNEL,
    FCN_FC_CHANNELS,
)
from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.backbones.vgg import (
    SequentialEncoder,
    alexnet_encoder,
    caffenet_encoder,
    googlenet_encoder,
    vgg16_encoder,
)
from fcnseg.models.geometry import (
    BilinearResize,
    CoordMap,
    integer_crop_offset,
    layer_map,
    path_map,
)
from fcnseg.models.protocol import NORMALIZATIONS, UpsampleMode, fcn_variant, upsample_mode
from fcnseg.models.registry import register_model
from fcnseg.models.surgery import (
    bilinear_kernel_size,
    load_classifier_weights,
    make_bilinear_upsample,
)

#: The variants the release has for VGG16 (no stride-4 map to fuse in VGG's pools).
PAPER_VARIANTS: tuple[str, ...] = ("fcn32s", "fcn16s", "fcn8s")
#: Caffe names of the pooling layers that feed skips -> the encoder's stride key for them.
SKIP_TAPS: dict[str, str] = {"pool4": "s16", "pool3": "s8"}
#: Which skips each paper variant fuses, coarse to fine (paper section 4.2, Figure 3).
VARIANT_SKIPS: dict[str, tuple[str, ...]] = {
    "fcn32s": (),
    "fcn16s": ("pool4",),
    "fcn8s": ("pool4", "pool3"),
}
#: "At once" FCN-8s scales each skip's features before scoring (constants.py has the source).
ATONCE_SCALES: dict[str, float] = {
    "pool4": FCN_ATONCE_POOL4_SCALE,
    "pool3": FCN_ATONCE_POOL3_SCALE,
}
#: Stride key of the deepest encoder map, the input of fc6 / score_fr.
DEEPEST = "s32"


def make_upsample(
    channels: int, factor: int, mode: UpsampleMode, size: int | None = None
) -> nn.Module:
    """An upsampling-by-`factor` layer: bilinear deconvolution (frozen or learnable) or resize."""
    mode = upsample_mode(mode)
    if mode == "bilinear":
        return BilinearResize(factor)
    if mode in ("deconv_frozen", "deconv_learnable"):
        learnable = mode == "deconv_learnable"
        return make_bilinear_upsample(channels, factor, learnable=learnable, size=size)
    raise AssertionError(mode)  # upsample_mode() admits nothing else


def aligned_upsample(
    channels: int,
    factor: int,
    mode: UpsampleMode,
    source: CoordMap,
    target: CoordMap,
    what: str,
) -> tuple[nn.Module, int]:
    """An upsampler from `source` whose output aligns with `target` by a whole-pixel crop.

    The standard kernel 2f - f mod 2 is tried first; if it leaves a half-pixel misalignment the
    next smaller (odd/even) kernel shifts the centre by half a pixel, which is exactly why the
    authors' AlexNet FCN upsamples with a 63 kernel rather than 64. Returns the layer and the
    crop offset of `target` relative to it (see `integer_crop_offset`).
    """
    standard = bilinear_kernel_size(factor)
    sizes = [None] if mode == "bilinear" else [standard, standard - 1]
    error: ValueError | None = None
    for size in sizes:
        layer = make_upsample(channels, factor, mode, size)
        try:
            return layer, integer_crop_offset(target, source.then(layer_map(layer)), what)
        except ValueError as exc:
            error = exc
    if mode == "bilinear":
        raise ModelOptionError(
            f"{what}: upsample='bilinear' cannot align this net by whole-pixel crops (its "
            "geometry is off by half a pixel); use upsample='deconv_frozen'"
        )
    assert error is not None
    raise error


def _whole(value: Fraction, what: str) -> int:
    if value.denominator != 1 or value < 1:
        raise ModelOptionError(f"{what} is {value}, not a whole upsampling factor")
    return int(value)


def _crop(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    return x[..., top : top + height, left : left + width]


@dataclass(frozen=True)
class FuseStep:
    """One skip fusion: upsample the running score by `upsample`, add the scored `skip`.

    `offset` is Caffe's crop offset of the skip's score map (where the upsampled map's pixel 0
    lies in it); negative when the upsampled map is the larger one and is cropped instead.
    """

    skip: str
    tap: str
    scale: float
    upsample: str
    offset: int


class PaperFCN(nn.Module):
    """The authors' fully convolutional net: encoder -> fc layers as convs -> score -> skips -> upsample.

    Args:
        encoder: chain of layers with taps "s32" (and "s16"/"s8" for skips).
        head: (name, layer) pairs between the encoder's "s32" map and `score_fr` (fc6, relu6,
            drop6, fc7, ... for VGG16/AlexNet; a dropout for GoogLeNet).
        head_channels: channels entering `score_fr`.
        num_classes: number of output classes.
        skips: pooling layers fused, coarse to fine, e.g. ("pool4", "pool3") for FCN-8s.
        skip_scales: multiplier of each skip's features before scoring (at-once training).
        upsample: "deconv_frozen" (the paper's bilinear deconvolutions, not trained),
            "deconv_learnable", or "bilinear" (interpolation, no parameters).
        fc_sources: fc layer name -> torchvision classifier Linear prefix it is transplanted from.
    """

    def __init__(
        self,
        encoder: SequentialEncoder,
        head: Sequence[tuple[str, nn.Module]],
        head_channels: int,
        num_classes: int,
        *,
        skips: Sequence[str] = (),
        skip_scales: dict[str, float] | None = None,
        upsample: UpsampleMode = "deconv_frozen",
        fc_sources: dict[str, str] | None = None,
        normalization: str = "imagenet",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
        if normalization not in NORMALIZATIONS:
            raise ModelOptionError(
                f"normalization={normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        unknown = [skip for skip in skips if skip not in SKIP_TAPS]
        if unknown:
            raise ModelOptionError(f"skips {unknown} unknown; choose from {', '.join(SKIP_TAPS)}")
        upsample = upsample_mode(upsample)
        self.num_classes = num_classes
        self.normalization = normalization
        self.in_channels: int = 3
        self.head_classes: dict[str, int] = {}
        self.upsample_mode = upsample
        self.fc_sources = dict(fc_sources or {})
        self.encoder = encoder
        #: Caffe names of the layers between the encoder and score_fr (fc6, relu6, ...).
        self.fc_layer_names = [name for name, _ in head]
        for name, layer in head:
            self.add_module(name, layer)
        self.score_fr = nn.Conv2d(head_channels, num_classes, 1)
        skip_scales = skip_scales or {}

        current = path_map(
            [*(layer for _, layer in head), self.score_fr], start=encoder.tap_map(DEEPEST)
        )
        self.steps: list[FuseStep] = []
        previous = None
        for skip in skips:
            tap = SKIP_TAPS[skip]
            score = nn.Conv2d(encoder.channels[tap], num_classes, 1)
            self.add_module(f"score_{skip}", score)
            skip_map = path_map([score], start=encoder.tap_map(tap))
            factor = _whole(current.stride / skip_map.stride, f"stride ratio to {skip}")
            up_name = "upscore2" if previous is None else f"upscore_{previous}"
            up, offset = aligned_upsample(
                num_classes, factor, upsample, current, skip_map, f"crop of score_{skip}"
            )
            self.add_module(up_name, up)
            up_map = current.then(layer_map(up))
            self.steps.append(FuseStep(skip, tap, skip_scales.get(skip, 1.0), up_name, offset))
            current = up_map if offset >= 0 else skip_map
            previous = skip
        factor = _whole(current.stride, "final upsampling factor")
        self.final_upsample = "upscore" if not skips else f"upscore{factor}"
        final, offset = aligned_upsample(
            num_classes, factor, upsample, current, CoordMap(), "output crop"
        )
        self.add_module(self.final_upsample, final)
        self.final_offset = -offset
        if self.final_offset < 0:
            raise ModelOptionError(
                f"output map starts {-self.final_offset} px inside the image; pad the first "
                "convolution more so the output covers the input"
            )
        for name in ("score_fr", *(f"score_{skip}" for skip in skips)):
            # Paper section 4.1: zero-initialising the class scoring layers is sufficient; for
            # the skips it also makes a finer net start out with the coarser net's scores
            # (only its bilinear upsampling path differs: x2 then x16 is not one x32).
            nn.init.zeros_(getattr(self, name).weight)
            nn.init.zeros_(getattr(self, name).bias)

    @property
    def crop_offsets(self) -> dict[str, int]:
        """Caffe crop offsets by fused map ("pool4", "pool3") and "final" (for inspection)."""
        return {**{step.skip: step.offset for step in self.steps}, "final": self.final_offset}

    @property
    def trunk_module_names(self) -> tuple[str, ...]:
        """Children computing `trunk_features`; the heads of a multi-head net share them."""
        return ("encoder", *self.fc_layer_names)

    def forward_scores(self, x: Tensor) -> dict[str, Tensor]:
        """All score maps: "score_fr", one "fuse_<skip>" per skip, and the final "out"."""
        return self.score_maps(self.trunk_features(x), x.shape[-2], x.shape[-1])

    def score_features(self, features: dict[str, Tensor], x: Tensor) -> Tensor:
        """The output logits from `trunk_features(x)` (see fcnseg.models.multihead)."""
        return self.score_maps(features, x.shape[-2], x.shape[-1])["out"]

    def trunk_features(self, x: Tensor) -> dict[str, Tensor]:
        """The encoder's taps and the fc layers' output ("fc"): what no class count shapes."""
        height, width = x.shape[-2:]
        try:
            features = self.encoder(x)
        except RuntimeError as exc:
            if "too small" not in str(exc):
                raise
            raise DataError(
                f"input {height}x{width} is too small for this encoder ({exc}); use a larger "
                "image or the paper variant (padded=False)"
            ) from exc
        y = features[DEEPEST]
        for name in self.fc_layer_names:
            y = getattr(self, name)(y)
        return {**features, "fc": y}

    def score_maps(self, features: dict[str, Tensor], height: int, width: int) -> dict[str, Tensor]:
        """`forward_scores` from the trunk's features, for an input of `height` x `width`."""
        score = self.score_fr(features["fc"])
        maps = {"score_fr": score}
        for step in self.steps:
            up = getattr(self, step.upsample)(score)
            skip_input = features[step.tap]
            if step.scale != 1.0:
                skip_input = skip_input * step.scale
            skip = getattr(self, f"score_{step.skip}")(skip_input)
            up_start, skip_start = max(-step.offset, 0), max(step.offset, 0)
            fused_h = min(up.shape[-2] - up_start, skip.shape[-2] - skip_start)
            fused_w = min(up.shape[-1] - up_start, skip.shape[-1] - skip_start)
            score = _crop(up, up_start, up_start, fused_h, fused_w) + _crop(
                skip, skip_start, skip_start, fused_h, fused_w
            )
            maps[f"fuse_{step.skip}"] = score
        out = getattr(self, self.final_upsample)(score)
        start = self.final_offset
        if out.shape[-2] - start < height or out.shape[-1] - start < width:
            raise DataError(
                f"input {height}x{width} is too small for this net: its output covers only "
                f"{out.shape[-2] - start}x{out.shape[-1] - start}; use a larger image"
            )
        maps["out"] = _crop(out, start, start, height, width)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_scores(x)["out"]


def _fc_head(
    in_channels: int, kernel: int, padded: bool, width_divisor: int
) -> tuple[list[tuple[str, nn.Module]], int]:
    """fc6 (kernel x kernel conv) and fc7 (1x1), each with ReLU and dropout, as in the release."""
    if padded and kernel % 2 == 0:
        raise ModelOptionError(f"a padded fc6 needs an odd kernel to stay centred, got {kernel}")
    width = FCN_FC_CHANNELS // width_divisor
    fc6 = nn.Conv2d(in_channels, width, kernel, padding=kernel // 2 if padded else 0)
    fc7 = nn.Conv2d(width, width, 1)
    for conv in (fc6, fc7):
        # torchvision initialises its classifier Linear layers this way (VGG._initialize_weights).
        nn.init.normal_(conv.weight, 0.0, 0.01)
        nn.init.zeros_(conv.bias)
    head = [
        ("fc6", fc6),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(FCN_DROPOUT)),
        ("fc7", fc7),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(FCN_DROPOUT)),
    ]
    return head, width


#: torchvision ImageNet weights of each paper encoder, by enum name (used for `pretrained=True`
#: when cached locally, and for the `weights_available` flag of `fcnseg models`).
VGG16_WEIGHTS = "VGG16_Weights.IMAGENET1K_V1"
ALEXNET_WEIGHTS = "AlexNet_Weights.IMAGENET1K_V1"
GOOGLENET_WEIGHTS = "GoogLeNet_Weights.IMAGENET1K_V1"


def _finish(
    model: PaperFCN, encoder_weights: Any, pretrained: bool | str, enum_name: str
) -> PaperFCN:
    """Load the encoder weights the caller named, or resolve the `pretrained` policy.

    `pretrained=True` with no `encoder_weights` uses torchvision's ImageNet checkpoint only if it
    is already in the local torch hub cache (nothing is downloaded implicitly); otherwise it is a
    one-line error saying how to pass a file. `"auto"` falls back to random weights with a
    warning instead; False never loads anything.
    """
    if encoder_weights is None and pretrained:
        if _torchvision_weights_cached(enum_name)():
            encoder_weights = enum_name
        elif pretrained == "auto":
            warnings.warn(
                f"no {enum_name} weights on this machine; the encoder starts from random weights",
                stacklevel=3,
            )
        else:
            raise ModelOptionError(
                f"pretrained=True but no {enum_name} weights are on this machine; pass "
                "encoder_weights=PATH (e.g. model.options.encoder_weights=vgg16.pth), "
                "pretrained='auto' or pretrained=False"
            )
    if encoder_weights is not None:
        load_classifier_weights(model, encoder_weights)
    return model


def _check_variant(variant: str) -> tuple[str, ...]:
    return VARIANT_SKIPS[fcn_variant(variant, PAPER_VARIANTS)]


def fcn_vgg16(
    num_classes: int,
    *,
    variant: str = "fcn8s",
    at_once: bool = False,
    padded: bool = False,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "imagenet",
    width_divisor: int = 1,
) -> PaperFCN:
    """VGG16 FCN-32s/16s/8s (paper Table 2/3) as in the authors' Caffe release.

    Args:
        variant: "fcn32s", "fcn16s" or "fcn8s".
        at_once: scale pool4/pool3 by 0.01/0.0001 before scoring (FCN-8s trained in one stage).
        padded: the cheaper variant without the 100-pixel padding (fc6 padded by 3 instead).
        encoder_weights: torchvision VGG16 weights: a `VGG16_Weights` enum or its name (needs
            internet on first use), a `.pth` / `.safetensors` path, or a state dict.
        pretrained: without `encoder_weights`, True uses torchvision's checkpoint if it is in the
            local hub cache and is an error otherwise; "auto" falls back to random weights.
        normalization: input preset the weights expect: "imagenet" for torchvision weights,
            "caffe_bgr" for weights converted from the Caffe release.
        width_divisor: divide every width (tests: same geometry, little compute).
    """
    skips = _check_variant(variant)
    encoder = vgg16_encoder(padded=padded, width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], FCN_FC6_KERNEL, padded, width_divisor)
    model = PaperFCN(
        encoder,
        head,
        width,
        num_classes,
        skips=skips,
        skip_scales=ATONCE_SCALES if at_once else None,
        upsample=upsample,
        fc_sources={"fc6": "classifier.0", "fc7": "classifier.3"},
        normalization=normalization,
    )
    return _finish(model, encoder_weights, pretrained, VGG16_WEIGHTS)


def fcn32s_alexnet(
    num_classes: int,
    *,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "imagenet",
    width_divisor: int = 1,
) -> PaperFCN:
    """AlexNet FCN-32s (paper Table 1) on torchvision's AlexNet, fc6 as a 6x6 convolution."""
    encoder, fc6_kernel = alexnet_encoder(width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], fc6_kernel, False, width_divisor)
    model = PaperFCN(
        encoder,
        head,
        width,
        num_classes,
        upsample=upsample,
        fc_sources={"fc6": "classifier.1", "fc7": "classifier.4"},
        normalization=normalization,
    )
    return _finish(model, encoder_weights, pretrained, ALEXNET_WEIGHTS)


def fcn32s_caffenet(
    num_classes: int,
    *,
    upsample: UpsampleMode = "deconv_frozen",
    pretrained: bool | str = False,
    normalization: str = "caffe_bgr",
    width_divisor: int = 1,
) -> PaperFCN:
    """AlexNet FCN-32s exactly as the release's voc-fcn-alexnet (CaffeNet layout, 6x6 fc6).

    The upsampling kernel is derived, not written down: `aligned_upsample` finds that the
    standard 64 leaves the output half a pixel off and takes 63, the release's kernel, with the
    release's crop offset (18). Weights come from the release's caffemodel (`fcnseg
    import-caffe --release voc-fcn-alexnet`); torchvision has no CaffeNet, so `pretrained=True`
    is an error naming that command and "auto" starts from random weights with a warning.
    Normalisation defaults to "caffe_bgr" because every CaffeNet weight file is Caffe's.
    """
    if pretrained and pretrained != "auto":
        raise ModelOptionError(
            "fcn32s_caffenet has no torchvision ImageNet weights; convert the release's "
            "caffemodel with `fcnseg import-caffe --release voc-fcn-alexnet` and pass it as "
            "model.init, or use pretrained=False"
        )
    if pretrained == "auto":
        warnings.warn("no CaffeNet ImageNet weights; the encoder starts random", stacklevel=2)
    encoder = caffenet_encoder(width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], CAFFENET_FC6_KERNEL, False, width_divisor)
    return PaperFCN(
        encoder, head, width, num_classes, upsample=upsample, normalization=normalization
    )


def fcn32s_googlenet(
    num_classes: int,
    *,
    padded: bool = False,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "tf_lite",
    width_divisor: int = 1,
) -> PaperFCN:
    """GoogLeNet FCN-32s (paper Table 1): score the last inception output, no average pooling.

    The default normalisation is "tf_lite" because torchvision's GoogLeNet weights were ported
    from TensorFlow and expect inputs in [-1, 1] (torchvision rescales ImageNet-normalised input
    to that range with `transform_input`); here the data pipeline does it directly.
    """
    encoder, dropout = googlenet_encoder(padded=padded, width_divisor=width_divisor)
    model = PaperFCN(
        encoder,
        [("dropout", nn.Dropout(dropout))],
        encoder.channels[DEEPEST],
        num_classes,
        upsample=upsample,
        normalization=normalization,
    )
    return _finish(model, encoder_weights, pretrained, GOOGLENET_WEIGHTS)


def _torchvision_weights_cached(enum_name: str):
    """A `weights_available` check: is the torchvision checkpoint in the local hub cache?"""

    def available() -> bool:
        import torchvision

        url = torchvision.models.get_weight(enum_name).url
        return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", url.split("/")[-1]))

    return available


_VGG_WEIGHTS = _torchvision_weights_cached(VGG16_WEIGHTS)
for _variant in VARIANT_SKIPS:
    for _padded in (False, True):
        _suffix = "_padded" if _padded else ""
        _what = "cheaper, no 100-px padding" if _padded else "paper-exact, Caffe release geometry"
        register_model(
            f"{_variant}_vgg16{_suffix}",
            description=f"VGG16 {_variant.upper().replace('FCN', 'FCN-')} ({_what})",
            family="fcn-paper",
            weights_available=_VGG_WEIGHTS,
            paper_stage=_variant,
            release_solver=f"voc-{_variant}",
            variant=_variant,
            padded=_padded,
        )(fcn_vgg16)
for _padded in (False, True):
    _suffix = "_padded" if _padded else ""
    register_model(
        f"fcn8s_atonce_vgg16{_suffix}",
        description="VGG16 FCN-8s trained at once (skips pre-scaled by 0.01 / 0.0001)"
        + (", no 100-px padding" if _padded else ""),
        family="fcn-paper",
        weights_available=_VGG_WEIGHTS,
        paper_stage="fcn8s_atonce",
        release_solver="voc-fcn8s-atonce",
        variant="fcn8s",
        at_once=True,
        padded=_padded,
    )(fcn_vgg16)
register_model(
    "fcn32s_alexnet",
    description="AlexNet FCN-32s (paper Table 1), torchvision AlexNet definition",
    family="fcn-paper",
    weights_available=_torchvision_weights_cached(ALEXNET_WEIGHTS),
    paper_stage="fcn32s",
    release_solver="voc-fcn-alexnet",
)(fcn32s_alexnet)
register_model(
    "fcn32s_caffenet",
    description="AlexNet FCN-32s as the release's voc-fcn-alexnet (CaffeNet: LRN, groups, 6x6 fc6)",
    family="fcn-paper",
    paper_stage="fcn32s",
    release_solver="voc-fcn-alexnet",
)(fcn32s_caffenet)
register_model(
    "fcn32s_googlenet",
    description="GoogLeNet FCN-32s (paper Table 1), last inception output scored",
    family="fcn-paper",
    weights_available=_torchvision_weights_cached(GOOGLENET_WEIGHTS),
    paper_stage="fcn32s",
)(fcn32s_googlenet)
