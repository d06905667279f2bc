"""Weight surgery: bilinear upsampling kernels, classifier-to-convolution transplants, stage init.

The FCN paper turns a classifier into a segmenter by *reinterpreting* weights rather than
learning them anew: fully connected layers become convolutions with the same numbers, upsampling
layers start as bilinear interpolation, and a finer net (16s, 8s) starts from the coarser one it
refines. Every such step lives here so that the model modules only describe architecture.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bilinear_kernel_size(factor: int) -> int:
    """Kernel size of an upsampling-by-`factor` deconvolution: 2f - f mod 2 (the release's rule).

    An even kernel for an even factor makes every output pixel a blend of exactly two input
    pixels per axis with the bilinear weights; odd factors need an odd kernel to stay centred.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}; pass a positive stride")
    return 2 * factor - factor % 2


def bilinear_kernel_1d(factor: int) -> Tensor:
    """1-D bilinear weights of length 2f - f mod 2 (closed form of Caffe's "bilinear" filler).

    Caffe: f = ceil(k / 2), c = (2f - 1 - f mod 2) / (2f), w[x] = 1 - |x / f - c|; here the
    kernel is built for an upsampling factor so Caffe's f equals that factor.
    """
    size = bilinear_kernel_size(factor)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    positions = torch.arange(size, dtype=torch.float64) / factor
    return (1.0 - (positions - center).abs()).to(torch.float32)


def bilinear_kernel(channels: int, factor: int) -> Tensor:
    """Weights channels x channels x k x k upsampling each channel by `factor` independently.

    Only the diagonal (channel i -> channel i) is non-zero: a deconvolution initialised with it is
    exactly per-channel bilinear interpolation, the paper's initialisation of its upsampling.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    line = bilinear_kernel_1d(factor)
    plane = torch.outer(line, line)
    weight = torch.zeros(channels, channels, *plane.shape)
    index = torch.arange(channels)
    weight[index, index] = plane
    return weight


def make_bilinear_upsample(
    channels: int, factor: int, learnable: bool = False
) -> nn.ConvTranspose2d:
    """A stride-`factor` transposed convolution initialised to bilinear upsampling, bias-free.

    Frozen by default: the paper reports that learning the final upsampling brings little, and
    the release keeps `lr_mult: 0` on it. Pass `learnable=True` to train it (the paper's in-net
    upsampling layers for the skips were learned).
    """
    size = bilinear_kernel_size(factor)
    layer = nn.ConvTranspose2d(channels, channels, size, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, factor))
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
