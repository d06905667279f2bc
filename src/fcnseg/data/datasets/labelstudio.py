"""Label Studio brush annotations, as its "PNG" export writes them, with the task list.

Layout (Label Studio's PNG export writes the masks; its "JSON" or "JSON-MIN" export the task
list, which is what says which image a task is; the images are the ones you uploaded):

    root/tasks.json       # the JSON / JSON-MIN export (or the only *.json in root, or tasks_file=)
    root/masks/task-<task id>-annotation-<annotation id>-by-<user>-<tag>-<label>-<n>.png
    root/images/<the file the task's image URL ends with>

A task's image is its `data.image` (JSON) or `image` (JSON-MIN) URL's last part, looked up in
images/ as it is and without the 8-character prefix Label Studio adds to uploads
(`/data/upload/3/5e1c2d3f-street.jpg` -> `5e1c2d3f-street.jpg` or `street.jpg`). Each mask is a
grayscale PNG, brushed where the value is above 127. Only the latest annotation (highest id) of
a task is used; tasks without a mask are skipped. Split: task ids cut into train / val by hash
as the `folder` format does ("all": every task).

Classes: the class list `root/classes.txt` (`labels.txt`, .yaml, .json) or `class_file=` /
`classes=[...]`; without one, "background" then the labels found in the mask names, sorted.
The label is the name part after `<tag>-` (the tag is the BrushLabels name, "tag" by default;
with a class list, the longest listed class the name ends with). Unbrushed pixels get the
background class when the list has one, else void. Overlaps: the smaller region wins (masks are
painted largest first), as in the `coco` format.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch import Tensor

from fcnseg.constants import VOC_IGNORE_INDEX
from fcnseg.data.datasets.annotation_common import (
    choose_split,
    classes_and_background,
    find_class_list,
    paint_regions,
    read_class_list,
    read_json,
    smaller_last,
)
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.folder import DEFAULT_VAL_FRACTION
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import read_image

#: task-<id>-annotation-<id>-by-<user>-<tag and label>-<n>.png (the user name has no '-').
MASK_NAME = re.compile(r"^task-(\d+)-annotation-(\d+)-by-([^-]*)-(.+)-(\d+)$")
#: Label Studio prefixes uploaded file names with 8 hex characters and '-'.
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_BRUSHED = 127


def task_images(path: Path) -> dict[int, str]:
    """Task id -> image file name from a Label Studio JSON or JSON-MIN export."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected the list of tasks of a JSON / JSON-MIN export")
    images: dict[int, str] = {}
    for task in data:
        source = task.get("data", task) if isinstance(task, dict) else None
        url = source.get("image") if isinstance(source, dict) else None
        if not isinstance(url, str) or not isinstance(task.get("id"), int):
            raise DataError(f"{path}: every task needs an 'id' and an 'image' URL")
        images[task["id"]] = url.rsplit("/", 1)[-1].split("?", 1)[0]
    return images


class LabelStudioBrush(SegmentationDataset):
    """Label Studio PNG brush masks + task list + images (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        tasks_file: str | Path | None = None,
        class_file: str | Path | None = None,
        classes: list[str] | None = None,
        brush_tag: str = "tag",
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        self.brush_tag = brush_tag
        images = task_images(self._tasks_file(tasks_file))
        listed = classes if classes is not None else self._listed_classes(class_file)
        masks = self._latest_masks(listed)
        names = listed or [
            "background",
            *sorted({label for ms in masks.values() for _, label in ms}),
        ]
        kept, self.background_class = classes_and_background(names)
        self.class_info = ClassInfo(kept, voc_colormap(len(kept)), VOC_IGNORE_INDEX)
        tasks = choose_split(sorted(masks), str, split, val_fraction, self.root / "masks")
        self.samples = [(self._image_path(images, t), *(p for p, _ in masks[t])) for t in tasks]
        self.labels = {i: [label for _, label in masks[t]] for i, t in enumerate(tasks)}

    def _tasks_file(self, explicit: str | Path | None) -> Path:
        if explicit is not None:
            path = Path(explicit) if Path(explicit).is_absolute() else self.root / explicit
        elif (self.root / "tasks.json").is_file():
            path = self.root / "tasks.json"
        else:
            found = [p for p in sorted(self.root.glob("*.json")) if p.name != "classes.json"]
            path = found[0] if len(found) == 1 else self.root / "tasks.json"
        if not path.is_file():
            raise DataError(
                f"{path}: task list not found; put Label Studio's JSON export there or give "
                "tasks_file="
            )
        return path

    def _listed_classes(self, class_file: str | Path | None) -> list[str] | None:
        path = find_class_list(self.root, class_file)
        return read_class_list(path) if path is not None else None

    def _label(self, tag_and_label: str, listed: list[str] | None, path: Path) -> str:
        if listed is not None:
            ends = [n for n in listed if tag_and_label == n or tag_and_label.endswith(f"-{n}")]
            if ends:
                return max(ends, key=len)
            raise DataError(f"{path}: names no class of the class list ({', '.join(listed)})")
        prefix = f"{self.brush_tag}-"
        if not tag_and_label.startswith(prefix):
            raise DataError(
                f"{path}: expected the BrushLabels tag {self.brush_tag!r} in the name; give "
                "brush_tag= or a class list"
            )
        return tag_and_label[len(prefix) :]

    def _latest_masks(self, listed: list[str] | None) -> dict[int, list[tuple[Path, str]]]:
        """Task id -> (mask file, label) of the task's latest annotation."""
        folder = self.root / "masks"
        if not folder.is_dir():
            raise DataError(f"{folder}: mask folder not found; put the PNG export there")
        by_annotation: dict[int, dict[int, list[tuple[Path, str]]]] = defaultdict(dict)
        for path in sorted(folder.glob("*.png")):
            match = MASK_NAME.match(path.stem)
            if match is None:
                raise DataError(f"{path}: not a Label Studio brush PNG name (task-N-annotation-…)")
            task, annotation = int(match[1]), int(match[2])
            label = self._label(match[4], listed, path)
            by_annotation[task].setdefault(annotation, []).append((path, label))
        if not by_annotation:
            raise DataError(f"{folder}: no brush masks; export the project as PNG into it")
        return {task: found[max(found)] for task, found in by_annotation.items()}

    def _image_path(self, images: dict[int, str], task: int) -> Path:
        name = images.get(task)
        if name is None:
            raise DataError(f"task {task}: has masks but is not in the task list; re-export it")
        folder = self.root / "images"
        for candidate in (name, UPLOAD_PREFIX.sub("", name)):
            if candidate and (folder / candidate).is_file():
                return folder / candidate
        raise DataError(f"{folder / name}: image of task {task} not found; copy it there")

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, *mask_paths = self.samples[index]
        image = read_image(image_path)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        regions: list[tuple[np.ndarray, int]] = []
        for path, label in zip(mask_paths, self.labels[index], strict=True):
            brushed = read_image(path)[0].numpy() > _BRUSHED
            if brushed.shape != size:
                raise DataError(f"{path}: mask is {brushed.shape} (HxW) but the image is {size}")
            value = self.classes.index(label) if label in self.classes else self.ignore_index
            regions.append((brushed, value))
        fill = self.background_class if self.background_class is not None else self.ignore_index
        return image, paint_regions(size, smaller_last(regions), fill)
