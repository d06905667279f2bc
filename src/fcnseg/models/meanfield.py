"""Mean-field CRF inference written as network layers (CRF-as-RNN), trainable end to end.

Why: the dense CRF of `fcnseg.inference.crf` refines a net's scores after the fact, with
hand-searched parameters and a C++ library. Zheng et al. ("Conditional Random Fields as
Recurrent Neural Networks", ICCV 2015) wrote its mean-field iterations as differentiable layers,
so the kernel weights and the label compatibility are learnt with the net. `MeanFieldCRF` does
that for any registered single-output model (`model.crf: {...}` in a recipe).

One iteration, for scores U (the wrapped model's logits, i.e. minus the unary energy) and
Q = softmax(U) at the start:

1. message passing: m = w_s * (K_s Q) / D_s + w_b * (K_b Q) / D_b, where K_s is the Gaussian
   spatial kernel exp(-|p_i - p_j|^2 / 2 sxy_s^2) and K_b the bilateral (appearance) kernel
   exp(-|p_i - p_j|^2 / 2 sxy_b^2 - |I_i - I_j|^2 / 2 srgb^2), summed over j != i, and
   D_i = sum_j k(i, j) over all j, the pixel itself included (the filter of ones);
2. compatibility transform: penalty_l = sum_k mu(l, k) m_k (mu initialised to Potts, 1 - I);
3. S = U - penalty; Q = softmax(S).

Why normalised: unnormalised, the messages scale with the kernel's mass (about 2 pi sxy^2
pixels: ~170 for DeepLab's spatial kernel), so DeepLab's weights (3, 4), found for the
normalised kernels of the dense-CRF library, would swamp the net's scores, and float rounding
in the net is amplified as much (an ONNX graph then misses the export check). Dividing by the
filter of ones, as CRF-as-RNN does, keeps every message in [0, 1); counting the pixel itself in
D_i keeps the division away from 0 where no neighbour looks alike.

The forward returns S of the last iteration (scores, so the usual cross-entropy trains it).
`w_s`, `w_b` and `mu` are learnt; the kernel widths are fixed options. Positions p are in
pixels of the input image and I its RGB values on the 0-255 scale, recovered from the
normalised input by inverting the model's normalisation preset (the net never sees raw pixels).

The spatial kernel is separable and computed exactly (two 1-D convolutions truncated at 4 sxy).
The bilateral filter is not exact. Approximation used here (that of convolutional CRFs,
Teichmann & Cipolla, "Convolutional CRFs for Semantic Segmentation", 2018): the sum over all
pixels j is truncated to a `window` x `window` neighbourhood of i, on a grid `downsample` times
coarser than the image (Q summed and the image averaged over each cell, the result upsampled
bilinearly). With `window` covering the whole image and `downsample` 1 it is the exact dense
filter (`exact_dense_filter`, O(N^2), the reference). Its error for a given window is measured
by `tests/test_models_meanfield.py` and `benchmarks/meanfield_filter_error.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.constants import (
    CAFFE_MEAN_BGR,
    DEEPLAB_CRF_BILATERAL_COMPAT,
    DEEPLAB_CRF_BILATERAL_SRGB,
    DEEPLAB_CRF_BILATERAL_SXY,
    DEEPLAB_CRF_GAUSSIAN_COMPAT,
    DEEPLAB_CRF_GAUSSIAN_SXY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TF_LITE_MEAN,
    TF_LITE_STD,
)
from fcnseg.errors import ModelOptionError

#: Largest window side and iteration count a recipe may ask for (cost is window^2 x iterations).
MAX_WINDOW, MAX_ITERATIONS, MAX_DOWNSAMPLE = 31, 20, 16
#: Input pixel scale of the appearance kernel's srgb (the dense CRF's RGB is 0-255).
RGB_SCALE = 255.0
#: Preset -> (mean, std on the 0-255 scale, channel order of the net's input): how to undo the
#: input normalisation (the numbers of fcnseg.data.normalization.PRESETS, which a model module
#: may not import; a test checks they agree).
UNNORMALIZE: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]] = {
    "imagenet": (
        tuple(v * RGB_SCALE for v in IMAGENET_MEAN),
        tuple(v * RGB_SCALE for v in IMAGENET_STD),
        (0, 1, 2),
    ),
    "tf_lite": (
        tuple(v * RGB_SCALE for v in TF_LITE_MEAN),
        tuple(v * RGB_SCALE for v in TF_LITE_STD),
        (0, 1, 2),
    ),
    "caffe_bgr": (tuple(CAFFE_MEAN_BGR), (1.0, 1.0, 1.0), (2, 1, 0)),
    "caffe_bgr_raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2, 1, 0)),  # BGR 0-255, no mean
}


@dataclass(frozen=True)
class MeanFieldOptions:
    """`model.crf` of a recipe. Defaults: 5 iterations (CRF-as-RNN trains with 5); kernel widths
    and initial weights DeepLab's cross-validated dense-CRF values (constants.py)."""

    iterations: int = 5
    #: Side of the square neighbourhood the kernels are summed over (odd, in grid cells).
    window: int = 7
    #: Grid coarsening of the filter (1: full resolution).
    downsample: int = 1
    spatial_sxy: float = DEEPLAB_CRF_GAUSSIAN_SXY
    spatial_weight: float = DEEPLAB_CRF_GAUSSIAN_COMPAT
    bilateral_sxy: float = DEEPLAB_CRF_BILATERAL_SXY
    bilateral_srgb: float = DEEPLAB_CRF_BILATERAL_SRGB
    bilateral_weight: float = DEEPLAB_CRF_BILATERAL_COMPAT


