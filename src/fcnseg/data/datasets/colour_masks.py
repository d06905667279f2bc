"""Colour-coded RGB masks with a palette file: each class painted in its own colour.

Layout as the `folder` format (`root/images/<split>/`, `root/masks/<split>/` or flat folders cut
into train / val by name hash), with the palette in `root/palette.yaml` (.yml / .json, or
`palette_file=`):

    road: [128, 64, 128]        # class 0
    car: [0, 0, 142]            # class 1
    ignore: [[0, 0, 0]]         # optional: colours whose pixels are void

Classes are the palette's entries in file order. Unlike the `folder` format no colour is void
by default: a colour that is neither a class nor listed under `ignore` is an error naming the
file, the colour and a pixel position, so a mask saved with antialiased (blended) edges is caught
rather than learnt from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.annotation_common import choose_split, colours_to_ids, read_json
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.folder import DEFAULT_VAL_FRACTION
from fcnseg.data.io import check_pair, pair_folders, read_image

PALETTE_FILE_NAMES: tuple[str, ...] = ("palette.yaml", "palette.yml", "palette.json")
#: The palette key whose colours are void.
IGNORE_KEY = "ignore"
_RGB = 3


def _colour(value: object) -> tuple[int, int, int] | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == _RGB
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    return None


def read_palette(path: Path) -> tuple[list[str], dict[tuple[int, int, int], int | None]]:
    """Class names in file order and colour -> class index (None: void) of a palette file."""
    if path.suffix == ".json":
        data = read_json(path)
    else:
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise DataError(f"{path}: cannot parse ({type(error).__name__})") from None
    if not isinstance(data, Mapping) or not data:
        raise DataError(f"{path}: expected 'class name: [r, g, b]' lines")
    names: list[str] = []
    table: dict[tuple[int, int, int], int | None] = {}
    for name, value in data.items():
        is_void = name == IGNORE_KEY
        single = _colour(value)
        if single is not None:
            colours = [single]
        elif is_void and isinstance(value, (list, tuple)) and value:
            colours = [_colour(v) for v in value]
        else:
            colours = [None]
        if None in colours:
            raise DataError(f"{path}: {name!r} needs [r, g, b] with 0-255 integers")
        for colour in colours:
            if colour in table:
                raise DataError(f"{path}: colour {list(colour)} is given twice ({name!r})")
            table[colour] = None if is_void else len(names)  # type: ignore[index]
        if not is_void:
            names.append(str(name))
    if not names:
        raise DataError(f"{path}: lists no class colour")
    return names, table


class ColourMaskDataset(SegmentationDataset):
    """images/ + colour masks/ + a palette file (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        palette_file: str | Path | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        self.palette_file = self._palette_file(palette_file)
        names, table = read_palette(self.palette_file)
        self.colour_table = {
            colour: VOC_IGNORE_INDEX if index is None else index for colour, index in table.items()
        }
        palette = [next(c for c, i in table.items() if i == n) for n in range(len(names))]
        self.class_info = ClassInfo(tuple(names), tuple(palette), VOC_IGNORE_INDEX)
        images, masks = self.root / "images", self.root / "masks"
        if (images / split).is_dir():
            self.samples = pair_folders(images / split, masks / split)
        else:
            pairs = pair_folders(images, masks)
            self.samples = choose_split(pairs, lambda p: p[0].stem, split, val_fraction, images)

    def _palette_file(self, explicit: str | Path | None) -> Path:
        if explicit is not None:
            path = Path(explicit) if Path(explicit).is_absolute() else self.root / explicit
            if not path.is_file():
                raise DataError(f"{path}: palette file not found; fix palette_file")
            return path
        found = next((self.root / n for n in PALETTE_FILE_NAMES if (self.root / n).is_file()), None)
        if found is None:
            raise DataError(
                f"{self.root / PALETTE_FILE_NAMES[0]}: palette file not found; write one with "
                "'class name: [r, g, b]' lines"
            )
        return found

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        rgb = read_image(mask_path).permute(1, 2, 0).numpy()
        fix = f"add it to {self.palette_file.name} (or under 'ignore') or repaint those pixels"
        mask = colours_to_ids(rgb, self.colour_table, mask_path, fix)
        check_pair(image, mask, self.num_classes, self.ignore_index, image_path, mask_path)
        return image, mask
