"""SegNet, SegNet-Basic and their Bayesian versions against the authors' release prototxts.

Every expected name, width and size below is read off alexgkendall/SegNet-Tutorial at commit
bb68b64e72cb004b3ed927fee0f5624dd8097498: `Models/segnet_train.prototxt`,
`Models/segnet_basic_train.prototxt`, `Models/bayesian_segnet_train.prototxt` and
`Models/bayesian_segnet_basic_train.prototxt` (the layers between the DenseImageData layer and
the SoftmaxWithLoss / Accuracy layers, in file order). The Upsample semantics (output size
`bottom * scale - pad_out`, or `upsample_h` / `upsample_w` when given) are those of
alexgkendall/caffe-segnet at commit 344c113bf1832886f1cbe9f33ffe28a3beeaf412,
`src/caffe/layers/upsample_layer.cpp`; Caffe's pooling rounds its output size up.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import require_module
from torch import nn

from fcnseg.constants import SEGNET_CAMVID_CLASS_WEIGHTS
from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model
from fcnseg.models.segnet import dropout_layers
from fcnseg.models.unpool import IndexedMaxPool, max_unpool

SEGNET_LAYERS = """
conv1_1 conv1_1_bn relu1_1 conv1_2 conv1_2_bn relu1_2 pool1 conv2_1 conv2_1_bn relu2_1
conv2_2 conv2_2_bn relu2_2 pool2 conv3_1 conv3_1_bn relu3_1 conv3_2 conv3_2_bn relu3_2
conv3_3 conv3_3_bn relu3_3 pool3 conv4_1 conv4_1_bn relu4_1 conv4_2 conv4_2_bn relu4_2
conv4_3 conv4_3_bn relu4_3 pool4 conv5_1 conv5_1_bn relu5_1 conv5_2 conv5_2_bn relu5_2
conv5_3 conv5_3_bn relu5_3 pool5 upsample5 conv5_3_D conv5_3_D_bn relu5_3_D conv5_2_D
conv5_2_D_bn relu5_2_D conv5_1_D conv5_1_D_bn relu5_1_D upsample4 conv4_3_D conv4_3_D_bn
relu4_3_D conv4_2_D conv4_2_D_bn relu4_2_D conv4_1_D conv4_1_D_bn relu4_1_D upsample3
conv3_3_D conv3_3_D_bn relu3_3_D conv3_2_D conv3_2_D_bn relu3_2_D conv3_1_D conv3_1_D_bn
relu3_1_D upsample2 conv2_2_D conv2_2_D_bn relu2_2_D conv2_1_D conv2_1_D_bn relu2_1_D
upsample1 conv1_2_D conv1_2_D_bn relu1_2_D conv1_1_D
""".split()
BAYESIAN_SEGNET_LAYERS = """
conv1_1 conv1_1_bn relu1_1 conv1_2 conv1_2_bn relu1_2 pool1 conv2_1 conv2_1_bn relu2_1
conv2_2 conv2_2_bn relu2_2 pool2 conv3_1 conv3_1_bn relu3_1 conv3_2 conv3_2_bn relu3_2
conv3_3 conv3_3_bn relu3_3 pool3 encdrop3 conv4_1 conv4_1_bn relu4_1 conv4_2 conv4_2_bn
relu4_2 conv4_3 conv4_3_bn relu4_3 pool4 encdrop4 conv5_1 conv5_1_bn relu5_1 conv5_2
conv5_2_bn relu5_2 conv5_3 conv5_3_bn relu5_3 pool5 encdrop5 upsample5 conv5_3_D
conv5_3_D_bn relu5_3_D conv5_2_D conv5_2_D_bn relu5_2_D conv5_1_D conv5_1_D_bn relu5_1_D
decdrop5 upsample4 conv4_3_D conv4_3_D_bn relu4_3_D conv4_2_D conv4_2_D_bn relu4_2_D
conv4_1_D conv4_1_D_bn relu4_1_D decdrop4 upsample3 conv3_3_D conv3_3_D_bn relu3_3_D
conv3_2_D conv3_2_D_bn relu3_2_D conv3_1_D conv3_1_D_bn relu3_1_D decdrop3 upsample2
conv2_2_D conv2_2_D_bn relu2_2_D conv2_1_D conv2_1_D_bn relu2_1_D upsample1 conv1_2_D
conv1_2_D_bn relu1_2_D conv1_1_D
""".split()
SEGNET_BASIC_LAYERS = """
norm conv1 conv1_bn relu1 pool1 conv2 conv2_bn relu2 pool2 conv3 conv3_bn relu3 pool3
conv4 conv4_bn relu4 pool4 upsample4 conv_decode4 conv_decode4_bn upsample3 conv_decode3
conv_decode3_bn upsample2 conv_decode2 conv_decode2_bn upsample1 conv_decode1
conv_decode1_bn conv_classifier
""".split()
BAYESIAN_SEGNET_BASIC_LAYERS = """
norm conv1 conv1_bn relu1 pool1 conv2 conv2_bn relu2 pool2 conv3 conv3_bn relu3 pool3
encdrop3 conv4 conv4_bn relu4 pool4 encdrop4 upsample4 conv_decode4 conv_decode4_bn
decdrop4 upsample3 conv_decode3 conv_decode3_bn decdrop3 upsample2 conv_decode2
conv_decode2_bn upsample1 conv_decode1 conv_decode1_bn dense_softmax_inner_prod
""".split()

#: Convolution -> (num_output, input channels, kernel_size) from segnet_train.prototxt (11
#: classes), input channels followed through the bottoms.
SEGNET_CONVS = {
    "conv1_1": (64, 3, 3), "conv1_2": (64, 64, 3), "conv2_1": (128, 64, 3),
    "conv2_2": (128, 128, 3), "conv3_1": (256, 128, 3), "conv3_2": (256, 256, 3),
    "conv3_3": (256, 256, 3), "conv4_1": (512, 256, 3), "conv4_2": (512, 512, 3),
    "conv4_3": (512, 512, 3), "conv5_1": (512, 512, 3), "conv5_2": (512, 512, 3),
    "conv5_3": (512, 512, 3), "conv5_3_D": (512, 512, 3), "conv5_2_D": (512, 512, 3),
    "conv5_1_D": (512, 512, 3), "conv4_3_D": (512, 512, 3), "conv4_2_D": (512, 512, 3),
    "conv4_1_D": (256, 512, 3), "conv3_3_D": (256, 256, 3), "conv3_2_D": (256, 256, 3),
    "conv3_1_D": (128, 256, 3), "conv2_2_D": (128, 128, 3), "conv2_1_D": (64, 128, 3),
    "conv1_2_D": (64, 64, 3), "conv1_1_D": (11, 64, 3),
}  # fmt: skip
SEGNET_BASIC_CONVS = {
    "conv1": (64, 3, 7), "conv2": (64, 64, 7), "conv3": (64, 64, 7), "conv4": (64, 64, 7),
    "conv_decode4": (64, 64, 7), "conv_decode3": (64, 64, 7), "conv_decode2": (64, 64, 7),
    "conv_decode1": (64, 64, 7), "conv_classifier": (11, 64, 1),
}  # fmt: skip
#: Parameters of the prototxts with 11 classes: every convolution's weights and biases plus two
#: C-vectors (scale, shift) per BN layer; the Bayesian nets add only parameter-free dropout.
SEGNET_PARAMETERS = 29_449_355
SEGNET_BASIC_PARAMETERS = 1_416_587

NETS = {
    "segnet_vgg16": SEGNET_LAYERS,
    "bayesian_segnet_vgg16": BAYESIAN_SEGNET_LAYERS,
    "segnet_basic": SEGNET_BASIC_LAYERS,
    "bayesian_segnet_basic": BAYESIAN_SEGNET_BASIC_LAYERS,
}


def _meta(name: str, num_classes: int = 11) -> nn.Module:
    """The net on the meta device: shapes flow, nothing is allocated (the VGG net is 29M)."""
    with torch.device("meta"):
        return build_model(name, num_classes, pretrained=False)


def _tops(model: nn.Module, size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Each release layer's output shape ("top" blob) for a 1 x 3 x size input on meta."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layers in (model.encoder, model.decoder):
        for name, layer in layers.items():

            def hook(_module, _inputs, output, name=name):
                output = output[0] if isinstance(output, tuple) else output
                shapes[name] = tuple(output.shape)

            layer.register_forward_hook(hook)
    model(torch.empty(1, 3, *size, device="meta"))
    return shapes


@pytest.mark.parametrize("name", list(NETS))
def test_layer_names_and_order_are_the_prototxts(name):
    assert _meta(name).release_layers() == NETS[name]


@pytest.mark.parametrize(
    "name,convs,total",
    [
        ("segnet_vgg16", SEGNET_CONVS, SEGNET_PARAMETERS),
        ("bayesian_segnet_vgg16", SEGNET_CONVS, SEGNET_PARAMETERS),
        ("segnet_basic", SEGNET_BASIC_CONVS, SEGNET_BASIC_PARAMETERS),
        ("bayesian_segnet_basic", {**SEGNET_BASIC_CONVS}, SEGNET_BASIC_PARAMETERS),
    ],
)
def test_weights_blob_shapes_and_parameter_count_match_the_release(name, convs, total):
    model = _meta(name)
    layers = {**model.encoder, **model.decoder}
    convs = dict(convs)
    if name == "bayesian_segnet_basic":  # the Bayesian prototxt renames the classifier
        convs["dense_softmax_inner_prod"] = convs.pop("conv_classifier")
    found = {key: layer for key, layer in layers.items() if isinstance(layer, nn.Conv2d)}
    assert list(found) == list(convs)
    for key, (out, cin, kernel) in convs.items():
        assert tuple(found[key].weight.shape) == (out, cin, kernel, kernel), key
        assert tuple(found[key].bias.shape) == (out,), key
        if f"{key}_bn" in layers:  # BN: scale and shift, one value per channel
            bn = layers[f"{key}_bn"]
            assert tuple(bn.weight.shape) == tuple(bn.bias.shape) == (out,)
    assert sum(p.numel() for p in model.parameters()) == total


def test_segnet_blob_sizes_at_360x480_are_the_releases():
    """Caffe pooling rounds up (45 -> 23); upsample5 / upsample4 state 23 x 30 and 45 x 60."""
    tops = _tops(_meta("segnet_vgg16"), (360, 480))
    pools = {f"pool{i}": tops[f"pool{i}"][2:] for i in range(1, 6)}
    assert pools == {
        "pool1": (180, 240),
        "pool2": (90, 120),
        "pool3": (45, 60),
        "pool4": (23, 30),
        "pool5": (12, 15),
    }
    assert tops["upsample5"] == (1, 512, 23, 30)
    assert tops["upsample4"] == (1, 512, 45, 60)
    assert tops["upsample3"] == (1, 256, 90, 120)
    assert tops["upsample2"] == (1, 128, 180, 240)
    assert tops["upsample1"] == (1, 64, 360, 480)
    assert tops["conv1_1_D"] == (1, 11, 360, 480)


def test_segnet_basic_blob_sizes_at_360x480_are_the_releases():
    """upsample4 has `pad_out_h: true`: 23 * 2 - 1 = 45 rows; the others double exactly."""
    tops = _tops(_meta("segnet_basic"), (360, 480))
    assert tops["norm"] == (1, 3, 360, 480)
    assert tops["pool4"] == (1, 64, 23, 30)
    assert tops["upsample4"] == (1, 64, 45, 60)
    assert tops["upsample3"] == (1, 64, 90, 120)
    assert tops["upsample1"] == (1, 64, 360, 480)
    assert tops["conv_classifier"] == (1, 11, 360, 480)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("size", [(360, 480), (37, 53), (1, 1), (250, 333)])
def test_output_has_the_input_size_for_any_size(name, size):
    assert _meta(name, 5)(torch.empty(2, 3, *size, device="meta")).shape == (2, 5, *size)


def test_segnet_basic_runs_on_an_odd_size_with_finite_logits():
    torch.manual_seed(0)
    model = build_model("segnet_basic", 3, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 29, 43) * 255)
    assert out.shape == (1, 3, 29, 43) and torch.isfinite(out).all()


def test_scatter_unpooling_equals_torch_max_unpool():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 13)
    pooled, indices = IndexedMaxPool()(x)
    assert pooled.shape == (2, 4, 5, 7)  # Caffe's rounding up
    values = torch.randn_like(pooled)
    ours = max_unpool(values, indices, x)
    reference = F.max_unpool2d(values, indices, 2, 2, output_size=x.shape[-2:])
    assert torch.equal(ours, reference)
    # Every value lands where its maximum was, and nowhere else is non-zero.
    assert torch.equal(ours.flatten(2).gather(2, indices.flatten(2)), values.flatten(2))
    assert int((ours != 0).sum()) == values.numel()


def test_the_decoder_uses_the_encoders_pooling_indices():
    """Permuting the indices pool1 recorded (within each 2x2 window) changes the output."""
    torch.manual_seed(0)
    model = build_model("segnet_basic", 3, pretrained=False).eval()
    x = torch.rand(1, 3, 32, 32) * 255
    pool1 = model.encoder["pool1"]
    with torch.no_grad():
        reference = model(x)

    def moved(_module, _inputs, output):
        pooled, indices = output
        width = 32
        row, col = indices // width, indices % width
        flipped = row * width + (col ^ 1)  # the other column of the same 2x2 window
        return pooled, flipped

    handle = pool1.register_forward_hook(moved)
    with torch.no_grad():
        changed = model(x)
    handle.remove()
    assert not torch.allclose(changed, reference)
    with torch.no_grad():
        assert torch.equal(model(x), reference)


@pytest.mark.parametrize(
    "name,after",
    [
        (
            "bayesian_segnet_vgg16",
            {
                "encdrop3": "pool3",
                "encdrop4": "pool4",
                "encdrop5": "pool5",
                "decdrop5": "relu5_1_D",
                "decdrop4": "relu4_1_D",
                "decdrop3": "relu3_1_D",
            },
        ),
        (
            "bayesian_segnet_basic",
            {
                "encdrop3": "pool3",
                "encdrop4": "pool4",
                "decdrop4": "conv_decode4_bn",
                "decdrop3": "conv_decode3_bn",
            },
        ),
    ],
)
def test_bayesian_dropout_is_placed_and_rated_as_released(name, after):
    model = build_model(name, 3, pretrained=False)
    layers = model.release_layers()
    drops = {path.split(".")[-1]: path for path in dropout_layers(model)}
    assert set(drops) == set(after)
    modules = dict(model.named_modules())
    for drop, previous in after.items():
        assert layers[layers.index(drop) - 1] == previous
        assert modules[drops[drop]].p == 0.5  # dropout_ratio: 0.5
    assert dropout_layers(build_model(name.replace("bayesian_", ""), 3, pretrained=False)) == []


def test_bayesian_segnet_basic_samples_differ_in_train_mode_and_agree_in_eval():
    torch.manual_seed(0)
    model = build_model("bayesian_segnet_basic", 3, pretrained=False)
    x = torch.rand(2, 3, 32, 32) * 255
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    for path in dropout_layers(model):  # Monte-Carlo dropout: only the dropout layers sample
        dict(model.named_modules())[path].train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_initialisation_is_the_releases_fillers():
    """BN scale 1, shift 0.001 (SegNet) or 0 (Bayesian); msra convolutions, zero biases."""
    torch.manual_seed(0)
    plain = build_model("segnet_basic", 3, pretrained=False)
    bayesian = build_model("bayesian_segnet_basic", 3, pretrained=False)
    assert torch.all(plain.encoder["conv2_bn"].weight == 1)
    assert torch.allclose(plain.encoder["conv2_bn"].bias, torch.full((64,), 0.001))
    assert torch.all(bayesian.encoder["conv2_bn"].bias == 0)
    conv = plain.encoder["conv2"]
    assert torch.all(conv.bias == 0)
    expected_std = (2.0 / (64 * 7 * 7)) ** 0.5  # msra: sqrt(2 / fan_in)
    assert abs(float(conv.weight.detach().std()) - expected_std) / expected_std < 0.05


def test_defaults_are_the_releases_input_and_pretrained_is_refused_in_one_line():
    model = build_model("segnet_vgg16", 3, pretrained=False, in_channels=3)
    assert model.normalization == "caffe_bgr_raw" and model.in_channels == 3
    with pytest.raises(ModelOptionError, match="no offline ImageNet weights") as error:
        build_model("segnet_vgg16", 3, pretrained=True)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelOptionError, match="dropout"):
        build_model("bayesian_segnet_basic", 3, pretrained=False, dropout=1.5)


def test_four_band_input_adapts_the_first_convolution():
    model = build_model("segnet_basic", 3, pretrained=False, in_channels=4)
    assert model.in_channels == 4 and model.normalization == "per_channel"
    assert model.encoder["conv1"].weight.shape[1] == 4
    assert model(torch.rand(1, 4, 16, 16)).shape == (1, 3, 16, 16)


def test_release_class_weights_are_eleven_camvid_weights():
    assert len(SEGNET_CAMVID_CLASS_WEIGHTS) == 11
    assert SEGNET_CAMVID_CLASS_WEIGHTS[0] == 0.2595 and SEGNET_CAMVID_CLASS_WEIGHTS[-1] == 7.3614


@pytest.mark.parametrize("name", ["segnet_basic", "bayesian_segnet_vgg16"])
def test_onnx_export_matches_pytorch_at_odd_sizes(name, tmp_path):
    """Unpooling is a scatter (ScatterElements): exported with dynamic sizes, checked by
    onnxruntime against PyTorch at several sizes (export_onnx raises when they disagree)."""
    require_module("onnxruntime", "pip install -e '.[export]'")
    import onnx

    from fcnseg.export import export_onnx

    torch.manual_seed(0)
    model = build_model(name, 3, pretrained=False).eval()
    path = export_onnx(
        model, tmp_path / "net.onnx", example_size=(32, 32), check_sizes=[(32, 32), (29, 35)]
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "ScatterElements" in ops and "MaxPool" in ops
    assert "Dropout" not in ops  # eval mode: Monte-Carlo sampling is the caller's choice


def test_onnx_graph_agrees_where_pooling_windows_tie(tmp_path):
    """A net whose ReLUs leave whole windows at zero: onnxruntime's MaxPool must break those ties
    as PyTorch does (the first maximum), or decoder values would land on other pixels."""
    require_module("onnxruntime", "pip install -e '.[export]'")
    from fcnseg.export import export_onnx

    torch.manual_seed(0)
    model = build_model("segnet_basic", 3, pretrained=False).eval()
    with torch.no_grad():
        for layer in model.encoder.values():
            if isinstance(layer, nn.BatchNorm2d):
                layer.bias.fill_(-0.5)  # most activations below zero: ties everywhere
    export_onnx(model, tmp_path / "net.onnx", example_size=(32, 32), check_sizes=[(97, 131)])


def test_export_check_of_segnet_is_argmax_agreement_only():
    """A near-tie in a pooling window moves a decoder value by a pixel when two runtimes round
    differently (this net in float32 and float64 differ by up to 0.1 on a trained model), so
    SegNet's exports are held to argmax agreement; other nets keep the logit tolerance."""
    from fcnseg.export import ExportError, verify_export

    torch.manual_seed(0)
    model = build_model("segnet_basic", 3, pretrained=False).eval()

    def one_pixel_moved(x):
        out = model(x).clone()
        out[..., 0, 0] += 0.5  # one pixel of 64 x 64: 0.02 % of the argmax
        return out

    assert verify_export(model, one_pixel_moved, sizes=[(64, 64)]) == pytest.approx(0.5)
    strict = build_model("segnet_basic", 3, pretrained=False).eval()
    strict.load_state_dict(model.state_dict())
    strict.export_check = "logits"
    with pytest.raises(ExportError, match="max abs diff"):
        verify_export(strict, one_pixel_moved, sizes=[(64, 64)])


