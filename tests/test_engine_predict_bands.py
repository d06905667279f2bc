"""`fcnseg predict --weights W` on models of other band counts and bit depths (issue 23, item 2).

What must hold: the inputs are decoded to the band count the weights state, by training's
rules (16-bit divided by 65535, never shifted), and normalised by the numbers stored in the
weights, so the written labels are those the model computes on those values; an input whose
band count cannot become the model's is refused in one line naming it and the fix (exit 2)
before any output is written; the overlay of a non-RGB input is a picture, not a crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from model_helpers import BandedNet, banded_weights, registered_banded_net
from PIL import Image

from fcnseg.cli import main
from fcnseg.engine.predict_loader import DecodeDataset
from fcnseg.engine.render import preview_rgb

#: Per-band statistics of 12-bit data stored on the 16-bit scale (what `data check` measures).
MEAN_8 = [0.030 + 0.002 * band for band in range(8)]
STD_8 = [0.018 - 0.001 * band for band in range(8)]


@pytest.fixture(autouse=True, scope="module")
def banded_registered():
    with registered_banded_net():
        yield


def twelve_bit_cube(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    """12-bit structured data (ramps plus noise) on the uint16 scale, H x W x bands."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([(x * (band + 3) + y * (7 - band % 5)) for band in range(bands)], axis=-1)
    return ((ramps * 37 + rng.integers(0, 900, ramps.shape)) % 4096).astype(np.uint16)


def model_labels(model: BandedNet, values: np.ndarray, mean, std) -> np.ndarray:
    """The model's labels of H x W x C values on the [0, 1] scale, normalised by mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1))).float()[None]
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1)[0].numpy()


def unit_scale(cube: np.ndarray) -> np.ndarray:
    """Training's rule for 16-bit data: divided by 65535 (fcnseg.data.bands.image_values)."""
    return (cube.astype(np.float64) / 65535).astype(np.float32)


def test_eight_band_16_bit_tiff_is_read_with_the_weights_bands_and_numbers(tmp_path: Path):
    weights = tmp_path / "w.safetensors"
    model = banded_weights(weights, 8, MEAN_8, STD_8)
    cube = twelve_bit_cube(40, 56, 8)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, cube, photometric="minisblack", planarconfig="contig")
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(path), "--out", str(out)]) == 0
    written = np.asarray(Image.open(out / "scene.png"))
    expected = model_labels(model, unit_scale(cube), MEAN_8, STD_8)
    assert np.array_equal(written, expected)
    assert len(np.unique(expected)) > 1  # not two constant maps
    # The test can fail: without the stored numbers, or with the old 8-bit shift, the labels
    # differ.
    assert not np.array_equal(expected, model_labels(model, unit_scale(cube), [0] * 8, [1] * 8))
    shifted = (cube >> 8).astype(np.float32) / 255
    assert not np.array_equal(expected, model_labels(model, shifted, MEAN_8, STD_8))
    overlay = Image.open(out / "scene_overlay.jpg")
    assert overlay.mode == "RGB" and overlay.size == (2 * 56, 40)
    left = np.asarray(overlay)[:, :56].astype(int)
    assert left.std() > 20  # the first three bands stretched to a visible picture, not black


def test_one_band_16_bit_png_is_read_for_a_one_band_model(tmp_path: Path):
    weights = tmp_path / "w1.safetensors"
    mean, std = [0.031], [0.017]
    model = banded_weights(weights, 1, mean, std)
    grey = twelve_bit_cube(36, 44, 1, seed=5)[..., 0]
    path = tmp_path / "ct.png"
    Image.fromarray(grey).save(path)  # Pillow writes a uint16 array as a 16-bit PNG
    assert Image.open(path).mode.startswith("I")
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(path), "--out", str(out)]) == 0
    written = np.asarray(Image.open(out / "ct.png"))
    expected = model_labels(model, unit_scale(grey[..., None]), mean, std)
    assert np.array_equal(written, expected) and len(np.unique(expected)) > 1
    overlay = np.asarray(Image.open(out / "ct_overlay.jpg")).astype(int)
    grey_half = overlay[:, :44]
    assert grey_half.std() > 20  # 12-bit data stretched, not black
    inner = grey_half[:, :32]  # away from the coloured half, which JPEG's chroma blurs into
    assert np.abs(inner[..., 0] - inner[..., 2]).max() < 12  # shown as grey


def test_a_band_count_the_model_cannot_take_is_one_line_exit_2(tmp_path: Path, capsys):
    weights = tmp_path / "w.safetensors"
    banded_weights(weights, 8, MEAN_8, STD_8)
    good = tmp_path / "good.tif"
    tifffile.imwrite(
        good, twelve_bit_cube(20, 20, 8), photometric="minisblack", planarconfig="contig"
    )
    rgb = tmp_path / "photo.png"
    Image.new("RGB", (20, 20), (10, 200, 30)).save(rgb)
    three = tmp_path / "three.tif"
    tifffile.imwrite(three, twelve_bit_cube(20, 20, 3), photometric="rgb")
    for bad, have in [(rgb, 3), (three, 3)]:
        out = tmp_path / f"out_{bad.stem}"
        argv = ["predict", "--weights", str(weights), str(good), str(bad), "--out", str(out)]
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error, error
        assert str(bad) in error and f"{have} band(s) but the model takes 8" in error, error
        assert "model.in_channels=3" in error and "8-band images" in error, error
        assert not out.exists()  # refused before any output, the good input's included


def test_decoding_follows_the_band_count_it_is_given(tmp_path: Path):
    path = tmp_path / "cube.tif"
    cube = twelve_bit_cube(12, 10, 8)
    tifffile.imwrite(path, cube, photometric="minisblack", planarconfig="contig")
    decoded = DecodeDataset([path], channels=8)[0]
    assert decoded.reason is None and decoded.image.dtype == torch.float32
    assert torch.equal(decoded.image, torch.from_numpy(unit_scale(cube).transpose(2, 0, 1)))
    refused = DecodeDataset([path])[0]  # the default, 3 bands: a failure record, not a raise
    assert refused.image is None and "8 band(s) but the model takes 3" in refused.reason


def test_preview_rule_per_band_count_and_depth():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert preview_rgb(rgb) is rgb  # the 8-bit RGB fast path: the array itself
    four = np.dstack([rgb, np.full((6, 7), 9, np.uint8)])
    assert np.array_equal(preview_rgb(four), rgb)  # first three 8-bit bands as they are
    grey = np.linspace(0.1, 0.2, 6 * 7, dtype=np.float32).reshape(6, 7, 1)
    shown = preview_rgb(grey)
    assert shown.dtype == np.uint8 and shown.shape == (6, 7, 3)
    assert np.array_equal(shown[..., 0], shown[..., 2])  # one band: grey
    assert shown.min() == 0 and shown.max() == 255  # stretched per band (2nd..98th pct)
    cube = np.stack([grey[..., 0] * (band + 1) for band in range(8)], axis=-1)
    cube[..., 1] = 0.5  # a flat band shows black, not a division by zero
    shown = preview_rgb(cube)
    assert shown[..., 0].max() == 255 and shown[..., 2].max() == 255
    assert shown[..., 1].max() == 0
