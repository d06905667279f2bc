"""Val scores of every subset of multi-scale + flip test-time scales, from one pass per scale.

`fcnseg eval --mode multiscale --scales ...` averages softmax scores over the scales and their
mirror images. Each scale's flip-averaged scores are computed once here (with the product's own
`multiscale_flip_probs`), so the mean over any subset of scales, which is what the product would
compute for that subset, costs no further forward passes. Used to choose the CamVid release's
recommended inference on val (issue 8). Example:

    .venv/bin/python benchmarks/tta_scales.py weights/camvid_fcn4s_lite0.safetensors \
        --data-root ../shared/data/camvid --scales 0.75 1.0 1.25
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.transforms import eval_transform
from fcnseg.engine.loading import load_model
from fcnseg.inference.tta import multiscale_flip_probs
from fcnseg.metrics import ConfusionMatrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help=".safetensors, checkpoint .pt, or run directory weights")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--format", default=None, help="dataset format (default: the weights')")
    parser.add_argument("--split", default="val")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.weights)
    model, meta = loaded.model, loaded.metadata
    data_format = args.format or meta.get("data_format")
    transform = eval_transform(meta.get("normalization", "imagenet"), None)
    dataset = build_dataset(data_format, args.data_root, args.split, transform=transform)
    # Per image and scale: flip-averaged softmax, kept in fp16 (CamVid val: ~0.4 GB per scale).
    probs: dict[float, list[torch.Tensor]] = {scale: [] for scale in args.scales}
    masks = []
    started = time.perf_counter()
    with torch.no_grad():
        for index in range(len(dataset)):
            image, mask = dataset[index]
            masks.append(mask)
            for scale in args.scales:
                mean = multiscale_flip_probs(model, image[None], scales=(scale,), flip=True)
                probs[scale].append(mean[0].half())
    seconds = time.perf_counter() - started
    print(
        f"{args.weights}: {len(dataset)} {args.split} images, scales {args.scales} + flip, "
        f"{seconds:.0f} s of inference"
    )
    names = list(dataset.classes)
    print(f"| scales (+ flip) | mean IU | lowest class IU | {' | '.join(names)} |")
    print("|---" * (len(names) + 3) + "|")
    for size in range(1, len(args.scales) + 1):
        for subset in itertools.combinations(args.scales, size):
            matrix = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
            for index, mask in enumerate(masks):
                # Equal flip counts per scale, so the sum's argmax is the subset mean's argmax.
                total = sum(probs[scale][index].float() for scale in subset)
                matrix.update(total.argmax(0)[None], mask[None])
            scores = matrix.scores()
            per_class = [100 * value for value in scores.per_class_iu]
            lowest = min(range(len(per_class)), key=per_class.__getitem__)
            print(
                f"| {', '.join(map(str, subset))} | {100 * scores.mean_iu:.2f} | "
                f"{names[lowest]} {per_class[lowest]:.1f} | "
                + " | ".join(f"{value:.1f}" for value in per_class)
                + " |"
            )


if __name__ == "__main__":
    main()
