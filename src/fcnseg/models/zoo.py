"""Model name -> builder table, so that the CLI, configs and Python share one namespace.

Builders register themselves with `@register_model("name", ...)`; `build_model` looks them up.
Metadata travels with the name so that `fcnseg models` can list every model without building it.
"""

from __future__ import annotations

import functools
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
    import fcnseg.models.fusion  # noqa: F401
    import fcnseg.models.heads  # noqa: F401


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


# --- Model table for `fcnseg models` ----------------------------------------------------------

#: Input side (pixels) at which `model_table` reports GFLOPs: a common segmentation crop.
TABLE_FLOPS_SIZE: int = 512
#: Classes of the models built for the table (PASCAL VOC's 21, the paper's main benchmark).
TABLE_NUM_CLASSES: int = 21


@dataclass(frozen=True)
class ModelRow:
    """One row of `fcnseg models`: cost figures and whether ImageNet weights are installed."""

    name: str
    family: str
    description: str
    #: Trainable parameters (frozen bilinear upsampling kernels are not counted).
    parameters: int
    #: Forward GFLOPs at TABLE_FLOPS_SIZE^2, batch 1 (a multiply-add counts 2, as in
    #: torch.utils.flop_counter); None when not computed.
    gflops: float | None
    weights_offline: bool


@functools.cache
def _model_cost(name: str, size: int, with_flops: bool) -> tuple[int, float | None]:
    """Trainable parameters and GFLOPs of `name`, built on the meta device (no memory, no weights).

    The meta device makes even the 134M-parameter VGG FCNs cost a fraction of a second: shapes
    flow through the network, nothing is allocated or computed; results are cached per process.
    """
    import inspect

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    info = model_info(name)
    options: dict[str, Any] = {}
    parameters_of_builder = inspect.signature(info.builder).parameters.values()
    if any(
        p.name == "pretrained" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters_of_builder
    ):
        options["pretrained"] = False  # no weight files are read for a cost estimate
    with torch.device("meta"):
        model = build_model(name, TABLE_NUM_CLASSES, **options).eval()
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if not with_flops:
            return parameters, None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, getattr(model, "in_channels", 3), size, size))
    return parameters, counter.get_total_flops() / 1e9


def model_table(
    names: list[str] | None = None, flops: bool = True, size: int = TABLE_FLOPS_SIZE
) -> list[ModelRow]:
    """One row per registered model (or per name in `names`), for `fcnseg models`.

    `flops=False` skips the FLOP count (parameters only) for a faster listing.
    """
    rows = []
    for name in names if names is not None else list_models():
        info = model_info(name)
        parameters, gflops = _model_cost(name, size, flops)
        rows.append(
            ModelRow(
                name=name,
                family=info.family,
                description=info.description,
                parameters=parameters,
                gflops=gflops,
                weights_offline=bool(info.weights_available()),
            )
        )
    return rows


def format_model_table(rows: list[ModelRow]) -> str:
    """Plain-text table of `rows`: name, trainable Mparams, GFLOPs, offline weights, description."""
    header = f"{'model':<30} {'params(M)':>9} {'GFLOPs':>8} {'weights':>7}  description"
    lines = [header, "-" * len(header)]
    for row in rows:
        gflops = "-" if row.gflops is None else f"{row.gflops:.1f}"
        weights = "yes" if row.weights_offline else "no"
        lines.append(
            f"{row.name:<30} {row.parameters / 1e6:>9.2f} {gflops:>8} {weights:>7}  "
            f"{row.description}"
        )
    return "\n".join(lines)
