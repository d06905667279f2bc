"""CPU inference speed of fcnseg's FCNs against torchvision's segmenters, engine by engine.

The machine is shared, and its load changes within seconds, so timing is round-robin: for one
model, one subprocess builds every engine and times them one call each per round, together with
a 2048x2048 fp32 matmul (the roofline), so that a load spike hits all of them alike and the
ratios (speed-up over eager, share of the roofline) stay meaningful. Peak memory is measured
separately: each engine is built and run in its own subprocess, whose peak RSS is its own.
Argmax agreement with eager of the same model is reported for every engine (bf16 is only
worth using if it stays high).

Usage:
    python benchmarks/speed.py                      # everything (tens of minutes on 2 cores)
    python benchmarks/speed.py --only fcn8s_efficientnet_lite0 --repeats 5
    python benchmarks/speed.py --results benchmarks/RESULTS.md   # append the section

Targets checked at the end: paper FCN-8s-VGG16 at 500x500 >= 80 % of roofline (best engine);
the pretrained light FCN-8s at 360x480 >= 8 images/s; sliding-window predict of a 2048x1024
image under 4 GiB peak RSS.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

#: Size of the paper's timing (FCN paper Table 1: 500x500 inputs) and of CamVid frames.
VGG_SIZE = (500, 500)
LIGHT_SIZE = (360, 480)
#: A Cityscapes-sized frame for the sliding-window memory check.
LARGE_SIZE = (1024, 2048)
SLIDING_TILE = 512
NUM_CLASSES = 21
WORKER_TIMEOUT_S = 900
TARGET_ROOFLINE = 0.80
TARGET_LIGHT_IMAGES_PER_S = 8.0
TARGET_SLIDING_RSS_GIB = 4.0
LIGHT_MODELS = ("fcn8s_efficientnet_lite0", "fcn8s_mobilenet_v2")

MODELS: list[dict] = [
    # Our paper-exact FCN-8s (pad 100, Caffe crops); no BN, so "fused" == channels_last.
    {
        "source": "fcnseg",
        "name": "fcn8s_vgg16",
        "size": VGG_SIZE,
        "engines": ["eager", "channels_last", "compile", "onnxruntime", "bf16"],
    },
    # Our light pretrained FCN-8s models (offline ImageNet weights).
    {
        "source": "fcnseg",
        "name": "fcn8s_efficientnet_lite0",
        "size": LIGHT_SIZE,
        "engines": ["eager", "fused", "compile", "onnxruntime", "bf16"],
    },
    {
        "source": "fcnseg",
        "name": "fcn8s_mobilenet_v2",
        "size": LIGHT_SIZE,
        "engines": ["eager", "fused", "onnxruntime", "bf16"],
    },
    # torchvision reference segmenters, random weights (weights=None: speed does not depend on
    # them, and nothing can be downloaded here).
    *[
        {
            "source": "torchvision",
            "name": name,
            "size": LIGHT_SIZE,
            "engines": ["eager", "fused", "onnxruntime"],
        }
        for name in ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
    ],
]
#: Sliding-window predict of a 2048x1024 frame: memory bounded by the tile.
SLIDING: list[dict] = [
    {
        "source": "fcnseg",
        "name": "fcn8s_vgg16",
        "size": LARGE_SIZE,
        "engine": "eager",
        "predict": {"mode": "sliding", "tile_size": SLIDING_TILE, "overlap": 0.0},
    },
    {
        "source": "fcnseg",
        "name": "fcn8s_efficientnet_lite0",
        "size": LARGE_SIZE,
        "engine": "eager",
        "predict": {"mode": "sliding", "tile_size": SLIDING_TILE, "overlap": 0.25},
    },
]


def _label(config: dict) -> str:
    mode = config.get("predict", {}).get("mode", "forward")
    h, w = config["size"]
    return f"{config['name']} {h}x{w} {config['engine']} {mode}"


# ------------------------------------------------------------------------------------ worker


def _build(config: dict):
    import torch

    if config["source"] == "torchvision":
        import torchvision.models.segmentation as seg

        inner = getattr(seg, config["name"])(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES
        ).eval()

        class OutOnly(torch.nn.Module):
            """torchvision returns {"out": logits, ...}; the common convention is the tensor."""

            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)["out"]

        return OutOnly().eval()
    import fcnseg

    return fcnseg.build_model(config["name"], NUM_CLASSES).eval()


def timing_worker(config: dict, repeats: int) -> dict:
    """All engines of one model, timed round-robin with the roofline matmul."""
    import torch

    from fcnseg.inference.bench import bench_model

    torch.manual_seed(0)
    results = bench_model(_build(config), tuple(config["size"]), config["engines"], repeats)
    return {
        "threads": torch.get_num_threads(),
        "engines": {
            r.engine: {
                "median_s": r.median_s,
                "times_s": r.times_s,
                "gflops": r.gflops,
                "roofline_gflops": r.roofline_gflops,
                "rooflines": r.rooflines,
                "agreement": r.agreement,
                "error": r.error,
            }
            for r in results
        },
    }


def memory_worker(config: dict, calls: int = 2) -> dict:
    """Peak RSS of this process after building one engine (or predict mode) and running it."""
    import torch

    from fcnseg.inference import predict_logits
    from fcnseg.inference.bench import build_engine

    torch.manual_seed(0)
    model = _build(config)
    height, width = config["size"]
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    engine = build_engine(model, config["engine"], example)
    predict = config.get("predict")
    times = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            if predict:
                predict_logits(engine, example, **predict)
            else:
                engine(example)
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_gib": peak_kib / 2**20, "times_s": times}


# -------------------------------------------------------------------------------------- main


def _subprocess(kind: str, config: dict, repeats: int) -> dict:
    command = [sys.executable, __file__, f"--{kind}", json.dumps(config), "--repeats", str(repeats)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:160]}


def _model_rows(model: dict, timing: dict, memory: dict[str, dict]) -> list[str]:
    size = "x".join(map(str, model["size"]))
    if "error" in timing:
        return [f"| {model['name']} | {size} | all | failed: {timing['error']} |" + " |" * 9]
    engines = timing["engines"]
    eager = (engines.get("eager") or {}).get("median_s")
    rows = []
    for engine, r in engines.items():
        rss = memory.get(engine, {})
        rss_text = f"{rss['peak_rss_gib']:.2f}" if "peak_rss_gib" in rss else rss.get("error", "-")
        if r.get("error") or not r.get("median_s"):
            rows.append(
                f"| {model['name']} | {size} | {engine} | failed: {r.get('error')} |" + " |" * 9
            )
            continue
        median = r["median_s"]
        rate = r["gflops"] / median
        roof = r["roofline_gflops"]
        rows.append(
            f"| {model['name']} | {size} | {engine} | {median * 1e3:.0f} | "
            f"{min(r['times_s']) * 1e3:.0f} | {1 / median:.2f} | {r['gflops']:.1f} | "
            f"{rate:.1f} | {roof:.0f} | {100 * rate / roof:.0f}% | "
            f"{eager / median if eager else float('nan'):.2f}x | {r['agreement']:.4f} | "
            f"{rss_text} |"
        )
    return rows


TABLE_HEADER = [
    "| model | size | engine | median ms | min ms | images/s | GFLOP | GFLOP/s | roofline "
    "GFLOP/s | % roofline | vs eager | argmax agree | peak RSS GiB |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _sliding_rows(rows: list[tuple[dict, dict]]) -> list[str]:
    lines = [
        "| model | image | tile | overlap | seconds (2 calls) | peak RSS GiB |",
        "|---|---|---|---|---|---|",
    ]
    for config, r in rows:
        predict = config["predict"]
        size = "x".join(map(str, config["size"][::-1]))
        if "error" in r:
            lines.append(f"| {config['name']} | {size} | failed: {r['error']} | | | |")
            continue
        seconds = ", ".join(f"{t:.1f}" for t in r["times_s"])
        lines.append(
            f"| {config['name']} | {size} (W x H) | {predict['tile_size']} | "
            f"{predict['overlap']} | {seconds} | {r['peak_rss_gib']:.2f} |"
        )
    return lines


def _targets(timings: dict[str, dict], sliding: list[tuple[dict, dict]]) -> list[str]:
    def engines_of(name: str) -> list[dict]:
        timing = timings.get(name, {})
        return [
            r
            for r in timing.get("engines", {}).values()
            if r.get("median_s") and (r.get("agreement") or 0) >= 0.99
        ]

    vgg = [r["gflops"] / r["median_s"] / r["roofline_gflops"] for r in engines_of("fcn8s_vgg16")]
    light = [1 / r["median_s"] for name in LIGHT_MODELS for r in engines_of(name)]
    rss = [r["peak_rss_gib"] for _, r in sliding if "peak_rss_gib" in r]

    def verdict(value, target, fmt, higher=True):
        if value is None:
            return "not measured"
        met = value >= target if higher else value < target
        return f"{fmt.format(value)} -> {'MET' if met else 'NOT met'}"

    return [
        f"- FCN-8s-VGG16 500x500 >= {TARGET_ROOFLINE:.0%} of roofline (best engine with argmax "
        f"agreement >= 0.99): {verdict(max(vgg, default=None), TARGET_ROOFLINE, '{:.0%}')}",
        f"- light pretrained FCN-8s 360x480 >= {TARGET_LIGHT_IMAGES_PER_S} images/s (best "
        f"engine, agreement >= 0.99): "
        f"{verdict(max(light, default=None), TARGET_LIGHT_IMAGES_PER_S, '{:.2f} images/s')}",
        f"- sliding predict 2048x1024 < {TARGET_SLIDING_RSS_GIB} GiB peak RSS (worst model): "
        f"{verdict(max(rss, default=None), TARGET_SLIDING_RSS_GIB, '{:.2f} GiB', False)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model")
    parser.add_argument("--only", nargs="*", help="model names to run (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument("--no-sliding", action="store_true", help="skip the 2048x1024 runs")
    parser.add_argument("--results", type=Path, help="append a markdown section to this file")
    args = parser.parse_args()
    if args.timing:
        print("RESULT " + json.dumps(timing_worker(json.loads(args.timing), args.repeats)))
        return
    if args.memory:
        print("RESULT " + json.dumps(memory_worker(json.loads(args.memory))), flush=True)
        return

    models = [m for m in MODELS if not args.only or m["name"] in args.only]
    sliding_configs = (
        [] if args.no_sliding else [c for c in SLIDING if not args.only or c["name"] in args.only]
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    table = list(TABLE_HEADER)
    timings: dict[str, dict] = {}
    threads = "?"
    for model in models:
        timing = _subprocess("timing", model, args.repeats)
        timings[model["name"]] = timing
        threads = timing.get("threads", threads)
        print(f"{model['name']}: {json.dumps(timing)[:300]}", file=sys.stderr, flush=True)
        memory: dict[str, dict] = {}
        if not args.no_memory:
            for engine in model["engines"]:
                config = {**model, "engine": engine}
                memory[engine] = _subprocess("memory", config, 1)
        table += _model_rows(model, timing, memory)
    sliding = []
    for config in sliding_configs:
        result = _subprocess("memory", config, 1)
        print(f"{_label(config)}: {json.dumps(result)}", file=sys.stderr, flush=True)
        sliding.append((config, result))
    load_after = os.getloadavg()
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            f"## CPU inference speed (benchmarks/speed.py), {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"Command: `OMP_NUM_THREADS=2 {command.strip()}`. Machine: 2-core CPU "
            f"({os.cpu_count()} logical CPUs, {platform.machine()}), shared and noisy: other "
            f"workers were running (load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after, from uptime). torch threads {threads}. Per model, all "
            "engines and the roofline are timed round-robin in one "
            f"process ({args.repeats} rounds, medians), so ratios are robust to load drift; "
            "roofline = the faster of a 2048x2048 fp32 matmul by torch.matmul (MKL) and the "
            "same product as a channels_last 1x1 convolution (oneDNN); the table gives both "
            "below. "
            "absolute times are not. Peak RSS: one subprocess per engine (build + 2 calls). "
            "'vs eager' = speed-up over eager of the same model in the same rounds; argmax "
            "agreement is with eager of the same model on the same random input.",
            "",
            *table,
            "",
            "Rooflines (GFLOP/s, median over the same rounds) per model: "
            + "; ".join(
                f"{name}: "
                + ", ".join(
                    f"{key} {value:.0f}"
                    for key, value in (
                        next(iter(t.get("engines", {}).values()), {}).get("rooflines") or {}
                    ).items()
                )
                for name, t in timings.items()
            ),
            "",
            "Sliding-window predict (`predict_logits(mode='sliding')`), one subprocess each:",
            "",
            *_sliding_rows(sliding),
            "",
            "Targets:",
            *_targets(timings, sliding),
            "",
        ]
    )
    print(section)
    if args.results:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)


if __name__ == "__main__":
    main()
