"""`fcnseg data check`: scan a whole dataset, report every problem at once, and class statistics.

`check_dataset` decodes every sample of the splits it is given and reports every problem, with
the class pixel histogram and median-frequency class weights (per head for multi-head datasets
such as SIFT Flow, whose masks are a dict of label maps). `validate_dataset` is the same full
scan, raising one DataError.

Training runs `preflight` on its training and validation sets before the run directory is
created, so that a bad file stops the run with one line up front instead of a traceback
mid-epoch (after the directory exists). What it checks, and why it does not always decode
everything (decoding CamVid's 468 pairs takes ~10 s on a 2-core CPU; a VOC/SBD run has 11k):

- every sample: the files it names exist and, for image files, PIL can read their header
  (format recognised, size under the pixel cap), and an image and its masks have the same size.
  This opens each file but decodes no pixel, so it is cheap for any dataset;
- a documented sample is decoded in full through `dataset.load` (truncated files, unknown
  label values, colour masks with unknown colours, unreadable .mat files): every sample when a
  split has at most PREFLIGHT_FULL_DECODE of them, otherwise the first, the last and evenly
  spaced ones in between, PREFLIGHT_FULL_DECODE in all (`preflight_indices`). A bad file
  outside that sample can still stop a run mid-epoch; `fcnseg data check` decodes everything.

Median-frequency balancing (Eigen & Fergus 2015, as used by SegNet for CamVid):
    freq_c = (pixels of class c) / (total pixels of the images in which c appears)
    w_c    = median_c(freq_c) / freq_c
so rare classes weigh more and the median class weighs 1. A class that never appears gets
weight 0 (nothing to balance); void pixels count in no class and in no total.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fcnseg.data.class_weights import enet_class_weights, median_frequency_weights
from fcnseg.data.datasets.base import DataError, SegmentationDataset
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.io import IMAGE_SUFFIXES, check_pixel_count
from fcnseg.data.orientation import check_orientations, loaded_size, orientation_of
from fcnseg.models.protocol import PRIMARY_HEAD, primary_head_name

#: Problems listed in full before the report says "... and N more".
MAX_LISTED_PROBLEMS = 50
#: `preflight` decodes every sample of a split up to this many, else this many spread over it.
PREFLIGHT_FULL_DECODE = 64


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

    @property
    def enet_weights(self) -> list[float]:
        return enet_class_weights(self.share)


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


def _head_infos(dataset: Any) -> dict[str, tuple[tuple[str, ...], int]]:
    """Head name -> (class names, void label): one entry ("semantic") for single-head datasets,
    one per label map for multi-head ones (SIFT Flow: semantic and geometric)."""
    infos = getattr(dataset, "head_class_info", None)
    if isinstance(infos, Mapping) and infos:
        return {name: (tuple(info.names), int(info.ignore_index)) for name, info in infos.items()}
    return {PRIMARY_HEAD: (tuple(dataset.classes), int(dataset.ignore_index))}


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


def scan_heads(
    dataset: SegmentationDataset, max_problems: int | None = None
) -> tuple[list[str], dict[str, ClassStatistics]]:
    """Decode every sample; one-line problems, and per head the class statistics of the good
    samples. Single-head datasets have one head, "semantic"; a multi-head dataset's `load`
    returns a dict of masks, each counted against its own head's classes."""
    infos = _head_infos(dataset)
    stats = {
        head: ClassStatistics(names, [0] * len(names), [0] * len(names), 0, 0)
        for head, (names, _) in infos.items()
    }
    problems: list[str] = []
    samples = getattr(dataset, "samples", None)
    listed = isinstance(samples, list) and len(samples) == len(dataset)
    for index in range(len(dataset)):
        try:
            if listed:
                check_orientation(dataset, index)  # what decoding cannot see
            _, mask = dataset.load(index)
        except (DataError, FileNotFoundError) as error:
            problems.append(str(error))
            if max_problems is not None and len(problems) >= max_problems:
                break
            continue
        masks = mask if isinstance(mask, Mapping) else {primary_head_name(stats): mask}
        for head, head_mask in masks.items():
            if head in stats:
                names, ignore_index = infos[head]
                _accumulate(stats[head], head_mask, len(names), ignore_index)
    return problems, stats


def scan_dataset(
    dataset: SegmentationDataset, max_problems: int | None = None
) -> tuple[list[str], ClassStatistics]:
    """Decode every sample; collect one-line problems and the class statistics of the good ones
    (of the primary head for multi-head datasets; `scan_heads` gives every head's)."""
    problems, stats = scan_heads(dataset, max_problems)
    return problems, stats[primary_head_name(stats)]


def preflight_indices(length: int, limit: int = PREFLIGHT_FULL_DECODE) -> list[int]:
    """The samples `preflight` decodes: all of them up to `limit`, else `limit` indices spread
    evenly from the first to the last (both included), so a bad tail is caught too."""
    if length <= limit:
        return list(range(length))
    if limit < 2:
        return [0]
    return sorted({round(i * (length - 1) / (limit - 1)) for i in range(limit)})


