"""Mean-field CRF layers (models/meanfield.py): the filters against the exact dense filter, the
model option `crf`, end-to-end training in a recipe, the weights round trip and ONNX export.

The exact dense filter is brute force (O(N^2)), so the images are small: 32x32 and 48x64. The
window bounds are those documented in docs/meanfield_crf.md, measured by
benchmarks/meanfield_filter_error.py on CamVid crops; here on the synthetic scenes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import require_module
from model_helpers import PoolBackbone

from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model
from fcnseg.models.heads.fcn import FCNHead, SkipFCN
from fcnseg.models.meanfield import (
    UNNORMALIZE,
    GridFilter,
    MeanFieldCRF,
    MeanFieldOptions,
    exact_dense_filter,
    gaussian_filter,
    parse_crf_options,
    rgb_image,
)
from fcnseg.models.registry import register_model, registered_names

TINY = "test_meanfield_tiny_fcn8s"
SIZES = [(32, 32), (48, 64)]


def build_tiny(num_classes: int, pretrained: bool = False) -> SkipFCN:
    backbone = PoolBackbone(width=4)
    head = FCNHead(backbone.channels, backbone.strides, num_classes, "fcn8s")
    return SkipFCN(backbone, head)


@pytest.fixture(autouse=True, scope="module")
def tiny_model_registered():
    """TINY is registered only while this module's tests run (the listing tests see the shipped
    models only)."""
    from fcnseg.models import registry

    if TINY not in registered_names():
        register_model(TINY, description="test-only tiny FCN-8s on PoolBackbone")(build_tiny)
    yield
    registry._TABLE.pop(TINY, None)


def _scene(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities 1 x 3 x H x W, RGB 0-255 image): a synthetic scene and noisy scores."""
    from fcnseg.data.datasets.registry import build_dataset

    dataset = build_dataset("synthetic", None, "val", num_images=1, size=(height, width))
    image, mask = dataset.load(0)
    image = image[None].float()
    generator = torch.Generator().manual_seed(seed)
    scores = F.one_hot((mask % 3).long(), 3).permute(2, 0, 1)[None].float() * 2
    scores = scores + torch.randn(scores.shape, generator=generator)
    return torch.softmax(scores, 1), image


def _relative(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


@pytest.mark.parametrize("size", [(32, 32), (32, 40)])
def test_a_window_covering_the_image_is_the_exact_dense_filter(size):
    """Both kernels; a wrong offset, sign or self term would show as a large difference."""
    probs, image = _scene(*size)
    window = 2 * max(size) - 1
    options = MeanFieldOptions(window=window, spatial_sxy=3, bilateral_sxy=20, bilateral_srgb=30)
    filtered = GridFilter(image, options)(probs)
    assert _relative(filtered[:, 0], exact_dense_filter(probs, image, 3.0, None)) < 1e-4
    assert _relative(filtered[:, 1], exact_dense_filter(probs, image, 20.0, 30.0)) < 1e-5


@pytest.mark.parametrize("sxy", [1.0, 3.0, 10.0])
def test_spatial_kernel_is_exact_at_any_width(sxy):
    probs, image = _scene(48, 64)
    assert (
        _relative(gaussian_filter(probs, sxy), exact_dense_filter(probs, image, sxy, None)) < 1e-4
    )


@pytest.mark.parametrize("size", SIZES)
def test_documented_window_error_is_bounded(size):
    """The documented rule (docs/meanfield_crf.md): a window reaching 2 bilateral_sxy on each
    side (window >= 4 sxy + 1) misses under 5% of the exact bilateral message, 2.67 sxy under 1%."""
    probs, image = _scene(*size)
    exact = exact_dense_filter(probs, image, 3.0, 13.0)

    def error(window: int) -> float:
        options = MeanFieldOptions(window=window, bilateral_sxy=3.0, bilateral_srgb=13.0)
        return _relative(GridFilter(image, options)(probs)[:, 1], exact)

    assert error(13) < 0.05
    assert error(17) < 0.01


@pytest.mark.parametrize("size", SIZES)
def test_wide_kernels_are_truncated_by_the_window(size):
    """DeepLab's widths (sxy 67 > the window): the window sees a part of the dense message
    only (documented, measured by the benchmark); a wider window is closer."""
    probs, image = _scene(*size)
    exact = exact_dense_filter(probs, image, 67.0, 3.0)
    errors = [
        _relative(GridFilter(image, MeanFieldOptions(window=window))(probs)[:, 1], exact)
        for window in (7, 15)
    ]
    assert 0.5 < errors[0] and errors[1] < errors[0]


def test_unnormalisation_undoes_every_preset():
    from fcnseg.data.normalization import PRESETS

    image = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)
    assert set(UNNORMALIZE) == set(PRESETS)
    for name, preset in PRESETS.items():
        restored = rgb_image(preset.apply(image), name)
        assert torch.allclose(restored, image.float(), atol=1e-3), name


