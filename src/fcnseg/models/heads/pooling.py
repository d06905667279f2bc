"""Adaptive average pooling written as two matrix products, so that ONNX graphs stay dynamic.

Why not `F.adaptive_avg_pool2d`: the TorchScript-based ONNX exporter can only write it as an
`AveragePool` with a kernel fixed from a known input size, so with dynamic height and width it
refuses the graph ("adaptive_avg_pool2d, input size not accessible"; torch 2.14). PSPNet's pyramid pools the feature map
into 1, 2, 3 and 6 bins at whatever size the image has, so the pooling here builds PyTorch's own
bin rule from the runtime size: bin i of b over n cells covers [floor(i n / b), ceil((i+1) n / b)),
each cell weighted 1/width. The result equals `F.adaptive_avg_pool2d` (tested) and exports as
CumSum / Div / Less / MatMul nodes whose shapes follow the input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bin_matrix(positions: Tensor, bins: int) -> Tensor:
    """`bins x n` averaging matrix over `n` cells (`positions` = 0..n-1 as a tensor).

    Why the positions come as a tensor: taken from the feature map (a cumulative sum of ones
    along one axis) they carry the runtime size into the exported graph.
    """
    count = positions[-1:] + 1  # n, as a one-element tensor
    index = torch.arange(bins, device=positions.device, dtype=positions.dtype).unsqueeze(1)
    start = torch.div(index * count, bins, rounding_mode="floor")
    end = torch.div((index + 1) * count + bins - 1, bins, rounding_mode="floor")
    inside = (positions.unsqueeze(0) >= start) & (positions.unsqueeze(0) < end)
    weights = inside.to(torch.float32)
    return weights / weights.sum(dim=1, keepdim=True)


def adaptive_avg_pool(x: Tensor, bins: int) -> Tensor:
    """`F.adaptive_avg_pool2d(x, bins)` for an N x C x H x W map, with the size read at runtime."""
    rows = torch.ones_like(x[0, 0, :, 0], dtype=torch.int64).cumsum(0) - 1
    cols = torch.ones_like(x[0, 0, 0, :], dtype=torch.int64).cumsum(0) - 1
    pool_rows = bin_matrix(rows, bins).to(x.dtype)  # bins x H
    pool_cols = bin_matrix(cols, bins).to(x.dtype)  # bins x W
    return torch.matmul(torch.matmul(pool_rows, x), pool_cols.transpose(0, 1))
