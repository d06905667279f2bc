"""Decode heads and the head table that registration walks.

A head (`base.DecodeHead`) turns named backbone features into class scores; the segmentation
shell (`fcnseg.models.shell`) runs it behind any backbone. `HEADS` says which heads exist and
under which names: `fcnseg.models.segmenters` registers every row on every backbone of
`fcnseg.models.backbones.BACKBONES` (`fcn8s_resnet18`, `fpnlite_efficientnet_lite0`,
`unet_mobilenet_v2`, ...).
Adding a head is one `DecodeHead` subclass plus one row here (docs/architecture.md, "How to add
a decode head").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fcnseg.constants import PSPNET_OUTPUT_STRIDE
from fcnseg.models.heads.aspp import ASPP_ENCODERS, ASPP_PRESETS, ASPPHead
from fcnseg.models.heads.base import DecodeHead, require_features
from fcnseg.models.heads.fcn import (
    FCN_PAPER_STAGES,
    FCN_PRESETS,
    FCNHead,
    SkipFCN,
    fcn_name_prefix,
)
from fcnseg.models.heads.fpn_lite import FPNLiteHead
from fcnseg.models.heads.linknet import LinkNetHead
from fcnseg.models.heads.psp import PSPHead
from fcnseg.models.heads.unet import UNetHead
from fcnseg.models.shell import SegmentationShell


@dataclass(frozen=True)
class HeadRow:
    """One decode head: its class and the names it is registered under on each backbone.

    `head(channels, strides, num_classes, **options)` builds it; its keyword parameters after
    `num_classes` become model options (`model.options.<name>` in a recipe).
    """

    head: type[DecodeHead]
    #: Registered-name prefix -> head options preset under that name ("fcn8s" -> variant fcn8s;
    #: a preset may also set a shell option, as "deeplab_aspp" sets output_stride 8); the model
    #: `<prefix>_<encoder>` exists for every backbone (of `encoders`).
    presets: Mapping[str, Mapping[str, Any]]
    #: What the head is, for `fcnseg models`; "{prefix}" is replaced by the preset's prefix and
    #: " on <backbone description>" is appended.
    description: str
    #: Family prefix of `fcnseg models` ("fcn" -> family "fcn-resnet18").
    family: str
    #: Prefix -> paper stage whose solver the `paper` preset uses (empty: not a paper model).
    paper_stages: Mapping[str, str] = field(default_factory=dict)
    #: The prefix of a model built with given head options, for messages that name the model;
    #: None for a row with one preset.
    name_prefix: Callable[[Mapping[str, Any]], str] | None = None
    #: The shell class the models of this row are (a subclass names the net in exports).
    model: type[SegmentationShell] = SegmentationShell
    #: Backbones (keys of BACKBONES) the row is registered on; None: every backbone.
    encoders: tuple[str, ...] | None = None

    def prefix_of(self, options: Mapping[str, Any]) -> str:
        """The registered-name prefix a model built with head `options` is known by."""
        if self.name_prefix is not None:
            return self.name_prefix(options)
        (prefix,) = self.presets
        return prefix


#: Head name -> row. Registration walks this table (x backbones); order is listing order only.
HEADS: dict[str, HeadRow] = {
    "fcn": HeadRow(
        FCNHead,
        presets=FCN_PRESETS,
        description="{prefix} skip head",
        family="fcn",
        paper_stages=FCN_PAPER_STAGES,
        name_prefix=fcn_name_prefix,
        model=SkipFCN,
    ),
    "fpnlite": HeadRow(
        FPNLiteHead,
        presets={"fpnlite": {}},
        description="FPN-lite head (top-down sum of s32/s16/s8, one 3x3 block)",
        family="fpnlite",
    ),
    "aspp": HeadRow(
        ASPPHead,
        presets=ASPP_PRESETS,
        description="DeepLab-v2 ASPP head (3x3 scorers at rates 6/12/18/24, summed; stride 8)",
        family="deeplab",
        encoders=ASPP_ENCODERS,
    ),
    "unet": HeadRow(
        UNetHead,
        presets={"unet": {}},
        description="padded U-Net decoder (s32 -> s4, skips concatenated, 3x3 conv+BN pairs)",
        family="unet",
    ),
    "psp": HeadRow(
        PSPHead,
        presets={"pspnet": {"output_stride": PSPNET_OUTPUT_STRIDE}},
        description=(
            "PSPNet pyramid pooling head (bins 1/2/3/6 on the stride-8 dilated s32, auxiliary "
            "s16 head in training)"
        ),
        family="pspnet",
    ),
    "linknet": HeadRow(
        LinkNetHead,
        presets={"linknet": {}},
        description="LinkNet decoder (1x1 / 3x3 full-conv / 1x1 blocks added to s16/s8/s4)",
        family="linknet",
    ),
}

__all__ = [
    "HEADS",
    "ASPPHead",
    "DecodeHead",
    "FCNHead",
    "FPNLiteHead",
    "HeadRow",
    "LinkNetHead",
    "PSPHead",
    "SkipFCN",
    "UNetHead",
    "require_features",
]
