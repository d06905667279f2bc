"""Tests of the paper's FCNs: geometry (crop offsets, output sizes), weights, stage-wise init."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torchvision
from model_helpers import copy_same_named
from torch import nn

from fcnseg.constants import (
    FCN_ATONCE_POOL4_SCALE,
    FCN_CONV1_PAD,
    FCN_KNOWN_CROP_OFFSETS,
)
from fcnseg.models import build_model, list_models, model_info
from fcnseg.models.backbones.vgg import VGG16_BLOCKS
from fcnseg.models.geometry import BilinearResize, CoordMap, layer_map, path_map
from fcnseg.models.paper_fcn import PaperFCN
from fcnseg.models.paper_nets import fcn32s_alexnet, fcn32s_googlenet, fcn_vgg16
from fcnseg.models.surgery import _torchvision_enum, transplant_linear

#: Narrowest VGG16 that keeps every width whole (64 / 64 = 1 channel): same geometry, ~no compute.
GEOMETRY_DIVISOR = 64
#: Narrow but realistic widths for numerical tests (8 channels in conv1_1).
SMALL_DIVISOR = 8
VGG_NAMES = [
    f"{variant}_vgg16{suffix}"
    for variant in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
    for suffix in ("", "_padded")
]
#: 50 sizes from 1 to 600, odd and even, used once as height and once (reversed) as width.
SIZES = list(range(1, 600, 12))


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter non-trivial values (score layers start at zero by design)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


# --- geometry ----------------------------------------------------------------------------------


def test_layer_maps_follow_caffe_coord_map() -> None:
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    assert layer_map(conv) == CoordMap(Fraction(2), Fraction(0))
    pool = nn.MaxPool2d(2, 2)
    assert layer_map(pool) == CoordMap(Fraction(2), Fraction(1, 2))
    deconv = nn.ConvTranspose2d(1, 1, 4, stride=2)
    # A deconvolution inverts the convolution with the same kernel/stride: composing gives id.
    assert layer_map(nn.Conv2d(1, 1, 4, stride=2)).then(layer_map(deconv)) == CoordMap()
    assert path_map([nn.ReLU(), nn.Dropout()]) == CoordMap()
    resize = layer_map(BilinearResize(4))
    assert resize.scale == Fraction(1, 4) and resize.offset == Fraction(-3, 8)


def test_unknown_layer_type_is_rejected() -> None:
    class Mystery(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="Mystery"):
        layer_map(Mystery())


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
def test_derived_crop_offsets_equal_caffe_release(variant: str) -> None:
    model = fcn_vgg16(2, variant=variant, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets == FCN_KNOWN_CROP_OFFSETS[variant]
    assert model.encoder.conv1_1.padding == (FCN_CONV1_PAD, FCN_CONV1_PAD)


def test_atonce_has_fcn8s_offsets() -> None:
    model = fcn_vgg16(2, variant="fcn8s", at_once=True, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets == FCN_KNOWN_CROP_OFFSETS["fcn8s"]


def test_offsets_follow_the_layers_not_a_table() -> None:
    """Changing conv1_1's padding must change the derived offsets (nothing is hard-coded)."""
    model = fcn_vgg16(2, variant="fcn32s", padded=True, width_divisor=GEOMETRY_DIVISOR)
    assert model.crop_offsets["final"] != FCN_KNOWN_CROP_OFFSETS["fcn32s"]["final"]


def test_alexnet_upsamples_with_odd_kernel_like_release() -> None:
    """A 64 kernel leaves AlexNet half a pixel off; the derivation picks 63, as the release."""
    model = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR)
    assert model.upscore.kernel_size == (63, 63)
    assert model.upscore.stride == (32, 32)


@pytest.mark.parametrize("name", VGG_NAMES)
@pytest.mark.parametrize("upsample", ["deconv_frozen", "bilinear"])
def test_vgg_output_size_equals_input_size(name: str, upsample: str) -> None:
    model = build_model(name, 3, width_divisor=GEOMETRY_DIVISOR, upsample=upsample).eval()
    with torch.no_grad():
        for size in SIZES:
            height, width = size, SIZES[-1] + 1 - size
            out = model(torch.randn(1, 3, height, width))
            assert out.shape == (1, 3, height, width), (name, upsample, height, width)