def test_monte_carlo_dropout_samples_bayesian_segnet_and_refuses_plain_segnet():
    """inference/mc_dropout.py switches on exactly the released dropout layers: the mean of N
    passes differs from the deterministic pass, BN keeps its statistics; plain SegNet has none."""
    from fcnseg.errors import UsageError
    from fcnseg.inference.mc_dropout import MCDropout, mc_dropout_probs, require_dropout

    torch.manual_seed(0)
    model = build_model("bayesian_segnet_basic", 3, pretrained=False).eval()
    x = torch.rand(1, 3, 24, 32) * 255

    def probs_of(batch):
        return model(batch).softmax(1)

    with torch.no_grad():
        deterministic = probs_of(x)
    running = model.encoder["conv1_bn"].running_mean.clone()
    mean = mc_dropout_probs(model, x, probs_of, MCDropout(samples=4, seed=1))
    assert mean.shape == deterministic.shape and not torch.allclose(mean, deterministic)
    assert torch.equal(model.encoder["conv1_bn"].running_mean, running)
    assert torch.equal(mean, mc_dropout_probs(model, x, probs_of, MCDropout(samples=4, seed=1)))
    require_dropout(model, "bayesian_segnet_basic")
    with pytest.raises(UsageError):
        require_dropout(build_model("segnet_basic", 3, pretrained=False), "segnet_basic")
