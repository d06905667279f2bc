"""The recipe's schema: what `to_dict` saves, the recipe keys, and range checks beyond types."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

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
        ({"lr": 0.0}, r"train.lr: 0.0 is outside \(0, 10\]"),
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


# ------------------------------------------------------------------ numbers and their bounds
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=.nan", "train.lr"),
        ("train.lr=1e30", "train.lr"),
        ("train.lr=-0.1", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.distill_weight=.nan", "train.distill_weight"),
        ("train.distill_temperature=.inf", "train.distill_temperature"),
        ("train.distill_temperature=0", "train.distill_temperature"),
        ("train.momentum=1.5", "train.momentum"),
        ("train.weight_decay=-.inf", "train.weight_decay"),
        ("train.jaccard_weight=.nan", "train.jaccard_weight"),
        ("train.max_minutes=.nan", "train.max_minutes"),
        ("train.poly_power=.inf", "train.poly_power"),
        ("data.jitter=1.0", "data.jitter"),
        ("data.scale_range=[.nan, 2.0]", "data.scale_range"),
        ("data.scale_range=[0.0, 2.0]", "data.scale_range"),
        ("data.class_weights=[1.0, .inf]", "data.class_weights"),
        ("data.class_weights=[0.0, 0.0]", "data.class_weights"),
    ],
)
def test_non_finite_or_absurd_numbers_are_refused_naming_the_key(override, key):
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}: .*(finite|outside)"):
        config_from_dict({}, [override])


def test_every_default_and_bound_edge_is_accepted():
    from fcnseg.config.schema import NUMBER_BOUNDS

    config_from_dict({})  # the defaults are inside their bounds
    for key, (_, high, _) in NUMBER_BOUNDS.items():
        config_from_dict({}, [f"{key}={high}"])
        assert math.isfinite(high)


def test_every_bounded_key_is_a_float_field():
    from fcnseg.config.schema import NUMBER_BOUNDS

    for key in NUMBER_BOUNDS:
        section, name = key.split(".")
        fields = {f.name: f for f in dataclasses.fields(getattr(Config(), section))}
        assert name in fields, key
        assert "float" in str(fields[name].type), key


# ------------------------------------------------------- hints name keys that exist
SRC = Path(__file__).resolve().parents[1] / "src" / "fcnseg"
#: A recipe key as messages write it: `train.lr`, `model.init=...` (not `fcnseg.data.io`, not
#: `model.state_dict()`, not a file name such as `model.safetensors` or `train.txt`).
KEY_IN_TEXT = re.compile(r"(?<![\w./])(train|model|data|eval)\.([a-z_]+)\b(?![.(\w])")
FILE_SUFFIXES = {"safetensors", "onnx", "pt", "pth", "txt", "yaml", "json", "csv", "png"}


def _message_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """The string constants of a module but its docstrings (f-strings' literal parts too)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def recipe_keys_named_in_messages() -> list[tuple[str, int, str]]:
    """(file, line, key) for every dotted recipe key written in a message string in src/."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for line, text in _message_strings(tree):
            for section, name in KEY_IN_TEXT.findall(text):
                if name not in FILE_SUFFIXES:
                    found.append((str(path.relative_to(SRC)), line, f"{section}.{name}"))
    return found


def test_every_recipe_key_named_in_a_message_exists_in_the_schema():
    """An error hint that names a key the recipe does not have (`train.init` for `model.init`)
    sends the user to a fix that is refused in turn."""
    sections = {name: getattr(Config(), name) for name in ("train", "model", "data", "eval")}
    known = {
        f"{section}.{item.name}"
        for section, value in sections.items()
        for item in dataclasses.fields(value)
    }
    named = recipe_keys_named_in_messages()
    assert len({key for _, _, key in named}) >= 20  # the scan sees the hints (it can fail)
    wrong = [f"{file}:{line}: {key}" for file, line, key in named if key not in known]
    assert not wrong, wrong


def test_the_key_scan_finds_a_wrong_key():
    source = '"""train.nope"""\nraise ValueError("set train.init=PATH or model.name")\n'
    tree = ast.parse(source)
    keys = [m for _, text in _message_strings(tree) for m in KEY_IN_TEXT.findall(text)]
    assert keys == [("train", "init"), ("model", "name")]
