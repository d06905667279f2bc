"""Test-time augmentation: multi-scale inputs and horizontal flips, averaged as softmax scores.

Averaging *probabilities* (not logits) over scales is the usual choice since DeepLab: the
logits of different scales are not calibrated against each other (a net seeing an object at
twice the size is more confident), while probabilities are on one scale and their mean is a
proper mixture. Each scaled (and flipped) prediction is resized back to the input size before
averaging, so the result is N x C x H x W at the original resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fcnseg.errors import DataError, UsageError
from fcnseg.inference.sliding import ModelOutput
from fcnseg.models.protocol import as_heads, like_output

#: Scales of the common multi-scale protocol (DeepLab / PSPNet evaluation: 0.5 to 1.75 in
#: steps of 0.25), each also evaluated flipped.
DEFAULT_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

Predictor = Callable[[Tensor], ModelOutput]


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of the image at `scale`, rounded, at least 1 pixel per side."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def multiscale_flip_probs(
    predict: Predictor,
    images: Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
) -> ModelOutput:
    """Mean softmax scores N x C x H x W over `scales` (and their horizontal flips).

    Args:
        predict: maps an image batch to logits at its size (a whole-image forward or a
            sliding-window predictor, which is how sliding combines with multi-scale).
        images: normalised N x 3 x H x W batch.
        scales: resize factors of the input; 1.0 is the image as given.
        flip: also predict the left-right mirrored image (and mirror the scores back).
    """
    if images.dim() != 4:
        raise DataError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise UsageError(f"scales must be a non-empty list of positive factors, got {scales}")
    height, width = images.shape[-2:]
    totals: dict[str, Tensor] = {}
    output: ModelOutput | None = None
    count = 0
    for scale in scales:
        size = scaled_size(height, width, scale)
        scaled = (
            images
            if size == (height, width)
            else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        )
        variants = (
            [(scaled, False), (torch.flip(scaled, dims=[-1]), True)] if flip else [(scaled, False)]
        )
        for variant, flipped in variants:
            output = predict(variant)
            for key, logits in as_heads(output).items():
                probs = torch.softmax(logits.float(), dim=1)
                if flipped:
                    probs = torch.flip(probs, dims=[-1])
                if probs.shape[-2:] != (height, width):
                    probs = F.interpolate(
                        probs, size=(height, width), mode="bilinear", align_corners=False
                    )
                if key in totals:
                    totals[key] += probs
                else:
                    totals[key] = probs
            count += 1
    means = {key: total / count for key, total in totals.items()}
    return like_output(means, output)
