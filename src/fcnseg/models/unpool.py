"""Max pooling that remembers where each maximum came from, and the unpooling that puts it back.

Why not `nn.MaxUnpool2d`: PyTorch's ONNX exporter has no symbolic for `max_unpool2d`, so a SegNet
built on it could not be exported or served through onnxruntime. Unpooling is a scatter: a zero
map the size of the tensor that was pooled, each value written at its recorded flat index
(`h * W + w` within its channel plane, the index PyTorch's `max_pool2d` returns and the layout of
caffe-segnet's `poolN_mask` blob). `Tensor.scatter` exports as ONNX ScatterElements and runs on
every engine; `tests/test_models_segnet.py` checks it against `F.max_unpool2d`.

Pooling uses Caffe's output size (`ceil_mode=True`: a 45-pixel side pools to 23), and the
unpooled map takes the size of the map that was pooled (45, not 46). That is the SegNet
release's geometry at 360 x 480, where it writes the sizes by hand (`upsample_h: 23`, `45`;
SegNet-Basic's `pad_out_h: true`), generalised to any input size without padding or cropping.
ENet's upsampling bottlenecks unpool with the same `max_unpool`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class IndexedMaxPool(nn.Module):
    """2x2 stride-2 max pooling (Caffe output size) returning the pooled map and its indices."""

    def __init__(self, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.max_pool2d(x, self.kernel_size, self.stride, ceil_mode=True, return_indices=True)


class IndexedMaxUnpool(nn.Module):
    """Caffe-SegNet's "Upsample" layer: values back at their pooling indices, zeros elsewhere.

    `pool` names the pooling layer whose indices it takes (upsample4 <- pool4_mask); the net's
    forward passes those indices and the tensor that was pooled (for its size).
    """

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor, indices: Tensor, pooled: Tensor) -> Tensor:
        return max_unpool(x, indices, pooled)


def max_unpool(x: Tensor, indices: Tensor, pooled: Tensor) -> Tensor:
    """`x` scattered to `indices` in a zero map shaped like `pooled` (N x C x H x W).

    `x` and `indices` are N x C x h x w with C equal to `pooled`'s channels (SegNet's decoder
    returns to the encoder's width before each unpooling).
    """
    if x.shape[:2] != pooled.shape[:2] or x.shape != indices.shape:
        raise ValueError(
            f"unpooling {tuple(x.shape)} with indices {tuple(indices.shape)} into "
            f"{tuple(pooled.shape)}: batch and channels must agree"
        )
    flat = torch.zeros_like(pooled).flatten(2)
    return flat.scatter(2, indices.flatten(2), x.flatten(2)).view_as(pooled)
