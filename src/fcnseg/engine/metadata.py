"""The schema of a weights file's metadata, checked before anything is built from it.

A `.safetensors` weights file (or a checkpoint's `meta`) says which model to build, for how many
classes, how to feed it and how to run it. Those values decide allocations: a class count of 2e8,
or an inference scale of 60, asks for tens of gigabytes; a palette that is an int, a JSON list
instead of an object or an inference value that is a string ended in tracebacks deep in the model
code; a one-colour palette painted nine of ten classes black without a word. So every field is
checked here for type and range first, and a file that fails is refused in one line
(`WeightsError`) naming the field.

What passes becomes a `WeightsMetadata`: typed fields for every reader, and the JSON object as
read (`as_dict()`, also a read-only mapping view) for writers, which store it back unchanged.
The bounds of inference options (scales, tiles, the forward-pixel cap) are those of
`engine.inference_spec`, shared with the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from fcnseg.data.normalization import PRESETS, Normalization, from_numbers
from fcnseg.errors import WeightsError
from fcnseg.inference.crf_params import CrfParams
from fcnseg.inference.spec import (
    MAX_FORWARD_PIXELS,
    MAX_FORWARD_PIXELS_ENV,
    MAX_SCALE,
    MAX_SCALES,
    MAX_TILE,
    MIN_TILE,
    RECOMMENDABLE_OPTIONS,
    InferenceSpec,
    is_int,
    max_forward_pixels,
    short,
)

__all__ = [
    "MAX_CLASSES",
    "MAX_FORWARD_PIXELS",
    "MAX_FORWARD_PIXELS_ENV",
    "MAX_OPTION_DEPTH",
    "MAX_OPTION_INT",
    "MAX_SCALE",
    "MAX_SCALES",
    "MAX_STRING",
    "MAX_TILE",
    "MIN_CLASSES",
    "MIN_TILE",
    "WeightsMetadata",
    "max_forward_pixels",
    "validate_weights_metadata",
]

#: Class-count bounds (the largest benchmark, ADE20K full, has ~3000 classes).
MIN_CLASSES, MAX_CLASSES = 1, 10_000
#: Largest magnitude of an integer model option (heads' class counts, channel widths, strides).
MAX_OPTION_INT = MAX_CLASSES
#: Deepest nesting of a model option value (lists/mappings inside lists/mappings).
MAX_OPTION_DEPTH = 4
#: Longest string a metadata field may hold (model names, formats, class names).
MAX_STRING = 256

Fail = Callable[[str, str], NoReturn]


@dataclass(frozen=True, eq=False)
class WeightsMetadata(Mapping[str, Any]):
    """A weights file's metadata after the schema check: what to build and how to use it.

    Typed fields for readers; `as_dict()` is the JSON object exactly as read (key order and
    entries the schema does not know, e.g. the training step or mean IU), which writers store
    back unchanged. The mapping view reads the same object, for code written against the dict.
    """

    model: str
    num_classes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    normalization: str
    model_options: Mapping[str, Any] = field(default_factory=dict)
    ignore_index: int | None = None
    data_format: str | None = None
    #: The inference the weights recommend (eval/predict use it when no --mode is given).
    inference: InferenceSpec | None = None
    #: The training recipe stored with the weights, when there is one.
    recipe: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: The normalisation as numbers ("normalization_stats"); None in files written before
    #: they were stored, whose preset name stands for them (see `input_normalization`).
    normalization_stats: Normalization | None = None
    #: The recipe's `data.class_map` the model was trained with (source class -> target class
    #: or "ignore"); `fcnseg eval` applies it to the weights' own dataset format, so a model
    #: trained on merged classes scores on the unmerged data without its recipe.
    class_map: Mapping[str, str] | None = None
    #: The dense CRF the weights run by default after the net ("crf"; `fcnseg crf-search`).
    crf: CrfParams | None = None

    def input_normalization(self) -> Normalization:
        """The numbers inputs are normalised with: stored ones, else the preset's."""
        if self.normalization_stats is not None:
            return self.normalization_stats
        return PRESETS[self.normalization]

    def as_dict(self) -> dict[str, Any]:
        """The JSON object as read from the file (a copy): what a writer stores back."""
        return dict(self.raw)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def _string(meta: Mapping[str, Any], key: str, fail: Fail, *, required: bool) -> str | None:
    value = meta.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_STRING:
        fail(key, f"expected a non-empty string of at most {MAX_STRING} characters, got {value!r}")
    return value


