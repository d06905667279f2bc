"""The recipe's schema: what `to_dict` saves, the recipe keys, and range checks beyond types."""

from __future__ import annotations

import pytest

from fcnseg.config import Config, DataConfig, RecipeOrigin, config_from_dict, eval_options, validate


def test_the_origin_is_neither_saved_nor_compared_nor_a_recipe_key():
    config = Config(origin=RecipeOrigin(path="r.yaml", unset_train_keys=frozenset({"lr"})))
    assert list(config.to_dict()) == ["name", "out_root", "model", "data", "train", "eval"]
    assert config == Config()
    with pytest.raises(ValueError, match="unknown config key origin; valid keys here: data"):
        config_from_dict({"origin": {"path": "elsewhere.yaml"}})


def test_eval_options_put_the_validation_options_on_top():
    data = DataConfig(options={"num_images": 8, "size": [32, 32]}, val_options={"num_images": 2})
    expected = {"num_images": 2, "size": [32, 32]}
    assert eval_options(data) == expected
    assert eval_options({"options": data.options, "val_options": data.val_options}) == expected
    assert eval_options({"options": None}) == {}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"lr": 0.0}, "train.lr: must be > 0"),
        ({"accumulate": 0}, "train.accumulate: must be >= 1"),
    ],
)
def test_validate_refuses_what_types_allow(change, says):
    config = Config()
    for key, value in change.items():
        setattr(config.train, key, value)
    with pytest.raises(ValueError, match=says):
        validate(config)


def test_validate_refuses_sizes_ranges_and_paths():
    for raw, says in (
        ({"data": {"crop_size": [32]}}, "data.crop_size"),
        ({"data": {"scale_range": [2.0, 0.5]}}, "data.scale_range"),
        ({"out_root": "../elsewhere"}, "out_root"),
    ):
        with pytest.raises(ValueError, match=says):
            config_from_dict(raw)
