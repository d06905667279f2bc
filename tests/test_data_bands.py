"""Any number of bands, any bit depth: decoding (TIFF, .npy, 16-bit PNG), the per-channel
statistics, and an 8-band 16-bit TIFF data set trained and evaluated from a recipe."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from fcnseg.data.check import check_headers
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.io import read_image
from fcnseg.data.normalization import PRESETS
from fcnseg.data.stats import channel_statistics
from fcnseg.errors import DataError

BANDS = 8


def twelve_bit_cube(seed: int, height: int = 24, width: int = 20) -> np.ndarray:
    """H x W x 8 uint16 values of a 12-bit sensor (0..4095), each band on its own level."""
    rng = np.random.default_rng(seed)
    offsets = np.linspace(200, 3000, BANDS)
    cube = offsets + rng.normal(0, 150, (height, width, BANDS))
    return np.clip(cube, 0, 4095).astype(np.uint16)


@pytest.mark.parametrize("planar", [False, True])
def test_eight_band_tiled_tiff_reads_every_band_exactly(tmp_path, planar):
    cube = twelve_bit_cube(0, 40, 36)
    path = tmp_path / "scene.tif"
    data = cube.transpose(2, 0, 1).copy() if planar else cube
    tifffile.imwrite(
        path,
        data,
        tile=(16, 16),
        photometric="minisblack",
        planarconfig="separate" if planar else "contig",
    )
    image = read_image(path, channels=None)
    assert image.dtype == torch.float32 and image.shape == (BANDS, 40, 36)
    expected = torch.from_numpy(cube.transpose(2, 0, 1) / 65535.0).float()
    assert torch.equal(image, expected)
    assert torch.equal(read_image(path, channels=BANDS), image)


def test_an_hwc_array_saved_by_plain_tifffile_imwrite_reads_as_bands_last(tmp_path):
    """`tifffile.imwrite(path, hwc)` with 8 bands and no options stores H pages of W x 8 (axes
    QYX); the shape tifffile records says H x W x C, so it reads as 8 bands, not 40."""
    cube = twelve_bit_cube(3, 40, 36)
    tifffile.imwrite(tmp_path / "plain.tif", cube)
    image = read_image(tmp_path / "plain.tif", channels=None)
    assert image.shape == (BANDS, 40, 36)
    assert torch.equal(image, torch.from_numpy(cube.transpose(2, 0, 1) / 65535.0).float())
    # A bands-first stack written the same way stays bands-first.
    tifffile.imwrite(tmp_path / "planar.tif", cube.transpose(2, 0, 1).copy())
    assert torch.equal(read_image(tmp_path / "planar.tif", channels=None), image)


def test_eight_band_tiff_is_not_called_corrupt_and_names_the_fix(tmp_path):
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, twelve_bit_cube(1), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError) as caught:
        read_image(path)  # an RGB model's 3 channels
    message = str(caught.value)
    assert "corrupt" not in message and "\n" not in message
    assert str(path) in message and "8 band(s)" in message and "model.in_channels=8" in message


def test_float_tiff_in_unit_range_stays_float(tmp_path):
    values = np.linspace(0.0, 1.0, 30, dtype=np.float32).reshape(5, 6)
    tifffile.imwrite(tmp_path / "f.tif", values)
    image = read_image(tmp_path / "f.tif", channels=1)
    assert image.dtype == torch.float32 and torch.equal(image[0], torch.from_numpy(values))
    assert len(image.unique()) == 30  # not thresholded to 0/1


def test_twelve_bit_png_is_not_black_and_normalises_to_unit_scale(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.integers(1000, 4096, (16, 16)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    image = read_image(tmp_path / "scan.png", channels=1)
    # The old rule (value >> 8) kept 16 levels of 4096; now every level survives.
    assert len(image.unique()) == len(np.unique(values))
    assert torch.allclose(image[0] * 65535.0, torch.from_numpy(values).float(), atol=1e-2)
    stats = channel_statistics(_OneImage(image))
    normalised = stats.apply(image)
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std(False)) - 1) < 1e-3


class _OneImage:
    """The smallest dataset channel_statistics reads: len and load."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image

    def __len__(self) -> int:
        return 1

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image, torch.zeros(self.image.shape[-2:], dtype=torch.long)


