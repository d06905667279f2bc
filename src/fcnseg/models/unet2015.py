"""U-Net as published (Ronneberger, Fischer, Brox, MICCAI 2015): valid convolutions, 572 -> 388.

Why the 2015 net exactly, next to the padded U-Net head (`heads/unet.py`): reproducing the paper
needs its geometry. Every 3x3 convolution is unpadded, so each loses a pixel per side; four 2x2
max-pools (stride 2) halve the map; the expansive path up-convolves (2x2, stride 2, halving the
channels), concatenates the centre crop of the contracting map of the same level and runs two
more 3x3 convolutions; a 1x1 convolution scores the classes. 23 convolutions in all (section 2).

Sizes. An input side s is *valid* when every pooling sees an even size: s = 124 + 16 k with
k >= 4 (188, 204, ..., 572, ...); the output side is then s - 184 (figure 1: 572 -> 388).
`valid_forward` takes valid tiles only and refuses others in one line naming the nearest valid
side. `forward` keeps the model contract (output at the input's size) by the paper's overlap-tile
strategy for one tile: the image is mirrored by 96 px (the 92 px of context rounded up to a
multiple of 16, so the pooling grid stays that of the image) and to a valid size, run, cropped.
`fcnseg.inference.overlap_tile` tiles large images the same way with real context.

Layer names are those of the authors' Caffe release (`conv_d0a-b` ... `conv_u0d-score`), with
"-" written "_"; the release's ReLU after each up-convolution is kept. The paper's images are
grey; `in_channels` defaults to 3 like every other model here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fcnseg.constants import (
    UNET2015_CHANNELS,
    UNET2015_CONTEXT,
    UNET2015_DROPOUT,
    UNET2015_TILE_OUTPUT,
)
from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.mirror import mirror_pad
from fcnseg.models.registry import register_model

#: Pixels lost per side by a 3x3 valid convolution pair, and the pooling factor of the four levels.
_VALID_BASE, _VALID_STEP, _MIN_STEPS = 124, 16, 4
#: Mirrored rows/columns above and left of the image in `forward`: the context (92) rounded up to
#: a multiple of the total pooling stride (16), so a tile's pooling grid is the image's.
FORWARD_MARGIN: int = 96
#: What `forward` crops off the valid output: FORWARD_MARGIN - UNET2015_CONTEXT.
_FORWARD_CROP: int = FORWARD_MARGIN - UNET2015_CONTEXT


def is_valid_input(side: int) -> bool:
    """Whether every 2x2 pooling of a `side`-pixel input sees an even size (s = 124 + 16 k)."""
    steps, rest = divmod(side - _VALID_BASE, _VALID_STEP)
    return rest == 0 and steps >= _MIN_STEPS


def nearest_valid_input(side: int) -> int:
    """The valid input side nearest `side` (ties: the larger), at least the smallest, 188."""
    steps = max(_MIN_STEPS, round((side - _VALID_BASE) / _VALID_STEP + 1e-9))
    return _VALID_BASE + _VALID_STEP * steps


def valid_output(side: int) -> int:
    """Output side of a valid input side (s - 184: figure 1's 572 -> 388)."""
    return side - 2 * UNET2015_CONTEXT


def valid_input_covering(side: int) -> int:
    """The smallest valid input side whose output is at least `side` pixels."""
    needed = side + 2 * UNET2015_CONTEXT
    steps = max(_MIN_STEPS, -(-(needed - _VALID_BASE) // _VALID_STEP))
    return _VALID_BASE + _VALID_STEP * steps


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True))


def _upconv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2), nn.ReLU(inplace=True)
    )


