"""The optimiser's parameter groups: encoder/head rates, and Caffe's bias multipliers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.config import config_from_dict
from fcnseg.engine.optim import build_optimizer, parameter_groups


class Stream(nn.Module):
    """An encoder (`backbone`) and a score layer: the shape of an FCN stream."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 1)
        self.score = nn.Conv2d(4, 2, 1)


class Fused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rgb = Stream()
        self.hha = Stream()


def test_encoder_lr_multiplier_groups():
    config = config_from_dict({"train": {"lr": 0.01, "encoder_lr_mult": 0.1}})
    optimizer = build_optimizer(config, Stream())
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {"encoder": pytest.approx(0.001), "head": pytest.approx(0.01)}
    assert isinstance(optimizer, torch.optim.AdamW)


def test_encoder_parameters_are_found_inside_wrappers():
    groups = {g["name"]: g for g in parameter_groups(Fused(), 1.0, 0.1, 0.0)}
    assert len(groups["encoder"]["params"]) == 4  # both streams' backbone weight + bias
    assert len(groups["head"]["params"]) == 4
    assert groups["encoder"]["lr"] == pytest.approx(0.1)


def test_bias_multipliers_make_their_own_groups_first():
    groups = parameter_groups(
        Stream(), 1.0, 1.0, 0.5, bias_lr_mult=2.0, bias_decay_mult=0.0, bias_scope="score"
    )
    named = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["head_bias", "encoder", "head"]
    assert (named["head_bias"]["lr"], named["head_bias"]["weight_decay"]) == (2.0, 0.0)
    assert len(named["encoder"]["params"]) == 2  # the backbone's bias is not a score bias
    assert named["head"]["weight_decay"] == 0.5
