"""Sample scenes the page offers, drawn by the package itself (no files shipped, no download).

They come from the procedural street generator of the synthetic dataset, so someone trying the
page without a photo at hand still gets a street-like scene; each is fixed by its number.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

#: How many sample scenes /v1/samples offers, and their size (CamVid's 360 x 480).
SAMPLE_COUNT: int = 4
SAMPLE_SIZE: tuple[int, int] = (360, 480)
_SAMPLE_SEED: int = 20150607  # CVPR 2015, the FCN paper's conference date


def sample_array(index: int) -> np.ndarray:
    """Sample scene `index` as uint8 H x W x 3 (the same on every machine)."""
    from fcnseg.data.datasets.synthetic import render_scene

    if not 0 <= index < SAMPLE_COUNT:
        raise IndexError(f"sample {index} does not exist; there are {SAMPLE_COUNT}")
    rng = np.random.default_rng((_SAMPLE_SEED, index))
    image, _ = render_scene(rng, *SAMPLE_SIZE)
    return image


@lru_cache(maxsize=SAMPLE_COUNT)
def sample_png(index: int) -> bytes:
    """Sample scene `index` as PNG bytes (cached: the page asks for each one often)."""
    buffer = io.BytesIO()
    Image.fromarray(sample_array(index)).save(buffer, format="PNG")
    return buffer.getvalue()
