"""CamVid loader: SegNet list format, folder layout, missing files, and the real copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.constants import CAMVID_SIZE_HW, CAMVID_SPLIT_SIZES, CAMVID_VOID
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.camvid import CamVid
from fcnseg.data.datasets.registry import build_dataset


def _write_pair(root: Path, split: str, stem: str, height=6, width=8, label_max=CAMVID_VOID):
    rng = np.random.default_rng(abs(hash(stem)) % 2**32)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, label_max + 1, (height, width), dtype=np.uint8)
    Image.fromarray(image).save(root / split / f"{stem}.png")
    Image.fromarray(labels, mode="L").save(root / f"{split}annot" / f"{stem}.png")
    return image, labels


def _segnet_camvid(root: Path, split="train", stems=("0001TP_006690", "Seq05VD_f00000")):
    """A CamVid copy in the SegNet release format, list paths starting /SegNet/CamVid/."""
    lines, arrays = [], []
    for stem in stems:
        arrays.append(_write_pair(root, split, stem))
        lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return arrays


def test_segnet_list_paths_resolve_against_root(tmp_path):
    arrays = _segnet_camvid(tmp_path)
    dataset = CamVid(tmp_path, "train")
    assert len(dataset) == 2 and dataset.num_classes == 11 and dataset.ignore_index == 11
    image, mask = dataset[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 8)
    assert torch.equal(image, torch.from_numpy(arrays[1][0]).permute(2, 0, 1))
    assert torch.equal(mask, torch.from_numpy(arrays[1][1]).long())
    assert dataset.sample_name(1) == "Seq05VD_f00000"


def test_folder_layout_without_list_file(tmp_path):
    for stem in ("b", "a", "c"):
        _write_pair(tmp_path, "test", stem)
    dataset = build_dataset("camvid", tmp_path, "test")
    assert [dataset.sample_name(i) for i in range(3)] == ["a", "b", "c"]
    assert dataset[0][1].shape == (6, 8)


def test_missing_list_file_names_it(tmp_path):
    _segnet_camvid(tmp_path)
    with pytest.raises(DataError, match=r"val\.txt") as info:
        CamVid(tmp_path, "val")
    assert "\n" not in str(info.value)


def test_list_naming_missing_files_reports_them_all(tmp_path):
    _segnet_camvid(tmp_path)
    (tmp_path / "train" / "0001TP_006690.png").unlink()
    (tmp_path / "trainannot" / "Seq05VD_f00000.png").unlink()
    with pytest.raises(DataError, match="2 listed file") as info:
        CamVid(tmp_path, "train")
    assert "0001TP_006690" in str(info.value) and "Seq05VD_f00000" in str(info.value)


def test_mask_with_no_image_in_folder_layout(tmp_path):
    _write_pair(tmp_path, "val", "a")
    _write_pair(tmp_path, "val", "b")
    (tmp_path / "val" / "b.png").unlink()
    with pytest.raises(DataError, match=r"mask .*b\.png has no image"):
        CamVid(tmp_path, "val")


def test_label_out_of_range_is_reported_on_load(tmp_path):
    _segnet_camvid(tmp_path, stems=("x",))
    Image.fromarray(np.full((6, 8), 12, np.uint8), mode="L").save(tmp_path / "trainannot/x.png")
    with pytest.raises(DataError, match=r"\[12\].*outside \[0, 11\)"):
        CamVid(tmp_path, "train").load(0)


@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "val"])
def test_real_camvid_counts_sizes_and_labels(split, real_camvid):
    dataset = CamVid(real_camvid, split)
    assert len(dataset) == CAMVID_SPLIT_SIZES[split]
    for index in (0, len(dataset) - 1):
        image, mask = dataset[index]
        assert image.shape == (3, *CAMVID_SIZE_HW) and image.dtype == torch.uint8
        assert mask.shape == CAMVID_SIZE_HW
        assert 0 <= int(mask.min()) and int(mask.max()) <= CAMVID_VOID
