"""The recipe's schema: the dataclasses a run is described by, and the range checks types cannot
express.

Why a module of its own: these are the names the engine, the CLI and the weights metadata read,
and they need nothing but the standard library; the YAML reading and the key=value overrides
that fill them live in `fcnseg.config.loading`, and what a recipe asks of the model, dataset and
inference tables (presets, free-form option keys) is checked by the engine's recipe step
(`fcnseg.engine.recipe`), which knows those tables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fcnseg.constants import PSPNET_AUX_WEIGHT
from fcnseg.errors import RecipeError
from fcnseg.paths import check_name

#: `dataclasses.field` metadata key: False marks a field that is not a recipe key (never read
#: from YAML, never written by `to_dict`).
RECIPE_KEY = "recipe_key"

#: Names `data.class_weights` accepts for weights computed from the training set's pixels.
CLASS_WEIGHT_RULES: tuple[str, ...] = ("median_frequency", "enet")

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["fixed", "poly", "cosine"]
ScheduleSpan = Literal["steps", "budget"]
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
    #: shape is copied (fine-tuning; the paper's FCN-16s-from-FCN-32s stage-wise training),
    #: except the class-score layers when the classes differ (re-initialised; the mapping is
    #: printed). A weights file also supplies model.name / model.options the recipe leaves unset.
    init: str | None = None
    #: Image channels (bands) the model takes; null: the model's own (3). Another count adapts
    #: the encoder's first layer (docs: "Any number of bands") and normalises per channel.
    in_channels: int | None = None
    #: Mean-field CRF layers on the model's scores, trained with it (CRF-as-RNN): null for none,
    #: else a mapping of `fcnseg.models.meanfield.MeanFieldOptions` ({iterations: 5, window: 7,
    #: ...}; {} takes every default). Stored with the weights as the model option "crf".
    crf: dict[str, Any] | None = None


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
    #: null, a list with one weight per class, or a rule computed on the train split:
    #: "median_frequency" (SegNet/FCN), "enet" (ENet's 1 / ln(1.02 + p_class)).
    class_weights: list[float] | str | None = None
    #: Source class name -> target class name or "ignore": rename, merge or drop classes of
    #: any format (docs/data_formats.md).
    class_map: dict[str, str] = field(default_factory=dict)
    #: "module.path:factory": a torchvision.transforms.v2 or albumentations pipeline the factory
    #: returns replaces the built-in augmentations (null: the built-in ones).
    augment: str | None = None


@dataclass
class TrainConfig:
    """Optimisation. `preset` fills the fields the recipe leaves unset (engine/recipe.py)."""

    preset: Preset = "modern"
    optimizer: Optimizer = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    #: Learning-rate multiplier of the encoder relative to the head (pretrained encoders: 0.1).
    encoder_lr_mult: float = 1.0
    schedule: Schedule = "poly"
    #: What the decaying schedule runs over: "steps" (to `epochs` x batches or `max_steps`, a
    #: function of the step alone, so resume is bit-exact) or "budget" (also the share of
    #: `max_minutes` spent, whichever is further along), so that a run capped by its time budget
    #: still ends at a decayed rate however loaded the machine is; the rate then depends on the
    #: clock and resume is no longer bit-exact.
    schedule_span: ScheduleSpan = "steps"
    poly_power: float = 0.9
    warmup_steps: int = 0
    epochs: int = 10
    #: Stop after this many optimiser steps (null: run all epochs).
    max_steps: int | None = None
    batch_size: int = 8
    #: Gradient accumulation: optimiser steps happen every `accumulate` batches.
    accumulate: int = 1
    #: "mean" over labelled pixels (weighted: divided by the sum of their class weights),
    #: "sum" per image as the paper's Caffe nets, or "pixels": the weighted sum divided by the
    #: number of labelled pixels (caffe-segnet's SoftmaxWithLoss with class weighting).
    loss_normalization: Literal["sum", "mean", "pixels"] = "mean"
    #: Learning-rate and weight-decay multipliers of biases (Caffe's per-parameter `lr_mult` /
    #: `decay_mult`; the release nets train biases at lr x 2 without weight decay).
    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    #: Whose biases take those multipliers: "all", "score" (only the score layers, as in the
    #: release's AlexNet net) or "conv" (convolutions' biases, not BN shifts: the SegNet release).
    bias_mult_scope: Literal["all", "score", "conv"] = "all"
    #: Batch-norm statistics the validations (and so the saved weights) use: "running" (the
    #: layers' running averages) or "recompute" (before each validation, the averages over
    #: `bn_statistics_batches` batches of the training set with the weights frozen, as the
    #: SegNet release's compute_bn_statistics.py; engine/bn_statistics.py says why).
    bn_statistics: Literal["running", "recompute"] = "running"
    #: Batches of `batch_size` training images for "recompute" (null: the whole training set).
    bn_statistics_batches: int | None = None
    #: Learning-rate multiplier of the class-scoring layers the model declares
    #: (`class_score_layers`: DeepLab's fc8, whose Caffe `lr_mult` is 10, its bias 10 x
    #: `bias_lr_mult` = 20); 1: every layer at the base rate.
    score_lr_mult: float = 1.0
    #: Weight of a soft-Jaccard (mean IoU) term added to the cross-entropy (0: plain paper loss).
    jaccard_weight: float = 0.0
    #: U-Net's border-weight map (Ronneberger et al. 2015, eq. 2): w0 of the term added to each
    #: pixel's class weight in the gaps between objects (the paper's 10; 0: off), and its sigma
    #: in pixels (the paper's 5). Objects: connected components of every class but 0
    #: (losses.border_weight_map).
    border_weight: float = 0.0
    border_sigma: float = 5.0
    #: Weight of the loss of a head's auxiliary scores (deep supervision; PSPNet's stride-16
    #: head, paper: 0.4); models without an auxiliary head ignore it.
    aux_weight: float = PSPNET_AUX_WEIGHT
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


@dataclass(frozen=True)
class RecipeOrigin:
    """Where a `Config` came from and what the engine's recipe step still owes it.

    Why it travels with the config: the preset fills only the `train` keys the recipe left
    unset, which the dataclass alone cannot tell once it is built, and the recipe step's errors
    name the recipe file as `load_config`'s do. Not a recipe key: never read, never saved.
    """

    #: The recipe file `load_config` read (None: built from a dict or by hand).
    path: str | None = None
    #: `train` keys the recipe did not set; `train.preset` fills those it has values for.
    unset_train_keys: frozenset[str] = frozenset()
    #: `model` keys the recipe did not set; a `model.init` weights file fills name and options
    #: from its own metadata (engine/transfer.adopt_init_model).
    unset_model_keys: frozenset[str] = frozenset()


@dataclass
class Config:
    """A whole run: `name` names the run directory `runs/<name>-<timestamp>`."""

    name: str = "run"
    out_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    origin: RecipeOrigin = field(
        default_factory=RecipeOrigin, compare=False, repr=False, metadata={RECIPE_KEY: False}
    )

    def to_dict(self) -> dict[str, Any]:
        """The recipe keys as a nested dict (what run directories and checkpoints store)."""
        return {
            item.name: _plain(getattr(self, item.name))
            for item in dataclasses.fields(self)
            if item.metadata.get(RECIPE_KEY, True)
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def eval_options(data: DataConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Dataset options of the validation/test splits: `options` updated by `val_options`, and
    the recipe's `class_map` when it has one (build_dataset applies it).

    Takes the typed `DataConfig` or the `data` mapping stored with a checkpoint/weights file, so
    that training's validation and `fcnseg eval` build the same split the same way.
    """
    if isinstance(data, DataConfig):
        options = {**data.options, **data.val_options}
        class_map = data.class_map
    else:
        options = {**(data.get("options") or {}), **(data.get("val_options") or {})}
        class_map = data.get("class_map")
    return {**options, "class_map": dict(class_map)} if class_map else options


