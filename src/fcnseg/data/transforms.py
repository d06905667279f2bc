"""Joint image/mask transforms and the input normalisation presets.

Every transform is a small picklable class taking and returning `(image, mask)`, so the
factories' results work in DataLoader worker processes. Geometry is applied to image and mask
together; masks are ALWAYS resized with nearest-neighbour interpolation (labels must never be
blended) and padded with the void label; photometric changes touch the image only.
Randomness comes from torch's global generator, which DataLoader seeds per worker, so workers
never repeat each other's augmentations.

Normalisation presets (the `normalization` attribute of every fcnseg model names one):
- "imagenet": RGB in [0, 1], minus the ImageNet mean, divided by its std (torchvision/timm).
- "tf_lite": RGB in [0, 1], minus 0.5, divided by 0.5 (TensorFlow EfficientNet-Lite weights).
- "caffe_bgr": BGR in [0, 255] minus the Caffe VGG mean pixel (the original FCN release).
- "caffe_bgr_raw": BGR in [0, 255], nothing subtracted (the SegNet release).
Each preset is an alias of per-channel numbers; other inputs (1 or N bands) are normalised by
numbers measured on their training data (fcnseg.data.normalization states the rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data import normalization as numbers
from fcnseg.data.normalization import Normalization, as_float01

PRESETS: tuple[str, ...] = tuple(numbers.PRESETS)
_UINT8_MAX = 255.0
#: What `normalize` accepts: a preset name, numbers, or their JSON form {mean, std}.
NormalizationSpec = str | Normalization | dict


def _check_preset(preset: NormalizationSpec) -> Normalization:
    return numbers.resolve(preset)


def _as_float01(image: Tensor) -> Tensor:
    """uint8 0-255 -> float 0-1; a float image is taken to be 0-1 already."""
    return as_float01(image)


def normalize(image: Tensor, preset: NormalizationSpec) -> Tensor:
    """Normalise an image (uint8 0-255 or float 0-1; CxHxW or NxCxHxW) for a model: a preset
    name or per-channel numbers (fcnseg.data.normalization states the rule)."""
    return numbers.resolve(preset).apply(image)


def denormalize(image: Tensor, preset: NormalizationSpec, as_uint8: bool = False) -> Tensor:
    """Invert `normalize`: values in [0, 1] (or uint8 0-255 with `as_uint8`), for overlays."""
    rgb = numbers.resolve(preset).invert(image).clamp(0.0, 1.0)
    if as_uint8:
        return (rgb * _UINT8_MAX).round().to(torch.uint8)
    return rgb


def _resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bilinear (antialiased when shrinking) for the image, nearest for the mask."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    # uint8 stays uint8: torch's integer bilinear kernel is about 2.5x faster than float's.
    resized = F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]
    label = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return resized, label.to(mask.dtype)


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        for transform in self.transforms:
            image, mask = transform(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to a fixed (height, width); masks with nearest-neighbour interpolation."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return _resize_pair(image, mask, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomScale:
    """Rescale by a factor drawn uniformly from `scale_range` (same factor for both axes)."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (low, high)

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()
        height, width = image.shape[-2:]
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return _resize_pair(image, mask, size)

    def __repr__(self) -> str:
        return f"RandomScale({self.scale_range})"


class RandomCrop:
    """Random crop of `size`, padding first (bottom/right) where the input is smaller.

    The image is padded with `image_fill` (0 after normalisation = the mean pixel) and the
    mask with `ignore_index`, so padding never contributes to the loss.
    """

    def __init__(
        self,
        size: tuple[int, int],
        ignore_index: int = VOC_IGNORE_INDEX,
        image_fill: float = 0.0,
        pad: bool = True,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.ignore_index = ignore_index
        self.image_fill = image_fill
        self.pad = pad

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.pad:
            image, mask = PadTo(self.size, self.ignore_index, self.image_fill)(image, mask)
        height, width = image.shape[-2:]
        crop_h, crop_w = min(self.size[0], height), min(self.size[1], width)
        top = int(torch.randint(0, height - crop_h + 1, ()).item())
        left = int(torch.randint(0, width - crop_w + 1, ()).item())
        return (
            image[..., top : top + crop_h, left : left + crop_w],
            mask[..., top : top + crop_h, left : left + crop_w],
        )

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, ignore_index={self.ignore_index})"


