"""The dataset contract: (image, mask) pairs plus the class metadata every consumer needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from fcnseg.errors import DataError

__all__ = ["ClassInfo", "DataError", "SegmentationDataset"]

#: A joint transform: takes the decoded image (uint8 tensor 3xHxW, RGB) and mask (int64 HxW)
#: and returns the training/evaluation tensors (float 3xHxW, int64 HxW).
JointTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ClassInfo:
    """Class names, their colours and the void label of a dataset."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.names)


class SegmentationDataset(Dataset[tuple[Tensor, Tensor]]):
    """Base class: a list of samples, a decoder, class metadata and an optional joint transform.

    Subclasses fill `self.samples` (any per-sample record) and implement `load(index)`, which
    returns the decoded (uint8 3xHxW RGB image, int64 HxW mask); `__getitem__` applies the
    transform. Keeping decoding separate from transforms is what lets `fcnseg data check` scan
    a dataset with the same code path training uses.
    """

    class_info: ClassInfo
    root: Path
    #: Channels `load` decodes images to (3: RGB); a 1- or N-band model's training and
    #: evaluation set it to the model's `in_channels` (formats that read through
    #: `io.read_image(path, self.image_channels)` honour it).
    image_channels: int = 3

    def __init__(self, transform: JointTransform | None = None) -> None:
        self.transform = transform
        self.samples: list = []

    # Metadata shortcuts named as in the design contract.
    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_info.names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.class_info.palette

    @property
    def ignore_index(self) -> int:
        return self.class_info.ignore_index

    @property
    def num_classes(self) -> int:
        return self.class_info.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def sample_name(self, index: int) -> str:
        """A human-readable name of sample `index` (its image file stem by default)."""
        sample = self.samples[index]
        first = sample[0] if isinstance(sample, (tuple, list)) else sample
        return Path(str(first)).stem

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
