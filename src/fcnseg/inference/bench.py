"""Inference speed of one model on this machine, engine by engine (`fcnseg bench`).

Latency alone does not say whether a number is good; this module also counts the model's FLOPs
(`torch.utils.flop_counter`) and measures, in the same process and moment, what a 2048x2048
fp32 matmul achieves: the practical compute roofline of the CPU as PyTorch's BLAS sees it. The
ratio achieved/roofline tells how much of the machine the model uses, independent of how busy
the machine is (both are measured under the same load). Engines are compared against "eager"
timed in the same run, and every non-exact engine reports its argmax agreement with eager.

`benchmarks/speed.py` runs the same measurements in one subprocess per configuration (to
isolate peak memory); `run_bench` is the in-process version behind the CLI.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.errors import UsageError
from fcnseg.inference.cpu_fast import argmax_agreement, optimize_for_cpu
from fcnseg.models.protocol import primary_output

Runnable = Callable[[Tensor], Tensor | dict[str, Tensor]]

#: Engines run_bench knows: "eager" (fp32 NCHW), "channels_last" (NHWC), "fused" (conv+BN
#: folded, NHWC), "compile" (fused + torch.compile/inductor), "onnxruntime" (exported graph),
#: "bf16" (fused, NHWC, CPU autocast bfloat16).
ENGINE_NAMES: tuple[str, ...] = (
    "eager",
    "channels_last",
    "fused",
    "compile",
    "onnxruntime",
    "bf16",
)
#: Side of the square fp32 matmul whose throughput is the roofline.
ROOFLINE_MATMUL_SIZE: int = 2048
ROOFLINE_BLAS_KEY: str = "roofline matmul (BLAS)"
ROOFLINE_ONEDNN_KEY: str = "roofline matmul (oneDNN 1x1 conv)"
#: Width of the feature map holding the roofline product's `size` pixels (any divisor works).
ROOFLINE_CONV_WIDTH: int = 32
#: Calls before timing: oneDNN picks kernels and allocates on the first calls.
WARMUP_CALLS: int = 2


@dataclass
class BenchResult:
    engine: str
    median_s: float | None = None
    gflops: float | None = None
    agreement: float | None = None
    error: str | None = None
    #: Median GFLOP/s of the roofline matmul, timed interleaved with this engine.
    roofline_gflops: float | None = None
    times_s: list[float] | None = None
    #: GFLOP/s of each roofline product (BLAS matmul, oneDNN 1x1 conv); the max is the roofline.
    rooflines: dict[str, float] | None = None

    def gflops_per_s(self) -> float | None:
        if self.median_s and self.gflops:
            return self.gflops / self.median_s
        return None


def count_gflops(model: Runnable, example: Tensor) -> float:
    """GFLOPs (multiply and add counted separately) of one forward pass on `example`."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return counter.get_total_flops() / 1e9


