"""What every fcnseg model promises its callers, and the vocabulary the model builders share.

Why declared: the engine, inference, export and serving code read a model's class count, input
channels and input normalisation. Before this contract they guessed with `getattr(model, ...,
default)`, which silently hid a model that forgot to say; now `build_model` refuses such a model
and every caller reads the attributes directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from fcnseg.errors import ModelOptionError

#: How score maps are upsampled, for the paper nets and the skip head alike: a bilinear-
#: initialised transposed convolution kept fixed (the release's choice), the same trained, or a
#: parameter-free bilinear resize.
UpsampleMode = Literal["deconv_frozen", "deconv_learnable", "bilinear"]
UPSAMPLE_MODES: tuple[str, ...] = ("deconv_frozen", "deconv_learnable", "bilinear")
#: Earlier spellings of the skip head's modes, still found in run directories and weights files
#: written before the vocabulary was unified; read, never written.
_LEGACY_UPSAMPLE: dict[str, str] = {"deconv": "deconv_frozen", "learnable": "deconv_learnable"}

#: FCN variants by the stride of their finest fused score (paper section 4.2; "fcn4s" takes the
#: skip step once more, for encoders with a stride-4 map).
FCN_VARIANTS: tuple[str, ...] = ("fcn32s", "fcn16s", "fcn8s", "fcn4s")

#: Input normalisation presets (fcnseg.data.normalization gives their numbers); "per_channel":
#: numbers measured on the training data (1 or N-band inputs), stored with the weights.
NORMALIZATIONS: tuple[str, ...] = (
    "imagenet",
    "caffe_bgr",
    "caffe_bgr_raw",
    "tf_lite",
    "per_channel",
)

#: The head a multi-head model is scored and displayed by when one number is wanted.
PRIMARY_HEAD = "semantic"


def upsample_mode(value: str) -> str:
    """`value` as one of UPSAMPLE_MODES (legacy spellings mapped); ValueError naming the choices."""
    value = _LEGACY_UPSAMPLE.get(value, value)
    if value not in UPSAMPLE_MODES:
        raise ModelOptionError(f"upsample={value!r} is not one of {', '.join(UPSAMPLE_MODES)}")
    return value


def fcn_variant(value: str, allowed: tuple[str, ...] = FCN_VARIANTS) -> str:
    """`value` ("fcn8s"; the bare stride "8s" is accepted) as one of `allowed`."""
    if value in ("32s", "16s", "8s", "4s"):
        value = f"fcn{value}"
    if value not in allowed:
        raise ModelOptionError(f"variant={value!r} is not one of {', '.join(allowed)}")
    return value


@runtime_checkable
class SegmentationModel(Protocol):
    """Attributes every registered model carries (checked by `build_model`).

    Attributes:
        num_classes: classes of the primary output (the "semantic" head of a multi-head model).
        in_channels: channels of the normalised input batch (3 for RGB; 4 for early RGB-D
            fusion; 6 for the late-fusion RGB+HHA tensor).
        normalization: input preset the weights expect, one of NORMALIZATIONS.
        head_classes: output head name -> class count for models whose forward returns a dict
            of logits; empty for models that return one tensor.
    """

    num_classes: int
    in_channels: int
    normalization: str
    head_classes: dict[str, int]


@runtime_checkable
class SharedTrunkModel(Protocol):
    """A model whose forward is `score_features(trunk_features(x), x)`: the multi-head hook.

    Why: a multi-head net (fcnseg.models.multihead.MultiHeadFCN) runs what no class count
    shapes once and scores it once per head. The children named by `trunk_module_names`
    compute `trunk_features` and are held once, by the trunk; the other children compute
    `score_features` and are held by each head. The shared value is opaque to the caller;
    every head reads the same one, so `score_features` must not modify it in place.
    """

    @property
    def trunk_module_names(self) -> tuple[str, ...]: ...

    def trunk_features(self, x: Any) -> Any: ...

    def score_features(self, shared: Any, x: Any) -> Any: ...


#: Names of the attributes of SegmentationModel, for a readable error when one is missing.
PROTOCOL_ATTRIBUTES: tuple[str, ...] = (
    "num_classes",
    "in_channels",
    "normalization",
    "head_classes",
)

T = TypeVar("T")
U = TypeVar("U")


def primary_head_name(heads: Iterable[str]) -> str:
    """PRIMARY_HEAD when present, else the first head: the one rule for "the" output.

    One rule for evaluation, prediction, export, serving and the scores JSON, so they never
    disagree about which output of a multi-head model is "the" segmentation.
    """
    names = list(heads)
    if not names:
        raise ValueError("a multi-head output has no heads")
    return PRIMARY_HEAD if PRIMARY_HEAD in names else names[0]


def as_heads(output: T | Mapping[str, T]) -> dict[str, T]:
    """Any model output (or target) as named heads: a single tensor is the PRIMARY_HEAD.

    The one way every caller sees outputs, so one loop serves single- and multi-head models.
    """
    if isinstance(output, Mapping):
        return dict(output)
    return {PRIMARY_HEAD: output}


def is_multi_head(output: object) -> bool:
    """Whether `output` came from a multi-head model (a mapping of named heads)."""
    return isinstance(output, Mapping)


def like_output(heads: Mapping[str, T], reference: object) -> T | dict[str, T]:
    """`heads` in the shape of `reference`: a bare value when `reference` was not a mapping.

    Why: inference wrappers (tiles, scales, flips) work on named heads and must hand back what
    the model itself returns.
    """
    if is_multi_head(reference):
        return dict(heads)
    if len(heads) != 1:
        raise ValueError(f"a single-output model cannot return the heads {list(heads)}")
    (value,) = heads.values()
    return value


def map_heads(output: T | Mapping[str, T], fn: Callable[[T], U]) -> U | dict[str, U]:
    """`fn` applied to every head, the output's shape kept (tensor in, tensor out)."""
    return like_output({name: fn(value) for name, value in as_heads(output).items()}, output)


def primary_output(output: T | Mapping[str, T]) -> T:
    """The primary head of a multi-head output, or the output itself for a single-head model."""
    heads = as_heads(output)
    return heads[primary_head_name(heads)]


def auxiliary_logits(model: object) -> Any:
    """The auxiliary (deep-supervision) scores of `model`'s last training forward, or None.

    Why an attribute and not a second output: eval, export and serve call the model and must
    see the one output the contract promises. A model whose head scores an extra map in
    training (PSPNet's stride-16 head; `DecodeHead.auxiliary_logits`) keeps it in the attribute
    `auxiliary_logits`, replaced by every forward; models without one have no such attribute
    or hold None. The training loop adds `train.aux_weight` x the loss of these scores.
    """
    return getattr(model, "auxiliary_logits", None)
