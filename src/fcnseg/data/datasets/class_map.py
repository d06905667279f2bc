"""`data.class_map`: rename, merge or drop the classes of any dataset format.

The map is `source class name -> target class name` or `"ignore"` (the pixels become void).
Source classes the map does not name keep their name. Target classes are numbered in the order
of their first appearance when the source classes are walked in their own order, so

    sources [background, road, car, truck, tree] with {car: vehicle, truck: vehicle, tree: ignore}
    -> targets [background, road, vehicle]   (car and truck merged, tree void)

A target keeps the colour of its first source. Applied by `build_dataset` to every format, the
same way for training, validation, `fcnseg eval`, `data check` and `data convert`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fcnseg.data.datasets.base import ClassInfo, JointTransform, SegmentationDataset
from fcnseg.errors import RecipeError

#: The target name that makes a class void.
IGNORE_TARGET = "ignore"


def plan_class_map(info: ClassInfo, class_map: Mapping[str, str]) -> tuple[ClassInfo, Tensor]:
    """The target classes and a lookup table source id -> target id (void: ignore_index)."""
    if not isinstance(class_map, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in class_map.items()
    ):
        raise RecipeError("data.class_map: must map source class names to target names or 'ignore'")
    unknown = sorted(set(class_map) - set(info.names))
    if unknown:
        raise RecipeError(
            f"data.class_map: {unknown[0]!r} is not a class of this dataset; its classes are "
            f"{', '.join(info.names)}"
        )
    targets: list[str] = []
    palette: list[tuple[int, int, int]] = []
    table = torch.full((len(info.names),), info.ignore_index, dtype=torch.int64)
    for source, (name, colour) in enumerate(zip(info.names, info.palette, strict=True)):
        target = class_map.get(name, name)
        if target == IGNORE_TARGET:
            continue
        if target not in targets:
            targets.append(target)
            palette.append(colour)
        table[source] = targets.index(target)
    if not targets:
        raise RecipeError("data.class_map: maps every class to 'ignore'; keep at least one")
    return ClassInfo(tuple(targets), tuple(palette), info.ignore_index), table


def remap_mask(mask: Tensor, table: Tensor, ignore_index: int) -> Tensor:
    """Source ids -> target ids through `table`; void and out-of-table values pass unchanged
    (the source dataset reports unknown labels itself)."""
    known = (mask >= 0) & (mask < len(table))
    mapped = table[mask.clamp(0, len(table) - 1)]
    return torch.where(known, mapped, mask)


class ClassMapped(SegmentationDataset):
    """A dataset whose masks and classes pass through a class map (see the module docstring).

    It shares the source's sample list, so the training pre-flight checks the same files.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        class_map: Mapping[str, str],
        transform: JointTransform | None = None,
    ) -> None:
        super().__init__(transform)
        if getattr(dataset, "head_class_info", None):
            raise RecipeError("data.class_map: not supported for multi-head datasets")
        self.dataset = dataset
        self.root = dataset.root
        self.samples = dataset.samples
        self.class_map = dict(class_map)
        self.class_info, self.table = plan_class_map(dataset.class_info, class_map)

    def __getattr__(self, name: str) -> Any:
        # Format-specific attributes (e.g. a COCO set's annotation_file) come from the source.
        if name == "dataset" or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def sample_name(self, index: int) -> str:
        return self.dataset.sample_name(index)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.dataset.load(index)
        return image, remap_mask(mask, self.table, self.ignore_index)
