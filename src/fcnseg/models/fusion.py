"""RGB-D fusion and multi-task heads: the FCN paper's NYUDv2 and SIFT Flow nets, for any model.

Three wrappers turn any registered single-input, single-output FCN into the paper's variants
(section 4.3, "NYUDv2" and "SIFT Flow"):

- Early fusion (`expand_input_channels`, registry name "early_fusion"): the first convolution
  takes N channels (RGB + depth: 4). Its RGB filters are kept; the extra input channels start
  from a documented rule: "mean" (each extra channel gets the mean of the filter's RGB weights,
  so a depth edge excites the filter as a grey-level edge of the same contrast would) or "zero"
  (the net starts out computing exactly its RGB function and learns to use depth).
- Late fusion (`LateFusionFCN`, "late_fusion"): two complete FCN streams, one on RGB and one on
  HHA, whose class scores are summed and trained end to end.
- Multi-task (`MultiHeadFCN`, "multihead"): one trunk, one score head per task (SIFT Flow:
  33 semantic + 3 geometric classes), output `{"semantic": logits, "geometric": logits}`.
  Trained with the sum of the per-head losses (`multitask_loss`) and scored per head
  (`MultiHeadConfusion`).

`MultiHeadFCN` is generic over the FCN head without knowing its structure: it builds the model
once per head, then makes every sub-module whose parameters do not depend on the class count
(the backbone, and e.g. VGG's fc6/fc7) one shared object, and memoises those shared modules
during a forward pass, so the trunk runs once per batch however many heads there are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fcnseg.errors import DataError, ModelOptionError, RecipeError
from fcnseg.metrics import ConfusionMatrix, SegmentationScores
from fcnseg.models.factory import build_model
from fcnseg.models.protocol import primary_head_name
from fcnseg.models.registry import register_model

ChannelRule = Literal["mean", "zero"]
CHANNEL_RULES: tuple[str, ...] = ("mean", "zero")
#: Channels of an RGB image, which every registered model's first convolution consumes.
RGB_CHANNELS = 3
#: Keys of the dict input a late-fusion model accepts.
LATE_FUSION_KEYS: tuple[str, str] = ("rgb", "hha")


# --- Early fusion ---------------------------------------------------------------------------


def find_first_conv(model: nn.Module, in_channels: int = RGB_CHANNELS) -> tuple[str, nn.Conv2d]:
    """Name and module of the first `nn.Conv2d` (registration order) taking `in_channels`.

    Registration order is the order modules are created in `__init__`, which for every encoder
    in fcnseg (and torchvision/timm) puts the stem convolution first. Subclasses of Conv2d
    (e.g. timm's Conv2dSame) count, which is why the layer is edited in place, not replaced.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return name, module
    raise ModelOptionError(
        f"{type(model).__name__}: no Conv2d with {in_channels} input channels found; "
        "expand_input_channels needs a model whose stem is a 2-D convolution"
    )


def expand_input_channels(
    model: nn.Module, n_channels: int, rule: ChannelRule = "mean"
) -> nn.Module:
    """Make `model` accept N-channel input (RGB first, extra channels after), in place.

    The first convolution's weight grows from C_out x 3 x k x k to C_out x N x k x k: the RGB
    part is kept, the extra part is set by `rule` ("mean": the mean over the RGB filters;
    "zero": zeros). Sets `model.in_channels = n_channels`, which models that validate their
    input read. Returns the model for chaining.
    """
    if rule not in CHANNEL_RULES:
        raise ModelOptionError(f"rule must be one of {CHANNEL_RULES}, got {rule!r}")
    if n_channels < RGB_CHANNELS:
        raise ModelOptionError(
            f"n_channels must be >= {RGB_CHANNELS} (RGB plus extra channels), got {n_channels}"
        )
    name, conv = find_first_conv(model)
    if conv.groups != 1:
        raise ModelOptionError(f"first conv {name!r} is grouped; cannot add input channels to it")
    old = conv.weight.detach()
    extra = n_channels - RGB_CHANNELS
    if rule == "mean":
        added = old.mean(dim=1, keepdim=True).expand(-1, extra, -1, -1)
    else:
        added = old.new_zeros(old.shape[0], extra, *old.shape[2:])
    conv.weight = nn.Parameter(
        torch.cat([old, added], dim=1).contiguous(), requires_grad=conv.weight.requires_grad
    )
    conv.in_channels = n_channels
    model.in_channels = n_channels
    return model


@register_model(
    "early_fusion",
    description="Early RGB-D fusion: any model with an N-channel first conv (base=..., NYUDv2)",
    family="fusion",
    release_solver="nyud-{stage}-color-d",
    base="fcn8s_resnet18",
    in_channels=RGB_CHANNELS + 1,
    rule="mean",
)
def build_early_fusion(
    num_classes: int, *, base: str, in_channels: int, rule: ChannelRule, **kwargs: Any
) -> nn.Module:
    """`base` built with `num_classes`, its first convolution expanded to `in_channels`."""
    return expand_input_channels(build_model(base, num_classes, **kwargs), in_channels, rule)


# --- Late fusion ----------------------------------------------------------------------------


def _scale(scores: Tensor | dict[str, Tensor], weight: float):
    if isinstance(scores, Mapping):
        return {key: value * weight for key, value in scores.items()}
    return scores * weight


def _add_scores(first: Tensor | dict[str, Tensor], second: Tensor | dict[str, Tensor]):
    if isinstance(first, Mapping):
        return {key: first[key] + second[key] for key in first}
    return first + second


class LateFusionFCN(nn.Module):
    """Two FCN streams (RGB and HHA) whose class scores are summed (FCN paper, "RGB-HHA").

    Input: either a dict {"rgb": N x 3 x H x W, "hha": N x 3 x H x W}, or one N x 6 x H x W
    tensor with RGB in channels 0-2 and HHA in 3-5 (the NYUDv2 loader's default, so that the
    training loop moves and batches a single tensor). Each part must already be normalised
    for its stream. Output: the summed logits, N x C x H x W (or a dict of them when the
    streams are multi-head).
    """

    def __init__(
        self,
        rgb_model: nn.Module,
        hha_model: nn.Module,
        stream_weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__()
        self.rgb = rgb_model
        self.hha = hha_model
        #: Coefficients of the RGB and HHA scores in the sum. The paper says "sum"; the
        #: release's nyud-fcn32s-color-hha averages (Eltwise SUM with coeff 0.5, 0.5), which
        #: only scales the logits (same argmax) but changes the loss, so imported release
        #: weights need (0.5, 0.5) to compute the release's scores.
        self.stream_weights = (float(stream_weights[0]), float(stream_weights[1]))
        self.normalization: str = rgb_model.normalization
        self.in_channels = 2 * RGB_CHANNELS
        self.num_classes: int = rgb_model.num_classes
        self.head_classes: dict[str, int] = dict(rgb_model.head_classes)

    def split_input(self, x: Tensor | Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(rgb, hha) parts of a dict or a 6-channel tensor; bad input is a one-line error."""
        if isinstance(x, Mapping):
            missing = [key for key in LATE_FUSION_KEYS if key not in x]
            if missing:
                raise DataError(f"late fusion input dict lacks {missing}; pass keys 'rgb', 'hha'")
            return x["rgb"], x["hha"]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"late fusion expects N x {self.in_channels} x H x W (RGB then HHA) or a dict "
                f"{{'rgb', 'hha'}}, got shape {tuple(x.shape)}"
            )
        return x[:, :RGB_CHANNELS], x[:, RGB_CHANNELS:]

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
        rgb, hha = self.split_input(x)
        first, second = self.rgb(rgb), self.hha(hha)
        if self.stream_weights != (1.0, 1.0):
            first, second = (
                _scale(first, self.stream_weights[0]),
                _scale(second, self.stream_weights[1]),
            )
        return _add_scores(first, second)


@register_model(
    "late_fusion",
    description="Late RGB+HHA fusion: two `base` streams with summed scores (NYUDv2)",
    family="fusion",
    release_solver="nyud-{stage}-color-hha",
    base="fcn8s_resnet18",
)
def build_late_fusion(
    num_classes: int,
    *,
    base: str,
    stream_weights: tuple[float, float] | list[float] = (1.0, 1.0),
    **kwargs: Any,
) -> LateFusionFCN:
    """Two independently initialised `base` models (both from the same pretrained weights)."""
    if len(stream_weights) != 2:
        raise ModelOptionError(
            f"stream_weights must be two numbers (RGB, HHA), got {stream_weights!r}"
        )
    return LateFusionFCN(
        build_model(base, num_classes, **kwargs),
        build_model(base, num_classes, **kwargs),
        (float(stream_weights[0]), float(stream_weights[1])),
    )


# --- Multi-task heads -----------------------------------------------------------------------


def _state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in module.state_dict().items()}


def _same_structure(first: nn.Module, second: nn.Module) -> bool:
    """Same type, same printed configuration and same parameter/buffer names and shapes.

    The printed form (`repr`) lists every child's configuration (channels, strides, dropout
    rate...), so modules built differently never match even when their weights have equal
    shapes; anything sized by the class count differs in it.
    """
    return (
        type(first) is type(second)
        and repr(first) == repr(second)
        and _state_shapes(first) == _state_shapes(second)
    )


def share_class_independent_modules(primary: nn.Module, secondary: nn.Module) -> list[str]:
    """Replace each maximal sub-module of `secondary` that matches `primary`'s by primary's.

    Both models must come from the same builder with different class counts; what remains
    unshared is exactly what the class count shapes (score layers, upsampling). Returns the
    dotted names of the shared sub-modules.
    """
    shared: list[str] = []

    def visit(prefix: str, first: nn.Module, second: nn.Module) -> None:
        for name, child in list(second.named_children()):
            counterpart = first._modules.get(name)
            if counterpart is None:
                continue
            if _same_structure(counterpart, child):
                second._modules[name] = counterpart
                shared.append(prefix + name)
            else:
                visit(f"{prefix}{name}.", counterpart, child)

    visit("", primary, secondary)
    return shared


class _ForwardCache:
    """Results of shared modules during one `MultiHeadFCN` forward pass.

    Entries are keyed by module and by the identity of the inputs, traced back through the
    copies handed out (`aliases`), so a chain of shared modules (fc6 -> relu6 -> drop6 -> fc7)
    runs once although each head receives its own copies.
    """

    def __init__(self) -> None:
        self.active = False
        self.entries: dict[tuple, Any] = {}
        self.aliases: dict[int, int] = {}
        #: Everything whose id is used as a key stays alive until the pass ends.
        self.keep: list[Any] = []

    def reset(self, active: bool) -> None:
        self.active = active
        self.entries.clear()
        self.aliases.clear()
        self.keep.clear()

    def canonical(self, value: Any) -> int:
        return self.aliases.get(id(value), id(value))

    def hand_out(self, value: Any) -> Any:
        """A copy of a cached output, remembered as an alias of the original tensors."""
        if isinstance(value, Tensor):
            copy = value.clone()
            self.aliases[id(copy)] = self.canonical(value)
            self.keep.append(copy)
            return copy
        if isinstance(value, Mapping):
            return type(value)((key, self.hand_out(item)) for key, item in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(self.hand_out(item) for item in value)
        return value


class SharedModuleRef(nn.Module):
    """Stands in for a trunk module inside each head; the module itself is registered once.

    The target is held as a plain attribute (not a registered child), so parameters and
    `state_dict` see it once, under `MultiHeadFCN.trunk`. During a `MultiHeadFCN` forward the
    first call with given inputs computes and later calls (the other heads) reuse the result,
    so the trunk runs once per batch. Each call returns fresh copies: heads may modify their
    input in place (ReLU(inplace=True) after a shared layer), which must reach neither the
    other heads nor the autograd record of the shared output.
    """

    def __init__(self, target: nn.Module, key: str, cache: _ForwardCache) -> None:
        super().__init__()
        self.__dict__["target"] = target
        self.__dict__["cache"] = cache
        self.key = key

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        cache: _ForwardCache = self.__dict__["cache"]
        if not cache.active:
            return self.target(*args, **kwargs)
        entry_key = (self.key,) + tuple(cache.canonical(value) for value in args)
        entry_key += tuple((name, cache.canonical(v)) for name, v in sorted(kwargs.items()))
        if entry_key not in cache.entries:
            cache.keep.append((args, kwargs))
            cache.entries[entry_key] = self.target(*args, **kwargs)
        return cache.hand_out(cache.entries[entry_key])

    def extra_repr(self) -> str:
        return f"shared={self.key!r} ({type(self.target).__name__})"


class MultiHeadFCN(nn.Module):
    """One FCN trunk with a score head per task; forward returns {task: logits N x C_t x H x W}.

    Build it with `MultiHeadFCN.from_builder(lambda c: build_model(base, c), heads)` or through
    the registry name "multihead" (options `base`, `heads`). Shared trunk modules live in
    `trunk` (each once, so checkpoints and safetensors see each weight once); each head keeps
    its class-dependent layers and a `SharedModuleRef` where a trunk module used to be.
    """

    def __init__(self, models: Mapping[str, nn.Module], shared: list[str]) -> None:
        super().__init__()
        if not models:
            raise ModelOptionError(
                "MultiHeadFCN needs at least one head, e.g. heads={'semantic': 33}"
            )
        first = next(iter(models.values()))
        self.normalization: str = first.normalization
        self.in_channels: int = first.in_channels
        self.head_classes: dict[str, int] = {
            name: int(model.num_classes) for name, model in models.items()
        }
        self.num_classes: int = self.head_classes[primary_head_name(self.head_classes)]
        self.shared = list(shared)
        self._cache = _ForwardCache()
        self.trunk = nn.ModuleDict()
        for dotted in self.shared:
            target = first.get_submodule(dotted)
            key = dotted.replace(".", "__")
            self.trunk[key] = target
            for model in models.values():
                parent_name, _, child = dotted.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                parent._modules[child] = SharedModuleRef(target, key, self._cache)
        self.heads = nn.ModuleDict(dict(models))

    @classmethod
    def from_builder(cls, builder, heads: Mapping[str, int]) -> MultiHeadFCN:
        """Call `builder(num_classes)` per head and share every class-independent sub-module."""
        if not heads:
            raise ModelOptionError("heads must name at least one task, e.g. {'semantic': 33}")
        for name, classes in heads.items():
            if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
                raise ModelOptionError(
                    f"heads[{name!r}] must be a positive class count, got {classes!r}"
                )
        models = {name: builder(classes) for name, classes in heads.items()}
        names = list(models)
        shared: list[str] = []
        for index, other in enumerate(names[1:]):
            here = share_class_independent_modules(models[names[0]], models[other])
            shared = here if index == 0 else [name for name in shared if name in here]
        return cls(models, shared)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self._cache.reset(active=True)
        try:
            return {name: model(x) for name, model in self.heads.items()}
        finally:
            self._cache.reset(active=False)


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
    """`heads` maps task -> class count; without it a single "semantic" head of `num_classes`."""
    heads = dict(heads) if heads else {"semantic": num_classes}
    return MultiHeadFCN.from_builder(lambda classes: build_model(base, classes, **kwargs), heads)


# --- Multi-task loss and metrics ------------------------------------------------------------


def _check_same_keys(outputs: Mapping[str, Any], other: Mapping[str, Any], what: str) -> None:
    if set(outputs) != set(other):
        raise RecipeError(
            f"model heads {sorted(outputs)} do not match the {what} {sorted(other)}; "
            "configure the model's heads to match the dataset's label maps"
        )


def multitask_loss(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    losses: Mapping[str, nn.Module] | nn.Module,
    weights: Mapping[str, float] | None = None,
) -> Tensor:
    """Sum over heads of `losses[head](outputs[head], targets[head])` (optionally weighted).

    The paper trains the SIFT Flow net on the plain sum of its semantic and geometric losses;
    `losses` may be one module used for every head (e.g. one PixelCrossEntropy).
    """
    _check_same_keys(outputs, targets, "targets")
    total: Tensor | None = None
    for name, logits in outputs.items():
        criterion = losses if isinstance(losses, nn.Module) else losses[name]
        term = criterion(logits, targets[name])
        if weights is not None:
            term = term * weights.get(name, 1.0)
        total = term if total is None else total + term
    assert total is not None  # outputs is non-empty: _check_same_keys saw keys
    return total


class MultiHeadConfusion:
    """One `ConfusionMatrix` per head; `scores()` gives the paper's four numbers per head."""

    def __init__(
        self,
        head_classes: Mapping[str, int],
        ignore_index: int | None = 255,
        device: str | torch.device = "cpu",
    ) -> None:
        self.matrices = {
            name: ConfusionMatrix(classes, ignore_index, device)
            for name, classes in head_classes.items()
        }

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        """Add a batch of logits (N x C x H x W) or predictions (N x H x W) per head."""
        _check_same_keys(outputs, targets, "targets")
        for name, values in outputs.items():
            prediction = values.argmax(1) if values.dim() == targets[name].dim() + 1 else values
            self.matrices[name].update(prediction, targets[name])

    def reduce_(self) -> None:
        for matrix in self.matrices.values():
            matrix.reduce_()

    def scores(self) -> dict[str, SegmentationScores]:
        return {name: matrix.scores() for name, matrix in self.matrices.items()}
