"""DeepLab's VGG16 nets as the authors released them: DeepLab-LargeFOV (v1) and DeepLab-ASPP (v2).

Why a module of its own: DeepLab keeps VGG16's weights but not FCN's geometry. Its front end
pools 3x3 (pad 1) instead of 2x2, sets pool4 and pool5 to stride 1 and dilates what follows
("atrous" or "hole" convolution: conv5 by 2, fc6 by 12), so the score map has stride 8 and no
crop is needed: score pixel i is centred on input pixel 8 i. The scores are interpolated
bilinearly between those centres to the input size, which is the release's INTERP layer
(`zoom_factor: 8`, n scores -> (n - 1) 8 + 1 pixels) extended by replication past the last
centre. Nothing here is shared with `paper_fcn.PaperFCN` but the `pretrained` policy.

Layer names are the prototxts' (constants.py names the files): conv1_1 ... pool5, pool5a, fc6,
relu6, drop6, fc7, relu7, drop7, fc8_voc12 for LargeFOV; fc6_1 ... fc8_voc12_4 for the four
ASPP branches (rates 6, 12, 18, 24), whose sum the release calls fc8_voc12. So the authors'
caffemodels load by name (`fcnseg import-caffe --release deeplab-largefov`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from fcnseg.constants import (
    DEEPLAB_ASPP_RATES,
    DEEPLAB_CONV5_DILATION,
    DEEPLAB_DROPOUT,
    DEEPLAB_EXPERIMENT,
    DEEPLAB_FC6_KERNEL,
    DEEPLAB_FC_CHANNELS,
    DEEPLAB_LARGEFOV_RATE,
    DEEPLAB_OUTPUT_STRIDE,
    DEEPLAB_POOL_STRIDE1,
    DEEPLAB_POOL_STRIDE2,
    DEEPLAB_ZOOM_FACTOR,
)
from fcnseg.errors import ModelOptionError
from fcnseg.models.backbones.base import stride_key
from fcnseg.models.backbones.vgg import (
    IMAGE_CHANNELS,
    VGG16_BLOCKS,
    SequentialEncoder,
    divide_width,
)
from fcnseg.models.heads.fcn import KnotUpsample
from fcnseg.models.paper_nets import (
    VGG16_WEIGHTS,
    finish_paper_net,
    torchvision_weights_cached,
    with_in_channels,
)
from fcnseg.models.protocol import NORMALIZATIONS
from fcnseg.models.registry import register_model

#: Standard deviation of the Gaussian filler of every fc8 (prototxt `weight_filler { type:
#: "gaussian" std: 0.01 }`, bias constant 0); fc6/fc7 come from the ImageNet net in the release
#: and start with the same filler here when no weights are given.
_SCORE_STD = 0.01
#: The feature map the fc layers read: pool5 (or pool5a), stride 8.
DEEPEST = stride_key(DEEPLAB_OUTPUT_STRIDE)


def deeplab_vgg16_encoder(*, pool5a: bool = True, width_divisor: int = 1) -> SequentialEncoder:
    """VGG16's convolutions with DeepLab's pooling and conv5 dilation, tap "s8" at the last pool.

    pool1-3 are 3x3 stride-2 max pools padded by 1 (Caffe's ceil mode); pool4 and pool5 are 3x3
    stride-1 padded by 1; conv5_* are padded and dilated by 2. `pool5a` adds LargeFOV's 3x3
    average pool (stride 1, pad 1; Caffe divides by 9 everywhere at stride 1, i.e. the padding
    is counted). The convolutions keep torchvision's VGG16 feature indices, so ImageNet weights
    load into them by the same table as the FCN encoder's.
    """
    layers: list[tuple[str, nn.Module]] = []
    torchvision_keys: dict[str, str] = {}
    in_channels = IMAGE_CHANNELS
    torchvision_index = 0
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        dilation = DEEPLAB_CONV5_DILATION if block == len(VGG16_BLOCKS) else 1
        for conv, width in enumerate(widths, start=1):
            name = f"conv{block}_{conv}"
            out_channels = divide_width(width, width_divisor, name)
            layers.append(
                (name, nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation))
            )
            layers.append((f"relu{block}_{conv}", nn.ReLU(inplace=True)))
            for param in ("weight", "bias"):
                torchvision_keys[f"features.{torchvision_index}.{param}"] = f"{name}.{param}"
            torchvision_index += 2
            in_channels = out_channels
        kernel, stride, pad = DEEPLAB_POOL_STRIDE2 if block <= 3 else DEEPLAB_POOL_STRIDE1
        layers.append((f"pool{block}", nn.MaxPool2d(kernel, stride, pad, ceil_mode=True)))
        torchvision_index += 1
    last = "pool5"
    if pool5a:
        kernel, stride, pad = DEEPLAB_POOL_STRIDE1
        layers.append(("pool5a", nn.AvgPool2d(kernel, stride, pad, count_include_pad=True)))
        last = "pool5a"
    encoder = SequentialEncoder(layers, {DEEPEST: last}, {DEEPEST: in_channels}, torchvision_keys)
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return encoder


class DeepLabVGG(nn.Module):
    """VGG16 DeepLab: encoder -> one fc6-fc7-fc8 branch per rate -> sum -> interpolation.

    Args:
        encoder: `deeplab_vgg16_encoder` (tap "s8").
        num_classes: labels scored by fc8.
        rates: the fc6 dilation of each branch: (12,) is LargeFOV (unsuffixed names fc6 ...
            fc8_voc12), (6, 12, 18, 24) is ASPP (fc6_1 ... fc8_voc12_4).
        fc_channels: width of fc6 and fc7 (1024 in the release).
        normalization: the input preset the weights expect ("caffe_bgr" for the release's).
    """

    def __init__(
        self,
        encoder: SequentialEncoder,
        num_classes: int,
        rates: Sequence[int],
        *,
        fc_channels: int = DEEPLAB_FC_CHANNELS,
        normalization: str = "imagenet",
    ) -> None:
        super().__init__()
        _check_options(num_classes, rates, normalization)
        self.num_classes = num_classes
        self.normalization = normalization
        self.in_channels: int = IMAGE_CHANNELS
        self.head_classes: dict[str, int] = {}
        #: No torchvision classifier layer fits fc6 (3x3, 1024) or fc7: only the convolutions
        #: take ImageNet weights (`pretrained`); the release's caffemodels bring all of them.
        self.fc_sources: dict[str, str] = {}
        self.rates = tuple(int(rate) for rate in rates)
        self.encoder = encoder
        suffixes = [""] if len(self.rates) == 1 else [f"_{i}" for i in range(1, len(rates) + 1)]
        #: Per branch, the Caffe names of its layers in prototxt order (fc6 ... fc8_voc12).
        self.branches: list[tuple[str, ...]] = []
        channels = encoder.channels[DEEPEST]
        for suffix, rate in zip(suffixes, self.rates, strict=True):
            fc6 = nn.Conv2d(channels, fc_channels, DEEPLAB_FC6_KERNEL, padding=rate, dilation=rate)
            fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
            fc8 = nn.Conv2d(fc_channels, num_classes, 1)
            for conv in (fc6, fc7, fc8):
                nn.init.normal_(conv.weight, 0.0, _SCORE_STD)
                nn.init.zeros_(conv.bias)
            layers = {
                f"fc6{suffix}": fc6,
                f"relu6{suffix}": nn.ReLU(inplace=True),
                f"drop6{suffix}": nn.Dropout(DEEPLAB_DROPOUT),
                f"fc7{suffix}": fc7,
                f"relu7{suffix}": nn.ReLU(inplace=True),
                f"drop7{suffix}": nn.Dropout(DEEPLAB_DROPOUT),
                f"fc8_{DEEPLAB_EXPERIMENT}{suffix}": fc8,
            }
            for name, layer in layers.items():
                self.add_module(name, layer)
            self.branches.append(tuple(layers))
        #: The release's fc8_interp: bilinear between score centres, no parameters.
        self.fc8_interp = KnotUpsample(num_classes, DEEPLAB_ZOOM_FACTOR, "bilinear")

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """Every branch's fc8: what fine-tuning on other classes re-initialises and what the
        release trains at 10x the base rate (`train.score_lr_mult`)."""
        return tuple(branch[-1] for branch in self.branches)

    def score_map(self, x: Tensor) -> Tensor:
        """The summed fc8 scores at stride 8 (the release's fc8_voc12 blob, before INTERP)."""
        y = self.encoder(x)[DEEPEST]
        total: Tensor | None = None
        for branch in self.branches:
            z = y
            for name in branch:
                z = getattr(self, name)(z)
            total = z if total is None else total + z
        assert total is not None  # rates is never empty (checked)
        return total

    def forward(self, x: Tensor) -> Tensor:
        return self.fc8_interp(self.score_map(x), x.shape[-2:])


def _check_options(num_classes: int, rates: Sequence[int], normalization: str) -> None:
    """One-line ModelOptionError for a class count, rate list or normalisation no net can have."""
    if num_classes < 1:
        raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
    if not rates or any(int(rate) != rate or rate < 1 for rate in rates):
        raise ModelOptionError(
            f"rates must be positive integers, e.g. [6, 12, 18, 24]; got {rates}"
        )
    if normalization not in NORMALIZATIONS:
        raise ModelOptionError(
            f"normalization={normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
        )


def deeplab_vgg16(
    num_classes: int,
    *,
    rates: Sequence[int] = (DEEPLAB_LARGEFOV_RATE,),
    pool5a: bool = True,
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "imagenet",
    width_divisor: int = 1,
    in_channels: int = 3,
) -> DeepLabVGG:
    """DeepLab on VGG16 as released: LargeFOV (`rates=(12,)`, pool5a) or ASPP (four rates).

    Args:
        rates: fc6 dilation per branch.
        pool5a: LargeFOV's 3x3 average pool after pool5 (the ASPP release has none).
        encoder_weights, pretrained: torchvision VGG16 weights for conv1_1 ... conv5_3, as for
            the paper FCNs (`fcn_vgg16`); fc6-fc8 start from the release's Gaussian filler.
        normalization: "caffe_bgr" for weights converted from the release's caffemodels.
        width_divisor: divide every width (tests: same geometry, little compute).
        in_channels: image channels; conv1_1 is adapted (models.weights states the rule).
    """
    encoder = deeplab_vgg16_encoder(pool5a=pool5a, width_divisor=width_divisor)
    fc_channels = divide_width(DEEPLAB_FC_CHANNELS, width_divisor, "fc6")
    model = DeepLabVGG(
        encoder, num_classes, rates, fc_channels=fc_channels, normalization=normalization
    )
    model = finish_paper_net(model, encoder_weights, pretrained, VGG16_WEIGHTS)
    return with_in_channels(model, in_channels)


_VGG_WEIGHTS = torchvision_weights_cached(VGG16_WEIGHTS)
register_model(
    "deeplab_largefov_vgg16",
    description="DeepLab-LargeFOV (v1): VGG16, atrous pool4/pool5, fc6 3x3 rate 12, stride 8",
    family="deeplab-paper",
    weights_available=_VGG_WEIGHTS,
    release_solver="deeplab-largefov",
    rates=(DEEPLAB_LARGEFOV_RATE,),
    pool5a=True,
)(deeplab_vgg16)
register_model(
    "deeplab_aspp_vgg16",
    description="DeepLab-ASPP (v2): VGG16, four fc6-fc8 branches at rates 6/12/18/24, summed",
    family="deeplab-paper",
    weights_available=_VGG_WEIGHTS,
    release_solver="deeplab-aspp-vgg16",
    rates=DEEPLAB_ASPP_RATES,
    pool5a=False,
)(deeplab_vgg16)
