"""The optimiser of a training run: encoder/head learning-rate groups and Caffe's bias multipliers.

Why apart from engine/setup.py: which parameter takes which rate and decay is a rule of its own
(module names, the release nets' `lr_mult` / `decay_mult`), tested on its own, and setup only
asks for the optimiser of a recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fcnseg.config import Config

#: Parameter-name prefixes that belong to the (pretrained) encoder, for `encoder_lr_mult`.
#: A parameter belongs to the encoder when a module on its path has one of these names; matching
#: any path component (not just the first) covers wrappers such as fusion streams
#: (`rgb.backbone.`) and benchmark adapters (`model.encoder.`).
ENCODER_MODULE_NAMES: frozenset[str] = frozenset({"backbone", "encoder", "features"})


def _takes_bias_mults(name: str, scope: str, conv_biases: frozenset[str] = frozenset()) -> bool:
    """Whether parameter `name` is a bias that `train.bias_*_mult` apply to under `scope`
    ("conv": one of `conv_biases`, the biases of convolution modules)."""
    parts = name.split(".")
    if parts[-1] != "bias":
        return False
    if scope == "conv":
        return name in conv_biases
    return scope == "all" or (len(parts) > 1 and parts[-2].startswith("score"))


def _conv_biases(model: nn.Module) -> frozenset[str]:
    """Parameter names of the convolutions' biases (not BatchNorm's shift, also named bias)."""
    return frozenset(
        f"{path}.bias"
        for path, module in model.named_modules()
        if isinstance(module, nn.modules.conv._ConvNd) and module.bias is not None
    )


def parameter_groups(
    model: nn.Module,
    lr: float,
    encoder_mult: float,
    weight_decay: float,
    *,
    bias_lr_mult: float = 1.0,
    bias_decay_mult: float = 1.0,
    bias_scope: str = "all",
    score_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Encoder parameters (see ENCODER_MODULE_NAMES) at lr x encoder_mult, the rest at lr.

    With bias multipliers other than 1, the biases `bias_scope` selects ("all"; "score": the
    score layers' only; "conv": convolutions', not BatchNorm shifts) form their own groups at
    lr x bias_lr_mult and weight decay x bias_decay_mult: Caffe's per-parameter `lr_mult` / `decay_mult`, which the release nets set
    to 2 / 0 for biases. With `score_lr_mult` other than 1, the layers the model declares as
    class scorers (`class_score_layers`, engine/transfer.py) form "score" groups at lr x
    score_lr_mult (their biases also x bias_lr_mult): DeepLab's fc8 at `lr_mult` 10 / 20.
    Those groups come first, so the last group is still the head weights' (the lr the loop
    logs); with multipliers of 1 the groups are exactly the two of before.
    """
    from fcnseg.engine.transfer import class_score_layers, is_class_scored

    split = bias_lr_mult != 1.0 or bias_decay_mult != 1.0
    conv_biases = _conv_biases(model) if bias_scope == "conv" else frozenset()
    scorers = class_score_layers(model) if score_lr_mult != 1.0 else ()
    members: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        in_encoder = not ENCODER_MODULE_NAMES.isdisjoint(name.split(".")[:-1])
        key = "encoder" if in_encoder else "head"
        if scorers and is_class_scored(name, scorers):
            key = "score"
        if split and _takes_bias_mults(name, bias_scope, conv_biases):
            key += "_bias"
        members.setdefault(key, []).append(parameter)
    groups: list[dict[str, Any]] = []
    for key in ("encoder_bias", "score_bias", "head_bias", "score", "encoder", "head"):
        if not members.get(key):
            continue
        group_lr = lr * (encoder_mult if key.startswith("encoder") else 1.0)
        if key.startswith("score"):
            group_lr *= score_lr_mult
        decay = weight_decay
        if key.endswith("_bias"):
            group_lr, decay = group_lr * bias_lr_mult, weight_decay * bias_decay_mult
        groups.append(
            {
                "params": members[key],
                "base_lr": group_lr,
                "lr": group_lr,
                "weight_decay": decay,
                "name": key,
            }
        )
    return groups


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW, over the encoder/head groups."""
    train = config.train
    groups = parameter_groups(
        model,
        train.lr,
        train.encoder_lr_mult,
        train.weight_decay,
        bias_lr_mult=train.bias_lr_mult,
        bias_decay_mult=train.bias_decay_mult,
        bias_scope=train.bias_mult_scope,
        score_lr_mult=train.score_lr_mult,
    )
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(groups, lr=train.lr)
