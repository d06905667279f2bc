"""int8 graphs of both shipped CamVid models: argmax agreement with fp32 PyTorch and speed.

For each model and each weight range (full int8, and the 7-bit range fcnseg uses, see
`fcnseg.inference.quantize.INT8_REDUCE_RANGE`), the graph is calibrated as `fcnseg export --int8`
does (32 training images spread over the split), then compared with PyTorch on the 8 calibration
images the export checks and on val images it never saw, and timed against the fp32 graph
(batch 1, 360x480, 4 val images, median over --rounds rounds that time fp32, 8-bit and 7-bit
in turn, after one warm-up call each).

    PYTHONPATH=src .venv/bin/python benchmarks/int8_agreement.py --data ../shared/data/camvid

Writes nothing outside a temporary folder (the weights are copied there, so is the graph cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fcnseg.engine.loading import load_model
from fcnseg.exported import OnnxRuntimeModel
from fcnseg.inference import quantize
from fcnseg.inference.graph_cache import ExportOptions, export_checked

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("camvid_fcn4s_lite0", "camvid_fcn4s_lite0_fast")


def interleaved_ms(runnables: dict[str, object], images: list[torch.Tensor], rounds: int) -> dict:
    """Median ms per image of each runnable; each round times all of them in turn, so a change
    of load on the shared machine touches every engine alike."""
    times: dict[str, list[float]] = {name: [] for name in runnables}
    with torch.no_grad():
        for runnable in runnables.values():
            runnable(images[0])  # warm-up
        for _ in range(rounds):
            for name, runnable in runnables.items():
                for image in images:
                    start = time.perf_counter()
                    runnable(image)
                    times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def measure(name: str, data: Path, scratch: Path, val_count: int, rounds: int) -> list[dict]:
    weights = scratch / f"{name}.safetensors"
    shutil.copyfile(ROOT / "weights" / f"{name}.safetensors", weights)
    loaded = load_model(weights=weights)
    model, norm = loaded.model.eval(), loaded.metadata["normalization"]
    calib, _ = quantize.calibration_images(data, norm, data_format="camvid", split="train")
    val, _ = quantize.calibration_images(
        data, norm, data_format="camvid", split="val", count=val_count
    )
    fp32, fp32_entry, _, _ = export_checked(model, weights, ExportOptions(), log=None)
    runnables: dict[str, object] = {"fp32": fp32}
    rows = []
    for reduce_range in (False, True):
        label = "7-bit" if reduce_range else "8-bit"
        graph = scratch / f"{name}-{label}.onnx"
        started = time.perf_counter()
        quantize.write_int8_graph(
            fp32_entry.onnx, graph, calib, "camvid train", reduce_range=reduce_range
        )
        seconds = time.perf_counter() - started
        int8 = runnables[label] = OnnxRuntimeModel(graph)
        on_calib = quantize.argmax_agreement(model, int8, quantize.spread(calib, 8))
        on_val = quantize.argmax_agreement(model, int8, val)
        rows.append(
            {
                "model": name,
                "weights": label,
                "quantise_s": round(seconds, 1),
                "calib_agreement": on_calib["argmax_agreement"],
                "calib_worst": on_calib["worst_image_agreement"],
                "val_agreement": on_val["argmax_agreement"],
                "val_worst": on_val["worst_image_agreement"],
            }
        )
    speed = interleaved_ms(runnables, val[:4], rounds)
    for row in rows:
        row.update(fp32_ms=speed["fp32"], int8_ms=speed[row["weights"]])
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "camvid"))
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="int8-agreement-") as scratch:
        rows = [
            row
            for name in MODELS
            for row in measure(name, Path(args.data), Path(scratch), args.val_images, args.rounds)
        ]
    print(
        "| model | weights | agreement calib (worst image) | agreement val (worst) | fp32 ms | int8 ms | speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['weights']} | {100 * r['calib_agreement']:.2f} % "
            f"({100 * r['calib_worst']:.2f}) | {100 * r['val_agreement']:.2f} % "
            f"({100 * r['val_worst']:.2f}) | {r['fp32_ms']:.0f} | {r['int8_ms']:.0f} | "
            f"{r['fp32_ms'] / r['int8_ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
