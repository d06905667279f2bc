"""CPU latency of FCN-8s on every backbone, against torchvision's mobile segmenters.

Question answered: what does an FCN-8s skip head on each encoder cost at CamVid resolution on a
small CPU, relative to LR-ASPP and DeepLabV3 on MobileNetV3-Large timed in the same run?

Method: batch 1, 360 x 480 (CamVid), `torch.set_num_threads(--threads)`, eval mode under
`torch.inference_mode`, random weights (latency does not depend on their values). Models are
timed round-robin (one forward each per round) so that load from other processes on a shared
machine hits all of them alike; the median over rounds is reported, with its ratio to the
LR-ASPP baseline.

Run:  .venv/bin/python benchmarks/backbones_speed.py [--repeats 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from paper_speed import _OutOnly  # run as a script: the benchmarks folder is on sys.path
from torch import nn

from fcnseg.constants import CAMVID_NUM_CLASSES, CAMVID_SIZE_HW
from fcnseg.models import build_model

ENCODERS = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
    "resnet101",
)
BASELINE = "lraspp_mobilenet_v3_large"


def model_factories(num_classes: int) -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of every timed model (built lazily, random weights, no download)."""
    factories: dict[str, Callable[[], nn.Module]] = {
        BASELINE: lambda: _OutOnly(
            torchvision.models.segmentation.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=num_classes
            )
        ),
        "deeplabv3_mobilenet_v3_large": lambda: _OutOnly(
            torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
            )
        ),
    }
    for encoder in ENCODERS:
        name = f"fcn8s_{encoder}"
        factories[name] = lambda name=name: build_model(name, num_classes, pretrained=False)
    return factories


def time_models(
    factories: dict[str, Callable[[], nn.Module]],
    size: tuple[int, int],
    repeats: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Seconds per forward of each model, `repeats` round-robin rounds after `warmup` ones."""
    models = {name: make().eval() for name, make in factories.items()}
    image = torch.randn(1, 3, *size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for name, model in models.items():
                start = time.perf_counter()
                output = model(image)
                elapsed = time.perf_counter() - start
                if output.shape[-2:] != image.shape[-2:]:
                    raise RuntimeError(f"{name} returned {tuple(output.shape)} for {size}")
                if round_index >= warmup:
                    times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument(
        "--size", type=int, nargs=2, default=list(CAMVID_SIZE_HW), metavar=("H", "W")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = time_models(
        model_factories(CAMVID_NUM_CLASSES), tuple(args.size), args.repeats, args.warmup
    )
    baseline = statistics.median(times[BASELINE])
    print(
        f"CPU latency, batch 1, {args.size[0]}x{args.size[1]}, {args.threads} threads, "
        f"median of {args.repeats} (round-robin, {args.warmup} warm-up rounds); "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    print()
    print(f"| model | median ms | min ms | ratio to {BASELINE} |")
    print("|---|---:|---:|---:|")
    for name, samples in sorted(times.items(), key=lambda item: statistics.median(item[1])):
        median = statistics.median(samples)
        print(
            f"| {name} | {median * 1e3:.1f} | {min(samples) * 1e3:.1f} | {median / baseline:.2f} |"
        )


if __name__ == "__main__":
    main()
