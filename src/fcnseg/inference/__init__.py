"""One entry point for every way of turning a model and an image batch into class scores.

`predict_logits(model, images, mode=...)` is what evaluation, `fcnseg predict` and the
benchmarks call, so the choice of inference mode is an argument, not a code path per caller:

- ``"whole"``: one forward pass on the full image (an FCN takes any size; the paper's way).
- ``"sliding"``: tiles of ``tile_size`` with overlap, blended (see `fcnseg.inference.sliding`);
  memory is bounded by the tile, not the image.
- ``"overlap_tile"``: the U-Net's overlap-tile strategy for nets of valid convolutions
  (`unet2015`): output tiles of ``tile_size`` edge to edge, each predicted from the tile plus
  the net's context cut from the mirrored image (see `fcnseg.inference.overlap_tile`).
- ``"multiscale"``: the image at several ``scales`` (and mirrored when ``flip``), softmax scores
  averaged (see `fcnseg.inference.tta`); with ``inner="sliding"`` every scale is itself
  predicted by sliding window.

Dense-CRF refinement (`fcnseg.inference.crf.crf_refine`) works on the probabilities of any mode
and on the uint8 image, so it is applied per image after this call.

The model must already be in eval mode; inputs are normalised float batches N x 3 x H x W as
for the model's forward. Outputs are at the input's size; multi-head models give a dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from fcnseg.choices import INFERENCE_MODES
from fcnseg.errors import DataError, UsageError
from fcnseg.inference.overlap_tile import overlap_tile_logits
from fcnseg.inference.sliding import (
    DEFAULT_OVERLAP,
    Blend,
    Forward,
    ModelOutput,
    sliding_window_logits,
)
from fcnseg.inference.tta import DEFAULT_SCALES, multiscale_flip_probs
from fcnseg.models.protocol import map_heads

Mode = Literal["whole", "sliding", "multiscale", "overlap_tile"]
MODES: tuple[str, ...] = INFERENCE_MODES
#: Floor of probabilities before taking their log, so that log-probabilities stay finite.
_LOG_FLOOR: float = 1e-12

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_SCALES",
    "MODES",
    "multiscale_flip_probs",
    "predict_logits",
    "predict_probs",
    "sliding_window_logits",
]


def _sliding_predictor(
    model: Forward,
    tile_size: int | tuple[int, int] | None,
    tile_stride: int | tuple[int, int] | None,
    overlap: float,
    blend: Blend,
    tile_batch: int,
) -> Forward:
    if tile_size is None:
        raise UsageError("sliding inference needs tile_size (e.g. tile_size=512 or (512, 1024))")

    def predict(images: Tensor) -> ModelOutput:
        return sliding_window_logits(
            model,
            images,
            tile_size,
            tile_stride,
            overlap=overlap,
            blend=blend,
            tile_batch=tile_batch,
        )

    return predict


def _scores(
    model: Forward,
    images: Tensor,
    mode: str,
    *,
    tile_size: int | tuple[int, int] | None,
    tile_stride: int | tuple[int, int] | None,
    overlap: float,
    blend: Blend,
    tile_batch: int,
    scales: Sequence[float],
    flip: bool,
    inner: str,
) -> tuple[ModelOutput, bool]:
    """(scores, are_probabilities): logits for whole/sliding, probabilities for multiscale."""
    if mode not in MODES:
        raise UsageError(f"mode must be one of {MODES}, got {mode!r}")
    # RGB-D / RGB+HHA models (fcnseg.models.fusion) declare more input channels.
    channels = getattr(model, "in_channels", 3)
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != channels:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"image_batch must be a float tensor N x {channels} x H x W, got {shape}")
    if mode == "whole":
        return model(images), False
    if mode == "sliding":
        sliding = _sliding_predictor(model, tile_size, tile_stride, overlap, blend, tile_batch)
        return sliding(images), False
    if mode == "overlap_tile":
        return overlap_tile_logits(model, images, tile_size), False
    if inner not in ("whole", "sliding"):
        raise UsageError(f"inner must be 'whole' or 'sliding', got {inner!r}")
    predictor = (
        _sliding_predictor(model, tile_size, tile_stride, overlap, blend, tile_batch)
        if inner == "sliding"
        else model
    )
    return multiscale_flip_probs(predictor, images, scales=scales, flip=flip), True


def predict_logits(
    model: Forward,
    image_batch: Tensor,
    mode: Mode = "whole",
    *,
    tile_size: int | tuple[int, int] | None = None,
    tile_stride: int | tuple[int, int] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    blend: Blend = "gaussian",
    tile_batch: int = 1,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    inner: Literal["whole", "sliding"] = "whole",
) -> ModelOutput:
    """Class scores N x C x H x W (float32) of `image_batch` under inference `mode`.

    For "whole", "sliding" and "overlap_tile" these are the model's logits. For "multiscale" they are the log
    of the averaged probabilities: softmax of the result gives back those probabilities and
    argmax is unchanged, so callers can treat every mode alike.

    Args:
        model: eval-mode model or any callable image batch -> logits (or dict of logits), e.g.
            an `OnnxRuntimeModel` from `fcnseg.export.load_exported`.
        image_batch: normalised float N x 3 x H x W.
        mode: "whole", "sliding", "multiscale" or "overlap_tile" (`tile_size` is then the
            output tile, default the model's; other options do not apply).
        tile_size, tile_stride, overlap, blend, tile_batch: sliding-window options (used by
            "sliding" and by "multiscale" with inner="sliding"); see `sliding_window_logits`.
        scales, flip: multi-scale options; see `multiscale_flip_probs`.
        inner: how "multiscale" predicts each scale: "whole" or "sliding".
    """
    with torch.no_grad():
        scores, are_probs = _scores(
            model,
            image_batch,
            mode,
            tile_size=tile_size,
            tile_stride=tile_stride,
            overlap=overlap,
            blend=blend,
            tile_batch=tile_batch,
            scales=scales,
            flip=flip,
            inner=inner,
        )
        if are_probs:
            return map_heads(scores, lambda p: p.clamp_min(_LOG_FLOOR).log())
        return map_heads(scores, lambda t: t.float())


def predict_probs(
    model: Forward, image_batch: Tensor, mode: Mode = "whole", **options: Any
) -> ModelOutput:
    """Class probabilities N x C x H x W; same arguments as `predict_logits`."""
    from fcnseg.inference.spec import OPTION_NAMES

    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(f"unknown predict_probs options: {unknown}")
    with torch.no_grad():
        scores, are_probs = _scores(model, image_batch, mode, **{**_OPTION_DEFAULTS, **options})
        if are_probs:
            return scores
        return map_heads(scores, lambda t: torch.softmax(t.float(), dim=1))


#: predict_logits' option defaults (the options are InferenceSpec's, OPTION_NAMES).
_OPTION_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(predict_logits).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
}
