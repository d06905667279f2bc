"""Sliding-window inference streamed down an image too large to hold: one band of rows at a time.

`sliding_window_logits` keeps the blended logits of the whole image (C x H x W floats). Here the
tiles are visited in the same order (tile rows top to bottom, left to right in a row), and only
the band of rows the current tile row covers is kept: once a tile row is done, the rows above
the next tile row's start can receive no more tiles, so their blended logits are final and are
handed to the caller, and the band moves down. The per-pixel sums are the same float32 terms
added in the same order (`sliding.add_weighted_tile`, `sliding.add_window`), so the logits are
bit-identical to the in-memory sliding mode's (tile_batch 1; batching changes only which tiles
share a forward call).

Memory: the band's sums (C x tile_h x W float32), its weights (tile_h x W), the input rows of
one tile row (tile_h x W x S samples of the file's type: uint8, uint16 or float32) and one block of RELEASE_ROWS finished rows (C x 64 x W
float32): O(tile_h x W), whatever the image's height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fcnseg.errors import UsageError
from fcnseg.inference.sliding import (
    DEFAULT_OVERLAP,
    Blend,
    _pair,
    add_weighted_tile,
    add_window,
    blend_window,
    tile_starts,
    tile_strides,
)

#: Rows of blended logits handed over at a time: bounds the quotient's C x rows x W floats.
RELEASE_ROWS = 64
#: rows [top, bottom) of the image -> (bottom - top) x W x S samples (uint8, uint16, float32).
ReadRows = Callable[[int, int], np.ndarray]
#: an h x w x S crop -> the normalised 1 x C x h x w float batch the model takes.
Prepare = Callable[[np.ndarray], Tensor]
#: a normalised batch -> logits (one head) at its input size.
TileForward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an image go: sizes, strides and start offsets (as the sliding mode)."""

    height: int
    width: int
    tile: tuple[int, int]
    starts_y: list[int]
    starts_x: list[int]

    @classmethod
    def of(
        cls,
        height: int,
        width: int,
        tile_size: int | tuple[int, int],
        tile_stride: int | tuple[int, int] | None = None,
        overlap: float = DEFAULT_OVERLAP,
    ) -> TileGrid:
        tile = _pair(tile_size, "tile_size")
        stride = tile_strides(tile, tile_stride, overlap)
        # An image smaller than a tile is padded (bottom/right) up to it, as sliding does.
        starts_y = tile_starts(max(height, tile[0]), tile[0], stride[0])
        starts_x = tile_starts(max(width, tile[1]), tile[1], stride[1])
        return cls(height, width, tile, starts_y, starts_x)

    @property
    def padded(self) -> tuple[int, int]:
        return max(self.height, self.tile[0]), max(self.width, self.tile[1])

    def forwards(self) -> int:
        """Tiles run through the model."""
        return len(self.starts_y) * len(self.starts_x)


class _Band:
    """The blended sums and weights of rows [top, top + tile_h) over the padded width."""

    def __init__(self, grid: TileGrid, window: Tensor) -> None:
        self.grid, self.window, self.top = grid, window, 0
        self.sums: Tensor | None = None
        self.weight = torch.zeros(grid.tile[0], grid.padded[1], device=window.device)

    def add(self, logits: Tensor, y: int, xs: list[int]) -> None:
        """Add the logits of tiles (y, x) for x in xs (batched in that order)."""
        if logits.shape[-2:] != self.window.shape:
            raise ValueError(
                f"the model returned logits of size {tuple(logits.shape[-2:])} for a "
                f"{tuple(self.window.shape)} tile; models must return logits at their input size"
            )
        if self.sums is None:
            size = (1, logits.shape[1], self.grid.tile[0], self.grid.padded[1])
            self.sums = torch.zeros(size, device=self.window.device)
        for index, x in enumerate(xs):
            add_weighted_tile(self.sums, logits[index : index + 1], self.window, y - self.top, x)
        for x in xs:
            add_window(self.weight, self.window, y - self.top, x)

    def release(self, rows: int) -> Iterator[tuple[int, Tensor]]:
        """(top, final blended logits 1 x C x r x W) of the band's first `rows` rows (cut at
        the image's bottom and right edges) in blocks of at most RELEASE_ROWS rows, so the
        quotient is never a whole band; then the band moves down by `rows`."""
        assert self.sums is not None
        keep = min(rows, self.grid.height - self.top)
        for first in range(0, keep, RELEASE_ROWS):
            last = min(first + RELEASE_ROWS, keep)
            quotient = self.sums[:, :, first:last] / self.weight[first:last]
            yield self.top + first, quotient[..., : self.grid.width]
        tile_h = self.grid.tile[0]
        # Move rows [rows, tile_h) to the top in chunks no taller than the shift, so that no
        # chunk's source overlaps its destination.
        for first in range(0, tile_h - rows, rows):
            last = min(first + rows, tile_h - rows)
            self.sums[:, :, first:last] = self.sums[:, :, first + rows : last + rows]
            self.weight[first:last] = self.weight[first + rows : last + rows]
        self.sums[:, :, max(0, tile_h - rows) :] = 0
        self.weight[max(0, tile_h - rows) :] = 0
        self.top += rows


def _tile_inputs(rows: np.ndarray, grid: TileGrid, xs: list[int], prepare: Prepare) -> Tensor:
    """The normalised crops of tiles at columns xs from a tile row's input rows, padded (with 0,
    the normalised mean, as sliding pads) where the image is smaller than the tile."""
    tile_h, tile_w = grid.tile
    crops = []
    for x in xs:
        crop = prepare(rows[:, x : x + tile_w])
        pad_bottom, pad_right = tile_h - crop.shape[-2], tile_w - crop.shape[-1]
        if pad_bottom or pad_right:
            crop = F.pad(crop, (0, pad_right, 0, pad_bottom), value=0.0)
        crops.append(crop)
    return torch.cat(crops, dim=0) if len(crops) > 1 else crops[0]


def stream_blended_logits(
    forward: TileForward,
    read_rows: ReadRows,
    grid: TileGrid,
    prepare: Prepare,
    *,
    blend: Blend = "gaussian",
    tile_batch: int = 1,
    device: torch.device | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """(top, blended logits 1 x C x rows x W) for consecutive bands covering the image.

    Arguments as `sliding_window_logits`' (the grid holds tile size and strides); the image is
    read through `read_rows` one tile row at a time and never held whole.
    """
    if tile_batch < 1:
        raise UsageError(f"tile_batch must be >= 1, got {tile_batch}")
    band = _Band(grid, blend_window(*grid.tile, blend, device=device))
    for index, y in enumerate(grid.starts_y):
        rows = read_rows(y, min(y + grid.tile[0], grid.height))
        for first in range(0, len(grid.starts_x), tile_batch):
            xs = grid.starts_x[first : first + tile_batch]
            with torch.no_grad():
                band.add(forward(_tile_inputs(rows, grid, xs, prepare)), y, xs)
        next_y = grid.starts_y[index + 1] if index + 1 < len(grid.starts_y) else grid.padded[0]
        yield from band.release(next_y - y)
