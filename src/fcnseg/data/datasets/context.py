"""PASCAL-Context, 59 classes (Mottaghi et al. 2014), as used by FCN (paper section 4.3).

Layout (the common 59-class release on top of VOC2010): `JPEGImages/<id>.jpg`, label maps in
`SegmentationClassContext/<id>.png` (8/16-bit class ids) or `<id>.mat` (key `LabelMap`), lists in
`ImageSets/SegmentationContext/{train,val}.txt`. The root may be `VOC2010/` or a folder holding
`VOC2010/` or `VOCdevkit/VOC2010/`. Label 0 ("everything else") is void; classes 1..59 become
0..58, so void is 255 like VOC.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fcnseg.constants import PASCAL_CONTEXT_59_CLASSES, VOC_IGNORE_INDEX
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import check_pair, read_id_list, read_image, read_mask, read_mat_segmentation

CONTEXT_CLASS_INFO = ClassInfo(
    names=tuple(PASCAL_CONTEXT_59_CLASSES),
    palette=voc_colormap(len(PASCAL_CONTEXT_59_CLASSES) + 1)[1:],
    ignore_index=VOC_IGNORE_INDEX,
)
_LABEL_DIR = "SegmentationClassContext"
_LIST_DIR = Path("ImageSets") / "SegmentationContext"


def shift_void_zero(labels: Tensor, ignore_index: int) -> Tensor:
    """Labels 1..n -> 0..n-1 and 0 -> `ignore_index` (Context, ADE20K encode void as 0)."""
    return (labels - 1).masked_fill(labels == 0, ignore_index)


class PascalContext(SegmentationDataset):
    """PASCAL-Context 59 classes; `split` is "train" or "val"."""

    class_info = CONTEXT_CLASS_INFO

    def __init__(
        self, root: str | Path, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(transform)
        root = Path(root)
        for candidate in (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010"):
            if (candidate / _LABEL_DIR).is_dir():
                self.root = candidate
                break
        else:
            raise DataError(
                f"{root}: no {_LABEL_DIR}/ here nor in VOC2010/; pass the VOC2010 folder holding "
                "the 59-class Context labels"
            )
        self.split = split
        source = self.root / _LIST_DIR / f"{split}.txt"
        self.samples = []
        missing = []
        for image_id in read_id_list(source):
            image = self.root / "JPEGImages" / f"{image_id}.jpg"
            label = self.root / _LABEL_DIR / f"{image_id}.png"
            if not label.is_file():
                label = label.with_suffix(".mat")
            missing += [str(p) for p in (image, label) if not p.is_file()]
            self.samples.append((image, label))
        if missing:
            raise DataError(
                f"{source}: {len(missing)} listed file(s) missing, e.g. {missing[0]}; restore "
                "them or remove their ids"
            )

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        if mask_path.suffix == ".mat":
            raw = read_mat_segmentation(mask_path, "LabelMap", "")
        else:
            raw = read_mask(mask_path)
        # Check the raw 0..59 range first so an error reports the values as stored on disk.
        check_pair(image, raw, self.num_classes + 1, -1, image_path, mask_path)
        return image, shift_void_zero(raw, self.ignore_index)