_BOUNDS: dict[str, tuple[float, float]] = {
    "iterations": (1, MAX_ITERATIONS),
    "window": (1, MAX_WINDOW),
    "downsample": (1, MAX_DOWNSAMPLE),
    "spatial_sxy": (1e-3, 100.0),
    "spatial_weight": (0.0, 1e3),
    "bilateral_sxy": (1e-3, 1e4),
    "bilateral_srgb": (1e-3, 1e4),
    "bilateral_weight": (0.0, 1e3),
}


def parse_crf_options(value: Any, where: str = "model.crf") -> MeanFieldOptions:
    """`value` (a mapping of MeanFieldOptions fields; `true` takes every default) checked, or
    a one-line ModelOptionError naming `where` and the key."""
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ModelOptionError(
            f"{where}: expected a mapping such as {{iterations: 5}}, got {value!r}"
        )
    known = {item.name: item for item in fields(MeanFieldOptions)}
    parsed: dict[str, Any] = {}
    for key, item in value.items():
        if key not in known:
            raise ModelOptionError(
                f"{where}: unknown key {key!r}; it accepts {', '.join(sorted(known))}"
            )
        low, high = _BOUNDS[key]
        whole = known[key].type == "int"
        ok_type = isinstance(item, int) if whole else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok_type or not (low <= item <= high):
            kind = "a whole number" if whole else "a number"
            raise ModelOptionError(f"{where}.{key}: {item!r} must be {kind} in [{low:g}, {high:g}]")
        parsed[key] = int(item) if whole else float(item)
    options = MeanFieldOptions(**parsed)
    if options.window % 2 == 0:
        raise ModelOptionError(f"{where}.window: {options.window} must be odd (e.g. 7)")
    return options


def _offsets(window: int) -> list[tuple[int, int]]:
    radius = window // 2
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def _shifted(padded: Tensor, dy: int, dx: int, radius: int, size: tuple[int, int]) -> Tensor:
    """The view of a `radius`-padded map whose pixel i holds the original's pixel i + (dy, dx)."""
    height, width = size
    return padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]


def gaussian_filter(values: Tensor, sxy: float, pixel_scale: float = 1.0) -> Tensor:
    """sum_{j != i} exp(-|p_i - p_j|^2 / 2 sxy^2) values_j, N x C x H x W: the spatial kernel.

    Separable, so computed as two 1-D convolutions, truncated at 4 sxy (the weight left out is
    below exp(-8) = 3e-4 of the centre's): exact to that, at any image size and width.
    `pixel_scale`: image pixels per pixel of `values` (sxy is in image pixels).
    """
    radius = math.ceil(4 * sxy / pixel_scale)  # not from the size: exported graphs stay dynamic
    taps = values.new_tensor(
        [
            math.exp(-((step * pixel_scale) ** 2) / (2 * sxy**2))
            for step in range(-radius, radius + 1)
        ]
    )
    planes = values.reshape(-1, 1, *values.shape[-2:])  # one plane per image and class
    out = F.conv2d(planes, taps.view(1, 1, 1, -1), padding=(0, radius))
    out = F.conv2d(out, taps.view(1, 1, -1, 1), padding=(radius, 0)).reshape(values.shape)
    return out - values


