"""`fcnseg serve`'s HTTP API in-process: results, every refused upload, the queue, no tracebacks.

A 1x1-convolution stand-in for the model keeps each request to milliseconds; the model loading
path (`load_pool` from a weights file) is covered by the browser test and the CLI test here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
import torch
from conftest import require_module
from image_bytes import header_only_png
from image_bytes import png_bytes as image_png_bytes
from PIL import Image

require_module("fastapi", "pip install -e '.[test]'")  # fails under CI=true
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from fcnseg.cli import main  # noqa: E402
from fcnseg.engine.metadata import validate_weights_metadata  # noqa: E402
from fcnseg.engine.session import InferenceSession  # noqa: E402
from fcnseg.serve import InferencePool, ServeLimits, create_app  # noqa: E402

CLASSES = ["sky", "road", "car"]
META = {
    "model": "tiny",
    "num_classes": 3,
    "classes": CLASSES,
    "palette": [[70, 130, 180], [128, 64, 128], [0, 0, 142]],
    "normalization": "imagenet",
    "ignore_index": 255,
}
METADATA = validate_weights_metadata(META, "test")
#: Every body a test received, checked at the end of each test for leaked tracebacks.
BODIES: list[str] = []


class Tiny(torch.nn.Module):
    """Three classes from a 1x1 convolution: instant and deterministic."""

    normalization = "imagenet"  # declared like every fcnseg model (the ONNX export reads it)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


class Gate(Tiny):
    """Blocks inside forward until released, so a test controls when the worker is busy."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.release.wait(timeout=10)
        return super().forward(images)


class Broken(Tiny):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("secret internal detail /home/someone/model.py line 42")


def png_bytes(height: int = 40, width: int = 60, mode: str = "RGB") -> bytes:
    return image_png_bytes(height, width, mode)


def make_client(model: torch.nn.Module | None = None, **limits) -> TestClient:
    limits = {"max_bytes": 200_000, "max_pixels": 50_000, "queue": 2, **limits}
    session = InferenceSession.for_model(model or Tiny(), METADATA)
    pool = InferencePool(session, queue=limits["queue"])
    return TestClient(create_app(pool, ServeLimits(**limits)), raise_server_exceptions=False)


@pytest.fixture
def client():
    with make_client() as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_tracebacks():
    BODIES.clear()
    yield
    for body in BODIES:
        assert "Traceback" not in body and 'File "' not in body, body[:500]


def post(client: TestClient, data: bytes, name: str = "x.png", kind: str = "image/png", **kw):
    response = client.post("/v1/segment", files={"image": (name, data, kind)}, **kw)
    BODIES.append(response.text if "json" in response.headers.get("content-type", "") else "")
    return response


def assert_json_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]


def test_good_image_json(client):
    response = post(client, png_bytes(40, 60))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (60, 40)
    assert body["classes"] == CLASSES and body["model"] == "tiny"
    assert set(body["shares"]) == set(CLASSES)
    assert sum(body["shares"].values()) == pytest.approx(1.0)
    shares = [entry["share"] for entry in body["legend"]]
    assert shares == sorted(shares, reverse=True) and len(shares) == 3
    assert body["inference_ms"] >= 0 and body["total_ms"] >= body["inference_ms"]
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.mode == "P" and mask.size == (60, 40)
    assert np.asarray(mask).max() < 3
    assert response.headers["X-Request-ID"]


