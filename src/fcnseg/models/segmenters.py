"""Registered segmenters: every decode head of the head table on every backbone of the table.

Why one walk: the names `fcn8s_resnet18`, `fpnlite_efficientnet_lite0`, ... are the product of
two tables, `fcnseg.models.heads.HEADS` (decode heads and their presets) and
`fcnseg.models.backbones.BACKBONES` (encoders). Each head row gets one builder whose signature
is the shell's options plus the head's own keyword parameters, read from the head class; the
factory reads that signature to accept or refuse `model.options`, so a new head's options are
checked without a line of code outside its class.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnseg.errors import ModelOptionError
from fcnseg.models.backbones import BACKBONES, build_backbone
from fcnseg.models.heads import HEADS, DecodeHead
from fcnseg.models.registry import register_model
from fcnseg.models.shell import SegmentationShell
from fcnseg.models.weights import Pretrained

#: Parameters of a head class that the shell fills in, not the user (see DecodeHead).
_SUPPLIED_BY_SHELL: tuple[str, ...] = ("channels", "strides", "num_classes")


def _shell_options(
    *,
    encoder: str,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    timm_name: str | None = None,
    input_scale: float = 1.0,
    in_channels: int = 3,
    normalization: str | None = None,
) -> None:
    """The model options every segmenter accepts besides its head's (a signature template)."""


def head_options(head: type[DecodeHead]) -> list[inspect.Parameter]:
    """The keyword parameters of `head` that are model options (all but channels..num_classes)."""
    parameters = inspect.signature(head).parameters.values()
    return [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for parameter in parameters
        if parameter.name not in _SUPPLIED_BY_SHELL
    ]


def build_segmenter(
    num_classes: int,
    *,
    head: str,
    encoder: str,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    timm_name: str | None = None,
    input_scale: float = 1.0,
    in_channels: int = 3,
    normalization: str | None = None,
    **options: Any,
) -> SegmentationShell:
    """Head `head` (a key of HEADS) with `options` on backbone `encoder`, in the shell.

    `in_channels`: image channels (the stem is adapted, see models.weights). `normalization`:
    the input normalisation the model reports; default the encoder weights' preset for 3
    channels, else "per_channel" (numbers measured on the training data).
    """
    row = HEADS[head]
    name = f"{row.prefix_of(options)}_{encoder}"
    unexpected = set(options) - {parameter.name for parameter in head_options(row.head)}
    if unexpected:
        raise ModelOptionError(f"{name}: unknown option(s) {sorted(unexpected)}")
    backbone = build_backbone(
        encoder,
        pretrained=pretrained,
        encoder_weights=encoder_weights,
        output_stride=output_stride,
        timm_name=timm_name,
        model_name=name,
        in_channels=in_channels,
    )
    backbone.normalization = reported_normalization(
        backbone.normalization, in_channels, normalization
    )
    decoder = row.head(backbone.channels, backbone.strides, num_classes, **options)
    model = row.model(backbone, decoder, input_scale=input_scale)
    model.in_channels = in_channels
    return model


def reported_normalization(preset: str, in_channels: int, asked: str | None) -> str:
    """The normalisation a model reports: `asked`, else `preset` for RGB, else "per_channel".

    Why "per_channel" for other band counts: an RGB preset has three numbers, and an 8-band
    image has no ImageNet statistics; the training setup measures the bands instead.
    """
    from fcnseg.models.protocol import NORMALIZATIONS

    if asked is not None and asked not in NORMALIZATIONS:
        raise ModelOptionError(f"normalization={asked!r} is not one of {', '.join(NORMALIZATIONS)}")
    if asked is not None and asked != "per_channel" and in_channels != 3:
        raise ModelOptionError(
            f"normalization={asked!r} has 3 channels but in_channels={in_channels}; use "
            "normalization=per_channel (the default for non-RGB inputs)"
        )
    if asked is not None:
        return asked
    return preset if in_channels == 3 else "per_channel"


def segmenter_builder(head: str) -> Callable[..., SegmentationShell]:
    """The registry builder of head row `head`: build_segmenter with that head, whose signature
    lists exactly the options it accepts (the factory checks recipes against it)."""

    def build(num_classes: int, **options: Any) -> SegmentationShell:
        return build_segmenter(num_classes, head=head, **options)

    shell = list(inspect.signature(_shell_options).parameters.values())
    first = inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [first, *shell, *head_options(HEADS[head].head)], return_annotation=SegmentationShell
    )
    build.__name__ = build.__qualname__ = f"build_{head}"
    build.__doc__ = f"Builder behind every registered `{head}` segmenter (see HEADS[{head!r}])."
    return build


#: Head name -> its registry builder.
BUILDERS: dict[str, Callable[..., SegmentationShell]] = {
    head: segmenter_builder(head) for head in HEADS
}
#: The FCN skip head's builder: `build_fcn(num_classes, encoder=..., variant=...)`.
build_fcn = BUILDERS["fcn"]


def register_segmenters() -> None:
    """Register `<prefix>_<encoder>` for every preset of every head row and every backbone."""
    for head, row in HEADS.items():
        for encoder, entry in BACKBONES.items():
            if row.encoders is not None and encoder not in row.encoders:
                continue
            for prefix, options in row.presets.items():
                register_model(
                    f"{prefix}_{encoder}",
                    description=f"{row.description.format(prefix=prefix)} on {entry.description}",
                    family=f"{row.family}-{encoder}",
                    weights_available=functools.partial(entry.weights_available, encoder),
                    paper_stage=row.paper_stages.get(prefix),
                    encoder=encoder,
                    **options,
                    **entry.model_defaults,
                )(BUILDERS[head])


register_segmenters()
