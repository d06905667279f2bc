"""The candidates of `fcnseg crf-search`: DeepLab's coarse grid, then finer steps around the best.

Why apart from the search: the grid is pure arithmetic on `CrfParams` (no torch, no data), and
its rules (which values are searched, in what order, how the refinement narrows) are tested on
their own. A parameter given one value is held fixed; one given several is searched, and the
refinement tries +-half the grid's spacing around the best point, halving again each round.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

from fcnseg.constants import (
    DEEPLAB_CRF_SEARCH_THETA_ALPHA,
    DEEPLAB_CRF_SEARCH_THETA_BETA,
    DEEPLAB_CRF_SEARCH_W1,
)
from fcnseg.errors import UsageError
from fcnseg.inference.crf_params import NAMES, CrfParams

#: The coarse grid DeepLab searched (the other three values fixed at their defaults).
DEEPLAB_GRID: dict[str, tuple[float, ...]] = {
    "w1": DEEPLAB_CRF_SEARCH_W1,
    "theta_alpha": DEEPLAB_CRF_SEARCH_THETA_ALPHA,
    "theta_beta": DEEPLAB_CRF_SEARCH_THETA_BETA,
}


def search_grid(values: Mapping[str, Sequence[float]] | None = None) -> dict[str, tuple]:
    """Every parameter's coarse values: DeepLab's grid, `values` replacing single entries, and
    the defaults (one value, held fixed) for the rest. Each value is checked by CrfParams."""
    grid: dict[str, tuple] = {name: (getattr(CrfParams(), name),) for name in NAMES}
    grid.update(DEEPLAB_GRID)
    for name, given in (values or {}).items():
        if not given:
            continue
        for value in given:
            CrfParams.parse({name: value}, f"--{name.replace('_', '-')}")
        grid[name] = tuple(sorted(set(given)))
    return grid


def coarse_candidates(grid: Mapping[str, Sequence[float]], seed: int = 0) -> list[CrfParams]:
    """The product of the grid's values, in a seeded random order (see the module doc)."""
    combos = [
        CrfParams.parse(dict(zip(NAMES, values, strict=True)), "grid")
        for values in itertools.product(*(grid[name] for name in NAMES))
    ]
    random.Random(seed).shuffle(combos)
    return combos


def refined_candidates(
    best: CrfParams, steps: Mapping[str, float], tried: set[CrfParams]
) -> list[CrfParams]:
    """The points around `best` at +-`steps` (and 0) on every searched axis, not yet tried.

    Values that would leave the valid range are dropped; iterations stay whole numbers.
    """
    axes: list[list[float]] = []
    for name in NAMES:
        centre = getattr(best, name)
        step = steps.get(name, 0.0)
        if name == "iterations":
            step = float(int(step))
        values = {centre} if step <= 0 else {centre - step, centre, centre + step}
        axes.append(sorted(v for v in values if _valid(name, v)))
    candidates = []
    for values in itertools.product(*axes):
        params = CrfParams.parse(dict(zip(NAMES, values, strict=True)), "refinement")
        if params not in tried:
            candidates.append(params)
    return candidates


def _valid(name: str, value: float) -> bool:
    try:
        CrfParams.parse({name: int(value) if name == "iterations" else value})
    except UsageError:
        return False
    return True


def grid_steps(grid: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Half the smallest spacing of each searched axis: the refinement's first step."""
    steps = {}
    for name, values in grid.items():
        ordered = sorted(values)
        if len(ordered) > 1:
            steps[name] = min(b - a for a, b in itertools.pairwise(ordered)) / 2
    return steps
