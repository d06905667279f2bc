"""Recipes read: layering (defaults < YAML < overrides), base chains, type checks, one-line errors.

The preset layer and the shipped recipes' resolved values are the recipe step's (tests in
test_engine_recipe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
    config = config_from_dict({"train": {"lr": 0.5}, "model": {"name": "fcn32s_vgg16"}})
    saved = tmp_path / "saved.yaml"
    saved.write_text(config.to_yaml())
    assert load_config(saved) == config


def test_the_unset_train_keys_and_the_file_are_recorded_for_the_recipe_step(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  preset: paper\n  lr: 0.5\n")
    config = load_config(recipe, ["train.epochs=3"])
    assert config.origin.path == str(recipe)
    unset = config.origin.unset_train_keys
    assert {"preset", "lr", "epochs"}.isdisjoint(unset) and {"momentum", "batch_size"} <= unset
    assert config_from_dict({}).origin.path is None


@pytest.mark.parametrize("recipe", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    config = load_config(recipe)
    assert config.model.name


# ----------------------------------------------------------------------------- inheritance
def test_inheriting_recipes_state_only_their_differences():
    hires = yaml.safe_load((CONFIG_DIR / "camvid_fcn4s_lite0_hires.yaml").read_text())
    assert hires["base"] == "camvid_fcn4s_lite0.yaml" and "data" not in hires
    for name in ("voc_fcn8s_lite0.yaml", "voc_fcn32s_vgg16_paper.yaml"):
        recipe = yaml.safe_load((CONFIG_DIR / name).read_text())
        assert recipe["base"] == "_voc_base.yaml" and "format" not in recipe["data"]
    config = load_config(CONFIG_DIR / "camvid_fcn4s_lite0_hires.yaml")
    assert config.model.options == {"head_channels": 64, "upsample": "bilinear", "input_scale": 2.0}


def test_the_package_ships_the_base_recipes():
    from importlib.resources import files

    shipped = {entry.name for entry in files("fcnseg").joinpath("configs").iterdir()}
    assert {"_voc_base.yaml", "camvid_fcn4s_lite0.yaml"} <= shipped
    # The repository's configs/ is the package's folder (a link), so both paths load alike.
    repo_configs = CONFIG_DIR.parents[2] / "configs"
    assert repo_configs.resolve() == CONFIG_DIR.resolve()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_overrides_merge_deeply(tmp_path):
    _write(
        tmp_path,
        "base.yaml",
        "name: parent\nmodel: {name: fcn8s_vgg16, options: {padded: false, width_divisor: 2}}\n"
        "data: {crop_size: [32, 32], scale_range: [0.5, 2.0]}\ntrain: {lr: 0.5, epochs: 3}\n",
    )
    child = _write(
        tmp_path,
        "child.yaml",
        "base: base.yaml\nname: child\nmodel: {options: {width_divisor: 4}}\ndata: {crop_size: [16, 24]}\n",
    )
    config = load_config(child, ["train.epochs=7"])
    assert config.name == "child"
    assert config.model.name == "fcn8s_vgg16"  # inherited
    assert config.model.options == {
        "padded": False,
        "width_divisor": 4,
    }  # mappings merge key by key
    assert config.data.crop_size == [16, 24]  # lists are replaced, not merged
    assert config.data.scale_range == [0.5, 2.0]
    assert config.train.lr == 0.5 and config.train.epochs == 7  # overrides still come last


def test_base_chain_resolves_relative_to_each_recipe(tmp_path):
    _write(tmp_path, "common/root.yaml", "train: {lr: 0.25, epochs: 2}\n")
    _write(tmp_path, "common/middle.yaml", "base: root.yaml\ntrain: {epochs: 4}\n")
    leaf = _write(tmp_path, "recipes/leaf.yaml", "base: ../common/middle.yaml\nname: leaf\n")
    config = load_config(leaf)
    assert (config.name, config.train.lr, config.train.epochs) == ("leaf", 0.25, 4)


def test_base_cycle_is_a_one_line_error_naming_the_files(tmp_path):
    first = _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match="cycle") as info:
        load_config(first)
    message = str(info.value)
    assert "\n" not in message and "a.yaml" in message and "b.yaml" in message
    itself = _write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(itself)


def test_missing_or_bad_base_is_a_one_line_error(tmp_path):
    orphan = _write(tmp_path, "orphan.yaml", "base: nowhere.yaml\ntrain: {lr: 0.1}\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml") as info:
        load_config(orphan)
    assert "orphan.yaml" in str(info.value) and "\n" not in str(info.value)
    listed = _write(tmp_path, "listed.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ValueError, match="base: expected a recipe file name"):
        load_config(listed)
    _write(tmp_path, "broken.yaml", "train: [unclosed\n")
    child = _write(tmp_path, "child.yaml", "base: broken.yaml\n")
    with pytest.raises(ValueError, match="broken.yaml.*invalid YAML"):
        load_config(child)
