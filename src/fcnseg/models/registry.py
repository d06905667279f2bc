"""The model-name table: a leaf module that imports nothing of fcnseg.

Why a leaf: model modules register themselves here at import time and the factory reads the
table, so neither needs the other. Keeping this module free of package imports is what rules out
the import cycle the old `zoo.py` had (it imported the model modules, which imported it back);
`tests/test_architecture.py` checks that it stays a leaf. Metadata travels with the name so that
`fcnseg models` and the training presets can read a model's facts without building it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _never_available() -> bool:
    return False


@dataclass(frozen=True)
class ModelInfo:
    """One registered model name: its builder and what can be known without building it."""

    name: str
    builder: Callable[..., Any]
    description: str = ""
    family: str = ""
    #: Returns True when ImageNet weights for the encoder are installed on this machine.
    weights_available: Callable[[], bool] = _never_available
    #: Keyword arguments the builder receives unless the caller overrides them.
    defaults: dict[str, Any] = field(default_factory=dict)
    #: The stage of the paper's stage-wise training ("fcn32s", "fcn16s", "fcn8s"; "fcn8s_atonce"
    #: for the FCN-8s trained in one stage from ImageNet weights), which decides the `paper`
    #: preset's solver (constants.PAPER_LR); None for models outside it.
    paper_stage: str | None = None
    #: The authors' release net whose solver.prototxt the `release` preset reproduces (a key of
    #: constants.RELEASE_SOLVERS, e.g. "voc-fcn32s"). Wrappers whose release net depends on their
    #: base model write "{stage}" for the base's paper stage ("siftflow-{stage}"). None: the
    #: release has no such net.
    release_solver: str | None = None


_TABLE: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    description: str = "",
    family: str = "",
    weights_available: Callable[[], bool] | None = None,
    paper_stage: str | None = None,
    release_solver: str | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering `builder(num_classes=..., **kwargs)` under `name`.

    The remaining keyword arguments become the builder's defaults for this name, which is how one
    builder serves a family of names (fcn8s_resnet18, fcn16s_resnet18, ...).
    """

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TABLE:
            raise ValueError(f"model name {name!r} registered twice")
        _TABLE[name] = ModelInfo(
            name=name,
            builder=builder,
            description=description,
            family=family,
            weights_available=weights_available or _never_available,
            defaults=dict(defaults),
            paper_stage=paper_stage,
            release_solver=release_solver,
        )
        return builder

    return wrap


def registered_names() -> list[str]:
    """Every registered name, sorted (only models whose modules have been imported)."""
    return sorted(_TABLE)


def lookup(name: str) -> ModelInfo:
    """The entry of `name`; KeyError with the list of valid names (a user's typo is common)."""
    if name not in _TABLE:
        raise KeyError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(_TABLE))} "
            "(`fcnseg models` lists them)"
        )
    return _TABLE[name]
