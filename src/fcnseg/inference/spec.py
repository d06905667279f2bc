"""How a model is run over an image: the inference mode and its options, defined and checked once.

Why one frozen spec: the mode and its options used to live in five places (the metadata schema's
table, its range checks, the recipe check, the command line and `predict_probs`' pop list), and
a new option had to be added to each. `InferenceSpec` is the one list of options (the keyword
arguments of `fcnseg.inference.predict_logits`), their bounds, the options a weights file may
recommend per mode, and the pixel cap of one forward pass. It imports no torch, so the recipe
check and the command line can use it cheaply.

The options keep the order they were given in: the eval JSON records them as given
(`inference_options`), and a stored recommendation merged with command-line options must write
the same JSON as before.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fcnseg.choices import INFERENCE_MODES
from fcnseg.errors import DataError, FcnsegError, UsageError

#: Inference scale factors accepted (multi-scale), exclusive low, inclusive high.
MAX_SCALE = 4.0
MAX_SCALES = 16
#: Sliding-window tile side bounds (pixels).
MIN_TILE, MAX_TILE = 16, 4096
#: Pixels one forward pass may take (input height x width after scaling): 36 Mpx is a 6000 x 6000
#: image at scale 1; the logits of a 21-class net on it already take ~3 GB.
MAX_FORWARD_PIXELS = 36_000_000
#: Environment variable that overrides MAX_FORWARD_PIXELS.
MAX_FORWARD_PIXELS_ENV = "FCNSEG_MAX_FORWARD_PIXELS"
BLEND_MODES: tuple[str, ...] = ("uniform", "gaussian", "ramp")
INNER_MODES: tuple[str, ...] = ("whole", "sliding")
#: Options a weights file may recommend with each mode (its metadata "inference").
RECOMMENDABLE_OPTIONS: dict[str, frozenset[str]] = {
    "whole": frozenset(),
    "sliding": frozenset({"tile_size", "overlap", "blend"}),
    "multiscale": frozenset({"scales", "flip"}),
    "overlap_tile": frozenset({"tile_size"}),
}
#: Input pixels an overlap tile adds per side beyond its output tile (the U-Net's 92 px of
#: context), and the output tile used when none is given (figure 1's 388): for the pixel cap.
OVERLAP_TILE_CONTEXT, OVERLAP_TILE_DEFAULT = 92, 388


def is_int(value: Any) -> bool:
    """A whole number that is not a bool (JSON true would pass `isinstance(value, int)`)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def short(value: Any) -> str:
    """`repr(value)` cut to 60 characters, so a hostile value keeps the message on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sides(value: Any, low: int) -> str | None:
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if 1 <= len(sides) <= 2 and all(is_int(side) and low <= side <= MAX_TILE for side in sides):
        return None
    return f"expected 1 or 2 whole numbers in {low}..{MAX_TILE}, got {short(value)}"


def _scales(value: Any) -> str | None:
    if (
        isinstance(value, (list, tuple))
        and 1 <= len(value) <= MAX_SCALES
        and all(is_number(s) and 0 < s <= MAX_SCALE for s in value)
    ):
        return None
    return f"expected 1 to {MAX_SCALES} numbers in (0, {MAX_SCALE:g}], got {short(value)}"


def _problem(key: str, value: Any) -> str | None:
    """Why `value` is not a valid inference option `key`, or None when it is."""
    if key == "tile_size":
        return _sides(value, MIN_TILE)
    if key == "tile_stride":
        return _sides(value, 1)
    if key == "scales":
        return _scales(value)
    if key == "overlap":
        ok = is_number(value) and 0 <= value < 1
        return None if ok else f"expected a number in [0, 1), got {short(value)}"
    if key == "blend":
        ok = value in BLEND_MODES
        return None if ok else f"expected one of {', '.join(BLEND_MODES)}, got {short(value)}"
    if key == "flip":
        return None if isinstance(value, bool) else f"expected true or false, got {short(value)}"
    if key == "tile_batch":
        ok = is_int(value) and 1 <= value <= 1024
        return None if ok else f"expected a whole number in 1..1024, got {short(value)}"
    if key == "inner":
        ok = value in INNER_MODES
        return None if ok else f"expected one of {', '.join(INNER_MODES)}, got {short(value)}"
    return f"unknown option; known: {', '.join(OPTION_NAMES)}"


def _frozen(value: Any) -> Any:
    """Lists become tuples so the spec is hashable; JSON writes both as lists."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class InferenceSpec:
    """The inference mode and the options given for it (None: predict_logits' default).

    Build with `InferenceSpec.parse`, which checks every option's type and range; `options()`
    gives the keyword arguments of `fcnseg.inference.predict_logits`, in the order given.
    """

    mode: str = "whole"
    tile_size: int | tuple[int, ...] | None = None
    tile_stride: int | tuple[int, ...] | None = None
    overlap: float | None = None
    blend: str | None = None
    tile_batch: int | None = None
    scales: tuple[float, ...] | None = None
    flip: bool | None = None
    inner: str | None = None
    #: The names of the options that were given, in the order they were given.
    given: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        mode: Any,
        options: Any = None,
        where: str = "command line",
        error: type[FcnsegError] = UsageError,
    ) -> InferenceSpec:
        """The spec of `mode` with `options`, or `error` naming `where` and the option at fault.

        `where` prefixes the message (the weights file, or the command line); `error` is the
        type raised (WeightsError for metadata, UsageError for command-line options).
        """
        options = {} if options is None else options

        def fail(key: str, problem: str) -> None:
            raise error(f"{where}: inference {key}: {problem}")

        if mode not in INFERENCE_MODES:
            fail("mode", f"{short(mode)} is not one of {', '.join(INFERENCE_MODES)}")
        if not isinstance(options, Mapping):
            fail("options", f"expected a mapping, got {short(options)}")
        for key, value in options.items():
            problem = _problem(key, value)
            if problem is not None:
                fail(str(key), problem)
        if mode == "sliding" and "tile_size" not in options:
            fail("tile_size", "sliding inference needs a tile size (--tile-size 512)")
        values = {key: _frozen(value) for key, value in options.items()}
        return cls(mode=mode, given=tuple(options), **values)

    def options(self) -> dict[str, Any]:
        """The given options as predict_logits keyword arguments, in the order given."""
        return {name: getattr(self, name) for name in self.given}

    def with_options(
        self, options: Mapping[str, Any], where: str = "command line"
    ) -> InferenceSpec:
        """This spec with `options` added or replacing its own (checked the same way)."""
        return InferenceSpec.parse(self.mode, {**self.options(), **options}, where)

    def recommendable(self) -> bool:
        """Whether a weights file may store this spec: only its mode's options."""
        return set(self.given) <= RECOMMENDABLE_OPTIONS[self.mode]

    def forward_pixels(self, height: int, width: int, input_scale: float = 1.0) -> int:
        """Pixels the largest single forward pass of an `height` x `width` image takes.

        `input_scale` is the model's own resize before its backbone (`SegmentationShell`'s
        `input_scale`: the shipped CamVid nets run at 1.334x and 2x): a 480 x 360 image at 2x
        is 691 200 pixels inside the net, and memory follows those, not the file's pixels.
        """
        if self.mode == "sliding":
            tile = self.tile_size or 0
            sides = list(tile) if isinstance(tile, tuple) else [tile, tile]
            height, width = min(height, int(sides[0])), min(width, int(sides[-1]))
            return _scaled_area(height, width, input_scale)
        if self.mode == "overlap_tile":
            tile = self.tile_size or OVERLAP_TILE_DEFAULT
            sides = list(tile) if isinstance(tile, tuple) else [tile, tile]
            margin = 2 * OVERLAP_TILE_CONTEXT
            return (min(height, int(sides[0])) + margin) * (min(width, int(sides[-1])) + margin)
        if self.mode == "multiscale":
            scale = max((float(s) for s in self.scales or (1.0,)), default=1.0)
            return _scaled_area(height, width, scale * input_scale)
        return _scaled_area(height, width, input_scale)

    def request_pixels(self, height: int, width: int, input_scale: float = 1.0) -> int:
        """What one image's peak memory scales with, in pixels (`fcnseg serve`'s budget unit).

        The largest forward pass (input scale and the mode's largest scale applied; a sliding
        pass runs `tile_batch` tiles at once) plus a quarter of the image's own pixels for the
        full-size buffers that outlive each pass (sliding's sums and weights, multi-scale's
        mean scores, the labels). Flips run one after the other, so they cost time, not memory.
        Measured on the shipped CamVid nets: ~450 bytes of peak RSS per forward pixel, ~100 per
        full-size pixel (benchmarks/RESULTS.md, serve memory).
        """
        forward = self.forward_pixels(height, width, input_scale)
        if self.mode == "sliding":
            forward *= self.tile_batch or 1
        return forward + math.ceil(height * width / 4)

    def check_forward_pixels(
        self, height: int, width: int, source: object, input_scale: float = 1.0
    ) -> None:
        """DataError when one forward pass over `source` would exceed the pixel cap."""
        cap = max_forward_pixels()
        needed = self.forward_pixels(height, width, input_scale)
        if needed > cap:
            scaled = "" if input_scale == 1.0 else f" at the model's input scale {input_scale:g}"
            raise DataError(
                f"{source}: {width}x{height} image needs {needed / 1e6:.0f} Mpx in one forward "
                f"pass ({self.mode}{scaled}), above the {cap / 1e6:.0f} Mpx cap; use --mode "
                f"sliding --tile-size 512, smaller --scales, or raise ${MAX_FORWARD_PIXELS_ENV}"
            )


def _scaled_area(height: int, width: int, scale: float) -> int:
    """Pixels of `height` x `width` resized by `scale` (each side rounded up)."""
    if scale == 1.0:
        return height * width
    return math.ceil(height * scale) * math.ceil(width * scale)


#: Every option an InferenceSpec holds: the keyword arguments of predict_logits.
OPTION_NAMES: tuple[str, ...] = tuple(
    field.name for field in fields(InferenceSpec) if field.name not in ("mode", "given")
)


def max_forward_pixels() -> int:
    """The cap in force: $FCNSEG_MAX_FORWARD_PIXELS when a positive integer, else the default."""
    text = os.environ.get(MAX_FORWARD_PIXELS_ENV, "").strip()
    if not text:
        return MAX_FORWARD_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"${MAX_FORWARD_PIXELS_ENV}={text!r}: must be a positive whole number")
    return int(text)
