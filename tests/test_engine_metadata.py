"""The weights metadata schema (engine.metadata): typed fields, bounds, one-line refusals."""

from __future__ import annotations

import json

import pytest

from fcnseg.engine.metadata import (
    MAX_CLASSES,
    MAX_SCALE,
    MAX_STRING,
    WeightsMetadata,
    validate_weights_metadata,
)
from fcnseg.errors import WeightsError
from fcnseg.inference.spec import InferenceSpec


def good() -> dict:
    return {
        "model": "fcn8s_mobilenet_v2",
        "model_options": {"width": 16, "upsample": "bilinear"},
        "num_classes": 2,
        "classes": ["sky", "road"],
        "palette": [[0, 0, 0], [128, 64, 128]],
        "normalization": "imagenet",
        "ignore_index": 255,
        "data_format": "camvid",
        "step": 1200,
        "inference": {"mode": "multiscale", "options": {"scales": [1, 1.25], "flip": True}},
    }


def refusal(meta: object) -> str:
    with pytest.raises(WeightsError) as caught:
        validate_weights_metadata(meta, "w.safetensors")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("w.safetensors: metadata")
    return message


def test_typed_fields_and_the_file_object_kept_as_read():
    meta = validate_weights_metadata(good(), "w.safetensors")
    assert isinstance(meta, WeightsMetadata)
    assert meta.model == "fcn8s_mobilenet_v2" and meta.num_classes == 2
    assert meta.classes == ("sky", "road")
    assert meta.palette == ((0, 0, 0), (128, 64, 128))
    assert meta.ignore_index == 255 and meta.data_format == "camvid"
    assert meta.recipe is None
    assert meta.inference == InferenceSpec.parse("multiscale", {"scales": [1, 1.25], "flip": True})
    # Writers store back exactly what was read: unknown keys and key order included.
    assert json.dumps(meta.as_dict()) == json.dumps(good())
    assert meta["step"] == 1200 and list(meta) == list(good())
    with pytest.raises(TypeError):
        meta.model_options["width"] = 32  # type: ignore[index]


def test_optional_fields_default_to_none():
    meta = good()
    for key in ("ignore_index", "data_format", "inference", "model_options", "step"):
        del meta[key]
    checked = validate_weights_metadata(meta, "w")
    assert checked.ignore_index is None and checked.data_format is None
    assert checked.inference is None and dict(checked.model_options) == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": "x" * (MAX_STRING + 1)}, "model"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"classes": ["sky"]}, "classes"),
        ({"palette": [[0, 0, 0]]}, "palette"),
        ({"palette": [[0, 0, 0], [256, 0, 0]]}, "palette"),
        ({"normalization": "bgr"}, "normalization"),
        ({"model_options": [1]}, "model_options"),
        ({"model_options": {"width": 10**9}}, "model_options"),
        ({"ignore_index": 70000}, "ignore_index"),
        ({"data_format": 3}, "data_format"),
        ({"config": "recipe.yaml"}, "config"),
        ({"class_map": ["car", "vehicle"]}, "class_map"),
        ({"class_map": {"car": 3}}, "class_map"),
        ({"inference": {"mode": "tiled"}}, "inference"),
        ({"inference": {"mode": "whole", "options": {"scales": [1.0]}}}, "inference"),
        ({"inference": {"mode": "multiscale", "options": {"scales": [MAX_SCALE * 2]}}}, "scales"),
    ],
)
def test_each_field_is_refused_in_one_line_naming_it(change, field):
    assert field in refusal({**good(), **change})


def test_a_json_list_is_not_metadata():
    assert "JSON list" in refusal([good()])


def test_inference_refusal_says_the_fix():
    message = refusal({**good(), "inference": {"mode": "sliding", "options": {"overlap": 0.5}}})
    assert "tile size" in message
