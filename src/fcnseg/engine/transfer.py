"""New classes from a trained model: what `model.init` copies, re-initialises and skips.

Why a module of its own: fine-tuning a trained net on a data set with other classes is the FCN
paper's own transfer recipe (section 3 and 4.1: keep the net, discard the classifier, append and
train a fresh class-scoring layer). Here the whole encoder and decoder are copied bit-exactly
and only the layers a head declares as class-shaped (`class_score_layers`: 1x1 class scorers,
class-wide upsampling deconvolutions) are left as a freshly built model has them whenever the
classes differ, so a 3-class problem starts from everything an 11-class model learned. The
mapping is printed, and a weights file supplies the model name and options the recipe leaves
unset, so `model.init=weights/...` plus the new data is a whole fine-tuning recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fcnseg.config import Config
from fcnseg.errors import RecipeError

#: Model keys a weights file's metadata can supply (`model.pretrained` defaults to False for
#: the file's own model: every encoder tensor is overwritten, so ImageNet weights would be read
#: for nothing, and encoders without offline ImageNet weights would refuse to build).
ADOPTED_MODEL_KEYS: frozenset[str] = frozenset({"name", "options", "pretrained"})


@dataclass
class InitMapping:
    """Where each tensor of a `model.init` source went (tensor names, sorted)."""

    copied: list[str] = field(default_factory=list)
    #: Class-score tensors of the model left as built (classes differ, or their shape does).
    reinitialised: list[str] = field(default_factory=list)
    #: Source tensors used nowhere, with why ("not in this model", "shape A here, B in file").
    skipped: dict[str, str] = field(default_factory=dict)
    #: Model tensors the source lacks (new layers, e.g. FCN-16s's skip from FCN-32s).
    kept: list[str] = field(default_factory=list)
    #: Skipped tensors that are not class-shaped: the body did not fully transfer.
    body_skipped: list[str] = field(default_factory=list)


def class_score_layers(model: nn.Module) -> tuple[str, ...]:
    """Full module names of every layer a head declares as class-scoring (`class_score_layers`
    on any submodule: SkipFCN's and FPN-lite's heads, PaperFCN; wrappers inherit theirs)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(type(module), "class_score_layers", None)
        if declared is None:
            continue
        for name in module.class_score_layers:  # type: ignore[attr-defined]
            names.add(f"{prefix}.{name}" if prefix else name)
    return tuple(sorted(names))


def is_class_scored(key: str, layers: Sequence[str]) -> bool:
    """Whether tensor `key` belongs to one of the module names `layers`."""
    return any(key.startswith(f"{layer}.") for layer in layers)


def plan_transfer(
    own: Mapping[str, Tensor],
    source: Mapping[str, Tensor],
    score_layers: Sequence[str],
    same_classes: bool | None,
) -> InitMapping:
    """Which tensors of `source` to copy into a model whose state dict is `own`.

    `same_classes`: True copies class-score tensors of equal shape (fine-tuning on the same
    classes, the paper's stage-wise FCN-16s from FCN-32s); False re-initialises them; None
    (the source names no classes) decides by shape alone, as before classes were known.
    """
    mapping = InitMapping()
    for key in sorted(source):
        scored = is_class_scored(key, score_layers)
        if key not in own:
            mapping.skipped[key] = "not in this model"
        elif own[key].shape != source[key].shape:
            here, there = tuple(own[key].shape), tuple(source[key].shape)
            mapping.skipped[key] = f"shape {here} here, {there} in the file"
        elif scored and same_classes is False:
            mapping.skipped[key] = "class-score layer, other classes"
        else:
            mapping.copied.append(key)
            continue
        if not scored:
            mapping.body_skipped.append(key)
    copied = set(mapping.copied)
    for key in sorted(own):
        if key in copied:
            continue
        if is_class_scored(key, score_layers):
            mapping.reinitialised.append(key)
        elif key not in source:
            mapping.kept.append(key)
    return mapping


def adopt_init_model(config: Config) -> Config:
    """`config` with the model name and options of its `model.init` weights file filled in
    where the recipe left them unset (recipe values win; options merge key by key when the
    model names agree). A checkpoint (.pt) or a recipe that sets all three is returned as is.
    """
    init = config.model.init
    unset = config.origin.unset_model_keys & ADOPTED_MODEL_KEYS
    if not init or not unset or Path(init).suffix != ".safetensors" or not Path(init).is_file():
        return config
    from fcnseg.engine.checkpoint import load_weights

    _, meta = load_weights(init)
    model = dataclasses.replace(config.model, options=dict(config.model.options))
    if "name" in unset:
        model.name = meta.model
    if model.name == meta.model:
        model.options = {**dict(meta.model_options), **model.options}
        if "pretrained" in unset:
            model.pretrained = False  # the file holds the whole encoder
    adopted = dataclasses.replace(config, model=model)
    adopted.origin = dataclasses.replace(config.origin, unset_model_keys=frozenset())
    return adopted


