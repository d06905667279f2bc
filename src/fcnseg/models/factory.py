"""Build a registered model by name and check that it keeps the model contract.

The registry (a leaf) only stores builders; this module calls them. It does not import the model
modules: `fcnseg.models` (the package) does, so the table is full whenever anything under
`fcnseg.models` has been imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.protocol import NORMALIZATIONS, PROTOCOL_ATTRIBUTES
from fcnseg.models.registry import ModelInfo, lookup, registered_names


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return registered_names()


def model_info(name: str) -> ModelInfo:
    """Metadata of `name`; a ModelOptionError with the list of valid names for an unknown one.

    The registry (a leaf that imports nothing of fcnseg) raises KeyError; a user's typo in a
    model name is the user's to fix, so it becomes the project's error type here.
    """
    if not isinstance(name, str):
        raise ModelOptionError(
            f"model name must be a string, got {name!r}; `fcnseg models` lists them"
        )
    try:
        return lookup(name)
    except KeyError as error:
        raise ModelOptionError(str(error.args[0])) from None


#: Keyword arguments every build_model caller may pass whatever the builder (not model options).
_ALWAYS_ACCEPTED: frozenset[str] = frozenset({"pretrained"})
#: Model options every model accepts because the factory, not the builder, reads them: "crf"
#: wraps the built model in mean-field CRF layers (models/meanfield.py; `model.crf` of a recipe).
WRAPPER_OPTIONS: frozenset[str] = frozenset({"crf"})


def accepted_options(name: str, options: Mapping[str, Any] | None = None) -> set[str]:
    """The option names the builder of model `name` accepts (besides num_classes).

    Read from the builder's signature. A wrapper builder that forwards `**kwargs` to a `base`
    model (fusion, multi-head) accepts its own parameters plus the base builder's; a `**kwargs`
    that goes nowhere else is not an open door (build_fcn uses it only to name unknown options).
    Why: an unknown key in `model.options` used to reach the builder as a TypeError traceback,
    after the run directory had been made.
    """
    info = model_info(name)
    parameters = inspect.signature(info.builder).parameters.values()
    named = {
        p.name
        for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "num_classes"
    }
    forwards = any(p.kind is p.VAR_KEYWORD for p in parameters) and "base" in named
    if forwards:
        base = {**info.defaults, **(options or {})}.get("base")
        if isinstance(base, str) and base != name:
            named |= accepted_options(base, {})
    return named | _ALWAYS_ACCEPTED | WRAPPER_OPTIONS


def check_model_options(
    name: str, options: Mapping[str, Any], where: str = "model.options"
) -> None:
    """ModelOptionError naming the first key of `options` that model `name` does not accept.

    Called on recipes (config.validate), weights metadata and by build_model, so an unknown key is
    one line before anything is built or written.
    """
    if not isinstance(options, Mapping):
        raise ModelOptionError(f"{where}: expected a mapping of option names, got {options!r}")
    accepted = accepted_options(name, options)
    for key in options:
        if key not in accepted:
            raise ModelOptionError(
                f"{where}: unknown key {key!r} for model {name!r}; it accepts "
                f"{', '.join(sorted(accepted))}"
            )


def check_model_contract(model: nn.Module, name: str) -> None:
    """TypeError naming what `model` lacks of `SegmentationModel` (a bug in its builder)."""
    missing = [attr for attr in PROTOCOL_ATTRIBUTES if not hasattr(model, attr)]
    if missing:
        raise TypeError(f"model {name!r} ({type(model).__name__}) lacks attributes {missing}")
    if model.normalization not in NORMALIZATIONS:
        raise TypeError(f"model {name!r}: normalization {model.normalization!r} is not known")


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with `num_classes` output classes.

    A `crf` option (a mapping, `model.crf` of a recipe) wraps the built model in mean-field CRF
    layers (MeanFieldCRF), which keep its contract attributes; the builder never sees it.
    """
    info = model_info(name)
    check_model_options(name, kwargs)
    crf = kwargs.pop("crf", None)
    options = {**info.defaults, **kwargs}
    model = info.builder(num_classes=num_classes, **options)
    check_model_contract(model, name)
    if crf is not None:
        from fcnseg.models.meanfield import MeanFieldCRF, parse_crf_options

        model = MeanFieldCRF(model, parse_crf_options(crf))
        check_model_contract(model, name)
    return model