def _centre_crop(x: Tensor, height: int, width: int) -> Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UNet2015(nn.Module):
    """The 2015 U-Net; `valid_forward` is the paper's net, `forward` the contract's (any size).

    Args:
        num_classes: classes scored by the final 1x1 convolution (the paper's 2).
        in_channels: image channels (the paper's 1).
        dropout: the ratio of the two dropouts at the end of the contracting path.
        width_divisor: divides every width (1: the paper's 64 ... 1024); for tests only.
    """

    #: Context lost per side by the valid net; the overlap-tile inference mirrors it.
    tile_context: int = UNET2015_CONTEXT
    #: The output tile of figure 1, the overlap-tile mode's default.
    default_tile_output: int = UNET2015_TILE_OUTPUT

    def __init__(
        self, num_classes: int, in_channels: int = 3, dropout: float = UNET2015_DROPOUT,
        width_divisor: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width_divisor < 1 or not 0 <= dropout < 1:
            raise ModelOptionError(
                f"unet2015 needs num_classes, in_channels, width_divisor >= 1 and dropout in "
                f"[0, 1), got {num_classes}, {in_channels}, {width_divisor}, {dropout}"
            )
        c0, c1, c2, c3, c4 = (max(1, c // width_divisor) for c in UNET2015_CHANNELS)
        self.conv_d0a_b, self.conv_d0b_c = _conv(in_channels, c0), _conv(c0, c0)
        self.conv_d1a_b, self.conv_d1b_c = _conv(c0, c1), _conv(c1, c1)
        self.conv_d2a_b, self.conv_d2b_c = _conv(c1, c2), _conv(c2, c2)
        self.conv_d3a_b, self.conv_d3b_c = _conv(c2, c3), _conv(c3, c3)
        self.dropout_d3c = nn.Dropout(dropout)
        self.conv_d4a_b, self.conv_d4b_c = _conv(c3, c4), _conv(c4, c4)
        self.dropout_d4c = nn.Dropout(dropout)
        self.upconv_d4c_u3a = _upconv(c4, c3)
        self.conv_u3b_c, self.conv_u3c_d = _conv(2 * c3, c3), _conv(c3, c3)
        self.upconv_u3d_u2a = _upconv(c3, c2)
        self.conv_u2b_c, self.conv_u2c_d = _conv(2 * c2, c2), _conv(c2, c2)
        self.upconv_u2d_u1a = _upconv(c2, c1)
        self.conv_u1b_c, self.conv_u1c_d = _conv(2 * c1, c1), _conv(c1, c1)
        self.upconv_u1d_u0a = _upconv(c1, c0)
        self.conv_u0b_c, self.conv_u0c_d = _conv(2 * c0, c0), _conv(c0, c0)
        self.conv_u0d_score = nn.Conv2d(c0, num_classes, 1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.num_classes = num_classes
        self.in_channels = in_channels
        #: ImageNet numbers for RGB (any trained-from-scratch net needs some fixed numbers; these
        #: match the other models'), measured per band for other channel counts, as segmenters do.
        self.normalization = "imagenet" if in_channels == 3 else "per_channel"
        self.head_classes: dict[str, int] = {}

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """The 1x1 scorer: everything else transfers to other classes (engine/transfer.py)."""
        return ("conv_u0d_score",)

    @staticmethod
    def tile_output_size(side: int) -> int:
        """The output side of the valid tile nearest an output of `side` (388, 404, ...)."""
        return valid_output(nearest_valid_input(side + 2 * UNET2015_CONTEXT))

    def valid_forward(self, x: Tensor) -> Tensor:
        """The paper's net: a valid N x C x s x s' tile -> N x classes x (s-184) x (s'-184)."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        for side in (height, width):
            if not is_valid_input(side):
                raise DataError(
                    f"unet2015: input side {side} is not a valid tile (every pooling must see "
                    f"an even size: 124 + 16k, k >= 4); use {nearest_valid_input(side)} or the "
                    "model's forward, which mirrors any size"
                )
        d0 = self.conv_d0b_c(self.conv_d0a_b(x))
        d1 = self.conv_d1b_c(self.conv_d1a_b(self.pool(d0)))
        d2 = self.conv_d2b_c(self.conv_d2a_b(self.pool(d1)))
        d3 = self.dropout_d3c(self.conv_d3b_c(self.conv_d3a_b(self.pool(d2))))
        u = self.dropout_d4c(self.conv_d4b_c(self.conv_d4a_b(self.pool(d3))))
        u = self._up(self.upconv_d4c_u3a, self.conv_u3b_c, self.conv_u3c_d, u, d3)
        u = self._up(self.upconv_u3d_u2a, self.conv_u2b_c, self.conv_u2c_d, u, d2)
        u = self._up(self.upconv_u2d_u1a, self.conv_u1b_c, self.conv_u1c_d, u, d1)
        u = self._up(self.upconv_u1d_u0a, self.conv_u0b_c, self.conv_u0c_d, u, d0)
        return self.conv_u0d_score(u)

    @staticmethod
    def _up(upconv: nn.Module, first: nn.Module, second: nn.Module, x: Tensor, skip: Tensor):
        """Up-convolve, concatenate the centre crop of `skip`, two valid 3x3 convolutions."""
        x = upconv(x)
        x = torch.cat([_centre_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1)
        return second(first(x))

    def forward(self, x: Tensor) -> Tensor:
        """N x C x H x W -> N x classes x H x W: the image mirrored into one valid tile."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"unet2015 expects a normalised N x {self.in_channels} x H x W batch, got shape "
                f"{tuple(x.shape)}"
            )
        height, width = x.shape[-2], x.shape[-1]
        bottom = _padding_to_valid(height)
        right = _padding_to_valid(width)
        tile = mirror_pad(x, FORWARD_MARGIN, bottom, FORWARD_MARGIN, right)
        logits = self.valid_forward(tile)
        crop = _FORWARD_CROP
        return logits[..., crop : crop + height, crop : crop + width]


def _padding_to_valid(side: int | Tensor) -> int | Tensor:
    """Mirrored pixels below/right of a `side` image so that margin + side + this is valid.

    At least the context plus the crop (the output must reach past the image); in closed form
    so that an ONNX trace keeps it a function of the symbolic size.
    """
    least = side + 2 * UNET2015_CONTEXT + _FORWARD_CROP
    steps = torch.clamp(
        torch.div(torch.as_tensor(least, device="cpu") - _VALID_BASE + _VALID_STEP - 1, _VALID_STEP,
                  rounding_mode="floor"),
        min=_MIN_STEPS,
    )  # fmt: skip
    return _VALID_BASE + _VALID_STEP * steps - side - FORWARD_MARGIN


@register_model(
    "unet2015",
    description="U-Net as published (Ronneberger et al. 2015): valid convs, 572 -> 388 tiles, "
    "mirrored borders",
    family="unet2015",
)
def build_unet2015(
    num_classes: int,
    *,
    pretrained: bool | str = False,
    in_channels: int = 3,
    dropout: float = UNET2015_DROPOUT,
    width_divisor: int = 1,
) -> UNet2015:
    """The 2015 U-Net, trained from scratch as in the paper (no ImageNet weights exist for it)."""
    if pretrained is True:
        raise ModelOptionError(
            "unet2015 has no pretrained weights (the paper trains from scratch); use "
            "pretrained=false or a weights file via model.init"
        )
    return UNet2015(num_classes, in_channels, dropout, width_divisor)
