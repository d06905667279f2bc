"""The engine's recipe step: what a recipe asks of the model, dataset and inference tables.

`fcnseg.config` reads and type-checks a recipe but sits below those tables (docs/architecture.md,
"Layers"), so two things happen here, before a run builds or writes anything:

- the preset (`train.preset`: "modern", "paper" or "release") fills the `train` keys the recipe
  left unset, from the registry's facts about the model (its paper stage, its release solver);
- every key of the free-form mappings (`data.options`, `data.val_options`, `model.options`,
  `eval.options`) is checked against the signature of what receives it.

`engine.train.train` calls `resolve_recipe` first; so does anything else that runs a recipe.
Errors are one line and name the recipe file when `load_config` read one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from fcnseg import constants
from fcnseg.config import Config, RecipeOrigin, config_from_dict
from fcnseg.data.datasets.registry import get_dataset_class
from fcnseg.errors import FcnsegError, RecipeError
from fcnseg.inference.spec import OPTION_NAMES
from fcnseg.models.factory import check_model_options, model_info


def resolve_recipe(config: Config) -> Config:
    """`config` as training runs it: the preset applied, every free-form option checked.

    Returns a new config (the given one is left as it was) whose preset has nothing left to
    fill, so resolving it again changes nothing.
    """
    from fcnseg.engine.transfer import adopt_init_model

    try:
        # First: the preset and the option checks must see the model the weights describe.
        resolved = apply_preset(adopt_init_model(config))
        check_free_form_options(resolved)
    except FcnsegError as error:
        if config.origin.path is not None:
            raise type(error)(f"{config.origin.path}: {error}") from None
        raise
    return resolved


def apply_preset(config: Config) -> Config:
    """The preset's values in the `train` keys the recipe left unset (recipe values win)."""
    train = config.train
    values = preset_values(train.preset, config.model.name, config.model.options)
    unset = config.origin.unset_train_keys
    raw = config.to_dict()
    raw["train"].update({key: value for key, value in values.items() if key in unset})
    # Rebuilt through the schema so preset values are typed and range-checked as recipe values.
    resolved = config_from_dict(raw)
    resolved.origin = RecipeOrigin(path=config.origin.path)
    return resolved


def paper_stage(model_name: str, model_options: Mapping[str, Any] | None = None) -> str:
    """The paper training stage ("fcn32s", "fcn16s", "fcn8s") whose solver `model_name` uses.

    Read from the registry's metadata (`ModelInfo.paper_stage`), never from the name's spelling.
    Wrappers (fusion, multi-head) have no stage of their own and take their `base` model's. A
    model with neither is a one-line error: the paper's learning rates only make sense for the
    nets they were tuned for, so the recipe must then set `train.lr` itself.
    """
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
    (the FCN release: one image per iteration, `iter_size` as gradient accumulation, normalised
    or summed loss, biases at lr x 2 without decay; DeepLab: batch 10, poly rate for `max_iter`
    steps, fc8 at lr x 10; SegNet: batch 4, `max_iter` steps, caffe-segnet's "pixels" loss
    normalisation, conv biases only at lr x 2); "modern" sets nothing.
    """
    if preset == "release":
        solver = constants.RELEASE_SOLVERS[release_solver(model_name, model_options)]
        normalization = solver.loss_normalization or ("mean" if solver.normalize else "sum")
        return {
            "optimizer": "sgd",
            "momentum": solver.momentum,
            "weight_decay": solver.weight_decay,
            "lr": solver.base_lr,
            "encoder_lr_mult": 1.0,
            "warmup_steps": 0,
            "accumulate": solver.iter_size,
            "loss_normalization": normalization,
            "bias_lr_mult": constants.RELEASE_BIAS_LR_MULT,
            "bias_decay_mult": constants.RELEASE_BIAS_DECAY_MULT,
            "bias_mult_scope": solver.bias_mult_layers,
            # What the DeepLab solvers add (the FCN release's: fixed rate, batch 1, no limit).
            "schedule": solver.schedule,
            "poly_power": solver.poly_power,
            "batch_size": solver.batch_size,
            "max_steps": solver.max_iter,
            "score_lr_mult": solver.score_lr_mult,
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


def dataset_options_accepted(data_format: str) -> set[str] | None:
    """Option names the dataset class of `data_format` takes (None: it takes any, **kwargs).

    Read from the class's constructor signature, less what build_dataset passes itself.
    """
    parameters = inspect.signature(get_dataset_class(data_format).__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} - {"self", "root", "split", "transform"}


def inference_options_accepted() -> set[str]:
    """The inference spec's option names (what `eval.options` may hold): the one list,
    engine.inference_spec.OPTION_NAMES, which predict_logits' keyword options follow."""
    return set(OPTION_NAMES)


def _check_keys(
    options: Mapping[str, Any], accepted: set[str] | None, field: str, what: str
) -> None:
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
    Why before the run: an unknown key used to surface as a TypeError traceback from the builder,
    after the run directory was made (the natural mistake: reusing configs/demo.yaml's synthetic
    options with data.format=camvid). Checked by signature, so nothing is built.
    """
    accepted = dataset_options_accepted(config.data.format)
    what = f"dataset format {config.data.format!r}"
    _check_keys(config.data.options, accepted, "data.options", what)
    _check_keys(config.data.val_options, accepted, "data.val_options", what)
    _check_keys(config.eval.options, inference_options_accepted(), "eval.options", "inference")
    check_model_options(config.model.name, config.model.options, "model.options")
    if config.model.crf is not None:
        from fcnseg.models.meanfield import parse_crf_options

        parse_crf_options(config.model.crf, "model.crf")
