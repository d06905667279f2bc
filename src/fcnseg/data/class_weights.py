"""Class weights computed from a training set's pixel counts: the rules a recipe can name.

Why a module of its own: the rules are arithmetic on counts (`data.check` does the counting),
and each comes from a paper: median-frequency balancing (Eigen & Fergus 2015, used by SegNet
and the FCN CamVid recipes) and ENet's bounded inverse-log weighting (Paszke et al. 2016).
"""

from __future__ import annotations

import math

import torch

from fcnseg.constants import ENET_CLASS_WEIGHT_C


def median_frequency_weights(pixels: list[int], image_pixels: list[int]) -> list[float]:
    """w_c = median(freq) / freq_c over the classes that occur (0 for absent classes)."""
    freq = [p / t for p, t in zip(pixels, image_pixels, strict=True) if p > 0 and t > 0]
    if not freq:
        return [0.0] * len(pixels)
    median = float(torch.tensor(freq, dtype=torch.float64).median())
    ordered = sorted(freq)
    if len(ordered) % 2 == 0:  # torch.median takes the lower middle; use the usual mean of both
        middle = len(ordered) // 2
        median = (ordered[middle - 1] + ordered[middle]) / 2
    return [
        median / (p / t) if p > 0 and t > 0 else 0.0
        for p, t in zip(pixels, image_pixels, strict=True)
    ]


def enet_class_weights(shares: list[float], c: float = ENET_CLASS_WEIGHT_C) -> list[float]:
    """ENet's w_c = 1 / ln(c + p_c), p_c a class's share of all pixels (void included, as the
    release's histogram), 0 for absent classes. Why this rule: the weights stay between
    1/ln(1 + c) (about 1.4) and 1/ln(c) (about 50 for c = 1.02), so rare classes weigh more
    without the extreme weights that inverse frequency gives a class seen in a handful of
    pixels (ENet paper, section 5.1)."""
    return [1.0 / math.log(c + share) if share > 0 else 0.0 for share in shares]
