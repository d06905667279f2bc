"""torchvision encoders (ResNet-18/50/101, MobileNetV2) behind the backbone contract.

Both are built with `weights=None` (nothing is downloaded); ImageNet weights come from an
offline package (MobileNetV2), a local file, or, if the user asks by name, a torchvision weights
enum ("IMAGENET1K_V1"), which torchvision may fetch into its cache. Output stride 16 or 8 turns
the last stages atrous: the stride-2 convolutions become stride 1 and later convolutions dilate
instead, so deeper features keep resolution without changing the ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError, WeightsError
from fcnseg.models.backbones.base import Backbone
from fcnseg.models.weights import Pretrained, load_state_dict_file, resolve_pretrained

#: ResNet stage -> nominal feature name; layer1 follows the stride-4 stem (conv1 + maxpool).
RESNET_STAGES: dict[str, str] = {"layer1": "s4", "layer2": "s8", "layer3": "s16", "layer4": "s32"}
#: torchvision constructor and weights-enum class of each ResNet depth.
RESNET_DEPTHS: tuple[str, ...] = ("resnet18", "resnet50", "resnet101")
#: Index of the last `mobilenet_v2().features` block of each stride (torchvision's layout:
#: 0 stem s2, 1 s2, 2-3 s4, 4-6 s8, 7-13 s16, 14-18 s32 including the final 1x1 to 1280).
MOBILENET_V2_TAPS: dict[str, int] = {"s4": 3, "s8": 6, "s16": 13, "s32": 18}
TORCHVISION_ENCODERS: tuple[str, ...] = (*RESNET_DEPTHS, "mobilenet_v2")


def _weights_enum_state(encoder: str, weights_name: str) -> dict[str, Tensor]:
    """State dict of a torchvision weights enum member given by name, e.g. "IMAGENET1K_V1"."""
    enum = torchvision.models.get_model_weights(encoder)
    try:
        member = enum[weights_name]
    except KeyError:
        raise ModelOptionError(
            f"encoder_weights={weights_name!r} is neither a file nor a {enum.__name__} member; "
            f"choose a path or one of {[m.name for m in enum]}"
        ) from None
    return member.get_state_dict(progress=False)


def _encoder_state(
    encoder: str, pretrained: Pretrained, encoder_weights: str | Path | None, model_name: str
) -> dict[str, Tensor] | None:
    """Classifier state dict to load, or None for random initialisation."""
    if encoder_weights is not None:
        path = Path(encoder_weights)
        if not path.exists() and str(encoder_weights).isupper():
            return _weights_enum_state(encoder, str(encoder_weights))
        return load_state_dict_file(path)
    path_found = resolve_pretrained(encoder, pretrained, model_name or encoder)
    return None if path_found is None else load_state_dict_file(path_found)


def _load_classifier(classifier: nn.Module, state: dict[str, Tensor] | None, source: str) -> None:
    """Load a torchvision classifier state strictly: a wrong file must not half-load."""
    if state is None:
        return
    try:
        classifier.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise WeightsError(
            f"{source}: encoder weights do not fit ({first_line}); pass the matching "
            "torchvision classifier state dict"
        ) from None


class ResNetBackbone(Backbone):
    """torchvision ResNet: stem + layer1..4 -> s4..s32; atrous layer3/4 via dilation."""

    def __init__(
        self, depth: str = "resnet50", output_stride: int = 32, state: dict | None = None
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ModelOptionError(f"unknown ResNet {depth!r}; choose one of {RESNET_DEPTHS}")
        dilate = [False, output_stride <= 8, output_stride <= 16]
        if depth == "resnet18" and any(dilate):
            # torchvision's BasicBlock refuses dilation; set it on its 3x3 convolutions instead.
            classifier = torchvision.models.resnet18(weights=None)
            _dilate_basic_resnet(classifier, dilate)
        else:
            classifier = getattr(torchvision.models, depth)(
                weights=None, replace_stride_with_dilation=dilate
            )
        _load_classifier(classifier, state, depth)
        self.stem = nn.Sequential(
            classifier.conv1, classifier.bn1, classifier.relu, classifier.maxpool
        )
        self.layer1, self.layer2 = classifier.layer1, classifier.layer2
        self.layer3, self.layer4 = classifier.layer3, classifier.layer4
        self.channels = {
            key: _stage_channels(getattr(classifier, name)) for name, key in RESNET_STAGES.items()
        }
        self.strides = {"s4": 4, "s8": 8, "s16": min(16, output_stride), "s32": output_stride}
        self.normalization = "imagenet"

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = {}
        x = self.stem(x)
        for name, key in RESNET_STAGES.items():
            x = getattr(self, name)(x)
            features[key] = x
        return features


def _stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage (last block's last BN)."""
    last = stage[-1]
    norm = getattr(last, "bn3", None) or last.bn2
    return norm.num_features


