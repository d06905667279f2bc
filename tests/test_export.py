"""ONNX / TorchScript export: correct at any input size, atomic, self-describing, and runnable
through the same predict path as the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import require_module
from torch import Tensor, nn

from fcnseg.export import (
    DEFAULT_CHECK_SIZES,
    ExportError,
    export_onnx,
    export_torchscript,
    load_exported,
    verify_export,
)
from fcnseg.exported import OnnxRuntimeModel, TorchScriptModel
from fcnseg.inference import predict_logits

# CI installs the export extra: there a missing onnx/onnxruntime fails instead of skipping.
onnx = require_module("onnx", "pip install -e '.[export]'")
require_module("onnxruntime", "pip install -e '.[export]'")

NUM_CLASSES = 3
#: Stand-in crop offset of a pad-100 net (the real ones are derived by the model code).
CROP_OFFSET = 19


class PaddedCropNet(nn.Module):
    """The paper-net pattern in miniature: pad 100, pooling with ceil, a 7x7 "fc6", a stride-4
    deconvolution and a crop whose extent depends on the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=100)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.pool2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc6 = nn.Conv2d(4, NUM_CLASSES, 7)
        self.up = nn.ConvTranspose2d(NUM_CLASSES, NUM_CLASSES, 8, stride=4, bias=False)
        self.normalization = "caffe_bgr"

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        y = self.up(self.fc6(self.pool2(self.pool1(F.relu(self.conv1(x))))))
        return y[:, :, CROP_OFFSET : CROP_OFFSET + height, CROP_OFFSET : CROP_OFFSET + width]


class SkipNet(nn.Module):
    """A light-encoder pattern: stride-8 and stride-16 features, BN, skip fusion by resizing to
    the finer map's runtime size, and final bilinear upsampling to the input's runtime size."""

    def __init__(self) -> None:
        super().__init__()
        self.s8 = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=8, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        )
        self.s16 = nn.Sequential(nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU())
        self.score8 = nn.Conv2d(6, NUM_CLASSES, 1)
        self.score16 = nn.Conv2d(6, NUM_CLASSES, 1)
        self.normalization = "imagenet"

    def forward(self, x: Tensor) -> Tensor:
        f8 = self.s8(x)
        f16 = self.s16(f8)
        fused = self.score8(f8) + F.interpolate(
            self.score16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False
        )
        return F.interpolate(fused, size=x.shape[-2:], mode="bilinear", align_corners=False)


class TwoHeadNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.semantic = nn.Conv2d(4, NUM_CLASSES, 1)
        self.geometric = nn.Conv2d(4, 2, 1)
        self.normalization = "imagenet"

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = F.relu(self.body(x))
        return {"semantic": self.semantic(f), "geometric": self.geometric(f)}


