"""DeepLab-LargeFOV and DeepLab-ASPP, checked against the authors' released prototxts.

Every table below is written from the prototxts, not from fcnseg's modules:

- DeepLab-LargeFOV (v1): TheLegendAli/DeepLab-Context @ f6d04455499399b778a4fb70ca0a9961efb220c9,
  config/DeepLab-LargeFOV/test.prototxt (3x3 pools with pad 1, pool4/pool5 stride 1, conv5
  `hole: 2`, pool5a AVE 3x3, fc6 `hole: 12` `pad: 12` 1024, fc7 1024, fc8_${EXP}, INTERP
  `zoom_factor: 8`).
- DeepLab-ASPP on VGG16 (v2), the authors' template: xmojiao/deeplab_v2 @
  bdec46ce9c1b893e1c8511b56e56e2c0da79e50d, pascal-context/config/deeplab_largeFOV/train.prototxt
  (fc6_1 ... fc8_${EXP}_4, `dilation` = `pad` = 6/12/18/24, Eltwise SUM fc8_${EXP}); the same
  net instantiated for VOC (EXP=voc12, 21 labels) with its solver: talent518/deeplab-public-ver2
  @ 0d878f33a6656d05e3aee824086f8c3eb0d9c2e3, exper/voc12/config/vgg16/train_train.prototxt and
  solver_train.prototxt (also zbxzc35/deeplab_v2_python @ e29063331d276923381f078dd8433f8b6d11ecbb,
  voc12/deeplab_v2_vgg16/config/solver_train_aug.prototxt: the same numbers).
- The v1 "DeepLab" net whose test crop is 514 = 64 * 8 + 2: TheLegendAli/DeepLab-Context @
  bd4aac5e14b4d8a3a5e9435d31a9fd08076bc58d, config/DeepLab/train.prototxt.
- The ResNet-101 ASPP of v2: DrSleep/tensorflow-deeplab-resnet @
  32d66d4f41e669c96c5f29016672de3648819423, misc/deploy.prototxt (the release's deploy net):
  fc1_voc12_c0 ... c3 on res5c, 3x3 to the labels, `dilation` = `pad` = 6/12/18/24, `lr_mult`
  10/20, Gaussian std 0.01, summed by the Eltwise fc1_voc12; res4/res5 dilated 2/4 (stride 8).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_module
from test_models_caffe import _caffemodel
from torch import nn

from fcnseg.config import config_from_dict
from fcnseg.constants import DEEPLAB_TEST_CROP, DEEPLAB_TRAIN_CROP
from fcnseg.engine.caffe_import import import_caffe_release
from fcnseg.engine.optim import build_optimizer
from fcnseg.engine.recipe import resolve_recipe
from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model
from fcnseg.models.caffe import CaffeModelError, load_caffemodel

VOC_LABELS = 21
#: Width divisor of the forward-pass tests (release widths / 16; the geometry is unchanged).
NARROW = 16

# --- the prototxts as data ------------------------------------------------------------------

#: VGG16 trunk (conv layers: name, num_output, pad, dilation), pools after each block
#: (name, kernel, stride, pad): DeepLab-LargeFOV test.prototxt and the v2 ASPP train.prototxt.
TRUNK = (
    ("conv1_1", 64, 1, 1),
    ("conv1_2", 64, 1, 1),
    ("pool1", 3, 2, 1),
    ("conv2_1", 128, 1, 1),
    ("conv2_2", 128, 1, 1),
    ("pool2", 3, 2, 1),
    ("conv3_1", 256, 1, 1),
    ("conv3_2", 256, 1, 1),
    ("conv3_3", 256, 1, 1),
    ("pool3", 3, 2, 1),
    ("conv4_1", 512, 1, 1),
    ("conv4_2", 512, 1, 1),
    ("conv4_3", 512, 1, 1),
    ("pool4", 3, 1, 1),
    ("conv5_1", 512, 2, 2),
    ("conv5_2", 512, 2, 2),
    ("conv5_3", 512, 2, 2),
    ("pool5", 3, 1, 1),
)
#: Branch layers of each net: (name, kernel, num_output or None for the labels, pad = dilation).
LARGEFOV_HEAD = (
    ("fc6", 3, 1024, 12),
    ("fc7", 1, 1024, 0),
    ("fc8_voc12", 1, None, 0),
)
ASPP_RATES = (6, 12, 18, 24)
ASPP_HEAD = tuple(
    layer
    for i, rate in enumerate(ASPP_RATES, start=1)
    for layer in (
        (f"fc6_{i}", 3, 1024, rate),
        (f"fc7_{i}", 1, 1024, 0),
        (f"fc8_voc12_{i}", 1, None, 0),
    )
)


def _is_pool(entry: tuple) -> bool:
    return entry[0].startswith("pool")


def _prototxt_layer_names(head: tuple, pool5a: bool) -> list[str]:
    """Every layer of the prototxt between data and loss, in file order (ReLU, Dropout
    included; the Eltwise sum and INTERP have no module of their own but fc8_interp)."""
    names: list[str] = []
    for entry in TRUNK:
        names.append(entry[0])
        if not _is_pool(entry):
            names.append(entry[0].replace("conv", "relu"))
    if pool5a:
        names.append("pool5a")
    for name, *_ in head:
        names.append(name)
        if name.startswith(("fc6", "fc7")):
            digit, suffix = name[2], name[3:]
            names += [f"relu{digit}{suffix}", f"drop{digit}{suffix}"]
    return names


def _blob_shapes(head: tuple, labels: int, divisor: int = 1) -> dict[str, tuple[tuple, ...]]:
    """Weight and bias blob shapes of every weighted layer: (num_output, bottom channels, k, k)."""
    shapes: dict[str, tuple[tuple, ...]] = {}
    channels = 3
    for name, width, *_ in (entry for entry in TRUNK if not _is_pool(entry)):
        out = width // divisor
        shapes[name] = ((out, channels, 3, 3), (out,))
        channels = out
    trunk = channels
    bottom = trunk
    for name, kernel, width, _ in head:
        out = labels if width is None else width // divisor
        bottom = trunk if name.startswith("fc6") else bottom
        shapes[name] = ((out, bottom, kernel, kernel), (out,))
        bottom = out
    return shapes


def _parameters(shapes: dict[str, tuple[tuple, ...]]) -> int:
    return sum(math.prod(weight) + math.prod(bias) for weight, bias in shapes.values())


NETS = {
    "deeplab_largefov_vgg16": (LARGEFOV_HEAD, True),
    "deeplab_aspp_vgg16": (ASPP_HEAD, False),
}


def _meta(name: str, labels: int = VOC_LABELS) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, labels, pretrained=False)


def _flat_layer_names(model: nn.Module) -> list[str]:
    encoder = [name for name, _ in model.encoder.named_children()]
    top = [name for name, _ in model.named_children() if name not in ("encoder", "fc8_interp")]
    return encoder + top


# --- layers, shapes, parameter counts -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETS))
def test_layer_names_are_the_prototxts_in_order(name: str) -> None:
    head, pool5a = NETS[name]
    assert _flat_layer_names(_meta(name)) == _prototxt_layer_names(head, pool5a)


@pytest.mark.parametrize("name", sorted(NETS))
def test_blob_shapes_and_parameter_count_are_the_prototxts(name: str) -> None:
    head, _ = NETS[name]
    expected = _blob_shapes(head, VOC_LABELS)
    model = _meta(name)
    weighted = {
        path.rsplit(".", 1)[-1]: (tuple(m.weight.shape), tuple(m.bias.shape))
        for path, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }
    assert weighted == expected
    assert sum(p.numel() for p in model.parameters()) == _parameters(expected)


def test_parameter_totals_at_21_labels() -> None:
    """The totals the tables give, written out: VGG16's convolutions 14,714,688; one fc6-fc7-fc8
    branch 4,719,616 + 1,049,600 + 21,525; LargeFOV has one branch, ASPP four."""
    assert _parameters(_blob_shapes(LARGEFOV_HEAD, VOC_LABELS)) == 20_505_429
    assert _parameters(_blob_shapes(ASPP_HEAD, VOC_LABELS)) == 37_877_652
    assert sum(p.numel() for p in _meta("deeplab_largefov_vgg16").parameters()) == 20_505_429
    assert sum(p.numel() for p in _meta("deeplab_aspp_vgg16").parameters()) == 37_877_652


@pytest.mark.parametrize("name", sorted(NETS))
def test_kernels_strides_pads_and_dilations_are_the_prototxts(name: str) -> None:
    head, pool5a = NETS[name]
    model = _meta(name)
    encoder = dict(model.encoder.named_children())
    for entry in TRUNK:
        layer = encoder[entry[0]]
        if _is_pool(entry):
            _, kernel, stride, pad = entry
            assert isinstance(layer, nn.MaxPool2d), entry
            assert (layer.kernel_size, layer.stride, layer.padding) == (kernel, stride, pad)
            assert layer.ceil_mode  # Caffe rounds pooled sizes up
        else:
            _, _, pad, dilation = entry
            assert (layer.padding, layer.dilation) == ((pad, pad), (dilation, dilation)), entry
    if pool5a:  # AVE 3x3 stride 1 pad 1; Caffe divides by 9 at every position (padding counted)
        layer = encoder["pool5a"]
        assert isinstance(layer, nn.AvgPool2d) and layer.count_include_pad
        assert (layer.kernel_size, layer.stride, layer.padding) == (3, 1, 1)
    else:
        assert "pool5a" not in encoder
    for layer_name, kernel, _, pad in head:
        conv = getattr(model, layer_name)
        dilation = max(pad, 1)
        assert conv.kernel_size == (kernel, kernel)
        assert (conv.padding, conv.dilation) == ((pad, pad), (dilation, dilation)), layer_name
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 * (len(head) // 3) and {d.p for d in drops} == {0.5}


def test_fc8_is_the_class_scorer_of_each_branch() -> None:
    assert _meta("deeplab_largefov_vgg16").class_score_layers == ("fc8_voc12",)
    assert _meta("deeplab_aspp_vgg16").class_score_layers == tuple(
        f"fc8_voc12_{i}" for i in range(1, 5)
    )


# --- output sizes -------------------------------------------------------------------------------


def _caffe_pool(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's PoolingLayer::Reshape: ceil((H + 2p - k) / s) + 1, less one when the last window
    would start in the padding."""
    pooled = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _caffe_conv(size: int, kernel: int, pad: int, dilation: int = 1) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) + 1


