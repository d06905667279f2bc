"""The paper's classifier encoders (VGG16, AlexNet, GoogLeNet) as chains of named layers.

The FCN paper converts these three ImageNet classifiers (Table 1). Each encoder here is a plain
ordered chain of layers, which is what the crop-offset derivation needs: the path from the image
to any tap is a prefix of the chain, so `fcnseg.models.geometry` can read it off the modules.

VGG16 and CaffeNet layers carry the Caffe names of the authors' release (conv1_1 ... pool5;
conv1, norm1, ... pool5) so that converted Caffe weights map by name; the torchvision AlexNet and
GoogLeNet variants reuse torchvision's definitions and names.
Paper variants pad the first convolution by `FCN_CONV1_PAD` (100) and pool in Caffe's ceil mode.
"""

from __future__ import annotations

from collections.abc import Iterable

import torchvision
from torch import Tensor, nn

from fcnseg.constants import (
    CAFFENET_CONVS,
    CAFFENET_LRN,
    CAFFENET_POOL_KERNEL,
    CAFFENET_POOL_STRIDE,
    FCN_CONV1_PAD,
)
from fcnseg.errors import ModelOptionError
from fcnseg.models.backbones.base import Backbone, stride_key
from fcnseg.models.geometry import CoordMap, path_map

#: Image channels of the RGB input; never divided by `width_divisor`.
IMAGE_CHANNELS = 3

#: VGG16 ("configuration D" of Simonyan & Zisserman 2015): output widths of the conv layers of
#: each of the five blocks; every block ends with a 2x2 stride-2 max pooling.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
#: VGG16 3x3 convolutions are padded by 1 ("same"); pools are 2x2 with stride 2.
_VGG_KERNEL, _VGG_PAD, _VGG_POOL = 3, 1, 2


class SequentialEncoder(Backbone):
    """An ordered chain of named layers with named taps (feature maps other layers read).

    Args:
        layers: (name, module) pairs in execution order.
        taps: stride key ("s8", ...) -> name of the layer whose output is that feature map.
        channels: stride key -> channel count of the tap.
        torchvision_keys: torchvision state-dict key -> key in this encoder's state dict, so that
            ImageNet weights of the torchvision classifier load by a fixed table, not by guessing.
    """

    def __init__(
        self,
        layers: Iterable[tuple[str, nn.Module]],
        taps: dict[str, str],
        channels: dict[str, int],
        torchvision_keys: dict[str, str],
    ) -> None:
        super().__init__()
        for name, layer in layers:
            self.add_module(name, layer)
        self.taps = dict(taps)
        names = [name for name, _ in self.named_children()]
        missing = [layer for layer in self.taps.values() if layer not in names]
        if missing:
            raise ValueError(f"encoder taps name unknown layers {missing}")
        self.channels = dict(channels)
        self.torchvision_keys = dict(torchvision_keys)
        self.normalization = "imagenet"
        last_tap = max(names.index(layer) for layer in self.taps.values())
        self._run = names[: last_tap + 1]
        self.strides = {key: int(self.tap_map(key).stride) for key in self.taps}

    def path_to(self, key: str) -> list[nn.Module]:
        """Layers from the image to the tap `key`, in order (for the coordinate maps)."""
        layer = self.taps[key]
        names = [name for name, _ in self.named_children()]
        return [getattr(self, name) for name in names[: names.index(layer) + 1]]

    def tap_map(self, key: str) -> CoordMap:
        """Coordinate map of the tap `key`: image coordinates of its pixels."""
        return path_map(self.path_to(key))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        by_layer = {layer: key for key, layer in self.taps.items()}
        features: dict[str, Tensor] = {}
        for name in self._run:
            x = getattr(self, name)(x)
            if name in by_layer:
                features[by_layer[name]] = x
        return features


def divide_width(width: int, divisor: int, what: str) -> int:
    if width % divisor:
        raise ModelOptionError(
            f"width_divisor={divisor} does not divide the {width} channels of {what}; "
            "use a divisor of every layer width (1, 2, 4 or 8)"
        )
    return width // divisor


