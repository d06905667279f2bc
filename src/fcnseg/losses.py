"""Per-pixel softmax cross-entropy with an ignore label, as the FCN paper trains.

The paper's Caffe nets use an *unnormalised* loss (the sum over pixels, `normalize: false`), which
is why its learning rates are as small as 1e-10; "mean" divides by the number of labelled pixels,
which is what modern recipes with lr around 1e-2 expect.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.constants import VOC_IGNORE_INDEX

Normalization = Literal["sum", "mean"]


class PixelCrossEntropy(nn.Module):
    """Softmax cross-entropy over every labelled pixel.

    Args:
        ignore_index: label that contributes neither loss nor gradient (255 in VOC, 11 in CamVid).
        class_weights: optional per-class weights (e.g. median-frequency balancing).
        normalization: "sum" (paper) or "mean" over labelled pixels (with class weights: the
            weighted mean, as `torch.nn.functional.cross_entropy` defines it).
    """

    def __init__(
        self,
        ignore_index: int = VOC_IGNORE_INDEX,
        class_weights: Tensor | list[float] | None = None,
        normalization: Normalization = "mean",
    ) -> None:
        super().__init__()
        if normalization not in ("sum", "mean"):
            raise ValueError(f"normalization must be 'sum' or 'mean', not {normalization!r}")
        self.ignore_index = ignore_index
        self.normalization = normalization
        weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size; "
                "the model must return logits at the mask's resolution"
            )
        reduction = "sum" if self.normalization == "sum" else "mean"
        weights = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        if reduction == "mean" and not (target != self.ignore_index).any():
            # An all-void batch: zero loss with a graph, instead of the NaN that 0/0 would give.
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits,
            target,
            weight=None if weights is None else weights.float(),
            ignore_index=self.ignore_index,
            reduction=reduction,
        )
