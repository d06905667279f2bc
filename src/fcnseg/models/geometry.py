"""Coordinate geometry of convolutional paths: where a feature pixel sits in the input image.

The paper's nets pad conv1_1 by 100 pixels and then *crop* every map before fusing it, so that
pixel i of each fused map looks at the same image location. Caffe's `coord_map` derives those
crop offsets from the layers; this module does the same for PyTorch modules so that fcnseg never
hard-codes an offset (and a changed layer cannot silently misalign the skips).

Every spatial layer maps an output coordinate x to the input coordinate it is centred on by an
affine map x_in = scale * x + offset:

- convolution / pooling with kernel k, stride s, padding p, dilation d: (s, (k - 1) d / 2 - p);
- transposed convolution (the inverse of a convolution): (1 / s, ((k - 1) / 2 - p) * -1 / s);
- bilinear resizing by factor f with half-pixel centres (align_corners=False): (1 / f, (1 - f) /
  (2 f)), since output pixel u samples input position (u + 1/2) / f - 1/2;
- pointwise layers (ReLU, normalisation, dropout) are the identity.

Composing the maps of a path gives image coordinates of a feature map; two maps with equal scale
differ by a constant shift, which is the crop offset. Fractions keep everything exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from torch import Tensor, nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.protocol import UpsampleMode, upsample_mode
from fcnseg.models.surgery import bilinear_kernel_size, make_bilinear_upsample

#: Layers that do not move pixels: they map each coordinate onto itself.
_POINTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def _pair_value(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    """The single value of a square kernel/stride/padding; rectangular ones are not supported."""
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(
                f"{type(layer).__name__} has non-square {what} {value}; the coordinate map "
                "supports square geometry only"
            )
        value = value[0]
    if isinstance(value, str):
        raise ValueError(
            f"{type(layer).__name__} uses padding={value!r}; give explicit integer padding"
        )
    return int(value)


@dataclass(frozen=True)
class CoordMap:
    """Affine map from a feature map's coordinates to the input's: x_in = scale * x + offset."""

    scale: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)

    def then(self, inner: CoordMap) -> CoordMap:
        """The map of a path that continues with a layer whose own map is `inner`.

        `self` maps the layer's input coordinates to the image; `inner` maps the layer's output
        coordinates to its input; the result maps the layer's output to the image.
        """
        return CoordMap(self.scale * inner.scale, self.scale * inner.offset + self.offset)

    @property
    def stride(self) -> Fraction:
        """Distance, in input pixels, between neighbouring pixels of this map."""
        return self.scale


class BilinearResize(nn.Module):
    """Upsampling by an integer factor with bilinear interpolation (half-pixel centres).

    A module (not a bare F.interpolate call) so that its geometry is inspectable like any other
    layer; it is the "plain interpolation instead of deconvolution" option of the FCNs.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"resize factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.interpolate(
            x, scale_factor=self.factor, mode="bilinear", align_corners=False
        )

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def layer_map(layer: nn.Module) -> CoordMap:
    """Coordinate map of one module (containers are composed from their children)."""
    if isinstance(layer, nn.ConvTranspose2d):
        kernel = _pair_value(layer.kernel_size, "kernel", layer)
        stride = _pair_value(layer.stride, "stride", layer)
        pad = _pair_value(layer.padding, "padding", layer)
        dilation = _pair_value(layer.dilation, "dilation", layer)
        centre = Fraction((kernel - 1) * dilation, 2) - pad
        return CoordMap(Fraction(1, stride), -centre / stride)
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair_value(layer.kernel_size, "kernel", layer)
        stride = _pair_value(layer.stride, "stride", layer)
        pad = _pair_value(layer.padding, "padding", layer)
        dilation = _pair_value(getattr(layer, "dilation", 1), "dilation", layer)
        return CoordMap(Fraction(stride), Fraction((kernel - 1) * dilation, 2) - pad)
    if isinstance(layer, BilinearResize):
        return CoordMap(Fraction(1, layer.factor), Fraction(1 - layer.factor, 2 * layer.factor))
    if isinstance(layer, _POINTWISE):
        return CoordMap()
    branches = _parallel_branches(layer)
    if branches is not None:
        maps = {path_map([branch]) for branch in branches}
        if len(maps) != 1:
            raise ValueError(
                f"{type(layer).__name__} concatenates branches with different geometry {maps}"
            )
        return maps.pop()
    children = list(layer.children())
    if not children:
        raise ValueError(
            f"no coordinate map known for layer type {type(layer).__name__}; add it to "
            "fcnseg.models.geometry.layer_map"
        )
    return path_map(children)