def vgg16_encoder(*, padded: bool = False, width_divisor: int = 1) -> SequentialEncoder:
    """VGG16's conv1_1 ... pool5, Caffe names, ceil-mode pooling, taps s4/s8/s16/s32.

    `padded=False` is the paper net: conv1_1 padded by 100 so the 7x7 fc6 sees every input.
    `width_divisor` narrows every layer (geometry unchanged) so that tests can push large inputs
    through the exact geometry cheaply.
    """
    layers: list[tuple[str, nn.Module]] = []
    taps: dict[str, str] = {}
    channels: dict[str, int] = {}
    torchvision_keys: dict[str, str] = {}
    in_channels = IMAGE_CHANNELS
    torchvision_index = 0  # position in torchvision's `features` Sequential
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for conv, width in enumerate(widths, start=1):
            out_channels = divide_width(width, width_divisor, f"conv{block}_{conv}")
            first = block == 1 and conv == 1
            pad = _VGG_PAD if padded or not first else FCN_CONV1_PAD
            name = f"conv{block}_{conv}"
            layers.append((name, nn.Conv2d(in_channels, out_channels, _VGG_KERNEL, padding=pad)))
            layers.append((f"relu{block}_{conv}", nn.ReLU(inplace=True)))
            for param in ("weight", "bias"):
                torchvision_keys[f"features.{torchvision_index}.{param}"] = f"{name}.{param}"
            torchvision_index += 2
            in_channels = out_channels
        layers.append((f"pool{block}", nn.MaxPool2d(_VGG_POOL, _VGG_POOL, ceil_mode=True)))
        torchvision_index += 1
        if block >= 2:
            key = stride_key(_VGG_POOL**block)
            taps[key] = f"pool{block}"
            channels[key] = in_channels
    encoder = SequentialEncoder(layers, taps, channels, torchvision_keys)
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            # torchvision's VGG initialisation, so untrained nets train as torchvision's do.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return encoder


def narrow_(module: nn.Module, divisor: int) -> nn.Module:
    """Divide the width of every conv and batch norm in `module` by `divisor`, in place.

    Geometry (kernel, stride, padding, dilation) is kept, so coordinate maps and output sizes
    are those of the full-width net. The image's 3 input channels are kept.
    """
    if divisor == 1:
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            in_channels = child.in_channels
            if in_channels != IMAGE_CHANNELS:
                in_channels = divide_width(in_channels, divisor, name)
            replacement: nn.Module = nn.Conv2d(
                in_channels,
                divide_width(child.out_channels, divisor, name),
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                bias=child.bias is not None,
            )
            setattr(module, name, replacement)
        elif isinstance(child, nn.BatchNorm2d):
            setattr(
                module,
                name,
                nn.BatchNorm2d(divide_width(child.num_features, divisor, name), eps=child.eps),
            )
        else:
            narrow_(child, divisor)
    return module


def _with_first_conv_pad(conv: nn.Conv2d, padded: bool) -> nn.Conv2d:
    """The paper pads the first convolution by 100; the padded variant keeps the original."""
    if not padded:
        conv.padding = (FCN_CONV1_PAD, FCN_CONV1_PAD)
    return conv


def alexnet_encoder(
    *, padded: bool = False, width_divisor: int = 1
) -> tuple[SequentialEncoder, int]:
    """torchvision's AlexNet features (conv1 ... pool5) with Caffe ceil-mode pooling, tap s32.

    Also returns the side of the feature grid torchvision's classifier reads (6), which is the
    kernel of fc6 when the classifier becomes convolutional.
    """
    net = torchvision.models.alexnet(weights=None)
    features = net.features
    layers: list[tuple[str, nn.Module]] = []
    torchvision_keys: dict[str, str] = {}
    counts = {"conv": 0, "relu": 0, "pool": 0}
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            counts["conv"] += 1
            name = f"conv{counts['conv']}"
            if counts["conv"] == 1:
                layer = _with_first_conv_pad(layer, padded)
            for param in ("weight", "bias"):
                torchvision_keys[f"features.{index}.{param}"] = f"{name}.{param}"
        elif isinstance(layer, nn.ReLU):
            counts["relu"] += 1
            name = f"relu{counts['conv']}"
        elif isinstance(layer, nn.MaxPool2d):
            counts["pool"] += 1
            layer.ceil_mode = True  # Caffe pools in ceil mode
            name = f"pool{counts['conv']}"
        else:  # pragma: no cover - torchvision's AlexNet has no other layer types
            raise ValueError(f"unexpected AlexNet layer {layer}")
        layers.append((name, layer))
    last_pool = layers[-1][0]
    channels = [layer.out_channels for _, layer in layers if isinstance(layer, nn.Conv2d)]
    encoder = SequentialEncoder(
        layers,
        taps={stride_key(32): last_pool},
        channels={stride_key(32): divide_width(channels[-1], width_divisor, "conv5")},
        torchvision_keys=torchvision_keys,
    )
    grid = net.avgpool.output_size
    return narrow_(encoder, width_divisor), int(grid[0] if isinstance(grid, tuple) else grid)


