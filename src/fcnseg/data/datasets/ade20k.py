"""ADE20K SceneParsing benchmark (Zhou et al., CVPR 2017), 150 classes.

Layout (ADEChallengeData2016): `images/{training,validation}/<name>.jpg` and
`annotations/{training,validation}/<name>.png`. Label 0 ("other") is void: labels are shifted
by -1 so classes are 0..149 and void becomes 255.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fcnseg.constants import ADE20K_CLASSES
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.context import shift_void_zero
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import check_pair, pair_folders, read_image, read_mask

ADE20K_IGNORE_INDEX = 255
ADE20K_CLASS_INFO = ClassInfo(
    names=tuple(ADE20K_CLASSES),
    # Display colours only: the VOC colour map (distinct for 256 labels), not the benchmark's.
    palette=voc_colormap(len(ADE20K_CLASSES) + 1)[1:],
    ignore_index=ADE20K_IGNORE_INDEX,
)
_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


class ADE20K(SegmentationDataset):
    """ADE20K 150 classes; `split` is "train" or "val" (or the folder names themselves)."""

    class_info = ADE20K_CLASS_INFO

    def __init__(
        self, root: str | Path, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(transform)
        root = Path(root)
        self.root = (
            root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        )
        self.split = split
        folder = _SPLIT_FOLDERS.get(split, split)
        image_dir = self.root / "images" / folder
        label_dir = self.root / "annotations" / folder
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise DataError(
                f"{image_dir}: not found (with annotations/{folder}); pass the "
                "ADEChallengeData2016 folder"
            )
        self.samples = pair_folders(image_dir, label_dir)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image, raw = read_image(image_path), read_mask(mask_path)
        check_pair(image, raw, self.num_classes + 1, -1, image_path, mask_path)
        return image, shift_void_zero(raw, self.ignore_index)
