"""Rasters larger than memory (issue 23, item 3): megapixels/s and peak RSS of `predict --tiled`.

What it does, in one run:
1. writes a procedural RGB tiled TIFF (512 x 512 zlib tiles, generated tile by tile, never held
   whole) of side `--side` x sqrt(k) for each area multiple k of `--sizes` (1, 4, 16 -> 30000,
   60000, 120000 pixels a side by default);
2. baseline, on a `--baseline-side` square image of the same content: the in-memory sliding
   mode (the image decoded whole, `InferenceSession.labels` with the same tiles) against the
   raster path, each in its own process, so each peak RSS is that process's own;
3. the raster path (`fcnseg.engine.predict_raster.run_raster_prediction`, what `fcnseg predict
   --tiled` runs) on each large image, in a child process that logs its progress (rows done,
   seconds) to stderr, so that a run stopped early still gives a measured rate.

Prints one JSON line per measurement and a Markdown table at the end.

    nice -n 10 .venv/bin/python benchmarks/large_raster.py --sizes 1 4 16
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0_fast.safetensors"
TILE = 512


def procedural_tile(top: int, left: int, size: int = TILE) -> np.ndarray:
    """Street-like blocks: smooth colour fields, stripes and a texture, from the coordinates."""
    y, x = np.mgrid[top : top + size, left : left + size]
    block = ((y // 700) * 31 + (x // 900) * 17) % 7
    red = (block * 37 + (x % 256) // 4) % 256
    green = (block * 53 + (y % 192) // 3) % 256
    blue = (block * 71 + ((x + y) % 64) * 2) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def compressed_tile(corner: tuple[int, int]) -> bytes:
    """One procedural tile, zlib level 1, as the TIFF stores it (run in a worker process)."""
    return zlib.compress(procedural_tile(*corner).tobytes(), 1)


def write_raster(path: Path, side: int, workers: int = 1) -> float:
    """A side x side procedural tiled TIFF, streamed tile by tile; seconds taken. With several
    workers the tiles are generated and compressed in a process pool (in order) and handed to
    tifffile as compressed bytes, which is what makes 16x (120000 px a side) practical."""
    import tifffile

    started = time.perf_counter()
    corners = [(top, left) for top in range(0, side, TILE) for left in range(0, side, TILE)]
    pool = None

    def tiles():
        if workers <= 1:
            for corner in corners:
                yield procedural_tile(*corner)
            return
        yield from pool.imap(compressed_tile, corners, chunksize=16)

    if workers > 1:
        pool = multiprocessing.get_context("fork").Pool(workers)

    tmp = path.with_suffix(".partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        writer.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            compression="zlib",
            compressionargs={"level": 1},
            photometric="rgb",
        )
    if pool is not None:
        pool.close()
        pool.join()
    os.replace(tmp, path)
    return time.perf_counter() - started


def child_raster(args: argparse.Namespace) -> None:
    """One raster-path run in this process; JSON result on stdout, progress on stderr."""
    from fcnseg.engine.predict_raster import peak_rss_bytes, run_raster_prediction

    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter() - started
        if now - last[0] >= 10 or done == total:
            last[0] = now
            rss = round(peak_rss_bytes() / 2**20)
            print(f"rows {done}/{total} at {now:.1f} s peak {rss} MiB", file=sys.stderr, flush=True)

    run = run_raster_prediction(
        [args.image],
        args.out,
        weights=args.weights,
        device=args.device,
        engine=args.engine,
        options={"tile_size": TILE, "tile_stride": args.stride, "tile_batch": args.tile_batch},
        progress=progress,
        threads=args.threads,
    )
    result = run.results[0]
    print(
        json.dumps(
            {
                "path": "raster",
                "image": f"{result.width}x{result.height}",
                "megapixels": result.height * result.width / 1e6,
                "seconds": round(result.seconds, 1),
                "mpx_per_s": round(result.megapixels_per_second, 3),
                "peak_rss_mib": round(peak_rss_bytes() / 2**20),
                "runtime": run.runtime.summary(),
            }
        )
    )


def child_in_memory(args: argparse.Namespace) -> None:
    """The baseline: the image decoded whole, the in-memory sliding mode, same tiles."""
    import tifffile
    import torch

    from fcnseg.engine.predict_raster import peak_rss_bytes
    from fcnseg.engine.session import InferenceSession

    session = InferenceSession.load(
        weights=args.weights,
        device=args.device,
        runtime=args.engine,
        mode="sliding",
        options={"tile_size": TILE, "tile_stride": args.stride},
        threads=args.threads,
    )
    started = time.perf_counter()
    image = torch.from_numpy(tifffile.imread(args.image)).permute(2, 0, 1)
    labels = session.labels([image])[0].numpy().astype(np.uint8)
    tifffile.imwrite(Path(args.out) / "in_memory_labels.tif", labels, compression="zlib")
    seconds = time.perf_counter() - started
    megapixels = labels.size / 1e6
    print(
        json.dumps(
            {
                "path": "in-memory sliding",
                "image": f"{labels.shape[1]}x{labels.shape[0]}",
                "megapixels": megapixels,
                "seconds": round(seconds, 1),
                "mpx_per_s": round(megapixels / seconds, 3),
                "peak_rss_mib": round(peak_rss_bytes() / 2**20),
                "runtime": session.runtime.summary(),
            }
        )
    )


def partial_result(kind: str, image: Path, log_path: Path, limit: float) -> dict:
    """A child stopped at --time-limit: its rate and peak RSS from its last progress line. The
    peak is already reached in the first band (memory grows with the width, not the height)."""
    import re

    lines = [line for line in log_path.read_text().splitlines() if line.startswith("rows ")]
    if not lines:
        raise SystemExit(f"{kind} on {image} stopped at {limit} s before its first progress line")
    found = re.match(r"rows (\d+)/(\d+) at ([\d.]+) s peak (\d+) MiB", lines[-1])
    done, total, seconds, rss = found.groups()
    side = int(image.stem.split("_")[-1])
    megapixels = side * side * int(done) / int(total) / 1e6
    result = {
        "path": f"raster (stopped at {limit:.0f} s: rows {done} of {total})",
        "image": f"{side}x{side}",
        "megapixels": megapixels,
        "seconds": float(seconds),
        "mpx_per_s": round(megapixels / float(seconds), 3),
        "peak_rss_mib": int(rss),
    }
    print(json.dumps(result), flush=True)
    return result


def run_child(kind: str, image: Path, out: Path, args: argparse.Namespace) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--image",
        str(image),
        "--out",
        str(out),
        "--weights",
        str(args.weights),
        "--engine",
        args.engine,
        "--stride",
        str(args.stride),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--tile-batch",
        str(args.tile_batch),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    log_path = args.workdir / f"{kind}-{image.stem}.log"
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                timeout=args.time_limit,
            )
        except subprocess.TimeoutExpired:
            return partial_result(kind, image, log_path, args.time_limit)
    if done.returncode != 0:
        raise SystemExit(f"{kind} on {image} failed (exit {done.returncode}); see the log")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--side", type=int, default=30000)
    parser.add_argument("--baseline-side", type=int, default=2048)
    parser.add_argument("--stride", type=int, default=480, help="tile stride (tile 512)")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fcnseg-large-raster"))
    parser.add_argument("--keep", action="store_true", help="keep the generated TIFFs")
    parser.add_argument("--reuse", action="store_true", help="reuse a generated TIFF found")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--tile-batch", type=int, default=1)
    parser.add_argument("--gen-workers", type=int, default=1, help="processes writing the TIFF")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds per raster run")
    parser.add_argument("--child", choices=("raster", "in-memory"), help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "raster":
        return child_raster(args)
    if args.child == "in-memory":
        return child_in_memory(args)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    base = args.workdir / f"raster_{args.baseline_side}.tif"
    write_raster(base, args.baseline_side, args.gen_workers)
    rows.append(run_child("in-memory", base, args.workdir / "out-base-memory", args))
    rows.append(run_child("raster", base, args.workdir / "out-base-raster", args))
    for multiple in args.sizes:
        side = round(args.side * math.sqrt(multiple))
        image = args.workdir / f"raster_{side}.tif"
        seconds = (
            0.0 if args.reuse and image.is_file() else write_raster(image, side, args.gen_workers)
        )
        print(json.dumps({"generated": image.name, "seconds": round(seconds, 1)}), flush=True)
        rows.append(run_child("raster", image, args.workdir / f"out-{multiple}x", args))
        if not args.keep:
            image.unlink()
            for written in (args.workdir / f"out-{multiple}x").glob("*"):
                written.unlink()
    print("\n| path | image | Mpx | seconds | Mpx/s | peak RSS MiB |\n|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['path']} | {row['image']} | {row['megapixels']:.0f} | {row['seconds']} | "
            f"{row['mpx_per_s']} | {row['peak_rss_mib']} |"
        )


if __name__ == "__main__":
    main()
