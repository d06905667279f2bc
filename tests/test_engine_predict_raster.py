"""`fcnseg predict --tiled` (issue 23, item 3): rasters read by window, labels streamed to TIFF.

What must hold: the streamed blend is the sliding mode's, bit for bit; the reader decodes every
storage layout to the same pixels; outputs appear complete or not at all; a bad TIFF is one
line and exit 2; memory does not grow with the image (the subprocess test at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from fcnseg.cli import main
from fcnseg.data.raster_io import TiffRowReader
from fcnseg.engine.metadata import validate_weights_metadata
from fcnseg.engine.predict_raster import predict_raster, raster_options, wants_raster
from fcnseg.engine.session import InferenceSession
from fcnseg.inference.raster import RELEASE_ROWS, TileGrid, stream_blended_logits
from fcnseg.inference.sliding import sliding_window_logits
from fcnseg.inference.spec import InferenceSpec

ROOT = Path(__file__).resolve().parents[1]
FAST_WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0_fast.safetensors"
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def tiny_model() -> nn.Module:
    """3x3 then 5x5 context: tiles see their border, so blending and padding matter."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2)
    ).eval()


def tiny_session(model: nn.Module | None = None) -> InferenceSession:
    metadata = validate_weights_metadata(
        {
            "model": "tiny",
            "num_classes": 4,
            "classes": ["a", "b", "c", "d"],
            "palette": PALETTE,
            "normalization": "imagenet",
        },
        "tiny",
    )
    return InferenceSession.for_model(model or tiny_model(), metadata)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB image with structure at several scales (smooth ramps plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1)
    return ((base + rng.integers(0, 60, base.shape)) % 256).astype(np.uint8)


def write_tiff(path: Path, image: np.ndarray, **options) -> Path:
    tifffile.imwrite(path, image, photometric="rgb", **options)
    return path


def sliding_logits(session: InferenceSession, image: np.ndarray, options: dict) -> torch.Tensor:
    batch = session.normalize([torch.from_numpy(image).permute(2, 0, 1)])
    with torch.no_grad():
        return sliding_window_logits(
            session.runnable,
            batch,
            options["tile_size"],
            options.get("tile_stride"),
            blend=options.get("blend", "gaussian"),
        )


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((700, 900), {"tile_size": 256}),
        ((700, 900), {"tile_size": (128, 192), "tile_stride": (100, 150), "blend": "ramp"}),
        ((90, 70), {"tile_size": 128}),  # smaller than a tile: padded as sliding pads
    ],
)
def test_streamed_logits_are_the_sliding_modes_bit_for_bit(
    tmp_path: Path, size: tuple[int, int], options: dict
) -> None:
    session = tiny_session()
    image = scene(*size)
    path = write_tiff(tmp_path / "scene.tif", image, tile=(64, 64), compression="zlib")
    expected = sliding_logits(session, image, options)
    grid = TileGrid.of(*size, options["tile_size"], options.get("tile_stride"))
    prepare = lambda crop: session.normalize(  # noqa: E731
        [torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)]
    )
    with TiffRowReader(path) as reader:
        bands = list(
            stream_blended_logits(
                session.runnable,
                reader.read_rows,
                grid,
                prepare,
                blend=options.get("blend", "gaussian"),
            )
        )
    tops = [top for top, _ in bands]
    ends = [top + logits.shape[2] for top, logits in bands]
    assert tops == [0, *ends[:-1]] and ends[-1] == size[0]  # consecutive, no gap, no overlap
    assert all(logits.shape[2] <= RELEASE_ROWS for _, logits in bands)
    streamed = torch.cat([logits for _, logits in bands], dim=2)
    assert streamed.shape == expected.shape
    assert torch.equal(streamed, expected)


