"""Generic folder dataset: class files, index and colour masks, both split styles, bad layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.folder import FolderDataset, split_by_hash

H, W = 4, 5
PALETTE = [[0, 0, 255], [0, 255, 0], [255, 0, 0]]


def _write(root: Path, stems, sub="", colour=False, image_suffix=".jpg"):
    for seed, stem in enumerate(stems):
        image_path = root / "images" / sub / f"{stem}{image_suffix}"
        mask_path = root / "masks" / sub / f"{stem}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 100, np.uint8)).save(image_path)
        labels = np.random.default_rng(seed).integers(0, 3, (H, W)).astype(np.uint8)
        if colour:
            Image.fromarray(np.array(PALETTE, np.uint8)[labels]).save(mask_path)
        else:
            Image.fromarray(labels, mode="L").save(mask_path)
    return labels


def test_subfolder_splits_with_yaml_class_file(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [sky, grass, cow]\nignore_index: 9\n")
    _write(tmp_path, ["a", "b"], "train")
    last = _write(tmp_path, ["c"], "val")
    train = FolderDataset(tmp_path, "train")
    val = FolderDataset(tmp_path, "val")
    assert (len(train), len(val)) == (2, 1)
    assert train.classes == ("sky", "grass", "cow") and train.ignore_index == 9
    assert val[0][1].tolist() == last.tolist()


def test_colour_masks_with_json_palette(tmp_path):
    classes = [
        {"name": n, "color": c} for n, c in zip(["sea", "land", "boat"], PALETTE, strict=True)
    ]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": classes}))
    labels = _write(tmp_path, ["x"], "train", colour=True, image_suffix=".png")
    dataset = FolderDataset(tmp_path, "train")
    assert dataset.palette[2] == (255, 0, 0)
    assert dataset[0][1].tolist() == labels.tolist()


def test_flat_layout_hash_split_is_deterministic_and_disjoint(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b, c]\n")
    stems = [f"img{i:03d}" for i in range(20)]
    _write(tmp_path, stems)
    train = FolderDataset(tmp_path, "train", val_fraction=0.25)
    val = FolderDataset(tmp_path, "val", val_fraction=0.25)
    names = lambda d: {d.sample_name(i) for i in range(len(d))}  # noqa: E731
    assert len(val) == 5 and names(train) | names(val) == set(stems)
    assert not names(train) & names(val)
    assert names(val) == split_by_hash(stems, 0.25)
    assert len(FolderDataset(tmp_path, "all")) == 20


def test_missing_class_file(tmp_path):
    _write(tmp_path, ["a"])
    with pytest.raises(DataError, match=r"classes\.yaml: class file not found"):
        FolderDataset(tmp_path, "all")


def test_empty_images_folder(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b]\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        FolderDataset(tmp_path, "all")


def test_duplicate_stems(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b, c]\n")
    _write(tmp_path, ["a"])
    _write(tmp_path, ["a"], image_suffix=".png")
    with pytest.raises(DataError, match="duplicate stem 'a'"):
        FolderDataset(tmp_path, "all")


def test_mask_without_image(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b, c]\n")
    _write(tmp_path, ["a", "b"])
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"mask .*b\.png has no image"):
        FolderDataset(tmp_path, "all")


@pytest.mark.parametrize(
    "text, message",
    [
        ("names: []\n", "non-empty list"),
        ("names: [a, a]\n", "repeat"),
        ("names: [a, b]\npalette: [[0, 0, 0]]\n", "one \\[r, g, b\\]"),
        ("names: [a, b]\nignore_index: 1\n", "is a class id"),
        ("names: [a, b\n", "cannot parse"),
    ],
)
def test_bad_class_files(tmp_path, text, message):
    (tmp_path / "classes.yaml").write_text(text)
    _write(tmp_path, ["a"])
    with pytest.raises(DataError, match=message):
        FolderDataset(tmp_path, "all")