def _plain_json(value: Any, depth: int = 0) -> bool:
    """True for None/bool/finite numbers/strings and lists/mappings of them, not too deep."""
    if depth > MAX_OPTION_DEPTH:
        return False
    if value is None or isinstance(value, bool) or isinstance(value, str):
        return True
    if is_int(value):
        return abs(value) <= MAX_OPTION_INT
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= MAX_OPTION_INT
    if isinstance(value, list):
        return all(_plain_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _plain_json(item, depth + 1) for key, item in value.items()
        )
    return False


def _classes_and_palette(meta: dict[str, Any], fail: Fail) -> tuple[int, tuple, tuple]:
    """(num_classes, classes, palette) checked against each other."""
    count = meta.get("num_classes")
    if not is_int(count) or not MIN_CLASSES <= count <= MAX_CLASSES:
        fail(
            "num_classes",
            f"expected a whole number in {MIN_CLASSES}..{MAX_CLASSES}, got {short(count)}",
        )
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) != count
        or not all(isinstance(name, str) and len(name) <= MAX_STRING for name in classes)
    ):
        fail("classes", f"expected a list of {count} class names, got {short(classes)}")
    palette = meta.get("palette")
    if not isinstance(palette, list) or len(palette) != count:
        length = len(palette) if isinstance(palette, list) else type(palette).__name__
        fail("palette", f"expected {count} colours (one per class), got {length}")
    for index, colour in enumerate(palette):
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or not all(is_int(c) and 0 <= c <= 255 for c in colour)
        ):
            fail("palette", f"colour {index} must be [r, g, b] with 0..255, got {short(colour)}")
    return count, tuple(classes), tuple((c[0], c[1], c[2]) for c in palette)


def _model_options(meta: dict[str, Any], fail: Fail) -> dict[str, Any]:
    options = meta.get("model_options", {})
    if not isinstance(options, dict):
        fail("model_options", f"expected a mapping, got {short(options)}")
    for key, value in options.items():
        if not isinstance(key, str) or not _plain_json(value):
            fail(
                "model_options",
                f"{key!r} must hold plain JSON values (numbers within +-{MAX_OPTION_INT}), "
                f"got {short(value)}",
            )
    return options


def _inference(meta: dict[str, Any], fail: Fail, source: object) -> InferenceSpec | None:
    """The recommended inference ({mode, options}), within the command line's bounds."""
    inference = meta.get("inference")
    if inference is None:
        return None
    if not isinstance(inference, dict) or not set(inference) <= {"mode", "options"}:
        fail("inference", f"expected {{mode, options}}, got {short(inference)}")
    mode = inference.get("mode", "whole")
    stored = inference.get("options", {})
    if mode not in RECOMMENDABLE_OPTIONS:
        fail("inference", f"mode {short(mode)} is not one of {', '.join(RECOMMENDABLE_OPTIONS)}")
    if not isinstance(stored, dict) or not set(stored) <= RECOMMENDABLE_OPTIONS[mode]:
        fail("inference", f"options {short(stored)} do not fit mode {mode!r}")
    return InferenceSpec.parse(mode, stored, f"{source}: metadata", WeightsError)


