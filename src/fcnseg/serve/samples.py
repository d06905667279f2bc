"""Sample scenes the page offers: real CamVid training frames read from this machine's copy.

Why real frames: the shipped models are CamVid models, and the procedural scenes of the
synthetic dataset are not CamVid; both models mis-segmented them (sky as road, a car as
building), so the first click on the page showed the model failing. The frames below are from
CamVid's training split (G. Brostow, J. Fauqueur, R. Cipolla, "Semantic Object Classes in Video:
A High-Definition Ground Truth Database", Pattern Recognition Letters 2008; SegNet's 11-class
copy), one per driving sequence, each with the road, sky and buildings and most with cars; both
shipped models score above 0.80 mean IU on each (tests/test_serve_samples.py checks >= 0.75).

Why read, not shipped: CamVid's terms allow research and non-commercial use with attribution and
the data directory's notes say not to redistribute it inside the repository, while fcnseg is
MIT. So the frames are read from the data directory (`$FCNSEG_DATA`, else `../shared/data`, see
fcnseg.data.io.default_data_dir) when it holds CamVid; without it the page falls back to the
generated scenes, named as such.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

#: CamVid training frames offered as samples (train/<name>.png, labels in trainannot/).
SAMPLE_FRAMES: tuple[str, ...] = (
    "0016E5_05640",  # a street with cars, pavement, poles and a sign
    "0001TP_007410",  # a junction with a cyclist and cars
    "0006R0_f02790",  # a road between parked cars
    "0016E5_02220",  # buildings, pavement and a car
)
#: How many sample scenes /v1/samples offers, and the size of the generated fallback scenes.
SAMPLE_COUNT: int = len(SAMPLE_FRAMES)
SAMPLE_SIZE: tuple[int, int] = (360, 480)
_SAMPLE_SEED: int = 20150607  # CVPR 2015, the FCN paper's conference date


def camvid_frame(index: int, folder: str = "train") -> Path | None:
    """The CamVid file of sample `index` (`folder` "train" or "trainannot"), None when absent."""
    from fcnseg.data.io import default_data_dir

    _check(index)
    path = default_data_dir() / "camvid" / folder / f"{SAMPLE_FRAMES[index]}.png"
    return path if path.is_file() else None


def sample_name(index: int) -> str:
    """What the page shows under sample `index`: the CamVid frame, or a generated scene."""
    if camvid_frame(index) is not None:
        return f"CamVid {SAMPLE_FRAMES[index]}"
    return f"Generated scene {index + 1} (not CamVid)"


def sample_array(index: int) -> np.ndarray:
    """Sample scene `index` as uint8 H x W x 3: the CamVid frame when this machine has it, else
    a generated street scene (the same on every machine)."""
    path = camvid_frame(index)
    if path is not None:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    from fcnseg.data.datasets.synthetic import render_scene

    rng = np.random.default_rng((_SAMPLE_SEED, index))
    image, _ = render_scene(rng, *SAMPLE_SIZE)
    return image


def _check(index: int) -> None:
    if not 0 <= index < SAMPLE_COUNT:
        raise IndexError(f"sample {index} does not exist; there are {SAMPLE_COUNT}")


@lru_cache(maxsize=SAMPLE_COUNT)
def sample_png(index: int) -> bytes:
    """Sample scene `index` as PNG bytes (cached: the page asks for each one often)."""
    buffer = io.BytesIO()
    Image.fromarray(sample_array(index)).save(buffer, format="PNG")
    return buffer.getvalue()
