"""InferenceSpec: the one definition of inference modes, options and their bounds."""

from __future__ import annotations

import json

import pytest

from fcnseg.errors import DataError, UsageError, WeightsError
from fcnseg.inference.spec import (
    MAX_FORWARD_PIXELS_ENV,
    OPTION_NAMES,
    InferenceSpec,
    max_forward_pixels,
)


def test_options_are_the_keyword_arguments_of_predict_logits():
    import inspect

    from fcnseg.inference import predict_logits

    keywords = {
        p.name
        for p in inspect.signature(predict_logits).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }
    assert set(OPTION_NAMES) == keywords


def test_options_keep_the_order_given_and_json_is_unchanged():
    given = {"flip": True, "scales": [1.0, 1.25]}
    spec = InferenceSpec.parse("multiscale", given)
    assert list(spec.options()) == ["flip", "scales"]
    assert json.dumps(spec.options()) == json.dumps(given)
    merged = spec.with_options({"scales": (0.5,), "tile_size": 64})
    assert merged.options() == {"flip": True, "scales": (0.5,), "tile_size": 64}
    assert merged.mode == "multiscale" and not merged.recommendable()
    assert spec.recommendable()


@pytest.mark.parametrize(
    ("mode", "options", "named"),
    [
        ("tiled", {}, "mode"),
        ("sliding", {}, "tile_size"),
        ("sliding", {"tile_size": 8}, "tile_size"),
        ("sliding", {"tile_size": [64, 64, 64]}, "tile_size"),
        ("multiscale", {"scales": []}, "scales"),
        ("multiscale", {"scales": [0]}, "scales"),
        ("multiscale", {"flip": "yes"}, "flip"),
        ("whole", {"overlap": 1.0}, "overlap"),
        ("whole", {"blend": "max"}, "blend"),
        ("whole", {"inner": "tiles"}, "inner"),
        ("whole", {"tile_batch": 0}, "tile_batch"),
        ("whole", {"tiles": 2}, "tiles"),
        ("whole", [1], "options"),
    ],
)
def test_refusals_name_the_option_in_one_line(mode, options, named):
    with pytest.raises(UsageError) as caught:
        InferenceSpec.parse(mode, options)
    message = str(caught.value)
    assert message.startswith(f"command line: inference {named}:") and "\n" not in message


def test_error_type_and_place_are_the_callers():
    with pytest.raises(WeightsError, match="^w: metadata: inference scales"):
        InferenceSpec.parse("multiscale", {"scales": [9]}, "w: metadata", WeightsError)


def test_forward_pixels_per_mode(monkeypatch):
    assert InferenceSpec().forward_pixels(100, 200) == 20_000
    assert InferenceSpec.parse("sliding", {"tile_size": [32, 64]}).forward_pixels(100, 50) == 1600
    multi = InferenceSpec.parse("multiscale", {"scales": [0.5, 1.5]})
    assert multi.forward_pixels(10, 10) == 225
    monkeypatch.setenv(MAX_FORWARD_PIXELS_ENV, "100")
    assert max_forward_pixels() == 100
    with pytest.raises(DataError, match="x.png: 20x10 image needs"):
        InferenceSpec().check_forward_pixels(10, 20, "x.png")
    monkeypatch.setenv(MAX_FORWARD_PIXELS_ENV, "lots")
    with pytest.raises(UsageError, match=MAX_FORWARD_PIXELS_ENV):
        max_forward_pixels()


def test_option_names_are_predict_logits_keyword_options():
    """The spec's option list and the function that runs the options cannot drift apart."""
    import inspect

    from fcnseg.inference import predict_logits
    from fcnseg.inference.spec import OPTION_NAMES

    parameters = inspect.signature(predict_logits).parameters.values()
    assert set(OPTION_NAMES) == {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