def _dilate_basic_resnet(classifier: nn.Module, dilate: list[bool]) -> None:
    """Atrous ResNet-18: the torchvision rule (stride -> dilation) for BasicBlock stages.

    As in torchvision's `replace_stride_with_dilation`, the first block of a dilated stage uses
    the previous dilation and drops its stride; later 3x3 convolutions use the new dilation.
    """
    dilation = 1
    for stage, dilated in zip(
        (classifier.layer2, classifier.layer3, classifier.layer4), dilate, strict=True
    ):
        previous = dilation
        if dilated:
            dilation *= 2
        for index, block in enumerate(stage):
            rate = previous if index == 0 else dilation
            for conv in (block.conv1, block.conv2):
                if dilated:
                    conv.stride = (1, 1)
                conv.dilation, conv.padding = (rate, rate), (rate, rate)
            if dilated and block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def _dilate_mobilenet_v2(features: nn.Sequential, output_stride: int) -> None:
    """Make MobileNetV2 atrous: past `output_stride`, stride-2 convolutions become stride 1 and
    every later 3x3 (depthwise) convolution dilates by the accumulated factor instead.

    The block that loses its stride keeps the previous dilation (DeepLab's rule), so its
    receptive field matches the strided original at its own input resolution.
    """
    stride, dilation = 1, 1
    for block in features:
        for conv in block.modules():
            if not isinstance(conv, nn.Conv2d) or conv.kernel_size[0] == 1:
                continue
            rate = dilation
            if conv.stride[0] == 2:
                if stride >= output_stride:
                    conv.stride = (1, 1)
                    dilation *= 2
                else:
                    stride *= 2
            conv.dilation = (rate, rate)
            conv.padding = (rate * (conv.kernel_size[0] - 1) // 2,) * 2


class MobileNetV2Backbone(Backbone):
    """torchvision MobileNetV2 `features`, tapped after the last block of each stride."""

    def __init__(self, output_stride: int = 32, state: dict | None = None) -> None:
        super().__init__()
        classifier = torchvision.models.mobilenet_v2(weights=None)
        _load_classifier(classifier, state, "mobilenet_v2")
        self.features = classifier.features
        if output_stride < 32:
            _dilate_mobilenet_v2(self.features, output_stride)
        self.taps = {index: name for name, index in MOBILENET_V2_TAPS.items()}
        self.channels = {
            name: _block_out_channels(self.features[index])
            for name, index in MOBILENET_V2_TAPS.items()
        }
        self.strides = {"s4": 4, "s8": 8, "s16": min(16, output_stride), "s32": output_stride}
        self.normalization = "imagenet"

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.taps:
                features[self.taps[index]] = x
        return features


def _block_out_channels(block: nn.Module) -> int:
    """Output channels of a MobileNetV2 block: its last convolution's."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def build_torchvision_backbone(
    encoder: str,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    model_name: str = "",
) -> Backbone:
    """ResNet or MobileNetV2 backbone with weights per the `pretrained` policy."""
    if encoder not in TORCHVISION_ENCODERS:
        raise ModelOptionError(
            f"unknown encoder {encoder!r}; choose one of {TORCHVISION_ENCODERS} "
            "(or efficientnet_lite0/1/2, or timm with timm_name=...)"
        )
    if output_stride not in (8, 16, 32):
        raise ModelOptionError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    state = _encoder_state(encoder, pretrained, encoder_weights, model_name)
    if encoder == "mobilenet_v2":
        return MobileNetV2Backbone(output_stride, state)
    return ResNetBackbone(encoder, output_stride, state)
