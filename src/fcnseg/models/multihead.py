"""Multi-task FCNs: one trunk computes the shared features once, one score head per task.

The FCN paper's SIFT Flow net (section 4.3) scores one VGG16 trunk twice: 33 semantic and
3 geometric classes, output `{"semantic": logits, "geometric": logits}`, trained on the sum
of the per-head losses (fcnseg.losses.PerHeadLoss) and scored per head.

`MultiHeadFCN` is built from any model that follows `SharedTrunkModel` (the paper nets and the
skip head on every backbone): the base net is built once per head, the children its
`trunk_module_names` names are kept once, as `trunk`, and the rest of each head's net (its
class-scoring and upsampling layers) goes into `heads[name]`. The forward is two lines: the
trunk's `trunk_features(x)`, then each head's `score_features(shared, x)`, which is exactly
what the base net's own forward does, so each head's output equals the single-head net's on
the same weights.

State-dict keys: `trunk.<base child>...` for the shared layers and `heads.<head>.<base
child>...` for each head's, both with the base net's own child names. For the paper nets that
is `trunk.encoder.conv1_1.weight`, `trunk.fc6.weight`, `heads.semantic.score_fr.weight`,
`heads.geometric.upscore2.weight`; for the skip head `trunk.backbone.*` and
`heads.<head>.head.score_fr.score.weight`. The Caffe import (fcnseg.models.caffe) maps a head
name to the release's stream suffix ("semantic" -> "_sem": `score_fr_sem`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.factory import build_model
from fcnseg.models.protocol import PRIMARY_HEAD, SharedTrunkModel, primary_head_name
from fcnseg.models.registry import register_model


def _with_children(net: nn.Module, names: Iterable[str]) -> nn.Module:
    """A shallow copy of `net` that holds only the children in `names` (the others dropped).

    Why a copy and not a new class: the part keeps the base net's methods (`trunk_features` or
    `score_features`) and its child names, so its parameters keep their names too.
    """
    keep = set(names)
    part = copy.copy(net)
    for key, value in vars(net).items():  # own hook tables and attribute dicts, not shared
        if isinstance(value, (dict, set)):
            part.__dict__[key] = type(value)(value)
    part.__dict__["_modules"] = {
        name: child for name, child in net._modules.items() if name in keep
    }
    return part


def check_heads(heads: Mapping[str, int]) -> dict[str, int]:
    """`heads` as {task: class count}; a one-line error for an empty map or a bad count."""
    if not heads:
        raise ModelOptionError(
            "model.options.heads must name at least one task, e.g. {semantic: 33}"
        )
    for name, classes in heads.items():
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise ModelOptionError(
                f"model.options.heads[{name!r}] must be a positive class count, got {classes!r}"
            )
    return dict(heads)


def split_trunk(nets: Mapping[str, nn.Module]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """(trunk, heads) of one base net per head: the first net's trunk children, once, and
    each net's other children. Every net must follow `SharedTrunkModel`."""
    for net in nets.values():
        # Tensors held by the net itself (not by a child) would belong to both parts.
        if not isinstance(net, SharedTrunkModel) or net._parameters or net._buffers:
            raise ModelOptionError(
                f"a multi-head base must split into trunk and heads; {type(net).__name__} "
                "cannot (use a paper net fcn*s_vgg16 or a skip-head net fcn*s_<encoder>)"
            )
    first = next(iter(nets.values()))
    trunk_names = set(first.trunk_module_names)
    trunk = _with_children(first, trunk_names)
    heads = {
        name: _with_children(net, set(net._modules) - trunk_names) for name, net in nets.items()
    }
    return trunk, heads


class MultiHeadFCN(nn.Module):
    """One trunk, one score head per task; forward returns {task: logits N x C_task x H x W}.

    Build it with `MultiHeadFCN.from_builder(lambda classes: build_model(base, classes),
    heads)` or through the registry name "multihead" (options `base`, `heads`).

    Args:
        trunk: computes `trunk_features(x)`, the features every head scores.
        heads: task -> module whose `score_features(shared, x)` gives that task's logits and
            whose `num_classes` is its class count.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ModelOptionError("MultiHeadFCN needs at least one head, e.g. {semantic: 33}")
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))
        self.normalization: str = trunk.normalization
        self.in_channels: int = trunk.in_channels
        self.head_classes: dict[str, int] = {
            name: int(head.num_classes) for name, head in heads.items()
        }
        self.num_classes: int = self.head_classes[primary_head_name(self.head_classes)]

    @classmethod
    def from_builder(
        cls, builder: Callable[[int], nn.Module], heads: Mapping[str, int]
    ) -> MultiHeadFCN:
        """Build `builder(classes)` per head and keep its trunk once (see `split_trunk`)."""
        nets = {name: builder(classes) for name, classes in check_heads(heads).items()}
        trunk, score_heads = split_trunk(nets)
        return cls(trunk, score_heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shared = self.trunk.trunk_features(x)
        return {name: head.score_features(shared, x) for name, head in self.heads.items()}


@register_model(
    "multihead",
    description="One trunk, one score head per task (SIFT Flow: heads={semantic: 33, geometric: 3})",
    family="fusion",
    release_solver="siftflow-{stage}",
    base="fcn8s_resnet18",
)
def build_multihead(
    num_classes: int, *, base: str, heads: Mapping[str, int] | None = None, **kwargs: Any
) -> MultiHeadFCN:
    """`heads` maps task -> class count; without it a single PRIMARY_HEAD of `num_classes`."""
    heads = dict(heads) if heads else {PRIMARY_HEAD: num_classes}
    return MultiHeadFCN.from_builder(lambda classes: build_model(base, classes, **kwargs), heads)
