"""Evaluation: the paper's four scores plus per-class IU, over a dataset split.

The same `evaluate` runs periodic validation during training and `fcnseg eval`; logits come from
`fcnseg.inference.predict_logits`, so whole-image, sliding-window and multi-scale evaluation are
a config value (`eval.mode`), not separate code. Under torchrun each rank scores its shard and
the confusion matrices are summed, so the scores are those of the whole split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fcnseg.engine import distributed
from fcnseg.inference import predict_logits
from fcnseg.io_utils import atomic_write
from fcnseg.metrics import ConfusionMatrix, SegmentationScores
from fcnseg.models.protocol import PRIMARY_HEAD, as_heads, is_multi_head, primary_head_name


class _ShardedOrder(torch.utils.data.Sampler[int]):
    """Rank r scores samples r, r + W, ...: every sample exactly once over all ranks."""

    def __init__(self, length: int) -> None:
        self.indices = list(range(length))[distributed.rank() :: distributed.world_size()]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """A sequential loader over this rank's shard (no RNG drawn from the global streams)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_ShardedOrder(len(dataset)),  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )


def evaluate_heads(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int | None,
    device: torch.device | str = "cpu",
    mode: str = "whole",
    options: dict[str, Any] | None = None,
    amp: bool = False,
    progress: bool = False,
    on_batch: Callable[[Tensor, Tensor], None] | None = None,
    forward: Callable[[Tensor], Tensor | dict[str, Tensor]] | None = None,
    refine: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, SegmentationScores]:
    """Scores per output head (one entry, "semantic", for single-head models).

    `refine(images, logits)` replaces the primary head's logits of each batch before scoring
    (`fcnseg eval --crf`: the dense CRF, which needs the images' colours). `on_batch(predicted_ids, target)` is called for every batch of the primary head, in loader
    order: the HTML report (fcnseg.report) takes per-image scores and the worst images from it
    without a second pass over the data. `forward(images)` gives a batch's logits in place of
    `predict_logits(model, mode, options)`: an inference session's own (its MC dropout).

    Multi-head models (SIFT Flow: semantic + geometric) are scored on every head for which the
    dataset gives a label map; `num_classes` is the primary head's, the others take their class
    count from the logits. The confusion matrices are summed over ranks.
    """
    device = torch.device(device)
    # Every head's matrix exists before the first batch, so every rank joins every reduction
    # below, even a rank whose shard is empty (matrices created at the first batch made such a
    # rank skip the all_reduce the others wait in: validation hung).
    confusions = {
        head: ConfusionMatrix(classes, ignore_index, device)
        for head, classes in expected_heads(model, num_classes).items()
    }
    seen: set[str] = set()
    was_training = model.training
    model.eval()
    batches = loader
    if progress and distributed.is_main():
        from tqdm import tqdm

        batches = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    if forward is None:
        forward = partial(predict_logits, model, mode=mode, **(options or {}))
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
        for images, masks in batches:
            images = images.to(device, non_blocking=True)
            outputs = _batch_outputs(forward, refine, images)
            seen |= _score_batch(outputs, masks, confusions, (num_classes, ignore_index), on_batch)
    for head in sorted(confusions):  # the same order on every rank
        confusions[head].reduce_()
    model.train(was_training)
    # Heads no rank scored (no label map for them, or an empty split) are left out, as before.
    return {
        head: confusion.scores()
        for head, confusion in confusions.items()
        if head in seen or int(confusion.matrix.sum()) > 0
    }


def _batch_outputs(
    forward: Callable[[Tensor], Tensor | dict[str, Tensor]],
    refine: Callable[[Tensor, Tensor], Tensor] | None,
    images: Tensor,
) -> dict[str, Tensor]:
    """Every head's logits of one batch, the primary head's refined by `refine` when given."""
    outputs = as_heads(forward(images))
    if refine is not None:
        primary = primary_head_name(outputs)
        outputs[primary] = refine(images, outputs[primary])
    return outputs