class PadTo:
    """Pad (bottom/right) to at least `size`: image with `image_fill`, mask with the void label."""

    def __init__(
        self, size: tuple[int, int], ignore_index: int = VOC_IGNORE_INDEX, image_fill: float = 0.0
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.ignore_index = ignore_index
        self.image_fill = image_fill

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        height, width = image.shape[-2:]
        pad_h, pad_w = max(0, self.size[0] - height), max(0, self.size[1] - width)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=self.image_fill)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return image, mask

    def __repr__(self) -> str:
        return f"PadTo({self.size}, ignore_index={self.ignore_index})"


class RandomHorizontalFlip:
    """Mirror image and mask together with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if torch.rand(()).item() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation on the image only (float 0-1 input).

    Each factor is drawn from [1 - strength, 1 + strength]; the mask is returned untouched.
    """

    def __init__(self, strength: float = 0.2) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"jitter strength must be in [0, 1), got {strength}")
        self.strength = strength

    def _factor(self) -> float:
        return 1.0 + self.strength * (2.0 * torch.rand(()).item() - 1.0)

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if image.shape[-3] != 3:
            raise ValueError(
                f"ColorJitter needs RGB images, got {image.shape[-3]} channels; set data.jitter=0"
            )
        x = _as_float01(image)
        x = x * self._factor()
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        x = (x - gray.mean()) * self._factor() + gray.mean()
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        x = (x - gray) * self._factor() + gray
        return x.clamp(0.0, 1.0), mask

    def __repr__(self) -> str:
        return f"ColorJitter({self.strength})"


class ToFloat:
    """uint8 0-255 image -> float32 0-1; the mask becomes int64."""

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return _as_float01(image), mask.long()

    def __repr__(self) -> str:
        return "ToFloat()"


class Normalize:
    """Apply `normalize(image, preset)`; the mask passes through as int64."""

    def __init__(self, preset: NormalizationSpec) -> None:
        self.numbers = _check_preset(preset)
        self.preset = preset

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.numbers.apply(image), mask.long()

    def __repr__(self) -> str:
        return f"Normalize({self.numbers.name!r})"


def train_transform(
    preset: NormalizationSpec,
    crop_size: tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool = True,
    jitter: float = 0.0,
    ignore_index: int = VOC_IGNORE_INDEX,
    augment: object | str | None = None,
) -> Compose:
    """Training pipeline: scale, crop, flip, jitter, normalise, then pad to `crop_size`.

    `augment` (a torchvision.transforms.v2 / albumentations pipeline, or the recipe's
    "module:factory" path, see data/pipelines.py) replaces scale, crop, flip and jitter; the
    float conversion, normalisation and padding stay.

    The crop comes before the float conversion (less to convert after an upscale) and the
    padding after normalisation, so that padding with 0 is padding with the mean pixel in every
    preset. `scale_range=None` or (1, 1) disables scaling; `crop_size=None` keeps the (scaled)
    full image, which only batches if all images share a size.
    """
    if augment is not None:
        from fcnseg.data.pipelines import ExternalPipeline

        steps: list = [ExternalPipeline(augment), ToFloat(), Normalize(preset)]
        if crop_size is not None:
            steps.append(PadTo(crop_size, ignore_index=ignore_index, image_fill=0.0))
        return Compose(steps)
    steps = []
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        steps.append(RandomScale(scale_range))
    if crop_size is not None:
        steps.append(RandomCrop(crop_size, ignore_index=ignore_index, pad=False))
    if hflip:
        steps.append(RandomHorizontalFlip())
    steps.append(ToFloat())
    if jitter > 0:
        steps.append(ColorJitter(jitter))
    steps.append(Normalize(preset))
    if crop_size is not None:
        steps.append(PadTo(crop_size, ignore_index=ignore_index, image_fill=0.0))
    return Compose(steps)


def eval_transform(preset: NormalizationSpec, size: tuple[int, int] | None = None) -> Compose:
    """Evaluation pipeline: optional resize to `size` (nearest for the mask), then normalise."""
    steps: list = []
    if size is not None:
        steps.append(Resize(size))
    steps += [ToFloat(), Normalize(preset)]
    return Compose(steps)