def test_png_format_and_raw_body(client):
    response = post(client, png_bytes(32, 48), params={"format": "png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (48, 32)
    raw = client.post(
        "/v1/segment", content=png_bytes(20, 30), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 200 and raw.json()["width"] == 30
    assert_json_error(post(client, png_bytes(), params={"format": "gif"}), 400, "format")


def test_greyscale_and_jpeg_are_read(client):
    assert post(client, png_bytes(mode="L")).json()["width"] == 60
    buffer = io.BytesIO()
    Image.new("RGB", (50, 30), (200, 10, 10)).save(buffer, format="JPEG")
    assert post(client, buffer.getvalue(), "x.jpg", "image/jpeg").json()["height"] == 30


def test_non_image_and_broken_uploads_are_400(client):
    assert_json_error(post(client, b"hello, not an image", "x.txt", "text/plain"), 400, "image")
    assert_json_error(post(client, png_bytes()[:200]), 400, "truncated")
    assert_json_error(post(client, b""), 400, "empty")
    missing = client.post("/v1/segment", data={"other": "value"}, files={"f2": ("a", b"x")})
    BODIES.append(missing.text)
    assert_json_error(missing, 400, "image")


def test_oversized_upload_is_413(client):
    noise = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 200_000 + 64 * 1024
    assert_json_error(post(client, buffer.getvalue()), 413, "MB")
    raw = client.post(
        "/v1/segment", content=buffer.getvalue(), headers={"content-type": "image/png"}
    )
    BODIES.append(raw.text)
    assert_json_error(raw, 413)


def test_too_many_pixels_is_413(client):
    # 300 x 200 = 60 000 pixels > 50 000, yet a small file.
    assert_json_error(post(client, png_bytes(200, 300)), 413, "pixels")


@pytest.mark.parametrize("size", [(5000, 5000), (60000, 60000)])
def test_decompression_bomb_header_refused_before_decoding(client, size):
    bomb = header_only_png(*size)
    assert len(bomb) < 1000
    started = time.perf_counter()
    assert_json_error(post(client, bomb), 413)
    assert time.perf_counter() - started < 2.0


def test_wrong_method_and_unknown_path(client):
    response = client.get("/v1/segment")
    BODIES.append(response.text)
    assert_json_error(response, 405, "GET")
    assert "POST" in response.headers.get("allow", "")
    assert_json_error(client.delete("/"), 405)
    assert_json_error(client.get("/nope"), 404)
    assert_json_error(client.get("/v1/samples/9.png"), 404)


def test_health_model_samples_and_page(client):
    assert client.get("/healthz").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert model["name"] == "tiny" and model["classes"] == CLASSES
    assert model["palette"] == META["palette"] and model["normalization"] == "imagenet"
    assert model["inference"] == {"mode": "whole", "options": {}}
    limits = model["limits"]
    assert limits["max_upload_bytes"] == 200_000 and limits["max_request_pixels"] == 50_000
    width, height = limits["largest_4x3_image"]  # whole, scale 1: 1.25 request pixels a pixel
    assert limits["max_pixels"] == width * height and 39_000 < width * height <= 40_000
    samples = client.get("/v1/samples").json()
    assert len(samples) >= 3
    picture = client.get(samples[0]["url"])
    assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).size[0] > 100
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert 'id="file"' in html and 'id="overlay"' in html and 'id="legend"' in html


def test_internal_error_is_json_without_traceback():
    with make_client(Broken()) as client:
        response = post(client, png_bytes())
    assert_json_error(response, 500, "internal error")
    assert "secret" not in response.text and "RuntimeError" not in response.text


def test_full_queue_answers_503_with_retry_after():
    gate = Gate()
    pool = InferencePool(InferenceSession.for_model(gate, METADATA), workers=1, queue=0)
    app = create_app(pool, ServeLimits(max_bytes=200_000, max_pixels=50_000, queue=0))
    image = png_bytes(20, 20)

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            files = {"image": ("x.png", image, "image/png")}
            first = asyncio.create_task(http.post("/v1/segment", files=files))
            for _ in range(500):  # until the first request holds the only worker
                if gate.entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert gate.entered.is_set()
            second = await http.post("/v1/segment", files=files)
            gate.release.set()
            done = await first
            third = await http.post("/v1/segment", files=files)
            return done, second, third

    try:
        done, busy, after = asyncio.run(scenario())
    finally:
        gate.release.set()
        pool.close()
    BODIES.extend([busy.text, done.text[:200]])
    assert done.status_code == 200
    assert_json_error(busy, 503, "busy")
    assert int(busy.headers["retry-after"]) >= 1
    assert after.status_code == 200  # the slot came back


def test_serve_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["serve", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_onnxruntime_engine_gives_the_torch_answer():
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import load_exported
    from fcnseg.inference.runtimes import ResolvedRuntime

    image = png_bytes(36, 52)
    masks = []
    for engine in ("torch", "onnxruntime"):
        runtime = ResolvedRuntime(load_exported(Tiny(), engine, threads=1), engine, engine)
        pool = InferencePool(InferenceSession.for_model(Tiny(), METADATA, runtime=runtime))
        with TestClient(create_app(pool, ServeLimits()), raise_server_exceptions=False) as client:
            assert client.get("/v1/model").json()["engine"] == engine
            response = post(client, image, params={"format": "png"})
            assert response.status_code == 200, response.text
            masks.append(np.asarray(Image.open(io.BytesIO(response.content))))
    assert (masks[0] == masks[1]).mean() > 0.999
