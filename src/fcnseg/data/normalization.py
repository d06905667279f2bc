"""Input normalisation as numbers: a mean and a std per channel, with preset names as aliases.

Why numbers: a weights file that says only "tf_lite" can be used only by code that knows what
"tf_lite" means; one that says `mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]` can be used by
anyone (an ONNX runtime in another language, a user's own pipeline), and an 8-band satellite
model has no preset at all: its numbers are the per-band statistics of its training data.

The rule, for every input, whatever its band count or bit depth:

1. the decoded image is brought to [0, 1] (fcnseg.data.io: integers divided by their dtype's
   largest value, 255 or 65535; floats kept as they are);
2. when `channel_order` is set, channels are reordered (the Caffe release's BGR: `[2, 1, 0]`);
3. each channel c becomes `(x[c] - mean[c]) / std[c]`.

The presets are these numbers: "imagenet" (torchvision/timm), "tf_lite" (TensorFlow
EfficientNet-Lite, [-1, 1]) and "caffe_bgr" (BGR minus the Caffe mean pixel on the 0-255 scale,
i.e. mean = mean_pixel / 255 and std = 1 / 255); "caffe_bgr_raw" is BGR on the 0-255 scale with
nothing subtracted (the SegNet release's input: mean 0, std 1 / 255). "per_channel" names numbers measured on a
training set (`fcnseg.data.stats.channel_statistics`); it has no numbers of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fcnseg.constants import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TF_LITE_MEAN,
    TF_LITE_STD,
)
from fcnseg.errors import DataError

#: The name of normalisation numbers measured on the training data (no preset behind it).
PER_CHANNEL = "per_channel"
_UINT8_MAX = 255.0
#: Most channels a normalisation may describe (a hyperspectral cube has a few hundred bands).
MAX_NORMALIZATION_CHANNELS = 1024


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the [0, 1] scale, an optional channel reordering, a name.

    `name` is the preset these numbers are ("imagenet", ...) or PER_CHANNEL.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: tuple[int, ...] | None = None
    name: str = PER_CHANNEL

    def __post_init__(self) -> None:
        problem = _problem(self.mean, self.std, self.channel_order)
        if problem:
            raise ValueError(f"normalization {self.name!r}: {problem}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in weights and ONNX metadata."""
        data: dict[str, Any] = {"mean": list(self.mean), "std": list(self.std)}
        if self.channel_order is not None:
            data["channel_order"] = list(self.channel_order)
        return data

    def _view(self, values: Sequence[float], like: Tensor) -> Tensor:
        shape = (len(values), 1, 1)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)

    def apply(self, image: Tensor) -> Tensor:
        """C x H x W or N x C x H x W image (uint8 0-255, or float 0-1) -> normalised float."""
        x = as_float01(image)
        if x.shape[-3] != self.channels:
            raise DataError(
                f"image has {x.shape[-3]} channels but the normalisation ({self.name}) has "
                f"{self.channels}; give images with {self.channels} channels or retrain"
            )
        if self.channel_order is not None:
            x = x[..., list(self.channel_order), :, :]
        return (x - self._view(self.mean, x)) / self._view(self.std, x)

    def invert(self, image: Tensor) -> Tensor:
        """The inverse of `apply` on the [0, 1] scale (not clamped)."""
        x = image.float() * self._view(self.std, image.float()) + self._view(self.mean, image)
        if self.channel_order is not None:
            x = x[..., _inverse(self.channel_order), :, :]
        return x


def _inverse(order: Sequence[int]) -> list[int]:
    inverse = [0] * len(order)
    for position, channel in enumerate(order):
        inverse[channel] = position
    return inverse


def _problem(mean: Sequence[Any], std: Sequence[Any], order: Sequence[Any] | None) -> str | None:
    """What is wrong with these numbers (None when they are usable)."""
    if not 1 <= len(mean) <= MAX_NORMALIZATION_CHANNELS or len(std) != len(mean):
        return f"mean and std need one value per channel (1..{MAX_NORMALIZATION_CHANNELS})"
    numbers = [*mean, *std]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return "mean and std must be numbers"
    if not all(math.isfinite(v) for v in numbers) or not all(v > 0 for v in std):
        return "mean must be finite and std finite and positive"
    if order is not None and sorted(order) != list(range(len(mean))):
        return f"channel_order must be a permutation of 0..{len(mean) - 1}"
    return None


#: The presets as numbers (see the module docstring).
PRESETS: dict[str, Normalization] = {
    "imagenet": Normalization(IMAGENET_MEAN, IMAGENET_STD, name="imagenet"),
    "tf_lite": Normalization(TF_LITE_MEAN, TF_LITE_STD, name="tf_lite"),
    "caffe_bgr": Normalization(
        tuple(value / _UINT8_MAX for value in CAFFE_MEAN_BGR),
        (1.0 / _UINT8_MAX,) * 3,
        channel_order=(2, 1, 0),
        name="caffe_bgr",
    ),
    "caffe_bgr_raw": Normalization(
        (0.0, 0.0, 0.0), (1.0 / _UINT8_MAX,) * 3, channel_order=(2, 1, 0), name="caffe_bgr_raw"
    ),
}


def as_float01(image: Tensor) -> Tensor:
    """uint8 0-255 -> float 0-1; a float image is taken to be on the 0-1 scale already."""
    if image.dtype == torch.uint8:
        return image.float() / _UINT8_MAX
    return image.float()


def from_numbers(data: Any, name: str = PER_CHANNEL) -> Normalization:
    """A Normalization from its JSON form ({mean, std, channel_order?}); ValueError if unusable."""
    if not isinstance(data, Mapping) or not {"mean", "std"} <= set(data):
        raise ValueError("expected {mean: [...], std: [...]} (channel_order optional)")
    if not set(data) <= {"mean", "std", "channel_order"}:
        raise ValueError(f"unknown keys {sorted(set(data) - {'mean', 'std', 'channel_order'})}")
    mean, std, order = data["mean"], data["std"], data.get("channel_order")
    if not isinstance(mean, (list, tuple)) or not isinstance(std, (list, tuple)):
        raise ValueError("mean and std must be lists of numbers")
    if order is not None and (
        not isinstance(order, (list, tuple))
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in order)
    ):
        raise ValueError("channel_order must be a list of channel indices")
    problem = _problem(mean, std, order)
    if problem:
        raise ValueError(problem)
    return Normalization(
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        tuple(order) if order is not None else None,
        name,
    )


def resolve(spec: str | Normalization | Mapping[str, Any]) -> Normalization:
    """The numbers of `spec`: a preset name, numbers already, or their JSON form."""
    if isinstance(spec, Normalization):
        return spec
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]
        if spec == PER_CHANNEL:
            raise ValueError(
                "normalization 'per_channel' has no numbers of its own; compute them from the "
                "training data (fcnseg.data.stats.channel_statistics) and pass those"
            )
        raise ValueError(
            f"normalization preset {spec!r} is unknown; use one of {tuple(PRESETS)} or "
            "{mean: [...], std: [...]}"
        )
    return from_numbers(spec)


def stored_numbers(name: str) -> dict[str, Any] | None:
    """The JSON numbers of preset `name` (what files store); None for a name without any."""
    preset = PRESETS.get(name)
    return preset.as_dict() if preset is not None else None
