"""What the labelling-tool formats share: class lists, colour tables, splits and painting.

The formats of `coco`, `labelme`, `cvat`, `labelstudio` and `colour_masks` describe regions
(polygons, RLE, brush masks, colours) rather than class-index masks. Each turns them into the
one mask the rest of fcnseg reads (int64 H x W of class ids, void = `ignore_index`), with its
class order and overlap rule stated in its module docstring and in docs/data_formats.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.folder import split_by_hash

#: Class list files looked for in a dataset root, in this order.
CLASS_LIST_NAMES: tuple[str, ...] = (
    "classes.txt",
    "labels.txt",
    "classes.yaml",
    "classes.yml",
    "classes.json",
)
#: Class names that mean "unlabelled": the pixels no region covers get this class when the
#: class list has it (LabelMe's labelme2voc convention is `_background_`), else void.
BACKGROUND_NAMES: tuple[str, ...] = ("_background_", "background")
#: A class-list entry or region label with this name is void (LabelMe's `__ignore__`).
IGNORE_LABEL = "__ignore__"

Item = TypeVar("Item")


def read_json(path: Path) -> object:
    """Parse a JSON file; a syntax error is one DataError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(
            f"{path}: not readable JSON ({type(error).__name__}: {error}); re-export it"
        ) from None


def read_class_list(path: Path) -> list[str]:
    """Class names from a .txt (one a line, '#' comments) or a YAML/JSON list / `names:` file."""
    if path.suffix == ".txt":
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        names = [line for line in lines if line]
    else:
        if path.suffix == ".json":
            data = read_json(path)
        else:
            import yaml

            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise DataError(f"{path}: cannot parse ({type(error).__name__})") from None
        names = data.get("names") if isinstance(data, Mapping) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: needs a non-empty list of class names (one per line in .txt)")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names repeat; give each class one line")
    return names


def find_class_list(root: Path, explicit: str | Path | None) -> Path | None:
    """The class list file: `explicit` (must exist) or the first of CLASS_LIST_NAMES in root."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise DataError(f"{explicit}: class list not found; fix the class_file option")
        return Path(explicit)
    return next((root / n for n in CLASS_LIST_NAMES if (root / n).is_file()), None)


def classes_and_background(names: Sequence[str]) -> tuple[tuple[str, ...], int | None]:
    """Names without `__ignore__`, and the index unlabelled pixels get (None: void)."""
    kept = tuple(n for n in names if n != IGNORE_LABEL)
    background = next((kept.index(n) for n in BACKGROUND_NAMES if n in kept), None)
    return kept, background


def choose_split(
    items: list[Item], stem: Callable[[Item], str], split: str, val_fraction: float, where: Path
) -> list[Item]:
    """A flat list cut into "train" / "val" by name hash (as the folder format), or "all"."""
    if split == "all":
        return items
    if split not in ("train", "val"):
        raise DataError(f"{where}: split {split!r} not found; this layout has train, val, all")
    val = split_by_hash([stem(item) for item in items], val_fraction)
    chosen = [item for item in items if (stem(item) in val) == (split == "val")]
    if not chosen:
        raise DataError(
            f"{where}: split {split!r} is empty with val_fraction={val_fraction}; add images or "
            "change val_fraction"
        )
    return chosen


def colour_code(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W int64 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_ids(
    rgb: np.ndarray, table: Mapping[tuple[int, int, int], int], path: Path, fix: str
) -> Tensor:
    """Map every pixel's colour through `table`; an unknown colour is one DataError naming the
    file, the colour and the first pixel (row, col) that has it, then `fix`."""
    code = colour_code(rgb)
    keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in table), dtype=np.int64)
    values = np.array([table[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in keys])
    position = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    unknown = keys[position] != code
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        colour = tuple(int(c) for c in rgb[y, x])
        raise DataError(
            f"{path}: colour {colour} at (row {y}, col {x}) is not in the palette; {fix}"
        )
    return torch.from_numpy(values[position].astype(np.int64))


def paint_regions(
    shape: tuple[int, int], regions: Sequence[tuple[np.ndarray, int]], fill: int
) -> Tensor:
    """A mask of `shape` filled with `fill`, each (boolean region, class) painted in order (a
    later region overwrites an earlier one where they overlap)."""
    mask = np.full(shape, fill, dtype=np.int64)
    for region, value in regions:
        mask[region] = value
    return torch.from_numpy(mask)


def smaller_last(regions: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, int]]:
    """Regions ordered by decreasing pixel area (stable), so that painting in this order lets
    the smaller region win an overlap: an object drawn over the stuff around it keeps its pixels
    whatever order the tool wrote them in."""
    return sorted(regions, key=lambda item: -int(item[0].sum()))
