"""Throughput of `fcnseg predict` over many images: the baseline of issue 17, item 4.

Question answered: how many images per second does today's `fcnseg predict` loop (decode, one
forward, palette PNG and overlay JPEG per image, one image at a time in one process) reach on a
folder of generated scenes? Item 4 (DataLoader decoding, batching, background writes, torchrun
shards) is to be measured against this number with the same script.

Method: `--count` synthetic street scenes (`fcnseg.data.datasets.synthetic`, the test split's
generator, `--size` H W, PNG) are written once to `--images`; then the real command runs as a
subprocess (`python -m fcnseg.cli predict ...`, so start-up, model load and the engine's cache
look-up count, as a user would see them) `--repeats` times; wall seconds and images/s per run
and their median are printed with the load average. The ONNX engine's one-time export is done
by a warm-up call on 2 images before timing, so the timed runs reuse the cached graph.

Item 4's comparison: each repeat runs both loops on the same images, back to back, so load
changes hit both alike: "old" is `--batch-size 1 --workers 0 --foreground-writes` (today's loop
exactly), "new" is `--batch-size B --workers N` (DataLoader decoding, same-size batches of B,
background writes); the ratio of the medians is printed.

Run:  .venv/bin/python benchmarks/predict_throughput.py [--count 500] [--engine auto]
      [--batch-size 4] [--workers 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def write_scenes(folder: Path, count: int, size: tuple[int, int]) -> None:
    """`count` generated scenes as PNG files (kept between runs when already there)."""
    from fcnseg.data.datasets.synthetic import SyntheticStreets

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) == count:
        return
    dataset = SyntheticStreets(None, split="test", num_images=count, size=size)
    for index in range(count):
        image, _ = dataset.load(index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"scene_{index:04d}.png")


#: The command-line options of each loop compared ("new" gets --batch-size/--workers added).
LOOPS: dict[str, list[str]] = {
    "old": ["--batch-size", "1", "--workers", "0", "--foreground-writes"],
    "new": [],
}


def run_predict(
    weights: str,
    inputs: list[str],
    out: Path,
    engine: str,
    mode: str,
    extra: list[str] | None = None,
) -> float:
    """Wall seconds of one `fcnseg predict` subprocess."""
    command = [sys.executable, "-m", "fcnseg.cli", "predict", "--weights", weights, *inputs]
    command += ["--out", str(out), "--engine", engine, "--mode", mode, "--device", "cpu"]
    command += extra or []
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="weights/camvid_fcn4s_lite0.safetensors")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--images", default=None, help="scene folder (default: a temp folder)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--mode", default="whole")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4, help="the new loop's batch size")
    parser.add_argument("--workers", type=int, default=2, help="the new loop's decode workers")
    args = parser.parse_args()
    loops = {**LOOPS, "new": ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]}

    scratch = Path(tempfile.mkdtemp(prefix="predict-throughput-"))
    images = Path(args.images) if args.images else scratch / "scenes"
    write_scenes(images, args.count, tuple(args.size))
    files = sorted(str(p) for p in images.glob("*.png"))
    run_predict(args.weights, files[:2], scratch / "warmup", args.engine, args.mode)
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}, {len(files)} scenes "
        f"{args.size[0]}x{args.size[1]}, engine {args.engine}, mode {args.mode}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for repeat in range(args.repeats):
        for name, extra in loops.items():
            out = scratch / f"out-{name}{repeat}"
            before = " ".join(f"{v:.1f}" for v in os.getloadavg())
            seconds = run_predict(args.weights, [str(images)], out, args.engine, args.mode, extra)
            after = " ".join(f"{v:.1f}" for v in os.getloadavg())
            written = len(list(out.rglob("*.png")))
            rates[name].append(len(files) / seconds)
            print(
                f"run {repeat + 1} {name} ({' '.join(extra)}): {seconds:.1f} s, "
                f"{rates[name][-1]:.2f} images/s, {written} PNGs, load {before} -> {after}"
            )
            shutil.rmtree(out)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"median {name}: {value:.2f} images/s")
    print(f"ratio new/old: {medians['new'] / medians['old']:.2f}")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
