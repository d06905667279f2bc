"""The engine's recipe step: presets filled from the model table, free-form options checked by
signature, errors naming the recipe file, and every shipped recipe resolving as recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcnseg import constants
from fcnseg.config import config_from_dict, load_config
from fcnseg.engine.recipe import (
    dataset_options_accepted,
    inference_options_accepted,
    paper_stage,
    preset_values,
    resolve_recipe,
)
from fcnseg.errors import ModelOptionError, RecipeError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "fcnseg" / "configs"

#: Every shipped recipe as loaded before recipes could inherit and before the preset moved to
#: the recipe step (`to_dict()`, recorded from the one-file recipes); they must resolve the same.
SHIPPED_RECIPES = Path(__file__).resolve().parent / "data" / "shipped_recipes.json"


@pytest.mark.parametrize(
    "name", sorted(json.loads(SHIPPED_RECIPES.read_text())), ids=lambda name: name
)
def test_shipped_recipes_resolve_exactly_as_recorded(name):
    recorded = json.loads(SHIPPED_RECIPES.read_text())[name]
    resolved = resolve_recipe(load_config(CONFIG_DIR / name))
    assert json.loads(json.dumps(resolved.to_dict())) == recorded


@pytest.mark.parametrize("recipe", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_resolves(recipe):
    assert resolve_recipe(load_config(recipe)).model.name


def test_paper_preset_fills_what_the_recipe_leaves_unset():
    config = config_from_dict({"model": {"name": "fcn16s_vgg16"}, "train": {"preset": "paper"}})
    assert config.train.lr == 1e-3  # the dataclass default until the recipe step
    resolved = resolve_recipe(config)
    assert resolved.train.momentum == constants.PAPER_MOMENTUM
    assert resolved.train.lr == constants.PAPER_LR["fcn16s"]
    assert resolved.train.accumulate == constants.PAPER_EFFECTIVE_BATCH
    assert resolved.train.loss_normalization == "sum"
    assert config.train.lr == 1e-3  # the given config is left as it was
    override = resolve_recipe(config_from_dict({"train": {"preset": "paper"}}, ["train.lr=1e-9"]))
    assert override.train.lr == 1e-9  # the recipe wins over the preset


def test_a_resolved_recipe_saved_and_loaded_resolves_to_itself(tmp_path):
    # The resume path: a run's config.yaml / checkpoint recipe is the resolved recipe.
    resolved = resolve_recipe(
        config_from_dict({"train": {"preset": "paper"}, "model": {"name": "fcn32s_vgg16"}})
    )
    saved = tmp_path / "saved.yaml"
    saved.write_text(resolved.to_yaml())
    again = resolve_recipe(load_config(saved))
    assert again == resolved and again.to_dict() == resolved.to_dict()
    assert resolve_recipe(resolved).to_dict() == resolved.to_dict()


def test_wrappers_take_their_base_models_paper_stage():
    assert paper_stage("fcn8s_vgg16") == "fcn8s"
    assert paper_stage("late_fusion", {"base": "fcn16s_vgg16"}) == "fcn16s"
    assert preset_values("modern", "no_such_model") == {}
    with pytest.raises(RecipeError, match="unknown preset 'fancy'"):
        preset_values("fancy", "fcn8s_vgg16")


def test_recipe_errors_name_the_file_and_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {format: camvid, options: {num_images: 4}}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: data\.options: unknown key 'num_images'"):
        resolve_recipe(load_config(recipe))
    with pytest.raises(ModelOptionError, match="model.options: unknown key 'depth'"):
        resolve_recipe(config_from_dict({}, ["model.options={depth: 3}"]))
    with pytest.raises(RecipeError, match="eval.options: unknown key 'tiles' for inference"):
        resolve_recipe(config_from_dict({}, ["eval.options={tiles: 3}"]))
    with pytest.raises(RecipeError, match="release has no solver"):
        resolve_recipe(
            config_from_dict(
                {"model": {"name": "fcn32s_googlenet"}, "train": {"preset": "release"}}
            )
        )


def test_option_names_come_from_signatures():
    assert "num_images" in (dataset_options_accepted("synthetic") or set())
    assert "num_images" not in (dataset_options_accepted("camvid") or set())
    assert {"mode", "flip"} & inference_options_accepted()
