"""PSPNet, ENet and LinkNet from their shipped CamVid recipes: train a few steps, then eval and
predict on both engines (PyTorch and onnxruntime, whose graph is exported and checked on load).

The recipes run as shipped except for what makes them tiny: synthetic 64x64 scenes instead of
CamVid, one epoch of batches of 2 on the CPU, no pretrained download, and (PSPNet) a narrow head.
The ENet run keeps its `data.class_weights: enet` rule, so the rule runs through training too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module
from PIL import Image

from fcnseg.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "fcnseg" / "configs"

#: Recipe -> overrides beyond the common tiny ones.
RECIPES = {
    "camvid_pspnet_lite0.yaml": [
        "model.options={bottleneck_channels: 16, aux_channels: 8}",
        "data.class_weights=null",
    ],
    "camvid_enet.yaml": [],
    "camvid_linknet_lite0.yaml": ["data.class_weights=null"],
}
TINY = [
    "model.pretrained=false",
    "data.format=synthetic",
    "data.root=null",
    "data.options={num_images: 4, size: [64, 64]}",
    "data.crop_size=[64, 64]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.device=cpu",
    "train.amp=false",
    "train.val_every=1",
    "train.progress=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_evaluates_and_predicts_on_both_engines(recipe, tmp_path):
    require_module("onnxruntime", "pip install -e '.[export]'")
    run = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / recipe), "--out", str(run), *TINY]
    assert main([*args, *RECIPES[recipe]]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    image = tmp_path / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(image)
    for engine in ("torch", "onnxruntime"):
        evaluated = ["eval", "--run", str(run), "--device", "cpu", "--engine", engine]
        assert main(evaluated) == 0
        scores = json.loads((run / "eval-synthetic-val.json").read_text())
        assert scores["engine"] == engine and scores["images"] == 4
        if engine == "onnxruntime":
            assert scores["engine_details"]["check"]["passed"] is True
        out = tmp_path / f"pred-{engine}"
        predicted = ["predict", "--run", str(run), str(image), "--out", str(out)]
        assert main([*predicted, "--engine", engine]) == 0
        with Image.open(out / "scene.png") as labels:
            assert labels.size == (61, 45)