@pytest.mark.parametrize(
    "builder",
    [
        lambda: fcn32s_alexnet(3, width_divisor=16),
        lambda: fcn32s_googlenet(3, width_divisor=SMALL_DIVISOR),
    ],
    ids=["alexnet", "googlenet"],
)
def test_alexnet_googlenet_output_size(builder) -> None:
    model = builder().eval()
    with torch.no_grad():
        for size in SIZES:
            height, width = size, SIZES[-1] + 1 - size
            assert model(torch.randn(1, 3, height, width)).shape == (1, 3, height, width)


def test_inception_block_keeps_coordinates() -> None:
    """GoogLeNet's parallel branches must each map pixels onto themselves to be concatenated."""
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    assert layer_map(net.inception3a) == CoordMap()
    net.inception3a.branch2[1].conv.padding = (0, 0)
    with pytest.raises(ValueError, match="different geometry"):
        layer_map(net.inception3a)


def _linearised(model: nn.Module) -> nn.Module:
    """Same geometry, but linear with symmetric kernels: every layer's response to an input
    pixel is centred on the pixel the coordinate map says. Max pooling becomes average pooling,
    ReLU the identity, every conv a positive constant; upsampling stays bilinear."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MaxPool2d):
            replacement = nn.AvgPool2d(
                child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode
            )
            setattr(model, name, replacement)
        elif isinstance(child, nn.ReLU):
            setattr(model, name, nn.Identity())
        elif type(child) is nn.Conv2d:
            with torch.no_grad():
                child.weight.fill_(1.0 / child.weight[0].numel())
                if child.bias is not None:
                    child.bias.zero_()
        else:
            _linearised(child)
    return model


@pytest.mark.parametrize(
    "builder",
    [
        *(
            (lambda name=name: build_model(name, 1, width_divisor=GEOMETRY_DIVISOR))
            for name in VGG_NAMES
        ),
        lambda: fcn_vgg16(1, variant="fcn8s", upsample="bilinear", width_divisor=64),
        lambda: fcn32s_alexnet(1, width_divisor=16),
        lambda: fcn32s_googlenet(1, width_divisor=SMALL_DIVISOR),
    ],
    ids=[*VGG_NAMES, "fcn8s_vgg16_bilinear", "alexnet", "googlenet"],
)
def test_output_pixel_is_centred_on_its_input_pixel(builder) -> None:
    """End-to-end check of every crop: the input-gradient of output pixel (y, x) of the
    linearised net is symmetric about (y, x). A crop off by one pixel moves its centroid."""
    model = _linearised(builder()).double().eval()
    size = 512
    image = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    rows = torch.arange(size, dtype=torch.float64)
    for y, x in [(256, 256), (251, 262)]:
        image.grad = None
        model(image)[0, 0, y, x].backward()
        weight = image.grad.sum(dim=(0, 1))
        assert weight.min() >= 0 and weight[0].abs().max() == 0  # support inside the image
        centre_y = float((weight.sum(1) * rows).sum() / weight.sum())
        centre_x = float((weight.sum(0) * rows).sum() / weight.sum())
        assert centre_y == pytest.approx(y, abs=1e-6) and centre_x == pytest.approx(x, abs=1e-6)


def test_bilinear_mode_rejects_half_pixel_geometry() -> None:
    with pytest.raises(ValueError, match="deconv_frozen"):
        fcn32s_alexnet(2, upsample="bilinear", width_divisor=SMALL_DIVISOR)


# --- upsampling options, at-once scaling -------------------------------------------------------


def test_upsample_modes() -> None:
    frozen = fcn_vgg16(4, variant="fcn8s", width_divisor=GEOMETRY_DIVISOR)
    assert not frozen.upscore8.weight.requires_grad
    assert frozen.upscore8.kernel_size == (16, 16) and frozen.upscore2.kernel_size == (4, 4)
    learnable = fcn_vgg16(
        4, variant="fcn8s", upsample="deconv_learnable", width_divisor=GEOMETRY_DIVISOR
    )
    assert learnable.upscore8.weight.requires_grad
    interp = fcn_vgg16(4, variant="fcn8s", upsample="bilinear", width_divisor=GEOMETRY_DIVISOR)
    assert isinstance(interp.upscore8, BilinearResize)
    with pytest.raises(ValueError, match="upsample"):
        fcn_vgg16(4, upsample="nearest", width_divisor=GEOMETRY_DIVISOR)


def test_atonce_scales_pool4_before_scoring() -> None:
    regular = _randomise(fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR))
    at_once = fcn_vgg16(3, variant="fcn16s", at_once=True, width_divisor=SMALL_DIVISOR).eval()
    copy_same_named(at_once, regular)
    with torch.no_grad():
        nn.init.zeros_(regular.score_pool4.bias)
        nn.init.zeros_(at_once.score_pool4.bias)
        x = torch.randn(1, 3, 40, 40)
        scores_regular = regular.forward_scores(x)
        scores_at_once = at_once.forward_scores(x)
    offset = regular.crop_offsets["pool4"]
    up = regular.upscore2(scores_regular["score_fr"])
    skip_regular = scores_regular["fuse_pool4"] - up
    skip_at_once = scores_at_once["fuse_pool4"] - up
    assert offset >= 0 and skip_regular.abs().max() > 0
    torch.testing.assert_close(skip_at_once, skip_regular * FCN_ATONCE_POOL4_SCALE)


# --- stage-wise initialisation ------------------------------------------------------------------


def test_fcn16s_from_fcn32s_adds_exactly_nothing() -> None:
    """Paper 4.2: the 16s net starts from 32s with a zero pool4 score, so before training it
    computes the 32s scores; only its (bilinear) upsampling path differs."""
    coarse = _randomise(fcn_vgg16(3, variant="fcn32s", width_divisor=SMALL_DIVISOR))
    fine = fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR).eval()
    copied = copy_same_named(fine, coarse)
    shared = [k for k in coarse.state_dict() if not k.startswith("upscore")]
    assert set(shared) <= set(copied)
    x = torch.randn(1, 3, 45, 38)
    with torch.no_grad():
        coarse_scores = coarse.forward_scores(x)
        fine_scores = fine.forward_scores(x)
        torch.testing.assert_close(fine_scores["score_fr"], coarse_scores["score_fr"])
        up = fine.upscore2(coarse_scores["score_fr"])
        torch.testing.assert_close(
            fine_scores["fuse_pool4"],
            up[..., : fine_scores["fuse_pool4"].shape[-2], : fine_scores["fuse_pool4"].shape[-1]],
        )
        final = fine.upscore16(up)
        start = fine.crop_offsets["final"]
        torch.testing.assert_close(
            fine_scores["out"], final[..., start : start + 45, start : start + 38]
        )


def test_fcn8s_from_fcn16s_keeps_the_16s_fusion() -> None:
    coarse = _randomise(fcn_vgg16(3, variant="fcn16s", width_divisor=SMALL_DIVISOR))
    fine = fcn_vgg16(3, variant="fcn8s", width_divisor=SMALL_DIVISOR).eval()
    copied = copy_same_named(fine, coarse)
    assert "score_pool4.weight" in copied and "score_pool3.weight" not in copied
    x = torch.randn(1, 3, 52, 61)
    with torch.no_grad():
        coarse_scores = coarse.forward_scores(x)
        fine_scores = fine.forward_scores(x)
    assert coarse_scores["fuse_pool4"].abs().max() > 0
    torch.testing.assert_close(fine_scores["fuse_pool4"], coarse_scores["fuse_pool4"])
    up = fine.upscore_pool4(fine_scores["fuse_pool4"])
    fused = fine_scores["fuse_pool3"]
    torch.testing.assert_close(fused, up[..., : fused.shape[-2], : fused.shape[-1]])


# --- weights ------------------------------------------------------------------------------------


def _torchvision_format_vgg16_state(divisor: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict laid out like torchvision's VGG16 (features.N, classifier.0/3), narrowed."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    index, in_channels = 0, 3
    for widths in VGG16_BLOCKS:
        for width in widths:
            out_channels = width // divisor
            state[f"features.{index}.weight"] = torch.randn(
                out_channels, in_channels, 3, 3, generator=generator
            )
            state[f"features.{index}.bias"] = torch.randn(out_channels, generator=generator)
            index += 2  # conv, relu
            in_channels = out_channels
        index += 1  # pool
    fc = 4096 // divisor
    state["classifier.0.weight"] = torch.randn(fc, in_channels * 49, generator=generator)
    state["classifier.0.bias"] = torch.randn(fc, generator=generator)
    state["classifier.3.weight"] = torch.randn(fc, fc, generator=generator)
    state["classifier.3.bias"] = torch.randn(fc, generator=generator)
    state["classifier.6.weight"] = torch.randn(1000, fc, generator=generator)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_weights_from_file(tmp_path, suffix: str) -> None:
    state = _torchvision_format_vgg16_state(SMALL_DIVISOR)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = build_model("fcn8s_vgg16", 21, encoder_weights=str(path), width_divisor=SMALL_DIVISOR)
    torch.testing.assert_close(model.encoder.conv1_1.weight, state["features.0.weight"])
    torch.testing.assert_close(model.encoder.conv5_3.bias, state["features.28.bias"])
    torch.testing.assert_close(model.fc6.weight.flatten(1), state["classifier.0.weight"])
    torch.testing.assert_close(model.fc7.weight.flatten(1), state["classifier.3.weight"])
    assert model.normalization == "imagenet"


def test_encoder_weights_from_weights_enum_like_object() -> None:
    """torchvision enums are used through `get_state_dict`; a stand-in avoids the download."""

    class FakeWeights:
        def get_state_dict(self, progress: bool = True) -> dict[str, torch.Tensor]:
            return _torchvision_format_vgg16_state(SMALL_DIVISOR, seed=5)

    model = fcn_vgg16(2, encoder_weights=FakeWeights(), width_divisor=SMALL_DIVISOR)
    expected = _torchvision_format_vgg16_state(SMALL_DIVISOR, seed=5)["features.2.weight"]
    torch.testing.assert_close(model.encoder.conv1_2.weight, expected)
    assert _torchvision_enum("VGG16_Weights.IMAGENET1K_V1") is not None
    assert _torchvision_enum("weights/vgg16.pth") is None


def test_encoder_weights_errors(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fcn_vgg16(2, encoder_weights=missing, width_divisor=GEOMETRY_DIVISOR)
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="resnet.pth.*missing"):
        fcn_vgg16(2, encoder_weights=wrong, width_divisor=GEOMETRY_DIVISOR)
    narrow = _torchvision_format_vgg16_state(SMALL_DIVISOR)
    with pytest.raises(ValueError, match="shape"):
        fcn_vgg16(2, encoder_weights=narrow, width_divisor=GEOMETRY_DIVISOR)


@pytest.fixture(scope="module")
def torchvision_vgg16() -> nn.Module:
    torch.manual_seed(3)
    model = torchvision.models.vgg16(weights=None).eval()
    with torch.no_grad():
        for param in model.classifier.parameters():
            param.normal_(0.0, 0.02)  # randomise the biases too (torchvision zeroes them)
    return model


@pytest.mark.slow
def test_transplanted_fc_layers_equal_classifier(torchvision_vgg16: nn.Module) -> None:
    fc6_linear, fc7_linear = torchvision_vgg16.classifier[0], torchvision_vgg16.classifier[3]
    fc6 = nn.Conv2d(512, 4096, 7)
    fc7 = nn.Conv2d(4096, 4096, 1)
    transplant_linear(fc6, fc6_linear.weight, fc6_linear.bias)
    transplant_linear(fc7, fc7_linear.weight, fc7_linear.bias)
    x = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        hidden = fc6_linear(x.flatten(1))
        torch.testing.assert_close(fc6(x).flatten(1), hidden, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            fc7(hidden[..., None, None]).flatten(1), fc7_linear(hidden), atol=1e-4, rtol=1e-4
        )


@pytest.mark.slow
def test_full_width_fcn8s_loads_torchvision_vgg16(torchvision_vgg16: nn.Module) -> None:
    """Real widths: torchvision's VGG16 state dict loads as is, and the sizes still match."""
    model = fcn_vgg16(21, variant="fcn8s", encoder_weights=torchvision_vgg16.state_dict()).eval()
    expected = sum(p.numel() for p in torchvision_vgg16.features.parameters())
    expected += sum(p.numel() for i in (0, 3) for p in torchvision_vgg16.classifier[i].parameters())
    ours = sum(p.numel() for p in model.encoder.parameters())
    ours += sum(p.numel() for p in (*model.fc6.parameters(), *model.fc7.parameters()))
    assert ours == expected
    torch.testing.assert_close(model.encoder.conv3_2.weight, torchvision_vgg16.features[12].weight)
    torch.testing.assert_close(model.fc6.weight.flatten(1), torchvision_vgg16.classifier[0].weight)
    with torch.no_grad():
        for height, width in [(1, 1), (33, 20)]:
            assert model(torch.randn(1, 3, height, width)).shape == (1, 21, height, width)


