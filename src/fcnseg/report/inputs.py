"""The run files `fcnseg report RUN` reads, each checked for the shape the pages draw from.

Why checked here: the pages index into these files (a score per class, a colour per class, a
square confusion matrix), so a malformed one (hand-edited, written by another tool, a list
where an object belongs, "abc" for a score) used to surface as a traceback from deep inside
matplotlib or the HTML code. Each reader returns the data or raises one `DataError` line that
names the file, what is wrong and the fix. A torn last line of val_scores.jsonl (a run killed
while appending) is skipped: that is a normal run's state, not a malformed file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from fcnseg.errors import DataError

__all__ = [
    "check_metadata",
    "read_eval",
    "read_metrics",
    "read_summary",
    "read_text",
    "read_val_scores",
]

_FIX = "fix or remove it, or re-create it with fcnseg"


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; {_FIX}") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}); {_FIX}") from None


def _score(value: Any) -> bool:
    """A number or null (NaN is JSON's missing score too)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _scores_by_name(value: Any) -> bool:
    return isinstance(value, dict) and all(_score(v) for v in value.values())


def read_metrics(path: Path) -> list[dict[str, str]]:
    """metrics.csv rows ([] when absent); cells that are not numbers are skipped when drawn."""
    if not path.is_file():
        return []
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error}); {_FIX}") from None
    if rows and "step" not in rows[0]:
        raise DataError(f"{path}: no 'step' column; {_FIX}")
    return rows


def read_val_scores(path: Path) -> dict[int, dict[str, float | None]]:
    """Each validation's per-class IU by step; a repeated step (a resume) keeps the last."""
    by_step: dict[int, dict[str, float | None]] = {}
    if not path.is_file():
        return by_step
    lines = read_text(path).splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn by a kill while appending
            raise DataError(f"{path}: line {number} is not JSON; {_FIX}") from None
        step = record.get("step") if isinstance(record, dict) else None
        per_class = record.get("per_class_iu", {}) if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not _scores_by_name(per_class):
            raise DataError(
                f"{path}: line {number} is not a validation record (an integer 'step' and "
                f"'per_class_iu' of class -> number); {_FIX}"
            )
        by_step[step] = {k: _finite_or_none(v) for k, v in per_class.items()}
    return by_step


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def read_summary(path: Path) -> dict[str, Any] | None:
    """summary.json as an object (None when absent)."""
    if not path.is_file():
        return None
    summary = _json(path)
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object (how the run ended); {_FIX}")
    return summary


def read_eval(path: Path) -> dict[str, Any]:
    """An eval-*.json written by `fcnseg eval`, with the fields the report draws checked."""
    payload = _json(path)
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object of scores; {_FIX}")
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        if not _score(payload.get(key)):
            raise DataError(f"{path}: '{key}' is {payload[key]!r}, not a number; {_FIX}")
    for key in ("per_class_iu", "per_class_accuracy"):
        if not _scores_by_name(payload.get(key, {})):
            raise DataError(f"{path}: '{key}' must map class names to numbers; {_FIX}")
    matrix = payload.get("confusion_matrix")
    if matrix is not None and not _square_counts(matrix):
        raise DataError(
            f"{path}: 'confusion_matrix' must be N rows of N counts >= 0 (N classes); {_FIX}"
        )
    per_image = payload.get("per_image", [])
    if not isinstance(per_image, list) or not all(
        isinstance(entry, dict) and _score(entry.get("mean_iu")) for entry in per_image
    ):
        raise DataError(f"{path}: 'per_image' must be a list of {{mean_iu: number}}; {_FIX}")
    return payload


def _square_counts(matrix: Any) -> bool:
    return (
        isinstance(matrix, list)
        and all(isinstance(row, list) and len(row) == len(matrix) for row in matrix)
        and all(
            _score(v) and v is not None and math.isfinite(v) and v >= 0 for r in matrix for v in r
        )
    )


def check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    """The weights metadata the pages draw from: class names and one [r, g, b] per class."""
    if not isinstance(meta, dict):
        raise DataError(f"{path}: the fcnseg metadata is not a JSON object; {_FIX}")
    classes = meta.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: metadata 'classes' must be a list of names; {_FIX}")
    palette = meta.get("palette")
    if palette is not None and not (
        isinstance(palette, list)
        and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        raise DataError(
            f"{path}: metadata 'palette' must be a list of [r, g, b] integers 0-255; {_FIX}"
        )
    return meta
