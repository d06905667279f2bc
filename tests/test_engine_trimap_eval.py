"""`fcnseg eval --trimap`: the boundary-band scores in the JSON, the printed table and the report, on a
model with the mean-field CRF layers (model option "crf", rebuilt from the weights' metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fcnseg.cli import main


def _crf_weights(folder: Path) -> Path:
    """A random fcn8s_mobilenet_v2 wrapped in one mean-field iteration, as a weights file."""
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model

    options = {"crf": {"iterations": 1, "window": 3}}
    torch.manual_seed(0)
    model = build_model("fcn8s_mobilenet_v2", 6, pretrained=False, **options)
    meta = weights_metadata(
        "fcn8s_mobilenet_v2",
        options,
        num_classes=6,
        classes=[f"c{i}" for i in range(6)],
        palette=[[i, i, i] for i in range(6)],
        normalization="imagenet",
        ignore_index=255,
        data_format="synthetic",
        config={"data": {"format": "synthetic", "options": {"num_images": 3, "size": [32, 48]}}},
    )
    save_weights(folder / "crf.safetensors", model, meta)
    return folder / "crf.safetensors"


def test_eval_writes_and_prints_trimap_scores(tmp_path, capsys):
    weights = _crf_weights(tmp_path)
    out = tmp_path / "scores.json"
    command = ["eval", "--weights", str(weights), "--device", "cpu"]
    report = tmp_path / "report"
    arguments = ["--out", str(out), "--trimap", "5,1000,0", "--report", str(report)]
    assert main([*command, *arguments]) == 0
    printed = capsys.readouterr().out
    assert "trimap" in printed and "N px" in printed
    scores = json.loads(out.read_text())
    trimap = scores["trimap"]
    assert list(trimap) == ["0", "5", "1000"]
    assert 0 < trimap["0"]["pixels"] < trimap["5"]["pixels"] <= trimap["1000"]["pixels"]
    # A band wider than the image holds every labelled pixel: the whole-image scores.
    assert trimap["1000"]["pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"])
    assert trimap["1000"]["mean_iu"] == pytest.approx(scores["mean_iu"])
    assert len(trimap["5"]["per_class_iu"]) == 6
    page = (report / "index.html").read_text()
    assert '<table class="trimap">' in page and "<td>1000</td>" in page


@pytest.mark.parametrize("bad", ["2,x", "-1", ","])
def test_bad_widths_are_one_line_and_exit_2(tmp_path, capsys, bad):
    assert main(["eval", "--weights", str(tmp_path / "none.safetensors"), f"--trimap={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--trimap" in err and "2,5,10,20" in err
