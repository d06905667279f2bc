"""Everything a training run needs before its first step, built from the recipe.

Datasets (with the transforms that need the model's normalisation), the model (optionally
initialised from an earlier stage), the loss, the optimiser with its encoder/head learning-rate
groups (engine/optim.py), and the metadata its weights file will carry. All of it is built, and
every recipe error raised, before the run directory exists, so a bad recipe writes nothing.

The order is part of the behaviour: the model's initial weights are drawn from the global RNG
streams right after seeding and building the datasets, so changing the order changes the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fcnseg.config import Config, eval_options
from fcnseg.data.normalization import Normalization
from fcnseg.data.roots import resolve_data_root
from fcnseg.engine.checkpoint import unwrap, weights_metadata
from fcnseg.engine.optim import build_optimizer
from fcnseg.errors import RecipeError
from fcnseg.losses import (
    BorderWeightedCrossEntropy,
    DistillationLoss,
    PixelCrossEntropy,
    SoftJaccardLoss,
    WeightedSumLoss,
)
from fcnseg.models import build_model, check_model_contract
from fcnseg.models.protocol import primary_head_name

if TYPE_CHECKING:
    from fcnseg.engine.transfer import InitMapping


@dataclass
class TrainingSetup:
    """What `prepare_training` builds: the objects the loop runs on."""

    model: nn.Module
    train_set: Any
    val_set: Any | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    #: The weights-file description (see checkpoint.weights_metadata).
    metadata: dict[str, Any]
    #: The teacher's term when the recipe distils (`train.distill_from`), else None.
    distillation: DistillationLoss | None = None

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)


def prepare_training(
    config: Config,
    device: torch.device,
    *,
    model: nn.Module | None = None,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
    initialise: bool = True,
) -> TrainingSetup:
    """Datasets, model, loss and optimiser of `config` (objects given replace those it names).

    `initialise=False` skips `model.init` (a resumed run loads its own checkpoint instead).
    """
    if train_set is None:
        train_set, built_val = build_datasets(config)
        val_set = built_val if val_set is None else val_set
    num_classes = int(train_set.num_classes)  # type: ignore[attr-defined]
    if model is None:
        model = build_training_model(config, num_classes)
    else:
        check_model_contract(model, "the model passed to train()")
    numbers = input_numbers(config, unwrap(model), train_set, val_set)
    attach_transforms(config, numbers, train_set, val_set)
    if config.model.init and initialise:
        initialise_from(model, config.model.init, config=config, classes=train_set.classes)
    model.to(device)
    criterion = build_criterion(config, train_set, num_classes).to(device)
    distillation = build_distillation(config, model, num_classes, device)
    optimizer = build_optimizer(config, model)
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        criterion=criterion,
        optimizer=optimizer,
        metadata=model_metadata(config, model, train_set, numbers),
        distillation=distillation,
    )


# --------------------------------------------------------------------------------- data
def existing_data_root(root: str | None, missing: str) -> str | None:
    """`root` resolved (see data.roots); `missing` is the one-line error when it is absent."""
    resolved = resolve_data_root(root)
    if resolved is not None and not Path(resolved).exists():
        raise FileNotFoundError(missing)
    return resolved


def build_datasets(config: Config) -> tuple[Dataset, Dataset | None]:
    """Train and validation sets of the recipe (transforms are attached once the model is known)."""
    from fcnseg.data.datasets.registry import build_dataset

    data = config.data
    root = existing_data_root(
        data.root,
        f"data.root {data.root!r}: directory not found (also looked in the data directory); "
        "pass --data-root or data.root=PATH",
    )
    train_set = build_dataset(
        data.format, root, data.train_split, class_map=data.class_map or None, **data.options
    )
    val_set = None
    if data.val_split:
        val_set = build_eval_dataset(data.format, root, data.val_split, eval_options(data))
    return train_set, val_set


def build_eval_dataset(
    data_format: str,
    root: str | None,
    split: str,
    options: Mapping[str, Any],
    *,
    normalization: str | Normalization | None = None,
    size: Sequence[int] | None = None,
    channels: int = 3,
) -> Dataset:
    """An evaluation split: validation during training, `fcnseg eval`, the demo's inputs.

    One function so that all three see the same images: `options` are the recipe's dataset
    options with its `val_options` on top (config.eval_options). With `normalization` the
    evaluation transform (optional resize to `size`, then normalise) is attached; without,
    the dataset has none yet (training attaches it once the model is known) and returns raw
    uint8 images from `load`. `channels`: the bands the model takes (read_image's).
    """
    from fcnseg.data.datasets.registry import build_dataset
    from fcnseg.data.transforms import eval_transform

    transform = None
    if normalization is not None:
        transform = eval_transform(normalization, tuple(size) if size else None)  # type: ignore[arg-type]
    dataset = build_dataset(data_format, root, split, transform=transform, **options)
    if hasattr(dataset, "image_channels"):
        dataset.image_channels = channels  # the model's bands (see SegmentationDataset)
    return dataset


def input_numbers(config: Config, model: nn.Module, train_set: Any, val_set: Any) -> Normalization:
    """The normalisation numbers of training: the model's preset, or per-channel statistics of
    the training set for "per_channel" (1- or N-band) models; datasets are told the model's
    channel count first. Colour jitter on other than RGB is a one-line recipe error."""
    from fcnseg.data.normalization import PRESETS
    from fcnseg.data.stats import channel_statistics

    channels = int(model.in_channels)
    if config.data.jitter > 0 and channels != 3:
        raise RecipeError(
            f"data.jitter={config.data.jitter}: colour jitter needs RGB images but the model "
            f"takes {channels} channel(s); set data.jitter=0"
        )
    for dataset in (train_set, val_set):
        if dataset is not None and hasattr(dataset, "image_channels"):
            dataset.image_channels = channels
    if model.normalization in PRESETS:
        return PRESETS[model.normalization]
    return channel_statistics(train_set)


def attach_transforms(
    config: Config, normalization: str | Normalization, train_set: Any, val_set: Any
) -> None:
    """Give datasets built without a transform the recipe's train/eval pipelines."""
    from fcnseg.data.transforms import eval_transform, train_transform

    data = config.data
    if getattr(train_set, "transform", "absent") is None:
        train_set.transform = train_transform(
            normalization,
            crop_size=tuple(data.crop_size) if data.crop_size else None,
            scale_range=tuple(data.scale_range),
            hflip=data.hflip,
            jitter=data.jitter,
            ignore_index=train_set.ignore_index,
            augment=data.augment,
        )
    if val_set is not None and getattr(val_set, "transform", "absent") is None:
        val_set.transform = eval_transform(
            normalization, tuple(data.val_size) if data.val_size else None
        )


# ------------------------------------------------------------------------- distillation
def build_distillation(
    config: Config, model: nn.Module, num_classes: int, device: torch.device
) -> DistillationLoss | None:
    """The teacher of `train.distill_from` wrapped in its loss term on `device`, checked against
    the model (one output, same classes) so that a wrong teacher is a one-line recipe error."""
    train_cfg = config.train
    if not train_cfg.distill_from:
        return None
    from fcnseg.engine.loading import load_model

    source = train_cfg.distill_from
    # distill_weight / distill_temperature: finite and in range (config/schema.NUMBER_BOUNDS).
    if train_cfg.loss_normalization == "sum":
        raise RecipeError(
            "train.distill_from needs train.loss_normalization=mean (the distillation term is a "
            "per-pixel mean)"
        )
    if not Path(source).is_file():
        raise RecipeError(
            f"train.distill_from {source}: file not found; give a trained weights file"
        )
    teacher = load_model(weights=source).model
    if dict(model.head_classes) or dict(teacher.head_classes):
        raise RecipeError(
            f"train.distill_from {source}: distillation supports single-output models only"
        )
    if int(teacher.num_classes) != num_classes or teacher.normalization != model.normalization:
        raise RecipeError(
            f"train.distill_from {source}: the teacher has {teacher.num_classes} classes and "
            f"{teacher.normalization!r} inputs, the model {num_classes} and "
            f"{model.normalization!r}; give a teacher trained on the same classes and inputs"
        )
    term = DistillationLoss(teacher, train_cfg.distill_weight, train_cfg.distill_temperature)
    return term.to(device)


# -------------------------------------------------------------------------------- model
def recipe_model_options(config: Config) -> dict[str, Any]:
    """`model.options` with `model.in_channels` and `model.crf` folded in (stored with the
    weights, so loading rebuilds the same stem and the same CRF layers)."""
    options = dict(config.model.options)
    if config.model.crf is not None:
        options["crf"] = config.model.crf
    channels = config.model.in_channels
    if channels is not None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise RecipeError(f"model.in_channels: a whole number >= 1, got {channels!r}")
        options["in_channels"] = channels
    return options


def build_training_model(config: Config, num_classes: int) -> nn.Module:
    """The registry model the recipe names, with its encoder's pretrained weights if asked."""
    return build_model(
        config.model.name,
        num_classes,
        pretrained=config.model.pretrained,
        **recipe_model_options(config),
    )


def initialise_from(
    model: nn.Module,
    source: str,
    *,
    config: Config | None = None,
    classes: Sequence[str] | None = None,
) -> InitMapping:
    """Copy every same-named, same-shaped tensor from weights/checkpoint `source` (fine-tuning,
    or the paper's stage-wise init of FCN-16s from FCN-32s); class-score layers are
    re-initialised when `classes` differ from the file's, and the mapping is printed
    (engine/transfer.py)."""
    from fcnseg.engine.transfer import initialise_with_mapping

    path = Path(source)
    if not path.is_file():
        # Runs before the run directory is made, so a later stage (FCN-16s from FCN-32s,
        # CamVid's hi-res fine-tune) started before its earlier stage writes nothing.
        raise FileNotFoundError(
            f"model.init {source}: file not found; train the earlier stage first or "
            "pass model.init=PATH to its model.safetensors"
        )
    return initialise_with_mapping(model, source, classes=classes, config=config)


def model_metadata(
    config: Config, model: nn.Module, dataset: Any, numbers: Normalization | None = None
) -> dict[str, Any]:
    """What the run's weights file needs to be used on its own (see checkpoint.weights_metadata):
    the normalisation by name and as numbers (`numbers`, default the model's preset's)."""
    from fcnseg.data.normalization import resolve

    name = unwrap(model).normalization
    numbers = numbers if numbers is not None else resolve(name)
    return weights_metadata(
        config.model.name,
        recipe_model_options(config),
        num_classes=dataset.num_classes,
        classes=dataset.classes,
        palette=dataset.palette,
        normalization=name,
        ignore_index=dataset.ignore_index,
        data_format=config.data.format,
        normalization_stats=numbers.as_dict(),
        **({"class_map": dict(config.data.class_map)} if config.data.class_map else {}),
    )


# ---------------------------------------------------------------------------------- loss
def median_frequency_weights(dataset: Any) -> list[float]:
    """Median-frequency class weights of `dataset` (decoded masks, no augmentation), computed
    by the same scan as `fcnseg data check` so both report identical numbers."""
    by_head = median_frequency_weights_by_head(dataset)
    return by_head[primary_head_name(by_head)]


def median_frequency_weights_by_head(
    dataset: Any, rule: str = "median_frequency"
) -> dict[str, list[float]]:
    """Class weights by `rule` (a CLASS_WEIGHT_RULES name: "median_frequency", or "enet" for
    ENet's 1 / ln(1.02 + p)) of every head of `dataset` ("semantic" alone for single-head
    datasets; SIFT Flow's masks are a dict, and each head is balanced over its own classes)."""
    from fcnseg.data.check import scan_heads
    from fcnseg.errors import DataError

    problems, per_head = scan_heads(dataset, max_problems=1)
    if problems:
        raise DataError(f"data.class_weights: cannot scan the training set: {problems[0]}")
    if rule == "enet":
        return {head: stats.enet_weights for head, stats in per_head.items()}
    return {head: stats.median_frequency_weights for head, stats in per_head.items()}


def build_criterion(config: Config, train_set: Any, num_classes: int) -> nn.Module:
    """Pixel cross-entropy (class-weighted as the recipe says; U-Net's border-weight map when
    `train.border_weight` > 0), plus a soft-Jaccard term when `train.jaccard_weight` > 0; recipe errors here are one line, raised before anything runs."""
    train_cfg = config.train
    class_weights = config.data.class_weights
    head_weights: dict[str, list[float]] = {}
    if isinstance(class_weights, str):  # a CLASS_WEIGHT_RULES name (config.validate checked)
        head_weights = median_frequency_weights_by_head(train_set, class_weights)
        class_weights = head_weights[primary_head_name(head_weights)]
    if isinstance(class_weights, list) and len(class_weights) != num_classes:
        raise RecipeError(
            f"data.class_weights: {len(class_weights)} weights for {num_classes} classes; give "
            "one per class"
        )
    ignore_index = train_set.ignore_index
    criterion: nn.Module = PixelCrossEntropy(
        ignore_index=ignore_index,
        class_weights=class_weights,
        normalization=train_cfg.loss_normalization,
    )
    if train_cfg.border_weight > 0:
        criterion = BorderWeightedCrossEntropy(
            ignore_index=ignore_index,
            class_weights=class_weights,
            normalization=train_cfg.loss_normalization,
            w0=train_cfg.border_weight,
            sigma=train_cfg.border_sigma,
        )
    # jaccard_weight: finite and in range (config/schema.NUMBER_BOUNDS).
    if train_cfg.jaccard_weight > 0 and train_cfg.loss_normalization == "sum":
        raise RecipeError(
            "train.jaccard_weight needs train.loss_normalization=mean (a per-pixel-summed "
            "cross-entropy would dwarf an IoU term in [0, 1])"
        )
    if train_cfg.jaccard_weight > 0:
        criterion = WeightedSumLoss(
            [(1.0, criterion), (train_cfg.jaccard_weight, SoftJaccardLoss(ignore_index))]
        )
    head_infos = getattr(train_set, "head_class_info", None) or {}
    if class_weights is not None and len(head_infos) > 1:
        # Weights are per class and the heads' classes differ: each head gets its own
        # cross-entropy (median-frequency weights of its own classes, or unweighted when the
        # recipe lists weights, which are the primary head's).
        from fcnseg.losses import PerHeadLoss

        primary = primary_head_name(head_infos)
        losses: dict[str, nn.Module] = {primary: criterion}
        for head, info in head_infos.items():
            if head != primary:
                losses[head] = PixelCrossEntropy(
                    ignore_index=info.ignore_index,
                    class_weights=head_weights.get(head),
                    normalization=train_cfg.loss_normalization,
                )
        criterion = PerHeadLoss(losses)
    return criterion
