"""`fcnseg serve`'s memory budget: request pixels at the model's input scale and inference mode,
refused from the header before decoding, the forward-pixel cap at the input scale, the limits'
command-line values as one line, and no ONNX export while serving (--graph-sizes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import require_module
from image_bytes import header_only_png, png_bytes

require_module("fastapi", "pip install -e '.[test]'")  # fails under CI=true
from fastapi.testclient import TestClient  # noqa: E402
from model_helpers import tiny_serve_metadata  # noqa: E402

from fcnseg.cli import main  # noqa: E402
from fcnseg.engine.session import InferenceSession  # noqa: E402
from fcnseg.errors import DataError, UsageError  # noqa: E402
from fcnseg.inference.spec import MAX_FORWARD_PIXELS_ENV, InferenceSpec  # noqa: E402
from fcnseg.serve import InferencePool, ServeLimits, create_app  # noqa: E402
from fcnseg.serve.limits import check_pixels, largest_fitting  # noqa: E402

METADATA = tiny_serve_metadata()


class Scaled(torch.nn.Module):
    """A 1x1 convolution that declares an input scale, as SegmentationShell does."""

    normalization = "imagenet"

    def __init__(self, input_scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.input_scale = input_scale
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(images)


def client_for(model: torch.nn.Module, spec: InferenceSpec | None = None, **limits) -> TestClient:
    session = InferenceSession.for_model(model, METADATA, spec=spec)
    pool = InferencePool(session, queue=2)
    limits = {"max_bytes": 500_000, "max_pixels": 50_000, "queue": 2, **limits}
    return TestClient(create_app(pool, ServeLimits(**limits)), raise_server_exceptions=False)


def post(client: TestClient, data: bytes):
    return client.post("/v1/segment", files={"image": ("x.png", data, "image/png")})


def test_forward_pixels_follow_the_input_scale_and_keep_scale_one():
    whole = InferenceSpec()
    assert whole.forward_pixels(360, 480) == 172_800
    assert whole.forward_pixels(360, 480, 2.0) == 720 * 960
    assert whole.forward_pixels(360, 480, 1.334) == 481 * 641  # each side rounded up
    multi = InferenceSpec.parse("multiscale", {"scales": [0.5, 1.25]})
    assert multi.forward_pixels(360, 480, 2.0) == 900 * 1200
    tiles = InferenceSpec.parse("sliding", {"tile_size": 256, "tile_batch": 4})
    assert tiles.forward_pixels(2000, 2000, 2.0) == 512 * 512
    assert tiles.forward_pixels(100, 2000, 1.0) == 100 * 256


def test_request_pixels_count_mode_tile_batch_and_full_size_buffers():
    assert InferenceSpec().request_pixels(100, 200) == 20_000 + 5_000
    assert InferenceSpec().request_pixels(100, 200, 2.0) == 80_000 + 5_000
    flipped = InferenceSpec.parse("multiscale", {"scales": [1.0], "flip": True})
    assert flipped.request_pixels(100, 200) == InferenceSpec().request_pixels(100, 200)
    tiles = InferenceSpec.parse("sliding", {"tile_size": 100, "tile_batch": 3})
    assert tiles.request_pixels(1000, 1000) == 3 * 10_000 + 250_000


def test_forward_cap_at_the_input_scale(monkeypatch):
    monkeypatch.setenv(MAX_FORWARD_PIXELS_ENV, "1000000")
    InferenceSpec().check_forward_pixels(600, 800, "a.png")  # 0.48 Mpx at scale 1: fine
    with pytest.raises(DataError, match=r"a\.png: 800x600 .*input scale 2") as caught:
        InferenceSpec().check_forward_pixels(600, 800, "a.png", input_scale=2.0)
    assert "\n" not in str(caught.value)
    session = InferenceSession.for_model(Scaled(2.0), METADATA)
    assert session.input_scale == 2.0 and session.request_pixels(10, 10) == 400 + 25
    with pytest.raises(DataError, match="input scale 2"):
        session.check_forward_pixels(600, 800, "a.png")
    assert InferenceSession.for_model(Scaled(1.0), METADATA).input_scale == 1.0


def test_budget_accounts_for_the_input_scale():
    image = png_bytes(150, 150)  # 22 500 px: 28 125 request pixels at scale 1, 95 625 at 2
    with client_for(Scaled(1.0)) as plain:
        assert post(plain, image).status_code == 200
    model = Scaled(2.0)
    with client_for(model) as scaled:
        response = post(scaled, image)
    assert response.status_code == 413
    message = response.json()["error"]
    assert "50,000" in message and "--max-pixels" in message and "150 x 150" in message
    assert "downscale it to at most" in message and model.calls == 0


def test_budget_accounts_for_the_mode():
    image = png_bytes(120, 150)  # 18 000 px
    spec = InferenceSpec.parse("multiscale", {"scales": [1.0, 1.75], "flip": True})
    with client_for(Scaled(1.0), spec=spec) as client:
        assert post(client, image).status_code == 413  # 1.75x: 210 x 263 in one forward
    with client_for(Scaled(1.0), spec=InferenceSpec.parse("multiscale", {"scales": [1.0]})) as ok:
        assert post(ok, image).status_code == 200


def test_large_upload_is_refused_from_its_header_without_decoding():
    bomb = header_only_png(2000, 2000)  # a valid header; its pixels would not decode
    model = Scaled(1.0)
    with client_for(model, max_pixels=4_900_000) as client:
        response = post(client, bomb)
    assert response.status_code == 413, response.text  # not 400 "truncated": never decoded
    assert "4,900,000" in response.json()["error"] and model.calls == 0


def test_largest_fitting_size_fits_and_is_tight():
    def cost(height: int, width: int) -> int:
        return InferenceSpec().request_pixels(height, width, 2.0)

    width, height = largest_fitting(2000, 1500, cost, 1_400_000)
    assert cost(height, width) <= 1_400_000 < cost(int(height * 1.02), int(width * 1.02))
    assert abs(width / height - 2000 / 1500) < 0.01
    check_pixels(width, height, ServeLimits(max_pixels=1_400_000), cost)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-upload-mb", "nan"),
        ("--max-upload-mb", "inf"),
        ("--max-upload-mb", "-1"),
        ("--max-upload-mb", "0"),
        ("--max-upload-mb", "ten"),
        ("--max-pixels", "0"),
        ("--max-pixels", "-5"),
        ("--max-pixels", "1.5"),
        ("--max-pixels", "nan"),
        ("--max-pixels", "lots"),
        ("--max-pixels", "1e30"),
        ("--body-timeout", "inf"),
        ("--graph-sizes", "360by480"),
        ("--graph-sizes", "360x480x3"),
        ("--graph-sizes", "8x8"),
    ],
)
def test_bad_limit_values_are_one_line_exit_2(flag, value, capsys, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load before the flags are checked")

    monkeypatch.setattr("fcnseg.serve.load_pool", no_load)
    status = main(["serve", "--weights", "w.safetensors", flag, value])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and flag in err, err
    assert "Traceback" not in err


def test_limits_refuse_non_whole_values():
    with pytest.raises(UsageError, match="whole"):
        ServeLimits(max_pixels=1.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="body-timeout"):
        ServeLimits(body_timeout_s=float("nan"))


def test_graph_sizes_are_made_at_start_up_and_nothing_is_exported_while_serving(
    tmp_path, monkeypatch
):
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import load_exported
    from fcnseg.inference import runtimes
    from fcnseg.inference.runtimes import FixedSizeGraphs, ResolvedRuntime
    from fcnseg.serve import prepare_graph_sizes

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"stand-in bytes: the cache key is the file's hash")
    model = Scaled(1.0).eval()
    logged: list[str] = []
    dynamic = load_exported(model, "onnxruntime", threads=1)
    router = FixedSizeGraphs(model, weights, dynamic, log=logged.append)
    runtime = ResolvedRuntime(router, "onnxruntime", "onnxruntime")
    session = InferenceSession.for_model(model, METADATA, runtime=runtime)
    pool = InferencePool(session)
    with pytest.raises(UsageError, match="--graph-sizes 400x400"):
        prepare_graph_sizes(pool, [(400, 400)], 50_000)
    lines = prepare_graph_sizes(pool, [(40, 60)], 50_000)
    assert router.fixed_sizes == [[40, 60]] and router.frozen and "40x60" in lines[0]

    def exported(*args, **kwargs):
        raise AssertionError("exported while serving")

    monkeypatch.setattr(runtimes, "export_checked", exported)
    with TestClient(create_app(pool, ServeLimits(max_pixels=50_000))) as client:
        for size in [(40, 60), (50, 70), (50, 70), (50, 70)]:
            assert post(client, png_bytes(*size)).status_code == 200
    assert router.fixed_sizes == [[40, 60]]
    unprepared = [line for line in logged if "50x70" in line]
    assert len(unprepared) == 1 and "dynamic ONNX graph" in unprepared[0]
    pool.close()


def test_graph_sizes_with_the_torch_engine_say_they_do_nothing():
    from fcnseg.serve import prepare_graph_sizes

    pool = InferencePool(InferenceSession.for_model(Scaled(1.0), METADATA))
    assert "ignored" in prepare_graph_sizes(pool, [(40, 60)], 50_000)[0]
    assert prepare_graph_sizes(pool, [], 50_000) == []
    pool.close()


def test_model_route_reports_the_budget():
    with client_for(Scaled(2.0)) as client:
        limits = client.get("/v1/model").json()["limits"]
        assert limits["max_request_pixels"] == 50_000
        width, height = limits["largest_4x3_image"]  # scale 2: 4.25 request pixels a pixel
        assert 11_000 < limits["max_pixels"] == width * height <= 50_000 / 4.25
        health = client.get("/healthz").json()
    assert health["in_flight"] == 0 and health["running"] == 0 and health["capacity"] == 3


def test_the_command_line_defaults_are_the_library_defaults():
    from fcnseg.cli import serve as cli_serve
    from fcnseg.serve import limits

    assert cli_serve.DEFAULT_MAX_PIXELS == limits.DEFAULT_MAX_PIXELS
    assert cli_serve.DEFAULT_BODY_TIMEOUT_S == limits.DEFAULT_BODY_TIMEOUT_S
    assert cli_serve.DEFAULT_MAX_CONNECTIONS == limits.DEFAULT_MAX_CONNECTIONS


WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@pytest.mark.parametrize(
    "name, served, refused",
    [
        ("camvid_fcn4s_lite0", (360, 480), (480, 640)),
        ("camvid_fcn4s_lite0_fast", (600, 960), (720, 960)),
    ],
)
def test_default_budget_on_the_shipped_models(name, served, refused):
    """The sizes docs/serve.md promises for the default budget, from the weights' own metadata
    (input scale, recommended inference), read without building the model."""
    from fcnseg.engine.checkpoint import load_weights
    from fcnseg.engine.session import choose_spec

    path = WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    _, metadata = load_weights(path)
    spec = choose_spec(metadata, None, None)
    input_scale = float(metadata.model_options.get("input_scale", 1.0))
    budget = ServeLimits().max_pixels
    assert spec.request_pixels(*served, input_scale) <= budget
    assert spec.request_pixels(*refused, input_scale) > budget
    assert spec.request_pixels(2000, 2000, input_scale) > budget
