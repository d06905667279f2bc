"""Coordinate maps of layers and paths, as Caffe's coord_map derives them."""

from __future__ import annotations

from fractions import Fraction

import pytest
from torch import nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.geometry import (
    BilinearResize,
    CoordMap,
    aligned_upsample,
    layer_map,
    path_map,
    whole_factor,
)

# --- geometry ----------------------------------------------------------------------------------


def test_layer_maps_follow_caffe_coord_map() -> None:
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    assert layer_map(conv) == CoordMap(Fraction(2), Fraction(0))
    pool = nn.MaxPool2d(2, 2)
    assert layer_map(pool) == CoordMap(Fraction(2), Fraction(1, 2))
    deconv = nn.ConvTranspose2d(1, 1, 4, stride=2)
    # A deconvolution inverts the convolution with the same kernel/stride: composing gives id.
    assert layer_map(nn.Conv2d(1, 1, 4, stride=2)).then(layer_map(deconv)) == CoordMap()
    assert path_map([nn.ReLU(), nn.Dropout()]) == CoordMap()
    resize = layer_map(BilinearResize(4))
    assert resize.scale == Fraction(1, 4) and resize.offset == Fraction(-3, 8)


def test_unknown_layer_type_is_rejected() -> None:
    class Mystery(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="Mystery"):
        layer_map(Mystery())


def test_whole_factor_accepts_whole_upsampling_factors_only() -> None:
    assert whole_factor(Fraction(32), "final factor") == 32
    for value in (Fraction(3, 2), Fraction(1, 2), Fraction(0)):
        with pytest.raises(ModelOptionError, match=f"final factor is {value}"):
            whole_factor(value, "final factor")


def test_aligned_upsample_takes_the_smaller_kernel_for_a_half_pixel_shift() -> None:
    """Kernel 2f (4 for f = 2) shifts by (k - 1) / 2 = 1.5 input pixels: a map centred on whole
    pixels comes out half a pixel off, so the 3 kernel is taken (the release's AlexNet rule, 63
    instead of 64); a map centred between pixels keeps the standard kernel. A parameter-free
    bilinear resize has no kernel to change, so the misaligned map is refused in one line."""
    on_pixels = CoordMap(Fraction(2), Fraction(0))
    layer, offset = aligned_upsample(3, 2, "deconv_frozen", on_pixels, CoordMap(), "test crop")
    assert layer.kernel_size == (3, 3) and offset == -1
    between = CoordMap(Fraction(2), Fraction(1, 2))
    layer, offset = aligned_upsample(3, 2, "deconv_frozen", between, CoordMap(), "test crop")
    assert layer.kernel_size == (4, 4) and offset == -1
    with pytest.raises(ModelOptionError, match="half a pixel"):
        aligned_upsample(3, 2, "bilinear", on_pixels, CoordMap(), "test crop")