def _sample_files(sample: Any) -> list[Path]:
    """The files a dataset sample record names (tuples or dicts of paths; others name none)."""
    if isinstance(sample, Mapping):
        items = list(sample.values())
    elif isinstance(sample, (tuple, list)):
        items = list(sample)
    else:
        items = [sample]
    return [item for item in items if isinstance(item, Path)]


def _header(path: Path) -> tuple[tuple[int, int], int] | None:
    """(stored (width, height), EXIF orientation) from an image file's header without decoding
    pixels; None for files PIL does not read (.mat label files). DataError when the header is
    unreadable or over the cap."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    from fcnseg.data.bands import header_size  # TIFF (any bands) and .npy headers

    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        size, orientation = header_size(path), 1  # TIFF / .npy: no EXIF orientation
        if size is None:
            with Image.open(path) as image:
                size, orientation = image.size, orientation_of(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: not a readable image ({type(error).__name__}); re-export or re-download "
            "it, or remove it from the list"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    check_pixel_count(size[0], size[1], path)
    return size, orientation


def check_headers(dataset: SegmentationDataset, index: int) -> None:
    """The cheap checks of one sample: its files exist, their headers read, their EXIF
    orientations do not turn them against each other (data/orientation.py), and their sizes
    as loaded (orientation applied) agree."""
    files = _sample_files(dataset.samples[index])
    headers: dict[Path, tuple[tuple[int, int], int]] = {}
    for path in files:
        if not path.is_file():
            raise DataError(
                f"{path}: file not found (sample {index} of the list); restore it or remove "
                "its entry from the list"
            )
        header = _header(path)
        if header is not None:
            headers[path] = header
    check_orientations(headers)
    sizes = {path: loaded_size(size, orientation) for path, (size, orientation) in headers.items()}
    if len(set(sizes.values())) > 1:
        (first, first_size), *others = sizes.items()
        other, other_size = next((p, s) for p, s in others if s != first_size)
        raise DataError(
            f"{other}: {other_size[0]}x{other_size[1]} but {first} is "
            f"{first_size[0]}x{first_size[1]} (WxH); re-export it at the image's size"
        )


def check_orientation(dataset: SegmentationDataset, index: int) -> None:
    """The EXIF orientations of one sample's files (data/orientation.py); files whose header
    does not read are left to the decode, whose message says more."""
    headers: dict[Path, tuple[tuple[int, int], int]] = {}
    for path in _sample_files(dataset.samples[index]):
        try:
            header = _header(path) if path.is_file() else None
        except DataError:
            return
        if header is not None:
            headers[path] = header
    check_orientations(headers)


@contextlib.contextmanager
def _forked_rng() -> Iterator[None]:
    """Python, numpy and torch RNG states restored afterwards (the run's draws stay the same)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def preflight_problems(
    dataset: SegmentationDataset, limit: int = PREFLIGHT_FULL_DECODE
) -> list[str]:
    """Every problem the pre-flight finds in `dataset` (see the module docstring for what)."""
    problems: list[str] = []
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and len(samples) == len(dataset):
        for index in range(len(dataset)):
            try:
                check_headers(dataset, index)
            except DataError as error:
                problems.append(str(error))
    bad_headers = len(problems)
    if bad_headers == 0:  # decode only when the headers are sound: their error says more
        for index in preflight_indices(len(dataset), limit):
            try:
                dataset.load(index)
            except (DataError, FileNotFoundError) as error:
                problems.append(str(error))
    return problems


def preflight(
    train_set: Any, val_set: Any | None = None, limit: int = PREFLIGHT_FULL_DECODE
) -> None:
    """Check training and validation data before a run writes anything; one DataError.

    Datasets without `load` (objects a Python user passed to `train`) are not checked. The
    global RNG streams are left as they were, so a run is the same with or without it.
    """
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if dataset is None or not callable(getattr(dataset, "load", None)):
            continue
        with _forked_rng():
            problems = preflight_problems(dataset, limit)
        if problems:
            more = (
                f" (and {len(problems) - 1} more; run `fcnseg data check` for the full list)"
                if len(problems) > 1
                else ""
            )
            raise DataError(f"{name} data: {problems[0]}{more}")


def validate_dataset(dataset: SegmentationDataset) -> None:
    """Decode every sample; raise one DataError summarising all bad files (a full scan, as
    `fcnseg data check` does; training runs the cheaper `preflight`)."""
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
    channels: int = 3,
    **dataset_kwargs,
) -> CheckReport:
    """Scan `splits` (default: train and val) of the dataset at `root`; never raises DataError.
    Images are decoded to `channels` bands (a model's `in_channels`; 8 for 8-band TIFFs).

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
        dataset.image_channels = channels
        problems, per_head = scan_heads(dataset)
        report.problems += [f"[{split}] {p}" for p in problems]
        primary = primary_head_name(per_head)
        for head, stats in per_head.items():
            # Single-head datasets keep the plain split key; other heads get "split:head".
            report.statistics[split if head == primary else f"{split}:{head}"] = stats
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
