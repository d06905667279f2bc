"""Recipes read: YAML files (with `base:` inheritance) and `key.sub=value` overrides -> `Config`.

A recipe is layered, lowest priority first: the dataclass defaults, the training preset
(`train.preset`: "modern", "paper" or "release", applied by the engine's recipe step, see
`fcnseg.engine.recipe`), the YAML file, then the command-line overrides. Every key is checked
against the dataclasses, so a typo such as `train.lrr=0.1` is a one-line error instead of a
silently ignored setting, and every value is checked against the field's type.

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
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from fcnseg.config.schema import RECIPE_KEY, Config, RecipeOrigin, validate
from fcnseg.errors import FcnsegError, RecipeError


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
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError:
                continue
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
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get(RECIPE_KEY, True)}
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
    """Build a `Config` from a nested dict plus `key.sub=value` overrides (see module doc).

    The preset is not applied here (its values depend on the model table): the config records
    which `train` keys were left unset, and `fcnseg.engine.recipe.resolve_recipe` fills them.
    """
    merged = _apply_overrides(dict(raw or {}), overrides)
    train_raw = merged.get("train") or {}
    if not isinstance(train_raw, dict) or not isinstance(merged.get("model") or {}, dict):
        raise RecipeError("config: 'train' and 'model' must be mappings of keys")
    config = _build(Config, merged, "")
    unset = {item.name for item in dataclasses.fields(config.train)} - set(train_raw)
    unset_model = {item.name for item in dataclasses.fields(config.model)} - set(
        merged.get("model") or {}
    )
    config.origin = RecipeOrigin(
        unset_train_keys=frozenset(unset), unset_model_keys=frozenset(unset_model)
    )
    validate(config)
    return config


def _apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`raw` with each `key.sub=value` override set (a copy; `raw` is left as it was).

    An override replaces the value at its key (a mapping value replaces a mapping, so
    `data.options={}` clears the recipe's options).
    """
    merged = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        cursor = merged = _merge(merged, {})
        for part in path[:-1]:
            child = cursor.get(part)
            cursor[part] = dict(child) if isinstance(child, dict) else {}
            cursor = cursor[part]
        cursor[path[-1]] = value
    return merged


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
        config = config_from_dict(raw, overrides)
    except FcnsegError as error:
        if path is not None:
            raise type(error)(f"{path}: {error}") from None
        raise
    if path is not None:
        config.origin = dataclasses.replace(config.origin, path=str(path))
    return config
