"""Confusion matrix and the four scores of the FCN paper (section 5, "Metrics").

With n_ij the pixels of class i predicted as j, t_i = sum_j n_ij and n_cl classes:
pixel accuracy sum_i n_ii / sum_i t_i; mean accuracy (1/n_cl) sum_i n_ii / t_i; mean IU
(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii); frequency-weighted IU
(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii).

NaN rule: a class that is absent from both the ground truth and the prediction has an undefined
IU (0/0) and an undefined accuracy; like the authors' score.py (np.nanmean) we leave such classes
out of the means. A class absent from the ground truth but predicted somewhere has IU 0 and is
counted. An evaluation with no labelled pixel at all gives 0.0 for every score rather than NaN,
so that logs and "best checkpoint" comparisons stay well defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates an n x n confusion matrix (rows: ground truth, columns: prediction).

    Accumulation uses `torch.bincount` on the tensors' own device, so evaluation on a GPU never
    copies masks to the host; `reduce_` sums across distributed ranks.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, device: str | torch.device = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch: `prediction` and `target` hold class ids of the same shape.

        Pixels whose target is the ignore label, or outside [0, num_classes), are skipped.
        """
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}"
            )
        target = target.reshape(-1).to(self.matrix.device)
        prediction = prediction.reshape(-1).to(self.matrix.device)
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        index = target[valid] * self.num_classes + prediction[valid].clamp(0, self.num_classes - 1)
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def reduce_(self) -> None:
        """Sum the matrix over all ranks of an initialised process group (no-op otherwise)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def scores(self) -> SegmentationScores:
        return compute_scores(self.matrix)


@dataclass(frozen=True)
class SegmentationScores:
    """The paper's four numbers plus per-class IU and accuracy (NaN where undefined)."""

    pixel_accuracy: float
    mean_accuracy: float
    mean_iu: float
    frequency_weighted_iu: float
    per_class_iu: list[float]
    per_class_accuracy: list[float]

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "pixel_accuracy": self.pixel_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "mean_iu": self.mean_iu,
            "frequency_weighted_iu": self.frequency_weighted_iu,
            "per_class_iu": self.per_class_iu,
            "per_class_accuracy": self.per_class_accuracy,
        }


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else 0.0


def compute_scores(matrix: Tensor) -> SegmentationScores:
    """The four FCN scores from a confusion matrix (see the module docstring for the NaN rule)."""
    hist = matrix.double().cpu()
    true_positive = hist.diag()
    ground_truth = hist.sum(1)
    predicted = hist.sum(0)
    total = ground_truth.sum()
    union = ground_truth + predicted - true_positive
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    class_accuracy = torch.where(ground_truth > 0, true_positive / ground_truth.clamp(min=1), nan)
    class_iu = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    if total == 0:
        pixel_accuracy = 0.0
        fw_iu = 0.0
    else:
        pixel_accuracy = float(true_positive.sum() / total)
        frequency = ground_truth / total
        fw_iu = float((frequency * torch.nan_to_num(class_iu, nan=0.0)).sum())
    return SegmentationScores(
        pixel_accuracy=pixel_accuracy,
        mean_accuracy=_nanmean(class_accuracy),
        mean_iu=_nanmean(class_iu),
        frequency_weighted_iu=fw_iu,
        per_class_iu=class_iu.tolist(),
        per_class_accuracy=class_accuracy.tolist(),
    )


# --- Boundary ("trimap") accuracy, as the DeepLab papers report it (Chen et al., ICLR 2015
# --- section 5 / TPAMI 2018 section 4.1.1: scores within a narrow band around label boundaries).


def boundary_mask(target: Tensor) -> Tensor:
    """Boundary pixels of label maps (N x H x W, or H x W): a pixel is on a boundary when one of
    its 4 neighbours (up, down, left, right; inside the image) holds another label value.

    Every label value counts, the ignore label too: VOC marks object outlines with a band of
    ignore (255) pixels, and DeepLab's trimap is the band around those. Both sides of an edge
    are boundary pixels.
    """
    labels = target if target.dim() == 3 else target[None]
    edge = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    return edge if target.dim() == 3 else edge[0]


def boundary_band(boundary: Tensor, width: int) -> Tensor:
    """Pixels within `width` of a boundary pixel, in chessboard distance (max(|dy|, |dx|) <=
    width): the boundary mask dilated by a (2 width + 1)-square, as two 1-D max-pools."""
    if width < 0:
        raise ValueError(f"trimap width must be >= 0, got {width}")
    mask = boundary.float()[:, None] if boundary.dim() == 3 else boundary.float()[None, None]
    size = 2 * width + 1
    mask = torch.nn.functional.max_pool2d(mask, (1, size), stride=1, padding=(0, width))
    mask = torch.nn.functional.max_pool2d(mask, (size, 1), stride=1, padding=(width, 0))
    band = mask[:, 0] > 0
    return band if boundary.dim() == 3 else band[0]


class TrimapScores:
    """Confusion matrices restricted to the band of each width around the ground truth's label
    boundaries (`boundary_mask`, `boundary_band`); ignore-label pixels are never scored.

    Why: whole-image scores are dominated by region interiors, where a CRF changes little; the
    band shows what a boundary-refining back end buys, as DeepLab's trimap plots do.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None,
        widths: tuple[int, ...],
        device: str | torch.device = "cpu",
    ) -> None:
        if not widths or any(width < 0 for width in widths):
            raise ValueError(f"trimap widths must be >= 0, got {widths}")
        self.widths = tuple(sorted(set(widths)))
        self.matrices = {
            width: ConfusionMatrix(num_classes, ignore_index, device) for width in self.widths
        }

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch of predicted ids and targets (N x H x W or H x W, same shape)."""
        band, reached = boundary_mask(target), 0
        outside = torch.full_like(target, -1)  # out of range: ConfusionMatrix skips it
        for width, matrix in self.matrices.items():  # widths ascending: grow the last band
            band, reached = boundary_band(band, width - reached), width
            matrix.update(prediction, torch.where(band, target, outside))

    def __call__(self, prediction: Tensor, target: Tensor) -> None:
        """The evaluation's per-batch hook (engine/evaluate.evaluate_heads' on_batch)."""
        self.update(prediction, target)

    def reduce_(self) -> None:
        for width in self.widths:
            self.matrices[width].reduce_()

    def scores(self) -> dict[int, SegmentationScores]:
        return {width: matrix.scores() for width, matrix in self.matrices.items()}

    def pixels(self) -> dict[int, int]:
        """Scored (labelled, in-band) pixels per width."""
        return {width: int(matrix.matrix.sum()) for width, matrix in self.matrices.items()}
