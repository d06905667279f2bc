"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell).

`build_model`, `list_models` and `model_info` (from fcnseg.models) and `load` / `Segmenter`
(from fcnseg.api: `fcnseg.load(weights).predict(image)`) are loaded on first use (PEP 562
module `__getattr__`). Why: every `fcnseg` command imports this package first, and the model registry
imports torch and torchvision, seconds of start-up that `fcnseg --help` or a mistyped flag must
not pay. `from fcnseg import build_model` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fcnseg.version import __version__

__all__ = ["Segmenter", "__version__", "build_model", "list_models", "load", "model_info"]

#: Names this package re-exports from fcnseg.models, imported when first asked for.
_FROM_MODELS = frozenset({"build_model", "list_models", "model_info"})
#: Names this package re-exports from fcnseg.api (the Python way in), imported when first asked.
_FROM_API = frozenset({"load", "Segmenter"})

if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from fcnseg.api import Segmenter, load
    from fcnseg.models import build_model, list_models, model_info


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        from fcnseg import models

        value = getattr(models, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _FROM_API:
        from fcnseg import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fcnseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_MODELS, *_FROM_API})