def _largefov_score_size(size: int) -> int:
    """The LargeFOV prototxt's fc8 size, layer by layer (3x3 convs keep the size)."""
    for entry in TRUNK:
        if _is_pool(entry):
            size = _caffe_pool(size, *entry[1:])
        else:
            size = _caffe_conv(size, 3, entry[2], entry[3])
    size = _caffe_pool(size, 3, 1, 1)  # pool5a
    return _caffe_conv(size, 3, 12, 12)  # fc6; fc7 and fc8 are 1x1


@pytest.mark.parametrize(
    ("size", "scores"),
    [(DEEPLAB_TRAIN_CROP, 41), (DEEPLAB_TEST_CROP, 65), (514, 66), (353, 45), (65, 9), (1, 1)],
)
@pytest.mark.parametrize("name", sorted(NETS))
def test_score_map_size_at_odd_inputs(name: str, size: int, scores: int) -> None:
    """321 -> 41 and 513 -> 65: the prototxts' crops ("n = 32 k - 31 ... 321 -> 41"); 514 -> 66.
    The interpolated output always has the input's size."""
    assert _largefov_score_size(size) == scores
    model = build_model(name, 3, width_divisor=NARROW).eval()
    image = torch.zeros(1, 3, size, size + 8)
    with torch.no_grad():
        score = model.score_map(image)
        out = model(image)
    assert tuple(score.shape[-2:]) == (scores, _largefov_score_size(size + 8))
    assert tuple(out.shape) == (1, 3, size, size + 8)


