"""Sliding-window inference: predict a large image tile by tile and blend the overlaps.

An FCN accepts any input size, so whole-image inference is the default. Tiling exists for two
reasons: memory (the activations of a 2048x1024 image through VGG16 need several GiB, while a tile
bounds them by the tile's size) and fixed-shape engines (an exported or compiled model that is
fastest at one shape). The only state that grows with the image is the accumulator of blended
logits (C x H x W floats) and one weight plane.

Tiles are laid on a regular grid with the last row/column pushed back so that it ends flush with
the image border: every tile holds real pixels and no tile is predicted from padding, except when
the image itself is smaller than the tile, in which case the image is padded (bottom/right) up to
the tile and the padded part of the output is discarded. All tiles therefore have exactly the tile
size, which keeps shape-specialised engines on their fast path.

Overlapping logits are averaged with per-pixel weights: "uniform" (plain mean), "gaussian" (a
2-D Gaussian centred on the tile, so the tile centre, which saw the most context, dominates) or
"ramp" (a separable linear ramp, the same idea with a linear falloff).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fcnseg.errors import DataError, UsageError
from fcnseg.models.protocol import as_heads, like_output

ModelOutput = Tensor | dict[str, Tensor]
Forward = Callable[[Tensor], ModelOutput]
Blend = Literal["uniform", "gaussian", "ramp"]

BLEND_MODES: tuple[str, ...] = ("uniform", "gaussian", "ramp")
#: Standard deviation of the Gaussian blending window as a fraction of the tile side. 1/8 puts
#: the tile border at 4 sigma (weight ~3e-4 before the floor below): neighbouring tiles hand
#: over smoothly in the overlap, as in common medical-imaging sliding-window practice.
GAUSSIAN_SIGMA_FRACTION: float = 1.0 / 8.0
#: Smallest blending weight. Border pixels of the image are covered by a single tile, so their
#: weight must stay strictly positive for the normalisation to be defined there.
MIN_BLEND_WEIGHT: float = 1e-3
#: Default overlap between neighbouring tiles, as a fraction of the tile side (stride = 2/3 tile).
DEFAULT_OVERLAP: float = 1.0 / 3.0


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise UsageError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with step `stride`.

    The last start is `length - tile` so the last tile ends on the border instead of running
    into padding; a length not larger than the tile gives the single start 0.
    """
    if stride < 1 or tile < 1:
        raise UsageError(f"tile ({tile}) and stride ({stride}) must be >= 1")
    if stride > tile:
        raise UsageError(
            f"tile stride {stride} is larger than the tile {tile}: pixels would be skipped; "
            "pass a stride <= the tile size"
        )
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(
    height: int, width: int, blend: Blend = "gaussian", device: torch.device | None = None
) -> Tensor:
    """Per-pixel weights (height x width, max 1, min >= MIN_BLEND_WEIGHT) of one tile."""
    if blend not in BLEND_MODES:
        raise UsageError(f"blend must be one of {BLEND_MODES}, got {blend!r}")

    def axis(n: int) -> Tensor:
        positions = torch.arange(n, dtype=torch.float32, device=device)
        if blend == "uniform":
            return torch.ones(n, device=device)
        if blend == "gaussian":
            centre = (n - 1) / 2.0
            sigma = max(n * GAUSSIAN_SIGMA_FRACTION, 1e-6)
            return torch.exp(-0.5 * ((positions - centre) / sigma) ** 2)
        # ramp: distance to the nearer edge, counting the edge pixel itself as 1.
        distance = torch.minimum(positions + 1, n - positions)
        return distance / distance.max()

    window = torch.outer(axis(height), axis(width))
    window = window / window.max()
    return window.clamp_min(MIN_BLEND_WEIGHT)


def _iter_tiles(
    starts_y: list[int], starts_x: list[int], tile_batch: int
) -> Iterator[list[tuple[int, int]]]:
    positions = [(y, x) for y in starts_y for x in starts_x]
    for first in range(0, len(positions), tile_batch):
        yield positions[first : first + tile_batch]


def tile_strides(
    tile: tuple[int, int], tile_stride: int | tuple[int, int] | None, overlap: float
) -> tuple[int, int]:
    """Step between tiles: `tile_stride`, or tile * (1 - overlap) (at least 1 pixel)."""
    if tile_stride is not None:
        return _pair(tile_stride, "tile_stride")
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"overlap must be in [0, 1), got {overlap}")
    return tuple(max(1, math.floor(side * (1.0 - overlap))) for side in tile)  # type: ignore[return-value]


