"""COCO instance-segmentation JSON read as semantic masks (polygons and RLE, via pycocotools).

Layout (the annotation file of a split is the first that exists):

    root/annotations/instances_<split>.json | root/annotations/<split>.json | root/<split>.json
    root/images/<split>/<file_name> | root/images/<file_name> | root/<split>/<file_name>

or `annotation_file=` / `image_dir=` options. `file_name` may hold subfolders; it must stay
inside the image folder. An export with one file for everything (CVAT's and other tools' COCO
export: `annotations/instances_default.json` + `images/`) is cut into train / val by image name
hash, as the `folder` format does, when `annotations/` holds that one file and it is not named
for a split ("all": every image).

Classes: "background" (index 0; the pixels no annotation covers), then the categories sorted
by category id, so ids 1, 3, 7 become classes 1, 2, 3 whatever order the file lists them in (a
category named "background" or "_background_" is the background itself). `background=False`
drops the extra class: unlabelled pixels become void and the categories start at 0.

Overlaps: non-crowd annotations are painted largest area first, so where two overlap the
smaller one wins (a cup on a table keeps its pixels whatever order the tool exported them in;
equal areas: the later one in the file). Crowd regions (`iscrowd: 1`) are painted last as void
(`ignore_index`): their pixels are not learnt nor scored, as COCO's own evaluation treats them.
Polygons with fewer than 3 points enclose nothing and are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.annotation_common import (
    BACKGROUND_NAMES,
    choose_split,
    paint_regions,
    read_json,
    smaller_last,
)
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.folder import DEFAULT_VAL_FRACTION
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import read_image

try:
    from pycocotools import mask as coco_mask
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(f"{error}; install it with `pip install fcnseg[formats]`") from None

_MIN_POLYGON = 6  # 3 points
#: A lone annotation file named for one of these splits is that split's, not every split's.
SPLIT_NAMES: frozenset[str] = frozenset({"train", "val", "test"})


def annotation_candidates(root: Path, split: str) -> list[Path]:
    """Where a split's annotation file may be, in the order they are tried."""
    return [
        root / "annotations" / f"instances_{split}.json",
        root / "annotations" / f"{split}.json",
        root / f"{split}.json",
    ]


def _checked_list(data: dict, key: str, path: Path) -> list[dict]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DataError(f"{path}: '{key}' must be a list of objects; is this a COCO file?")
    return value