def caffenet_encoder(*, width_divisor: int = 1) -> SequentialEncoder:
    """The release's AlexNet (CaffeNet layout, voc-fcn-alexnet/net.py): conv1 ... pool5, tap s32.

    Why not torchvision's AlexNet: the release's caffemodel has 96/256/384/384/256 channels,
    local response normalisation after pool1 and pool2, and two filter groups in conv2, conv4
    and conv5 (Krizhevsky's two-GPU split), none of which torchvision's one-tower variant has,
    so its weights cannot load there. Layer names are the release's (conv1, relu1, pool1, norm1,
    ...), pools are Caffe's ceil mode, conv1 is padded by 100 as in every release net.
    `width_divisor` narrows every layer for tests (it must keep the grouped widths even).
    """
    layers: list[tuple[str, nn.Module]] = []
    in_channels = IMAGE_CHANNELS
    size, alpha, beta, k = CAFFENET_LRN
    for index, (width, kernel, stride, pad, groups) in enumerate(CAFFENET_CONVS, start=1):
        out_channels = divide_width(width, width_divisor, f"conv{index}")
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, pad, groups=groups)
        layers += [(f"conv{index}", conv), (f"relu{index}", nn.ReLU(inplace=True))]
        if index in (1, 2, 5):
            pool = nn.MaxPool2d(CAFFENET_POOL_KERNEL, CAFFENET_POOL_STRIDE, ceil_mode=True)
            layers.append((f"pool{index}", pool))
        if index in (1, 2):
            layers.append((f"norm{index}", nn.LocalResponseNorm(size, alpha, beta, k)))
        in_channels = out_channels
    return SequentialEncoder(
        layers,
        taps={stride_key(32): "pool5"},
        channels={stride_key(32): in_channels},
        torchvision_keys={},  # torchvision has no CaffeNet; its weights come from caffemodels
    )


#: GoogLeNet's layers up to the last inception block, in torchvision's names; the paper scores
#: the last inception output and discards the final average pooling and classifier.
GOOGLENET_LAYERS: tuple[str, ...] = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)


def googlenet_encoder(
    *, padded: bool = False, width_divisor: int = 1
) -> tuple[SequentialEncoder, float]:
    """torchvision's GoogLeNet up to inception5b (tap s32) and its classifier dropout rate."""
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    _with_first_conv_pad(net.conv1.conv, padded)
    layers = [(name, getattr(net, name)) for name in GOOGLENET_LAYERS]
    torchvision_keys = {
        key: key for key in net.state_dict() if key.split(".")[0] in set(GOOGLENET_LAYERS)
    }
    last = GOOGLENET_LAYERS[-1]
    width = sum(branch_out(getattr(net, last), f"branch{i}") for i in range(1, 5))
    encoder = SequentialEncoder(
        layers,
        taps={stride_key(32): last},
        channels={stride_key(32): divide_width(width, width_divisor, last)},
        torchvision_keys=torchvision_keys,
    )
    return narrow_(encoder, width_divisor), float(net.dropout.p)


def branch_out(block: nn.Module, branch: str) -> int:
    """Output channels of one inception branch (its last convolution's width)."""
    convs = [m for m in getattr(block, branch).modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
