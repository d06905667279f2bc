"""The shipped CamVid model works on a user's copy with the standard layout (test split too)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "camvid_fcn4s_lite0.safetensors"
#: The released model scores about 0.7 mean IU on val; random or broken weights score < 0.1.
#: On six val images posing as a test split, a working model is far above this bound.
MIN_MEAN_IU = 0.45


def _standard_layout_with_test_split(source: Path, target: Path, count: int) -> list[str]:
    """A CamVid copy laid out as distributed, whose `test` split holds `count` val images."""
    stems = sorted(p.stem for p in (source / "val").glob("*.png"))[:count]
    for folder in ("test", "testannot"):
        (target / folder).mkdir(parents=True)
    lines = []
    for stem in stems:
        shutil.copy(source / "val" / f"{stem}.png", target / "test" / f"{stem}.png")
        shutil.copy(source / "valannot" / f"{stem}.png", target / "testannot" / f"{stem}.png")
        lines.append(f"/SegNet/CamVid/test/{stem}.png /SegNet/CamVid/testannot/{stem}.png")
    (target / "test.txt").write_text("\n".join(lines) + "\n")
    return stems


@pytest.mark.data
def test_shipped_weights_evaluate_and_predict_on_a_test_split(real_camvid, tmp_path):
    assert SHIPPED.is_file(), f"{SHIPPED} is missing: the released CamVid model must be in the repo"
    assert SHIPPED.stat().st_size <= 25e6
    root = tmp_path / "CamVid"
    stems = _standard_layout_with_test_split(real_camvid, root, count=6)
    out = tmp_path / "scores.json"
    args = ["eval", "--weights", str(SHIPPED), "--data-root", str(root), "--split", "test"]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["images"] == len(stems)
    assert scores["mean_iu"] > MIN_MEAN_IU

    predictions = tmp_path / "pred"
    image = root / "test" / f"{stems[0]}.png"
    assert main(["predict", "--weights", str(SHIPPED), str(image), "--out", str(predictions)]) == 0
    mask = Image.open(predictions / f"{stems[0]}.png")
    assert mask.mode == "P" and mask.size == (480, 360)
    values = np.unique(np.asarray(mask))
    assert values.max() < 11 and len(values) >= 3  # a road scene has several classes