#: Recipe number -> (low, high, low included): the sane range of each float key. Why bounds and
#: not just "finite": a learning rate of 1e30 is finite and still turns every weight into NaN
#: within a step, and the run used to end "completed" with those weights saved. The bounds are
#: wide (no published recipe comes near them) and every high bound is included.
NUMBER_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "train.lr": (0.0, 10.0, False),
    "train.momentum": (0.0, 1.0, True),
    "train.weight_decay": (0.0, 1.0, True),
    "train.encoder_lr_mult": (0.0, 100.0, True),
    "train.poly_power": (0.0, 100.0, True),
    "train.bias_lr_mult": (0.0, 100.0, True),
    "train.bias_decay_mult": (0.0, 100.0, True),
    "train.score_lr_mult": (0.0, 1000.0, True),
    "train.jaccard_weight": (0.0, 1000.0, True),
    "train.border_weight": (0.0, 1000.0, True),
    "train.border_sigma": (0.0, 1000.0, False),
    "train.aux_weight": (0.0, 1000.0, True),
    "train.distill_weight": (0.0, 1000.0, True),
    "train.distill_temperature": (0.0, 100.0, False),
    "train.max_minutes": (0.0, 1e7, True),
    "data.jitter": (0.0, 0.99, True),
}


def _number_at(config: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def check_numbers(config: Config) -> None:
    """Every float of the recipe finite and inside its NUMBER_BOUNDS range, and the lists of
    numbers (scale range, class weights) finite and positive, before anything is built."""
    for key, (low, high, low_included) in NUMBER_BOUNDS.items():
        value = _number_at(config, key)
        if value is None:
            continue
        above_low = value >= low if low_included else value > low
        if not (math.isfinite(value) and above_low and value <= high):
            opening = "[" if low_included else "("
            raise RecipeError(
                f"{key}: {value} is outside {opening}{low:g}, {high:g}]; "
                f"set a finite value in that range (e.g. {key}={_default_of(key)})"
            )
    scales = config.data.scale_range
    if not all(math.isfinite(v) and v > 0 for v in scales):
        raise RecipeError(f"data.scale_range: {scales} must be finite and > 0, e.g. [0.5, 2.0]")
    weights = config.data.class_weights
    if isinstance(weights, list) and not (
        all(math.isfinite(v) and v >= 0 for v in weights) and any(v > 0 for v in weights)
    ):
        raise RecipeError(
            f"data.class_weights: {weights} must be finite, >= 0 and not all 0; fix the list"
        )


def _default_of(key: str) -> Any:
    section, name = key.split(".")
    owner = {"train": TrainConfig, "data": DataConfig}[section]
    value = {item.name: item.default for item in dataclasses.fields(owner)}[name]
    return 60 if value is None else value


def validate(config: Config) -> None:
    """Range checks that types alone cannot express (what the recipe asks of the model, dataset
    and inference tables is the engine's recipe step's to check)."""
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
    check_numbers(config)
    for key, size in (
        ("data.crop_size", config.data.crop_size),
        ("data.val_size", config.data.val_size),
    ):
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise RecipeError(f"{key}: expected [height, width] with positive values, got {size}")
    if len(config.data.scale_range) != 2 or config.data.scale_range[0] > config.data.scale_range[1]:
        raise RecipeError(f"data.scale_range: expected [low, high], got {config.data.scale_range}")
    weights = config.data.class_weights
    if isinstance(weights, str) and weights not in CLASS_WEIGHT_RULES:
        raise RecipeError(
            f"data.class_weights: {weights!r}; use a list of numbers or one of "
            f"{', '.join(CLASS_WEIGHT_RULES)}"
        )
    if train.bn_statistics_batches is not None and train.bn_statistics_batches < 1:
        raise RecipeError(
            f"train.bn_statistics_batches: must be >= 1 or null (the whole training set), "
            f"got {train.bn_statistics_batches}"
        )
    if train.schedule_span == "budget" and train.max_minutes is None:
        raise RecipeError(
            "train.schedule_span: 'budget' needs a time budget; set train.max_minutes=N "
            "or train.schedule_span=steps"
        )
    check_name(config.name, "name")
    if ".." in Path(config.out_root).parts:
        raise RecipeError(
            f"out_root: {config.out_root!r} climbs out with '..'; name the folder directly "
            "(or pass --out)"
        )