def test_options_are_checked_in_one_line():
    assert parse_crf_options({}) == MeanFieldOptions()
    assert parse_crf_options({"iterations": 3}).iterations == 3
    for bad, match in (
        ({"window": 6}, "window: 6 must be odd"),
        ({"iterations": 0}, r"iterations: 0 must be a whole number in \[1, 20\]"),
        ({"theta": 1}, "unknown key 'theta'"),
        ({"bilateral_srgb": "x"}, "bilateral_srgb: 'x' must be a number"),
        (7, "expected a mapping"),
    ):
        with pytest.raises(ModelOptionError, match=match):
            parse_crf_options(bad)


def test_factory_wraps_and_keeps_the_contract():
    base = build_model(TINY, 3)
    model = build_model(TINY, 3, crf={"iterations": 2})
    assert isinstance(model, MeanFieldCRF) and not isinstance(base, MeanFieldCRF)
    for attribute in ("num_classes", "in_channels", "normalization", "head_classes"):
        assert getattr(model, attribute) == getattr(base, attribute)
    assert torch.equal(model.crf.compatibility, 1 - torch.eye(3))  # Potts
    with pytest.raises(ModelOptionError, match="model.crf: needs an RGB model"):
        MeanFieldCRF(build_model("early_fusion", 3, base=TINY, in_channels=4), MeanFieldOptions())


def test_layers_smooth_a_speckle_toward_its_colour_region():
    """One pixel scored against its flat-coloured surroundings is relabelled by the CRF."""
    scores = torch.zeros(1, 2, 9, 9)
    scores[:, 0] = 1.0
    scores[:, :, 4, 4] = torch.tensor([0.0, 1.0])
    image = torch.full((1, 3, 9, 9), 100.0)
    layers = MeanFieldCRF(build_model(TINY, 2), MeanFieldOptions(iterations=3)).crf
    refined = layers(scores, image)
    assert scores.argmax(1)[0, 4, 4] == 1 and refined.argmax(1)[0, 4, 4] == 0


def test_recipe_trains_end_to_end_and_weights_rebuild_it(tmp_path):
    """model.crf in a recipe: loss falls, gradients reach the compatibility and the base, and
    the run's weights load back as the same wrapped model (metadata round trip)."""
    from fcnseg.config import config_from_dict
    from fcnseg.engine.loading import load_model
    from fcnseg.engine.train import train

    raw = {
        "name": "crf",
        "model": {"name": TINY, "pretrained": False, "crf": {"iterations": 2, "window": 5}},
        "data": {
            "format": "synthetic",
            "options": {"num_images": 6, "size": [32, 32]},
            "crop_size": [32, 32],
            "scale_range": [1.0, 1.0],
        },
        "train": {
            "optimizer": "adamw",
            "lr": 0.02,
            "epochs": 4,
            "batch_size": 2,
            "device": "cpu",
            "progress": False,
            "log_every": 1,
            "seed": 0,
        },
    }
    torch.manual_seed(0)
    initial = build_model(TINY, 6, crf={"iterations": 2, "window": 5})
    result = train(config_from_dict(raw), out=tmp_path / "run")
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    loaded = load_model(run=tmp_path / "run")
    model = loaded.model
    assert isinstance(model, MeanFieldCRF)
    assert loaded.metadata.model_options["crf"] == {"iterations": 2, "window": 5}
    assert not torch.allclose(model.crf.compatibility, initial.crf.compatibility)
    assert not torch.allclose(model.crf.kernel_weights, initial.crf.kernel_weights)
    head = dict(model.base.named_parameters())
    assert any(
        not torch.equal(p, dict(initial.base.named_parameters())[n]) for n, p in head.items()
    )
    x = torch.randn(1, 3, 32, 32)
    reference = build_model(TINY, 6, crf={"iterations": 2, "window": 5})
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))


