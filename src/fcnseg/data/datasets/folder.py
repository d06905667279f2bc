"""A user's own data: `images/` and `masks/` matched by file stem, classes in a small file.

Layout, either split by subfolders:

    root/images/train/*.jpg   root/masks/train/*.png   (and val/, test/ alike)

or flat (`root/images/*.jpg`, `root/masks/*.png`), where the split is chosen deterministically
from the file names: the `val_fraction` of stems with the smallest CRC-32 hash form "val", the
rest "train" ("all" gives every image). Hashing names rather than shuffling keeps the split the
same on every machine and keeps existing images in their split when new ones are added.

Class file `root/classes.yaml` (or .yml / .json, or `class_file=PATH`), either

    names: [background, road, car]
    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional
    ignore_index: 255                                   # optional, default 255

or `classes: [{name: road, color: [128, 64, 128]}, ...]`. Masks are class-index PNGs, or colour
PNGs when the palette is given (pure black is void unless it is a class colour).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import check_pair, pair_folders, read_image, read_mask

CLASS_FILE_NAMES: tuple[str, ...] = ("classes.yaml", "classes.yml", "classes.json")
DEFAULT_VAL_FRACTION: float = 0.2
_RGB = 3


def _load_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; write the classes as YAML") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - JSON and YAML raise different types
        raise DataError(f"{path}: cannot parse ({type(error).__name__}); fix its syntax") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with 'names' (and optional 'palette')")
    return data


def _is_colour(value: object) -> bool:
    """[r, g, b] of integers 0-255 (strings, floats and booleans are not colours)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == _RGB
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    )


def load_class_file(path: str | Path) -> tuple[ClassInfo, bool]:
    """Read a class file; returns (ClassInfo, whether the palette was given by the user)."""
    path = Path(path)
    data = _load_mapping(path)
    if "classes" in data:
        entries = data["classes"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DataError(f"{path}: 'classes' must be a list of {{name:, color:}} entries")
        names = [e.get("name") for e in entries]
        colours = [e.get("color", e.get("colour")) for e in entries]
        palette = colours if all(c is not None for c in colours) else None
    else:
        names = data.get("names")
        palette = data.get("palette", data.get("colors", data.get("colours")))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: needs a non-empty list of class names under 'names'")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names repeat; give each class one unique name")
    given = palette is not None
    if given:
        if not isinstance(palette, list) or len(palette) != len(names):
            palette = None
        if palette is None or not all(_is_colour(c) for c in palette):
            raise DataError(
                f"{path}: palette must hold one [r, g, b] of integers 0-255 per class, "
                f"{len(names)} in all; fix it or remove it"
            )
        palette = tuple(tuple(c) for c in palette)
    else:
        palette = voc_colormap(len(names))
    ignore_index = data.get("ignore_index", VOC_IGNORE_INDEX)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise DataError(
            f"{path}: ignore_index {ignore_index!r} is not an integer; use e.g. "
            f"ignore_index: {VOC_IGNORE_INDEX}"
        )
    if 0 <= ignore_index < len(names):
        raise DataError(
            f"{path}: ignore_index {ignore_index} is a class id; use a value >= {len(names)}"
        )
    return ClassInfo(tuple(names), palette, ignore_index), given


def split_by_hash(stems: list[str], fraction: float) -> set[str]:
    """The validation stems: the `fraction` of stems with the smallest CRC-32 (at least one)."""
    if not 0 <= fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {fraction}")
    count = round(len(stems) * fraction)
    if fraction > 0 and len(stems) > 1:
        count = max(1, count)
    ranked = sorted(stems, key=lambda s: (zlib.crc32(s.encode("utf-8")), s))
    return set(ranked[:count])


class FolderDataset(SegmentationDataset):
    """Generic images/ + masks/ dataset (see the module docstring for the layout).

    Args:
        root: dataset folder.
        split: "train", "val", "test" (subfolder layout) or "train", "val", "all" (flat).
        class_file: explicit class file (default: root/classes.yaml|yml|json).
        val_fraction: share of a flat layout used for "val".
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        class_file: str | Path | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        self.class_info, self.colour_masks = load_class_file(self._class_file(class_file))
        image_dir, mask_dir = self.root / "images", self.root / "masks"
        if (image_dir / split).is_dir():
            self.samples = pair_folders(image_dir / split, mask_dir / split)
        elif any(p.is_dir() for p in image_dir.glob("*")) and not any(image_dir.glob("*.*")):
            raise DataError(
                f"{image_dir / split}: split folder not found; use one of "
                f"{sorted(p.name for p in image_dir.iterdir() if p.is_dir())}"
            )
        else:
            pairs = pair_folders(image_dir, mask_dir)
            if split == "all":
                self.samples = pairs
            elif split in ("train", "val"):
                val = split_by_hash([image.stem for image, _ in pairs], val_fraction)
                self.samples = [p for p in pairs if (p[0].stem in val) == (split == "val")]
            else:
                raise DataError(
                    f"split {split!r} needs images/{split}/; flat folders have train, val, all"
                )
            if not self.samples:
                raise DataError(
                    f"{image_dir}: split {split!r} is empty with val_fraction={val_fraction}; "
                    "add images or change val_fraction"
                )

    def _class_file(self, explicit: str | Path | None) -> Path:
        if explicit is not None:
            if not Path(explicit).is_file():
                raise FileNotFoundError(f"{explicit}: class file not found")
            return Path(explicit)
        for name in CLASS_FILE_NAMES:
            if (self.root / name).is_file():
                return self.root / name
        raise DataError(
            f"{self.root / CLASS_FILE_NAMES[0]}: class file not found; write one with "
            "'names: [...]' (optional 'palette', 'ignore_index')"
        )

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path, self.image_channels)
        palette = self.palette if self.colour_masks else None
        mask = read_mask(mask_path, palette=palette, ignore_index=self.ignore_index)
        check_pair(image, mask, self.num_classes, self.ignore_index, image_path, mask_path)
        return image, mask
