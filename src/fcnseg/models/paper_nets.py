"""The paper's nets by name: VGG16 FCN-32s / 16s / 8s / 8s-at-once, AlexNet (torchvision's and the
release's CaffeNet) and GoogLeNet FCN-32s, each a `PaperFCN` on its encoder, and their registry
entries (`fcn8s_vgg16`, `fcn32s_caffenet`, ...).

Why apart from `paper_fcn`: that module is the net's geometry (skips, crops, upsampling); this one
is what differs per encoder (fc6 kernel, torchvision weights, default normalisation) and the
`pretrained` policy, so reading either needs none of the other.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, TypeVar

import torch
from torch import nn

from fcnseg.constants import (
    CAFFENET_FC6_KERNEL,
    FCN_DROPOUT,
    FCN_FC6_KERNEL,
    FCN_FC_CHANNELS,
)
from fcnseg.errors import ModelOptionError
from fcnseg.models.backbones.vgg import (
    alexnet_encoder,
    caffenet_encoder,
    googlenet_encoder,
    vgg16_encoder,
)
from fcnseg.models.paper_fcn import (
    ATONCE_SCALES,
    DEEPEST,
    PAPER_VARIANTS,
    VARIANT_SKIPS,
    PaperFCN,
)
from fcnseg.models.protocol import UpsampleMode, fcn_variant
from fcnseg.models.registry import register_model
from fcnseg.models.surgery import load_classifier_weights
from fcnseg.models.weights import adapt_input_channels


def _fc_head(
    in_channels: int, kernel: int, padded: bool, width_divisor: int
) -> tuple[list[tuple[str, nn.Module]], int]:
    """fc6 (kernel x kernel conv) and fc7 (1x1), each with ReLU and dropout, as in the release."""
    if padded and kernel % 2 == 0:
        raise ModelOptionError(f"a padded fc6 needs an odd kernel to stay centred, got {kernel}")
    width = FCN_FC_CHANNELS // width_divisor
    fc6 = nn.Conv2d(in_channels, width, kernel, padding=kernel // 2 if padded else 0)
    fc7 = nn.Conv2d(width, width, 1)
    for conv in (fc6, fc7):
        # torchvision initialises its classifier Linear layers this way (VGG._initialize_weights).
        nn.init.normal_(conv.weight, 0.0, 0.01)
        nn.init.zeros_(conv.bias)
    head = [
        ("fc6", fc6),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(FCN_DROPOUT)),
        ("fc7", fc7),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(FCN_DROPOUT)),
    ]
    return head, width


#: A paper net (PaperFCN, DeepLabVGG): anything with an `encoder` and `in_channels`.
_Net = TypeVar("_Net", bound=nn.Module)

#: torchvision ImageNet weights of each paper encoder, by enum name (used for `pretrained=True`
#: when cached locally, and for the `weights_available` flag of `fcnseg models`).
VGG16_WEIGHTS = "VGG16_Weights.IMAGENET1K_V1"
ALEXNET_WEIGHTS = "AlexNet_Weights.IMAGENET1K_V1"
GOOGLENET_WEIGHTS = "GoogLeNet_Weights.IMAGENET1K_V1"


def finish_paper_net(
    model: _Net, encoder_weights: Any, pretrained: bool | str, enum_name: str
) -> _Net:
    """Load the encoder weights the caller named, or resolve the `pretrained` policy.

    Shared by every net with a torchvision-named encoder (`encoder.torchvision_keys`) and
    `fc_sources`: the paper FCNs here and the DeepLab VGG16 nets (models/deeplab.py).

    `pretrained=True` with no `encoder_weights` uses torchvision's ImageNet checkpoint only if it
    is already in the local torch hub cache (nothing is downloaded implicitly); otherwise it is a
    one-line error saying how to pass a file. `"auto"` falls back to random weights with a
    warning instead; False never loads anything.
    """
    if encoder_weights is None and pretrained:
        if torchvision_weights_cached(enum_name)():
            encoder_weights = enum_name
        elif pretrained == "auto":
            warnings.warn(
                f"no {enum_name} weights on this machine; the encoder starts from random weights",
                stacklevel=3,
            )
        else:
            raise ModelOptionError(
                f"pretrained=True but no {enum_name} weights are on this machine; pass "
                "encoder_weights=PATH (e.g. model.options.encoder_weights=vgg16.pth), "
                "pretrained='auto' or pretrained=False"
            )
    if encoder_weights is not None:
        load_classifier_weights(model, encoder_weights)
    return model


def with_in_channels(model: _Net, in_channels: int) -> _Net:
    """`model` taking `in_channels` image channels: conv1 adapted after its weights are loaded
    (models.weights.adapted_first_layer_weight) and, for other than 3, "per_channel" inputs
    (an RGB preset has no numbers for the other bands)."""
    if in_channels != 3:
        adapt_input_channels(model.encoder, in_channels)
        model.normalization = "per_channel"
    model.in_channels = in_channels
    return model


def _check_variant(variant: str) -> tuple[str, ...]:
    return VARIANT_SKIPS[fcn_variant(variant, PAPER_VARIANTS)]


def fcn_vgg16(
    num_classes: int,
    *,
    variant: str = "fcn8s",
    at_once: bool = False,
    padded: bool = False,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "imagenet",
    width_divisor: int = 1,
    in_channels: int = 3,
) -> PaperFCN:
    """VGG16 FCN-32s/16s/8s (paper Table 2/3) as in the authors' Caffe release.

    Args:
        variant: "fcn32s", "fcn16s" or "fcn8s".
        at_once: scale pool4/pool3 by 0.01/0.0001 before scoring (FCN-8s trained in one stage).
        padded: the cheaper variant without the 100-pixel padding (fc6 padded by 3 instead).
        encoder_weights: torchvision VGG16 weights: a `VGG16_Weights` enum or its name (needs
            internet on first use), a `.pth` / `.safetensors` path, or a state dict.
        pretrained: without `encoder_weights`, True uses torchvision's checkpoint if it is in the
            local hub cache and is an error otherwise; "auto" falls back to random weights.
        normalization: input preset the weights expect: "imagenet" for torchvision weights,
            "caffe_bgr" for weights converted from the Caffe release.
        width_divisor: divide every width (tests: same geometry, little compute).
        in_channels: image channels; conv1 is adapted (models.weights states the rule).
    """
    skips = _check_variant(variant)
    encoder = vgg16_encoder(padded=padded, width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], FCN_FC6_KERNEL, padded, width_divisor)
    model = PaperFCN(
        encoder,
        head,
        width,
        num_classes,
        skips=skips,
        skip_scales=ATONCE_SCALES if at_once else None,
        upsample=upsample,
        fc_sources={"fc6": "classifier.0", "fc7": "classifier.3"},
        normalization=normalization,
    )
    return with_in_channels(
        finish_paper_net(model, encoder_weights, pretrained, VGG16_WEIGHTS), in_channels
    )


def fcn32s_alexnet(
    num_classes: int,
    *,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "imagenet",
    width_divisor: int = 1,
    in_channels: int = 3,
) -> PaperFCN:
    """AlexNet FCN-32s (paper Table 1) on torchvision's AlexNet, fc6 as a 6x6 convolution."""
    encoder, fc6_kernel = alexnet_encoder(width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], fc6_kernel, False, width_divisor)
    model = PaperFCN(
        encoder,
        head,
        width,
        num_classes,
        upsample=upsample,
        fc_sources={"fc6": "classifier.1", "fc7": "classifier.4"},
        normalization=normalization,
    )
    return with_in_channels(
        finish_paper_net(model, encoder_weights, pretrained, ALEXNET_WEIGHTS), in_channels
    )


