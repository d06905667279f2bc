"""Per-pixel softmax cross-entropy with an ignore label, as the FCN paper trains; U-Net's
border-weighted variant; soft Jaccard, distillation and their sums.

The paper's Caffe nets use an *unnormalised* loss (the sum over pixels, `normalize: false`), which
is why its learning rates are as small as 1e-10; "mean" divides by the number of labelled pixels,
which is what modern recipes with lr around 1e-2 expect.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.constants import UNET2015_BORDER_SIGMA, UNET2015_BORDER_W0, VOC_IGNORE_INDEX

Normalization = Literal["sum", "mean", "pixels"]


class PixelCrossEntropy(nn.Module):
    """Softmax cross-entropy over every labelled pixel.

    Args:
        ignore_index: label that contributes neither loss nor gradient (255 in VOC, 11 in CamVid).
        class_weights: optional per-class weights (e.g. median-frequency balancing).
        normalization: "sum" (paper) or "mean" over labelled pixels (with class weights: the
            weighted mean, as `torch.nn.functional.cross_entropy` defines it); "pixels": the
            weighted sum over the number of labelled pixels, as caffe-segnet's SoftmaxWithLoss
            normalises a class-weighted loss (equal to "mean" without weights).
    """

    def __init__(
        self,
        ignore_index: int = VOC_IGNORE_INDEX,
        class_weights: Tensor | list[float] | None = None,
        normalization: Normalization = "mean",
    ) -> None:
        super().__init__()
        if normalization not in ("sum", "mean", "pixels"):
            raise ValueError(
                f"normalization must be 'sum', 'mean' or 'pixels', not {normalization!r}"
            )
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
        reduction = "mean" if self.normalization == "mean" else "sum"
        weights = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        labelled = (target != self.ignore_index).sum()
        if self.normalization != "sum" and not labelled:
            # An all-void batch: zero loss with a graph, instead of the NaN that 0/0 would give.
            return logits.sum() * 0.0
        loss = F.cross_entropy(
            logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits,
            target,
            weight=None if weights is None else weights.float(),
            ignore_index=self.ignore_index,
            reduction=reduction,
        )
        return loss / labelled if self.normalization == "pixels" else loss


def border_weight_map(
    labels: np.ndarray,
    *,
    w0: float = UNET2015_BORDER_W0,
    sigma: float = UNET2015_BORDER_SIGMA,
    background: int = 0,
    ignore_index: int | None = None,
) -> np.ndarray:
    """U-Net's border term w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) of one H x W label mask.

    Ronneberger et al. 2015, equation 2: d1 and d2 are the distances to the nearest and the
    second nearest object. Objects are the connected components (4-connected) of each class
    other than `background` (a semantic mask's regions; an instance mask whose ids are classes
    gives its instances); void pixels (`ignore_index`) are neither. The term lives on the
    background pixels, the gaps the paper wants learnt between touching cells; it is 0 on the
    objects and wherever fewer than two objects exist. One Euclidean distance transform per
    object: cheap on cell images, seconds on a busy street scene.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    is_object = labels != background
    if ignore_index is not None:
        is_object &= labels != ignore_index
    nearest = np.full(labels.shape, np.inf)
    second = np.full(labels.shape, np.inf)
    for value in np.unique(labels[is_object]):
        components, count = ndimage.label(labels == value)
        for index in range(1, count + 1):
            distance = ndimage.distance_transform_edt(components != index)
            second = np.where(distance < nearest, nearest, np.minimum(second, distance))
            nearest = np.minimum(nearest, distance)
    term = np.zeros(labels.shape)
    gap = (labels == background) & np.isfinite(second)
    term[gap] = w0 * np.exp(-((nearest[gap] + second[gap]) ** 2) / (2.0 * sigma**2))
    return term.astype(np.float32)


class BorderWeightedCrossEntropy(nn.Module):
    """Pixel cross-entropy weighted by w(x) = w_c(x) + U-Net's border term (`border_weight_map`).

    w_c is the class weight of the pixel's label (the recipe's `data.class_weights`, else 1), as
    the paper's class-frequency balancing map. "sum" sums w(x) * loss(x) over the labelled
    pixels; "mean" divides that by the sum of w(x), as class-weighted cross-entropy does.
    """

    def __init__(
        self,
        ignore_index: int = VOC_IGNORE_INDEX,
        class_weights: Tensor | list[float] | None = None,
        normalization: Normalization = "mean",
        w0: float = UNET2015_BORDER_W0,
        sigma: float = UNET2015_BORDER_SIGMA,
    ) -> None:
        super().__init__()
        if normalization not in ("sum", "mean") or w0 < 0 or sigma <= 0:
            raise ValueError(
                f"border weights need normalization sum/mean, w0 >= 0 and sigma > 0, got "
                f"{normalization!r}, {w0}, {sigma}"
            )
        self.ignore_index, self.normalization = ignore_index, normalization
        self.w0, self.sigma = float(w0), float(sigma)
        weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)

    def pixel_weights(self, target: Tensor) -> Tensor:
        """w(x) of an N x H x W target, 0 on void pixels."""
        masks = target.detach().cpu().numpy()
        border = np.stack(
            [
                border_weight_map(
                    mask, w0=self.w0, sigma=self.sigma, ignore_index=self.ignore_index
                )
                for mask in masks
            ]
        )
        valid = target != self.ignore_index
        labels = torch.where(valid, target, torch.zeros_like(target))
        base = torch.ones_like(target, dtype=torch.float32)
        if self.class_weights is not None:
            base = self.class_weights.to(target.device)[labels]
        weights = base + torch.from_numpy(border).to(target.device)
        return weights * valid

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size"
            )
        weights = self.pixel_weights(target)
        labels = torch.where(target != self.ignore_index, target, torch.zeros_like(target))
        per_pixel = F.cross_entropy(logits.float(), labels, reduction="none")
        total = (weights * per_pixel).sum()
        if self.normalization == "sum":
            return total
        return total / weights.sum().clamp_min(1e-12)