def _parallel_branches(layer: nn.Module) -> list[nn.Module] | None:
    """Branches of a module that runs its children side by side and concatenates them.

    GoogLeNet's Inception block is the case the FCN paper needs; recognised by its
    `branch1`..`branch4` attributes so that torchvision's class need not be imported here.
    """
    names = [name for name, _ in layer.named_children()]
    if names and all(name.startswith("branch") for name in names):
        return [child for _, child in layer.named_children()]
    return None


def path_map(layers: Iterable[nn.Module], start: CoordMap | None = None) -> CoordMap:
    """Map from the output of a sequence of layers to the coordinates of its input (or `start`)."""
    current = start or CoordMap()
    for layer in layers:
        current = current.then(layer_map(layer))
    return current


def crop_offset(cropped: CoordMap, reference: CoordMap) -> Fraction:
    """Where the reference map's pixel 0 lies inside `cropped` (Caffe's Crop `offset`).

    Both maps must have the same stride, else no crop aligns them. The result can be negative or
    fractional; the caller decides what that means (see `integer_crop_offset`).
    """
    if cropped.scale != reference.scale:
        raise ValueError(
            f"cannot align maps of stride {cropped.scale} and {reference.scale} by cropping"
        )
    return (reference.offset - cropped.offset) / cropped.scale


def integer_crop_offset(cropped: CoordMap, reference: CoordMap, what: str) -> int:
    """`crop_offset` as an int, with a one-line error naming `what` if it is not whole."""
    offset = crop_offset(cropped, reference)
    if offset.denominator != 1:
        raise ValueError(
            f"{what}: maps are misaligned by a fraction of a pixel ({offset}); change the "
            "padding or kernel sizes so that the offsets are whole pixels"
        )
    return int(offset)


# --- Upsamplers aligned by whole-pixel crops -------------------------------------------------


def make_upsample(
    channels: int, factor: int, mode: UpsampleMode, size: int | None = None
) -> nn.Module:
    """An upsampling-by-`factor` layer: bilinear deconvolution (frozen or learnable) or resize."""
    mode = upsample_mode(mode)
    if mode == "bilinear":
        return BilinearResize(factor)
    if mode in ("deconv_frozen", "deconv_learnable"):
        learnable = mode == "deconv_learnable"
        return make_bilinear_upsample(channels, factor, learnable=learnable, size=size)
    raise AssertionError(mode)  # upsample_mode() admits nothing else


def aligned_upsample(
    channels: int,
    factor: int,
    mode: UpsampleMode,
    source: CoordMap,
    target: CoordMap,
    what: str,
) -> tuple[nn.Module, int]:
    """An upsampler from `source` whose output aligns with `target` by a whole-pixel crop.

    The standard kernel 2f - f mod 2 is tried first; if it leaves a half-pixel misalignment the
    next smaller (odd/even) kernel shifts the centre by half a pixel, which is exactly why the
    authors' AlexNet FCN upsamples with a 63 kernel rather than 64. Returns the layer and the
    crop offset of `target` relative to it (see `integer_crop_offset`).
    """
    standard = bilinear_kernel_size(factor)
    sizes = [None] if mode == "bilinear" else [standard, standard - 1]
    error: ValueError | None = None
    for size in sizes:
        layer = make_upsample(channels, factor, mode, size)
        try:
            return layer, integer_crop_offset(target, source.then(layer_map(layer)), what)
        except ValueError as exc:
            error = exc
    if mode == "bilinear":
        raise ModelOptionError(
            f"{what}: upsample='bilinear' cannot align this net by whole-pixel crops (its "
            "geometry is off by half a pixel); use upsample='deconv_frozen'"
        )
    assert error is not None
    raise error


def whole_factor(value: Fraction, what: str) -> int:
    """`value` as a whole upsampling factor (>= 1); a ModelOptionError naming `what` otherwise."""
    if value.denominator != 1 or value < 1:
        raise ModelOptionError(f"{what} is {value}, not a whole upsampling factor")
    return int(value)
