"""unet2015 and a padded U-Net head net exported to ONNX with parity (the export helpers' checks
at odd sizes), and unet2015 run by predict and the inference session on both engines at an
image size no valid tile has, whole and by overlap tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module
from PIL import Image

from fcnseg.engine.checkpoint import save_weights, weights_metadata
from fcnseg.engine.session import InferenceSession
from fcnseg.export import export_onnx, load_exported, verify_export
from fcnseg.models import build_model

require_module("onnxruntime", "pip install -e '.[export]'")

UNET_OPTIONS = {"width_divisor": 16}


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """BN statistics off their defaults, and the BN-free unet2015's weights raised (its default
    initialisation fades through 23 ReLU layers), so that a wrong graph shows."""
    torch.manual_seed(0)
    scale = 1.5 if model.__class__.__name__ == "UNet2015" else 1.0
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                tensor.uniform_(-0.5, 0.5)
            elif tensor.is_floating_point():
                tensor.mul_(scale)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("unet2015", UNET_OPTIONS),
        ("unet_resnet18", {"pretrained": False, "decoder_channels": 8}),
    ],
)
def test_onnx_export_agrees_with_torch_at_odd_sizes(name, options, tmp_path):
    model = _perturbed(build_model(name, 3, **options))
    path = export_onnx(model, tmp_path / f"{name}.onnx")  # checked at DEFAULT_CHECK_SIZES
    graph = load_exported(path, "onnxruntime")
    assert verify_export(model, graph, [(70, 101), (33, 47)], seed=3) <= 1e-3


def _weights(path: Path) -> Path:
    model = _perturbed(build_model("unet2015", 3, **UNET_OPTIONS))
    metadata = weights_metadata(
        "unet2015",
        UNET_OPTIONS,
        num_classes=3,
        classes=["a", "b", "c"],
        palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]],
        normalization="imagenet",
        ignore_index=255,
        data_format="folder",
    )
    save_weights(path, model, metadata)
    return path


@pytest.mark.slow
def test_both_engines_segment_any_size_whole_and_by_overlap_tiles(tmp_path):
    weights = _weights(tmp_path / "unet.safetensors")
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 70, 101), np.uint8))
    scores = {}
    for engine in ("torch", "onnxruntime"):
        for mode, options in (("whole", {}), ("overlap_tile", {"tile_size": 25})):
            session = InferenceSession.load(
                weights=weights, runtime=engine, mode=mode, options=options, device="cpu"
            )
            logits = session.logits(session.normalize([image]))
            assert logits.shape == (1, 3, 70, 101)
            scores[engine, mode] = logits
    for mode in ("whole", "overlap_tile"):
        assert torch.allclose(scores["torch", mode], scores["onnxruntime", mode], atol=1e-3)
    # The tiles lie on other pooling grids than the one mirrored tile of "whole".
    assert not torch.allclose(scores["torch", "whole"], scores["torch", "overlap_tile"], atol=1e-3)


def test_predict_command_writes_labels_at_the_image_size(tmp_path):
    from fcnseg.cli import main

    weights = _weights(tmp_path / "unet.safetensors")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (70, 101, 3), np.uint8)).save(tmp_path / "img.png")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "img.png"), "--weights", str(weights), "--out", str(out)]
    argv += ["--mode", "overlap_tile", "--tile-size", "25", "--engine", "torch"]
    assert main(argv) == 0
    written = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert written and all(Image.open(p).size == (101, 70) for p in written)


def test_serve_segments_an_odd_sized_upload_by_overlap_tiles(tmp_path):
    require_module("fastapi", "pip install -e '.[serve]'")
    require_module("httpx", "pip install -e '.[serve]'")
    import base64
    import io

    from fastapi.testclient import TestClient

    from fcnseg.serve import InferencePool, ServeLimits, create_app

    weights = _weights(tmp_path / "unet.safetensors")
    session = InferenceSession.load(
        weights=weights, runtime="torch", mode="overlap_tile", options={"tile_size": 25}
    )
    buffer = io.BytesIO()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), np.uint8)).save(buffer, format="PNG")
    limits = ServeLimits(max_bytes=200_000, max_pixels=50_000, queue=2)
    with TestClient(create_app(InferencePool(session, queue=2), limits)) as client:
        files = {"image": ("x.png", buffer.getvalue(), "image/png")}
        response = client.post("/v1/segment", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (53, 37) and body["model"] == "unet2015"
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.size == (53, 37)
