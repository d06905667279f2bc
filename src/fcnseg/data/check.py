"""`fcnseg data check`: scan a whole dataset, report every problem at once, and class statistics.

Training calls `validate_dataset` before the first epoch so that a bad file stops the run with a
one-line message up front instead of a traceback mid-epoch; `check_dataset` is the same scan
for a person, with the class pixel histogram and median-frequency class weights.

Median-frequency balancing (Eigen & Fergus 2015, as used by SegNet for CamVid):
    freq_c = (pixels of class c) / (total pixels of the images in which c appears)
    w_c    = median_c(freq_c) / freq_c
so rare classes weigh more and the median class weighs 1. A class that never appears gets
weight 0 (nothing to balance); void pixels count in no class and in no total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fcnseg.data.datasets.base import DataError, SegmentationDataset
from fcnseg.data.datasets.registry import build_dataset

#: Problems listed in full before the report says "... and N more".
MAX_LISTED_PROBLEMS = 50


@dataclass
class ClassStatistics:
    """Pixel counts of one split: per class, void, and the median-frequency weights."""

    names: tuple[str, ...]
    pixels: list[int]
    image_pixels: list[int]  # total pixels of the images in which each class appears
    void_pixels: int
    images: int

    @property
    def frequency(self) -> list[float]:
        return [p / t if t else 0.0 for p, t in zip(self.pixels, self.image_pixels, strict=True)]

    @property
    def share(self) -> list[float]:
        total = sum(self.pixels) + self.void_pixels
        return [p / total if total else 0.0 for p in self.pixels]

    @property
    def median_frequency_weights(self) -> list[float]:
        return median_frequency_weights(self.pixels, self.image_pixels)


@dataclass
class CheckReport:
    """Everything `check_dataset` found: problems (one line each) and per-split statistics."""

    root: str
    format: str
    splits: dict[str, int] = field(default_factory=dict)  # split -> images found
    problems: list[str] = field(default_factory=list)
    statistics: dict[str, ClassStatistics] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def median_frequency_weights(pixels: list[int], image_pixels: list[int]) -> list[float]:
    """w_c = median(freq) / freq_c over the classes that occur (0 for absent classes)."""
    freq = [p / t for p, t in zip(pixels, image_pixels, strict=True) if p > 0 and t > 0]
    if not freq:
        return [0.0] * len(pixels)
    median = float(torch.tensor(freq, dtype=torch.float64).median())
    ordered = sorted(freq)
    if len(ordered) % 2 == 0:  # torch.median takes the lower middle; use the usual mean of both
        middle = len(ordered) // 2
        median = (ordered[middle - 1] + ordered[middle]) / 2
    return [
        median / (p / t) if p > 0 and t > 0 else 0.0
        for p, t in zip(pixels, image_pixels, strict=True)
    ]


def _accumulate(stats: ClassStatistics, mask: Tensor, num_classes: int, ignore_index: int) -> None:
    valid = (mask >= 0) & (mask < num_classes)
    counts = torch.bincount(mask[valid].flatten(), minlength=num_classes).tolist()
    stats.void_pixels += int((mask == ignore_index).sum())
    total = mask.numel()
    for c, count in enumerate(counts):
        if count:
            stats.pixels[c] += count
            stats.image_pixels[c] += total
    stats.images += 1


def scan_dataset(
    dataset: SegmentationDataset, max_problems: int | None = None
) -> tuple[list[str], ClassStatistics]:
    """Decode every sample; collect one-line problems and the class statistics of the good ones."""
    n = dataset.num_classes
    stats = ClassStatistics(dataset.classes, [0] * n, [0] * n, 0, 0)
    problems: list[str] = []
    for index in range(len(dataset)):
        try:
            _, mask = dataset.load(index)
        except (DataError, FileNotFoundError) as error:
            problems.append(str(error))
            if max_problems is not None and len(problems) >= max_problems:
                break
            continue
        _accumulate(stats, mask, n, dataset.ignore_index)
    return problems, stats


def validate_dataset(dataset: SegmentationDataset) -> None:
    """Decode every sample before training; raise one DataError summarising all bad files."""
    problems, _ = scan_dataset(dataset)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run `fcnseg data check` for all)"
            if len(problems) > 1
            else ""
        )
        raise DataError(f"{problems[0]}{more}")


def check_dataset(
    root: str | Path | None,
    format: str,
    splits: str | list[str] | tuple[str, ...] | None = None,
    **dataset_kwargs,
) -> CheckReport:
    """Scan `splits` (default: train and val) of the dataset at `root`; never raises DataError.

    Problems that stop a split from being listed at all (missing root, list file) and problems
    of single files (corrupt, wrong size, unknown labels) all end up in `report.problems`.
    """
    if isinstance(splits, str):
        splits = [splits]
    splits = list(splits or ("train", "val"))
    report = CheckReport(root=str(root), format=format)
    for split in splits:
        try:
            dataset = build_dataset(format, root, split, **dataset_kwargs)
        except (DataError, FileNotFoundError) as error:
            report.problems.append(f"[{split}] {error}")
            continue
        report.splits[split] = len(dataset)
        problems, stats = scan_dataset(dataset)
        report.problems += [f"[{split}] {p}" for p in problems]
        report.statistics[split] = stats
    return report


def format_report(report: CheckReport) -> str:
    """Human-readable report: problems first, then per split the class table and weights."""
    lines = [f"dataset {report.root} (format {report.format})"]
    for split, count in report.splits.items():
        lines.append(f"  {split}: {count} images")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {p}" for p in report.problems[:MAX_LISTED_PROBLEMS]]
        if len(report.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED_PROBLEMS} more")
    else:
        lines.append("no problems found")
    for split, stats in report.statistics.items():
        lines.append(
            f"[{split}] class pixels over {stats.images} readable images; weight = median-frequency "
            "w_c = median(freq)/freq_c, freq_c = pixels of c / pixels of images containing c"
        )
        width = max(len(n) for n in stats.names)
        lines.append(f"  {'id':>3} {'class':<{width}} {'pixels':>12} {'share %':>8} {'weight':>8}")
        rows = zip(
            stats.names, stats.pixels, stats.share, stats.median_frequency_weights, strict=True
        )
        for c, (name, pixels, share, weight) in enumerate(rows):
            lines.append(
                f"  {c:>3} {name:<{width}} {pixels:>12} {100 * share:>8.2f} {weight:>8.4f}"
            )
        total = sum(stats.pixels) + stats.void_pixels
        void_share = 100 * stats.void_pixels / total if total else math.nan
        lines.append(f"  {'':>3} {'void':<{width}} {stats.void_pixels:>12} {void_share:>8.2f}")
    return "\n".join(lines)
