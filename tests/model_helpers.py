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


#: The test-only registry name of `BandedNet` (see `banded_weights`).
BANDED = "test_banded_net"


class BandedNet(torch.nn.Module):
    """Two 3x3 convolutions from `in_channels` bands to class logits at the input size: the
    smallest model that honours the fcnseg contract for any band count (issue 23 tests)."""

    normalization = "per_channel"

    def __init__(self, num_classes: int = 3, pretrained: bool = False, in_channels: int = 3):
        super().__init__()
        torch.manual_seed(3)
        self.num_classes, self.in_channels, self.head_classes = num_classes, in_channels, {}
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 6, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(6, num_classes, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def banded_metadata_dict(in_channels: int, mean: list[float], std: list[float], classes=3):
    """The metadata a BandedNet weights file carries: its band count (model_options) and its
    per-band normalisation numbers, as training writes them."""
    from fcnseg.engine.checkpoint import weights_metadata

    return weights_metadata(
        BANDED,
        {"in_channels": in_channels},
        num_classes=classes,
        classes=[f"class{index}" for index in range(classes)],
        palette=[[(80 * index) % 256, 40, (200 + 60 * index) % 256] for index in range(classes)],
        normalization="per_channel",
        ignore_index=255,
        data_format="folder",
        normalization_stats={"mean": list(mean), "std": list(std)},
    )


def banded_session(in_channels: int, mean: list[float], std: list[float], spec=None):
    """An in-memory InferenceSession of a BandedNet and its metadata (no file, no registry)."""
    from fcnseg.engine.metadata import validate_weights_metadata
    from fcnseg.engine.session import InferenceSession

    metadata = validate_weights_metadata(banded_metadata_dict(in_channels, mean, std), "test")
    model = BandedNet(3, in_channels=in_channels).eval()
    return InferenceSession.for_model(model, metadata, spec=spec)


def banded_weights(path, in_channels: int, mean: list[float], std: list[float]):
    """Save a BandedNet for `in_channels` bands as a weights file (`banded_metadata_dict`);
    BANDED must be registered while the file is loaded (`registered_banded_net`)."""
    from fcnseg.engine.checkpoint import save_weights

    model = BandedNet(3, in_channels=in_channels).eval()
    save_weights(path, model, banded_metadata_dict(in_channels, mean, std))
    return model


def registered_banded_net():
    """A context in which BANDED names BandedNet in the registry (removed after, so the
    registry and listing tests see the shipped models only)."""
    import contextlib

    from fcnseg.models import registry

    @contextlib.contextmanager
    def context():
        added = BANDED not in registry.registered_names()
        if added:
            registry.register_model(BANDED, description="test-only banded net")(BandedNet)
        try:
            yield
        finally:
            if added:
                registry._TABLE.pop(BANDED, None)

    return context()


def synthetic_weights(path, model_name: str, options: dict):
    """A random `model_name`'s weights at `path`, classes of the synthetic dataset, its stored
    recipe naming that dataset with `options` (so eval/predict find their data from the file)."""
    from fcnseg.data.datasets.registry import get_dataset_class
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model

    info = get_dataset_class("synthetic").class_info
    torch.manual_seed(0)
    model = build_model(model_name, len(info.names), pretrained=False)
    meta = weights_metadata(
        model_name,
        {},
        num_classes=len(info.names),
        classes=list(info.names),
        palette=[list(c) for c in info.palette],
        normalization=str(model.normalization),
        ignore_index=info.ignore_index,
        data_format="synthetic",
    )
    meta["config"] = {"data": {"format": "synthetic", "options": options, "val_split": "val"}}
    save_weights(path, model, meta)
    return path