def window_kernels(image: Tensor, options: MeanFieldOptions, scale: float = 1.0) -> list[Tensor]:
    """Per offset of the window, the bilateral kernel (N x 1 x h x w).

    `image`: N x 3 x h x w RGB on the 0-255 scale, on the filter's grid; `scale`: image pixels
    per grid cell (positions are in image pixels). Neighbours outside the image get weight 0.
    """
    radius = options.window // 2
    size = (image.shape[-2], image.shape[-1])
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    inside = F.pad(torch.ones_like(image[:, :1]), (radius, radius, radius, radius))
    kernels = []
    for dy, dx in _offsets(options.window):
        distance2 = (dy * dy + dx * dx) * scale * scale
        colour2 = (image - _shifted(padded, dy, dx, radius, size)).pow(2).sum(1, keepdim=True)
        exponent = distance2 / (2 * options.bilateral_sxy**2) + colour2 / (
            2 * options.bilateral_srgb**2
        )
        kernels.append(torch.exp(-exponent) * _shifted(inside, dy, dx, radius, size))
    return kernels


def window_filter(values: Tensor, kernels: list[Tensor], window: int) -> Tensor:
    """sum_j k(i, j) values_j over the window (j = i included): N x C x h x w."""
    radius = window // 2
    size = (values.shape[-2], values.shape[-1])
    padded = F.pad(values, (radius, radius, radius, radius))
    total = torch.zeros_like(values)
    for (dy, dx), kernel in zip(_offsets(window), kernels, strict=True):
        total = total + kernel * _shifted(padded, dy, dx, radius, size)
    return total


class GridFilter:
    """Both kernels applied to N x C x H x W maps: the spatial one exactly (`gaussian_filter`),
    the bilateral one by the windowed approximation (module doc).

    Built once per image; `__call__` is one message pass (self excluded), N x 2 x C x H x W
    (spatial, bilateral).
    """

    def __init__(self, image: Tensor, options: MeanFieldOptions, pixel_scale: float = 1.0) -> None:
        self.options = options
        self.pixel_scale = pixel_scale
        self.size = (image.shape[-2], image.shape[-1])
        step = options.downsample
        self.pad = (0, -image.shape[-1] % step, 0, -image.shape[-2] % step)
        grid_image = image
        if step > 1:
            grid_image = F.avg_pool2d(F.pad(image, self.pad, mode="replicate"), step)
        self.kernels = window_kernels(grid_image, options, scale=step * pixel_scale)

    def bilateral(self, values: Tensor) -> Tensor:
        """The windowed bilateral filter of `values`, self excluded."""
        step = self.options.downsample
        grid = values
        if step > 1:  # each cell holds the sum of its pixels' values
            grid = F.avg_pool2d(F.pad(values, self.pad), step) * (step * step)
        filtered = window_filter(grid, self.kernels, self.options.window)
        if step > 1:
            filtered = F.interpolate(filtered, scale_factor=step, mode="bilinear")
            filtered = filtered[..., : self.size[0], : self.size[1]]
        return filtered - values  # k(i, i) = 1: leave the pixel itself out

    def __call__(self, values: Tensor) -> Tensor:
        spatial = gaussian_filter(values, self.options.spatial_sxy, self.pixel_scale)
        return torch.stack([spatial, self.bilateral(values)], 1)


def exact_dense_filter(values: Tensor, image: Tensor, sxy: float, srgb: float | None) -> Tensor:
    """The exact dense filter sum_{j != i} k(i, j) values_j, by brute force (O(N^2) memory).

    The reference the window approximation is measured against; `srgb` None gives the spatial
    kernel. `values` N x C x H x W, `image` N x 3 x H x W (0-255). Small images only.
    """
    height, width = values.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    positions = torch.stack([ys.flatten(), xs.flatten()], 1) / sxy
    out = []
    for index in range(values.shape[0]):
        features = positions
        if srgb is not None:
            colours = image[index].double().flatten(1).T / srgb
            features = torch.cat([positions, colours], 1)
        affinity = torch.exp(-0.5 * torch.cdist(features, features).pow(2))
        affinity.fill_diagonal_(0.0)
        flat = values[index].double().flatten(1)
        out.append((flat @ affinity.T).reshape(values.shape[1:]))
    return torch.stack(out).to(values.dtype)


