"""`fcnseg models`: parameters, GFLOPs and offline weights of registered names."""

from __future__ import annotations

import pytest

from fcnseg.models.table import format_model_table, model_table
from fcnseg.models.weights import offline_weights_available


def test_model_table_counts_parameters_and_flops():
    names = ["fcn8s_resnet18", "fcn8s_resnet50", "fcn8s_mobilenet_v2"]
    rows = {row.name: row for row in model_table(names)}
    assert set(rows) == set(names)
    assert 11e6 < rows["fcn8s_resnet18"].parameters < 12e6  # ResNet-18 trunk is 11.2M
    assert rows["fcn8s_resnet50"].gflops > rows["fcn8s_resnet18"].gflops > 0
    assert rows["fcn8s_mobilenet_v2"].weights_offline == offline_weights_available("mobilenet_v2")
    # Convolutional cost grows with the pixel count: half the side, about a quarter the FLOPs.
    (small,) = model_table(["fcn8s_mobilenet_v2"], size=256)
    assert small.gflops * 4 == pytest.approx(rows["fcn8s_mobilenet_v2"].gflops, rel=0.05)
    (fast,) = model_table(["fcn8s_resnet18"], flops=False)
    assert fast.gflops is None and fast.parameters == rows["fcn8s_resnet18"].parameters
    assert "fcn8s_resnet50" in format_model_table(list(rows.values()))


def test_model_table_lists_the_second_head_on_its_backbone():
    (row,) = model_table(["fpnlite_resnet18"], flops=False)
    assert row.family == "fpnlite-resnet18" and 11e6 < row.parameters < 12e6
