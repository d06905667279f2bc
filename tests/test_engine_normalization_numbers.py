"""The normalisation stored as numbers (weights and ONNX metadata, presets as aliases), shipped
weights that store only a preset name, and what `model.init` reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fcnseg.data.normalization import PRESETS
from fcnseg.data.transforms import normalize
from fcnseg.engine.metadata import validate_weights_metadata
from fcnseg.errors import WeightsError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [
    REPO / "weights" / "camvid_fcn4s_lite0.safetensors",
    REPO / "weights" / "camvid_fcn4s_lite0_fast.safetensors",
]


#: The RGB presets as earlier releases computed them (transforms.normalize by name).
OLD_MEAN_STD = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf_lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def meta(**changes) -> dict:
    base = {
        "model": "fcn8s_resnet18",
        "num_classes": 2,
        "classes": ["a", "b"],
        "palette": [[0, 0, 0], [1, 2, 3]],
        "normalization": "per_channel",
        "normalization_stats": {"mean": [0.1] * 8, "std": [0.2] * 8},
    }
    base.update(changes)
    return base


def test_numbers_are_read_and_preset_names_stand_for_theirs():
    read = validate_weights_metadata(meta(), "w")
    assert read.input_normalization().mean == (0.1,) * 8
    legacy = validate_weights_metadata(meta(normalization="tf_lite", normalization_stats=None), "w")
    assert legacy.input_normalization() == PRESETS["tf_lite"]


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"normalization_stats": None}, "'per_channel' inputs need stored numbers"),
        ({"normalization_stats": {"mean": [0.1], "std": [0.0]}}, "positive"),
        ({"normalization_stats": {"mean": [0.1, 0.2], "std": [1.0]}}, "one value per channel"),
        ({"normalization_stats": [0.5, 0.5]}, "expected {mean"),
    ],
)
def test_bad_numbers_are_refused_in_one_line(changes, problem):
    with pytest.raises(WeightsError) as caught:
        validate_weights_metadata(meta(**changes), "w.safetensors")
    message = str(caught.value)
    assert "\n" not in message and "normalization_stats" in message and problem in message


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.name)
def test_shipped_weights_load_and_label_as_with_the_preset_name(weights):
    from fcnseg.engine.session import InferenceSession

    if not weights.is_file():
        pytest.fail(f"{weights} is shipped with the repository and missing")
    session = InferenceSession.load(weights=weights, device="cpu")
    name = session.metadata.normalization
    assert name in PRESETS and session.metadata.input_normalization() == PRESETS[name]
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=torch.Generator())
    # The formula of earlier releases, written out: (x / 255 - mean) / std.
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (OLD_MEAN_STD[name]))
    by_name = ((image.float() / 255.0 - mean) / std).unsqueeze(0)
    assert torch.equal(session.normalize([image]), by_name)
    assert torch.equal(normalize(image, name).unsqueeze(0), by_name)
    with torch.no_grad():
        old = session.logits(by_name).argmax(1)
    assert torch.equal(session.labels([image]), old)


def test_training_metadata_and_onnx_carry_the_numbers(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    from fcnseg.config import load_config
    from fcnseg.engine.setup import model_metadata
    from fcnseg.export import export_onnx
    from fcnseg.models import build_model

    config = load_config(None, ["model.name=fcn32s_resnet18", "model.pretrained=false"])
    model = build_model("fcn32s_resnet18", 2)
    dataset = type("D", (), {"num_classes": 2, "classes": ("a", "b"), "ignore_index": 255})()
    dataset.palette = ((0, 0, 0), (9, 9, 9))
    written = model_metadata(config, model, dataset)
    assert written["normalization"] == "imagenet"
    assert written["normalization_stats"] == PRESETS["imagenet"].as_dict()
    validate_weights_metadata(json.loads(json.dumps(written)), "w")  # what is written reads
    export_onnx(model.eval(), tmp_path / "m.onnx", check_sizes=[])
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["normalization"] == "imagenet"
    assert json.loads(props["normalization_stats"]) == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
