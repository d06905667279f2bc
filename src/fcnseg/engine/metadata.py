"""The schema of a weights file's metadata, checked before anything is built from it.

A `.safetensors` weights file (or a checkpoint's `meta`) says which model to build, for how many
classes, how to feed it and how to run it. Those values decide allocations: a class count of 2e8,
or an inference scale of 60, asks for tens of gigabytes; a palette that is an int, a JSON list
instead of an object or an inference value that is a string ended in tracebacks deep in the model
code; a one-colour palette painted nine of ten classes black without a word. So every field is
checked here for type and range first, and a file that fails is refused in one line
(`WeightsError`) naming the field.

The same bounds apply to inference options given on the command line (`check_inference_options`
with `UsageError`), and `check_forward_pixels` caps the pixels one forward pass may take, whatever
the image size and scales.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from fcnseg.errors import DataError, FcnsegError, UsageError, WeightsError

#: Class-count bounds (the largest benchmark, ADE20K full, has ~3000 classes).
MIN_CLASSES, MAX_CLASSES = 1, 10_000
#: Inference scale factors accepted (multi-scale), exclusive low, inclusive high.
MAX_SCALE = 4.0
MAX_SCALES = 16
#: Sliding-window tile side bounds (pixels).
MIN_TILE, MAX_TILE = 16, 4096
#: Largest magnitude of an integer model option (heads' class counts, channel widths, strides).
MAX_OPTION_INT = MAX_CLASSES
#: Deepest nesting of a model option value (lists/mappings inside lists/mappings).
MAX_OPTION_DEPTH = 4
#: Longest string a metadata field may hold (model names, formats, class names).
MAX_STRING = 256
#: Pixels one forward pass may take (input height x width after scaling): 36 Mpx is a 6000 x 6000
#: image at scale 1; the logits of a 21-class net on it already take ~3 GB.
MAX_FORWARD_PIXELS = 36_000_000
#: Environment variable that overrides MAX_FORWARD_PIXELS.
MAX_FORWARD_PIXELS_ENV = "FCNSEG_MAX_FORWARD_PIXELS"
#: Inference modes and the options each may carry (keywords of inference.predict_logits).
INFERENCE_OPTIONS: dict[str, frozenset[str]] = {
    "whole": frozenset(),
    "sliding": frozenset({"tile_size", "overlap", "blend"}),
    "multiscale": frozenset({"scales", "flip"}),
}
_BLEND_MODES = ("uniform", "gaussian", "ramp")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _string(meta: Mapping[str, Any], key: str, fail, *, required: bool) -> None:
    value = meta.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_STRING:
        fail(key, f"expected a non-empty string of at most {MAX_STRING} characters, got {value!r}")


def _plain_json(value: Any, depth: int = 0) -> bool:
    """True for None/bool/finite numbers/strings and lists/mappings of them, not too deep."""
    if depth > MAX_OPTION_DEPTH:
        return False
    if value is None or isinstance(value, bool) or isinstance(value, str):
        return True
    if _is_int(value):
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_inference_options(
    mode: str, options: Mapping[str, Any], where: str, error: type[FcnsegError] = UsageError
) -> None:
    """Type and range checks of inference options (tile sizes, scales, overlap, blend, flip).

    `where` prefixes the message (the weights file, or the command line); `error` is the type to
    raise (WeightsError for metadata, UsageError for command-line options).
    """

    def fail(key: str, problem: str) -> None:
        raise error(f"{where}: inference {key}: {problem}")

    if mode not in INFERENCE_OPTIONS:
        fail("mode", f"{_short(mode)} is not one of {', '.join(INFERENCE_OPTIONS)}")
    if not isinstance(options, Mapping):
        fail("options", f"expected a mapping, got {_short(options)}")
    for key, value in options.items():
        if key == "tile_size":
            sides = list(value) if isinstance(value, (list, tuple)) else [value]
            if not 1 <= len(sides) <= 2 or not all(
                _is_int(side) and MIN_TILE <= side <= MAX_TILE for side in sides
            ):
                fail(
                    key,
                    f"expected 1 or 2 whole numbers in {MIN_TILE}..{MAX_TILE}, got {_short(value)}",
                )
        elif key == "scales":
            if (
                not isinstance(value, (list, tuple))
                or not 1 <= len(value) <= MAX_SCALES
                or not all(_is_number(s) and 0 < s <= MAX_SCALE for s in value)
            ):
                fail(
                    key,
                    f"expected 1 to {MAX_SCALES} numbers in (0, {MAX_SCALE:g}], got {_short(value)}",
                )
        elif key == "overlap":
            if not _is_number(value) or not 0 <= value < 1:
                fail(key, f"expected a number in [0, 1), got {_short(value)}")
        elif key == "blend":
            if value not in _BLEND_MODES:
                fail(key, f"expected one of {', '.join(_BLEND_MODES)}, got {_short(value)}")
        elif key == "flip":
            if not isinstance(value, bool):
                fail(key, f"expected true or false, got {_short(value)}")
    if mode == "sliding" and "tile_size" not in options:
        fail("tile_size", "sliding inference needs a tile size (--tile-size 512)")


def validate_weights_metadata(meta: Any, source: object) -> dict[str, Any]:
    """`meta` when it fits the schema (see the module doc), else a one-line WeightsError.

    Required: model (string), num_classes (1..10000), classes (that many strings), palette (that
    many [r, g, b] with 0..255), normalization (a known preset). Optional, checked when present:
    model_options (a mapping of plain JSON values), ignore_index (int), data_format (string),
    inference ({mode, options} within the bounds of check_inference_options), config (mapping).
    """
    from fcnseg.models.protocol import NORMALIZATIONS

    def fail(key: str, problem: str) -> None:
        raise WeightsError(
            f"{source}: metadata field {key!r}: {problem}; re-export the weights with fcnseg"
        )

    if not isinstance(meta, dict):
        raise WeightsError(
            f"{source}: metadata is a JSON {type(meta).__name__}, not an object; re-export the "
            "weights with fcnseg"
        )
    _string(meta, "model", fail, required=True)
    count = meta.get("num_classes")
    if not _is_int(count) or not MIN_CLASSES <= count <= MAX_CLASSES:
        fail(
            "num_classes",
            f"expected a whole number in {MIN_CLASSES}..{MAX_CLASSES}, got {_short(count)}",
        )
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) != count
        or not all(isinstance(name, str) and len(name) <= MAX_STRING for name in classes)
    ):
        fail("classes", f"expected a list of {count} class names, got {_short(classes)}")
    palette = meta.get("palette")
    if not isinstance(palette, list) or len(palette) != count:
        length = len(palette) if isinstance(palette, list) else type(palette).__name__
        fail("palette", f"expected {count} colours (one per class), got {length}")
    for index, colour in enumerate(palette):  # type: ignore[arg-type]
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or not all(_is_int(c) and 0 <= c <= 255 for c in colour)
        ):
            fail("palette", f"colour {index} must be [r, g, b] with 0..255, got {_short(colour)}")
    if meta.get("normalization") not in NORMALIZATIONS:
        fail(
            "normalization",
            f"{_short(meta.get('normalization'))} is not one of {', '.join(NORMALIZATIONS)}",
        )
    options = meta.get("model_options", {})
    if not isinstance(options, dict):
        fail("model_options", f"expected a mapping, got {_short(options)}")
    for key, value in options.items():
        if not isinstance(key, str) or not _plain_json(value):
            fail(
                "model_options",
                f"{key!r} must hold plain JSON values (numbers within +-{MAX_OPTION_INT}), "
                f"got {_short(value)}",
            )
    if "ignore_index" in meta and not (
        _is_int(meta["ignore_index"]) and -1 <= meta["ignore_index"] <= 65535
    ):
        fail(
            "ignore_index",
            f"expected a whole number in -1..65535, got {_short(meta['ignore_index'])}",
        )
    _string(meta, "data_format", fail, required=False)
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        fail("config", f"expected a mapping (the training recipe), got {_short(meta['config'])}")
    inference = meta.get("inference")
    if inference is not None:
        if not isinstance(inference, dict) or not set(inference) <= {"mode", "options"}:
            fail("inference", f"expected {{mode, options}}, got {_short(inference)}")
        mode = inference.get("mode", "whole")
        stored = inference.get("options", {})
        if mode not in INFERENCE_OPTIONS:
            fail("inference", f"mode {_short(mode)} is not one of {', '.join(INFERENCE_OPTIONS)}")
        if not isinstance(stored, dict) or not set(stored) <= INFERENCE_OPTIONS[mode]:
            fail("inference", f"options {_short(stored)} do not fit mode {mode!r}")
        check_inference_options(mode, stored, f"{source}: metadata", WeightsError)
    return meta


def max_forward_pixels() -> int:
    """The cap in force: $FCNSEG_MAX_FORWARD_PIXELS when a positive integer, else the default."""
    text = os.environ.get(MAX_FORWARD_PIXELS_ENV, "").strip()
    if not text:
        return MAX_FORWARD_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"${MAX_FORWARD_PIXELS_ENV}={text!r}: must be a positive whole number")
    return int(text)


def forward_pixels(height: int, width: int, mode: str, options: Mapping[str, Any]) -> int:
    """Pixels the largest single forward pass of an `height` x `width` image takes."""
    if mode == "sliding":
        tile = options.get("tile_size", 0)
        sides = list(tile) if isinstance(tile, (list, tuple)) else [tile, tile]
        return min(height, int(sides[0])) * min(width, int(sides[-1]))
    if mode == "multiscale":
        scale = max((float(s) for s in options.get("scales", (1.0,))), default=1.0)
        return math.ceil(height * scale) * math.ceil(width * scale)
    return height * width


def check_forward_pixels(
    height: int, width: int, mode: str, options: Mapping[str, Any], source: object
) -> None:
    """DataError when one forward pass over `source` would exceed the pixel cap."""
    cap = max_forward_pixels()
    needed = forward_pixels(height, width, mode, options)
    if needed > cap:
        raise DataError(
            f"{source}: {width}x{height} image needs {needed / 1e6:.0f} Mpx in one forward pass "
            f"({mode}), above the {cap / 1e6:.0f} Mpx cap; use --mode sliding --tile-size 512, "
            f"smaller --scales, or raise ${MAX_FORWARD_PIXELS_ENV}"
        )