class SoftJaccardLoss(nn.Module):
    """One minus the mean soft IoU of the classes present in the batch (void pixels ignored).

    Why: cross-entropy is dominated by the large classes; a thin class (a pole covers 0.4 % of
    CamVid's pixels) can stay at low recall while the loss barely moves. The evaluation metric,
    mean IU, weighs every class equally; this term does too. Softmax probabilities stand in for
    the hard prediction (the "soft Jaccard" of Rahman & Wang 2016), intersections and unions are
    summed over the whole batch, so the term tracks dataset-level IoU rather than per-image IoU.
    """

    def __init__(self, ignore_index: int = VOC_IGNORE_INDEX, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size"
            )
        num_classes = logits.shape[1]
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        probs = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
        labels = torch.where(valid, target, torch.zeros_like(target))
        truth = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
        truth = truth * valid.unsqueeze(1)
        dims = (0, 2, 3)
        intersection = (probs * truth).sum(dims)
        truth_count = truth.sum(dims)
        union = probs.sum(dims) + truth_count - intersection
        present = truth_count > 0
        iou = (intersection + self.smooth) / (union + self.smooth)
        return 1.0 - iou[present].mean()


class DistillationLoss(nn.Module):
    """weight * T^2 * KL(teacher || student) per pixel, both softened by temperature T.

    Why: a fast model (e.g. CamVid's at a smaller net input scale) can learn from a slower,
    better one (Hinton et al. 2015, per pixel as in Liu et al. 2019, "Structured knowledge
    distillation for semantic segmentation"): the teacher's probabilities say which wrong
    classes are plausible (a pole pixel that looks like building), which one-hot labels cannot,
    and they exist at the void pixels the cross-entropy ignores. The T^2 factor keeps the
    gradient's size independent of T. The teacher runs in eval mode without gradients, at its
    own net input scale, on the same augmented batch, and its logits come back at the batch's
    size (the SegmentationModel contract), so no resizing is needed here.
    """

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if weight < 0 or temperature <= 0:
            raise ValueError(
                f"distillation needs weight >= 0 and temperature > 0, got {weight}, {temperature}"
            )
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def train(self, mode: bool = True) -> DistillationLoss:
        """The teacher stays in eval mode (its batch-norm statistics are fixed)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images: Tensor, student_logits: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                f"{tuple(student_logits.shape)} differ; the teacher must have the same classes"
            )
        t = self.temperature
        target = torch.log_softmax(teacher_logits.float() / t, dim=1)
        student = torch.log_softmax(student_logits.float() / t, dim=1)
        per_pixel = (target.exp() * (target - student)).sum(dim=1)
        return self.weight * t * t * per_pixel.mean()


class WeightedSumLoss(nn.Module):
    """sum_i weight_i * loss_i(logits, target): cross-entropy plus an IoU term, for example."""

    def __init__(self, terms: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSumLoss needs at least one (weight, loss) term")
        self.weights = [float(weight) for weight, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = self.weights[0] * self.losses[0](logits, target)
        for weight, loss in zip(self.weights[1:], self.losses[1:], strict=True):
            total = total + weight * loss(logits, target)
        return total


class PerHeadLoss(nn.Module):
    """One loss per output head of a multi-head model, summed over the heads the batch labels.

    Why not one criterion for all heads: class weights are per class, and the heads have
    different classes (SIFT Flow: 33 semantic, 3 geometric), so each head needs its own
    weighted cross-entropy; heads without weights get the plain one.
    """

    def __init__(self, losses: dict[str, nn.Module]) -> None:
        super().__init__()
        if not losses:
            raise ValueError("PerHeadLoss needs at least one head")
        self.heads = nn.ModuleDict(losses)

    def forward(self, logits: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
        missing = sorted(set(logits) - set(self.heads))
        if missing:
            raise ValueError(f"no loss for output head(s) {missing}; heads: {sorted(self.heads)}")
        terms = [
            self.heads[name](logits[name], targets[name]) for name in logits if name in targets
        ]
        if not terms:
            raise ValueError("the batch labels none of the model's heads")
        return torch.stack(terms).sum()
