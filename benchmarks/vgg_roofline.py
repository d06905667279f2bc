"""The paper FCN-8s-VGG16 at 500x500 against the oneDNN matmul roofline: engines and layers.

Question answered (issue 17, item 5): how close does the paper net get to the CPU's practical
fp32 peak with the engines a PyTorch user has (eager, channels_last, torch.compile,
onnxruntime), beside torchvision's fcn_resnet50, and, layer by layer, where does eager lose the
rest? The roofline is `fcnseg.inference.bench.roofline_calls`: a 2048^3 fp32 product as BLAS
matmul and as a channels_last 1x1 convolution (oneDNN), the faster counting, timed round-robin
with the engines (`bench_model`), so load hits both alike.

The layer profile times every leaf module of the eager net with forward pre/post hooks (the CPU
runs them synchronously), over `--profile-rounds` forwards (median per layer), and computes each
convolution's FLOPs from its shapes (2 per multiply-add, transposed convolutions over their
input). Each layer's GFLOP/s is compared with a roofline measured right before the profile.

Run:  .venv/bin/python benchmarks/vgg_roofline.py [--engines eager channels_last compile
      onnxruntime] [--repeats 5] [--profile-rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections import defaultdict

import torch
import torchvision
from paper_speed import _OutOnly  # run as a script: the benchmarks folder is on sys.path
from torch import nn

from fcnseg.inference.bench import (
    ROOFLINE_ONEDNN_KEY,
    bench_model,
    format_table,
    roofline_calls,
    time_interleaved,
)
from fcnseg.models import build_model


def conv_flops(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> float:
    """2 x multiply-adds of a (transposed) convolution from its actual shapes."""
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        n, cin, h, w = inputs.shape
        return 2.0 * n * cin * h * w * kh * kw * module.out_channels / module.groups
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        n, cout, h, w = output.shape
        return 2.0 * n * cout * h * w * kh * kw * module.in_channels / module.groups
    return 0.0


def layer_profile(model: nn.Module, x: torch.Tensor, rounds: int) -> list[dict]:
    """Per leaf module: name, kind, shapes, median seconds, FLOPs."""
    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]
    starts: dict[nn.Module, float] = {}
    times: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict] = {}

    def pre(module, _inputs):
        starts[module] = time.perf_counter()

    def post(module, inputs, output):
        elapsed = time.perf_counter() - starts[module]
        name = names[module]
        times[name].append(elapsed)
        if name not in info:
            source = inputs[0]
            info[name] = {
                "name": name,
                "kind": type(module).__name__,
                "in": tuple(source.shape),
                "out": tuple(output.shape),
                "flops": conv_flops(module, source, output),
            }

    handles = []
    for module in leaves:
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    total: list[float] = []
    with torch.no_grad():
        model(x)  # warm-up
        times.clear()
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            total.append(time.perf_counter() - start)
    for handle in handles:
        handle.remove()
    rows = []
    for name, row in info.items():
        row["seconds"] = statistics.median(times[name])
        rows.append(row)
    rows.append({"name": "(whole forward)", "seconds": statistics.median(total), "flops": 0.0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile-rounds", type=int, default=3)
    parser.add_argument(
        "--engines", nargs="+", default=["eager", "channels_last", "compile", "onnxruntime"]
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip fcn_resnet50")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = (args.size, args.size)
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    vgg = build_model("fcn8s_vgg16", 21, pretrained=False).eval()
    models = {"fcn8s_vgg16": (vgg, args.engines)}
    if not args.no_baseline:
        resnet = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
        models["torchvision fcn_resnet50"] = (_OutOnly(resnet).eval(), ["eager", "channels_last"])
    for name, (model, engines) in models.items():
        results = bench_model(model, size, engines=engines, repeats=args.repeats)
        roof = results[0].rooflines or {}
        print(f"\n## {name} {size[0]}x{size[1]}, rooflines GFLOP/s: ", end="")
        print(", ".join(f"{k} {v:.0f}" for k, v in roof.items()))
        print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
        print(format_table(results))

    calls, flops = roofline_calls()
    roof_times = time_interleaved({ROOFLINE_ONEDNN_KEY: calls[ROOFLINE_ONEDNN_KEY]}, 5)
    roofline = flops / statistics.median(roof_times[ROOFLINE_ONEDNN_KEY]) / 1e9
    x = torch.randn(1, 3, *size)
    rows = layer_profile(vgg, x, args.profile_rounds)
    roofline_after = flops / statistics.median(
        time_interleaved({ROOFLINE_ONEDNN_KEY: calls[ROOFLINE_ONEDNN_KEY]}, 5)[ROOFLINE_ONEDNN_KEY]
    )
    roofline = max(roofline, roofline_after / 1e9)
    whole = rows[-1]["seconds"]
    print(
        f"\n## eager fcn8s_vgg16 per layer ({args.profile_rounds} forwards, medians; roofline "
        f"{roofline:.0f} GFLOP/s; whole forward {1000 * whole:.0f} ms; load "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())})\n"
    )
    print("| layer | kind | input | output | GFLOP | ms | share of time | GFLOP/s | % roofline |")
    print("|---|---|---|---|---|---|---|---|---|")
    conv_time = other_time = conv_flops_total = 0.0
    for row in rows[:-1]:
        seconds, gflop = row["seconds"], row["flops"] / 1e9
        if gflop:
            conv_time += seconds
            conv_flops_total += gflop
            rate = gflop / seconds
            print(
                f"| {row['name']} | {row['kind']} | {'x'.join(map(str, row['in'][1:]))} | "
                f"{'x'.join(map(str, row['out'][1:]))} | {gflop:.1f} | {1000 * seconds:.0f} | "
                f"{100 * seconds / whole:.1f}% | {rate:.0f} | {100 * rate / roofline:.0f}% |"
            )
        else:
            other_time += seconds
    rest = whole - conv_time - other_time
    print(
        f"\nconvolutions: {conv_flops_total:.1f} GFLOP in {1000 * conv_time:.0f} ms "
        f"({conv_flops_total / conv_time:.0f} GFLOP/s, {100 * conv_flops_total / conv_time / roofline:.0f}% "
        f"of roofline); ReLU/pool/dropout modules: {1000 * other_time:.0f} ms; outside modules "
        f"(crops, skip sums, Python): {1000 * rest:.0f} ms; whole: {conv_flops_total / whole:.0f} "
        f"GFLOP/s = {100 * conv_flops_total / whole / roofline:.0f}% of roofline"
    )


if __name__ == "__main__":
    main()
