"""Dataset format name -> dataset class, and `build_dataset` to construct one by name.

Entries are "module:Class" strings imported on first use, so that importing the registry costs
nothing and a format whose module is missing (or needs an absent optional package) fails only
when it is asked for, with a message saying so.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from fcnseg.data.datasets.base import JointTransform, SegmentationDataset
from fcnseg.errors import DataError, RecipeError

#: Format name -> "module:Class" (modules relative to fcnseg.data.datasets).
DATASET_FORMATS: dict[str, str] = {
    "camvid": "camvid:CamVid",
    "synthetic": "synthetic:SyntheticStreets",
    "voc": "voc:VOCSegmentation",
    "sbd": "voc:SBDSegmentation",
    "voc_fcn": "voc:FCNVOCTrain",
    "context": "context:PascalContext",
    "cityscapes": "cityscapes:Cityscapes",
    "ade20k": "ade20k:ADE20K",
    "folder": "folder:FolderDataset",
    "siftflow": "siftflow:SIFTFlow",
    "nyud": "nyud:NYUDv2",
    # Labelling-tool exports read as they are (docs/data_formats.md).
    "coco": "coco:COCOSegmentation",
    "labelme": "labelme:LabelMeDataset",
    "cvat": "cvat:CVATSegmentationMask",
    "labelstudio": "labelstudio:LabelStudioBrush",
    "colour_masks": "colour_masks:ColourMaskDataset",
}


def list_formats() -> list[str]:
    """Format names `build_dataset` accepts."""
    return sorted(DATASET_FORMATS)


def get_dataset_class(format: str) -> type[SegmentationDataset]:
    """The dataset class registered under `format`."""
    try:
        target = DATASET_FORMATS[format]
    except KeyError:
        raise RecipeError(
            f"dataset format {format!r} is unknown; use one of {', '.join(list_formats())}"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(f"fcnseg.data.datasets.{module_name}")
    except ImportError as error:
        raise RecipeError(
            f"dataset format {format!r} is not available in this install ({error})"
        ) from None
    return getattr(module, class_name)


def build_dataset(
    format: str,
    root: str | Path | None,
    split: str = "train",
    transform: JointTransform | None = None,
    class_map: Mapping[str, str] | None = None,
    **kwargs,
) -> SegmentationDataset:
    """Construct the dataset of `format` rooted at `root` (ignored by "synthetic").

    `class_map` (the recipe's `data.class_map`, see datasets/class_map.py) renames, merges or
    drops classes the same way for every format.
    """
    cls = get_dataset_class(format)
    if root is None and format != "synthetic":  # the one format generated, not read
        raise DataError(
            f"dataset format {format!r} needs the dataset's folder; pass --data-root "
            "(or data.root in the recipe)"
        )
    if not class_map:
        return cls(root, split=split, transform=transform, **kwargs)
    from fcnseg.data.datasets.class_map import ClassMapped

    return ClassMapped(cls(root, split=split, **kwargs), class_map, transform)
