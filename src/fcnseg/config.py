"""Typed run configuration: YAML recipes -> dataclasses, with `key.sub=value` overrides.

A recipe is layered, lowest priority first: the dataclass defaults, the training preset
(`train.preset`: "modern", "paper" or "release"), the YAML file, then the command-line
overrides. Every key is checked against the dataclasses, so a typo such as `train.lrr=0.1` is a
one-line error instead of a silently ignored setting, and every value is checked against the
field's type.

A YAML recipe may inherit from another (`base: other.yaml`, a path relative to the recipe's own
folder, as mmsegmentation's `_base_`): the base is loaded first (it may have a base of its own)
and the recipe's keys are merged into it, mappings key by key at every depth, anything else
(lists, numbers, strings) replaced. So a second training stage states only what it changes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from fcnseg import constants
from fcnseg.errors import FcnsegError, RecipeError
from fcnseg.paths import check_name


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses YAML anchors and aliases (`&a` / `*a`).

    Why: an alias expands to the whole anchored node, and nested aliases grow exponentially
    ("billion laughs"); under a free-form mapping such as `data.options` nothing would stop the
    expansion before memory runs out. Recipes never need them (`base:` covers reuse), so they are
    refused outright, in one line naming the file and the line.
    """

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RecipeError(
                f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed in "
                "recipes; write the value out, or share settings with 'base: other.yaml'"
            )
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise RecipeError(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&{event.anchor}, "
                f"*{event.anchor}) are not allowed in recipes; write the value out, or share "
                "settings with 'base: other.yaml'"
            )
        return super().compose_node(parent, index)


def safe_load_yaml(text: str) -> Any:
    """`yaml.safe_load` without anchors and aliases (see _NoAliasLoader)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["fixed", "poly", "cosine"]
Preset = Literal["modern", "paper", "release"]


@dataclass
class ModelConfig:
    """Which network to build (`fcnseg models` lists the names)."""

    name: str = "fcn8s_efficientnet_lite0"
    #: Load the encoder's ImageNet weights when they are installed (never downloads).
    pretrained: bool = True
    #: Extra keyword arguments for the model builder (e.g. `output_stride: 16`).
    options: dict[str, Any] = field(default_factory=dict)
    #: Initialise from these weights (.safetensors or .pt): every tensor with the same name and
    #: shape is copied (fine-tuning; the paper's FCN-16s-from-FCN-32s stage-wise training).
    init: str | None = None


@dataclass
class DataConfig:
    """Where the data lives and how training samples are augmented."""

    format: str = "synthetic"
    #: Dataset directory; a relative path that does not exist from the current directory is
    #: looked up in the data directory ($FCNSEG_DATA, else ../shared/data from the repo root).
    root: str | None = None
    train_split: str = "train"
    #: null trains without validation.
    val_split: str | None = "val"
    #: Extra keyword arguments for `build_dataset` (e.g. the synthetic set's size).
    options: dict[str, Any] = field(default_factory=dict)
    #: Overrides of `options` for the validation/test splits (e.g. fewer synthetic images).
    val_options: dict[str, Any] = field(default_factory=dict)
    #: Random crop (height, width) for training; null trains on whole images (batch 1 advised).
    crop_size: list[int] | None = None
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    jitter: float = 0.0
    #: Validation resize (height, width); null validates at full resolution.
    val_size: list[int] | None = None
    num_workers: int = 0
    #: null, a list with one weight per class, or "median_frequency" (computed on train split).
    class_weights: list[float] | str | None = None


@dataclass
class TrainConfig:
    """Optimisation. `preset` fills the fields the recipe leaves unset (see `PRESETS`)."""

    preset: Preset = "modern"
    optimizer: Optimizer = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    #: Learning-rate multiplier of the encoder relative to the head (pretrained encoders: 0.1).
    encoder_lr_mult: float = 1.0
    schedule: Schedule = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    epochs: int = 10
    #: Stop after this many optimiser steps (null: run all epochs).
    max_steps: int | None = None
    batch_size: int = 8
    #: Gradient accumulation: optimiser steps happen every `accumulate` batches.
    accumulate: int = 1
    #: "mean" over labelled pixels, or "sum" per image as the paper's Caffe nets.
    loss_normalization: Literal["sum", "mean"] = "mean"
    #: Learning-rate and weight-decay multipliers of biases (Caffe's per-parameter `lr_mult` /
    #: `decay_mult`; the release nets train biases at lr x 2 without weight decay).
    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    #: Whose biases take those multipliers: "all", or "score" (only the score layers, as in the
    #: release's AlexNet net).
    bias_mult_scope: Literal["all", "score"] = "all"
    #: Weight of a soft-Jaccard (mean IoU) term added to the cross-entropy (0: plain paper loss).
    jaccard_weight: float = 0.0
    #: Knowledge distillation: a trained weights file (same classes) whose softened per-pixel
    #: predictions the model also learns from (see losses.DistillationLoss); null: none.
    distill_from: str | None = None
    #: Weight of the distillation term, and the softmax temperature of teacher and student.
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    #: Mixed precision: bf16 autocast on CPU, fp16 autocast + GradScaler on CUDA.
    amp: bool = False
    #: Validate every N epochs (0: only at the end).
    val_every: int = 1
    #: Also write `last.pt` every N optimiser steps (0: only at epoch ends).
    checkpoint_every: int = 0
    #: Time budget: stop cleanly (after writing a checkpoint) once exceeded.
    max_minutes: float | None = None
    seed: int = 0
    #: Deterministic kernels (bit-exact resume on CPU); slower on GPU.
    deterministic: bool = False
    device: str = "auto"
    log_every: int = 10
    #: Show tqdm progress bars (off in tests and when stderr is not a terminal if you like).
    progress: bool = True


@dataclass
class EvalConfig:
    """How validation/evaluation computes logits (see `fcnseg.inference.predict_logits`)."""

    mode: str = "whole"
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1


@dataclass
class Config:
    """A whole run: `name` names the run directory `runs/<name>-<timestamp>`."""

    name: str = "run"
    out_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def eval_options(data: DataConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Dataset options of the validation/test splits: `options` updated by `val_options`.

    Takes the typed `DataConfig` or the `data` mapping stored with a checkpoint/weights file, so
    that training's validation and `fcnseg eval` build the same split the same way.
    """
    if isinstance(data, DataConfig):
        return {**data.options, **data.val_options}
    return {**(data.get("options") or {}), **(data.get("val_options") or {})}


