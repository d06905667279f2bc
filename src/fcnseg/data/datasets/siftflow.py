"""SIFT Flow (Liu, Yuen, Torralba 2009) as distributed with the FCN release: two label maps per image.

Layout under the dataset root (the FCN release's `data/sift-flow`):

    Images/spatial_envelope_256x256_static_8outdoorcategories/<name>.jpg
    SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat   (struct S)
    GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat        (struct S)
    trainval.txt, test.txt   one <name> per line (2488 / 200 images)

Label encoding on disk: semantic ids 1..33 and geometric ids 1..3 (sky, horizontal, vertical),
0 = unlabelled (the geometric maps also use -1 for it). Like the release's siftflow_layers.py,
ids are shifted down by one and unlabelled becomes 255.

Multi-head variant of the dataset contract: an item is
`(image, {"semantic": mask, "geometric": mask})`, both int64 H x W with void 255. `class_info`
describes the semantic head (so the generic tools see a 33-class dataset) and
`head_class_info` both heads. A joint transform (random scale, flip, crop) is applied once per
label map with the random number generators rewound in between (`apply_to_masks`), so both maps
receive exactly the same geometry.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fcnseg.constants import (
    SIFTFLOW_GEOMETRIC_CLASSES,
    SIFTFLOW_SEMANTIC_CLASSES,
    SIFTFLOW_SUBDIR,
    SIFTFLOW_TEST_SIZE,
    SIFTFLOW_TRAIN_SIZE,
    VOC_IGNORE_INDEX,
)
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import check_pair, read_image, read_mat_segmentation

#: The void label of both heads (the FCN release's `label -= 1` on uint8 maps 0 to 255).
SIFTFLOW_IGNORE_INDEX: int = VOC_IGNORE_INDEX
#: Split name -> list file of the FCN release, and its expected length.
SIFTFLOW_SPLITS: dict[str, tuple[str, int]] = {
    "trainval": ("trainval.txt", SIFTFLOW_TRAIN_SIZE),
    "train": ("trainval.txt", SIFTFLOW_TRAIN_SIZE),
    "test": ("test.txt", SIFTFLOW_TEST_SIZE),
    "val": ("test.txt", SIFTFLOW_TEST_SIZE),
}
#: The struct name of the label .mat files.
_MAT_STRUCT = "S"


def _palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """VOC devkit colours for classes 0..count-1, skipping black (overlays read it as void)."""
    return voc_colormap(count + 1)[1:]


SEMANTIC_CLASS_INFO = ClassInfo(
    names=SIFTFLOW_SEMANTIC_CLASSES,
    palette=_palette(len(SIFTFLOW_SEMANTIC_CLASSES)),
    ignore_index=SIFTFLOW_IGNORE_INDEX,
)
GEOMETRIC_CLASS_INFO = ClassInfo(
    names=SIFTFLOW_GEOMETRIC_CLASSES,
    palette=((128, 192, 255), (128, 96, 64), (200, 64, 64)),  # sky blue, ground brown, red
    ignore_index=SIFTFLOW_IGNORE_INDEX,
)


def _rng_state() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


def apply_to_masks(
    transform: JointTransform, image: Tensor, masks: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Apply a joint (image, mask) transform to several masks with one random draw.

    The transform is called once per mask, the torch / random / numpy generators rewound to the
    same state before each call, so every call makes the same random choices (fcnseg's
    transforms draw only from these generators, and their draws do not depend on mask values).
    The image of the first call is returned.
    """
    state = _rng_state()
    out_image: Tensor | None = None
    out_masks: dict[str, Tensor] = {}
    for name, mask in masks.items():
        _set_rng_state(state)
        transformed, out_masks[name] = transform(image, mask)
        if out_image is None:
            out_image = transformed
    assert out_image is not None, "apply_to_masks needs at least one mask"
    return out_image, out_masks


def read_split_list(list_file: Path) -> list[str]:
    """Sample names of a one-name-per-line list (blank lines skipped)."""
    if not list_file.is_file():
        raise FileNotFoundError(
            f"{list_file}: split list not found; the FCN release ships trainval.txt and test.txt "
            "in the dataset root"
        )
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{list_file}: the list is empty; it must name one sample per line")
    return names


def _shift_labels(raw: Tensor) -> Tensor:
    """Disk ids (1-based, 0 or -1 unlabelled) -> training ids (0-based, void 255)."""
    return torch.where(raw >= 1, raw - 1, torch.full_like(raw, SIFTFLOW_IGNORE_INDEX))


class SIFTFlow(SegmentationDataset):
    """SIFT Flow: 256 x 256 outdoor scenes with semantic (33) and geometric (3) labels.

    Args:
        root: dataset directory (holding Images/, SemanticLabels/, GeoLabels/, the lists).
        split: "trainval"/"train" (trainval.txt) or "test"/"val" (test.txt).
        transform: joint transform applied to the image and each label map alike.
        check_size: require the paper's split sizes (2488 / 200); off for subsets.
    """

    head_class_info: dict[str, ClassInfo] = {
        "semantic": SEMANTIC_CLASS_INFO,
        "geometric": GEOMETRIC_CLASS_INFO,
    }
    class_info = SEMANTIC_CLASS_INFO

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        transform: JointTransform | None = None,
        check_size: bool = False,
    ) -> None:
        super().__init__(transform)
        if root is None:
            raise DataError("SIFTFlow needs root=<dir of the SIFT Flow release>; pass data.root")
        self.root = Path(root)
        if split not in SIFTFLOW_SPLITS:
            raise DataError(f"split {split!r} is unknown; use one of {sorted(SIFTFLOW_SPLITS)}")
        self.split = split
        list_name, expected = SIFTFLOW_SPLITS[split]
        names = read_split_list(self.root / list_name)
        if check_size and len(names) != expected:
            raise DataError(
                f"{self.root / list_name}: {len(names)} names, the paper's split has {expected}; "
                "restore the release's list or pass check_size=False"
            )
        self.samples = [self._paths(name) for name in names]
        missing = [str(p) for sample in self.samples for p in sample if not p.is_file()]
        if missing:
            raise DataError(
                f"{self.root / list_name}: {len(missing)} listed file(s) missing, e.g. "
                f"{missing[0]}; restore them or remove their names from the list"
            )

    @property
    def head_classes(self) -> dict[str, int]:
        """Head name -> class count, the `heads=` option of the "multihead" model."""
        return {name: info.num_classes for name, info in self.head_class_info.items()}

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return (
            self.root / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg",
            self.root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{name}.mat",
            self.root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{name}.mat",
        )

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        """Decoded (uint8 3xHxW image, {"semantic": int64 HxW, "geometric": int64 HxW})."""
        image_path, semantic_path, geometric_path = self.samples[index]
        image = read_image(image_path)
        masks = {}
        for name, path in (("semantic", semantic_path), ("geometric", geometric_path)):
            mask = _shift_labels(read_mat_segmentation(path, struct=_MAT_STRUCT, field=""))
            info = self.head_class_info[name]
            check_pair(image, mask, info.num_classes, info.ignore_index, image_path, path)
            masks[name] = mask
        return image, masks

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        image, masks = self.load(index)
        if self.transform is not None:
            image, masks = apply_to_masks(self.transform, image, masks)
        return image, masks
