"""Error of the mean-field layers' windowed bilateral filter against the exact dense filter.

`fcnseg.models.meanfield` truncates the bilateral (appearance) kernel to a window x window
neighbourhood, optionally on a coarser grid (convolutional CRFs). This measures what that costs:
on full-resolution crops of real CamVid images (small, so the O(N^2) exact filter fits), the
relative error ||approx - exact|| / ||exact|| of one bilateral message pass (the sum K Q, and
the normalised message K Q / (K 1 + 1) the layers pass), for DeepLab's kernel widths and for
narrow ones, per window and grid; and the time of one mean-field
iteration at CamVid's 360x480 with 11 classes. The messages are passed on probabilities made
from the ground truth (one-hot x 2 plus unit Gaussian noise, softmax), as a net's would look.
Example:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/meanfield_filter_error.py \
        --data-root ../shared/data/camvid --images 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fcnseg.data.datasets.registry import build_dataset
from fcnseg.models.meanfield import GridFilter, MeanFieldOptions, exact_dense_filter

#: (name, bilateral sxy, srgb): DeepLab's cross-validated widths and a narrow kernel.
WIDTHS = (("deeplab 67/3", 67.0, 3.0), ("narrow 3/13", 3.0, 13.0), ("mid 10/13", 10.0, 13.0))
#: (window, downsample) settings measured.
SETTINGS = ((7, 1), (11, 1), (15, 1), (7, 2), (7, 4), (11, 4))
CROPS = ((32, 32), (48, 64))


def crops(root: str, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(probabilities 1 x C x h x w, RGB 1 x 3 x h x w on 0-255) per image and crop size."""
    dataset = build_dataset("camvid", root, "val")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        image, mask = dataset.load(index * (len(dataset) // count))
        for height, width in CROPS:
            top = (image.shape[-2] - height) // 2
            left = (image.shape[-1] - width) // 2
            patch = image[:, top : top + height, left : left + width][None].float()
            labels = mask[top : top + height, left : left + width].long().clamp(0, 10)
            scores = F.one_hot(labels, 11).permute(2, 0, 1)[None].float() * 2
            scores = scores + torch.randn(scores.shape, generator=generator)
            out.append((torch.softmax(scores, 1), patch))
    return out


def errors(
    samples: list, sxy: float, srgb: float, normalised: bool
) -> dict[tuple[int, int], list[float]]:
    """Relative error per setting and sample: of the sum K Q (self excluded), or, `normalised`,
    of the message the layers pass, K Q / (K 1 + 1) (the filter of ones, self included)."""
    found: dict[tuple[int, int], list[float]] = {setting: [] for setting in SETTINGS}
    for probs, image in samples:
        ones = torch.ones_like(probs[:, :1])
        exact = exact_dense_filter(probs, image, sxy, srgb)
        if normalised:
            exact = exact / (exact_dense_filter(ones, image, sxy, srgb) + 1)
        for window, step in SETTINGS:
            options = MeanFieldOptions(
                window=window, downsample=step, bilateral_sxy=sxy, bilateral_srgb=srgb
            )
            grid = GridFilter(image, options)
            approx = grid.bilateral(probs)
            if normalised:
                approx = approx / (grid.bilateral(ones) + 1)
            found[(window, step)].append(float((approx - exact).norm() / exact.norm()))
    return found


def iteration_ms(repeats: int) -> dict[tuple[int, int], float]:
    """Median ms of one mean-field message pass (both kernels) at 360x480, 11 classes."""
    image = torch.rand(1, 3, 360, 480) * 255
    probs = torch.softmax(torch.randn(1, 11, 360, 480), 1)
    times: dict[tuple[int, int], float] = {}
    with torch.no_grad():
        for window, step in SETTINGS:
            grid = GridFilter(image, MeanFieldOptions(window=window, downsample=step))
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                grid(probs)
                runs.append(1000 * (time.perf_counter() - started))
            times[(window, step)] = statistics.median(runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = crops(args.data_root, args.images)
    header = " | ".join(f"w{window}/ds{step}" for window, step in SETTINGS)
    print(f"| kernel (sxy/srgb) | {header} |")
    print("|---|" + "---:|" * len(SETTINGS))
    for normalised in (False, True):
        for name, sxy, srgb in WIDTHS:
            found = errors(samples, sxy, srgb, normalised)
            cells = " | ".join(
                f"{statistics.median(values):.3f} (max {max(values):.3f})"
                for values in found.values()
            )
            label = f"{name}, {'normalised message' if normalised else 'sum K Q'}"
            print(f"| {label} | {cells} |")
    times = iteration_ms(args.repeats)
    print(
        f"| ms per message pass, 360x480, 11 classes | {' | '.join(f'{v:.0f}' for v in times.values())} |"
    )


if __name__ == "__main__":
    main()
