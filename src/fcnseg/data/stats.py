"""Per-channel input statistics of a training set: the normalisation of 1- and N-band data.

Why measured: an RGB encoder's weights come with the numbers they were trained on (ImageNet's
mean and std); an 8-band 16-bit satellite set or a 12-bit greyscale scan has none, and its
values may fill a small part of [0, 1] (12-bit data in a 16-bit file reaches 4095 / 65535).
Subtracting each band's mean and dividing by its std puts every band on the scale the first
layer expects whatever the sensor's bit depth. The numbers are stored with the weights
("normalization_stats"), so inference normalises exactly as training did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fcnseg.data.normalization import PER_CHANNEL, Normalization, as_float01
from fcnseg.errors import DataError

#: Images decoded for the statistics: all of a small set, else this many spread over it (the
#: first, the last and evenly spaced ones between), which pins mean and std to a few percent.
STATISTICS_IMAGES = 64
#: A band whose std is below this is constant; it gets std 1 (it normalises to 0 either way).
MIN_STD = 1e-6


def channel_statistics(dataset: Any, limit: int = STATISTICS_IMAGES) -> Normalization:
    """Mean and std of every channel over the images of `dataset` (decoded by `load`, no
    augmentation), on the [0, 1] scale `fcnseg.data.normalization` applies them to."""
    if len(dataset) == 0:
        raise DataError("cannot compute per-channel statistics of an empty training set")
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    pixels = 0
    from fcnseg.data.check import preflight_indices  # the same spread as the pre-flight's

    for index in preflight_indices(len(dataset), limit):
        image, _ = dataset.load(index)
        values = as_float01(image).double().flatten(1).numpy()  # C x (H*W)
        if total is not None and values.shape[0] != total.shape[0]:
            raise DataError(
                f"{dataset.sample_name(index)}: {values.shape[0]} channels but earlier images "
                f"have {total.shape[0]}; give every image the same bands"
            )
        total = values.sum(1) + (0 if total is None else total)
        squares = (values**2).sum(1) + (0 if squares is None else squares)
        pixels += values.shape[1]
    assert total is not None and squares is not None
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    std = np.where(std < MIN_STD, 1.0, std)
    return Normalization(
        tuple(float(v) for v in mean), tuple(float(v) for v in std), name=PER_CHANNEL
    )


def describe_channel_statistics(
    root: str | None, data_format: str, splits: list[str] | None, channels: int
) -> str:
    """`fcnseg data check --channels N`: per-band mean and std of the first split, one line per
    band, as training computes them (same images, same decoding)."""
    from fcnseg.data.datasets.registry import build_dataset

    split = (splits or ["train"])[0]
    dataset = build_dataset(data_format, root, split)
    dataset.image_channels = channels
    stats = channel_statistics(dataset)
    used = min(len(dataset), STATISTICS_IMAGES)
    lines = [f"per-channel statistics of {split} ({used} images, values on the 0-1 scale):"]
    lines += [
        f"  band {index}: mean {mean:.6f}  std {std:.6f}"
        for index, (mean, std) in enumerate(zip(stats.mean, stats.std, strict=True))
    ]
    return "\n".join(lines)
