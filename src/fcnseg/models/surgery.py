"""Weight surgery: bilinear upsampling kernels and classifier-to-convolution transplants.

The FCN paper turns a classifier into a segmenter by *reinterpreting* weights rather than
learning them anew: fully connected layers become convolutions with the same numbers and
upsampling layers start as bilinear interpolation. Those steps live here so that the model
modules only describe architecture. (The third, a finer net (16s, 8s) starting from the coarser
one it refines, is a same-name copy: `fcnseg.engine.setup.initialise_from`.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from fcnseg.errors import WeightsError
from fcnseg.models.weights import read_torch_file


def bilinear_kernel_size(factor: int) -> int:
    """Kernel size of an upsampling-by-`factor` deconvolution: 2f - f mod 2 (the release's rule).

    An even kernel for an even factor makes every output pixel a blend of exactly two input
    pixels per axis with the bilinear weights; odd factors need an odd kernel to stay centred.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}; pass a positive stride")
    return 2 * factor - factor % 2


def bilinear_kernel_1d(factor: int, size: int | None = None) -> Tensor:
    """1-D bilinear weights for upsampling by `factor` (closed form of Caffe's "bilinear" filler).

    w[x] = 1 - |x - (size - 1) / 2| / factor. With the default size 2f - f mod 2 this is Caffe's
    filler (f = ceil(k / 2), c = (2f - 1 - f mod 2) / (2f), w = 1 - |x / f - c|); an odd `size`
    (e.g. 63 for f = 32, as the release's AlexNet FCN uses) shifts the centre by half a pixel,
    which is how a net whose geometry is off by half a pixel is realigned.
    """
    size = bilinear_kernel_size(factor) if size is None else size
    if size < factor:
        raise ValueError(f"kernel size {size} is smaller than the upsampling factor {factor}")
    center = (size - 1) / 2.0
    positions = torch.arange(size, dtype=torch.float64)
    return (1.0 - (positions - center).abs() / factor).to(torch.float32)


def bilinear_kernel(channels: int, factor: int, size: int | None = None) -> Tensor:
    """Weights channels x channels x k x k upsampling each channel by `factor` independently.

    Only the diagonal (channel i -> channel i) is non-zero: a deconvolution initialised with it is
    exactly per-channel bilinear interpolation, the paper's initialisation of its upsampling.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    line = bilinear_kernel_1d(factor, size)
    plane = torch.outer(line, line)
    weight = torch.zeros(channels, channels, *plane.shape)
    index = torch.arange(channels)
    weight[index, index] = plane
    return weight


def make_bilinear_upsample(
    channels: int, factor: int, learnable: bool = False, size: int | None = None
) -> nn.ConvTranspose2d:
    """A stride-`factor` transposed convolution initialised to bilinear upsampling, bias-free.

    Frozen by default, as in the authors' release (`lr_mult: 0` on the upsampling layers); pass
    `learnable=True` to train it. `size` overrides the kernel size 2f - f mod 2.
    """
    size = bilinear_kernel_size(factor) if size is None else size
    layer = nn.ConvTranspose2d(channels, channels, size, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, factor, size))
    layer.weight.requires_grad_(learnable)
    return layer


def transplant_linear(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> None:
    """Copy a fully connected layer into the convolution that replaces it (paper section 3.1).

    A Linear layer reading a flattened C x k x k map computes exactly a k x k convolution with
    the weight rows reshaped to C x k x k (flattening is channel-major in PyTorch and Caffe).
    """
    if weight.numel() != conv.weight.numel():
        raise WeightsError(
            f"cannot transplant a Linear weight of shape {tuple(weight.shape)} into a conv of "
            f"shape {tuple(conv.weight.shape)}; the classifier does not match this encoder"
        )
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if conv.bias is not None and bias is not None:
            conv.bias.copy_(bias.reshape(conv.bias.shape))


def load_state_source(source: object) -> dict[str, Tensor]:
    """A state dict from a path (.pth/.pt/.safetensors), a torchvision weights enum or its name.

    Strings that are not existing files but name a torchvision enum ("VGG16_Weights.IMAGENET1K_V1")
    are fetched through torchvision (needs internet the first time, then torch's hub cache).
    """
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "get_state_dict"):  # a torchvision WeightsEnum member
        return dict(source.get_state_dict(progress=True))
    path = Path(os.fspath(source))  # type: ignore[arg-type]
    if not path.is_file():
        enum = _torchvision_enum(str(source))
        if enum is not None:
            return dict(enum.get_state_dict(progress=True))
        raise FileNotFoundError(
            f"encoder weights file {path} does not exist; pass an existing .pth/.safetensors "
            "file or a torchvision weights name such as VGG16_Weights.IMAGENET1K_V1"
        )
    state = read_torch_file(path)  # one-line refusal of a pickle that is not plain tensors
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsError(f"encoder weights file {path} does not hold a state dict")
    return dict(state)


def _torchvision_enum(name: str):
    """The torchvision weights enum member called `name`, or None if there is none."""
    if "." not in name or Path(name).suffix in (".pth", ".pt", ".safetensors", ".bin"):
        return None
    import torchvision

    try:
        return torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        return None


def load_classifier_weights(model: nn.Module, source: object) -> list[str]:
    """Load a torchvision classifier's weights into an FCN's encoder and fc6/fc7.

    `model` needs `encoder.torchvision_keys` (torchvision key -> encoder key) and `fc_sources`
    (fc conv name -> torchvision Linear prefix), which `fcnseg.models.paper_fcn.PaperFCN` provides. Returns
    the model keys loaded. A state dict from another architecture fails with one line naming
    the source and the first missing keys.
    """
    state = load_state_source(source)
    where = source if isinstance(source, (str, os.PathLike)) else type(source).__name__
    encoder = model.encoder
    fc_sources: dict[str, str] = getattr(model, "fc_sources", {})
    required = list(encoder.torchvision_keys)
    required += [f"{prefix}.{p}" for prefix in fc_sources.values() for p in ("weight", "bias")]
    missing = [key for key in required if key not in state]
    if missing:
        raise WeightsError(
            f"encoder weights {where}: {len(missing)} expected keys missing (first: "
            f"{', '.join(missing[:3])}); pass a torchvision state dict of the same architecture"
        )
    target = encoder.state_dict()
    loaded: list[str] = []
    with torch.no_grad():
        for theirs, ours in encoder.torchvision_keys.items():
            if state[theirs].shape != target[ours].shape:
                raise WeightsError(
                    f"encoder weights {where}: {theirs} has shape {tuple(state[theirs].shape)} "
                    f"but the model expects {tuple(target[ours].shape)}; check width_divisor"
                )
            target[ours].copy_(state[theirs])
            loaded.append(f"encoder.{ours}")
        for name, prefix in fc_sources.items():
            transplant_linear(
                getattr(model, name), state[f"{prefix}.weight"], state[f"{prefix}.bias"]
            )
            loaded += [f"{name}.weight", f"{name}.bias"]
    return loaded
