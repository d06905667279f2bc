"""`fcnseg serve` with models of other band counts and bit depths (issue 23, item 2).

What must hold: multi-band TIFF, `.npy` and 16-bit PNG uploads are decoded to the model's band
count by `fcnseg predict`'s rules (so the server's labels are predict's); the pixel budget
counts the bytes per pixel the decoded arrays really take, from the header, before decoding;
a band count the model cannot take is a 400 with the one-line rule; an 8-bit RGB upload for an
RGB model costs what it cost before.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import require_module
from image_bytes import png_bytes
from model_helpers import banded_session
from PIL import Image

require_module("fastapi", "pip install -e '.[test]'")  # fails under CI=true
from fastapi.testclient import TestClient  # noqa: E402

from fcnseg.data.io import read_image  # noqa: E402
from fcnseg.engine.session import InferenceSession  # noqa: E402
from fcnseg.serve import InferencePool, ServeLimits, create_app  # noqa: E402
from fcnseg.serve.limits import (  # noqa: E402
    REQUEST_PIXEL_BYTES,
    RGB8_INPUT_BYTES,
    input_bytes_per_pixel,
    upload_cost,
)

MEAN_8 = [0.03 + 0.002 * band for band in range(8)]
STD_8 = [0.018 - 0.001 * band for band in range(8)]


def client_for(session: InferenceSession, **limits) -> TestClient:
    limits = {"max_bytes": 2_000_000, "max_pixels": 50_000, "queue": 2, **limits}
    pool = InferencePool(session, queue=2)
    return TestClient(create_app(pool, ServeLimits(**limits)), raise_server_exceptions=False)


def segment(client: TestClient, data: bytes, name: str):
    return client.post(
        "/v1/segment",
        params={"format": "png"},
        files={"image": (name, data, "application/octet-stream")},
    )


def cube(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    """12-bit structured data on the uint16 scale."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * (band + 3) + y * (7 - band % 5) for band in range(bands)], axis=-1)
    return ((ramps * 37 + rng.integers(0, 900, ramps.shape)) % 4096).astype(np.uint16)


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack", planarconfig="contig", **options)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def predicted(session: InferenceSession, path: Path) -> np.ndarray:
    """What `fcnseg predict` computes for the file: read_image to the model's bands, labels."""
    return session.labels([read_image(path, session.in_channels)])[0].numpy()


def mask_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_multi_band_tiff_and_npy_uploads_get_predicts_labels(tmp_path: Path):
    session = banded_session(8, MEAN_8, STD_8)
    data = cube(30, 40, 8)
    stored = tmp_path / "scene.tif"
    stored.write_bytes(tiff_bytes(data, tile=(16, 16), compression="zlib"))
    expected = predicted(session, stored)
    assert len(np.unique(expected)) > 1
    floats = (data / 65535).astype(np.float32)
    (tmp_path / "scene.npy").write_bytes(npy_bytes(floats))
    with client_for(session) as client:
        assert np.array_equal(mask_of(segment(client, stored.read_bytes(), "s.tif")), expected)
        from_npy = mask_of(segment(client, npy_bytes(floats), "s.npy"))
        assert np.array_equal(from_npy, predicted(session, tmp_path / "scene.npy"))
        assert client.get("/v1/model").json()["in_channels"] == 8


def test_sixteen_bit_png_keeps_its_levels_for_one_and_three_band_models(tmp_path: Path):
    grey = cube(28, 36, 1, seed=4)[..., 0]
    path = tmp_path / "scan.png"
    Image.fromarray(grey).save(path)
    one = banded_session(1, [0.031], [0.017])
    three = banded_session(3, MEAN_8[:3], STD_8[:3])
    for session in (one, three):
        expected = predicted(session, path)
        assert len(np.unique(expected)) > 1
        with client_for(session) as client:
            assert np.array_equal(mask_of(segment(client, path.read_bytes(), "s.png")), expected)
    # The test can fail: the old 8-bit view (the high byte) gives other labels.
    high_byte = torch.from_numpy(np.repeat((grey >> 8).astype(np.uint8)[None], 3, axis=0))
    assert not np.array_equal(three.labels([high_byte])[0].numpy(), predicted(three, path))


def test_a_band_count_the_model_cannot_take_is_a_400_in_one_line():
    session = banded_session(8, MEAN_8, STD_8)
    uploads = [
        (png_bytes(20, 20), "x.png", 3),
        (tiff_bytes(cube(20, 20, 4)), "x.tif", 4),
        (npy_bytes(np.zeros((20, 20, 2), np.float32)), "x.npy", 2),
    ]
    with client_for(session) as client:
        for data, name, have in uploads:
            response = segment(client, data, name)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert "\n" not in error and "Traceback" not in error
            assert f"the upload: {have} band(s) but the model takes 8" in error, error
            assert f"model.in_channels={have}" in error


def test_bytes_per_pixel_follow_bands_and_depth():
    uint8, uint16, float32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
    assert input_bytes_per_pixel(3, uint8, 3) == RGB8_INPUT_BYTES == 3 + 3 * 6
    # 8 bands of uint16: 16 B decoded, a float64 quotient (64), float32 values, their copy and
    # the normalised batch (3 x 32).
    assert input_bytes_per_pixel(8, uint16, 8) == 16 + 64 + 96
    assert input_bytes_per_pixel(1, float32, 1) == 4 + 4 + 12
    cost = upload_cost(lambda h, w: h * w, RGB8_INPUT_BYTES)
    assert cost(100, 100) == 10_000  # 8-bit RGB: the budget as measured, unchanged
    banded = upload_cost(lambda h, w: h * w, input_bytes_per_pixel(8, uint16, 8))
    extra = math.ceil(10_000 * (176 - RGB8_INPUT_BYTES) / REQUEST_PIXEL_BYTES)
    assert banded(100, 100) == 10_000 + extra


def test_the_budget_counts_the_decoded_bytes_from_the_header():
    """A 200 x 200 8-band 16-bit TIFF is 40 000 pixels (50 000 request pixels, whole mode);
    with its arrays' bytes it needs ~64 000, over a 60 000 budget: refused before decoding.
    The same size of 8-bit RGB fits that budget, as before."""
    session = banded_session(8, MEAN_8, STD_8)
    assert session.request_pixels(200, 200) == 50_000
    big = tiff_bytes(cube(200, 200, 8))
    with client_for(session, max_pixels=60_000) as client:
        response = segment(client, big, "big.tif")
        assert response.status_code == 413, response.text
        assert "200 x 200" in response.json()["error"]
        small = tiff_bytes(cube(150, 150, 8))
        assert segment(client, small, "small.tif").status_code == 200
    rgb = banded_session(3, MEAN_8[:3], STD_8[:3])
    with client_for(rgb, max_pixels=60_000) as client:
        assert segment(client, png_bytes(200, 200), "rgb.png").status_code == 200


@pytest.mark.parametrize("data", [b"II*\x00" + b"\xff" * 40, b"\x93NUMPY" + b"\x01" * 30])
def test_broken_tiff_and_npy_uploads_are_400(data: bytes):
    with client_for(banded_session(8, MEAN_8, STD_8)) as client:
        response = segment(client, data, "broken")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith("the upload:") and "\n" not in error
