"""The shipped CamVid model per engine: torch eager vs onnxruntime fp32 vs onnxruntime int8.

Question answered (issue 17, items 1-2): what do the engines of `fcnseg eval/predict --engine`
buy on this CPU, and what does int8 cost in accuracy? Speed: batch 1, one 360x480 CamVid val
image, one whole-image forward (`predict_logits(mode="whole")`, the net enlarging its input 2x
inside), the three engines timed round-robin in ONE process (one call each per round, medians),
so that the shared machine's load hits them alike; the ratios are the result, absolute numbers
move with the load. Accuracy: val mean IU with one whole-image forward per engine (`--limit N`
scores an evenly spread subset when the full split is too slow under load), plus the share of
val pixels where int8 and fp32 predict the same class.

The ONNX graphs come from the engine cache (`fcnseg.inference.graph_cache`): fp32 is exported and
checked on first use; int8 must have been made once with
`fcnseg export --weights W --to onnx --int8 --calibrate ROOT --format camvid --out FILE`.

Run:  .venv/bin/python benchmarks/engines_camvid.py --data-root ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Any

import torch

from fcnseg.engine.evaluate import evaluate_heads
from fcnseg.engine.loading import load_model
from fcnseg.engine.run_eval import eval_split
from fcnseg.inference import predict_logits
from fcnseg.inference.runtimes import resolve_runtime
from fcnseg.models.protocol import primary_head_name

ENGINES = ("torch", "onnxruntime", "onnxruntime-int8")


class _Subset(torch.utils.data.Dataset):
    """Every k-th sample of a dataset (an evenly spread subset of the split)."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def time_engines(runnables: dict[str, Any], image: torch.Tensor, warmup: int, rounds: int):
    """Median seconds per forward of each engine, timed round-robin."""
    for run in runnables.values():
        for _ in range(warmup):
            predict_logits(run, image, "whole")
    times: dict[str, list[float]] = {name: [] for name in runnables}
    for _ in range(rounds):
        for name, run in runnables.items():
            start = time.perf_counter()
            predict_logits(run, image, "whole")
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="weights/camvid_fcn4s_lite0.safetensors")
    parser.add_argument("--data-root", default="../shared/data/camvid")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--limit", type=int, default=None, help="score an even subset of N")
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    loaded = load_model(weights=args.weights)
    model = loaded.model
    resolved = {
        name: resolve_runtime(model, loaded.source, name, threads=args.threads) for name in ENGINES
    }
    for engine in resolved.values():
        print(f"# {engine.summary()}")
    dataset, data_format, split = eval_split(
        loaded, data_format="camvid", data_root=args.data_root, split=args.split
    )
    image = dataset[0][0].unsqueeze(0)
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, input {tuple(image.shape)}"
    )
    before = load()
    times = time_engines(
        {name: engine.runnable for name, engine in resolved.items()},
        image,
        args.warmup,
        args.rounds,
    )
    after = load()
    eager = statistics.median(times["torch"])
    print(f"\nSpeed, load average (1/5/15 min) {before} before, {after} after:\n")
    print("| engine | median ms | min ms | images/s (median) | vs torch eager |")
    print("|---|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(
            f"| {name} | {1000 * median:.0f} | {1000 * min(runs):.0f} | {1 / median:.2f} | "
            f"{eager / median:.2f}x |"
        )
    if args.no_accuracy:
        return
    scored = dataset
    if args.limit and args.limit < len(dataset):
        step = len(dataset) / args.limit
        scored = _Subset(dataset, sorted({int(i * step) for i in range(args.limit)}))
    loader = torch.utils.data.DataLoader(scored, batch_size=1)
    print(f"\nAccuracy on {data_format} {split}, {len(scored)} of {len(dataset)} images, whole:\n")
    print("| engine | mean IU | pixel acc. | lowest class IU | s / image | load after |")
    print("|---|---|---|---|---|---|")
    predictions: dict[str, list[torch.Tensor]] = {}
    for name in ("onnxruntime", "onnxruntime-int8"):
        kept: list[torch.Tensor] = []
        start = time.perf_counter()
        per_head = evaluate_heads(
            resolved[name].runnable,
            loader,
            dataset.num_classes,
            dataset.ignore_index,
            on_batch=lambda predicted, target, kept=kept: kept.append(predicted.clone()),
        )
        seconds = (time.perf_counter() - start) / len(scored)
        predictions[name] = kept
        scores = per_head[primary_head_name(per_head)]
        worst = min(range(len(scores.per_class_iu)), key=lambda i: scores.per_class_iu[i])
        print(
            f"| {name} | {100 * scores.mean_iu:.2f} | {100 * scores.pixel_accuracy:.2f} | "
            f"{dataset.classes[worst]} {100 * scores.per_class_iu[worst]:.1f} | {seconds:.2f} | "
            f"{load()} |"
        )
    same = sum(
        int((a == b).sum())
        for a, b in zip(predictions["onnxruntime"], predictions["onnxruntime-int8"], strict=True)
    )
    total = sum(a.numel() for a in predictions["onnxruntime"])
    print(f"\nint8 vs fp32 argmax agreement over the scored pixels: {100 * same / total:.2f}%")


if __name__ == "__main__":
    main()
