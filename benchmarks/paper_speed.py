"""CPU inference time of the paper's FCN-8s (VGG16) against torchvision's FCN-ResNet50.

Question answered: what does the paper-exact FCN-8s cost per 500 x 500 image (the size the paper
times in Table 1) on a small CPU, how much does dropping the 100-pixel padding save, and how
does it compare with torchvision's `fcn_resnet50` (dilated ResNet-50, output stride 8) timed in
the same run? Achieved GFLOP/s says whether the time goes into arithmetic or overhead.

Method: batch 1, `torch.set_num_threads(--threads)`, eval mode under `torch.no_grad`, random
weights (latency does not depend on their values), 21 classes (PASCAL VOC). FLOPs are counted
once per model with `torch.utils.flop_counter.FlopCounterMode` (convolutions, transposed
convolutions and matrix products; 2 FLOPs per multiply-add). After `--warmup` forwards each,
models are timed round-robin (one forward each per round) so that load from other processes on
a shared machine hits all of them alike; the median over rounds is reported with its ratio to
the baseline.

Run:  .venv/bin/python benchmarks/paper_speed.py [--repeats 5] [--threads 2] [--size 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.constants import PAPER_TIMING_SIZE, VOC_CLASSES
from fcnseg.models import build_model

BASELINE = "torchvision fcn_resnet50"
MODELS = ("fcn8s_vgg16", "fcn8s_vgg16_padded", "fcn32s_vgg16")


class _OutOnly(nn.Module):
    """torchvision segmenters return {"out": ...}; time the same tensor-returning call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def build_all(names: list[str], num_classes: int) -> dict[str, nn.Module]:
    baseline = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    models: dict[str, nn.Module] = {BASELINE: _OutOnly(baseline)}
    for name in names:
        models[name] = build_model(name, num_classes)
    return {name: model.eval() for name, model in models.items()}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def time_round_robin(
    models: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    for run in models.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, run in models.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=PAPER_TIMING_SIZE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    models = build_all(args.models, len(VOC_CLASSES))
    flops = {name: count_flops(model, x) for name, model in models.items()}

    def runner(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return model(x)

        return run

    times = time_round_robin(
        {name: runner(model) for name, model in models.items()}, args.warmup, args.repeats
    )
    base = statistics.median(times[BASELINE])
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}, "
        f"input 1x3x{args.size}x{args.size}, {args.repeats} rounds after {args.warmup} warm-up"
    )
    print("| model | GFLOPs | median ms (runs) | ratio to baseline | GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        runs_ms = ", ".join(f"{1000 * t:.0f}" for t in runs)
        print(
            f"| {name} | {flops[name] / 1e9:.1f} | {1000 * median:.0f} ({runs_ms}) | "
            f"{median / base:.2f} | {flops[name] / 1e9 / median:.1f} |"
        )


if __name__ == "__main__":
    main()