def matmul_roofline_gflops(size: int = ROOFLINE_MATMUL_SIZE, repeats: int = 5) -> float:
    """Median GFLOP/s of a size x size fp32 matmul on the current torch thread setting."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    times = time_calls(lambda _: a @ b, a, repeats=repeats)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def roofline_calls(
    size: int = ROOFLINE_MATMUL_SIZE,
) -> tuple[dict[str, Callable[[], object]], float]:
    """({name: call}, FLOPs per call): one size^3 fp32 matrix product through two libraries.

    `torch.matmul` goes to the BLAS (MKL); the same product as a 1x1 convolution over a
    channels_last map goes to oneDNN, the library every convolution of the models uses. On
    some CPUs (MKL on AMD, which avoids its AVX-512 kernels there) the two differ by 2x, and
    a roofline below what the convolutions reach would be meaningless; the faster is used.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    width = ROOFLINE_CONV_WIDTH
    pixels = torch.randn(1, size, size // width, width, generator=generator)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    kernel = torch.randn(size, size, 1, 1, generator=generator)
    kernel = kernel.contiguous(memory_format=torch.channels_last)
    calls = {
        ROOFLINE_BLAS_KEY: lambda: a @ b,
        ROOFLINE_ONEDNN_KEY: lambda: torch.nn.functional.conv2d(pixels, kernel),
    }
    return calls, 2.0 * size**3


def time_calls(
    fn: Runnable, example: Tensor, repeats: int, warmup: int = WARMUP_CALLS
) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` untimed ones."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(example)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(example)
            times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, warmup: int = WARMUP_CALLS
) -> dict[str, list[float]]:
    """Seconds per call of each entry, timed round-robin: one call of each per round.

    On a shared machine the load changes within seconds; timing engine after engine would
    charge a load spike to whichever engine ran during it. Round-robin spreads the load over
    all entries alike, so ratios between them (speed-ups, share of the roofline when the
    roofline matmul is one of the entries) stay meaningful even when absolute times are not.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def build_engine(model: nn.Module, engine: str, example: Tensor) -> Runnable:
    """`model` prepared for `engine` (see ENGINE_NAMES)."""
    model = model.eval()
    if engine == "eager":
        return model
    if engine == "channels_last":
        return optimize_for_cpu(model, example, fold_bn=False)
    if engine == "fused":
        return optimize_for_cpu(model, example)
    if engine == "compile":
        return optimize_for_cpu(model, example, compile=True)
    if engine == "bf16":
        return optimize_for_cpu(model, example, bf16=True)
    if engine == "onnxruntime":
        from fcnseg.export import load_exported

        return load_exported(model, "onnxruntime", threads=torch.get_num_threads())
    raise UsageError(f"unknown engine {engine!r}; choose from {', '.join(ENGINE_NAMES)}")


def bench_model(
    model: nn.Module,
    size: tuple[int, int],
    engines: Sequence[str] = ("eager", "fused", "onnxruntime"),
    repeats: int = 5,
    batch: int = 1,
) -> list[BenchResult]:
    """Time `model` at `size` (height, width) under each engine; errors are recorded, not raised,
    so that one engine missing on a machine (e.g. no compiler for inductor) loses one row."""
    unknown = [e for e in engines if e not in ENGINE_NAMES]
    if unknown:
        raise UsageError(f"unknown engines {unknown}; choose from {', '.join(ENGINE_NAMES)}")
    model = model.eval()
    example = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    gflops = count_gflops(model, example)
    with torch.no_grad():
        reference = primary_output(model(example))
    results: list[BenchResult] = []
    calls: dict[str, Callable[[], object]] = {}
    for engine in engines:
        result = BenchResult(engine, gflops=gflops)
        try:
            runnable = build_engine(model, engine, example)
            with torch.no_grad():
                result.agreement = argmax_agreement(reference, primary_output(runnable(example)))
            calls[engine] = functools.partial(runnable, example)
        except Exception as error:  # noqa: BLE001 - reported in the table
            result.error = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
        results.append(result)
    roofline_calls_, matmul_flops = roofline_calls()
    calls.update(roofline_calls_)
    times = time_interleaved(calls, repeats)
    rooflines = {key: matmul_flops / statistics.median(times[key]) / 1e9 for key in roofline_calls_}
    for result in results:
        if result.engine in times:
            result.times_s = times[result.engine]
            result.median_s = statistics.median(result.times_s)
            result.roofline_gflops = max(rooflines.values())
            result.rooflines = rooflines
    return results


def format_table(
    results: Sequence[BenchResult], roofline: float | None = None, batch: int = 1
) -> str:
    """Markdown table: latency, images/s, GFLOP/s, share of roofline, speed-up, agreement."""
    baseline = next((r.median_s for r in results if r.engine == "eager" and r.median_s), None)
    lines = [
        "| engine | median ms | images/s | GFLOP/s | % roofline | vs eager | argmax agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error or not r.median_s:
            lines.append(f"| {r.engine} | failed: {r.error} | | | | | |")
            continue
        rate = r.gflops_per_s() or 0.0
        roof = r.roofline_gflops or roofline or float("nan")
        speedup = f"{baseline / r.median_s:.2f}x" if baseline else "-"
        agreement = f"{r.agreement:.4f}" if r.agreement is not None else "-"
        lines.append(
            f"| {r.engine} | {r.median_s * 1e3:.1f} | {batch / r.median_s:.2f} | {rate:.1f} | "
            f"{100 * rate / roof:.0f}% | {speedup} | {agreement} |"
        )
    return "\n".join(lines)


def run_bench(
    model_name: str,
    size: tuple[int, int] | int,
    engines: Sequence[str] = ("eager", "fused", "onnxruntime"),
    repeats: int = 5,
    *,
    num_classes: int = 21,
    batch: int = 1,
    threads: int | None = None,
    **model_options: object,
) -> str:
    """Benchmark registry model `model_name` at `size`; returns a printable report (markdown).

    Args:
        size: (height, width) or one int for a square input.
        engines: subset of ENGINE_NAMES, timed in this order; "eager" is the baseline.
        repeats: timed calls per engine (the median is reported).
        threads: torch intra-op threads (default: torch's current setting).
        model_options: passed to `fcnseg.build_model` (e.g. pretrained=False).
    """
    from fcnseg.models import build_model

    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1 or repeats < 1:
        raise UsageError(f"size and repeats must be positive, got size={size}, repeats={repeats}")
    if threads:
        torch.set_num_threads(threads)
    try:
        model = build_model(model_name, num_classes, **model_options)
    except (TypeError, ValueError):
        if "pretrained" not in model_options:
            raise
        # The paper nets have no `pretrained` switch (their encoder weights are opt-in).
        options = {k: v for k, v in model_options.items() if k != "pretrained"}
        model = build_model(model_name, num_classes, **options)
    results = bench_model(model, (height, width), engines, repeats, batch)
    measured = next((r for r in results if r.rooflines), None)
    rooflines = measured.rooflines if measured and measured.rooflines else {}
    roofline_text = ", ".join(f"{key} {value:.1f}" for key, value in rooflines.items())
    header = (
        f"{model_name} at {height}x{width}, batch {batch}, {torch.get_num_threads()} threads; "
        f"{results[0].gflops:.1f} GFLOP per forward; roofline = faster {ROOFLINE_MATMUL_SIZE}^2 "
        f"fp32 product timed round-robin with the engines, GFLOP/s: {roofline_text or 'n/a'}"
    )
    return header + "\n\n" + format_table(results, batch=batch)
