"""The segmentation shell: any backbone plus any decode head, run at any input size.

Why a shell: what surrounds a decoder is the same for every decoder and easy to get subtly
wrong: resize the input by `input_scale`, pad it to a multiple of the backbone's stride, encode
to named feature maps, decode at the padded size, crop back, and resize the logits to the
caller's size. Before the shell this lived inside the FCN model, so a benchmark comparing other
decoders had to copy the padding. The structure follows torchvision's backbone + classifier
pair and smp's encoder -> decoder -> head; the head contract is `fcnseg.models.heads.base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.errors import DataError, ModelOptionError
from fcnseg.models.backbones.base import Backbone
from fcnseg.models.heads.base import DecodeHead, require_features

#: torch.nn.functional.pad modes the shell can pad with.
PAD_MODES: tuple[str, ...] = ("constant", "reflect", "replicate")


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "constant") -> Tensor:
    """Pad the bottom/right of an N x C x H x W batch so H and W are multiples of `multiple`.

    "constant" pads zeros, which after normalisation is the mean colour. Callers crop their
    output back to the input's size.
    """
    height, width = x.shape[-2:]
    pad_bottom = (multiple - height % multiple) % multiple
    pad_right = (multiple - width % multiple) % multiple
    return F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode)


def check_head_fits(backbone: Backbone, head: DecodeHead) -> None:
    """ModelOptionError in one line when `head` reads maps `backbone` lacks or has elsewhere."""
    who = type(head).__name__
    require_features(who, head.in_features, backbone.channels)
    here = {name: backbone.strides[name] for name in head.in_features}
    if here != head.in_strides:
        raise ModelOptionError(
            f"{who} was built for feature strides {head.in_strides} but this backbone has "
            f"{here}; build the head from this backbone's strides"
        )


class SegmentationShell(nn.Module):
    """Backbone + decode head: normalised N x C x H x W images -> N x classes x H x W logits.

    Args:
        backbone: named feature maps at known strides (`Backbone`); attribute `backbone`.
        head: a `DecodeHead` built for this backbone's channels and strides; attribute `head`.
            The two attribute names are the state-dict prefixes of shipped weights.
        input_scale: the net runs on the input resized by this factor.
        pad_multiple: pad inputs to a multiple of this (default: the backbone's output stride).
        pad_mode: how the padding is filled ("constant": zeros, the mean colour).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: DecodeHead,
        *,
        input_scale: float = 1.0,
        pad_multiple: int | None = None,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if not input_scale > 0:
            raise ModelOptionError(f"input_scale must be a positive factor, got {input_scale}")
        if pad_mode not in PAD_MODES:
            raise ModelOptionError(f"pad_mode={pad_mode!r} is not one of {', '.join(PAD_MODES)}")
        check_head_fits(backbone, head)
        self.backbone = backbone
        self.head = head
        self.num_classes: int = head.num_classes
        #: Input preset the encoder weights expect (see fcnseg.data.transforms.normalize).
        self.normalization: str = backbone.normalization
        #: A single-tensor output (see fcnseg.models.protocol.SegmentationModel).
        self.head_classes: dict[str, int] = {}
        #: Input channels; early fusion (fcnseg.models.fusion.expand_input_channels) raises it.
        self.in_channels: int = 3
        #: Inputs are padded at the bottom/right to a multiple of the output stride and the
        #: logits cropped back. Why: encoders with TF-"same" padding (EfficientNet-Lite) place
        #: their stride-2 samples differently when a stage's size is odd, so a net trained on
        #: crops that are multiples of 32 is misaligned by a fraction of a stride at other sizes;
        #: on CamVid val (360 rows) this padding was worth +6 mean IU points
        #: (benchmarks/RESULTS.md). Set to 1 to disable.
        self.pad_multiple: int = backbone.output_stride if pad_multiple is None else pad_multiple
        self.pad_mode: str = pad_mode
        #: The net runs on the input resized by this factor and its logits are resized back, so
        #: predictions stay at the caller's resolution. Why: thin structures (CamVid's poles are
        #: 1-3 px wide at 360x480) vanish at a stride-4 head; seen larger they survive. Training
        #: crops are resized by the same factor inside the net, so train and test agree (a 224x288
        #: crop at 1.5 costs what a 336x432 crop costs at 1.0).
        self.input_scale: float = float(input_scale)
        #: The head's auxiliary scores of the last training-mode forward (None in eval mode or
        #: for heads without one): what the loop adds to the loss with weight
        #: `train.aux_weight` (protocol.auxiliary_logits). Replaced by every forward.
        self.auxiliary_logits: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        shared = self.trunk_features(x)
        logits = self.score_features(shared, x)
        self.auxiliary_logits = self._auxiliary(shared, x) if self.training else None
        return logits

    @property
    def trunk_module_names(self) -> tuple[str, ...]:
        """Children computing `trunk_features`; the heads of a multi-head net share them."""
        return ("backbone",)

    def trunk_features(self, x: Tensor) -> tuple[dict[str, Tensor], torch.Size, torch.Size]:
        """(backbone features, padded size, scaled size) of `x`: what no class count shapes.

        The first half of `forward` (protocol.SharedTrunkModel): a multi-head net
        (fcnseg.models.multihead) runs it once and `score_features` once per head.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"{type(self).__name__} expects a normalised N x {self.in_channels} x H x W "
                f"batch, got shape {tuple(x.shape)}"
            )
        if self.input_scale != 1.0:
            x = F.interpolate(
                x,
                scale_factor=self.input_scale,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
        padded = pad_to_multiple(x, self.pad_multiple, self.pad_mode)
        return self.backbone(padded), padded.shape[-2:], x.shape[-2:]

    def score_features(
        self, shared: tuple[dict[str, Tensor], torch.Size, torch.Size], x: Tensor
    ) -> Tensor:
        """The logits of `x` from `trunk_features(x)`: decode, crop back, resize to `x`."""
        features, padded_size, _ = shared
        return self._to_input_size(self.head(features, padded_size), shared, x)

    def _auxiliary(
        self, shared: tuple[dict[str, Tensor], torch.Size, torch.Size], x: Tensor
    ) -> Tensor | None:
        """The head's training-only scores (`DecodeHead.auxiliary_logits`) at `x`'s size."""
        features, padded_size, _ = shared
        logits = self.head.auxiliary_logits(features, padded_size)
        return None if logits is None else self._to_input_size(logits, shared, x)

    def _to_input_size(
        self, logits: Tensor, shared: tuple[dict[str, Tensor], torch.Size, torch.Size], x: Tensor
    ) -> Tensor:
        """Logits at the padded size cropped back to the scaled input, then resized to `x`."""
        _, _, (scaled_height, scaled_width) = shared
        height, width = x.shape[-2:]
        logits = logits[..., :scaled_height, :scaled_width]
        if self.input_scale != 1.0:
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        return logits
