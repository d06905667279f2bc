"""PASCAL VOC, SBD and the FCN split, on fixtures written in the real on-disk formats."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.constants import VOC_SEG11VALID_SIZE
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.datasets.voc import VOCSegmentation, voc_colormap

H, W = 6, 8


def _labels(seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 21, (H, W), dtype=np.uint8)
    labels[0, 0] = 255
    return labels


def _write_voc(root: Path, ids_by_split: dict[str, list[str]]) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    palette = [v for colour in voc_colormap(256) for v in colour]
    for split, ids in ids_by_split.items():
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for seed, image_id in enumerate(ids):
            Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(
                voc / "JPEGImages" / f"{image_id}.jpg"
            )
            mask = Image.fromarray(_labels(seed), mode="P")
            mask.putpalette(palette)
            mask.save(voc / "SegmentationClass" / f"{image_id}.png")
    return voc


def _write_sbd(root: Path, ids_by_split: dict[str, list[str]]) -> Path:
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "img").mkdir(parents=True, exist_ok=True)
    (dataset / "cls").mkdir(parents=True, exist_ok=True)
    for split, ids in ids_by_split.items():
        (dataset / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for seed, image_id in enumerate(ids):
            Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(
                dataset / "img" / f"{image_id}.jpg"
            )
            labels = _labels(seed + 100)
            labels[labels == 255] = 0  # SBD has no void label
            # The SBD layout: a MATLAB struct GTcls with fields Segmentation, Boundaries, ...
            gtcls = {"Segmentation": labels, "CategoriesPresent": np.unique(labels)}
            scipy.io.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": gtcls})
    return dataset


def test_voc_reads_palette_png_indices(tmp_path):
    _write_voc(tmp_path, {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]})
    dataset = build_dataset("voc", tmp_path, "train")
    assert len(dataset) == 2 and dataset.num_classes == 21 and dataset.ignore_index == 255
    image, mask = dataset[1]
    assert image.shape == (3, H, W)
    assert torch.equal(mask, torch.from_numpy(_labels(1)).long())


def test_voc_missing_images_are_all_named(tmp_path):
    voc = _write_voc(tmp_path, {"train": ["a", "b", "c"]})
    (voc / "JPEGImages/a.jpg").unlink()
    (voc / "SegmentationClass/c.png").unlink()
    with pytest.raises(DataError, match=r"train\.txt: 2 listed file\(s\) missing"):
        VOCSegmentation(tmp_path, "train")


def test_voc_unknown_split_names_the_list(tmp_path):
    _write_voc(tmp_path, {"train": ["a"]})
    with pytest.raises(DataError, match=r"trainval\.txt: list file not found"):
        VOCSegmentation(tmp_path, "trainval")


def test_sbd_reads_gtcls_segmentation_from_mat(tmp_path):
    _write_sbd(tmp_path, {"train": ["2008_000002", "2008_000003"]})
    dataset = build_dataset("sbd", tmp_path / "benchmark_RELEASE", "train")
    expected = _labels(101)
    expected[expected == 255] = 0
    assert torch.equal(dataset[1][1], torch.from_numpy(expected).long())


def test_fcn_split_excludes_seg11valid_from_sbd_train(tmp_path):
    _write_sbd(tmp_path, {"train": ["a", "b", "c", "d"]})
    _write_voc(tmp_path, {"train": ["b", "d", "e"]})
    (tmp_path / "seg11valid.txt").write_text("b\nd\n")
    with pytest.warns(UserWarning, match=str(VOC_SEG11VALID_SIZE)):
        train = build_dataset("voc_fcn", tmp_path, "train")
    assert [train.sample_name(i) for i in range(len(train))] == ["a", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = build_dataset("voc_fcn", tmp_path, "val")
    assert [val.sample_name(i) for i in range(len(val))] == ["b", "d"]
    assert val[0][1].shape == (H, W)


def test_fcn_split_without_seg11valid_says_where_to_get_it(tmp_path):
    _write_sbd(tmp_path, {"train": ["a"]})
    with pytest.raises(DataError, match="seg11valid.txt.*FCN release"):
        build_dataset("voc_fcn", tmp_path, "train")


def test_voc_colormap_known_entries():
    colours = voc_colormap(21)
    assert colours[0] == (0, 0, 0) and colours[1] == (128, 0, 0) and colours[15] == (192, 128, 128)
