"""U-Net's border-weight map (Ronneberger et al. 2015, section 3, equation 2: w(x) = w_c(x) +
w0 exp(-(d1 + d2)^2 / (2 sigma^2)), w0 = 10, sigma = 5) on hand-made masks, and the loss that
uses it as a recipe option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fcnseg.config import config_from_dict
from fcnseg.errors import RecipeError
from fcnseg.losses import BorderWeightedCrossEntropy, PixelCrossEntropy, border_weight_map


def two_touching_cells() -> np.ndarray:
    """Background 0; two cells (class 1) in rows 4..13, columns 2..9 and 12..19: a 2-px gap."""
    mask = np.zeros((30, 40), dtype=np.int64)
    mask[4:14, 2:10] = 1
    mask[4:14, 12:20] = 1
    return mask


def test_the_weight_is_high_in_the_gap_between_two_touching_cells():
    weights = border_weight_map(two_touching_cells())
    # Column 10: 1 px from the left cell, 2 px from the right one (and the reverse at 11).
    expected = 10.0 * math.exp(-((1 + 2) ** 2) / (2 * 5.0**2))
    assert weights[8, 10] == pytest.approx(expected, rel=1e-5)
    assert weights[8, 11] == pytest.approx(expected, rel=1e-5)
    assert weights[8, 10] > 8.0
    assert weights[4:14, 2:10].max() == 0.0  # on the objects: no border term
    assert weights[28, 38] < 0.01  # far from both
    # Next to one cell only (left of the left cell), d2 is across the other cell: low.
    assert weights[8, 0] < 1.0 < weights[8, 10]


def test_one_object_or_none_gives_no_border_term_and_void_is_not_an_object():
    single = np.zeros((20, 20), dtype=np.int64)
    single[5:10, 5:10] = 1
    assert not border_weight_map(single).any()
    assert not border_weight_map(np.zeros((8, 8), dtype=np.int64)).any()
    void = two_touching_cells()
    void[4:14, 12:20] = 255
    assert not border_weight_map(void, ignore_index=255).any()


def test_semantic_masks_use_each_classs_connected_components():
    """Two regions of different classes, and two separate regions of one class, both count."""
    mask = two_touching_cells()
    mask[4:14, 12:20] = 2
    assert border_weight_map(mask)[8, 10] == pytest.approx(
        border_weight_map(two_touching_cells())[8, 10]
    )
    merged = two_touching_cells()
    merged[4:14, 10:12] = 1  # the gap filled: one object, no gap
    assert not border_weight_map(merged).any()


def test_the_loss_weighs_the_gap_and_reduces_to_cross_entropy_without_it():
    target = torch.from_numpy(np.stack([two_touching_cells()]))
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 30, 40)
    plain = PixelCrossEntropy(ignore_index=255)(logits, target)
    off = BorderWeightedCrossEntropy(ignore_index=255, w0=0.0)(logits, target)
    assert torch.allclose(plain, off)
    criterion = BorderWeightedCrossEntropy(ignore_index=255, normalization="sum")
    weights = criterion.pixel_weights(target)
    assert weights[0, 8, 10] == pytest.approx(1.0 + 10.0 * math.exp(-9 / 50), rel=1e-5)
    # A wrong pixel in the gap costs more than the same mistake far from the cells.
    confident = torch.zeros(1, 2, 30, 40)
    confident[:, 0] = 5.0  # every pixel "background", correct off the cells
    gap_wrong, far_wrong = confident.clone(), confident.clone()
    gap_wrong[0, :, 8, 10] = torch.tensor([0.0, 5.0])
    far_wrong[0, :, 28, 38] = torch.tensor([0.0, 5.0])
    assert criterion(gap_wrong, target) > criterion(far_wrong, target) + 20


def test_the_recipe_option_builds_the_border_loss_and_checks_its_numbers():
    from fcnseg.engine.setup import build_criterion

    class Tiny:
        ignore_index = 255

    config = config_from_dict({"train": {"border_weight": 10.0, "border_sigma": 5.0}})
    criterion = build_criterion(config, Tiny(), 2)
    assert isinstance(criterion, BorderWeightedCrossEntropy) and criterion.w0 == 10.0
    assert isinstance(build_criterion(config_from_dict({}), Tiny(), 2), PixelCrossEntropy)
    with pytest.raises(RecipeError, match="train.border_sigma"):
        config_from_dict({"train": {"border_sigma": 0.0}})