def test_alexnet_and_googlenet_load_torchvision_layout() -> None:
    alexnet = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR)
    state = {
        key: torch.randn(alexnet.encoder.state_dict()[ours].shape)
        for key, ours in alexnet.encoder.torchvision_keys.items()
    }
    assert "features.10.weight" in state  # torchvision's conv5
    state["classifier.1.weight"] = torch.randn(alexnet.fc6.weight.shape).flatten(1)
    state["classifier.1.bias"] = torch.randn(alexnet.fc6.bias.shape)
    state["classifier.4.weight"] = torch.randn(alexnet.fc7.weight.shape).flatten(1)
    state["classifier.4.bias"] = torch.randn(alexnet.fc7.bias.shape)
    loaded = fcn32s_alexnet(2, width_divisor=SMALL_DIVISOR, encoder_weights=state)
    torch.testing.assert_close(loaded.encoder.conv5.weight, state["features.10.weight"])
    torch.testing.assert_close(loaded.fc6.weight.flatten(1), state["classifier.1.weight"])
    googlenet = fcn32s_googlenet(2, width_divisor=SMALL_DIVISOR)
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    assert set(googlenet.encoder.torchvision_keys) <= set(reference.state_dict())
    assert googlenet.normalization == "tf_lite"


# --- registry --------------------------------------------------------------------


