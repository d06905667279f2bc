"""Image/mask decoding: the documented automatic handling and one-line errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_bytes import header_only_png
from PIL import Image

from fcnseg.data.datasets.base import DataError
from fcnseg.data.io import check_pair, read_image, read_mask


def _rgb(height=5, width=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    array = _rgb()
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == torch.uint8 and torch.equal(
        image, torch.from_numpy(array).permute(2, 0, 1)
    )


def test_rgba_drops_alpha(tmp_path):
    array = _rgb()
    rgba = np.concatenate([array, np.full((5, 7, 1), 17, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(array).permute(2, 0, 1))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 5, 7)
    assert all(torch.equal(image[c], torch.from_numpy(gray)) for c in range(3))


def test_sixteen_bit_image_kept_at_full_depth(tmp_path):
    # No bit shift (the old rule, value >> 8, made 256 and 300 equal): divided by 65535.
    values = np.array([[0, 256, 300, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    image = read_image(tmp_path / "d.png")
    assert image.dtype == torch.float32 and image.shape == (3, 1, 4)
    expected = torch.tensor(values / 65535.0, dtype=torch.float32)
    assert torch.equal(image[0], expected) and torch.equal(image[2], expected)


def test_exif_orientation_is_applied(tmp_path):
    array = _rgb(4, 6)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "photo.jpg")
    assert image.shape == (3, 6, 4)  # height and width swapped


def test_truncated_image_is_a_one_line_data_error(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png: cannot decode") as info:
        read_image(tmp_path / "t.png")
    assert "\n" not in str(info.value)


def test_not_an_image_is_a_data_error(tmp_path):
    (tmp_path / "x.jpg").write_text("hello")
    with pytest.raises(DataError, match=r"x\.jpg.*corrupt"):
        read_image(tmp_path / "x.jpg")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_image(tmp_path / "nothing.png")


def test_palette_mask_gives_indices_not_colours(tmp_path):
    labels = np.array([[0, 1, 255], [2, 2, 0]], dtype=np.uint8)
    mask = Image.fromarray(labels, mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    mask.save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == labels.tolist()


def test_sixteen_bit_mask_kept_as_is(tmp_path):
    labels = np.array([[0, 300], [65535, 7]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "m16.png")
    mask = read_mask(tmp_path / "m16.png")
    assert mask.dtype == torch.int64 and mask.tolist() == labels.tolist()


def test_colour_mask_mapped_through_palette(tmp_path):
    palette = [(10, 20, 30), (200, 0, 0)]
    rgb = np.array([[[10, 20, 30], [200, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png", palette=palette, ignore_index=9).tolist() == [[0, 1, 9]]


def test_colour_mask_with_unknown_colour_names_it(tmp_path):
    rgb = np.array([[[10, 20, 30], [1, 2, 3]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"colour \(1, 2, 3\)"):
        read_mask(tmp_path / "c.png", palette=[(10, 20, 30)])


def test_colour_mask_without_palette_is_an_error(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="no palette"):
        read_mask(tmp_path / "c.png")


def test_check_pair_size_mismatch_and_bad_values():
    image = torch.zeros(3, 4, 5, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"m\.png: mask is \(4, 6\)"):
        check_pair(image, torch.zeros(4, 6, dtype=torch.int64), 3, 255, "i.png", "m.png")
    bad = torch.tensor([[0, 1, 2, 255, 7]]).expand(4, 5)
    with pytest.raises(DataError, match=r"\[7\] are outside \[0, 3\)"):
        check_pair(image, bad, 3, 255, "i.png", "m.png")
    check_pair(image, torch.tensor([[0, 1, 2, 255, 0]]).expand(4, 5), 3, 255, "i.png", "m.png")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    from fcnseg.data.io import MAX_PIXELS_ENV, read_image, read_mask

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(20000, 20000))
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=r"bomb.png: 20000x20000 image .* exceeds"):
            reader(bomb)
    # The cap is configurable, and a bad value of it is a one-line error too.
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DataError, match="40x30"):
        read_image(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=MAX_PIXELS_ENV):
        read_image(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "2000")
    assert read_image(small).shape == (3, 30, 40)