def paper_stage(model_name: str, model_options: Mapping[str, Any] | None = None) -> str:
    """The paper training stage ("fcn32s", "fcn16s", "fcn8s") whose solver `model_name` uses.

    Read from the registry's metadata (`ModelInfo.paper_stage`), never from the name's spelling.
    Wrappers (fusion, multi-head) have no stage of their own and take their `base` model's. A
    model with neither is a one-line error: the paper's learning rates only make sense for the
    nets they were tuned for, so the recipe must then set `train.lr` itself.
    """
    from fcnseg.models.factory import model_info

    info = model_info(model_name)
    if info.paper_stage is not None:
        return info.paper_stage
    base = (model_options or {}).get("base", info.defaults.get("base"))
    if isinstance(base, str) and base != model_name:
        return paper_stage(base)
    raise RecipeError(
        f"train.preset: model {model_name!r} has no paper training stage; use "
        "train.preset=modern or a paper/FCN model"
    )


def release_solver(model_name: str, model_options: Mapping[str, Any] | None = None) -> str:
    """The release net whose solver.prototxt `model_name` trains with (constants.RELEASE_SOLVERS).

    Read from the registry (`ModelInfo.release_solver`); a wrapper's entry names its release
    net with the base model's paper stage ("siftflow-{stage}" + fcn16s -> "siftflow-fcn16s").
    A model the release has no solver for is a one-line error, not a silent fallback.
    """
    from fcnseg.models.factory import model_info

    info = model_info(model_name)
    name = info.release_solver
    if name is not None and "{stage}" in name:
        name = name.format(stage=paper_stage(model_name, model_options))
    if name is None or name not in constants.RELEASE_SOLVERS:
        raise RecipeError(
            f"train.preset=release: the authors' release has no solver for model {model_name!r}"
            + (f" ({name})" if name else "")
            + f"; its nets are {', '.join(constants.RELEASE_SOLVERS)}. Use train.preset=paper "
            "or modern"
        )
    return name


