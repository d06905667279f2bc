"""Median time of one training step (forward, weighted loss, backward, AdamW) of a model.

Used to pick the CamVid recipe's settings on the 2-core CPU: bf16 autocast against fp32, and
the OpenMP wait policy (run once with `OMP_WAIT_POLICY=PASSIVE` in the environment, once
without, and compare the medians). Example:

    .venv/bin/python benchmarks/train_step.py --model fcn4s_efficientnet_lite0 --steps 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from fcnseg import build_model
from fcnseg.losses import PixelCrossEntropy, SoftJaccardLoss, WeightedSumLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fcn4s_efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 416])
    parser.add_argument("--steps", type=int, default=6, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--head-channels", type=int, default=64)
    parser.add_argument("--input-scale", type=float, default=1.0, help="FCN input_scale option")
    parser.add_argument("--jaccard-weight", type=float, default=0.0, help="soft-Jaccard term")
    parser.add_argument("--bf16-only", action="store_true", help="skip the fp32 timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, *args.size)
    masks = torch.randint(0, 11, (args.batch, *args.size))
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"{args.threads} threads, batch {args.batch} at {args.size[0]}x{args.size[1]}, "
        f"input_scale {args.input_scale}, jaccard_weight {args.jaccard_weight}"
    )
    for amp in (True,) if args.bf16_only else (True, False):
        model = build_model(
            args.model,
            num_classes=11,
            pretrained=False,
            head_channels=args.head_channels,
            upsample="bilinear",
            input_scale=args.input_scale,
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn: torch.nn.Module = PixelCrossEntropy(ignore_index=11)
        if args.jaccard_weight > 0:
            loss_fn = WeightedSumLoss(
                [(1.0, loss_fn), (args.jaccard_weight, SoftJaccardLoss(ignore_index=11))]
            )
        times = []
        for _ in range(args.steps + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(images)
            loss = loss_fn(logits, masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        median = statistics.median(times[1:])
        print(
            f"{args.model} {'bf16 autocast' if amp else 'fp32'}: median {median:.2f} s/step "
            f"({args.batch / median:.1f} images/s), steps {[round(t, 2) for t in times[1:]]}"
        )


if __name__ == "__main__":
    main()
