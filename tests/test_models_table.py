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


# --- the table shipped in the package (what `fcnseg models` prints) -----------------------------
#: Rebuilt with FLOPs: one of each kind of builder (paper VGG / AlexNet / GoogLeNet, timm and
#: torchvision encoders, the second head, fusion, multi-head, PSPNet, LinkNet, ENet); the rest is
#: rebuilt without FLOPs.
FLOPS_SAMPLE = [
    "fcn32s_vgg16", "fcn32s_alexnet", "fcn32s_googlenet", "fcn8s_efficientnet_lite0",
    "fcn4s_efficientnet_lite0", "fpnlite_mobilenet_v2", "late_fusion", "multihead",
    "pspnet_efficientnet_lite0", "linknet_resnet18", "enet",
]  # fmt: skip


def test_shipped_table_lists_every_registered_model_and_only_those():
    from fcnseg.models import list_models
    from fcnseg.models.table import shipped_costs

    assert sorted(shipped_costs()) == sorted(list_models())


@pytest.mark.slow
def test_shipped_table_equals_a_rebuild():
    from fcnseg.models import list_models
    from fcnseg.models.table import shipped_costs, table_payload

    shipped = shipped_costs()
    sample = [name for name in FLOPS_SAMPLE if name in shipped]
    assert sample == FLOPS_SAMPLE, "FLOPS_SAMPLE names models the registry no longer has"
    rebuilt = {row["name"]: row for row in table_payload(model_table(sample))["models"]}
    for name in sample:
        assert rebuilt[name] == shipped[name], f"{name}: run python -m fcnseg.models.table"
    for row in model_table(list_models(), flops=False):
        assert shipped[row.name]["parameters"] == row.parameters, row.name
        assert shipped[row.name]["description"] == row.description, row.name


def test_listing_reads_the_shipped_table_without_building(monkeypatch):
    from fcnseg.models import table

    def no_build(*args, **kwargs):
        raise AssertionError("fcnseg models built a model")

    monkeypatch.setattr(table, "build_model", no_build)
    rows = table.listed_model_table()
    shipped = table.shipped_costs()
    assert {row.name for row in rows} == set(shipped)
    lite = next(row for row in rows if row.name == "fcn8s_efficientnet_lite0")
    assert lite.gflops == shipped[lite.name]["gflops"] > 0
    assert table.listed_model_table(["fcn8s_efficientnet_lite0"], flops=False)[0].gflops is None
