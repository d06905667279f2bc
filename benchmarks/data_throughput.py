"""Images/s of the CamVid training input pipeline, DataLoader with workers vs. in-process.

Pipeline: decode PNG image + label, random scale 0.5-2, flip, ImageNet normalisation, random
crop/pad to 360x480, batch 8 (what `fcnseg train` runs for CamVid). Both settings are timed in
the same run, alternating, so load from other processes affects them alike; medians of the
repeats are reported with the ratio to the 0-worker baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_throughput.py [--root DIR] [--repeats 3]

Without the real CamVid (../shared/data/camvid or $FCNSEG_DATA/camvid) it falls back to the
synthetic dataset at the same size, and says so.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fcnseg.constants import CAMVID_SIZE_HW, CAMVID_VOID
from fcnseg.data.datasets.camvid import CamVid
from fcnseg.data.datasets.synthetic import SyntheticStreets
from fcnseg.data.io import default_data_dir
from fcnseg.data.transforms import train_transform


def images_per_second(dataset, workers: int, batch_size: int, batches: int) -> float:
    """Time `batches` batches after one warm-up batch (worker start-up is excluded)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, masks = next(iterator)
    elapsed = time.perf_counter() - start
    assert images.shape[-2:] == masks.shape[-2:] == CAMVID_SIZE_HW
    del iterator, loader
    return batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_data_dir() / "camvid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    transform = train_transform("imagenet", crop_size=CAMVID_SIZE_HW, ignore_index=CAMVID_VOID)
    if (args.root / "train.txt").is_file():
        dataset = CamVid(args.root, "train", transform=transform)
        source = f"CamVid train ({len(dataset)} images) at {args.root}"
    else:
        dataset = SyntheticStreets(split="train", size=CAMVID_SIZE_HW, transform=transform)
        source = "synthetic streets at 360x480 (real CamVid not found)"
    print(
        f"data: {source}; batch {args.batch_size}, {args.batches} batches x {args.repeats} repeats"
    )
    print(f"torch threads: {torch.get_num_threads()}")
    results: dict[int, list[float]] = {0: [], args.workers: []}
    for _ in range(args.repeats):
        for workers in results:
            results[workers].append(
                images_per_second(dataset, workers, args.batch_size, args.batches)
            )
    baseline = statistics.median(results[0])
    for workers, rates in results.items():
        median = statistics.median(rates)
        runs = ", ".join(f"{r:.1f}" for r in rates)
        print(
            f"workers={workers}: median {median:.1f} images/s (runs: {runs}); "
            f"ratio to 0 workers {median / baseline:.2f}"
        )


if __name__ == "__main__":
    main()
