"""Encoders that fulfil the backbone contract in `base.py`, and the name -> builder table.

`BACKBONES` is the one place that says which encoder names exist, how each is built and whether
its ImageNet weights are installed; `fcnseg.models.segmenters` registers every decode head of
`fcnseg.models.heads.HEADS` (fcn{32,16,8,4}s, fpnlite) for every row. The
builders are imported lazily because timm and torchvision's model zoo cost seconds to import and
most commands need one encoder at most. The paper nets' VGG16/AlexNet/GoogLeNet encoders
(`vgg.py`) are not in the table: `paper_fcn` builds them with the release's exact geometry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fcnseg.errors import ModelOptionError
from fcnseg.models.backbones.base import Backbone, stride_key
from fcnseg.models.weights import Pretrained, adapt_input_channels, offline_weights_available

#: Output strides an encoder can be run at (atrous stages replace striding below 32).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def _timm_builders() -> ModuleType:
    from fcnseg.models.backbones import timm as builders

    return builders


def _torchvision_builders() -> ModuleType:
    from fcnseg.models.backbones import torchvision as builders

    return builders


@dataclass(frozen=True)
class BackboneEntry:
    """One encoder name: a description, where its builder lives, and its offline-weights check.

    Every builder has one signature, `(architecture, pretrained, encoder_weights, output_stride,
    model_name=...)`; `architecture` is the encoder name, or `timm_name` for the generic row.
    """

    description: str
    builders: Callable[[], ModuleType]
    builder: str
    weights_available: Callable[[str], bool] = offline_weights_available
    #: Model options every model registered on this encoder defaults to (the generic timm row
    #: names an architecture and starts random, since no timm weights ship offline).
    model_defaults: Mapping[str, Any] = field(default_factory=dict)


def _no_offline_weights(encoder: str) -> bool:
    """The generic timm row: its architecture is chosen per model, so none is installed."""
    return False


def _lite(description: str) -> BackboneEntry:
    return BackboneEntry(description, _timm_builders, "build_efficientnet_lite")


def _tv(description: str) -> BackboneEntry:
    return BackboneEntry(description, _torchvision_builders, "build_torchvision_backbone")


BACKBONES: dict[str, BackboneEntry] = {
    "efficientnet_lite0": _lite(
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0, offline TF weights)"
    ),
    "efficientnet_lite1": _lite(
        "EfficientNet-Lite1 (timm tf_efficientnet_lite1, offline TF weights)"
    ),
    "efficientnet_lite2": _lite(
        "EfficientNet-Lite2 (timm tf_efficientnet_lite2, offline TF weights)"
    ),
    "resnet18": _tv("ResNet-18 (torchvision; atrous output_stride 8/16)"),
    "resnet50": _tv("ResNet-50 (torchvision; atrous output_stride 8/16)"),
    "resnet101": _tv("ResNet-101 (torchvision; atrous output_stride 8/16)"),
    "mobilenet_v2": _tv("MobileNetV2 (torchvision; atrous output_stride 8/16)"),
    "timm": BackboneEntry(
        "any timm features_only model (timm_name=...)",
        _timm_builders,
        "build_timm_backbone",
        weights_available=_no_offline_weights,
        model_defaults={"pretrained": False, "timm_name": "convnext_atto"},
    ),
}


def build_backbone(
    encoder: str,
    *,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    timm_name: str | None = None,
    model_name: str = "",
    in_channels: int = 3,
) -> Backbone:
    """The backbone named `encoder` (a key of BACKBONES), with weights per the policy.

    Random unless weights are asked for (`pretrained=True`/"auto" or `encoder_weights`), as in
    torchvision. `in_channels` other than 3 adapts the stem after the weights are loaded
    (fcnseg.models.weights.adapted_first_layer_weight states the rule).
    """
    if encoder not in BACKBONES:
        raise ModelOptionError(f"unknown encoder {encoder!r}; choose one of {', '.join(BACKBONES)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ModelOptionError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    architecture = encoder
    if encoder == "timm":
        if not timm_name:
            raise ModelOptionError("the timm FCN models need timm_name=<timm architecture>")
        architecture = timm_name
    entry = BACKBONES[encoder]
    builder = getattr(entry.builders(), entry.builder)
    backbone = builder(
        architecture, pretrained, encoder_weights, output_stride, model_name=model_name or encoder
    )
    if in_channels != backbone.in_channels:
        adapt_input_channels(backbone, in_channels)
    return backbone


__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneEntry",
    "build_backbone",
    "stride_key",
]
