"""PASCAL-Context, Cityscapes and ADE20K loaders on fixtures in their real on-disk layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.constants import CITYSCAPES_ID_TO_TRAINID
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.registry import build_dataset, get_dataset_class

H, W = 4, 6


def _save_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 77, np.uint8)).save(path)


def _save_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(path)


def test_context_png_and_mat_labels_shift_void(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    (voc / "ImageSets/SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets/SegmentationContext/train.txt").write_text("2008_000002\n2008_000003\n")
    labels = np.array([[0, 1, 59, 30, 0, 2]] * H, dtype=np.uint8)
    _save_image(voc / "JPEGImages/2008_000002.jpg")
    _save_image(voc / "JPEGImages/2008_000003.jpg")
    _save_labels(voc / "SegmentationClassContext/2008_000002.png", labels)
    scipy.io.savemat(
        voc / "SegmentationClassContext/2008_000003.mat", {"LabelMap": labels.astype(np.uint16)}
    )
    dataset = build_dataset("context", tmp_path, "train")
    assert dataset.num_classes == 59
    expected = [[255, 0, 58, 29, 255, 1]] * H
    assert dataset[0][1].tolist() == expected and dataset[1][1].tolist() == expected


def test_context_label_above_59_is_rejected(tmp_path):
    (tmp_path / "ImageSets/SegmentationContext").mkdir(parents=True)
    (tmp_path / "ImageSets/SegmentationContext/val.txt").write_text("x\n")
    _save_image(tmp_path / "JPEGImages/x.jpg")
    _save_labels(tmp_path / "SegmentationClassContext/x.png", np.full((H, W), 60, np.uint8))
    with pytest.raises(DataError, match=r"x\.png: label values \[60\]"):
        build_dataset("context", tmp_path, "val").load(0)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    name = "aachen_000000_000019"
    _save_image(tmp_path / f"leftImg8bit/train/aachen/{name}_leftImg8bit.png")
    ids = np.array([[7, 8, 26, 33, 0, 34]] * H, dtype=np.uint8)  # 34 (or -1) = license plate
    _save_labels(tmp_path / f"gtFine/train/aachen/{name}_gtFine_labelIds.png", ids)
    dataset = build_dataset("cityscapes", tmp_path, "train")
    assert dataset.num_classes == 19 and len(dataset) == 1
    assert dataset[0][1][0].tolist() == [0, 1, 13, 18, 255, 255]
    assert sorted(CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))


def test_cityscapes_reads_label_train_ids_when_prepared(tmp_path):
    name = "bonn_000000_000019"
    _save_image(tmp_path / f"leftImg8bit/val/bonn/{name}_leftImg8bit.png")
    train_ids = np.array([[0, 1, 13, 18, 255, 5]] * H, dtype=np.uint8)
    _save_labels(tmp_path / f"gtFine/val/bonn/{name}_gtFine_labelTrainIds.png", train_ids)
    dataset = build_dataset("cityscapes", tmp_path, "val")
    assert dataset[0][1][0].tolist() == [0, 1, 13, 18, 255, 5]
    bad = np.array([[0, 1, 19, 18, 255, 5]] * H, dtype=np.uint8)
    _save_labels(tmp_path / f"gtFine/val/bonn/{name}_gtFine_labelTrainIds.png", bad)
    with pytest.raises(DataError, match="labelTrainIds"):
        build_dataset("cityscapes", tmp_path, "val").load(0)


def test_cityscapes_missing_label_names_it(tmp_path):
    _save_image(tmp_path / "leftImg8bit/val/bonn/b_000000_leftImg8bit.png")
    with pytest.raises(DataError, match="b_000000_gtFine_labelIds.png"):
        build_dataset("cityscapes", tmp_path, "val")


def test_ade20k_shifts_labels(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _save_image(root / "images/validation/ADE_val_00000001.jpg")
    _save_labels(
        root / "annotations/validation/ADE_val_00000001.png",
        np.array([[0, 1, 150, 3, 0, 0]] * H, np.uint8),
    )
    dataset = build_dataset("ade20k", tmp_path, "val")
    assert dataset.num_classes == 150
    assert dataset[0][1][0].tolist() == [255, 0, 149, 2, 255, 255]


def test_ade20k_mask_without_image_is_reported(tmp_path):
    _save_image(tmp_path / "images/training/a.jpg")
    _save_labels(tmp_path / "annotations/training/a.png", np.zeros((H, W), np.uint8))
    _save_labels(tmp_path / "annotations/training/b.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match=r"mask .*b\.png has no image"):
        build_dataset("ade20k", tmp_path, "train")


def test_registry_unknown_format_lists_the_known_ones():
    with pytest.raises(ValueError, match="camvid.*voc"):
        get_dataset_class("kitti")


def test_registry_builds_synthetic_without_root():
    dataset = build_dataset("synthetic", None, "val", num_images=3, size=(32, 48))
    assert len(dataset) == 3 and dataset[0][0].shape == (3, 32, 48)
    assert isinstance(dataset[0][1], torch.Tensor)