def test_npy_cube_and_channel_rules(tmp_path):
    cube = np.random.default_rng(3).random((6, 7, 4)).astype(np.float32)
    np.save(tmp_path / "cube.npy", cube)
    image = read_image(tmp_path / "cube.npy", channels=4)
    assert torch.equal(image, torch.from_numpy(cube.transpose(2, 0, 1)))
    np.save(tmp_path / "grey.npy", cube[..., 0])
    assert read_image(tmp_path / "grey.npy").shape == (3, 6, 7)  # grey repeated for RGB
    with pytest.raises(DataError, match="4 band"):
        read_image(tmp_path / "cube.npy", channels=3)
    np.save(tmp_path / "nan.npy", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        read_image(tmp_path / "nan.npy", channels=1)


def test_rgb_photo_to_one_channel_is_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "g.png")
    grey = read_image(tmp_path / "g.png", channels=1)
    assert grey.shape == (1, 2, 2) and grey.dtype == torch.uint8
    assert int(grey[0, 0, 0]) == round(200 * 0.587)


def test_sixteen_bit_colour_png_warns_instead_of_silently_narrowing(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = np.full((1, 1, 3), 4000, dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    (tmp_path / "c16.png").write_bytes(png + chunk(b"IEND", b""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_image(tmp_path / "c16.png")
    assert any("16-bit colour PNG" in str(w.message) for w in caught)


# ------------------------------------------------------------------ an 8-band data set
def write_band_dataset(root: Path, count: int = 8) -> None:
    """root/images/*.tif (8-band 16-bit, 12-bit values), root/masks/*.png, classes.yaml: the
    `folder` layout. Class 1 where band 3 is bright, class 2 where band 6 is dark."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        cube = twelve_bit_cube(10 + index, 32, 32)
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 16:] = 1
        mask[20:, :8] = 2
        cube[..., 3][mask == 1] += 500
        cube[..., 6][mask == 2] //= 3
        tifffile.imwrite(
            root / "images" / f"s{index}.tif", cube, photometric="minisblack", planarconfig="contig"
        )
        Image.fromarray(mask).save(root / "masks" / f"s{index}.png")
    (root / "classes.yaml").write_text("names: [ground, field, water]\n")


def test_band_dataset_headers_and_statistics(tmp_path):
    write_band_dataset(tmp_path / "d", count=3)
    dataset = build_dataset("folder", str(tmp_path / "d"), "all")
    check_headers(dataset, 0)  # the pre-flight reads multi-band TIFF headers
    dataset.image_channels = BANDS
    stats = channel_statistics(dataset)
    assert stats.channels == BANDS and stats.name == "per_channel"
    stacked = torch.stack([dataset.load(i)[0] for i in range(len(dataset))]).double()
    mean = stacked.mean(dim=(0, 2, 3))
    std = stacked.permute(1, 0, 2, 3).flatten(1).std(dim=1, unbiased=False)
    assert torch.allclose(torch.tensor(stats.mean, dtype=torch.float64), mean, atol=1e-6)
    assert torch.allclose(torch.tensor(stats.std, dtype=torch.float64), std, atol=1e-6)


@pytest.mark.slow
def test_eight_band_dataset_trains_and_evaluates_from_a_recipe(tmp_path):
    from fcnseg.config import load_config
    from fcnseg.engine.loading import load_model
    from fcnseg.engine.run_eval import run_evaluation
    from fcnseg.engine.train import train

    root = tmp_path / "bands"
    write_band_dataset(root)
    recipe = Path(__file__).resolve().parents[1] / "configs" / "folder_fcn8s_lite0.yaml"
    overrides = [
        f"data.root={root}",
        "model.name=fcn8s_resnet18",
        "model.pretrained=false",
        "model.in_channels=8",
        "data.crop_size=[32,32]",
        "data.class_weights=null",
        "train.epochs=2",
        "train.batch_size=2",
        "train.val_every=1",
        "train.device=cpu",
        "train.progress=false",
        "train.warmup_steps=0",
    ]
    result = train(load_config(recipe, overrides), out=tmp_path / "run")
    assert result.steps > 0 and result.run_dir is not None
    loaded = load_model(run=result.run_dir)
    assert loaded.model.in_channels == BANDS
    meta = loaded.metadata
    assert meta.normalization == "per_channel" and meta.model_options["in_channels"] == BANDS
    assert len(meta.input_normalization().mean) == BANDS
    evaluated = run_evaluation(run=result.run_dir, device="cpu", split="val")
    scores = json.loads((result.run_dir / "eval-folder-val.json").read_text())
    assert evaluated.per_head[evaluated.primary].pixel_accuracy >= 0.0
    assert "mean_iu" in json.dumps(scores)
    import fcnseg  # the Python way in takes the 8-band files as they are

    labels = fcnseg.load(result.run_dir, device="cpu").predict(root / "images" / "s0.tif")
    assert labels.shape == (32, 32) and labels.max() < 3


def test_colour_jitter_is_refused_for_eight_bands(tmp_path):
    from fcnseg.config import load_config
    from fcnseg.engine.setup import prepare_training
    from fcnseg.errors import RecipeError

    root = tmp_path / "bands"
    write_band_dataset(root, count=2)
    config = load_config(
        None,
        [
            "data.format=folder",
            f"data.root={root}",
            "data.val_split=null",
            "data.train_split=all",
            "data.jitter=0.2",
            "model.name=fcn8s_resnet18",
            "model.pretrained=false",
            "model.in_channels=8",
        ],
    )
    with pytest.raises(RecipeError, match=r"^data\.jitter=0\.2: colour jitter needs RGB") as caught:
        prepare_training(config, torch.device("cpu"))
    assert "\n" not in str(caught.value)


def test_presets_are_their_numbers():
    imagenet = PRESETS["imagenet"]
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    image = torch.randint(0, 256, (3, 5, 4), dtype=torch.uint8)
    caffe = PRESETS["caffe_bgr"].apply(image)
    from fcnseg.constants import CAFFE_MEAN_BGR

    expected = image.flip(0).float() - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)
    assert torch.allclose(caffe, expected, atol=1e-3)
    assert torch.allclose(PRESETS["caffe_bgr"].invert(caffe), image.float() / 255, atol=1e-5)


def test_data_check_reports_an_eight_band_set_and_its_band_statistics(tmp_path, capsys):
    from fcnseg.cli import main

    root = tmp_path / "bands"
    write_band_dataset(root, count=3)
    argv = ["data", "check", "--root", str(root), "--format", "folder", "--splits", "all"]
    assert main([*argv, "--channels", "8"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "band 7: mean" in out
    dataset = build_dataset("folder", str(root), "all")
    dataset.image_channels = BANDS
    stats = channel_statistics(dataset)
    assert f"band 3: mean {stats.mean[3]:.6f}  std {stats.std[3]:.6f}" in out
    assert main(argv) == 1  # decoded as RGB, each 8-band image is a problem naming the fix
    assert "model.in_channels=8" in capsys.readouterr().out


def test_npy_masks_pair_with_npy_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cube = np.random.default_rng(5).random((6, 5, 2)).astype(np.float32)
    labels = np.arange(30, dtype=np.int32).reshape(6, 5) % 2
    np.save(tmp_path / "images" / "a.npy", cube)
    np.save(tmp_path / "masks" / "a.npy", labels)
    (tmp_path / "classes.yaml").write_text("names: [x, y]\n")
    dataset = build_dataset("folder", str(tmp_path), "all")
    dataset.image_channels = 2
    image, mask = dataset.load(0)
    assert image.shape == (2, 6, 5) and torch.equal(mask, torch.from_numpy(labels).long())
    np.save(tmp_path / "masks" / "a.npy", labels.astype(np.float32))
    with pytest.raises(DataError, match="integer class ids"):
        dataset.load(0)
