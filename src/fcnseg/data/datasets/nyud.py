"""NYUDv2 with the 40-class labels of Gupta et al. (CVPR 2013), laid out as in the FCN release.

Layout under the dataset root (the release's `data/nyud`):

    data/images/img_<id>.png      RGB, 8-bit
    data/depth/img_<id>.png       depth in millimetres, 16-bit  (or img_<id>.mat, `depth` in m)
    data/hha/img_<id>.png         HHA, 8-bit, channels (disparity, height, angle)
    segmentation/img_<id>.mat     `segmentation`: 0 = void, 1..40 = classes (or img_<id>.png)
    <split>.txt                   one <id> per line (e.g. 5001); train/val/test, trainval

Labels are shifted down by one as in the release's nyud_layers.py (void becomes 255). Missing
HHA images can be produced from depth with `python -m fcnseg.data.hha data/depth data/hha`.

Modalities and what an item looks like (`modalities=`):

- ("rgb",): the plain dataset contract, `(image, mask)`.
- ("rgb", "depth"): early fusion, a 4 x H x W float tensor: the RGB image normalised as the
  transform does, then the depth channel normalised as the release does: log(depth in mm) minus
  the mean log depth (7.844), 0 where depth is missing or padded.
- ("rgb", "hha"): late fusion, a 6 x H x W float tensor (RGB channels 0-2, HHA 3-5), the
  input of `fcnseg.models.fusion.LateFusionFCN`; `as_dict=True` returns {"rgb", "hha"} instead.
  HHA is an 8-bit image by design, so it goes through the same transform as RGB, normalisation
  preset included (the release subtracted an HHA-specific mean instead; the difference is a
  constant per-channel offset that the first convolution's bias absorbs).

Geometry (scale, flip, crop) is the same for every modality: the joint transform is called once
per modality with the random generators rewound in between. Depth travels through the
transform's *mask* path (nearest-neighbour resizing, which never blends depths across an
object boundary); it is offset by `DEPTH_PAD_GUARD` first, so padding (the void label, < 256)
is recognised and treated as missing depth. Without a transform, images become floats in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fcnseg.constants import NYUD_CLASSES, NYUD_MEAN_LOG_DEPTH_MM, VOC_IGNORE_INDEX
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.datasets.siftflow import (
    _rng_state,
    _set_rng_state,
    apply_to_masks,
    read_split_list,
)
from fcnseg.data.datasets.voc import voc_colormap
from fcnseg.data.io import check_pair, read_image, read_mask, read_mat_segmentation

NYUD_IGNORE_INDEX: int = VOC_IGNORE_INDEX
NYUD_CLASS_INFO = ClassInfo(
    names=NYUD_CLASSES,
    palette=voc_colormap(len(NYUD_CLASSES) + 1)[1:],  # skip black, which overlays read as void
    ignore_index=NYUD_IGNORE_INDEX,
)
MODALITIES: tuple[str, ...] = ("rgb", "depth", "hha")
#: Channels each modality contributes to the stacked input tensor.
MODALITY_CHANNELS: dict[str, int] = {"rgb": 3, "depth": 1, "hha": 3}
#: Depth (mm) is offset by this before the transform so that padded pixels (filled with the
#: void label, at most 255) stand out from real depths.
DEPTH_PAD_GUARD: int = 256
_MM_PER_M = 1000.0
_UINT8_MAX = 255.0


def normalize_depth(depth_mm: Tensor) -> Tensor:
    """log(depth in mm) minus the release's mean log depth; 0 (the mean) where depth <= 0."""
    depth = depth_mm.float()
    valid = depth > 0
    log_depth = torch.log(torch.where(valid, depth, torch.ones_like(depth)))
    return torch.where(valid, log_depth - NYUD_MEAN_LOG_DEPTH_MM, torch.zeros_like(depth))


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if (
        unknown
        or not modalities
        or modalities[0] != "rgb"
        or len(set(modalities)) != len(modalities)
    ):
        raise DataError(
            f"modalities {modalities!r} are not valid; start with 'rgb' and add any of "
            "'depth', 'hha' once, e.g. ('rgb', 'depth') or ('rgb', 'hha')"
        )
    return modalities