def preset_values(
    preset: str, model_name: str, model_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The `train.*` values a preset sets (lower priority than the recipe's own values).

    "paper" follows the paper's text (section 4.1: batches of 20 images, momentum 0.99, the
    stage's fixed rate); "release" reproduces the release net's solver.prototxt and loss exactly
    (one image per iteration, `iter_size` as gradient accumulation, normalised or summed loss,
    biases at lr x 2 without decay); "modern" sets nothing.
    """
    if preset == "release":
        solver = constants.RELEASE_SOLVERS[release_solver(model_name, model_options)]
        return {
            "optimizer": "sgd",
            "momentum": solver.momentum,
            "weight_decay": solver.weight_decay,
            "lr": solver.base_lr,
            "encoder_lr_mult": 1.0,
            "schedule": "fixed",
            "warmup_steps": 0,
            "batch_size": 1,
            "accumulate": solver.iter_size,
            "loss_normalization": "mean" if solver.normalize else "sum",
            "bias_lr_mult": constants.RELEASE_BIAS_LR_MULT,
            "bias_decay_mult": constants.RELEASE_BIAS_DECAY_MULT,
            "bias_mult_scope": solver.bias_mult_layers,
        }
    if preset == "paper":
        return {
            "optimizer": "sgd",
            "momentum": constants.PAPER_MOMENTUM,
            "weight_decay": constants.PAPER_WEIGHT_DECAY,
            "lr": constants.PAPER_LR[paper_stage(model_name, model_options)],
            "schedule": "fixed",
            "warmup_steps": 0,
            "batch_size": constants.PAPER_BATCH_SIZE,
            "accumulate": constants.PAPER_EFFECTIVE_BATCH,
            "loss_normalization": "sum",
        }
    if preset == "modern":
        return {}
    raise RecipeError(
        f"train.preset: unknown preset {preset!r}; use 'modern', 'paper' or 'release'"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.lr=0.01"` -> (["train", "lr"], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError(f"override {text!r}: expected key.sub=value, e.g. train.lr=0.01")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r}: empty key; write e.g. train.epochs=5")
    try:
        value = safe_load_yaml(raw) if raw.strip() else None
    except RecipeError as error:
        raise RecipeError(f"override {text!r}: {error}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as error:
                errors.append(str(error))
        raise RecipeError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list like [1, 2], got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot ("1e-4", a usual way to write a learning
            # rate) as strings; Python's float() reads them as the user meant.
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise RecipeError(
            f"unknown config key {where}{unknown[0]}; valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a `Config` from a nested dict plus `key.sub=value` overrides (see module doc)."""
    merged = dict(raw or {})
    for text in overrides:
        # An override replaces the value at its key (a mapping value replaces a mapping, so
        # `data.options={}` clears the recipe's options).
        path, value = parse_override(text)
        cursor = merged = _merge(merged, {})
        for part in path[:-1]:
            child = cursor.get(part)
            cursor[part] = dict(child) if isinstance(child, dict) else {}
            cursor = cursor[part]
        cursor[path[-1]] = value
    train_raw = merged.get("train") or {}
    model_raw = merged.get("model") or {}
    if not isinstance(train_raw, dict) or not isinstance(model_raw, dict):
        raise RecipeError("config: 'train' and 'model' must be mappings of keys")
    preset = train_raw.get("preset", TrainConfig.preset)
    model_name = model_raw.get("name", ModelConfig.name)
    model_options = model_raw.get("options") if isinstance(model_raw.get("options"), dict) else {}
    preset_train = preset_values(str(preset), str(model_name), model_options)
    merged = _merge({"train": preset_train}, merged)
    config = _build(Config, merged, "")
    validate(config)
    return config


#: Recipe key naming the recipe it inherits from (a path relative to the recipe's folder).
BASE_KEY = "base"


def _read_yaml(path: Path) -> dict[str, Any]:
    """One recipe file as a mapping; syntax errors are one line naming the file."""
    try:
        raw = safe_load_yaml(path.read_text()) or {}
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}:{where} invalid YAML; fix the syntax") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file; pass a YAML recipe") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, e.g. 'train: {{}}'")
    return raw


