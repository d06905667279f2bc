"""The head table and the decode-head contract; the FPN-lite head, the table's worked example."""

from __future__ import annotations

import pytest
import torch
from model_helpers import PoolBackbone

from fcnseg.errors import ModelOptionError
from fcnseg.models.heads import HEADS, DecodeHead, FPNLiteHead
from fcnseg.models.heads.base import require_features


def test_every_row_names_a_decode_head_and_its_presets():
    assert set(HEADS) == {"fcn", "fpnlite", "aspp", "unet", "psp", "linknet"}
    for row in HEADS.values():
        assert issubclass(row.head, DecodeHead) and row.presets
        for prefix, options in row.presets.items():
            assert row.prefix_of(options) == prefix
            assert "{prefix}" in row.description or len(row.presets) == 1
    assert HEADS["fcn"].prefix_of({}) == "fcn8s" and HEADS["fcn"].prefix_of({"variant": "4s"})
    assert HEADS["fpnlite"].prefix_of({"pyramid_channels": 8}) == "fpnlite"
    assert HEADS["aspp"].prefix_of({"rates": [6, 12]}) == "deeplab_aspp"


def test_a_head_records_what_it_reads_at_which_stride():
    backbone = PoolBackbone(output_stride=16)
    head = FPNLiteHead(backbone.channels, backbone.strides, 5, pyramid_channels=8)
    assert head.in_features == ("s32", "s16", "s8") and head.num_classes == 5
    assert head.in_strides == {"s32": 16, "s16": 16, "s8": 8}


def test_missing_features_are_named_in_one_line():
    with pytest.raises(
        ModelOptionError, match=r"needs backbone features \['s4'\].*it has"
    ) as error:
        require_features("mine", ["s8", "s4"], {"s8": 3, "s16": 3})
    assert "\n" not in str(error.value)
    require_features("mine", ["s8"], {"s8": 3})


def test_fpn_lite_fuses_every_level_and_returns_the_requested_size():
    torch.manual_seed(0)
    backbone = PoolBackbone()
    head = FPNLiteHead(backbone.channels, backbone.strides, 3, pyramid_channels=8).eval()
    features = backbone(torch.randn(1, 3, 64, 96))
    out = head(features, (64, 96))
    assert out.shape == (1, 3, 64, 96)
    for name in head.in_features:  # every level reaches the output
        changed = dict(features, **{name: torch.randn_like(features[name])})
        assert not torch.allclose(head(changed, (64, 96)), out), name
    with pytest.raises(ModelOptionError, match="pyramid_channels"):
        FPNLiteHead(backbone.channels, backbone.strides, 3, pyramid_channels=0)