def test_the_514_input_of_the_issue() -> None:
    """The issue says a 514x514 input gives a 67x67 score map. Caffe's pooling arithmetic on the
    released layouts says otherwise: the v1 "DeepLab" net whose test crop is 514 (2x2 pools with
    pad 1, pool4 2x2 stride 1 unpadded, fc6 4x4 `hole: 4` `pad: 6`) gives 65, LargeFOV (3x3
    pools) 66. 67 needs pool4 padded by 1, the line the v1 prototxt has commented out
    (`#pad: 1`): the claim counts a layout that was not released."""

    def deeplab_v1(size: int, pool4_pad: int) -> int:
        for _ in range(3):  # pool1-3: kernel 2, stride 2, pad 1
            size = _caffe_pool(size, 2, 2, 1)
        size = _caffe_pool(size, 2, 1, pool4_pad)
        size = _caffe_pool(size, 3, 1, 1)  # pool5
        return _caffe_conv(size, 4, 6, 4)  # fc6

    assert deeplab_v1(514, pool4_pad=0) == 65
    assert deeplab_v1(514, pool4_pad=1) == 67
    assert deeplab_v1(306, pool4_pad=0) == 39  # the prototxt's comment: "39 if k = 38"
    assert _largefov_score_size(514) == 66


def _np_caffe_pool(x: np.ndarray, kernel: int, stride: int, pad: int, mode: str) -> np.ndarray:
    """Caffe's PoolingLayer forward on one C x H x W map. MAX: the window clipped to the image.
    AVE: the sum over the window clipped to the image, divided by the window's size clipped to
    the padded image (so padding counts as zeros where the window reaches into it)."""
    c, h, w = x.shape
    oh, ow = _caffe_pool(h, kernel, stride, pad), _caffe_pool(w, kernel, stride, pad)
    out = np.empty((c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + kernel, h + pad), min(w0 + kernel, w + pad)
            size = (h1 - h0) * (w1 - w0)
            window = x[:, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w)]
            if mode == "max":
                out[:, i, j] = window.max(axis=(1, 2))
            else:
                out[:, i, j] = window.sum(axis=(1, 2)) / size
    return out


