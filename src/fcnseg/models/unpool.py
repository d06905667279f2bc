"""Max-unpooling by remembered pooling indices, written with a scatter that ONNX exports.

Why not `F.max_unpool2d`: with a runtime output size the TorchScript-based ONNX exporter fails
on it (torch 2.14: its size check raises "cond must be a bool, but got a Tensor"), while an
encoder-decoder such as ENet must unpool at every input size. Scattering the values into a zero map
shaped like the tensor that was pooled gives the same result as `F.max_unpool2d` (tested) and
exports as ConstantOfShape / ScatterElements nodes whose shape follows the input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def max_unpool(values: Tensor, indices: Tensor, like: Tensor) -> Tensor:
    """Place `values` (N x C x h x w) at `indices` (per-plane flat positions, as returned by
    `max_pool2d(..., return_indices=True)`) in zeros shaped like `like` (N x C x H x W)."""
    if values.shape != indices.shape or values.shape[:2] != like.shape[:2]:
        raise ValueError(
            f"max_unpool: values {tuple(values.shape)}, indices {tuple(indices.shape)} and the "
            f"pooled map {tuple(like.shape)} must agree in N x C (and values with indices)"
        )
    planes = torch.zeros_like(like, dtype=values.dtype).flatten(2)
    planes = planes.scatter(2, indices.flatten(2), values.flatten(2))
    return planes.view_as(like)