def fcn32s_caffenet(
    num_classes: int,
    *,
    upsample: UpsampleMode = "deconv_frozen",
    pretrained: bool | str = False,
    normalization: str = "caffe_bgr",
    width_divisor: int = 1,
    in_channels: int = 3,
) -> PaperFCN:
    """AlexNet FCN-32s exactly as the release's voc-fcn-alexnet (CaffeNet layout, 6x6 fc6).

    The upsampling kernel is derived, not written down: `aligned_upsample` finds that the
    standard 64 leaves the output half a pixel off and takes 63, the release's kernel, with the
    release's crop offset (18). Weights come from the release's caffemodel (`fcnseg
    import-caffe --release voc-fcn-alexnet`); torchvision has no CaffeNet, so `pretrained=True`
    is an error naming that command and "auto" starts from random weights with a warning.
    Normalisation defaults to "caffe_bgr" because every CaffeNet weight file is Caffe's.
    """
    if pretrained and pretrained != "auto":
        raise ModelOptionError(
            "fcn32s_caffenet has no torchvision ImageNet weights; convert the release's "
            "caffemodel with `fcnseg import-caffe --release voc-fcn-alexnet` and pass it as "
            "model.init, or use pretrained=False"
        )
    if pretrained == "auto":
        warnings.warn("no CaffeNet ImageNet weights; the encoder starts random", stacklevel=2)
    encoder = caffenet_encoder(width_divisor=width_divisor)
    head, width = _fc_head(encoder.channels[DEEPEST], CAFFENET_FC6_KERNEL, False, width_divisor)
    model = PaperFCN(
        encoder, head, width, num_classes, upsample=upsample, normalization=normalization
    )
    return with_in_channels(model, in_channels)


