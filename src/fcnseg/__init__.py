"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell).

`build_model`, `list_models` and `model_info` are loaded on first use (PEP 562 module
`__getattr__`). Why: every `fcnseg` command imports this package first, and the model registry
imports torch and torchvision, seconds of start-up that `fcnseg --help` or a mistyped flag must
not pay. `from fcnseg import build_model` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fcnseg.version import __version__

__all__ = ["__version__", "build_model", "list_models", "model_info"]

#: Names this package re-exports from fcnseg.models, imported when first asked for.
_FROM_MODELS = frozenset({"build_model", "list_models", "model_info"})

if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from fcnseg.models import build_model, list_models, model_info


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        from fcnseg import models

        value = getattr(models, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'fcnseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_MODELS})