class NYUDv2(SegmentationDataset):
    """NYUDv2 40-class segmentation with RGB, depth and/or HHA inputs (see the module docstring).

    Args:
        root: the release's nyud directory.
        split: list file stem: "train", "val", "test", "trainval" (795 train / 654 test in the
            standard split; the FCN paper trained RGB-D nets on 381 and validated on 414).
        transform: joint (image, mask) transform, shared by all modalities.
        modalities: ("rgb",), ("rgb", "depth") or ("rgb", "hha") (or all three).
        as_dict: return the inputs as {modality: tensor} instead of one stacked tensor.
    """

    class_info = NYUD_CLASS_INFO

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        modalities: Sequence[str] = ("rgb",),
        as_dict: bool = False,
    ) -> None:
        super().__init__(transform)
        if root is None:
            raise DataError("NYUDv2 needs root=<the release's nyud directory>; pass data.root")
        self.root = Path(root)
        self.split = split
        self.modalities = _check_modalities(modalities)
        self.as_dict = as_dict
        ids = read_split_list(self.root / f"{split}.txt")
        self.samples = [self._paths(sample_id) for sample_id in ids]
        missing = [
            str(path)
            for sample in self.samples
            for key, path in sample.items()
            if key in ("rgb", "label", *self.modalities) and not path.is_file()
        ]
        if missing:
            fix = (
                "run `python -m fcnseg.data.hha <root>/data/depth <root>/data/hha` to make HHA"
                if all("/hha/" in m.replace("\\", "/") for m in missing)
                else "restore them or remove their ids from the list"
            )
            raise DataError(
                f"{self.root / f'{split}.txt'}: {len(missing)} listed file(s) missing, e.g. "
                f"{missing[0]}; {fix}"
            )

    @property
    def in_channels(self) -> int:
        """Channels of the stacked input tensor (3, 4 for RGB-D, 6 for RGB + HHA)."""
        return sum(MODALITY_CHANNELS[m] for m in self.modalities)

    def _paths(self, sample_id: str) -> dict[str, Path]:
        stem = f"img_{sample_id}"
        data = self.root / "data"

        def first_existing(*candidates: Path) -> Path:
            return next((c for c in candidates if c.is_file()), candidates[0])

        return {
            "rgb": data / "images" / f"{stem}.png",
            "depth": first_existing(data / "depth" / f"{stem}.png", data / "depth" / f"{stem}.mat"),
            "hha": data / "hha" / f"{stem}.png",
            "label": first_existing(
                self.root / "segmentation" / f"{stem}.mat",
                self.root / "segmentation" / f"{stem}.png",
            ),
        }

    def sample_name(self, index: int) -> str:
        return self.samples[index]["rgb"].stem

    def _read_label(self, path: Path) -> Tensor:
        if path.suffix == ".mat":
            raw = read_mat_segmentation(path, struct="segmentation", field="")
        else:
            raw = read_mask(path)
        return torch.where(raw >= 1, raw - 1, torch.full_like(raw, NYUD_IGNORE_INDEX))

    def _read_depth_mm(self, path: Path) -> Tensor:
        """Depth in millimetres, int64 H x W (0 = missing)."""
        if path.suffix == ".mat":
            from scipy.io import loadmat

            try:
                metres = np.asarray(loadmat(str(path))["depth"], dtype=np.float64)
            except (KeyError, ValueError, OSError) as error:
                raise DataError(
                    f"{path}: no readable `depth` matrix ({type(error).__name__}); save depth in "
                    "metres under the key 'depth' or as a 16-bit PNG in millimetres"
                ) from None
            metres = np.nan_to_num(metres, nan=0.0)
            return torch.from_numpy(np.round(metres * _MM_PER_M).astype(np.int64))
        return read_mask(path)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Decoded (uint8 3xHxW RGB, int64 HxW mask): the plain contract, used by checkers."""
        paths = self.samples[index]
        image = read_image(paths["rgb"])
        mask = self._read_label(paths["label"])
        check_pair(image, mask, self.num_classes, self.ignore_index, paths["rgb"], paths["label"])
        return image, mask

    def load_modalities(self, index: int) -> tuple[dict[str, Tensor], Tensor]:
        """All configured modalities, decoded: rgb/hha uint8 3xHxW, depth int64 HxW in mm."""
        image, mask = self.load(index)
        paths = self.samples[index]
        inputs = {"rgb": image}
        if "depth" in self.modalities:
            inputs["depth"] = self._read_depth_mm(paths["depth"])
        if "hha" in self.modalities:
            inputs["hha"] = read_image(paths["hha"])
        for name, value in inputs.items():
            if tuple(value.shape[-2:]) != tuple(mask.shape):
                raise DataError(
                    f"{paths[name]}: {name} is {tuple(value.shape[-2:])} (HxW) but the label is "
                    f"{tuple(mask.shape)}; all modalities must share the image size"
                )
        return inputs, mask

    def _transform_all(
        self, inputs: dict[str, Tensor], mask: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Same geometry for every modality; depth via the mask path (see module docstring)."""
        if self.transform is None:
            out = {
                name: value.float() / _UINT8_MAX
                for name, value in inputs.items()
                if name != "depth"
            }
            if "depth" in inputs:
                out["depth"] = normalize_depth(inputs["depth"])[None]
            return out, mask
        state = _rng_state()
        masks = {"label": mask}
        if "depth" in inputs:
            masks["depth"] = inputs["depth"] + DEPTH_PAD_GUARD
        rgb, transformed = apply_to_masks(self.transform, inputs["rgb"], masks)
        out = {"rgb": rgb}
        if "depth" in inputs:
            shifted = transformed["depth"]
            depth = torch.where(shifted >= DEPTH_PAD_GUARD, shifted - DEPTH_PAD_GUARD, 0)
            out["depth"] = normalize_depth(depth)[None]
        if "hha" in inputs:
            _set_rng_state(state)
            out["hha"], _ = self.transform(inputs["hha"], mask)
        return out, transformed["label"]

    def __getitem__(self, index: int):  # type: ignore[override]
        if self.modalities == ("rgb",):
            return super().__getitem__(index)
        inputs, mask = self.load_modalities(index)
        out, mask = self._transform_all(inputs, mask)
        if self.as_dict:
            return out, mask
        return torch.cat([out[name] for name in self.modalities], dim=0), mask
