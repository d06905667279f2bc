"""Build a registered model by name and check that it keeps the model contract.

The registry (a leaf) only stores builders; this module calls them. It does not import the model
modules: `fcnseg.models` (the package) does, so the table is full whenever anything under
`fcnseg.models` has been imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fcnseg.models.protocol import NORMALIZATIONS, PROTOCOL_ATTRIBUTES
from fcnseg.models.registry import ModelInfo, lookup, registered_names


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return registered_names()


def model_info(name: str) -> ModelInfo:
    """Metadata of `name`; raises KeyError with the list of valid names."""
    return lookup(name)


def check_model_contract(model: nn.Module, name: str) -> None:
    """TypeError naming what `model` lacks of `SegmentationModel` (a bug in its builder)."""
    missing = [attr for attr in PROTOCOL_ATTRIBUTES if not hasattr(model, attr)]
    if missing:
        raise TypeError(f"model {name!r} ({type(model).__name__}) lacks attributes {missing}")
    if model.normalization not in NORMALIZATIONS:
        raise TypeError(f"model {name!r}: normalization {model.normalization!r} is not known")


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with `num_classes` output classes."""
    info = lookup(name)
    options = {**info.defaults, **kwargs}
    model = info.builder(num_classes=num_classes, **options)
    check_model_contract(model, name)
    return model
