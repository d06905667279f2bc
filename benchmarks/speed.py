"""CPU inference speed of fcnseg's FCNs against torchvision's segmenters, engine by engine.

Every configuration (model x engine) runs in its own subprocess, so that its peak RSS is its
own, and each subprocess measures the 2048x2048 fp32 matmul roofline right after its timing, so
that "% roofline" compares model and matmul under the same machine load. Eager PyTorch of the
same model, timed in the same run, is the baseline of every speed-up, and argmax agreement with
eager is reported for every engine (bf16 is only worth using if it stays high).

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
import statistics
import subprocess
import sys
import tempfile
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

CONFIGS: list[dict] = [
    # Our paper-exact FCN-8s (pad 100, Caffe crops), no BN, so "fused" == channels_last.
    *[
        {"source": "fcnseg", "name": "fcn8s_vgg16", "size": VGG_SIZE, "engine": e}
        for e in ("eager", "channels_last", "compile", "onnxruntime", "bf16")
    ],
    # Our light pretrained FCN-8s models (offline ImageNet weights).
    *[
        {"source": "fcnseg", "name": "fcn8s_efficientnet_lite0", "size": LIGHT_SIZE, "engine": e}
        for e in ("eager", "fused", "compile", "onnxruntime", "bf16")
    ],
    *[
        {"source": "fcnseg", "name": "fcn8s_mobilenet_v2", "size": LIGHT_SIZE, "engine": e}
        for e in ("eager", "fused", "onnxruntime", "bf16")
    ],
    # torchvision reference segmenters, random weights (weights=None: speed does not depend on
    # them, and nothing can be downloaded here).
    *[
        {"source": "torchvision", "name": name, "size": LIGHT_SIZE, "engine": e}
        for name in ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
        for e in ("eager", "fused", "onnxruntime")
    ],
    # Sliding-window predict of a 2048x1024 frame: memory bounded by the tile.
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


def worker(config: dict, reference_path: str | None, repeats: int) -> dict:
    import torch

    from fcnseg.inference import predict_logits
    from fcnseg.inference.bench import (
        build_engine,
        count_gflops,
        matmul_roofline_gflops,
        time_calls,
    )

    torch.manual_seed(0)
    model = _build(config)
    height, width = config["size"]
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    predict = config.get("predict")
    gflops = None if predict else count_gflops(model, example)
    setup_start = time.perf_counter()
    engine = build_engine(model, config["engine"], example)
    if predict:

        def run(x):
            return predict_logits(engine, x, **predict)
    else:
        run = engine
    with torch.no_grad():
        output = run(example)  # first call (compiles for "compile"); also the agreement sample
    setup_s = time.perf_counter() - setup_start
    labels = output.argmax(1)
    agreement = None
    if reference_path and os.path.exists(reference_path):
        reference = torch.load(reference_path)
        agreement = float((reference == labels).float().mean())
    elif reference_path:
        torch.save(labels, reference_path)
        agreement = 1.0
    warmup = 0 if predict else 1
    times = time_calls(run, example, repeats=repeats, warmup=warmup)
    roofline = matmul_roofline_gflops()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "setup_s": setup_s,
        "gflops": gflops,
        "roofline_gflops": roofline,
        "peak_rss_gib": peak_kib / 2**20,
        "agreement": agreement,
        "threads": torch.get_num_threads(),
    }


# -------------------------------------------------------------------------------------- main


def _run_config(config: dict, reference: str | None, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(config), "--repeats", str(repeats)]
    if reference:
        command += ["--reference", reference]
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


def _table(rows: list[tuple[dict, dict]]) -> str:
    lines = [
        "| model | size | engine | mode | median ms | min ms | images/s | GFLOP | GFLOP/s | % roofline "
        "| vs eager | argmax agree | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    eager: dict[tuple, float] = {}
    for config, result in rows:
        key = (config["name"], tuple(config["size"]), json.dumps(config.get("predict")))
        mode = config.get("predict", {}).get("mode", "forward")
        size = "x".join(map(str, config["size"]))
        if "error" in result:
            lines.append(
                f"| {config['name']} | {size} | {config['engine']} | {mode} | failed: "
                f"{result['error']} | | | | | | | | |"
            )
            continue
        median = result["median_s"]
        if config["engine"] == "eager":
            eager[key] = median
        speedup = f"{eager[key] / median:.2f}x" if key in eager else "-"
        gflops = result["gflops"]
        rate = gflops / median if gflops else None
        roof = f"{100 * rate / result['roofline_gflops']:.0f}%" if rate else "-"
        agree = f"{result['agreement']:.4f}" if result.get("agreement") is not None else "-"
        lines.append(
            f"| {config['name']} | {size} | {config['engine']} | {mode} | {median * 1e3:.0f} | "
            f"{min(result['times_s']) * 1e3:.0f} | "
            f"{1 / median:.2f} | {gflops or 0:.1f} | {rate or 0:.1f} | {roof} | {speedup} | "
            f"{agree} | {result['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def _targets(rows: list[tuple[dict, dict]]) -> list[str]:
    ok = [(c, r) for c, r in rows if "error" not in r]

    def best(name: str, metric, mode: str = "forward", min_agree: float = 0.99):
        values = [
            metric(r)
            for c, r in ok
            if c["name"] == name
            and c.get("predict", {}).get("mode", "forward") == mode
            and (r.get("agreement") or 0) >= min_agree
        ]
        return max(values) if values else None

    vgg = best("fcn8s_vgg16", lambda r: r["gflops"] / r["median_s"] / r["roofline_gflops"])
    light = max(
        filter(None, [best(n, lambda r: 1 / r["median_s"]) for n in LIGHT_MODELS]), default=None
    )
    rss = [r["peak_rss_gib"] for c, r in ok if c.get("predict", {}).get("mode") == "sliding"]

    def verdict(value, target, fmt, higher=True):
        if value is None:
            return "not measured"
        met = value >= target if higher else value < target
        return f"{fmt.format(value)} -> {'MET' if met else 'NOT met'}"

    return [
        f"- FCN-8s-VGG16 500x500 >= {TARGET_ROOFLINE:.0%} of roofline (best engine with argmax "
        f"agreement >= 0.99): {verdict(vgg, TARGET_ROOFLINE, '{:.0%}')}",
        f"- light pretrained FCN-8s 360x480 >= {TARGET_LIGHT_IMAGES_PER_S} images/s: "
        f"{verdict(light, TARGET_LIGHT_IMAGES_PER_S, '{:.2f} images/s')}",
        f"- sliding predict 2048x1024 < {TARGET_SLIDING_RSS_GIB} GiB peak RSS (worst model): "
        f"{verdict(max(rss) if rss else None, TARGET_SLIDING_RSS_GIB, '{:.2f} GiB', False)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per configuration")
    parser.add_argument("--only", nargs="*", help="model names to run (default: all)")
    parser.add_argument("--engines", nargs="*", help="engines to run (default: all)")
    parser.add_argument("--results", type=Path, help="append a markdown section to this file")
    args = parser.parse_args()
    if args.worker:
        result = worker(json.loads(args.worker), args.reference, args.repeats)
        print("RESULT " + json.dumps(result), flush=True)
        return

    configs = [
        c
        for c in CONFIGS
        if (not args.only or c["name"] in args.only)
        and (not args.engines or c["engine"] in args.engines)
    ]
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    rows: list[tuple[dict, dict]] = []
    with tempfile.TemporaryDirectory() as folder:
        for config in configs:
            reference = None
            if "predict" not in config:
                reference = os.path.join(
                    folder, f"{config['name']}_{'x'.join(map(str, config['size']))}.pt"
                )
            result = _run_config(config, reference, args.repeats)
            rows.append((config, result))
            print(f"{_label(config)}: {json.dumps(result)[:200]}", flush=True)
    load_after = os.getloadavg()
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            f"## CPU inference speed (benchmarks/speed.py), {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"Command: `{command.strip()}`. Machine: 2-core CPU ({platform.processor() or 'x86_64'}"
            f", {os.cpu_count()} logical CPUs), shared and noisy: other workers were running; "
            f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (uptime). "
            f"torch threads {rows[0][1].get('threads', '?') if rows else '?'}; each row is its "
            "own subprocess (peak RSS is that process's); medians of the timed calls; "
            "% roofline = achieved GFLOP/s over a 2048x2048 fp32 matmul timed right after, in "
            "the same process; 'vs eager' = speed-up over eager of the same model in this run; "
            "argmax agreement is with eager of the same model.",
            "",
            _table(rows),
            "",
            "Targets:",
            *_targets(rows),
            "",
        ]
    )
    print()
    print(section)
    if args.results:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)


if __name__ == "__main__":
    main()