class COCOSegmentation(SegmentationDataset):
    """A COCO JSON file and its images (see the module docstring for layout and rules)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        annotation_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        background: bool = True,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        self.annotation_file, shared = self._annotation_file(split, annotation_file)
        data = read_json(self.annotation_file)
        if not isinstance(data, dict):
            raise DataError(f"{self.annotation_file}: expected a COCO object at the top level")
        self._read_classes(_checked_list(data, "categories", self.annotation_file), background)
        images = _checked_list(data, "images", self.annotation_file)
        self._annotations = self._group(_checked_list(data, "annotations", self.annotation_file))
        folder = self._image_dir(split, image_dir, images)
        self.images = images
        self.samples = [(self._image_path(folder, rec), i) for i, rec in enumerate(images)]
        if shared:  # one file for every split: cut by image name hash
            where = self.annotation_file
            self.samples = choose_split(
                self.samples, lambda s: s[0].stem, split, val_fraction, where
            )
        if not self.samples:
            raise DataError(f"{self.annotation_file}: lists no images; export some")

    def _annotation_file(self, split: str, explicit: str | Path | None) -> tuple[Path, bool]:
        """The split's annotation file, and whether it is the one file of every split."""
        if explicit is not None:
            path = Path(explicit) if Path(explicit).is_absolute() else self.root / explicit
            if not path.is_file():
                raise DataError(f"{path}: annotation file not found; fix annotation_file")
            return path, False
        candidates = annotation_candidates(self.root, split)
        found = next((p for p in candidates if p.is_file()), None)
        if found is not None:
            return found, False
        every = sorted((self.root / "annotations").glob("*.json"))
        named_for_a_split = every and every[0].stem.removeprefix("instances_") in SPLIT_NAMES
        if len(every) == 1 and not named_for_a_split and split in ("train", "val", "all"):
            return every[0], True
        raise DataError(
            f"{candidates[0]}: annotation file of split {split!r} not found (also tried "
            f"{', '.join(p.name for p in candidates[1:])}); give annotation_file="
        )

    def _read_classes(self, categories: list[dict], background: bool) -> None:
        try:
            ordered = sorted(categories, key=lambda c: int(c["id"]))
            names = [str(c["name"]) for c in ordered]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{self.annotation_file}: every category needs an integer 'id' and a 'name'"
            ) from None
        ids = [int(c["id"]) for c in ordered]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise DataError(f"{self.annotation_file}: category ids or names repeat")
        own_background = next((n for n in names if n in BACKGROUND_NAMES), None)
        offset = 1 if background and own_background is None else 0
        self.category_to_class = {cid: i + offset for i, cid in enumerate(ids)}
        names = ["background"] * offset + names
        self.background_class = (
            names.index(own_background) if own_background else (0 if offset else None)
        )
        self.class_info = ClassInfo(tuple(names), voc_colormap(len(names)), VOC_IGNORE_INDEX)

    def _group(self, annotations: list[dict]) -> dict[Any, list[dict]]:
        grouped: dict[Any, list[dict]] = defaultdict(list)
        for annotation in annotations:
            grouped[annotation.get("image_id")].append(annotation)
        return grouped

    def _image_dir(self, split: str, explicit: str | Path | None, images: list[dict]) -> Path:
        if explicit is not None:
            folder = Path(explicit) if Path(explicit).is_absolute() else self.root / explicit
            return folder
        candidates = [self.root / "images" / split, self.root / "images", self.root / split]
        first = str(images[0].get("file_name", "")) if images else ""
        found = next((c for c in candidates if (c / first).is_file()), None)
        if found is None:
            raise DataError(
                f"{self.annotation_file}: image {first!r} not found under images/{split}/, "
                f"images/ or {split}/; put the images there or give image_dir="
            )
        return found

    def _image_path(self, folder: Path, record: dict) -> Path:
        name = record.get("file_name")
        path = folder / str(name)
        if not isinstance(name, str) or ".." in Path(name).parts or Path(name).is_absolute():
            raise DataError(
                f"{self.annotation_file}: image file_name {name!r} must be a relative path "
                "inside the image folder"
            )
        return path

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        path, record_index = self.samples[index]
        record = self.images[record_index]
        image = read_image(path)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if (record.get("height"), record.get("width")) != (height, width):
            raise DataError(
                f"{path}: {width}x{height} but {self.annotation_file.name} says "
                f"{record.get('width')}x{record.get('height')} (WxH); re-export the annotations"
            )
        return image, self.mask_of(record, height, width)

    def mask_of(self, record: dict, height: int, width: int) -> Tensor:
        """The class mask of one image record (see the module docstring for the rules)."""
        objects: list[tuple[np.ndarray, int]] = []
        crowds: list[tuple[np.ndarray, int]] = []
        for annotation in self._annotations.get(record.get("id"), []):
            region = self._decode(annotation, height, width)
            if annotation.get("iscrowd"):
                crowds.append((region, self.ignore_index))
                continue
            category = annotation.get("category_id")
            if category not in self.category_to_class:
                raise DataError(
                    f"{self.annotation_file}: annotation {annotation.get('id')} has category_id "
                    f"{category!r}, which 'categories' does not list; add the category"
                )
            objects.append((region, self.category_to_class[category]))
        fill = self.background_class if self.background_class is not None else self.ignore_index
        return paint_regions((height, width), smaller_last(objects) + crowds, fill)

    def _decode(self, annotation: dict, height: int, width: int) -> np.ndarray:
        segmentation = annotation.get("segmentation")
        try:
            if isinstance(segmentation, list):
                polygons = [p for p in segmentation if len(p) >= _MIN_POLYGON]
                if not polygons:
                    return np.zeros((height, width), dtype=bool)
                rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
            elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                rle = coco_mask.frPyObjects(segmentation, height, width)
            elif isinstance(segmentation, dict):
                rle = dict(segmentation)
                if list(rle.get("size", [])) != [height, width]:
                    raise ValueError("RLE size differs from the image's")
            else:
                raise TypeError("no polygon list or RLE object")
            return coco_mask.decode(rle).astype(bool)
        except (TypeError, ValueError, KeyError) as error:
            raise DataError(
                f"{self.annotation_file}: annotation {annotation.get('id')} has an unreadable "
                f"segmentation ({error}); re-export it as polygons or RLE"
            ) from None
