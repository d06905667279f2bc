"""Tests of the weight surgery: bilinear kernels, fc-to-conv transplants."""

from __future__ import annotations

import pytest
import torch

from fcnseg.models.surgery import (
    bilinear_kernel,
    bilinear_kernel_size,
    make_bilinear_upsample,
)


def _caffe_bilinear_reference(size: int) -> torch.Tensor:
    """Caffe's BilinearFiller written element by element (independent of the closed form)."""
    f = -(-size // 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    out = torch.empty(size, size)
    for y in range(size):
        for x in range(size):
            out[y, x] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return out


@pytest.mark.parametrize("factor", [2, 3, 8, 16, 32])
def test_bilinear_kernel_matches_caffe_filler(factor: int) -> None:
    size = bilinear_kernel_size(factor)
    assert size == 2 * factor - factor % 2
    weight = bilinear_kernel(3, factor)
    assert weight.shape == (3, 3, size, size)
    reference = _caffe_bilinear_reference(size)
    for i in range(3):
        torch.testing.assert_close(weight[i, i], reference)
        for j in range(3):
            if i != j:
                assert weight[i, j].abs().max() == 0


def test_bilinear_kernel_known_values_factor_2() -> None:
    line = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(1, 2)[0, 0], torch.outer(line, line))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bilinear_upsample_reproduces_constant_and_linear_ramps(factor: int) -> None:
    """Interior of the upsampled map of a linear ramp must itself be linear (bilinear interp)."""
    layer = make_bilinear_upsample(2, factor)
    assert not layer.weight.requires_grad and layer.bias is None
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 2, 6, 6).contiguous()
    out = layer(ramp)
    interior = out[0, 0, out.shape[2] // 2, factor:-factor]
    steps = interior[1:] - interior[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 1.0 / factor))
    constant = layer(torch.ones(1, 2, 5, 5))[0, 1, factor:-factor, factor:-factor]
    torch.testing.assert_close(constant, torch.ones_like(constant))


def test_make_bilinear_upsample_learnable() -> None:
    assert make_bilinear_upsample(4, 2, learnable=True).weight.requires_grad


def test_bilinear_kernel_rejects_bad_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        bilinear_kernel(1, 0)
