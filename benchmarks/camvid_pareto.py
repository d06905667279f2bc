"""CamVid speed/accuracy Pareto table: net input scale x engine x precision (issue 17 item 3).

Question answered: which way of running a CamVid model is worth shipping on this 2-core CPU?
Each row is one (weights, net input scale, engine) and gets
- val mean IU with one whole-image forward at the full 360x480 (all of val unless --limit),
- images/s at 360x480, batch 1, every row and torchvision's lraspp_mobilenet_v3_large (eager,
  random weights: speed only, the baseline of the issue's 0.7x rule) timed round-robin in ONE
  process, so that the shared machine's load hits every row alike (medians),
- peak RSS of a fresh process that loads the row and runs 10 forwards (a subprocess per row:
  the high-water mark is per process).

A row at a scale other than the weights' own runs a copy of the weights whose metadata says
that scale (written under --work): the engine cache is keyed by the file, so each scale gets
its own checked ONNX graph. int8 rows are quantised once (`fcnseg export --int8` does the same)
on --calibration-images training images.

Run:  .venv/bin/python benchmarks/camvid_pareto.py --data-root ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from engines_camvid import load as load_average  # benchmarks/ is on sys.path as a script
from paper_speed import _OutOnly

from fcnseg.engine.checkpoint import load_weights, write_weights
from fcnseg.engine.evaluate import evaluate_heads
from fcnseg.engine.loading import load_model
from fcnseg.engine.run_eval import eval_split
from fcnseg.inference.bench import time_interleaved
from fcnseg.inference.runtimes import resolve_runtime
from fcnseg.models.protocol import primary_head_name

BASELINE = "lraspp_mobilenet_v3_large (torchvision, eager)"
SIZE = (360, 480)
ENGINE_PRECISION = {"torch": "fp32", "onnxruntime": "fp32", "onnxruntime-int8": "int8"}


@dataclass(frozen=True)
class Row:
    """One way of running a model: weights file (at its stored input scale) and engine."""

    label: str
    weights: Path
    scale: float
    engine: str


def at_scale(weights: Path, scale: float, work: Path) -> Path:
    """`weights` itself when it already runs at `scale`, else a copy whose metadata says so."""
    tensors, meta = load_weights(weights)
    if float(meta["model_options"].get("input_scale", 1.0)) == scale:
        return weights
    copy = work / f"{weights.stem}@{scale:g}.safetensors"
    if not copy.is_file():
        options = {**meta["model_options"], "input_scale": scale}
        write_weights(copy, tensors, {**meta, "model_options": options})
    return copy


def ensure_int8(weights: Path, data_root: str, images: int) -> None:
    """Quantise `weights` once (cached beside it) unless its int8 graph is already cached."""
    from fcnseg.inference.graph_cache import ExportOptions, find_cached
    from fcnseg.inference.quantize import calibration_images, quantize_int8

    if find_cached(weights, ExportOptions(int8=True)) is not None:
        return
    loaded = load_model(weights=weights)
    model, meta = loaded.model, loaded.metadata
    calibration, source = calibration_images(
        data_root, meta["normalization"], data_format="camvid", count=images
    )
    quantize_int8(model, weights, calibration, calibration_source=source)


def open_row(row: Row) -> tuple[Any, dict[str, Any]]:
    """(runnable, metadata) of a row."""
    loaded = load_model(weights=row.weights)
    model, meta = loaded.model, loaded.metadata
    resolved = resolve_runtime(model, loaded.source, row.engine, threads=torch.get_num_threads())
    return resolved.runnable, meta


def baseline_model() -> Any:
    import torchvision

    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=11
    )
    return _OutOnly(net).eval()


def peak_rss_mib(row: Row | None, threads: int) -> float:
    """Peak RSS (MiB) of a fresh process that opens `row` (None: the baseline) and runs 10
    forwards at 360x480."""
    spec = json.dumps(None if row is None else [row.label, str(row.weights), row.scale, row.engine])
    command = [sys.executable, __file__, "--rss-of", spec, "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def rss_child(spec: str) -> None:
    """The subprocess side of peak_rss_mib: prints the peak RSS in MiB on its last line."""
    values = json.loads(spec)
    if values is None:
        runnable = baseline_model()
    else:
        label, weights, scale, engine = values
        runnable = open_row(Row(label, Path(weights), scale, engine))[0]
    image = torch.randn(1, 3, *SIZE)
    with torch.inference_mode():
        for _ in range(10):
            runnable(image)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent through
    # fork + exec, so every child would report at least this script's own peak.
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(peak_kib / 1024)


def mean_iu(runnable: Any, dataset: Any, limit: int | None) -> tuple[float, str]:
    """(val mean IU in %, lowest class 'Name IU') with one whole-image forward per image."""
    scored = dataset if not limit else torch.utils.data.Subset(dataset, range(limit))
    loader = torch.utils.data.DataLoader(scored, batch_size=1)
    per_head = evaluate_heads(runnable, loader, dataset.num_classes, dataset.ignore_index)
    scores = per_head[primary_head_name(per_head)]
    worst = min(range(len(scores.per_class_iu)), key=lambda i: scores.per_class_iu[i])
    return 100 * scores.mean_iu, f"{dataset.classes[worst]} {100 * scores.per_class_iu[worst]:.1f}"


def build_rows(args: argparse.Namespace) -> list[Row]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for spec in args.model:
        label, path, scales = spec.split(":", 2)
        for scale in (float(value) for value in scales.split(",")):
            weights = at_scale(Path(path), scale, work)
            engines = ["torch", "onnxruntime"]
            if f"{label}@{scale:g}" in args.int8:
                ensure_int8(weights, args.data_root, args.calibration_images)
                engines.append("onnxruntime-int8")
            rows += [Row(label, weights, scale, engine) for engine in engines]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        help="LABEL:WEIGHTS:SCALE[,SCALE...] (repeatable); default: the fast model at 1.0, "
        "1.334 and 1.5, the two-stage model at 1.334 and 2.0",
    )
    parser.add_argument(
        "--int8",
        nargs="*",
        default=["fast@1.334", "two-stage@2"],
        help="LABEL@SCALE rows that also get an int8 graph (quantised once, then cached)",
    )
    parser.add_argument("--data-root", default="../shared/data/camvid")
    parser.add_argument("--work", default="/tmp/fcnseg-pareto", help="scale copies go here")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="score the first N val images")
    parser.add_argument(
        "--speed-only", action="store_true", help="images/s only (no val scores, no RSS)"
    )
    parser.add_argument("--rss-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_of is not None:
        rss_child(args.rss_of)
        return
    args.model = args.model or [
        "fast:weights/camvid_fcn4s_lite0_fast.safetensors:1.0,1.334,1.5",
        "two-stage:weights/camvid_fcn4s_lite0.safetensors:1.334,2.0",
    ]
    rows = build_rows(args)
    opened = {row: open_row(row) for row in rows}
    image = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    calls = {row: (lambda run=opened[row][0]: run(image)) for row in rows}
    baseline = baseline_model()
    calls[BASELINE] = lambda: baseline(image)
    started = datetime.datetime.now(datetime.UTC)
    before = load_average()
    with torch.inference_mode():  # the eager rows' fastest mode, the baseline's included
        times = time_interleaved(calls, args.rounds, warmup=3)  # 2 calls: the fixed-size graph
    after = load_average()
    baseline_rate = 1 / statistics.median(times[BASELINE])
    loaded = load_model(weights=rows[0].weights)  # eval_split reads the weights' class map too
    dataset = eval_split(loaded, data_format="camvid", data_root=args.data_root, split="val")[0]
    scored = 0 if args.speed_only else min(args.limit or len(dataset), len(dataset))
    print(
        f"# {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} threads, batch 1, {SIZE[0]}x{SIZE[1]}, "
        f"{args.rounds} rounds round-robin; load average (1/5/15 min) {before} before timing, "
        f"{after} after; val images scored: {scored}"
    )
    print(
        "\n| model | net input scale | engine | precision | val mean IU | lowest class | "
        "images/s | vs lraspp | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = 1 / statistics.median(times[row])
        score, worst, rss = "-", "-", "-"
        if not args.speed_only:
            value, worst = mean_iu(opened[row][0], dataset, scored)
            score, rss = f"{value:.2f}", f"{peak_rss_mib(row, args.threads):.0f}"
        print(
            f"| {row.label} | {row.scale:g} | {row.engine} | {ENGINE_PRECISION[row.engine]} | "
            f"{score} | {worst} | {rate:.1f} | {rate / baseline_rate:.2f}x | {rss} |",
            flush=True,
        )
    rss = "-" if args.speed_only else f"{peak_rss_mib(None, args.threads):.0f}"
    print(
        f"| {BASELINE} | 1 | torch | fp32 | n/a (untrained) | | {baseline_rate:.1f} | 1.00x | "
        f"{rss} |"
    )
    print(f"\n# load average after scoring: {load_average()}")


if __name__ == "__main__":
    main()