class MeanFieldLayers(nn.Module):
    """T mean-field iterations with learnt kernel weights and label compatibility (module doc)."""

    def __init__(self, num_classes: int, options: MeanFieldOptions) -> None:
        super().__init__()
        self.options = options
        self.kernel_weights = nn.Parameter(
            torch.tensor([options.spatial_weight, options.bilateral_weight])
        )
        self.compatibility = nn.Parameter(1.0 - torch.eye(num_classes))  # Potts

    def forward(self, scores: Tensor, image: Tensor, pixel_scale: float = 1.0) -> Tensor:
        """`scores` N x C x H x W logits, `image` N x 3 x H x W RGB 0-255 -> refined scores;
        `pixel_scale`: image pixels per score pixel (positions are in image pixels)."""
        unary = scores.float()
        kernel = GridFilter(image.float(), self.options, pixel_scale)
        ones = torch.ones_like(unary[:, :1])
        # 1 / D per kernel (N x 2 x 1 x H x W), with the kernel weights folded in.
        scale = self.kernel_weights.view(1, 2, 1, 1, 1) / (kernel(ones) + 1.0)
        refined = unary
        for _ in range(self.options.iterations):
            message = (kernel(torch.softmax(refined, 1)) * scale).sum(1)
            penalty = torch.einsum("lk,nkhw->nlhw", self.compatibility, message)
            refined = unary - penalty
        return refined.to(scores.dtype)


def rgb_image(x: Tensor, normalization: str) -> Tensor:
    """The RGB image (0-255) behind a batch `x` normalised with preset `normalization`."""
    mean, std, order = UNNORMALIZE[normalization]
    view = (1, len(mean), 1, 1)
    pixels = x.float() * x.new_tensor(std).view(view) + x.new_tensor(mean).view(view)
    inverse = [order.index(channel) for channel in range(len(order))]
    return pixels[:, inverse]


def check_crf_base(model: nn.Module) -> None:
    """ModelOptionError unless the CRF can see `model`'s input as RGB (a preset, 3 channels)."""
    name = str(model.normalization)
    if name not in UNNORMALIZE or int(model.in_channels) != 3:
        raise ModelOptionError(
            f"model.crf: needs an RGB model normalised by a preset ({', '.join(UNNORMALIZE)}); "
            f"this one takes {model.in_channels} channels normalised {name!r}; remove model.crf"
        )
    if dict(model.head_classes):
        raise ModelOptionError(
            "model.crf: supports single-output models only; this one has heads "
            f"{sorted(model.head_classes)}; remove model.crf"
        )


class MeanFieldCRF(nn.Module):
    """`base` followed by `MeanFieldLayers` on its scores: the model `model.crf` builds.

    Keeps the four contract attributes of `base` (models/protocol.py); the CRF's parameters are
    class-shaped (`class_score_layers`), so `model.init` re-initialises them for other classes.
    """

    class_score_layers: tuple[str, ...] = ("crf",)
    #: Where the wrapped model's tensors live: `model.init` from the bare model's weights adds
    #: it (engine/transfer.wrapped_names).
    wrapped_prefix: str = "base."

    def __init__(self, base: nn.Module, options: MeanFieldOptions) -> None:
        super().__init__()
        check_crf_base(base)
        self.base = base
        self.crf = MeanFieldLayers(int(base.num_classes), options)
        self.num_classes = base.num_classes
        self.in_channels = base.in_channels
        self.normalization = base.normalization
        self.head_classes: dict[str, int] = {}

    def forward(self, x: Tensor) -> Tensor:
        scores = self.base(x)
        image = rgb_image(x.detach(), str(self.normalization))
        pixel_scale = 1.0
        if image.shape[-2:] != scores.shape[-2:]:  # positions stay in input pixels
            pixel_scale = image.shape[-2] / scores.shape[-2]
            image = F.interpolate(image, size=scores.shape[-2:], mode="area")
        return self.crf(scores, image, pixel_scale)