@pytest.mark.parametrize(("layer", "mode"), [("pool1", "max"), ("pool4", "max"), ("pool5a", "ave")])
@pytest.mark.parametrize("size", [(13, 11), (16, 9)])
def test_pools_compute_what_caffe_computes(layer: str, mode: str, size: tuple) -> None:
    """Odd and even sizes: Caffe's rounding and border windows, against a NumPy reference."""
    model = build_model("deeplab_largefov_vgg16", 2, width_divisor=NARROW)
    pool = getattr(model.encoder, layer)
    kernel, stride, pad = {"pool1": (3, 2, 1), "pool4": (3, 1, 1), "pool5a": (3, 1, 1)}[layer]
    x = np.random.default_rng(1).standard_normal((4, *size)).astype(np.float32)
    with torch.no_grad():
        got = pool(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, _np_caffe_pool(x, kernel, stride, pad, mode), atol=1e-6)


def test_interpolation_is_the_release_interp_between_score_centres() -> None:
    """INTERP `zoom_factor: 8`: n scores -> (n - 1) 8 + 1 pixels, score i on pixel 8 i, linear in
    between (align_corners); past the last centre the last score is repeated."""
    model = build_model("deeplab_largefov_vgg16", 2, width_divisor=NARROW).eval()
    torch.manual_seed(0)
    scores = torch.randn(1, 2, 41, 41)
    zoomed = F.interpolate(scores, size=(321, 321), mode="bilinear", align_corners=True)
    torch.testing.assert_close(model.fc8_interp(scores, (321, 321)), zoomed)
    assert torch.equal(model.fc8_interp(scores, (321, 321))[..., ::8, ::8], scores)
    wider = model.fc8_interp(scores, (326, 330))
    torch.testing.assert_close(wider[..., :321, :321], zoomed)
    torch.testing.assert_close(wider[..., 325, 329], scores[..., 40, 40])


