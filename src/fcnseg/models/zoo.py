"""Model name -> builder table, so that the CLI, configs and Python share one namespace.

Builders register themselves with `@register_model("name", ...)`; `build_model` looks them up.
Metadata travels with the name so that `fcnseg models` can list every model without building it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What `fcnseg models` shows about a model name."""

    name: str
    builder: Callable[..., nn.Module]
    description: str = ""
    family: str = ""
    #: Returns True when ImageNet weights for the encoder are installed on this machine.
    weights_available: Callable[[], bool] = field(default=lambda: False)
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    description: str = "",
    family: str = "",
    weights_available: Callable[[], bool] | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `builder(num_classes=..., **kwargs) -> nn.Module` under `name`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            description=description,
            family=family,
            weights_available=weights_available or (lambda: False),
            defaults=dict(defaults),
        )
        return builder

    return wrap


def _ensure_registered() -> None:
    """Import the modules whose decorators fill the registry (lazy, to keep import cheap)."""
    import fcnseg.models.fcn  # noqa: F401
    import fcnseg.models.heads  # noqa: F401
    import fcnseg.models.fusion  # noqa: F401


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _ensure_registered()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """Metadata of `name`; raises KeyError with the list of valid names."""
    _ensure_registered()
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))} "
            "(`fcnseg models` lists them)"
        )
    return _REGISTRY[name]


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with `num_classes` output classes."""
    info = model_info(name)
    options = {**info.defaults, **kwargs}
    return info.builder(num_classes=num_classes, **options)
