"""Factories named by `data.augment` in the tests ("pipeline_factories:<name>")."""

from __future__ import annotations


def flip_crop_v2():
    """torchvision v2: always flip, then a random 24x24 crop (masks padded with the void 255)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=1.0),
            v2.RandomCrop((24, 24), pad_if_needed=True, fill={tv_tensors.Mask: 255, "others": 0}),
        ]
    )


def flip_crop_albumentations():
    """albumentations: the same flip and crop (only when albumentations is installed)."""
    import albumentations as A

    return A.Compose([A.HorizontalFlip(p=1.0), A.RandomCrop(24, 24)])


def broken():
    raise RuntimeError("no GPU here")
