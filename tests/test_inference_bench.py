"""fcnseg.inference.bench: FLOP counting, engine construction, the report table (no timings
are asserted: speed belongs to benchmarks/)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.inference.bench import (
    BenchResult,
    bench_model,
    count_gflops,
    format_table,
    matmul_roofline_gflops,
    run_bench,
)


def tiny_segmenter() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    model.normalization = "imagenet"  # the model contract's input preset, which export records
    return model.eval()


def test_count_gflops_matches_the_convolution_formula() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    flops = count_gflops(conv, torch.randn(1, 3, 10, 12)) * 1e9
    assert flops == pytest.approx(2 * 8 * 3 * 3 * 3 * 10 * 12)


def test_bench_model_rows_and_exact_engines_agree() -> None:
    results = bench_model(tiny_segmenter(), (17, 23), ("eager", "fused", "onnxruntime"), 1)
    assert [r.engine for r in results] == ["eager", "fused", "onnxruntime"]
    for result in results:
        assert result.error is None, result.error
        assert result.median_s is not None and result.median_s > 0
        assert result.agreement == pytest.approx(1.0)
    table = format_table(results, roofline=100.0)
    assert table.count("\n") == 4  # header, rule, three rows
    assert "| eager |" in table and "1.00x" in table


def test_failed_engine_becomes_a_table_row() -> None:
    row = format_table([BenchResult("compile", error="RuntimeError: no compiler")], 1.0)
    assert "failed: RuntimeError: no compiler" in row


def test_unknown_engine_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown engines"):
        bench_model(tiny_segmenter(), (8, 8), ("tensorrt",), 1)


def test_roofline_is_positive() -> None:
    assert matmul_roofline_gflops(size=128, repeats=1) > 0


@pytest.mark.slow
def test_run_bench_on_a_registry_model() -> None:
    report = run_bench(
        "fcn32s_vgg16_padded", 64, ("eager",), 1, num_classes=3, width_divisor=16, pretrained=False
    )
    assert report.startswith("fcn32s_vgg16_padded at 64x64")
    assert "| eager |" in report and "GFLOP per forward" in report


class TwoHeads(nn.Module):
    """Geometric listed first: the agreement is still scored on the primary (semantic) head."""

    def __init__(self) -> None:
        super().__init__()
        self.geometric, self.semantic = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 5, 1)
        self.normalization = "imagenet"

    def forward(self, x):
        return {"geometric": self.geometric(x), "semantic": self.semantic(x)}


def test_a_multi_head_model_is_benched_on_its_primary_head(monkeypatch) -> None:
    import fcnseg.inference.bench as bench

    seen = []

    def agreement(reference, candidate):
        seen.append((reference.shape[1], candidate.shape[1]))
        return 1.0

    monkeypatch.setattr(bench, "argmax_agreement", agreement)
    results = bench_model(TwoHeads().eval(), (9, 11), ("eager",), 1)
    assert results[0].error is None and results[0].agreement == 1.0
    assert seen == [(5, 5)]
