"""The images `fcnseg predict` and `serve` write: class-id PNGs with the palette, and overlays."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Opacity of the class colours in the overlay images.
OVERLAY_ALPHA: float = 0.5


def palette_image(
    labels: np.ndarray, palette: list[list[int]] | list[tuple[int, int, int]]
) -> Image.Image:
    """A mode "P" PNG whose pixel values are class ids and whose palette is the dataset's."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def overlay_image(
    rgb: np.ndarray, labels: np.ndarray, palette, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The input and, beside it, the input blended with the class colours (for eyeballing)."""
    table = np.asarray(palette, dtype=np.float32)
    colours = table[np.clip(labels, 0, len(table) - 1)]
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    side_by_side = np.concatenate([rgb.astype(np.float32), blended], axis=1)
    return Image.fromarray(side_by_side.clip(0, 255).astype(np.uint8), mode="RGB")
