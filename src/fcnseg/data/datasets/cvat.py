"""CVAT's "Segmentation mask 1.1" export (the PASCAL VOC-like layout CVAT writes).

Layout, as exported (images only when "Save images" was ticked; else copy them in):

    root/labelmap.txt                      # label:color_rgb:parts:actions
    root/ImageSets/Segmentation/<subset>.txt
    root/JPEGImages/<name>.<jpg|png|...>
    root/SegmentationClass/<name>.png      # RGB, one colour per label (used here)
    root/SegmentationObject/<name>.png     # instances (not used)

Split: `ImageSets/Segmentation/<split>.txt` when the export has that subset; otherwise the one
list it has (CVAT names it after the task's subset, usually `default.txt`), or every mask of
SegmentationClass/, cut into train / val by name hash as the `folder` format does ("all" gives
every image).

Classes: the lines of labelmap.txt, in their order (CVAT writes `background:0,0,0::` first,
which is the colour of unannotated pixels). A colour that labelmap.txt does not list is an error
naming the mask file, the colour and a pixel that has it. Overlaps were resolved by CVAT when it
painted the mask (its z-order).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.annotation_common import choose_split, colours_to_ids
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.folder import DEFAULT_VAL_FRACTION
from fcnseg.data.io import check_pair, index_by_stem, read_id_list, read_image

_RGB = 3


def read_labelmap(path: Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours of a CVAT/Datumaro labelmap.txt (`name:r,g,b:parts:actions` lines)."""
    if not path.is_file():
        raise DataError(f"{path}: labelmap.txt not found; export with 'Segmentation mask 1.1'")
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(v) for v in rest.split(":", 1)[0].split(","))
        except ValueError:
            colour = ()
        if len(colour) != _RGB or not all(0 <= v <= 255 for v in colour):
            raise DataError(f"{path}: line {number} needs 'name:r,g,b::'; got {line.strip()!r}")
        names.append(name.strip())
        colours.append(colour)  # type: ignore[arg-type]
    if not names or len(set(names)) != len(names) or len(set(colours)) != len(colours):
        raise DataError(f"{path}: needs one line per label, names and colours all different")
    return names, colours


class CVATSegmentationMask(SegmentationDataset):
    """A CVAT "Segmentation mask 1.1" export (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        names, colours = read_labelmap(self.root / "labelmap.txt")
        self.class_info = ClassInfo(tuple(names), tuple(colours), VOC_IGNORE_INDEX)
        self.colour_table = {colour: index for index, colour in enumerate(colours)}
        ids = self._ids(split, val_fraction)
        masks = index_by_stem(self.root / "SegmentationClass")
        images = (
            index_by_stem(self.root / "JPEGImages") if (self.root / "JPEGImages").is_dir() else {}
        )
        missing = [i for i in ids if i not in images or i not in masks]
        if missing:
            where = "JPEGImages" if missing[0] not in images else "SegmentationClass"
            raise DataError(
                f"{self.root / where}: no file for {missing[0]!r} ({len(missing)} missing); "
                "export with images or copy them into JPEGImages/"
            )
        self.samples = [(images[i], masks[i]) for i in ids]

    def _ids(self, split: str, val_fraction: float) -> list[str]:
        lists = self.root / "ImageSets" / "Segmentation"
        if (lists / f"{split}.txt").is_file():
            return read_id_list(lists / f"{split}.txt")
        found = sorted(lists.glob("*.txt")) if lists.is_dir() else []
        if len(found) == 1:
            every = read_id_list(found[0])
        elif not found and (self.root / "SegmentationClass").is_dir():
            every = sorted(index_by_stem(self.root / "SegmentationClass"))
        else:
            raise DataError(
                f"{lists / f'{split}.txt'}: split not found; this export has "
                f"{', '.join(p.stem for p in found) or 'no lists'}"
            )
        return choose_split(every, lambda i: i, split, val_fraction, lists)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        rgb = read_image(mask_path).permute(1, 2, 0).numpy()  # the safe decoder, as RGB
        mask = colours_to_ids(
            rgb, self.colour_table, mask_path, "add the label to labelmap.txt or repaint it"
        )
        check_pair(image, mask, self.num_classes, self.ignore_index, image_path, mask_path)
        return image, mask
