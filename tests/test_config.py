"""Typed config: layering (defaults < preset < YAML < overrides), type checks, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnseg.config import config_from_dict, load_config, parse_override

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "fcnseg" / "configs"


def test_overrides_parse_yaml_values():
    assert parse_override("train.lr=0.01") == (["train", "lr"], 0.01)
    assert parse_override("data.crop_size=[64, 96]") == (["data", "crop_size"], [64, 96])
    assert parse_override("train.amp=true") == (["train", "amp"], True)
    assert parse_override("data.root=") == (["data", "root"], None)
    with pytest.raises(ValueError, match="key.sub=value"):
        parse_override("train.lr")
    with pytest.raises(ValueError, match="empty key"):
        parse_override("train..lr=1")


def test_layering_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.5\n  epochs: 3\ndata:\n  crop_size: [32, 32]\n")
    config = load_config(recipe, ["train.epochs=7", "model.options.output_stride=16"])
    assert config.train.lr == 0.5
    assert config.train.epochs == 7
    assert config.data.crop_size == [32, 32]
    assert config.model.options == {"output_stride": 16}
    assert config.train.batch_size == 8  # dataclass default untouched
    recipe.write_text("data:\n  options: {num_images: 4, size: [32, 32]}\n")
    assert load_config(recipe, ["data.options.seed=2"]).data.options == {
        "num_images": 4,
        "size": [32, 32],
        "seed": 2,
    }
    assert load_config(recipe, ["data.options={}"]).data.options == {}


def test_ints_become_floats_and_types_are_checked():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ValueError, match="train.epochs: expected an integer"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ValueError, match="train.optimizer"):
        config_from_dict({}, ["train.optimizer=adam"])
    with pytest.raises(ValueError, match="train.batch_size: must be >= 1"):
        config_from_dict({}, ["train.batch_size=0"])
    with pytest.raises(ValueError, match="data.class_weights"):
        config_from_dict({}, ["data.class_weights=inverse"])
    # YAML 1.1 leaves "1e-4" a string; a float field still reads it as the number.
    assert config_from_dict({}, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)
    assert config_from_dict({"train": {"lr": "2.5E-3"}}).train.lr == pytest.approx(2.5e-3)
    for bad in ("fast", "nan", "inf"):
        with pytest.raises(ValueError, match="train.lr: expected a number"):
            config_from_dict({}, [f"train.lr={bad}"])


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="unknown config key train.lrr"):
        config_from_dict({}, ["train.lrr=0.1"])
    with pytest.raises(ValueError, match="unknown config key optimiser"):
        config_from_dict({"optimiser": {}})


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="invalid YAML") as info:
        load_config(broken)
    assert "\n" not in str(info.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(scalar)


def test_round_trip_through_yaml(tmp_path):
    config = config_from_dict({"train": {"preset": "paper"}, "model": {"name": "fcn32s_vgg16"}})
    saved = tmp_path / "saved.yaml"
    saved.write_text(config.to_yaml())
    assert load_config(saved) == config


@pytest.mark.parametrize("recipe", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    config = load_config(recipe)
    assert config.model.name
