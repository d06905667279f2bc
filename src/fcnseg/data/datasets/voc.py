"""PASCAL VOC 2012 segmentation, SBD (Hariharan et al. 2011), and the FCN paper's VOC split.

- VOC: `ImageSets/Segmentation/<split>.txt` (one id a line), `JPEGImages/<id>.jpg`,
  `SegmentationClass/<id>.png` palette PNGs whose pixel index is the class id; 255 = void.
  The root may be `VOC2012/` itself, or a folder holding `VOC2012/` or `VOCdevkit/VOC2012/`.
- SBD: `dataset/{train,val}.txt`, `dataset/img/<id>.jpg`, `dataset/cls/<id>.mat` whose
  `GTcls.Segmentation` is the label map (0-20, no void). The root may be `benchmark_RELEASE/`
  or its `dataset/` folder.
- FCN split (paper section 4.2 and the release's data/pascal): train on SBD train minus the
  images of VOC2011 "seg11valid", validate on seg11valid (736 images) with VOC labels. The user
  provides `seg11valid.txt` (FCN release), since neither VOC nor SBD ships it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import Tensor

from fcnseg.constants import VOC_CLASSES, VOC_IGNORE_INDEX, VOC_SEG11VALID_SIZE
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.io import (
    check_pair,
    read_id_list,
    read_image,
    read_mask,
    read_mat_segmentation,
    require_files,
)

_BITS_PER_BYTE = 8


def voc_colormap(count: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC devkit colour map: bits of the label spread over R, G, B from the top bit down."""
    colours = []
    for label in range(count):
        red = green = blue = 0
        code = label
        for bit in range(_BITS_PER_BYTE):
            shift = _BITS_PER_BYTE - 1 - bit
            red |= (code & 1) << shift
            green |= ((code >> 1) & 1) << shift
            blue |= ((code >> 2) & 1) << shift
            code >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


VOC_CLASS_INFO = ClassInfo(
    names=tuple(VOC_CLASSES),
    palette=voc_colormap(len(VOC_CLASSES)),
    ignore_index=VOC_IGNORE_INDEX,
)


def find_voc_root(root: Path) -> Path:
    """The folder holding JPEGImages/ among `root`, `root/VOC2012`, `root/VOCdevkit/VOC2012`."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(
        f"{root}: no JPEGImages/ here nor in VOC2012/ or VOCdevkit/VOC2012/; pass the VOC2012 "
        "folder of the VOC devkit"
    )


def find_sbd_root(root: Path) -> Path:
    """The folder holding cls/ and img/ among `root`, `root/dataset`, `root/benchmark_RELEASE`."""
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "img").is_dir():
            return candidate
    raise DataError(
        f"{root}: no cls/ + img/ here nor in dataset/; pass SBD's benchmark_RELEASE folder"
    )


def _find_seg11valid(explicit: str | Path | None, *folders: Path) -> Path:
    if explicit is not None:
        return Path(explicit)
    for folder in folders:
        for candidate in (
            folder / "seg11valid.txt",
            folder / "ImageSets/Segmentation/seg11valid.txt",
        ):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{folders[0]}/seg11valid.txt: not found; copy seg11valid.txt from the FCN release "
        "(data/pascal) there or pass seg11valid=PATH"
    )


def _read_seg11valid(path: Path) -> list[str]:
    ids = read_id_list(path)
    if len(ids) != VOC_SEG11VALID_SIZE:
        warnings.warn(
            f"{path}: {len(ids)} ids, the FCN seg11valid list has {VOC_SEG11VALID_SIZE}; "
            "scores will not be comparable with the paper's",
            stacklevel=3,
        )
    return ids


class _VOCLabelled(SegmentationDataset):
    """Shared decoding: JPEG image + (PNG or .mat) mask, with the VOC classes."""

    class_info = VOC_CLASS_INFO

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        if Path(mask_path).suffix == ".mat":
            mask = read_mat_segmentation(mask_path, "GTcls", "Segmentation")
        else:
            mask = read_mask(mask_path)
        check_pair(image, mask, self.num_classes, self.ignore_index, image_path, mask_path)
        return image, mask


class VOCSegmentation(_VOCLabelled):
    """PASCAL VOC 2012 segmentation; `split` names `ImageSets/Segmentation/<split>.txt`.

    `split="seg11valid"` reads the FCN validation list (from the root or `list_file`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        list_file: str | Path | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = find_voc_root(Path(root))
        self.split = split
        if list_file is not None:
            ids = read_id_list(Path(list_file))
            source = Path(list_file)
        elif split == "seg11valid":
            source = _find_seg11valid(None, self.root, Path(root))
            ids = _read_seg11valid(source)
        else:
            source = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
            ids = read_id_list(source)
        self.samples = [
            (self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClass" / f"{i}.png")
            for i in ids
        ]
        require_files(self.samples, source)


class SBDSegmentation(_VOCLabelled):
    """SBD (Semantic Boundaries Dataset) class segmentations; `split` is "train" or "val".

    `exclude` removes image ids (e.g. those of seg11valid, to keep validation images unseen).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        exclude: set[str] | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = find_sbd_root(Path(root))
        self.split = split
        source = self.root / f"{split}.txt"
        ids = [i for i in read_id_list(source) if not exclude or i not in exclude]
        if not ids:
            raise DataError(f"{source}: no images left after excluding {len(exclude or ())} ids")
        self.samples = [
            (self.root / "img" / f"{i}.jpg", self.root / "cls" / f"{i}.mat") for i in ids
        ]
        require_files(self.samples, source)


class FCNVOCTrain(SegmentationDataset):
    """The FCN paper's VOC protocol: "train" = SBD train minus seg11valid, "val" = seg11valid.

    Args:
        root: folder holding the VOC devkit (VOC2012/ or VOCdevkit/VOC2012/), SBD (as `sbd/`
            or `benchmark_RELEASE/`) and `seg11valid.txt`; each can be given explicitly too.
    """

    class_info = VOC_CLASS_INFO

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        sbd_root: str | Path | None = None,
        voc_root: str | Path | None = None,
        seg11valid: str | Path | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.split = split
        list_path = _find_seg11valid(seg11valid, self.root)
        valid_ids = _read_seg11valid(list_path)
        if split == "train":
            sbd = Path(sbd_root) if sbd_root else self._default_sbd()
            self.inner: SegmentationDataset = SBDSegmentation(sbd, "train", exclude=set(valid_ids))
        elif split == "val":
            voc = Path(voc_root) if voc_root else self.root
            self.inner = VOCSegmentation(voc, "seg11valid", list_file=list_path)
        else:
            raise DataError(
                f"split {split!r} is unknown for the FCN VOC protocol; use train or val"
            )
        self.samples = self.inner.samples

    def _default_sbd(self) -> Path:
        for name in ("sbd", "SBD", "benchmark_RELEASE"):
            if (self.root / name).is_dir():
                return self.root / name
        raise DataError(
            f"{self.root}/sbd: SBD not found; put benchmark_RELEASE there or pass sbd_root"
        )

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inner.load(index)