class FrozenSizeNet(nn.Module):
    """Upsamples to a size computed in Python ints: tracing freezes it, the check must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, stride=4, padding=1)
        self.normalization = "imagenet"

    def forward(self, x: Tensor) -> Tensor:
        size = (int(x.shape[2]), int(x.shape[3]))
        return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial weights and BN statistics so that a wrong graph cannot pass by accident."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, nn.ConvTranspose2d):
                module.weight.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("factory", [PaddedCropNet, SkipNet])
def test_onnx_matches_torch_at_odd_sizes(factory: type[nn.Module], tmp_path: Path) -> None:
    model = _trained_like(factory())
    path = export_onnx(model, tmp_path / "model.onnx", classes=["a", "b", "c"])
    engine = OnnxRuntimeModel(path)
    assert len(DEFAULT_CHECK_SIZES) >= 5
    assert all(h % 32 and w % 32 for h, w in DEFAULT_CHECK_SIZES)
    # Independent re-check, batch 2, sizes other than the export's own check.
    worst = verify_export(model, engine, [(71, 45), (130, 94), (47, 333)], batch=2, seed=5)
    assert worst <= 1e-3
    assert engine.classes == ["a", "b", "c"]
    assert engine.normalization == model.normalization


def test_onnx_metadata_props_and_dynamic_axes(tmp_path: Path) -> None:
    path = export_onnx(_trained_like(SkipNet()), tmp_path / "m.onnx", check_sizes=[])
    proto = onnx.load(str(path))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta["normalization"] == "imagenet"
    assert json.loads(meta["classes"]) is None
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == 3


def test_onnx_multi_head_returns_dict(tmp_path: Path) -> None:
    model = _trained_like(TwoHeadNet())
    engine = load_exported(export_onnx(model, tmp_path / "two.onnx"), runtime="onnxruntime")
    images = torch.randn(1, 3, 29, 31)
    out = engine(images)
    assert set(out) == {"semantic", "geometric"}
    torch.testing.assert_close(out["geometric"], model(images)["geometric"], atol=1e-4, rtol=0)


def test_frozen_size_is_detected_and_no_file_left(tmp_path: Path) -> None:
    target = tmp_path / "frozen.onnx"
    with pytest.raises(ExportError, match="size"):
        export_onnx(_trained_like(FrozenSizeNet()), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_failed_export_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(_trained_like(FrozenSizeNet()), target)
    assert target.read_bytes() == b"previous"


@pytest.mark.parametrize("factory", [PaddedCropNet, SkipNet, TwoHeadNet])
def test_torchscript_matches_torch_at_odd_sizes(factory: type[nn.Module], tmp_path: Path) -> None:
    model = _trained_like(factory())
    path = export_torchscript(model, tmp_path / "model.pt", normalization="tf_lite")
    engine = load_exported(path)
    assert isinstance(engine, TorchScriptModel)
    assert engine.normalization == "tf_lite"
    verify_export(model, engine, [(63, 77), (120, 55)], batch=2, seed=7)


def test_traced_torchscript_with_frozen_size_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "frozen.pt"
    with pytest.raises(ExportError, match="trace"):
        export_torchscript(_trained_like(FrozenSizeNet()), target, method="trace")
    assert not target.exists()


def test_onnxruntime_engine_runs_the_predict_path(tmp_path: Path) -> None:
    model = _trained_like(SkipNet())
    engine = load_exported(export_onnx(model, tmp_path / "s.onnx"), "onnxruntime")
    images = torch.randn(1, 3, 70, 90)
    for mode in ("whole", "sliding", "multiscale"):
        ours = predict_logits(engine, images, mode=mode, tile_size=48, scales=[0.75, 1.0])
        ref = predict_logits(model, images, mode=mode, tile_size=48, scales=[0.75, 1.0])
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_load_exported_from_module_with_onnxruntime() -> None:
    model = _trained_like(SkipNet())
    engine = load_exported(model, "onnxruntime", threads=1)
    assert isinstance(engine, OnnxRuntimeModel)
    images = torch.randn(1, 3, 41, 53)
    torch.testing.assert_close(engine(images), model(images), atol=1e-4, rtol=0)


def test_load_exported_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_exported(tmp_path / "missing.onnx", "onnxruntime")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="needs an .onnx"):
        load_exported(weights, "onnxruntime")
    with pytest.raises(ValueError, match="build_model"):
        load_exported(weights, "torch")
    with pytest.raises(ValueError, match="runtime must be"):
        load_exported(weights, "tensorrt")  # type: ignore[arg-type]


REAL_MODELS = [
    # The paper net: pad 100, Caffe crops that depend on the input size (narrow for speed).
    ("fcn8s_vgg16", {"width_divisor": 16}),
    # A light encoder with the knot-upsampling skip head, BN, depthwise convolutions.
    ("fcn8s_efficientnet_lite0", {"pretrained": False}),
    # The CamVid release: input resized 1.5x inside the net, logits resized back.
    (
        "fcn4s_efficientnet_lite0",
        {"pretrained": False, "head_channels": 8, "upsample": "bilinear", "input_scale": 1.5},
    ),
    # PSPNet: adaptive pooling into 1/2/3/6 bins of a runtime-sized stride-8 map (narrow head).
    ("pspnet_efficientnet_lite0", {"pretrained": False, "bottleneck_channels": 16}),
    # ENet: max-pooling indices carried to max-unpooling (a scatter), input padded to 8.
    ("enet", {"pretrained": False}),
    # LinkNet: transposed-convolution decoder blocks summed with the encoder maps.
    ("linknet_resnet18", {"pretrained": False}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), REAL_MODELS)
def test_real_models_export_at_five_odd_sizes(name: str, options: dict, tmp_path: Path) -> None:
    import fcnseg

    torch.manual_seed(0)
    model = _trained_like(fcnseg.build_model(name, 5, **options))
    onnx_path = export_onnx(model, tmp_path / f"{name}.onnx")  # checks DEFAULT_CHECK_SIZES
    script_path = export_torchscript(model, tmp_path / f"{name}.pt", method="trace")
    for path, engine in ((onnx_path, "onnxruntime"), (script_path, "torch")):
        runnable = load_exported(path, engine)  # type: ignore[arg-type]
        assert runnable.normalization == model.normalization
        assert verify_export(model, runnable, [(119, 87)], seed=3) <= 1e-3


def test_rgbd_early_fusion_exports_with_its_four_input_channels(tmp_path):
    """The example and check inputs follow the model's in_channels (was: always 3 channels)."""
    from fcnseg.export import export_onnx, load_exported
    from fcnseg.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "early_fusion", 5, pretrained=False, base="fcn8s_mobilenet_v2", in_channels=4
    ).eval()
    path = export_onnx(model, tmp_path / "rgbd.onnx", check_sizes=[(64, 80)])
    engine = load_exported(path, "onnxruntime")
    images = torch.randn(1, 4, 70, 90)
    with torch.no_grad():
        assert torch.allclose(engine(images), model(images), atol=1e-4)