def fcn32s_googlenet(
    num_classes: int,
    *,
    padded: bool = False,
    upsample: UpsampleMode = "deconv_frozen",
    encoder_weights: Any = None,
    pretrained: bool | str = False,
    normalization: str = "tf_lite",
    width_divisor: int = 1,
    in_channels: int = 3,
) -> PaperFCN:
    """GoogLeNet FCN-32s (paper Table 1): score the last inception output, no average pooling.

    The default normalisation is "tf_lite" because torchvision's GoogLeNet weights were ported
    from TensorFlow and expect inputs in [-1, 1] (torchvision rescales ImageNet-normalised input
    to that range with `transform_input`); here the data pipeline does it directly.
    """
    encoder, dropout = googlenet_encoder(padded=padded, width_divisor=width_divisor)
    model = PaperFCN(
        encoder,
        [("dropout", nn.Dropout(dropout))],
        encoder.channels[DEEPEST],
        num_classes,
        upsample=upsample,
        normalization=normalization,
    )
    model = finish_paper_net(model, encoder_weights, pretrained, GOOGLENET_WEIGHTS)
    return with_in_channels(model, in_channels)


def torchvision_weights_cached(enum_name: str):
    """A `weights_available` check: is the torchvision checkpoint in the local hub cache?"""

    def available() -> bool:
        import torchvision

        url = torchvision.models.get_weight(enum_name).url
        return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", url.split("/")[-1]))

    return available


_VGG_WEIGHTS = torchvision_weights_cached(VGG16_WEIGHTS)
for _variant in VARIANT_SKIPS:
    for _padded in (False, True):
        _suffix = "_padded" if _padded else ""
        _what = "cheaper, no 100-px padding" if _padded else "paper-exact, Caffe release geometry"
        register_model(
            f"{_variant}_vgg16{_suffix}",
            description=f"VGG16 {_variant.upper().replace('FCN', 'FCN-')} ({_what})",
            family="fcn-paper",
            weights_available=_VGG_WEIGHTS,
            paper_stage=_variant,
            release_solver=f"voc-{_variant}",
            variant=_variant,
            padded=_padded,
        )(fcn_vgg16)
for _padded in (False, True):
    _suffix = "_padded" if _padded else ""
    register_model(
        f"fcn8s_atonce_vgg16{_suffix}",
        description="VGG16 FCN-8s trained at once (skips pre-scaled by 0.01 / 0.0001)"
        + (", no 100-px padding" if _padded else ""),
        family="fcn-paper",
        weights_available=_VGG_WEIGHTS,
        paper_stage="fcn8s_atonce",
        release_solver="voc-fcn8s-atonce",
        variant="fcn8s",
        at_once=True,
        padded=_padded,
    )(fcn_vgg16)
register_model(
    "fcn32s_alexnet",
    description="AlexNet FCN-32s (paper Table 1), torchvision AlexNet definition",
    family="fcn-paper",
    weights_available=torchvision_weights_cached(ALEXNET_WEIGHTS),
    paper_stage="fcn32s",
    release_solver="voc-fcn-alexnet",
)(fcn32s_alexnet)
register_model(
    "fcn32s_caffenet",
    description="AlexNet FCN-32s as the release's voc-fcn-alexnet (CaffeNet: LRN, groups, 6x6 fc6)",
    family="fcn-paper",
    paper_stage="fcn32s",
    release_solver="voc-fcn-alexnet",
)(fcn32s_caffenet)
register_model(
    "fcn32s_googlenet",
    description="GoogLeNet FCN-32s (paper Table 1), last inception output scored",
    family="fcn-paper",
    weights_available=torchvision_weights_cached(GOOGLENET_WEIGHTS),
    paper_stage="fcn32s",
)(fcn32s_googlenet)
