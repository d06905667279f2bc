"""The paper's FCN (`PaperFCN`): encoder -> fc layers as convolutions -> score -> skips -> upsample.

One class builds every net of the release (VGG16 FCN-32s / 16s / 8s / 8s-at-once, AlexNet as
CaffeNet and torchvision's, GoogLeNet FCN-32s; their builders and registered names are in
`fcnseg.models.paper_nets`); a variant is only (a) which pooling layers feed skips and (b)
whether the skips are pre-scaled ("at once" training). Layer names follow the authors' Caffe
release (fc6, score_fr, upscore2, score_pool4, ...), so converted Caffe weights load by name and
a coarser stage's weights carry into a finer one by name (`engine.setup.initialise_from`).

Every fused map is aligned by cropping with an offset derived at construction from the layers'
kernels, strides and paddings (`fcnseg.models.geometry`), exactly as Caffe's coord_map does; the
paper-exact nets reproduce the release's offsets (19; 5, 27; 5, 9, 31).

"Padded" variants drop the 100-pixel padding of conv1_1 and pad fc6 by 3 instead: cheaper (no
198 extra rows and columns through VGG16), any input size, same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from fcnseg.constants import FCN_ATONCE_POOL3_SCALE, FCN_ATONCE_POOL4_SCALE
from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.backbones.vgg import SequentialEncoder
from fcnseg.models.geometry import (
    CoordMap,
    aligned_upsample,
    layer_map,
    path_map,
    whole_factor,
)
from fcnseg.models.protocol import NORMALIZATIONS, UpsampleMode, upsample_mode

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


def _crop(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    return x[..., top : top + height, left : left + width]


def _check_options(num_classes: int, normalization: str, skips: Sequence[str]) -> None:
    """One-line ModelOptionError for a class count, normalisation or skip no net can have."""
    if num_classes < 1:
        raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
    if normalization not in NORMALIZATIONS:
        raise ModelOptionError(
            f"normalization={normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
        )
    unknown = [skip for skip in skips if skip not in SKIP_TAPS]
    if unknown:
        raise ModelOptionError(f"skips {unknown} unknown; choose from {', '.join(SKIP_TAPS)}")


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
        _check_options(num_classes, normalization, skips)
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
        current = path_map(
            [*(layer for _, layer in head), self.score_fr], start=encoder.tap_map(DEEPEST)
        )
        self.steps: list[FuseStep] = []
        for skip in skips:
            current = self._add_skip(skip, (skip_scales or {}).get(skip, 1.0), current)
        self._add_final_upsample(current)
        for name in ("score_fr", *(f"score_{skip}" for skip in skips)):
            # Paper section 4.1: zero-initialising the class scoring layers is sufficient; for
            # the skips it also makes a finer net start out with the coarser net's scores
            # (only its bilinear upsampling path differs: x2 then x16 is not one x32).
            nn.init.zeros_(getattr(self, name).weight)
            nn.init.zeros_(getattr(self, name).bias)

    def _add_skip(self, skip: str, scale: float, current: CoordMap) -> CoordMap:
        """Add `score_<skip>` and the upsampler of the running score to it; the fused map.

        The upsampler is named after the previous skip (`upscore2` for the first, then
        `upscore_pool4`, as in the release) and aligned to the skip's score by a whole-pixel crop.
        """
        tap = SKIP_TAPS[skip]
        score = nn.Conv2d(self.encoder.channels[tap], self.num_classes, 1)
        self.add_module(f"score_{skip}", score)
        skip_map = path_map([score], start=self.encoder.tap_map(tap))
        factor = whole_factor(current.stride / skip_map.stride, f"stride ratio to {skip}")
        up_name = f"upscore_{self.steps[-1].skip}" if self.steps else "upscore2"
        up, offset = aligned_upsample(
            self.num_classes, factor, self.upsample_mode, current, skip_map, f"crop of score_{skip}"
        )
        self.add_module(up_name, up)
        self.steps.append(FuseStep(skip, tap, scale, up_name, offset))
        return current.then(layer_map(up)) if offset >= 0 else skip_map

    def _add_final_upsample(self, current: CoordMap) -> None:
        """Add the upsampler to image resolution (`upscore`, or `upscore8`/`upscore16` after
        skips) and the crop offset that aligns its output with the input image."""
        factor = whole_factor(current.stride, "final upsampling factor")
        self.final_upsample = "upscore" if not self.steps else f"upscore{factor}"
        final, offset = aligned_upsample(
            self.num_classes, factor, self.upsample_mode, current, CoordMap(), "output crop"
        )
        self.add_module(self.final_upsample, final)
        self.final_offset = -offset
        if self.final_offset < 0:
            raise ModelOptionError(
                f"output map starts {-self.final_offset} px inside the image; pad the first "
                "convolution more so the output covers the input"
            )

    @property
    def crop_offsets(self) -> dict[str, int]:
        """Caffe crop offsets by fused map ("pool4", "pool3") and "final" (for inspection)."""
        return {**{step.skip: step.offset for step in self.steps}, "final": self.final_offset}

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The class scorers (`score_fr`, `score_<skip>`) and the class-wide upsamplers
        (`upscore2`, `upscore_<skip>`, the final one): what fine-tuning on other classes
        re-initialises (engine/transfer.py); the encoder and fc layers transfer."""
        scorers = [f"score_{step.skip}" for step in self.steps]
        upsamplers = [step.upsample for step in self.steps]
        return ("score_fr", *scorers, *upsamplers, self.final_upsample)

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
