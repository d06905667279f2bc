"""Compare two outputs of benchmarks/redesign_parity.sh: eval JSONs key by key, predicted
class-index PNGs pixel by pixel (and byte by byte). Exit 1 when anything differs.

    python benchmarks/redesign_parity_compare.py OUT_BEFORE OUT_AFTER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def compare_json(before: Path, after: Path) -> list[str]:
    """Keys whose values differ (absolute cache paths are compared by file name only)."""
    old, new = _flatten(json.loads(before.read_text())), _flatten(json.loads(after.read_text()))
    problems = []
    for key in sorted(set(old) | set(new)):
        first, second = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(first, str) and isinstance(second, str) and first.startswith("/"):
            first, second = Path(first).name, Path(second).name
        if first != second:
            problems.append(f"{before.name}: {key}: {first!r} != {second!r}")
    return problems


def compare_pngs(before: Path, after: Path) -> tuple[int, list[str]]:
    """(files compared, problems) for the class-index PNGs of two predict folders."""
    problems, count = [], 0
    for old in sorted(before.rglob("*.png")):
        new = after / old.relative_to(before)
        if not new.is_file():
            problems.append(f"{new}: missing")
            continue
        count += 1
        if not np.array_equal(np.asarray(Image.open(old)), np.asarray(Image.open(new))):
            problems.append(f"{new}: labels differ")
        elif old.read_bytes() != new.read_bytes():
            problems.append(f"{new}: same labels, different bytes")
    return count, problems


def main(before: Path, after: Path) -> int:
    problems: list[str] = []
    jsons = sorted(before.glob("eval-*.json"))
    for path in jsons:
        problems += compare_json(path, after / path.name)
    pngs = 0
    for folder in sorted(before.glob("predict-*")):
        count, found = compare_pngs(folder, after / folder.name)
        pngs += count
        problems += found
    for line in problems:
        print(line)
    print(f"{len(jsons)} eval JSONs, {pngs} predicted PNGs compared: {len(problems)} differences")
    return 1 if problems or not jsons or not pngs else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
