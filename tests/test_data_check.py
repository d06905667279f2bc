"""`check_dataset`: every problem at once, class histogram, median-frequency weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.data.check import (
    check_dataset,
    format_report,
    median_frequency_weights,
    validate_dataset,
)
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.camvid import CamVid


def test_median_frequency_definition():
    # class 0: 10 px in images totalling 100 px -> 0.1; class 1: 30/60 = 0.5; class 2: 20/200.
    weights = median_frequency_weights([10, 30, 20, 0], [100, 60, 200, 0])
    assert weights == pytest.approx([1.0, 0.2, 1.0, 0.0])


def _camvid_fixture(root, masks):
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    lines = []
    for index, mask in enumerate(masks):
        stem = f"f{index}"
        height, width = 4, 6
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(root / "train" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "trainannot" / f"{stem}.png")
        lines.append(f"/SegNet/CamVid/train/{stem}.png /SegNet/CamVid/trainannot/{stem}.png")
    (root / "train.txt").write_text("\n".join(lines))


def test_check_reports_every_problem_and_counts_good_images(tmp_path):
    good = np.zeros((4, 6), np.uint8)
    good[:, :3] = 3
    good[0, 0] = 11
    wrong_size = np.zeros((5, 6), np.uint8)
    bad_values = np.full((4, 6), 40, np.uint8)
    _camvid_fixture(tmp_path, [good, wrong_size, bad_values, good])
    (tmp_path / "train" / "f3.png").write_bytes(b"\x89PNG broken")
    report = check_dataset(tmp_path, "camvid", ["train", "val"])
    assert not report.ok
    assert report.splits == {"train": 4}
    assert len(report.problems) == 4  # size, values, corrupt file, missing val list
    text = " ".join(report.problems)
    for needle in (
        "f1.png: mask is (5, 6)",
        "f2.png: label values [40]",
        "f3.png: cannot decode",
        "val.txt",
    ):
        assert needle in text
    stats = report.statistics["train"]
    assert stats.images == 1 and stats.void_pixels == 1
    assert stats.pixels[0] == 12 and stats.pixels[3] == 11  # (0, 0) is void
    rendered = format_report(report)
    assert "4 problem(s)" in rendered and "median(freq)/freq_c" in rendered


def test_validate_dataset_raises_one_line_summary(tmp_path):
    _camvid_fixture(tmp_path, [np.full((4, 6), 12, np.uint8), np.full((4, 6), 13, np.uint8)])
    with pytest.raises(DataError, match=r"f0\.png.*\(and 1 more") as info:
        validate_dataset(CamVid(tmp_path, "train"))
    assert "\n" not in str(info.value)


def test_synthetic_check_is_clean_and_weights_rare_classes_up():
    report = check_dataset(None, "synthetic", ["val"], num_images=6, size=(48, 64))
    assert report.ok, report.problems
    weights = report.statistics["val"].median_frequency_weights
    names = report.statistics["val"].names
    assert weights[names.index("pole")] > 1.0 > weights[names.index("road")]


@pytest.mark.slow
@pytest.mark.data
def test_real_camvid_histogram_matches_its_readme(real_camvid):
    root = real_camvid
    report = check_dataset(root, "camvid", ["train"])
    assert report.ok, report.problems[:3]
    readme = (root / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| ([\d.]+) \| [\d.]+ \|$", readme, re.MULTILINE)
    expected = {int(c): float(share) for c, share in rows}
    stats = report.statistics["train"]
    for c, share in enumerate(stats.share):
        assert 100 * share == pytest.approx(expected[c], abs=0.006)
    weights = torch.tensor(stats.median_frequency_weights)
    assert weights.argmin() == 3 and weights.argmax() == 10  # road commonest, bicyclist rarest


# ------------------------------------------------------------------ EXIF orientation
def _folder_with_exif(root, orientation: int, image_size, mask_size):
    """A folder dataset of one JPEG (with EXIF `orientation`, stored image_size WxH) and one
    class-index PNG mask (mask_size WxH, untagged)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text("names: [a, b]\n")
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = np.zeros((image_size[1], image_size[0], 3), np.uint8)
    Image.fromarray(pixels).save(root / "images" / "p.jpg", exif=exif.tobytes())
    mask = np.zeros((mask_size[1], mask_size[0]), np.uint8)
    mask[: mask_size[1] // 2] = 1  # top half class 1: turned 180 degrees it is the bottom half
    Image.fromarray(mask, mode="L").save(root / "masks" / "p.png")
    return root


def test_check_reports_a_180_degree_exif_image_with_an_untagged_mask(tmp_path, capsys):
    from fcnseg.cli import main

    root = _folder_with_exif(tmp_path / "d", 3, (8, 6), (8, 6))
    report = check_dataset(root, "folder", ["all"])
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert "p.jpg" in problem and "EXIF orientation 3" in problem and "p.png" in problem
    assert "exiftran" in problem and "exiftool -Orientation=" in problem
    assert (
        main(["data", "check", "--format", "folder", "--root", str(root), "--splits", "all"]) == 1
    )
    assert "EXIF orientation 3 (rotated 180 degrees)" in capsys.readouterr().out


def test_training_preflight_refuses_the_ambiguous_pair(tmp_path):
    from fcnseg.data.check import preflight
    from fcnseg.data.datasets.folder import FolderDataset

    root = _folder_with_exif(tmp_path / "d", 3, (8, 6), (8, 6))
    with pytest.raises(DataError, match=r"p\.jpg: EXIF orientation 3 .* may be loaded turned"):
        preflight(FolderDataset(root, "all"))


def test_quarter_turn_drawn_on_the_image_as_shown_is_consistent(tmp_path):
    """Stored 8x6 with orientation 6 is 6x8 as shown; a 6x8 mask was drawn on it: consistent,
    and the image is loaded transposed (io.py applies the orientation) to the mask's size."""
    from fcnseg.data.datasets.folder import FolderDataset

    root = _folder_with_exif(tmp_path / "d", 6, (8, 6), (6, 8))
    assert check_dataset(root, "folder", ["all"]).problems == []
    image, mask = FolderDataset(root, "all").load(0)
    assert tuple(image.shape[1:]) == tuple(mask.shape) == (8, 6)


def test_quarter_turn_drawn_on_the_stored_pixels_is_reported(tmp_path):
    root = _folder_with_exif(tmp_path / "d", 6, (8, 6), (8, 6))
    (problem,) = check_dataset(root, "folder", ["all"]).problems
    assert "EXIF orientation 6 (rotated 90 degrees)" in problem
    assert "agree only as stored" in problem
