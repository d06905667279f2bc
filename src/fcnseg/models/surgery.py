"""Weight surgery: bilinear upsampling kernels, classifier-to-convolution transplants, stage init.

The FCN paper turns a classifier into a segmenter by *reinterpreting* weights rather than
learning them anew: fully connected layers become convolutions with the same numbers, upsampling
layers start as bilinear interpolation, and a finer net (16s, 8s) starts from the coarser one it
refines. Every such step lives here so that the model modules only describe architecture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError, WeightsError


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


def init_finer_from_coarser(fine: nn.Module, coarse: nn.Module) -> list[str]:
    """Copy every parameter and buffer of `coarse` whose name and shape exist in `fine`.

    This is the paper's stage-wise training ("FCN-16s ... initialized with the parameters of
    FCN-32s"): shared layers carry over, new skip scores keep their zero init so the finer net
    starts out computing exactly what the coarser one did. Returns the names copied, so callers
    can check nothing important was silently skipped.
    """
    fine_state = fine.state_dict()
    copied: list[str] = []
    with torch.no_grad():
        for name, value in coarse.state_dict().items():
            target = fine_state.get(name)
            if target is not None and target.shape == value.shape:
                target.copy_(value)
                copied.append(name)
    return copied


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
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
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


def resize_score_layers(
    model: nn.Module, num_classes: int, class_map: Sequence[int | None] | None = None
) -> list[str]:
    """Change the class count of every `score*` conv and `upscore*` deconvolution of `model`.

    `class_map[i]` is the old class whose scores new class i inherits (None: a new class, zero
    initialised like the paper's score layers); by default classes keep their index. Frozen
    bilinear upsamplers are rebuilt for the new count; learnable ones keep surviving weights.
    Returns the names of the layers replaced.
    """
    if num_classes < 1:
        raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
    if class_map is not None and len(class_map) != num_classes:
        raise ModelOptionError(
            f"class_map has {len(class_map)} entries; give one per new class ({num_classes})"
        )
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.ConvTranspose2d) and leaf.startswith("upscore"):
            new: nn.Module = _resize_upsample(module, num_classes, class_map)
        elif isinstance(module, nn.Conv2d) and leaf.startswith("score"):
            new = _resize_score(module, num_classes, class_map)
        else:
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, leaf, new)
        replaced.append(name)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return replaced


def _surviving(
    old_count: int, new_count: int, class_map: Sequence[int | None] | None
) -> list[tuple[int, int]]:
    """(new index, old index) pairs of classes whose weights carry over."""
    if class_map is None:
        class_map = list(range(min(old_count, new_count)))
        class_map += [None] * (new_count - len(class_map))
    pairs = []
    for new_index, old_index in enumerate(class_map):
        if old_index is None:
            continue
        if not 0 <= old_index < old_count:
            raise ModelOptionError(f"class_map[{new_index}]={old_index} is not an old class index")
        pairs.append((new_index, old_index))
    return pairs


def _resize_score(conv: nn.Conv2d, num_classes: int, class_map) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, num_classes, conv.kernel_size, conv.stride, conv.padding)
    nn.init.zeros_(new.weight)
    nn.init.zeros_(new.bias)
    with torch.no_grad():
        for new_index, old_index in _surviving(conv.out_channels, num_classes, class_map):
            new.weight[new_index] = conv.weight[old_index]
            new.bias[new_index] = conv.bias[old_index]
    return new


def _resize_upsample(layer: nn.ConvTranspose2d, num_classes: int, class_map) -> nn.Module:
    learnable = layer.weight.requires_grad
    stride, size = layer.stride[0], layer.kernel_size[0]
    new = make_bilinear_upsample(num_classes, stride, learnable=learnable, size=size)
    if learnable:
        pairs = _surviving(layer.out_channels, num_classes, class_map)
        with torch.no_grad():
            for new_i, old_i in pairs:
                for new_j, old_j in pairs:
                    new.weight[new_j, new_i] = layer.weight[old_j, old_i]
    return new
