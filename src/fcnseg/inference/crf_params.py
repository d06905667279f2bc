"""The dense CRF's parameters as one checked value: command line, weights metadata and search.

Why one frozen value: `--crf` on eval/predict/serve, the "crf" entry a weights file may store as
its default post-processing, and `fcnseg crf-search`'s result are the same six numbers; their
names, bounds and defaults live here once. The names are the DeepLab papers' (w1, theta_alpha,
theta_beta for the appearance kernel; w2, theta_gamma for the smoothness kernel), which is how
the stored JSON spells them. Imports no torch, so the parser and the metadata check stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fcnseg.constants import (
    DEEPLAB_CRF_BILATERAL_COMPAT,
    DEEPLAB_CRF_BILATERAL_SRGB,
    DEEPLAB_CRF_BILATERAL_SXY,
    DEEPLAB_CRF_GAUSSIAN_COMPAT,
    DEEPLAB_CRF_GAUSSIAN_SXY,
    DEEPLAB_CRF_ITERATIONS,
)
from fcnseg.errors import FcnsegError, UsageError

#: Upper bounds: weights above 100 or widths above 10 000 px / levels are no longer a CRF the
#: unary term can move, and 100 iterations is ten times DeepLab's (mean field has converged).
MAX_WEIGHT = 100.0
MAX_WIDTH = 10_000.0
MAX_ITERATIONS = 100
INSTALL_HINT = "pip install 'fcnseg[crf]'"


@dataclass(frozen=True)
class CrfParams:
    """Fully connected CRF parameters (Kraehenbuehl & Koltun 2011, as DeepLab names them).

    Defaults are DeepLab's published values (fcnseg.constants, with their source).
    """

    #: Appearance (bilateral) kernel weight and its widths: position (px) and colour (levels).
    w1: float = DEEPLAB_CRF_BILATERAL_COMPAT
    theta_alpha: float = DEEPLAB_CRF_BILATERAL_SXY
    theta_beta: float = DEEPLAB_CRF_BILATERAL_SRGB
    #: Smoothness (position-only) kernel weight and width (px).
    w2: float = DEEPLAB_CRF_GAUSSIAN_COMPAT
    theta_gamma: float = DEEPLAB_CRF_GAUSSIAN_SXY
    #: Mean-field iterations.
    iterations: int = DEEPLAB_CRF_ITERATIONS

    @classmethod
    def parse(
        cls,
        values: Any,
        where: str = "command line",
        error: type[FcnsegError] = UsageError,
        base: CrfParams | None = None,
    ) -> CrfParams:
        """`base` (default: DeepLab's) with `values` ({name: number}) in place, each checked;
        `error` names `where` and the field at fault in one line."""
        if not isinstance(values, Mapping):
            raise error(f"{where}: crf: expected a mapping of {', '.join(NAMES)}, got {values!r}")
        checked: dict[str, Any] = {}
        for key, value in values.items():
            problem = _problem(key, value)
            if problem:
                raise error(f"{where}: crf {key}: {problem}")
            checked[key] = int(value) if key == "iterations" else float(value)
        return replace(base or cls(), **checked)

    def as_dict(self) -> dict[str, float | int]:
        """The JSON form (weights metadata "crf", eval JSON, serve answers)."""
        return asdict(self)

    def kernel_options(self) -> dict[str, float | int]:
        """The keyword arguments of `fcnseg.inference.crf.crf_refine`."""
        return {
            "iterations": self.iterations,
            "gaussian_sxy": self.theta_gamma,
            "gaussian_compat": self.w2,
            "bilateral_sxy": self.theta_alpha,
            "bilateral_srgb": self.theta_beta,
            "bilateral_compat": self.w1,
        }

    def describe(self) -> str:
        """One line: `w1 4 theta_alpha 67 theta_beta 3 w2 3 theta_gamma 3, 10 iterations`."""
        kernels = " ".join(f"{name} {getattr(self, name):g}" for name in NAMES[:-1])
        return f"{kernels}, {self.iterations} iterations"


#: The parameter names, in the order the papers list them.
NAMES: tuple[str, ...] = tuple(field.name for field in fields(CrfParams))


def _problem(key: Any, value: Any) -> str | None:
    """Why `value` is not a usable CRF parameter `key` (None when it is)."""
    if key not in NAMES:
        return f"unknown parameter; known: {', '.join(NAMES)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {value!r}"
    if key == "iterations":
        ok = float(value).is_integer() and 0 <= value <= MAX_ITERATIONS
        return None if ok else f"expected a whole number in 0..{MAX_ITERATIONS}, got {value!r}"
    bound = MAX_WEIGHT if key.startswith("w") else MAX_WIDTH
    low_ok = value >= 0 if key.startswith("w") else value > 0
    if math.isfinite(value) and low_ok and value <= bound:
        return None
    low = "0 <=" if key.startswith("w") else "0 <"
    return f"expected a number with {low} value <= {bound:g}, got {value!r}"


def choose_crf(
    stored: CrfParams | None, enabled: bool | None, overrides: Mapping[str, Any] | None = None
) -> CrfParams | None:
    """The CRF a command runs, or None for none.

    `enabled` is --crf (True), --no-crf (False) or neither (None). With --crf: the stored
    parameters when the weights have them, else DeepLab's; with neither: the stored ones (the
    weights' default post-processing) or none; --no-crf turns any of them off. `overrides`
    (--crf-w1 ...) replace single values and need a CRF to apply to.
    """
    overrides = dict(overrides or {})
    if enabled is False:
        if overrides:
            raise UsageError("--no-crf: cannot be combined with --crf-* parameters; drop one")
        return None
    if enabled is None and stored is None:
        if overrides:
            flags = ", ".join(f"--crf-{name.replace('_', '-')}" for name in overrides)
            raise UsageError(f"{flags}: the weights store no CRF; add --crf to run one")
        return None
    return CrfParams.parse(overrides, "command line", base=stored or CrfParams())
