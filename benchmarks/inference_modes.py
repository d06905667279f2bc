"""Mean IU of each inference mode on CamVid val: whole, sliding, multi-scale+flip, and +CRF.

Given trained weights (a `.safetensors` written by `fcnseg train`, a checkpoint `.pt`, or a run
directory), every validation image is predicted once per mode with the same model, and the
paper's four scores are computed per mode from one confusion matrix each. The table reports the
change of mean IU against whole-image inference (the paper's protocol) and the seconds per image
each mode costs on this machine.

Usage:
    python benchmarks/inference_modes.py --weights runs/camvid-lite0/model.safetensors
    python benchmarks/inference_modes.py --weights W --limit 20 --modes whole multiscale crf
    python benchmarks/inference_modes.py --weights W --results benchmarks/RESULTS.md

The dataset root defaults to $FCNSEG_DATA/camvid, else ../shared/data/camvid.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fcnseg.constants import DEEPLAB_CRF_ITERATIONS
from fcnseg.inference import DEFAULT_SCALES, predict_logits, predict_probs
from fcnseg.metrics import ConfusionMatrix

#: Modes in table order; "crf" refines the multi-scale+flip probabilities, "whole+crf" the
#: whole-image ones (CRF gain without test-time augmentation).
ALL_MODES: tuple[str, ...] = ("whole", "sliding", "multiscale", "crf", "whole+crf")
#: Sliding tile for 360x480 CamVid frames: 256 px tiles with 1/3 overlap give 2 x 3 tiles.
DEFAULT_TILE = 256


def default_data_root() -> Path:
    base = os.environ.get("FCNSEG_DATA")
    if base:
        return Path(base) / "camvid"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def load_model(weights: Path) -> tuple[torch.nn.Module, dict]:
    """Eval-mode model and metadata from a .safetensors file, a checkpoint .pt or a run dir."""
    from fcnseg.engine.loading import load_model as load_source

    if weights.is_dir():
        loaded = load_source(run=weights)
        return loaded.model, loaded.metadata
    if weights.suffix == ".safetensors":
        loaded = load_source(weights=weights)
        return loaded.model, loaded.metadata
    loaded = load_source(checkpoint=weights)
    return loaded.model, loaded.metadata


def evaluate_modes(
    model: torch.nn.Module,
    dataset: Any,
    modes: list[str],
    preset: str,
    tile: int,
    scales: tuple[float, ...],
    crf_iterations: int,
    limit: int | None,
) -> dict[str, dict[str, float]]:
    from fcnseg.data.transforms import normalize
    from fcnseg.inference.crf import crf_refine

    matrices = {m: ConfusionMatrix(dataset.num_classes, dataset.ignore_index) for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        image, mask = dataset.load(index)
        x = normalize(image, preset)[None]
        image_hwc = image.permute(1, 2, 0).contiguous().numpy()
        base_probs: dict[str, tuple[torch.Tensor, float]] = {}
        for mode in modes:
            if mode in ("whole", "sliding", "multiscale"):
                start = time.perf_counter()
                logits = predict_logits(model, x, mode, tile_size=tile, scales=scales)
                seconds[mode] += time.perf_counter() - start
                prediction = logits[0].argmax(0)
            else:
                base = "multiscale" if mode == "crf" else "whole"
                if base not in base_probs:
                    start = time.perf_counter()
                    probs = predict_probs(model, x, base, tile_size=tile, scales=scales)[0]
                    base_probs[base] = (probs, time.perf_counter() - start)
                probs, base_seconds = base_probs[base]
                start = time.perf_counter()
                refined = crf_refine(image_hwc, probs.numpy(), iterations=crf_iterations)
                seconds[mode] += base_seconds + time.perf_counter() - start
                prediction = torch.from_numpy(refined.argmax(0))
            matrices[mode].update(prediction, mask)
        print(f"\r{index + 1}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    results = {}
    for mode in modes:
        scores = matrices[mode].scores()
        results[mode] = {
            "mean_iu": scores.mean_iu,
            "pixel_accuracy": scores.pixel_accuracy,
            "mean_accuracy": scores.mean_accuracy,
            "frequency_weighted_iu": scores.frequency_weighted_iu,
            "seconds_per_image": seconds[mode] / max(count, 1),
        }
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    baseline = results.get("whole", {}).get("mean_iu")
    lines = [
        "| mode | mean IU | change vs whole | pixel acc. | mean acc. | f.w. IU | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        delta = f"{100 * (r['mean_iu'] - baseline):+.2f}" if baseline is not None else "-"
        lines.append(
            f"| {mode} | {100 * r['mean_iu']:.2f} | {delta} | {100 * r['pixel_accuracy']:.2f} | "
            f"{100 * r['mean_accuracy']:.2f} | {100 * r['frequency_weighted_iu']:.2f} | "
            f"{r['seconds_per_image']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help=".safetensors, .pt or run dir")
    parser.add_argument("--data", type=Path, default=None, help="CamVid root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--modes", nargs="+", default=list(ALL_MODES), choices=ALL_MODES)
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="sliding tile side")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES))
    parser.add_argument("--crf-iterations", type=int, default=DEEPLAB_CRF_ITERATIONS)
    parser.add_argument("--limit", type=int, help="first N images only")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--results", type=Path, help="append a markdown section to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fcnseg.data.datasets.camvid import CamVid

    try:
        model, meta = load_model(args.weights)
        dataset = CamVid(args.data or default_data_root(), args.split)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    preset = str(meta.get("normalization") or getattr(model, "normalization", "imagenet"))
    started = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0]
    results = evaluate_modes(
        model,
        dataset,
        args.modes,
        preset,
        args.tile,
        tuple(args.scales),
        args.crf_iterations,
        args.limit,
    )
    images = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    section = "\n".join(
        [
            f"## Inference modes on CamVid {args.split} (benchmarks/inference_modes.py), "
            f"{started:%Y-%m-%d %H:%M} UTC",
            "",
            f"Command: `python benchmarks/inference_modes.py {' '.join(argv or sys.argv[1:])}`. "
            f"Model {meta.get('model')} ({args.weights}), {images} images, sliding "
            f"tile {args.tile}, scales {args.scales} + flip, CRF {args.crf_iterations} "
            f"iterations with DeepLab's kernels (crf = on multi-scale+flip probabilities). "
            f"Machine: 2-core CPU, shared and noisy (load average {load:.1f} at start); "
            "seconds are wall-clock per image.",
            "",
            format_table(results),
            "",
        ]
    )
    print(section)
    if args.results:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