def test_bad_rates_are_one_line_errors() -> None:
    with pytest.raises(ModelOptionError, match="rates must be positive integers"):
        build_model("deeplab_aspp_vgg16", 3, width_divisor=NARROW, rates=[6, 0])
    with pytest.raises(ModelOptionError, match="rates must be positive integers"):
        build_model("deeplab_aspp_resnet18", 3, rates=[])


# --- import from the release's caffemodels ----------------------------------------------------


def _release_caffemodel(name: str, path: Path, labels: int, seed: int = 0) -> dict:
    """A caffemodel with the prototxt's layer names and (narrowed) blob shapes, random values."""
    head, _ = NETS[name]
    rng = np.random.default_rng(seed)
    written = {
        layer: [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        for layer, shapes in _blob_shapes(head, labels, NARROW).items()
    }
    path.write_bytes(_caffemodel(list(written.items())))
    return written


@pytest.mark.parametrize(
    ("release", "name"),
    [("deeplab-largefov", "deeplab_largefov_vgg16"), ("deeplab-aspp-vgg16", "deeplab_aspp_vgg16")],
)
def test_release_caffemodel_imports_by_layer_name(release: str, name: str, tmp_path) -> None:
    from fcnseg.engine.checkpoint import load_weights

    source = tmp_path / f"{release}.caffemodel"
    written = _release_caffemodel(name, source, VOC_LABELS)
    out = tmp_path / "imported.safetensors"
    result = import_caffe_release(
        source, out=out, release=release, options={"width_divisor": NARROW}
    )
    assert result.model == name and result.unused == []
    assert result.loaded == list(written)
    state, meta = load_weights(out)
    assert meta["normalization"] == "caffe_bgr" and len(meta["classes"]) == VOC_LABELS
    for layer, (weight, bias) in written.items():
        key = f"encoder.{layer}" if layer.startswith("conv") else layer
        np.testing.assert_array_equal(state[f"{key}.weight"].numpy(), weight)
        np.testing.assert_array_equal(state[f"{key}.bias"].numpy(), bias)


def test_caffemodel_of_the_other_net_names_the_missing_layers(tmp_path) -> None:
    source = tmp_path / "aspp.caffemodel"
    _release_caffemodel("deeplab_aspp_vgg16", source, VOC_LABELS)
    model = build_model("deeplab_largefov_vgg16", VOC_LABELS, width_divisor=NARROW)
    with pytest.raises(CaffeModelError, match=r"layer\(s\) fc6, fc7, fc8_voc12 not found"):
        load_caffemodel(model, source)


def test_import_caffe_command_takes_the_deeplab_release(tmp_path, capsys) -> None:
    from fcnseg.cli import main

    source = tmp_path / "largefov.caffemodel"
    _release_caffemodel("deeplab_largefov_vgg16", source, VOC_LABELS)
    out = tmp_path / "largefov.safetensors"
    argv = ["import-caffe", str(source), "--release", "deeplab-largefov", "--out", str(out)]
    assert main([*argv, "--options", f"width_divisor={NARROW}"]) == 0
    assert f"wrote {out}: 16 layers" in capsys.readouterr().out
    assert out.is_file()


# --- the authors' solver as the `release` preset --------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETS))
def test_release_preset_is_the_v2_solver(name: str) -> None:
    """solver_train.prototxt: poly, power 0.9, base_lr 1e-3, max_iter 20000, momentum 0.9,
    weight_decay 0.0005; batch_size 10; SoftmaxWithLoss normalised (Caffe's default)."""
    train = resolve_recipe(
        config_from_dict({"model": {"name": name}, "train": {"preset": "release"}})
    ).train
    assert (train.optimizer, train.schedule, train.poly_power) == ("sgd", "poly", 0.9)
    assert (train.lr, train.momentum, train.weight_decay) == (1e-3, 0.9, 5e-4)
    assert (train.max_steps, train.batch_size, train.accumulate) == (20000, 10, 1)
    assert train.loss_normalization == "mean"
    assert (train.bias_lr_mult, train.bias_decay_mult, train.score_lr_mult) == (2.0, 0.0, 10.0)


def test_release_preset_puts_fc8_at_lr_mult_10_and_20() -> None:
    """Every layer's `param { lr_mult decay_mult }` pair: conv and fc6/fc7 weights 1/1, their
    biases 2/0; fc8 weights 10/1, fc8 biases 20/0 (train_train.prototxt)."""
    config = resolve_recipe(
        config_from_dict({"model": {"name": "deeplab_aspp_vgg16"}, "train": {"preset": "release"}})
    )
    model = build_model("deeplab_aspp_vgg16", 3, width_divisor=NARROW)
    optimizer = build_optimizer(config, model)
    base, decay = config.train.lr, config.train.weight_decay
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        group = group_of[id(parameter)]
        layer, kind = name.split(".")[-2:]
        lr_mult = 10.0 if layer.startswith("fc8") else 1.0
        if kind == "bias":
            expected = (base * lr_mult * 2.0, 0.0)
        else:
            expected = (base * lr_mult, decay)
        assert (group["lr"], group["weight_decay"]) == pytest.approx(expected), name


@pytest.mark.parametrize("recipe", ["voc_deeplab_largefov_vgg16", "voc_deeplab_aspp_vgg16"])
def test_shipped_recipes_train_with_the_release_solver_on_321_crops(recipe: str) -> None:
    from fcnseg.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / f"{recipe}.yaml"
    config = resolve_recipe(load_config(path))
    assert config.model.name == recipe.removeprefix("voc_")
    assert config.data.crop_size == [DEEPLAB_TRAIN_CROP] * 2 and config.data.hflip
    assert (config.train.schedule, config.train.max_steps, config.train.batch_size) == (
        "poly",
        20000,
        10,
    )


# --- ASPP on the ResNet encoders ---------------------------------------------------------------


def test_aspp_on_resnet_is_four_dilated_scorers_at_stride_8() -> None:
    model = build_model("deeplab_aspp_resnet18", 5).eval()
    assert model.backbone.output_stride == 8
    head = model.head
    convs = [(name, m) for name, m in head.named_children() if isinstance(m, nn.Conv2d)]
    assert [name for name, _ in convs] == [f"fc1_voc12_c{i}" for i in range(4)]
    for (_, conv), rate in zip(convs, ASPP_RATES, strict=True):
        assert tuple(conv.weight.shape) == (5, 512, 3, 3)
        assert (conv.padding, conv.dilation) == ((rate, rate), (rate, rate))
    assert sum(p.numel() for p in head.parameters()) == 4 * (5 * 512 * 9 + 5)
    assert head.class_score_layers == tuple(name for name, _ in convs)
    image = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        out = model(image)
        features = model.backbone(image)
    assert tuple(out.shape) == (1, 5, 67, 45)
    # The head is the plain sum of the four branches, interpolated.
    summed = sum(conv(features["s32"]) for _, conv in convs)
    assert tuple(features["s32"].shape[-2:]) == (9, 6)
    torch.testing.assert_close(head(features, (67, 45)), head.interp(summed, (67, 45)))


def test_aspp_is_registered_on_the_atrous_encoders_only() -> None:
    from fcnseg.models import list_models

    names = [name for name in list_models() if name.startswith("deeplab_aspp_")]
    assert names == [
        "deeplab_aspp_mobilenet_v2",
        "deeplab_aspp_resnet101",
        "deeplab_aspp_resnet18",
        "deeplab_aspp_resnet50",
        "deeplab_aspp_vgg16",
    ]


# --- export ------------------------------------------------------------------------------------


def test_largefov_exports_to_onnx_and_matches_at_odd_sizes(tmp_path) -> None:
    require_module("onnx", "pip install -e '.[export]'")
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import export_onnx

    torch.manual_seed(0)
    model = build_model("deeplab_largefov_vgg16", 3, width_divisor=NARROW).eval()
    path = export_onnx(
        model, tmp_path / "largefov.onnx", example_size=(65, 81), check_sizes=[(41, 57), (73, 50)]
    )
    assert path.is_file()