def _score_batch(
    outputs: dict[str, Tensor],
    masks: Tensor | dict[str, Tensor],
    confusions: dict[str, ConfusionMatrix],
    labels: tuple[int, int | None],
    on_batch: Callable[[Tensor, Tensor], None] | None,
) -> set[str]:
    """Add one batch to the confusion matrix of every head that has a label map; returns the
    heads scored. A single label map belongs to the primary head; `labels` is (the primary
    head's class count, the ignore label). Matrices live on the device of their first one."""
    num_classes, ignore_index = labels
    device = next(iter(confusions.values())).matrix.device
    if is_multi_head(masks):
        targets = as_heads(masks)
    else:
        targets = {primary_head_name(outputs): masks}
    scored: set[str] = set()
    for head, target in targets.items():
        if head not in outputs:
            continue
        logits, target = outputs[head], target.to(device, non_blocking=True)
        if logits.shape[-2:] != target.shape[-2:]:
            logits = torch.nn.functional.interpolate(
                logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        if head not in confusions:  # a head the model did not declare (one process)
            classes = num_classes if head == PRIMARY_HEAD else logits.shape[1]
            confusions[head] = ConfusionMatrix(classes, ignore_index, device)
        predicted = logits.argmax(1)
        confusions[head].update(predicted, target)
        scored.add(head)
        if on_batch is not None and head == PRIMARY_HEAD:
            on_batch(predicted, target)
    return scored


def expected_heads(model: nn.Module, num_classes: int) -> dict[str, int]:
    """Head name -> class count of `model`'s outputs, known before any batch: the declared
    `head_classes` of a multi-head model (the primary head counted with `num_classes`, the
    dataset's), else one head, "semantic"."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    declared = dict(getattr(inner, "head_classes", None) or {})
    if not declared:
        return {PRIMARY_HEAD: num_classes}
    heads = {name: int(count) for name, count in declared.items()}
    if PRIMARY_HEAD in heads:
        heads[PRIMARY_HEAD] = num_classes
    return heads


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int | None,
    device: torch.device | str = "cpu",
    mode: str = "whole",
    options: dict[str, Any] | None = None,
    amp: bool = False,
    progress: bool = False,
) -> SegmentationScores:
    """Score `model` on `loader` (its primary head); the confusion matrix is summed over ranks."""
    per_head = evaluate_heads(
        model, loader, num_classes, ignore_index, device, mode, options, amp, progress
    )
    if not per_head:
        return ConfusionMatrix(num_classes, ignore_index).scores()
    return per_head[primary_head_name(per_head)]


def _fmt(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{100 * value:5.1f}"


def format_scores(scores: SegmentationScores, class_names: tuple[str, ...] | list[str]) -> str:
    """The four scores and a per-class IU / accuracy table, in percent."""
    lines = [
        f"pixel acc {_fmt(scores.pixel_accuracy)}  mean acc {_fmt(scores.mean_accuracy)}  "
        f"mean IU {_fmt(scores.mean_iu)}  f.w. IU {_fmt(scores.frequency_weighted_iu)}",
        "",
        f"{'class':<20} {'IU':>6} {'acc':>6}",
    ]
    for index, (iu, acc) in enumerate(
        zip(scores.per_class_iu, scores.per_class_accuracy, strict=True)
    ):
        name = class_names[index] if index < len(class_names) else str(index)
        lines.append(f"{name:<20} {_fmt(iu):>6} {_fmt(acc):>6}")
    return "\n".join(lines)


def scores_json(scores: SegmentationScores, class_names: tuple[str, ...] | list[str]) -> dict:
    """JSON-ready scores with the per-class IU keyed by class name (NaN -> null)."""

    def clean(value: float) -> float | None:
        return None if math.isnan(value) else value

    data: dict[str, Any] = {
        key: clean(value) for key, value in scores.as_dict().items() if not isinstance(value, list)
    }
    data["per_class_iu"] = {
        str(class_names[i]) if i < len(class_names) else str(i): clean(v)
        for i, v in enumerate(scores.per_class_iu)
    }
    data["per_class_accuracy"] = {
        str(class_names[i]) if i < len(class_names) else str(i): clean(v)
        for i, v in enumerate(scores.per_class_accuracy)
    }
    return data


def write_scores(path: Path, payload: dict) -> None:
    """The scores JSON, written atomically (an interrupted eval leaves no half file)."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))