def recipe_differences(config: Config, meta: Mapping[str, Any]) -> list[str]:
    """`model.name=...` / `model.options.K=...` where the recipe differs from the weights."""
    if config.model.name != meta.get("model"):
        return [f"model.name={config.model.name} (the weights' is {meta.get('model')})"]
    theirs = dict(meta.get("model_options") or {})
    ours = config.model.options
    return [
        f"model.options.{key}={ours.get(key)!r} (the weights' is {theirs.get(key)!r})"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]


def check_body_transferred(mapping: InitMapping, source: str, differences: Sequence[str]) -> None:
    """Refuse in one line a recipe option that leaves part of the trained body uncopied.

    Options that change no tensor (e.g. input_scale) are allowed; one that does (a head width,
    another encoder) would silently train a half-initialised net, so the recipe must drop it
    (the weights' value is then taken) or say model.init=null.
    """
    if mapping.body_skipped and differences:
        first = mapping.body_skipped[0]
        raise RecipeError(
            f"model.init {source}: {differences[0]} leaves {len(mapping.body_skipped)} trained "
            f"tensors uncopied (e.g. {first}: {mapping.skipped[first]}); remove it from the "
            "recipe to take the weights' value"
        )


def module_groups(keys: Sequence[str], split: Sequence[str] = ()) -> str:
    """`keys` counted by module: "backbone.body (288), head.score_fr.block (6), ...".

    Grouped by their first two name components, or three where that group also holds a layer
    of `split` (so a copied 3x3 block and its re-initialised scorer are not named alike).
    """
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        group = ".".join(parts[:2])
        if any(layer.startswith(f"{group}.") for layer in split):
            group = ".".join(parts[:3])
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(f"{group} ({count})" for group, count in counts.items()) or "none"


def layer_names(keys: Sequence[str]) -> list[str]:
    """Tensor names without their parameter suffix, once each: ["head.score_fr.score", ...]."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))


def describe_mapping(
    mapping: InitMapping, source: str, classes: tuple[int | None, int], notes: Sequence[str]
) -> str:
    """The printed mapping: one header line, then copied / re-initialised / skipped / kept."""
    theirs, ours = classes
    counts = f"{theirs if theirs is not None else '?'} classes -> {ours}"
    skipped = [
        f"{key} ({why})" for key, why in mapping.skipped.items() if key in mapping.body_skipped
    ]
    reinitialised = layer_names(mapping.reinitialised)
    lines = [
        f"model.init {source} ({counts}):",
        f"  copied {len(mapping.copied)} tensors bit-exactly: "
        f"{module_groups(mapping.copied, reinitialised)}",
        f"  re-initialised (class-score layers): {', '.join(reinitialised) or 'none'}",
        f"  skipped (not class-scored): {', '.join(skipped) or 'none'}",
        f"  kept as built (not in the file): {', '.join(layer_names(mapping.kept)) or 'none'}",
    ]
    lines += [f"  note: {note}" for note in notes]
    return "\n".join(lines)


def wrapped_names(target: nn.Module, tensors: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """`tensors` renamed for a wrapper model (`wrapped_prefix`, e.g. MeanFieldCRF's "base.")
    when they come from the bare model: a plain model's weights initialise its CRF-wrapped
    version (the mean-field layers are then kept as built)."""
    prefix = getattr(target, "wrapped_prefix", "")
    if not prefix or any(key.startswith(prefix) for key in tensors):
        return tensors
    return {f"{prefix}{key}": value for key, value in tensors.items()}


def initialise_with_mapping(
    model: nn.Module,
    source: str,
    *,
    classes: Sequence[str] | None = None,
    config: Config | None = None,
) -> InitMapping:
    """Copy `source` (weights or checkpoint) into `model` as `plan_transfer` says and print
    the mapping; `classes` are the training set's (None: decide score layers by shape) and
    `config` the recipe whose model options are checked against the weights' metadata."""
    from fcnseg.engine import distributed
    from fcnseg.engine.checkpoint import load_checkpoint, load_weights, unwrap

    meta: Mapping[str, Any] = {}
    if Path(source).suffix == ".safetensors":
        tensors, meta = load_weights(source)
    else:
        tensors = load_checkpoint(source)["model"]
    theirs = meta.get("classes")
    same_classes = None
    if theirs is not None and classes is not None:
        same_classes = tuple(theirs) == tuple(classes)
    target = unwrap(model)
    own = target.state_dict()
    tensors = wrapped_names(target, tensors)
    mapping = plan_transfer(own, tensors, class_score_layers(target), same_classes)
    if not mapping.copied:
        raise RecipeError(f"model.init {source}: no tensor matches this model; check model.name")
    differences = recipe_differences(config, meta) if config is not None and meta else []
    check_body_transferred(mapping, source, differences)
    target.load_state_dict({key: tensors[key] for key in mapping.copied}, strict=False)
    if distributed.is_main():
        notes = [f"{text}: no tensor changes" for text in differences]
        counts = (len(theirs) if theirs is not None else None, int(target.num_classes))
        print(describe_mapping(mapping, source, counts, notes), flush=True)
    return mapping