def add_weighted_tile(sums: Tensor, logits: Tensor, window: Tensor, y: int, x: int) -> None:
    """Add one tile's window-weighted logits (N x C x tile) to `sums` (N x C x H x W) at (y, x).

    Why shared (with `add_window`): the in-memory sliding mode and the streamed raster path
    (`fcnseg.inference.raster`) must add the same float32 terms in the same order, so that
    their blended logits are bit-identical.
    """
    tile_h, tile_w = window.shape
    sums[:, :, y : y + tile_h, x : x + tile_w] += logits.float() * window


def add_window(weight: Tensor, window: Tensor, y: int, x: int) -> None:
    """Add one tile's blending window to the weight plane (H x W) at (y, x)."""
    tile_h, tile_w = window.shape
    weight[y : y + tile_h, x : x + tile_w] += window


class _BlendedSums:
    """Window-weighted sums of every head's tile logits over the padded image, and the weights.

    Why one accumulator per head: a multi-head model's heads have different class counts, and
    each is blended on its own; the weight plane is shared.
    """

    def __init__(self, batch: int, size: tuple[int, int], window: Tensor) -> None:
        self.batch, self.size, self.window = batch, size, window
        self.sums: dict[str, Tensor] = {}
        self.weight = torch.zeros(*size, device=window.device)

    def add(self, output: ModelOutput, group: list[tuple[int, int]]) -> None:
        """Add one forward's output: tiles in `group` order, each `batch` images long."""
        tile_h, tile_w = self.window.shape
        for key, logits in as_heads(output).items():
            if logits.shape[-2:] != (tile_h, tile_w):
                raise ValueError(
                    f"the model returned logits of size {tuple(logits.shape[-2:])} for a "
                    f"{tile_h}x{tile_w} tile; models must return logits at their input size"
                )
            if key not in self.sums:
                self.sums[key] = torch.zeros(
                    self.batch, logits.shape[1], *self.size, device=self.window.device
                )
            for index, (y, x) in enumerate(group):
                chunk = logits[index * self.batch : (index + 1) * self.batch]
                add_weighted_tile(self.sums[key], chunk, self.window, y, x)
        for y, x in group:
            add_window(self.weight, self.window, y, x)

    def means(self, height: int, width: int) -> dict[str, Tensor]:
        """Blended logits of each head, cropped to the unpadded `height` x `width`."""
        return {
            key: (total / self.weight)[:, :, :height, :width].contiguous()
            for key, total in self.sums.items()
        }


def sliding_window_logits(
    forward: Forward,
    images: Tensor,
    tile_size: int | tuple[int, int],
    tile_stride: int | tuple[int, int] | None = None,
    *,
    overlap: float = DEFAULT_OVERLAP,
    blend: Blend = "gaussian",
    tile_batch: int = 1,
    pad_value: float = 0.0,
) -> ModelOutput:
    """Logits N x C x H x W of `images` (N x 3 x H x W), predicted tile by tile.

    Args:
        forward: the model (or any callable) mapping a batch to logits at its input size, or to
            a dict of such tensors (multi-head models; every head is blended).
        tile_size: tile (height, width) or one int for square tiles.
        tile_stride: step between tiles; defaults to tile * (1 - overlap), at least 1 pixel.
        overlap: used only when `tile_stride` is None.
        blend: weighting of overlapping logits ("uniform", "gaussian", "ramp").
        tile_batch: tiles per forward call (of each image batch): more tiles per call is faster
            on wide machines, fewer bounds memory.
        pad_value: value of the padding when the image is smaller than a tile. 0 is the dataset
            mean for every normalisation preset, i.e. a neutral grey.
    """
    if images.dim() != 4:
        raise DataError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    if tile_batch < 1:
        raise UsageError(f"tile_batch must be >= 1, got {tile_batch}")
    tile_h, tile_w = _pair(tile_size, "tile_size")
    stride_h, stride_w = tile_strides((tile_h, tile_w), tile_stride, overlap)

    batch, _, height, width = images.shape
    pad_bottom, pad_right = max(0, tile_h - height), max(0, tile_w - width)
    if pad_bottom or pad_right:
        images = F.pad(images, (0, pad_right, 0, pad_bottom), value=pad_value)
    padded_h, padded_w = images.shape[-2:]
    starts_y = tile_starts(padded_h, tile_h, stride_h)
    starts_x = tile_starts(padded_w, tile_w, stride_w)
    window = blend_window(tile_h, tile_w, blend, device=images.device)

    sums = _BlendedSums(batch, (padded_h, padded_w), window)
    output: ModelOutput | None = None
    for group in _iter_tiles(starts_y, starts_x, tile_batch):
        crops = [images[:, :, y : y + tile_h, x : x + tile_w] for y, x in group]
        output = forward(torch.cat(crops, dim=0) if len(crops) > 1 else crops[0])
        sums.add(output, group)
    return like_output(sums.means(height, width), output)