def test_gradients_reach_compatibility_and_base():
    model = build_model(TINY, 3, crf={"iterations": 2})
    target = torch.randint(0, 3, (1, 32, 32))
    F.cross_entropy(model(torch.randn(1, 3, 32, 32)), target).backward()
    assert model.crf.compatibility.grad.abs().sum() > 0
    assert model.crf.kernel_weights.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.base.parameters() if p.requires_grad)


def test_onnx_export_matches_torch(tmp_path: Path):
    """Exported and checked at odd sizes by export_onnx, then compared at another one."""
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import export_onnx, load_exported

    torch.manual_seed(0)
    model = build_model(TINY, 3, crf={"iterations": 2, "window": 5, "downsample": 2}).eval()
    with torch.no_grad():
        model.crf.compatibility.add_(0.1 * torch.randn(3, 3))
    path = export_onnx(model, tmp_path / "crf.onnx", check_sizes=[(45, 61)], example_size=(57, 71))
    engine = load_exported(path, "onnxruntime")
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        assert (engine(x) - model(x)).abs().max() < 1e-3


def test_plain_weights_initialise_the_wrapped_model(tmp_path, capsys):
    """model.init from the bare model's weights: every base tensor copied bit-exactly, the
    mean-field layers kept as built (the fine-tuning start of CRF-as-RNN)."""
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.engine.transfer import initialise_with_mapping

    torch.manual_seed(1)
    plain = build_model(TINY, 3)
    meta = weights_metadata(
        TINY,
        {},
        num_classes=3,
        classes=["a", "b", "c"],
        palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        normalization="imagenet",
        ignore_index=255,
        data_format="synthetic",
    )
    save_weights(tmp_path / "plain.safetensors", plain, meta)
    wrapped = build_model(TINY, 3, crf={})
    mapping = initialise_with_mapping(
        wrapped, str(tmp_path / "plain.safetensors"), classes=["a", "b", "c"]
    )
    assert len(mapping.copied) == len(plain.state_dict()) and not mapping.skipped
    assert mapping.reinitialised == ["crf.compatibility", "crf.kernel_weights"]
    for name, tensor in plain.state_dict().items():
        assert torch.equal(wrapped.state_dict()[f"base.{name}"], tensor)
    assert "copied" in capsys.readouterr().out


def test_recipe_refuses_a_bad_crf_before_the_run_directory(tmp_path):
    from fcnseg.config import config_from_dict
    from fcnseg.engine.train import train

    config = config_from_dict(
        {"model": {"name": TINY, "crf": {"window": 4}}, "train": {"device": "cpu"}}
    )
    with pytest.raises(ModelOptionError, match=r"model.crf.window: 4 must be odd \(e.g. 7\)"):
        train(config, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_messages_are_normalised_so_the_penalty_is_bounded_by_the_weights():
    """Each kernel's message is divided by its filter of ones (self included): with Potts
    compatibility the penalty stays below w_s + w_b (unnormalised, a 3-px spatial kernel alone
    sums to ~56 neighbours and the penalty to ~170)."""
    torch.manual_seed(0)
    scores = torch.randn(1, 3, 24, 24) * 5
    image = torch.full((1, 3, 24, 24), 80.0)
    layers = MeanFieldCRF(build_model(TINY, 3), MeanFieldOptions(iterations=2)).crf
    change = (layers(scores, image) - scores).abs().max()
    assert 0.5 < change < float(layers.kernel_weights.sum())