def test_written_labels_and_probabilities_equal_the_sliding_mode(tmp_path: Path) -> None:
    session = tiny_session()
    image = scene(700, 900, seed=1)
    path = write_tiff(tmp_path / "scene.tif", image, tile=(128, 128), compression="zlib")
    options = raster_options(InferenceSpec(), {"tile_size": 256})
    out = tmp_path / "out"
    targets = (out / "scene_labels.tif", out / "scene_probs.tif")
    result = predict_raster(session, path, targets, options, probs="float16")
    logits = sliding_logits(session, image, options)[0]
    with tifffile.TiffFile(targets[0]) as labels_file:
        page = labels_file.pages.first
        assert page.is_tiled and page.compression == 8 and page.dtype == np.uint8
        assert json.loads(page.description)["classes"] == ["a", "b", "c", "d"]
        assert page.colormap[:, 1].tolist() == [65535, 0, 0]
        labels = page.asarray()
    assert np.array_equal(labels, logits.argmax(0).numpy())
    assert len(np.unique(labels)) > 1  # the comparison is not between two constant images
    probs = tifffile.imread(targets[1])
    expected = torch.softmax(logits, 0).permute(1, 2, 0).half().numpy()
    assert probs.shape == (700, 900, 4) and np.array_equal(probs, expected)
    assert result.written == list(targets) and (result.height, result.width) == (700, 900)
    assert sorted(p.name for p in out.iterdir()) == ["scene_labels.tif", "scene_probs.tif"]


