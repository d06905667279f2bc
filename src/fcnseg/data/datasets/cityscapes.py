"""Cityscapes fine annotations (Cordts et al., CVPR 2016), 19 evaluation classes.

Layout: `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` and
`gtFine/<split>/<city>/<name>_gtFine_labelIds.png`. The 34 `labelIds` are mapped to the 19
`trainIds` of the official table (constants.CITYSCAPES_ID_TO_TRAINID); every other id is 255.
A copy prepared by cityscapesScripts' createTrainIdLabelImgs also has
`<name>_gtFine_labelTrainIds.png` (already 0-18 and 255); where that file exists it is read as
is, so either preparation works and both give the same labels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from fcnseg.constants import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_IGNORE_INDEX,
    CITYSCAPES_PALETTE,
)
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.io import check_pair, read_image, read_mask

CITYSCAPES_CLASS_INFO = ClassInfo(
    names=tuple(CITYSCAPES_CLASSES),
    palette=tuple(CITYSCAPES_PALETTE),
    ignore_index=CITYSCAPES_IGNORE_INDEX,
)
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"
_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
_LABEL_ID_COUNT = 256  # labelIds are 8-bit


def _id_to_train_id_table() -> Tensor:
    table = torch.full((_LABEL_ID_COUNT,), CITYSCAPES_IGNORE_INDEX, dtype=torch.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        table[label_id] = train_id
    return table


class Cityscapes(SegmentationDataset):
    """Cityscapes gtFine; `split` is "train", "val" or "test" (test labels are all void)."""

    class_info = CITYSCAPES_CLASS_INFO

    def __init__(
        self, root: str | Path, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.split = split
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        if not image_dir.is_dir():
            raise DataError(
                f"{image_dir}: not found; pass the Cityscapes root holding leftImg8bit/ and gtFine/"
            )
        images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise DataError(f"{image_dir}: no *{_IMAGE_SUFFIX} images in its city folders")
        self.samples = []
        for image in images:
            stem = image.name[: -len(_IMAGE_SUFFIX)]
            city = label_dir / image.parent.name
            train_ids, label = city / f"{stem}{_TRAIN_ID_SUFFIX}", city / f"{stem}{_LABEL_SUFFIX}"
            if train_ids.is_file():
                label = train_ids
            elif not label.is_file():
                raise DataError(
                    f"{image}: no label {label}; unpack gtFine_trainvaltest.zip into the same root"
                )
            self.samples.append((image, label))
        self.id_to_train_id = _id_to_train_id_table()

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image, labels = read_image(image_path), read_mask(mask_path)
        if mask_path.name.endswith(_TRAIN_ID_SUFFIX):
            check_pair(image, labels, self.num_classes, self.ignore_index, image_path, mask_path)
            return image, labels
        check_pair(image, labels, _LABEL_ID_COUNT, -1, image_path, mask_path)
        return image, self.id_to_train_id[labels]
