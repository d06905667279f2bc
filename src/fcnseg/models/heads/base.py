"""The decode-head contract: what a head reads from a backbone and what it returns.

Why a contract: the segmentation shell (`fcnseg.models.shell`) runs any backbone and any head
the same way (scale, pad to the stride, encode, decode, crop back), so a new decoder is one
class that says which named feature maps it reads and turns them into class scores. The idea
follows torchvision's backbone + classifier pair and mmseg's decode heads; the feature names
are the backbone contract's ("s4".."s32", `fcnseg.models.backbones.base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fcnseg.errors import ModelOptionError


def require_features(
    who: str, needed: Sequence[str], channels: Mapping[str, int], hint: str = ""
) -> None:
    """One-line ModelOptionError when a head needs feature maps that the backbone lacks."""
    missing = [name for name in needed if name not in channels]
    if missing:
        advice = f"; {hint}" if hint else "; choose a head that reads fewer feature maps"
        raise ModelOptionError(
            f"{who} needs backbone features {missing} that this backbone lacks "
            f"(it has {sorted(channels)}){advice}"
        )


class DecodeHead(nn.Module):
    """Base class: named backbone features -> N x num_classes x out_size logits.

    Subclasses call `super().__init__` with the backbone's `channels` and `strides` and the
    feature names they read, then build their layers; `forward(features, out_size)` must return
    scores of exactly `out_size` (the padded input size the shell hands over).

    Attributes:
        num_classes: classes scored.
        in_features: names of the backbone feature maps read, in the order the head uses them.
        in_strides: the stride of each feature read, as the head was built for it; the shell
            refuses a backbone whose maps lie at other strides (the upsampling would be wrong).
    """

    num_classes: int
    in_features: tuple[str, ...]
    in_strides: dict[str, int]

    def __init__(
        self,
        channels: Mapping[str, int],
        strides: Mapping[str, int],
        num_classes: int,
        in_features: Sequence[str],
        *,
        who: str = "",
        hint: str = "",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ModelOptionError(f"num_classes must be >= 1, got {num_classes}")
        require_features(who or type(self).__name__, in_features, channels, hint)
        self.num_classes = num_classes
        self.in_features = tuple(in_features)
        self.in_strides = {name: int(strides[name]) for name in self.in_features}

    @property
    def class_score_layers(self) -> tuple[str, ...]:
        """Names (relative to the head) of the layers with one channel per class.

        Why declared: fine-tuning on other classes (`model.init`, engine/transfer.py) keeps every
        other tensor and re-initialises exactly these, so a head says which they are rather than
        the engine guessing from shapes. A head that scores classes must override this.
        """
        return ()

    def auxiliary_logits(
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor | None:
        """Extra N x num_classes x out_size scores for the training loss only, or None.

        Why a second method and not a second output: evaluation, export and serving call the
        model and must see one tensor. A head with deep supervision (PSPNet's stride-16 score)
        overrides this; the shell calls it in training mode only and keeps the result in
        `SegmentationShell.auxiliary_logits` for the loop (weight `train.aux_weight`).
        """
        return None

    def forward(  # pragma: no cover - interface
        self, features: dict[str, Tensor], out_size: tuple[int, int] | torch.Size
    ) -> Tensor:
        raise NotImplementedError