def test_uint8_probabilities_are_quantised_per_class(tmp_path: Path) -> None:
    session = tiny_session()
    image = scene(256, 300, seed=2)  # a height of whole output tiles: the writer stops first
    path = write_tiff(tmp_path / "s.tif", image, tile=(64, 64))
    options = raster_options(InferenceSpec(), {"tile_size": 128})
    targets = (tmp_path / "s_labels.tif", tmp_path / "s_probs.tif")
    predict_raster(session, path, targets, options, probs="uint8")
    logits = sliding_logits(session, image, options)[0]
    expected = (torch.softmax(logits, 0) * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert np.array_equal(tifffile.imread(targets[1]), expected.numpy())


@pytest.mark.parametrize(
    "layout",
    [
        {"tile": (48, 80), "compression": "zlib"},
        {"rowsperstrip": 7, "compression": "zlib"},
        {},  # uncompressed, contiguous: read by byte range
        {"tile": (32, 32), "planarconfig": "separate"},
        {"rowsperstrip": 5, "planarconfig": "separate", "compression": "zlib"},
    ],
)
def test_every_layout_reads_the_same_rows(tmp_path: Path, layout: dict) -> None:
    image = scene(123, 157, seed=3)
    stored = np.moveaxis(image, -1, 0) if layout.get("planarconfig") == "separate" else image
    path = write_tiff(tmp_path / "layout.tif", stored, **layout)
    with TiffRowReader(path) as reader:
        assert (reader.height, reader.width, reader.samples) == (123, 157, 3)
        for top, bottom in [(0, 123), (0, 1), (5, 61), (47, 49), (100, 123)]:
            assert np.array_equal(reader.read_rows(top, bottom), image[top:bottom]), (top, bottom)


def test_the_raster_path_is_taken_when_asked_or_for_large_tiffs(tmp_path: Path) -> None:
    small = write_tiff(tmp_path / "small.tif", scene(20, 30), tile=(16, 16))
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    assert wants_raster([str(small)], tiled=True)
    assert not wants_raster([str(small)], tiled=False)
    assert not wants_raster([str(small), str(png)], tiled=False)
    import fcnseg.engine.predict_raster as module

    original = module.RASTER_AUTO_PIXELS
    module.RASTER_AUTO_PIXELS = 20 * 30 - 1
    try:
        assert wants_raster([str(small)], tiled=False)
    finally:
        module.RASTER_AUTO_PIXELS = original


def test_a_failure_mid_stream_leaves_no_file(tmp_path: Path) -> None:
    session = tiny_session()
    path = write_tiff(tmp_path / "s.tif", scene(300, 200), tile=(64, 64))
    calls = []
    model = session.runnable

    def failing(batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return model(batch)

    broken = InferenceSession.for_model(nn.Identity(), session.metadata)
    object.__setattr__(broken.runtime, "runnable", failing)
    out = tmp_path / "out"
    targets = (out / "s_labels.tif", out / "s_probs.tif")
    with pytest.raises(RuntimeError, match="boom"):
        predict_raster(broken, path, targets, {"tile_size": 64}, probs="uint8")
    assert len(calls) == 4 and list(out.iterdir()) == []


@pytest.mark.skipif(not FAST_WEIGHTS.is_file(), reason="shipped weights not in this checkout")
def test_cli_writes_tiled_labels_and_reports_peak_memory(tmp_path: Path, capsys) -> None:
    path = write_tiff(tmp_path / "street.tif", scene(260, 330, seed=4), tile=(128, 128))
    out = tmp_path / "out"
    argv = ["predict", "--weights", str(FAST_WEIGHTS), str(path), "--out", str(out)]
    code = main([*argv, "--tiled", "--tile-size", "192", "--probs"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "peak RSS" in printed and "Mpx/s" in printed
    labels = tifffile.imread(out / "street_labels.tif")
    assert labels.shape == (260, 330) and labels.max() < 11
    assert tifffile.imread(out / "street_probs.tif").shape == (260, 330, 11)


def test_a_bad_tiff_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\xff" * 40)
    double = tmp_path / "double.tif"  # float64: not one of the sample types read by window
    tifffile.imwrite(double, np.zeros((40, 40), np.float64), tile=(16, 16))
    out = tmp_path / "out"
    for path, words in [(bad, "not a readable TIFF"), (double, "uint8, uint16 and float32")]:
        argv = ["predict", "--weights", "missing.safetensors", str(path), "--out", str(out)]
        assert main([*argv, "--tiled"]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and str(path) in error and words in error
    assert not out.exists()


def test_tiled_outputs_never_replace_inputs_or_follow_links(tmp_path: Path, capsys) -> None:
    """The raster path runs predict's output checks before the model loads: an --out that is
    the input folder, an output that would replace an input, a planted link (issue 22)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    scan = write_tiff(frames / "scan.tif", scene(40, 40), tile=(16, 16))
    victim = write_tiff(frames / "scan_labels.tif", scene(40, 40, seed=1), tile=(16, 16))
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me")
    linked_out = tmp_path / "linked"
    linked_out.mkdir()
    (linked_out / "scan_labels.tif").symlink_to(elsewhere)
    before = victim.read_bytes()
    cases = [
        ([str(frames)], str(frames), "input folder"),
        ([str(scan), str(victim)], str(frames), "overwrite the input"),
        ([str(scan)], str(linked_out), "symbolic link"),
    ]
    for inputs, out, words in cases:
        argv = ["predict", "--weights", "missing.safetensors", *inputs, "--out", out, "--tiled"]
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and words in error, error
    assert victim.read_bytes() == before and elsewhere.read_text() == "keep me"


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, sys.argv[3])
    from model_helpers import banded_metadata_dict
    from test_engine_predict_raster import tiny_session
    from fcnseg.engine.metadata import validate_weights_metadata
    from fcnseg.engine.predict_raster import peak_rss_bytes, predict_raster
    from fcnseg.engine.session import InferenceSession
    torch.set_num_threads(1)
    bands = int(sys.argv[4])
    model = torch.nn.Conv2d(bands, 4, 1).eval()  # cheap: the blend is measured
    if bands == 3:
        session = tiny_session(model)
    else:
        stats = ([0.5] * bands, [0.25] * bands)
        meta = validate_weights_metadata(banded_metadata_dict(bands, *stats, classes=4), "t")
        session = InferenceSession.for_model(model, meta)
    with torch.no_grad():  # warm up: the allocator and thread pools, one tile's worth
        session.runnable(torch.zeros(1, bands, 256, 256))
    before = peak_rss_bytes()
    out = Path(sys.argv[2])
    predict_raster(session, Path(sys.argv[1]), (out / "labels.tif", None),
                   {"tile_size": 256, "tile_stride": 240})
    print(json.dumps({"before": before, "after": peak_rss_bytes()}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "bands"), [(np.uint8, 3), (np.uint16, 8)])
def test_peak_memory_grows_far_less_than_the_decoded_image(
    tmp_path: Path, dtype: type, bands: int
) -> None:
    height = width = 8000
    path = tmp_path / "big.tif"

    def tiles():
        for top in range(0, height, 512):
            for left in range(0, width, 512):
                tile = np.full((512, 512, bands), (top // 512 * 16) % 256, dtype)
                tile[:, :, 1] = (left // 512) * 16 % 256
                yield tile

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(
            tiles(),
            shape=(height, width, bands),
            dtype=dtype,
            tile=(512, 512),
            compression="zlib",
            compressionargs={"level": 1},
            photometric="rgb" if bands == 3 else "minisblack",
            planarconfig="contig",
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    script = [str(path), str(tmp_path), str(ROOT / "tests"), str(bands)]
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    growth = peaks["after"] - peaks["before"]
    decoded = height * width * bands * np.dtype(dtype).itemsize
    # The band: 4 classes x 256 rows x 8000 float32 (33 MB) + weights + input rows (6 MB of
    # uint8 RGB, 33 MB of 8-band uint16) ~ 50-80 MB; decoding the image would take 192 MB
    # (1 GB for 8 bands of uint16), and its logits 1 GB.
    print(f"peak RSS grew {growth / 2**20:.0f} MiB over {peaks['before'] / 2**20:.0f} MiB")
    assert growth < decoded / 2, f"peak RSS grew {growth / 2**20:.0f} MiB"
    labels = tifffile.TiffFile(tmp_path / "labels.tif").pages.first
    assert labels.shape == (height, width) and labels.is_tiled


@pytest.mark.parametrize(
    ("dtype", "bands", "channels"),
    [(np.uint16, 8, 8), (np.float32, 1, 1), (np.float32, 1, 3)],
)
def test_uint16_and_float32_rasters_get_the_in_memory_predict_labels(
    tmp_path: Path, dtype: type, bands: int, channels: int
) -> None:
    """Any band count, 16-bit and float samples: the labels of the raster path equal those
    `predict` writes for the same file decoded whole, with the same sliding options (one
    band repeated for an RGB model, as training does)."""
    from model_helpers import banded_session

    from fcnseg.engine.predict import predict_files

    rng = np.random.default_rng(bands)
    y, x = np.mgrid[0:150, 0:170]
    ramps = np.stack([(x * (3 + band) + y * (5 - band)) % 4096 for band in range(bands)], -1)
    data = ramps + rng.integers(0, 700, ramps.shape)
    data = (data % 4096).astype(np.uint16) if dtype == np.uint16 else (data / 9000.0)
    data = data.astype(dtype)
    path = tmp_path / "field.tif"
    stored = data if bands > 1 else data[..., 0]
    tifffile.imwrite(
        path, stored, photometric="minisblack", tile=(32, 48), compression="zlib",
        **({"planarconfig": "contig"} if bands > 1 else {}),
    )  # fmt: skip
    mean = [0.02 + 0.01 * band for band in range(channels)]
    std = [0.015 + 0.002 * band for band in range(channels)]
    spec = InferenceSpec.parse("sliding", {"tile_size": 64})
    session = banded_session(channels, mean, std, spec=spec)
    options = raster_options(session.spec, {})
    assert options["tile_size"] == 64  # the weights' (here the session's) sliding options
    raster = tmp_path / "raster"
    predict_raster(session, path, (raster / "field_labels.tif", None), options)
    streamed = tifffile.imread(raster / "field_labels.tif")
    predict_files(session, [path], tmp_path / "memory", overlay=False)
    whole = np.asarray(Image.open(tmp_path / "memory" / "field.png"))
    assert streamed.shape == (150, 170) and np.array_equal(streamed, whole)
    assert len(np.unique(whole)) > 1


def test_cli_tiled_predict_of_an_eight_band_16_bit_raster(tmp_path: Path, capsys) -> None:
    from model_helpers import banded_weights, registered_banded_net

    weights = tmp_path / "w.safetensors"
    bands = [0.03 + 0.002 * band for band in range(8)], [0.018] * 8
    rng = np.random.default_rng(8)
    data = rng.integers(0, 4096, (90, 120, 8)).astype(np.uint16)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", tile=(32, 32))
    rgb = write_tiff(tmp_path / "rgb.tif", scene(40, 40), tile=(16, 16))
    with registered_banded_net():
        banded_weights(weights, 8, *bands)
        tiled = ["--weights", str(weights), "--tiled", "--tile-size", "64"]
        assert main(["predict", str(path), "--out", str(tmp_path / "out"), *tiled]) == 0
        assert "peak RSS" in capsys.readouterr().out
        assert main(["predict", str(rgb), "--out", str(tmp_path / "bad"), *tiled]) == 2
    labels = tifffile.imread(tmp_path / "out" / "scene_labels.tif")
    assert labels.shape == (90, 120) and labels.max() < 3
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(rgb) in error and "3 band(s) but the model takes 8" in error
