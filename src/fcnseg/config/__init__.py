"""Typed run configuration: the recipe's schema (`schema`) and its reading from YAML files and
`key.sub=value` overrides (`loading`).

Why nothing more: the config sits below models/, data/ and inference/ in the layer table
(docs/architecture.md), so it cannot ask them whether a model name, a dataset option or a preset
fits; the engine's recipe step (`fcnseg.engine.recipe.resolve_recipe`) does, before a run writes
anything.
"""

from fcnseg.config.loading import (
    BASE_KEY,
    config_from_dict,
    load_config,
    load_recipe,
    parse_override,
    safe_load_yaml,
)
from fcnseg.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    Optimizer,
    Preset,
    RecipeOrigin,
    Schedule,
    TrainConfig,
    eval_options,
    validate,
)

__all__ = [
    "BASE_KEY",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "Optimizer",
    "Preset",
    "RecipeOrigin",
    "Schedule",
    "TrainConfig",
    "config_from_dict",
    "eval_options",
    "load_config",
    "load_recipe",
    "parse_override",
    "safe_load_yaml",
    "validate",
]
