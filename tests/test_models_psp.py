"""PSPNet's head: the pyramid of the paper and the release, the dilated encoder, the training-only
auxiliary head and its loss, and pooling that equals adaptive_avg_pool2d (the ONNX export
of pspnet is checked with the other real models in tests/test_export.py).

Layer widths are read from the authors' release hszhao/semseg, model/pspnet.py at commit
5e5a0ba7a1fa2cc06f3e8c060cbedff08e160d33 (`PPM`: adaptive pool, 1x1 conv to 2048/len(bins),
BN, ReLU; `cls`: 3x3 conv to 512, BN, ReLU, Dropout2d(0.1), 1x1; `aux`: 3x3 conv 1024 -> 256,
same tail); bins, output stride 8 and the 0.4 loss weight from the paper (sections 3.2-4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.errors import DataError
from fcnseg.models import build_model
from fcnseg.models.heads.pooling import adaptive_avg_pool
from fcnseg.models.heads.psp import PSPHead
from fcnseg.models.protocol import auxiliary_logits

#: A narrow head keeps the tests fast; the defaults are checked on the meta device.
LIGHT = {"pretrained": False, "bottleneck_channels": 16, "aux_channels": 8}


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (8, 12), (13, 17), (45, 60)])
def test_exportable_pooling_equals_adaptive_avg_pool(size):
    x = torch.randn(2, 3, *size)
    for bins in (1, 2, 3, 6):
        assert torch.allclose(adaptive_avg_pool(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-6)


def test_the_pyramid_and_classifier_are_the_releases():
    with torch.device("meta"):
        model = build_model("pspnet_resnet50", 21, pretrained=False)
    head = model.head
    assert isinstance(head, PSPHead)
    assert model.backbone.strides == {"s4": 4, "s8": 8, "s16": 8, "s32": 8}  # dilated, OS 8
    assert [branch.bins for branch in head.pyramid] == [1, 2, 3, 6]
    assert [branch.reduce[0].out_channels for branch in head.pyramid] == [512] * 4  # 2048 / 4
    assert head.classifier[0].in_channels == 4096 and head.classifier[0].out_channels == 512
    assert head.classifier[0].kernel_size == (3, 3) and head.classifier[3].p == 0.1
    assert head.aux[0].in_channels == 1024 and head.aux[0].out_channels == 256
    assert head.aux[-1].out_channels == 21 and head.classifier[-1].out_channels == 21
    assert isinstance(head.classifier[3], nn.Dropout2d)
    assert head.class_score_layers == ("classifier.4", "aux.4")


def test_auxiliary_scores_exist_in_training_only_and_keep_the_input_size():
    torch.manual_seed(0)
    model = build_model("pspnet_resnet18", 3, **LIGHT)
    x = torch.randn(2, 3, 45, 61)
    out = model.train()(x)
    assert out.shape == (2, 3, 45, 61) and auxiliary_logits(model).shape == (2, 3, 45, 61)
    assert out.requires_grad and auxiliary_logits(model).requires_grad
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 45, 61)
    assert auxiliary_logits(model) is None  # eval, export and serve never see it
    with pytest.raises(DataError, match="batches of 2 or more"):
        model.train()(x[:1])


def _first_step_loss(tmp_path: Path, aux_weight: float) -> float:
    import csv

    from fcnseg.cli import main

    out = tmp_path / f"aux{aux_weight}"
    args = [
        "train", "--out", str(out), "model.name=pspnet_resnet18", "model.pretrained=false",
        "model.options={bottleneck_channels: 8, aux_channels: 8}", "data.format=synthetic",
        "data.options={num_images: 2, size: [32, 32]}", "data.crop_size=[32, 32]",
        "data.val_split=null", "train.epochs=1", "train.batch_size=2", "train.device=cpu",
        "train.progress=false", "train.log_every=1", "train.optimizer=sgd", "train.seed=1",
        f"train.aux_weight={aux_weight}",
    ]  # fmt: skip
    assert main(args) == 0
    with (out / "metrics.csv").open() as handle:
        return float(next(csv.DictReader(handle))["train_loss"])


def test_the_loop_adds_the_weighted_auxiliary_loss(tmp_path):
    without, weighted, doubled = (_first_step_loss(tmp_path, w) for w in (0.0, 0.4, 0.8))
    # Same seed, same first batch: the loss grows by 0.4 x the auxiliary head's loss.
    assert weighted > without
    assert doubled - without == pytest.approx(2 * (weighted - without), rel=1e-3)
