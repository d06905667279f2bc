"""`fcnseg eval --trimap 2,5,10,20`: scores within N pixels of the label boundaries.

The counting is `fcnseg.metrics.TrimapScores` (boundary: a pixel with a 4-neighbour of another
ground-truth label, the ignore label included; band: chessboard distance <= N; ignore pixels
never scored). This module parses the widths, and turns the scores into the JSON entry and the
printed table, so `run_evaluation` only hooks the counter into its batches.
"""

from __future__ import annotations

import math
from typing import Any

from fcnseg.errors import UsageError
from fcnseg.metrics import TrimapScores

#: The widths the DeepLab papers plot (pixels) are up to 40; past the image it is the image.
MAX_TRIMAP_WIDTH = 1000


def parse_widths(text: str, where: str = "--trimap") -> tuple[int, ...]:
    """ "2,5,10,20" -> (2, 5, 10, 20); UsageError naming `where` and the fix otherwise."""
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        widths = ()
    if not widths or any(not 0 <= width <= MAX_TRIMAP_WIDTH for width in widths):
        raise UsageError(
            f"{where} {text!r}: expected comma-separated band widths in pixels, "
            f"0..{MAX_TRIMAP_WIDTH}, e.g. {where} 2,5,10,20"
        )
    return tuple(sorted(set(widths)))


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else value


def trimap_json(trimap: TrimapScores) -> dict[str, dict[str, Any]]:
    """Width (as a string key) -> {pixels, pixel_accuracy, mean_iu, per_class_iu (a list)}."""
    pixels = trimap.pixels()
    return {
        str(width): {
            "pixels": pixels[width],
            "pixel_accuracy": scores.pixel_accuracy,
            "mean_iu": scores.mean_iu,
            "per_class_iu": [_clean(value) for value in scores.per_class_iu],
        }
        for width, scores in trimap.scores().items()
    }


def format_trimap(entries: dict[str, dict[str, Any]]) -> str:
    """The printed table: one row per band width."""
    lines = [
        "trimap (ground-truth label boundaries +- N px):",
        f"{'N px':>6} {'pixels':>12} {'pixel acc':>10} {'mean IU':>8}",
    ]
    for width, entry in entries.items():
        lines.append(
            f"{width:>6} {entry['pixels']:>12} {100 * entry['pixel_accuracy']:>10.1f} "
            f"{100 * entry['mean_iu']:>8.1f}"
        )
    return "\n".join(lines)
