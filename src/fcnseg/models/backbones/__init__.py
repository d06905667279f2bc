"""Encoders that fulfil the backbone contract in `base.py`, and the name -> builder table.

`BACKBONES` is the one place that says which encoder names exist, how each is built and whether
its ImageNet weights are installed; `skip_fcn` registers fcn{32,16,8,4}s for every row. The
builders are imported lazily because timm and torchvision's model zoo cost seconds to import and
most commands need one encoder at most. The paper nets' VGG16/AlexNet/GoogLeNet encoders
(`vgg.py`) are not in the table: `paper_fcn` builds them with the release's exact geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fcnseg.models.backbones.base import Backbone, stride_key
from fcnseg.models.weights import Pretrained, offline_weights_available

#: Output strides an encoder can be run at (atrous stages replace striding below 32).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def _efficientnet_lite(
    encoder: str,
    pretrained: Pretrained,
    encoder_weights: str | Path | None,
    output_stride: int,
    timm_name: str | None,
    model_name: str,
) -> Backbone:
    from fcnseg.models.backbones.timm import build_efficientnet_lite

    return build_efficientnet_lite(
        encoder, pretrained, encoder_weights, output_stride, model_name=model_name
    )


def _torchvision(
    encoder: str,
    pretrained: Pretrained,
    encoder_weights: str | Path | None,
    output_stride: int,
    timm_name: str | None,
    model_name: str,
) -> Backbone:
    from fcnseg.models.backbones.torchvision import build_torchvision_backbone

    return build_torchvision_backbone(
        encoder, pretrained, encoder_weights, output_stride, model_name=model_name
    )


def _timm(
    encoder: str,
    pretrained: Pretrained,
    encoder_weights: str | Path | None,
    output_stride: int,
    timm_name: str | None,
    model_name: str,
) -> Backbone:
    from fcnseg.models.backbones.timm import build_timm_backbone

    if not timm_name:
        raise ValueError("the timm FCN models need timm_name=<timm architecture>")
    return build_timm_backbone(
        timm_name, pretrained, encoder_weights, output_stride, model_name=model_name
    )


@dataclass(frozen=True)
class BackboneEntry:
    """One encoder name: a one-line description, its builder and its offline-weights check."""

    description: str
    build: Callable[[str, Pretrained, str | Path | None, int, str | None, str], Backbone]
    weights_available: Callable[[str], bool] = offline_weights_available


BACKBONES: dict[str, BackboneEntry] = {
    "efficientnet_lite0": BackboneEntry(
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0, offline TF weights)", _efficientnet_lite
    ),
    "efficientnet_lite1": BackboneEntry(
        "EfficientNet-Lite1 (timm tf_efficientnet_lite1, offline TF weights)", _efficientnet_lite
    ),
    "efficientnet_lite2": BackboneEntry(
        "EfficientNet-Lite2 (timm tf_efficientnet_lite2, offline TF weights)", _efficientnet_lite
    ),
    "resnet18": BackboneEntry("ResNet-18 (torchvision; atrous output_stride 8/16)", _torchvision),
    "resnet50": BackboneEntry("ResNet-50 (torchvision; atrous output_stride 8/16)", _torchvision),
    "resnet101": BackboneEntry("ResNet-101 (torchvision; atrous output_stride 8/16)", _torchvision),
    "mobilenet_v2": BackboneEntry(
        "MobileNetV2 (torchvision; atrous output_stride 8/16)", _torchvision
    ),
    "timm": BackboneEntry("any timm features_only model (timm_name=...)", _timm),
}


def build_backbone(
    encoder: str,
    *,
    pretrained: Pretrained = True,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    timm_name: str | None = None,
    model_name: str = "",
) -> Backbone:
    """The backbone named `encoder` (a key of BACKBONES), with weights per the policy."""
    if encoder not in BACKBONES:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(BACKBONES)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    entry = BACKBONES[encoder]
    return entry.build(
        encoder, pretrained, encoder_weights, output_stride, timm_name, model_name or encoder
    )


__all__ = ["BACKBONES", "Backbone", "BackboneEntry", "build_backbone", "stride_key"]
