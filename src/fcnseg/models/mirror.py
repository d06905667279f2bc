"""Mirrored (reflect) padding of any width, wider than the image included.

Why not `torch.nn.functional.pad(mode="reflect")`: it refuses a pad as wide as the image, and the
U-Net overlap-tile strategy (Ronneberger et al. 2015, figure 2) mirrors 92+ pixels of context
around images that can be smaller than that (a 64 x 96 test image, a thin strip). Reflecting the
reflection, as repeated mirroring does, is a triangle wave over the image's indices; gathering
rows and columns by those indices pads by any amount in one step and traces into ONNX with the
image size left symbolic (the indices are computed from the traced size).
"""

from __future__ import annotations

import torch
from torch import Tensor


def mirror_indices(length: int | Tensor, before: int | Tensor, after: int | Tensor) -> Tensor:
    """Indices into [0, length) of the axis mirrored `before` / `after` pixels beyond each end.

    Reflect without repeating the edge (as numpy's "reflect"): for length 4 and 3 before,
    [3, 2, 1, 0, 1, 2, 3, ...]; reflections of reflections continue the pattern.
    """
    # On the CPU whatever the default device: sizes are never meta tensors (table.py builds
    # models on the meta device), and the gather moves the indices to the image's device.
    length = torch.as_tensor(length, device="cpu")
    after = torch.as_tensor(after, device="cpu")
    positions = torch.arange(-before, length + after, device="cpu")
    period = torch.clamp(2 * (length - 1), min=1)
    folded = torch.remainder(positions, period)
    return torch.where(folded >= length, period - folded, folded).clamp(max=length - 1)


def mirror_pad(
    x: Tensor, top: int | Tensor, bottom: int | Tensor, left: int | Tensor, right: int | Tensor
) -> Tensor:
    """`x` (... x H x W) mirrored by the given pixels on each side (any amount >= 0)."""
    height, width = x.shape[-2], x.shape[-1]
    rows = mirror_indices(height, top, bottom).to(x.device)
    columns = mirror_indices(width, left, right).to(x.device)
    return x.index_select(-2, rows).index_select(-1, columns)
