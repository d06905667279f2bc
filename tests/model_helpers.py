"""Test helpers for models: a tiny deterministic backbone, and the paper's stage-wise init."""

from __future__ import annotations

import torch

from fcnseg.models.backbones.base import Backbone


class PoolBackbone(Backbone):
    """Strided 3x3 convolutions with PyTorch's symmetric padding; maps "s4".."s32".

    Below `output_stride` the stages stop striding and dilate instead (an atrous backbone), so
    several names can share one stride, as the real atrous encoders do.
    """

    def __init__(self, output_stride: int = 32, width: int = 4) -> None:
        super().__init__()
        self.channels, self.strides = {}, {}
        self.normalization = "imagenet"
        layers, in_channels, stride = [], 3, 1
        for level in range(5):
            step = 2 if stride < output_stride else 1
            dilation = 1 if step == 2 else 2
            layers.append(torch.nn.Conv2d(in_channels, width, 3, step, dilation, dilation))
            stride *= step
            in_channels = width
            if level >= 1:
                self.channels[f"s{2 ** (level + 1)}"] = width
                self.strides[f"s{2 ** (level + 1)}"] = stride
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x):
        out = {}
        for level, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if level >= 1:
                out[f"s{2 ** (level + 1)}"] = x
        return out


def copy_same_named(fine: torch.nn.Module, coarse: torch.nn.Module) -> list[str]:
    """Copy every tensor of `coarse` whose name and shape exist in `fine`; the names copied.

    What `fcnseg.engine.setup.initialise_from` does with a weights file (the paper's stage-wise
    init: FCN-16s from FCN-32s), done in memory so model tests need no engine and no file.
    """
    own = fine.state_dict()
    same = {k: v for k, v in coarse.state_dict().items() if k in own and own[k].shape == v.shape}
    fine.load_state_dict(same, strict=False)
    return list(same)


def tiny_serve_metadata():
    """Weights metadata of a 3-class model (sky, road, car) for serving tests whose nets are
    stand-ins: the serve tests share it so that they describe one and the same model."""
    from fcnseg.engine.metadata import validate_weights_metadata

    return validate_weights_metadata(
        {
            "model": "tiny",
            "num_classes": 3,
            "classes": ["sky", "road", "car"],
            "palette": [[70, 130, 180], [128, 64, 128], [0, 0, 142]],
            "normalization": "imagenet",
            "ignore_index": 255,
        },
        "test",
    )
