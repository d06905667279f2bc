"""Per-image bookkeeping during `fcnseg eval --report`: confusion, per-image mean IU, worst images.

`EvalCollector` is the `on_batch` hook of `engine.evaluate.evaluate_heads`: it sees every
batch's predicted ids and targets once, in loader order, so the report costs no second pass over
the data. Only the K worst predictions are kept in memory (a bounded heap), never the whole split.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

#: How many of the worst images the report shows.
WORST_COUNT: int = 8


@dataclass(order=True)
class WorstImage:
    """One kept image: ordered by negated mean IU so the heap's root is the best of the kept."""

    sort_key: float
    index: int = field(compare=False)
    mean_iu: float = field(compare=False)
    prediction: np.ndarray = field(compare=False, repr=False)
    target: np.ndarray = field(compare=False, repr=False)


def image_mean_iu(confusion: np.ndarray) -> float | None:
    """Mean IU of one image (classes in its ground truth or prediction); None if unlabelled."""
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    if confusion.sum() == 0 or not present.any():
        return None
    return float((true_positive[present] / union[present]).mean())


class EvalCollector:
    """Collects, for the report, what the summed confusion matrix of `evaluate` throws away.

    Args:
        num_classes, ignore_index: as for `metrics.ConfusionMatrix`.
        indices: dataset index of each image in loader order (default 0, 1, 2, ...).
        worst: how many of the lowest-mean-IU images to keep.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None,
        indices: list[int] | None = None,
        worst: int = WORST_COUNT,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.indices = indices
        self.worst_count = worst
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.per_image: list[tuple[int, float | None]] = []
        self._heap: list[WorstImage] = []
        self._seen = 0

    def _next_index(self) -> int:
        position = self._seen
        self._seen += 1
        if self.indices is not None and position < len(self.indices):
            return int(self.indices[position])
        return position

    def __call__(self, predicted: Tensor, target: Tensor) -> None:
        predictions = predicted.detach().to("cpu").numpy()
        targets = target.detach().to("cpu").numpy()
        for prediction, labels in zip(predictions, targets, strict=True):
            index = self._next_index()
            valid = (labels >= 0) & (labels < self.num_classes)
            if self.ignore_index is not None:
                valid &= labels != self.ignore_index
            codes = labels[valid].astype(np.int64) * self.num_classes + np.clip(
                prediction[valid], 0, self.num_classes - 1
            )
            confusion = np.bincount(codes, minlength=self.num_classes**2).reshape(
                self.num_classes, self.num_classes
            )
            self.confusion += confusion
            score = image_mean_iu(confusion)
            self.per_image.append((index, score))
            if score is None:
                continue
            entry = WorstImage(-score, index, score, prediction.astype(np.int32), labels.copy())
            if len(self._heap) < self.worst_count:
                heapq.heappush(self._heap, entry)
            elif score < self._heap[0].mean_iu:
                heapq.heapreplace(self._heap, entry)

    def worst(self) -> list[WorstImage]:
        """The kept images, worst first."""
        return sorted(self._heap, key=lambda entry: (entry.mean_iu, entry.index))

    def json_fields(self, names: list[str] | None = None) -> dict[str, Any]:
        """What the eval JSON gains with --report: the confusion matrix and per-image mean IU,
        so `fcnseg report RUN` can redraw the heatmap and the histogram later."""
        per_image = []
        for index, score in self.per_image:
            name = names[index] if names is not None and index < len(names) else str(index)
            clean = None if score is None or math.isnan(score) else score
            per_image.append({"index": index, "name": name, "mean_iu": clean})
        return {"confusion_matrix": self.confusion.tolist(), "per_image": per_image}
