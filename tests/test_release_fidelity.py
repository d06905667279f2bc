"""The authors' release, net by net: layer names and blob shapes, import, solvers.

Every table below is written from the release's own net definitions (each folder's net.py and
solver.prototxt in shelhamer/fcn.berkeleyvision.org), not derived from fcnseg's modules, so a
layer fcnseg names differently, or shapes differently, fails here. The caffemodel bytes are
written by this file's own protobuf writer, in both layouts Caffe reads: the current `layer`
messages with BlobShape, and the legacy `layers` (V1LayerParameter) with num/channels/height/
width. The first layers' outputs are checked against NumPy, and the `release` training preset
against a hand-written Caffe SGD update.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from protobuf_writer import int_field, length_field, varint
from torch import nn

from fcnseg import constants
from fcnseg.config import config_from_dict
from fcnseg.engine.recipe import resolve_recipe
from fcnseg.models import build_model
from fcnseg.models.caffe import RELEASE_NETS, load_caffemodel

# --- the release's nets, as data -------------------------------------------------------------

#: VGG16 trunk of every VGG release net (net.py `conv_relu` calls): layer -> weight blob shape.
#: Every layer has a bias of the output width.
VGG16_TRUNK: tuple[tuple[str, tuple], ...] = (
    ("conv1_1", (64, 3, 3, 3)),
    ("conv1_2", (64, 64, 3, 3)),
    ("conv2_1", (128, 64, 3, 3)),
    ("conv2_2", (128, 128, 3, 3)),
    ("conv3_1", (256, 128, 3, 3)),
    ("conv3_2", (256, 256, 3, 3)),
    ("conv3_3", (256, 256, 3, 3)),
    ("conv4_1", (512, 256, 3, 3)),
    ("conv4_2", (512, 512, 3, 3)),
    ("conv4_3", (512, 512, 3, 3)),
    ("conv5_1", (512, 512, 3, 3)),
    ("conv5_2", (512, 512, 3, 3)),
    ("conv5_3", (512, 512, 3, 3)),
    ("fc6", (4096, 512, 7, 7)),
    ("fc7", (4096, 4096, 1, 1)),
)
#: Score and upsampling layers per variant; "C" is the class count. (name, shape, has bias):
#: the score convolutions have biases, the deconvolutions `bias_term: false`.
SCORE_LAYERS: dict[str, tuple[tuple[str, tuple, bool], ...]] = {
    "fcn32s": (
        ("score_fr", ("C", 4096, 1, 1), True),
        ("upscore", ("C", "C", 64, 64), False),
    ),
    "fcn16s": (
        ("score_fr", ("C", 4096, 1, 1), True),
        ("upscore2", ("C", "C", 4, 4), False),
        ("score_pool4", ("C", 512, 1, 1), True),
        ("upscore16", ("C", "C", 32, 32), False),
    ),
    "fcn8s": (
        ("score_fr", ("C", 4096, 1, 1), True),
        ("upscore2", ("C", "C", 4, 4), False),
        ("score_pool4", ("C", 512, 1, 1), True),
        ("upscore_pool4", ("C", "C", 4, 4), False),
        ("score_pool3", ("C", 256, 1, 1), True),
        ("upscore8", ("C", "C", 16, 16), False),
    ),
}
#: voc-fcn-alexnet/net.py (CaffeNet): grouped conv2/4/5 store in/2 input channels per filter;
#: upscore is 63x63.
CAFFENET: tuple[tuple[str, tuple, bool], ...] = (
    ("conv1", (96, 3, 11, 11), True),
    ("conv2", (256, 48, 5, 5), True),
    ("conv3", (384, 256, 3, 3), True),
    ("conv4", (384, 192, 3, 3), True),
    ("conv5", (256, 192, 3, 3), True),
    ("fc6", (4096, 256, 6, 6), True),
    ("fc7", (4096, 4096, 1, 1), True),
    ("score_fr", (21, 4096, 1, 1), True),
    ("upscore", (21, 21, 63, 63), False),
)
#: voc-fcn8s-atonce's Scale layers (lr_mult 0, constant filler 0.01 / 0.0001): one blob each,
#: of the scaled map's channels; fcnseg applies them as constants, so they load nowhere.
ATONCE_SCALES: tuple[tuple[str, tuple, bool], ...] = (
    ("scale_pool4", (512,), False),
    ("scale_pool3", (256,), False),
)


def _trunk(suffix: str = "") -> list[tuple[str, tuple, bool]]:
    return [(name + suffix, shape, True) for name, shape in VGG16_TRUNK]


def _scores(variant: str, classes: int, suffix: str = "") -> list[tuple[str, tuple, bool]]:
    return [
        (name + suffix, tuple(classes if d == "C" else d for d in shape), bias)
        for name, shape, bias in SCORE_LAYERS[variant]
    ]


#: Release net -> (its layers, the fcnseg model it must load into).
RELEASE: dict[str, tuple[list[tuple[str, tuple, bool]], str]] = {
    "voc-fcn32s": (_trunk() + _scores("fcn32s", 21), "fcn32s_vgg16"),
    "voc-fcn16s": (_trunk() + _scores("fcn16s", 21), "fcn16s_vgg16"),
    "voc-fcn8s": (_trunk() + _scores("fcn8s", 21), "fcn8s_vgg16"),
    "voc-fcn8s-atonce": (
        _trunk() + _scores("fcn8s", 21) + list(ATONCE_SCALES),
        "fcn8s_atonce_vgg16",
    ),
    "voc-fcn-alexnet": (list(CAFFENET), "fcn32s_caffenet"),
    "pascalcontext-fcn32s": (_trunk() + _scores("fcn32s", 60), "fcn32s_vgg16"),
    "pascalcontext-fcn16s": (_trunk() + _scores("fcn16s", 60), "fcn16s_vgg16"),
    "pascalcontext-fcn8s": (_trunk() + _scores("fcn8s", 60), "fcn8s_vgg16"),
    **{
        f"siftflow-{v}": (
            _trunk() + _scores(v, 33, "_sem") + _scores(v, 3, "_geo"),
            "multihead",
        )
        for v in ("fcn32s", "fcn16s", "fcn8s")
    },
    "nyud-fcn32s-color": (_trunk() + _scores("fcn32s", 40), "fcn32s_vgg16"),
    "nyud-fcn32s-hha": (_trunk() + _scores("fcn32s", 40), "fcn32s_vgg16"),
    "nyud-fcn32s-color-hha": (
        _trunk("color")
        + [("score_frcolor", (40, 4096, 1, 1), True)]
        + _trunk("hha")
        + [("score_frhha", (40, 4096, 1, 1), True), ("upscore", (40, 40, 64, 64), False)],
        "late_fusion",
    ),
    "nyud-fcn32s-color-d": (
        [("conv1_1_bgrd", (64, 4, 3, 3), True)] + _trunk()[1:] + _scores("fcn32s", 40),
        "early_fusion",
    ),
}
#: Layers of each net that fcnseg computes from constants instead of loading.
NOT_LOADED = {"scale_pool4", "scale_pool3"}
#: Input channels of each fcnseg model (RGB; 6 = RGB + HHA; 4 = BGR + depth).
IN_CHANNELS = {"nyud-fcn32s-color-hha": 6, "nyud-fcn32s-color-d": 4}
#: Width divisor of the byte-level import tests (release shapes / 16; same geometry).
DIVISOR = 16


#: Channel widths of the release nets (every other dimension is a class count, an image
#: channel count or a kernel size, which narrowing keeps).
WIDTHS = frozenset({48, 64, 96, 128, 192, 256, 384, 512, 4096})


def _narrow(shape: tuple, divisor: int) -> tuple:
    """Release shape with its channel widths divided: what fcnseg's `width_divisor` builds."""
    return tuple(d // divisor if axis < 2 and d in WIDTHS else d for axis, d in enumerate(shape))


def _release_layers(net: str, divisor: int = 1) -> list[tuple[str, tuple, bool]]:
    return [(name, _narrow(shape, divisor), bias) for name, shape, bias in RELEASE[net][0]]


def _build(net: str, device: str | None = None, divisor: int = 1) -> nn.Module:
    entry = RELEASE_NETS[net]
    options = dict(entry.options)
    if divisor != 1:
        options["width_divisor"] = divisor
    if device == "meta":
        with torch.device("meta"):
            return build_model(entry.model, entry.num_classes, pretrained=False, **options)
    return build_model(entry.model, entry.num_classes, pretrained=False, **options)


# --- a minimal protobuf writer (independent of the reader under test) --------------------------


_varint, _field, _int_field = varint, length_field, int_field


def _blob(array: np.ndarray, legacy: bool) -> bytes:
    if legacy:  # num, channels, height, width, right-aligned as Caffe wrote V1 blobs
        dims = [1] * (4 - array.ndim) + list(array.shape)
        head = b"".join(_int_field(n, d) for n, d in zip((1, 2, 3, 4), dims, strict=True))
    else:
        head = _field(7, _field(1, b"".join(_varint(d) for d in array.shape)))
    return head + _field(5, array.astype("<f4").tobytes())


#: caffe.proto V1LayerParameter.LayerType values of the layer types the release uses.
_V1_TYPES = {"Convolution": 4, "Deconvolution": 39, "InnerProduct": 14, "Scale": 0}


def _layer_type(name: str, shape: tuple, bias: bool) -> str:
    if name.startswith("scale"):
        return "Scale"
    if len(shape) == 2:
        return "InnerProduct"
    return "Convolution" if bias else "Deconvolution"


def _caffemodel(blobs: list[tuple[str, str, list[np.ndarray]]], legacy: bool) -> bytes:
    out = _field(1, b"FCN")  # NetParameter.name
    for name, kind, arrays in blobs:
        if legacy:  # NetParameter.layers = 2: name 4, type 5 (enum), blobs 6
            body = _field(4, name.encode()) + _int_field(5, _V1_TYPES[kind])
            body += b"".join(_field(6, _blob(a, True)) for a in arrays)
            out += _field(2, body)
        else:  # NetParameter.layer = 100: name 1, type 2, blobs 7
            body = _field(1, name.encode()) + _field(2, kind.encode())
            body += b"".join(_field(7, _blob(a, False)) for a in arrays)
            out += _field(100, body)
    return out


def _random_blobs(layers, seed: int = 0) -> list[tuple[str, str, list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    blobs = []
    for name, shape, bias in layers:
        arrays = [rng.random(shape, dtype=np.float32) * 0.2 - 0.1]
        if bias:
            arrays.append(rng.random(shape[0], dtype=np.float32) * 0.2 - 0.1)
        blobs.append((name, _layer_type(name, shape, bias), arrays))
    return blobs


# --- NumPy reference of the first layers -------------------------------------------------------


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride=1, pad=0, groups=1):
    """Caffe convolution of one C x H x W image (cross-correlation, zero padding, groups)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # C x H' x W' x k x k
    per_in, per_out = x.shape[0] // groups, w.shape[0] // groups
    outs = [
        np.einsum(
            "chwij,ocij->ohw",
            windows[g * per_in : (g + 1) * per_in],
            w[g * per_out : (g + 1) * per_out],
        )
        for g in range(groups)
    ]
    return np.concatenate(outs) + b[:, None, None]


def _np_max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Caffe max pooling: output ceil((H - k) / s) + 1, windows clipped at the border."""
    c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s : i * s + k, j * s : j * s + k].max(axis=(1, 2))
    return out


def _np_lrn(x: np.ndarray, size=5, alpha=1e-4, beta=0.75, k=1.0) -> np.ndarray:
    """Caffe LRN across channels: x / (k + alpha / size * sum of squares in the window)^beta."""
    half = (size - 1) // 2
    squares = np.pad(x**2, ((half, half), (0, 0), (0, 0)))
    window = sum(squares[i : i + x.shape[0]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def _first_layers_reference(net: str, image: np.ndarray, written: dict) -> list[np.ndarray]:
    """NumPy outputs of the first layers of each stream of `net` (after ReLU; CaffeNet: norm1)."""
    if net == "voc-fcn-alexnet":
        w, b = written["conv1"]
        y = np.maximum(_np_conv(image, w, b, stride=4, pad=100), 0)
        return [_np_lrn(_np_max_pool(y, 3, 2))]
    if net == "nyud-fcn32s-color-hha":
        return [
            np.maximum(_np_conv(image[:3], *written["conv1_1color"], pad=100), 0),
            np.maximum(_np_conv(image[3:], *written["conv1_1hha"], pad=100), 0),
        ]
    first = "conv1_1_bgrd" if net == "nyud-fcn32s-color-d" else "conv1_1"
    return [np.maximum(_np_conv(image, *written[first], pad=100), 0)]


# --- names and shapes at the release's sizes -----------------------------------------------


@pytest.mark.parametrize("net", sorted(RELEASE))
def test_release_layers_match_fcnseg_names_and_shapes(net: str) -> None:
    """Every weighted module of the fcnseg model has a release layer of a fitting shape, and
    every release layer (but the constant Scale ones) lands in a module: at full size, on the
    meta device (nothing allocated)."""
    from fcnseg.models.caffe import blob_fits, release_layer_names

    layers, model_name = RELEASE[net]
    assert RELEASE_NETS[net].model == model_name
    model = _build(net, device="meta")
    shapes = {name: (shape, bias) for name, shape, bias in layers}
    used = set()
    release_params = 0
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not path or not isinstance(weight, torch.Tensor):
            continue
        name = next((n for n in release_layer_names(path) if n in shapes), None)
        assert name is not None, f"{net}: no release layer for {path} ({release_layer_names(path)})"
        shape, bias = shapes[name]
        assert blob_fits(shape, tuple(weight.shape)), (net, name, shape, tuple(weight.shape))
        assert (getattr(module, "bias", None) is not None) == bias, (net, name)
        used.add(name)
    assert set(shapes) - used == NOT_LOADED & set(shapes), net
    release_params = sum(
        int(np.prod(shape)) + (shape[0] if bias else 0)
        for name, shape, bias in layers
        if name not in NOT_LOADED
    )
    # late fusion keeps one upscore per stream where the release has one after the sum
    extra = 40 * 40 * 64 * 64 if net == "nyud-fcn32s-color-hha" else 0
    assert sum(p.numel() for p in model.parameters()) == release_params + extra


def test_caffenet_fcn32s_has_the_release_parameter_count_and_crop() -> None:
    model = build_model("fcn32s_caffenet", 21, pretrained=False)
    count = sum(p.numel() for p in model.parameters())
    assert count == constants.RELEASE_ALEXNET_PARAMETERS == 58_704_590
    assert model.upscore.weight.shape == (21, 21, 63, 63)  # derived, not written down
    assert model.crop_offsets == {"final": 18}  # Caffe's coord_map of voc-fcn-alexnet
    assert model.encoder.conv2.groups == model.encoder.conv4.groups == 2
    assert isinstance(model.encoder.norm1, nn.LocalResponseNorm)
    names = [name for name, _ in model.encoder.named_children()]
    assert names.index("norm1") == names.index("pool1") + 1  # LRN after pooling, as net.py
    # the torchvision variant keeps its own name and layout
    torchvision_alexnet = build_model("fcn32s_alexnet", 21, pretrained=False)
    assert torchvision_alexnet.encoder.conv1.out_channels == 64


# --- bytes: every tensor lands, both layouts; first layers against NumPy -----------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "v1-layers"])
@pytest.mark.parametrize("net", sorted(RELEASE))
def test_release_caffemodel_imports_exactly(net: str, legacy: bool, tmp_path: Path) -> None:
    _check_import(net, legacy, DIVISOR, tmp_path)


def test_full_size_caffenet_caffemodel_imports_exactly(tmp_path: Path) -> None:
    """voc-fcn-alexnet at the release's own sizes (58,704,590 values, 235 MB of blobs)."""
    _check_import("voc-fcn-alexnet", False, 1, tmp_path)


def _check_import(net: str, legacy: bool, divisor: int, tmp_path: Path) -> None:
    """Write `net`'s layers (release shapes / divisor) as a caffemodel, import, check every
    tensor and the first layers' outputs on a fixed input."""
    layers = _release_layers(net, divisor)
    blobs = _random_blobs(layers, seed=len(net))
    path = tmp_path / f"{net}.caffemodel"
    path.write_bytes(_caffemodel(blobs, legacy))
    model = _build(net, divisor=divisor).eval()
    loaded, unused = load_caffemodel(model, path)
    assert set(unused) == NOT_LOADED & {name for name, _, _ in layers}
    assert set(loaded) == {name for name, _, _ in layers} - NOT_LOADED

    # every imported tensor equals what was written: find each written array in the model
    written = {name: arrays for name, _, arrays in blobs}
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    for name, arrays in written.items():
        if name in NOT_LOADED:
            continue
        for array in arrays:
            hits = [
                key
                for key, value in state.items()
                if value.size == array.size and np.array_equal(value.reshape(array.shape), array)
            ]
            assert hits, f"{net}: {name} blob not found in the model"

    # forward on a fixed input: the first layers against NumPy, the output covers the input
    channels = IN_CHANNELS.get(net, 3)
    image = np.random.default_rng(7).standard_normal((channels, 9, 11)).astype(np.float32)
    first_names = {"conv1", "conv1_1", "conv1_1_bgrd", "conv1_1color", "conv1_1hha"}
    firsts = [(n, a) for n, a in written.items() if n in first_names]
    captured: list[np.ndarray] = []
    hooks = []
    for _, arrays in firsts:
        module = next(
            m
            for m in model.modules()
            if isinstance(m, nn.Conv2d) and np.array_equal(m.weight.detach().numpy(), arrays[0])
        )
        if net == "voc-fcn-alexnet":
            module = model.encoder.norm1
        hooks.append(
            module.register_forward_hook(
                lambda _m, _i, out: captured.append(torch.relu(out).detach().clone().numpy()[0])
            )
        )
    with torch.no_grad():
        output = model(torch.from_numpy(image)[None])
    for hook in hooks:
        hook.remove()
    expected = _first_layers_reference(net, image, written)
    assert len(captured) == len(expected)
    for got, want in zip(captured, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    outputs = output.values() if isinstance(output, dict) else [output]
    for out in outputs:
        assert out.shape[-2:] == (9, 11) and torch.isfinite(out).all()


def test_legacy_inner_product_blobs_load_into_the_convolutionalized_fc(tmp_path: Path) -> None:
    """The ILSVRC VGG16 caffemodel stores fc6/fc7 as InnerProduct 1 x 1 x M x N (legacy)."""
    layers = [(n, _narrow(s, DIVISOR), True) for n, s in VGG16_TRUNK]
    blobs = _random_blobs(layers)
    classifier = []
    for name, kind, arrays in blobs:
        if name.startswith("fc"):
            weight = arrays[0].reshape(arrays[0].shape[0], -1)  # M x N, as Caffe stores it
            classifier.append((name, "InnerProduct", [weight, arrays[1]]))
        else:
            classifier.append((name, kind, arrays))
    classifier.append(("fc8", "InnerProduct", [np.ones((1000, 256), np.float32), np.ones(1000)]))
    path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    path.write_bytes(_caffemodel(classifier, legacy=True))
    model = build_model("fcn32s_vgg16", 21, pretrained=False, width_divisor=DIVISOR)
    loaded, unused = load_caffemodel(model, path, strict=False)
    assert unused == ["fc8"] and {"fc6", "fc7"} <= set(loaded)
    fc6 = dict((n, a) for n, _, a in blobs)["fc6"][0]
    np.testing.assert_array_equal(model.fc6.weight.detach().numpy(), fc6)
    assert model.score_fr.weight.abs().sum() == 0  # not in the file: paper initialisation kept


def test_cli_release_import_and_name_mismatch(tmp_path: Path, capsys) -> None:
    from fcnseg.cli import main
    from fcnseg.engine.loading import load_model

    blobs = _random_blobs(_release_layers("siftflow-fcn16s", DIVISOR), seed=3)
    source = tmp_path / "siftflow-fcn16s-heavy.caffemodel"
    source.write_bytes(_caffemodel(blobs, legacy=False))
    out = tmp_path / "siftflow.safetensors"
    args = ["import-caffe", str(source), "--release", "siftflow-fcn16s", "--out", str(out)]
    assert main([*args, "--options", f"width_divisor={DIVISOR}"]) == 0
    loaded = load_model(weights=out)
    model, meta = loaded.model, loaded.metadata
    assert meta["data_format"] == "siftflow" and model.head_classes == {
        "semantic": 33,
        "geometric": 3,
    }
    assert meta["normalization"] == "caffe_bgr"
    # The same file read as another net: exit 2, one line naming expected and found layers.
    capsys.readouterr()
    wrong = ["import-caffe", str(source), "--release", "voc-fcn16s", "--out", str(tmp_path / "x")]
    assert main([*wrong, "--options", f"width_divisor={DIVISOR}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "expected conv1_1" in err and "score_fr_sem" in err and "score_fr," in err
    assert not (tmp_path / "x").exists()


# --- solvers -------------------------------------------------------------------------------

#: Each release net's solver.prototxt and loss_param, written from the release:
#: (fcnseg model, options, base_lr, momentum, iter_size, normalized loss).
RELEASE_SOLVER_FACTS = {
    "voc-fcn32s": ("fcn32s_vgg16", {}, 1e-10, 0.99, 1, False),
    "voc-fcn16s": ("fcn16s_vgg16", {}, 1e-12, 0.99, 1, False),
    "voc-fcn8s": ("fcn8s_vgg16", {}, 1e-14, 0.99, 1, False),
    "voc-fcn8s-atonce": ("fcn8s_atonce_vgg16", {}, 1e-10, 0.99, 1, False),
    "voc-fcn-alexnet": ("fcn32s_caffenet", {}, 1e-4, 0.9, 20, True),
    "siftflow-fcn32s": ("multihead", {"base": "fcn32s_vgg16"}, 1e-10, 0.99, 1, False),
    "siftflow-fcn16s": ("multihead", {"base": "fcn16s_vgg16"}, 1e-12, 0.99, 1, False),
    "siftflow-fcn8s": ("multihead", {"base": "fcn8s_vgg16"}, 1e-12, 0.99, 1, False),
    "nyud-fcn32s-color-hha": ("late_fusion", {"base": "fcn32s_vgg16"}, 1e-12, 0.99, 1, False),
    "nyud-fcn32s-color-d": ("early_fusion", {"base": "fcn32s_vgg16"}, 1e-10, 0.99, 1, False),
    # PASCAL-Context and the single-stream NYUD nets are the VOC models with the same solvers:
    "pascalcontext-fcn8s": ("fcn8s_vgg16", {}, 1e-14, 0.99, 1, False),
    "nyud-fcn32s-color": ("fcn32s_vgg16", {}, 1e-10, 0.99, 1, False),
}


@pytest.mark.parametrize("net", sorted(RELEASE_SOLVER_FACTS))
def test_release_preset_is_the_release_solver(net: str) -> None:
    model, options, lr, momentum, iter_size, normalized = RELEASE_SOLVER_FACTS[net]
    config = resolve_recipe(
        config_from_dict(
            {"model": {"name": model, "options": options}, "train": {"preset": "release"}}
        )
    )
    train = config.train
    assert (train.optimizer, train.schedule, train.batch_size) == ("sgd", "fixed", 1)
    assert (train.lr, train.momentum, train.accumulate) == (lr, momentum, iter_size)
    assert train.weight_decay == 5e-4
    assert train.loss_normalization == ("mean" if normalized else "sum")
    assert (train.bias_lr_mult, train.bias_decay_mult) == (2.0, 0.0)
    assert train.bias_mult_scope == ("score" if model == "fcn32s_caffenet" else "all")
    assert constants.RELEASE_SOLVERS[net].base_lr == lr


def test_release_preset_refuses_a_model_without_a_release_net() -> None:
    with pytest.raises(ValueError, match="release has no solver"):
        resolve_recipe(
            config_from_dict(
                {"model": {"name": "fcn32s_googlenet"}, "train": {"preset": "release"}}
            )
        )


def test_paper_preset_trains_the_atonce_net_at_the_first_stage_rate() -> None:
    config = resolve_recipe(
        config_from_dict({"model": {"name": "fcn8s_atonce_vgg16"}, "train": {"preset": "paper"}})
    )
    assert config.train.lr == 1e-10  # voc-fcn8s-atonce/solver.prototxt; not FCN-8s's 1e-14


class _TinyNet(nn.Module):
    """conv1 (encoder) -> ReLU -> score_fr, plus a frozen 1x1 "upscore" (lr_mult 0)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            OrderedDict(conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU())
        )
        self.score_fr = nn.Conv2d(4, classes, 1)
        self.upscore = nn.ConvTranspose2d(classes, classes, 1, bias=False)
        self.upscore.weight.requires_grad_(False)
        self.num_classes, self.in_channels = classes, 3
        self.normalization, self.head_classes = "caffe_bgr", {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upscore(self.score_fr(self.encoder(x)))


class _Samples(torch.utils.data.Dataset):
    """Fixed float64 images and masks (some void); records the order training reads them in."""

    num_classes = 3
    classes = ("a", "b", "c")
    palette = ((0, 0, 0), (1, 1, 1), (2, 2, 2))
    ignore_index = 255

    def __init__(self, count: int) -> None:
        rng = np.random.default_rng(11)
        self.images = [torch.from_numpy(rng.standard_normal((3, 5, 6))) for _ in range(count)]
        masks = rng.integers(0, 3, (count, 5, 6))
        masks[:, 0, :2] = 255
        self.masks = [torch.from_numpy(m).long() for m in masks]
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        self.seen.append(index)
        return self.images[index], self.masks[index]


def _caffe_loss(params: dict, image: torch.Tensor, mask: torch.Tensor, normalize: bool):
    """SoftmaxWithLoss of the tiny net written out: -log softmax at the label, void skipped;
    normalize=False divides the sum by the batch size (1), True by the labelled pixels."""
    x = F.relu(
        F.conv2d(
            image[None], params["encoder.conv1.weight"], params["encoder.conv1.bias"], padding=1
        )
    )
    scores = F.conv2d(x, params["score_fr.weight"], params["score_fr.bias"])
    scores = F.conv_transpose2d(scores, params["upscore.weight"])[0]
    log_p = scores - torch.logsumexp(scores, dim=0, keepdim=True)
    valid = mask != 255
    picked = log_p.gather(0, mask.clamp(max=2)[None])[0][valid]
    return -picked.sum() / (valid.sum() if normalize else 1)


def _caffe_sgd_reference(model, data, order, solver, steps):
    """Caffe's SGDSolver: diffs summed over iter_size passes and scaled by 1/iter_size
    (Solver::Step, SGDSolver::Normalize), decay added with decay_mult (Regularize), history =
    momentum * history + lr * lr_mult * diff and data -= history (ComputeUpdateValue)."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    params["upscore.weight"] = model.upscore.weight.detach().clone()
    lr_mult = {k: 1.0 for k in params}
    decay_mult = {k: 1.0 for k in params}
    lr_mult["upscore.weight"] = 0.0
    for key in params:
        is_bias = key.endswith(".bias")
        if is_bias and (solver.bias_mult_layers == "all" or key.startswith("score")):
            lr_mult[key], decay_mult[key] = 2.0, 0.0
    history = {k: torch.zeros_like(v) for k, v in params.items()}
    position = 0
    for _ in range(steps):
        diff = {k: torch.zeros_like(v) for k, v in params.items()}
        for _ in range(solver.iter_size):
            index = order[position]
            position += 1
            leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            _caffe_loss(leaves, data.images[index], data.masks[index], solver.normalize).backward()
            for k in params:
                diff[k] += leaves[k].grad
        for k in params:
            update = diff[k] / solver.iter_size + solver.weight_decay * decay_mult[k] * params[k]
            history[k] = solver.momentum * history[k] + solver.base_lr * lr_mult[k] * update
            params[k] = params[k] - history[k]
    return params


@pytest.mark.parametrize("model_name", ["fcn32s_vgg16", "fcn32s_caffenet"])
def test_three_release_sgd_steps_equal_caffe_update_rule(model_name: str, tmp_path: Path) -> None:
    """voc-fcn32s (momentum 0.99, unnormalised, iter_size 1, every bias 2/0) and voc-fcn-alexnet
    (momentum 0.9, normalised, iter_size 20, score bias only) through fcnseg's training loop."""
    from fcnseg.engine.train import train

    solver_name = "voc-fcn32s" if model_name == "fcn32s_vgg16" else "voc-fcn-alexnet"
    solver = constants.RELEASE_SOLVERS[solver_name]
    steps = 3
    torch.manual_seed(0)
    model = _TinyNet().double()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    data = _Samples(steps * solver.iter_size)
    config = config_from_dict(
        {
            "model": {"name": model_name, "pretrained": False},
            "data": {"val_split": None},
            "train": {
                "preset": "release",
                "epochs": 1,
                "max_steps": steps,
                "progress": False,
                "log_every": 1000,
            },
        }
    )
    train(config, out=tmp_path / "run", model=model, train_set=data)
    order = data.seen[: steps * solver.iter_size]
    reference_model = _TinyNet().double()
    reference_model.load_state_dict(initial)
    expected = _caffe_sgd_reference(reference_model, data, order, solver, steps)
    moved = 0
    for key, value in model.state_dict().items():
        # Compare the updates, not the weights: at lr 1e-10 a weight barely moves, and a wrong
        # multiplier would hide below any tolerance on the weight itself.
        got = (value - initial[key]).numpy()
        want = (expected[key] - initial[key]).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=0, err_msg=key)
        moved += int(np.abs(want).min() > 0)
    assert moved == 4  # conv1 and score_fr weights and biases; the frozen upscore stays
