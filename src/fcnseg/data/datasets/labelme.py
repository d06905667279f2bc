"""LabelMe JSON files (polygons, rectangles, circles) read as class masks.

Layout: one LabelMe JSON per image, either in split folders (`root/train/*.json`,
`root/val/*.json`) or flat (`root/*.json`, cut into train / val by name hash as the `folder`
format does; "all" gives every file). Each JSON's `imagePath` is read relative to the JSON; when
that file is absent the embedded `imageData` is used.

Classes: the class list `root/classes.txt` or `root/labels.txt` (one name a line, LabelMe's
labelme2voc convention: `__ignore__` lines are skipped, `_background_` is the background) or
.yaml/.json, or `class_file=` / `classes=[...]`; without one, "background" then the labels
found in all the JSON files, sorted. Pixels no shape covers get the background class when the
list has one (`_background_` or `background`), else void. A shape labelled `__ignore__` is void;
a label missing from the list is an error naming the file and the label.

Shapes: polygon, rectangle (two corners), circle (centre, a point on the rim); lines and points
enclose nothing and are skipped; other types are an error. Overlaps: the later shape in the file
wins (LabelMe draws later shapes on top).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.annotation_common import (
    IGNORE_LABEL,
    choose_split,
    classes_and_background,
    find_class_list,
    paint_regions,
    read_class_list,
    read_json,
)
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.folder import DEFAULT_VAL_FRACTION
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import read_image, to_rgb_array

#: Shape types with no area: skipped.
AREALESS_SHAPES: frozenset[str] = frozenset({"line", "linestrip", "point", "points"})


def draw_shape(shape: dict, size: tuple[int, int], where: Path) -> np.ndarray | None:
    """The boolean region of one LabelMe shape on an image of `size` (H, W); None: no area."""
    kind = shape.get("shape_type") or "polygon"
    if kind in AREALESS_SHAPES:
        return None
    try:
        points = [(float(x), float(y)) for x, y in shape.get("points", [])]
    except (TypeError, ValueError):
        raise DataError(f"{where}: shape {shape.get('label')!r} has unreadable points") from None
    canvas = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon" and len(points) >= 3:
        draw.polygon(points, fill=1, outline=1)
    elif kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1)
    elif kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        radius = float(np.hypot(px - cx, py - cy))
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    elif kind in ("polygon", "rectangle", "circle"):
        return None  # too few points to enclose anything
    else:
        raise DataError(
            f"{where}: shape type {kind!r} is not supported (polygon, rectangle, circle); "
            "redraw it or convert it to a polygon"
        )
    return np.asarray(canvas, dtype=bool)


def labels_in(files: Sequence[Path]) -> list[str]:
    """Every shape label of `files`, sorted (the class list when none is given)."""
    labels: set[str] = set()
    for path in files:
        data = read_json(path)
        shapes = data.get("shapes", []) if isinstance(data, dict) else []
        labels.update(str(s.get("label")) for s in shapes if isinstance(s, dict))
    return sorted(labels - {IGNORE_LABEL})


class LabelMeDataset(SegmentationDataset):
    """LabelMe JSON files and their images (see the module docstring for layout and rules)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        class_file: str | Path | None = None,
        classes: list[str] | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        split_dir = self.root / split
        if split_dir.is_dir():
            files = sorted(split_dir.glob("*.json"))
        else:
            flat = sorted(self.root.glob("*.json"))
            files = choose_split(flat, lambda p: p.stem, split, val_fraction, self.root)
        if not files:
            raise DataError(f"{split_dir if split_dir.is_dir() else self.root}: no LabelMe JSON")
        self._set_classes(class_file, classes)
        self.samples = [self._sample(path) for path in files]

    def _set_classes(self, class_file: str | Path | None, classes: list[str] | None) -> None:
        if classes is not None:
            names = list(classes)
        else:
            listed = find_class_list(self.root, class_file)
            if listed is not None:
                names = read_class_list(listed)
            else:
                every = sorted(self.root.glob("*.json")) + sorted(self.root.glob("*/*.json"))
                names = ["background", *labels_in(every)]
        kept, self.background_class = classes_and_background(names)
        self.class_info = ClassInfo(kept, voc_colormap(len(kept)), VOC_IGNORE_INDEX)

    def _sample(self, json_path: Path) -> tuple[Path, Path] | tuple[Path]:
        data = read_json(json_path)
        image_name = data.get("imagePath") if isinstance(data, dict) else None
        if isinstance(image_name, str) and image_name:
            image_path = json_path.parent / image_name.replace("\\", "/")
            if image_path.is_file():
                return (json_path, image_path)
        return (json_path,)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        json_path = self.samples[index][0]
        data = read_json(json_path)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise DataError(f"{json_path}: no 'shapes' list; is this a LabelMe file?")
        image = self._image(self.samples[index], data)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        declared = (data.get("imageHeight"), data.get("imageWidth"))
        if None not in declared and tuple(declared) != size:
            raise DataError(
                f"{json_path}: imageHeight/imageWidth {declared} but the image is {size}; "
                "re-save the annotation with its image"
            )
        return image, self.mask_of(data["shapes"], size, json_path)

    def _image(self, sample: tuple[Path, ...], data: dict) -> Tensor:
        """The image file beside the JSON, else the embedded `imageData`."""
        json_path = sample[0]
        if len(sample) > 1:
            return read_image(sample[1])
        encoded = data.get("imageData")
        if not encoded:
            raise DataError(
                f"{json_path}: image {data.get('imagePath')!r} not found and no imageData "
                "embedded; put the image beside the JSON"
            )
        try:
            with Image.open(io.BytesIO(base64.b64decode(encoded))) as embedded:
                array = to_rgb_array(embedded)
        except (OSError, ValueError) as error:
            raise DataError(f"{json_path}: imageData unreadable ({error})") from None
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def mask_of(self, shapes: list, size: tuple[int, int], where: Path) -> Tensor:
        """The class mask of one file's shapes (later shapes win; see the module docstring)."""
        regions: list[tuple[np.ndarray, int]] = []
        for shape in shapes:
            label = str(shape.get("label")) if isinstance(shape, dict) else None
            if label is None:
                raise DataError(f"{where}: a shape is not an object; re-save the file")
            if label == IGNORE_LABEL:
                value = self.ignore_index
            elif label in self.classes:
                value = self.classes.index(label)
            else:
                raise DataError(
                    f"{where}: label {label!r} is not in the class list ({', '.join(self.classes)})"
                    "; add it to the class list (classes.txt)"
                )
            region = draw_shape(shape, size, where)
            if region is not None:
                regions.append((region, value))
        fill = self.background_class if self.background_class is not None else self.ignore_index
        return paint_regions(size, regions, fill)