def load_recipe(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file as a nested dict with its `base` chain resolved (see the module doc).

    Why a dict and not a Config: a base is usually incomplete on its own (no model, say), and
    presets and validation must see the merged recipe, exactly as if it were one file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found; pass a YAML recipe path")
    here = path.resolve()
    if here in _chain:
        names = " -> ".join(str(link) for link in (*_chain, here))
        raise RecipeError(f"recipe inheritance cycle: {names}; remove one of these 'base' keys")
    raw = _read_yaml(path)
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise RecipeError(f"{path}: base: expected a recipe file name, e.g. 'base: other.yaml'")
    base_path = path.parent / base
    if not base_path.is_file():
        raise FileNotFoundError(
            f"{path}: base {base}: file not found ({base_path}); the path is relative to the "
            "recipe's own folder"
        )
    return _merge(load_recipe(base_path, (*_chain, here)), raw)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe (and its bases) or none (defaults), apply overrides; errors are one
    line."""
    raw = load_recipe(path) if path is not None else {}
    try:
        return config_from_dict(raw, overrides)
    except FcnsegError as error:
        if path is not None:
            raise type(error)(f"{path}: {error}") from None
        raise


def validate(config: Config) -> None:
    """Range checks that types alone cannot express."""
    train = config.train
    positive = {
        "train.batch_size": train.batch_size,
        "train.accumulate": train.accumulate,
        "train.epochs": train.epochs,
        "eval.batch_size": config.eval.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise RecipeError(f"{key}: must be >= 1, got {value}")
    if train.lr <= 0:
        raise RecipeError(f"train.lr: must be > 0, got {train.lr}")
    for key, size in (
        ("data.crop_size", config.data.crop_size),
        ("data.val_size", config.data.val_size),
    ):
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise RecipeError(f"{key}: expected [height, width] with positive values, got {size}")
    if len(config.data.scale_range) != 2 or config.data.scale_range[0] > config.data.scale_range[1]:
        raise RecipeError(f"data.scale_range: expected [low, high], got {config.data.scale_range}")
    weights = config.data.class_weights
    if isinstance(weights, str) and weights != "median_frequency":
        raise RecipeError(
            f"data.class_weights: {weights!r}; use a list of numbers or 'median_frequency'"
        )
    check_name(config.name, "name")
    if ".." in Path(config.out_root).parts:
        raise RecipeError(
            f"out_root: {config.out_root!r} climbs out with '..'; name the folder directly "
            "(or pass --out)"
        )
    check_free_form_options(config)


def dataset_options_accepted(data_format: str) -> set[str] | None:
    """Option names the dataset class of `data_format` takes (None: it takes any, **kwargs).

    Read from the class's constructor signature, less what build_dataset passes itself.
    """
    import inspect

    from fcnseg.data.datasets.registry import get_dataset_class

    parameters = inspect.signature(get_dataset_class(data_format).__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} - {"self", "root", "split", "transform"}


def inference_options_accepted() -> set[str]:
    """Keyword options of fcnseg.inference.predict_logits (what `eval.options` may hold)."""
    import inspect

    from fcnseg.inference import predict_logits

    parameters = inspect.signature(predict_logits).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}


def _check_keys(options: Mapping[str, Any], accepted: set[str] | None, field: str, what: str):
    if accepted is None:
        return
    for key in options:
        if key not in accepted:
            listed = ", ".join(sorted(accepted)) or "none"
            raise RecipeError(
                f"{field}: unknown key {key!r} for {what}; it accepts {listed} (check the key, "
                f"or clear it with {field}={{}})"
            )


def check_free_form_options(config: Config) -> None:
    """Every key of the free-form mappings checked against what its builder accepts.

    `data.options` / `data.val_options` go to the dataset class of `data.format`, `model.options`
    to the model builder (wrappers: plus their base model's), `eval.options` to predict_logits.
    Why here: an unknown key used to surface as a TypeError traceback from the builder, after the
    run directory was made (the natural mistake: reusing configs/demo.yaml's synthetic options
    with data.format=camvid). Checked by signature, so nothing is built.
    """
    from fcnseg.models.factory import check_model_options

    accepted = dataset_options_accepted(config.data.format)
    what = f"dataset format {config.data.format!r}"
    _check_keys(config.data.options, accepted, "data.options", what)
    _check_keys(config.data.val_options, accepted, "data.val_options", what)
    _check_keys(config.eval.options, inference_options_accepted(), "eval.options", "inference")
    check_model_options(config.model.name, config.model.options, "model.options")