def validate_weights_metadata(meta: Any, source: object) -> WeightsMetadata:
    """`meta` as WeightsMetadata when it fits the schema (see the module doc), else a one-line
    WeightsError naming `source` and the field.

    Required: model (string), num_classes (1..10000), classes (that many strings), palette (that
    many [r, g, b] with 0..255), normalization (a known preset). Optional, checked when present:
    model_options (a mapping of plain JSON values), normalization_stats ({mean, std} per
    channel; required for "per_channel"), ignore_index (int), data_format (string),
    inference ({mode, options} within InferenceSpec's bounds), config (mapping), class_map
    (class name -> class name), crf (the default dense-CRF parameters, inference.crf_params).
    """
    from fcnseg.models.protocol import NORMALIZATIONS

    def fail(key: str, problem: str) -> NoReturn:
        raise WeightsError(
            f"{source}: metadata field {key!r}: {problem}; re-export the weights with fcnseg"
        )

    if not isinstance(meta, dict):
        raise WeightsError(
            f"{source}: metadata is a JSON {type(meta).__name__}, not an object; re-export the "
            "weights with fcnseg"
        )
    model = _string(meta, "model", fail, required=True)
    count, classes, palette = _classes_and_palette(meta, fail)
    if meta.get("normalization") not in NORMALIZATIONS:
        fail(
            "normalization",
            f"{short(meta.get('normalization'))} is not one of {', '.join(NORMALIZATIONS)}",
        )
    options = _model_options(meta, fail)
    stats = _normalization_stats(meta, fail)
    ignore_index = meta.get("ignore_index")
    if "ignore_index" in meta and not (is_int(ignore_index) and -1 <= ignore_index <= 65535):
        fail("ignore_index", f"expected a whole number in -1..65535, got {short(ignore_index)}")
    data_format = _string(meta, "data_format", fail, required=False)
    class_map = _class_map(meta, fail)
    recipe = meta.get("config")
    if recipe is not None and not isinstance(recipe, dict):
        fail("config", f"expected a mapping (the training recipe), got {short(recipe)}")
    return WeightsMetadata(
        model=str(model),
        num_classes=count,
        classes=classes,
        palette=palette,
        normalization=meta["normalization"],
        model_options=MappingProxyType(dict(options)),
        ignore_index=ignore_index,
        data_format=data_format,
        inference=_inference(meta, fail, source),
        recipe=recipe,
        raw=MappingProxyType(dict(meta)),
        normalization_stats=stats,
        class_map=MappingProxyType(dict(class_map)) if class_map else None,
        crf=_crf(meta, source),
    )


def _class_map(meta: dict[str, Any], fail: Fail) -> dict[str, str] | None:
    """The stored `data.class_map` (class name -> class name), or None when absent."""
    class_map = meta.get("class_map")
    if class_map is not None and not (
        isinstance(class_map, dict)
        and len(class_map) <= MAX_CLASSES
        and all(
            isinstance(key, str)
            and isinstance(value, str)
            and 0 < len(key) <= MAX_STRING
            and 0 < len(value) <= MAX_STRING
            for key, value in class_map.items()
        )
    ):
        fail(
            "class_map", f"expected a mapping of class names to class names, got {short(class_map)}"
        )
    return class_map


def _crf(meta: dict[str, Any], source: object) -> CrfParams | None:
    """The stored default CRF parameters ({w1, theta_alpha, ...}), within the command line's
    bounds; a partial entry takes DeepLab's values for the rest."""
    stored = meta.get("crf")
    if stored is None:
        return None
    return CrfParams.parse(stored, f"{source}: metadata field 'crf'", WeightsError)


def _normalization_stats(meta: dict[str, Any], fail: Fail) -> Normalization | None:
    """The stored numbers ({mean, std, channel_order?}); required for "per_channel" inputs."""
    stored = meta.get("normalization_stats")
    if stored is None:
        if meta["normalization"] not in PRESETS:
            fail("normalization_stats", f"{meta['normalization']!r} inputs need stored numbers")
        return None
    try:
        return from_numbers(stored, meta["normalization"])
    except ValueError as error:
        fail("normalization_stats", str(error))