def test_registry_and_builder_options() -> None:
    names = set(list_models())
    assert {*VGG_NAMES, "fcn32s_alexnet", "fcn32s_googlenet"} <= names
    assert isinstance(model_info("fcn8s_vgg16").weights_available(), bool)
    model = build_model(
        "fcn16s_vgg16", 5, normalization="caffe_bgr", width_divisor=GEOMETRY_DIVISOR
    )
    assert isinstance(model, PaperFCN) and model.normalization == "caffe_bgr"
    with pytest.raises(ValueError, match="normalization"):
        build_model("fcn16s_vgg16", 5, normalization="bgr", width_divisor=GEOMETRY_DIVISOR)
    with pytest.raises(ValueError, match="width_divisor"):
        build_model("fcn16s_vgg16", 5, width_divisor=3)


def test_pretrained_without_weights_is_a_one_line_error_or_auto_fallback() -> None:
    from fcnseg.models import build_model

    with pytest.raises(ValueError, match="encoder_weights=PATH") as info:
        build_model("fcn32s_vgg16", num_classes=3, pretrained=True, width_divisor=16)
    assert "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="random weights"):
        model = build_model("fcn32s_vgg16", num_classes=3, pretrained="auto", width_divisor=16)
    assert model(torch.zeros(1, 3, 40, 40)).shape == (1, 3, 40, 40)
