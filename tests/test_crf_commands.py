"""The dense CRF in every command: eval/predict/serve `--crf`, the weights' stored default,
`--no-crf`, `fcnseg crf-search`, and the one-line refusal without pydensecrf2.

A random fcn8s_mobilenet_v2 on 48x64 synthetic scenes stands for a trained model (the commands'
plumbing, not its accuracy, is under test); that the CRF changes labels the way it should is
shown on a stand-in net whose scores are the truth plus strong noise.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module, skip_or_fail_in_ci
from model_helpers import synthetic_weights
from PIL import Image

from fcnseg.cli import main
from fcnseg.engine.checkpoint import load_weights, update_weights_metadata
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import UsageError, WeightsError
from fcnseg.inference.crf import crf_available
from fcnseg.inference.crf_params import CrfParams, choose_crf

if not crf_available():  # CI installs the crf extra: there this fails instead of skipping
    skip_or_fail_in_ci("pydensecrf2 is not installed (pip install -e '.[crf]')")

MODEL = "fcn8s_mobilenet_v2"
OPTIONS = {"num_images": 2, "size": [48, 64]}
#: Cheap CRF for the command tests: two mean-field iterations.
FAST = ["--crf-iterations", "2"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A small random model's weights, its recipe naming the synthetic dataset."""
    path = tmp_path_factory.mktemp("crf") / "tiny.safetensors"
    return synthetic_weights(path, MODEL, OPTIONS)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _eval_json(weights: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "scores.json"
    base = ["eval", "--weights", str(weights), "--format", "synthetic", "--device", "cpu"]
    assert main([*base, "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- the parameters
def test_choose_crf_follows_flags_and_stored_default() -> None:
    stored = CrfParams(w1=7.0, theta_alpha=40.0)
    assert choose_crf(None, None) is None
    assert choose_crf(stored, None) == stored  # the weights' default
    assert choose_crf(stored, False) is None  # --no-crf
    assert choose_crf(None, True) == CrfParams()  # DeepLab's defaults
    assert CrfParams() == CrfParams(4.0, 67.0, 3.0, 3.0, 3.0, 10)
    assert choose_crf(stored, True, {"iterations": 3}) == CrfParams(7.0, 40.0, iterations=3)
    with pytest.raises(UsageError, match="add --crf"):
        choose_crf(None, None, {"w1": 5.0})
    with pytest.raises(UsageError, match="--no-crf"):
        choose_crf(stored, False, {"w1": 5.0})
    for bad in ({"w1": -1}, {"theta_alpha": 0}, {"iterations": 2.5}, {"sigma": 1}, {"w2": True}):
        with pytest.raises(UsageError, match="crf"):
            CrfParams.parse(bad)


class NoisyTruth(torch.nn.Module):
    """Scores that favour the true half (left red, right green) weakly, under strong noise
    fixed by a seed: the net of a boundary the CRF should recover from the colours."""

    normalization = "imagenet"
    in_channels = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        truth = (images[:, 1] > images[:, 0]).long()  # green right half -> class 1
        onehot = torch.nn.functional.one_hot(truth, 3).permute(0, 3, 1, 2).float()
        noise = torch.randn(onehot.shape, generator=torch.Generator().manual_seed(0))
        return onehot + 1.2 * noise


def test_crf_pulls_noisy_labels_to_the_colour_edge() -> None:
    from model_helpers import tiny_serve_metadata

    image = np.zeros((40, 48, 3), np.uint8)
    image[:, :24] = (200, 30, 30)
    image[:, 24:] = (30, 200, 30)
    truth = np.zeros((40, 48), np.int64)
    truth[:, 24:] = 1
    session = InferenceSession.for_model(NoisyTruth(), tiny_serve_metadata())
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    plain = session.labels([tensor])[0].numpy()
    refined_session = session.with_crf(CrfParams(theta_alpha=20.0, theta_beta=10.0, iterations=5))
    refined = refined_session.labels([tensor])[0].numpy()
    assert (plain == truth).mean() < 0.85  # the noise is real
    assert (refined == truth).mean() > 0.97  # the CRF follows the colour edge
    assert refined_session.crf_timer.images == 1 and refined_session.crf_timer.seconds > 0
    assert "ms per image" in refined_session.crf_line()


# ------------------------------------------------------------------------------ eval, predict
def test_eval_crf_flag_records_parameters_and_time(weights, tmp_path, capsys) -> None:
    plain = _eval_json(weights, tmp_path)
    assert plain["crf"] is None and plain["crf_ms_per_image"] is None
    capsys.readouterr()
    scores = _eval_json(weights, tmp_path, "--crf", *FAST, "--crf-w1", "6")
    assert scores["crf"] == {**CrfParams().as_dict(), "w1": 6.0, "iterations": 2}
    assert scores["crf_ms_per_image"] > 0
    printed = capsys.readouterr().out
    assert "crf: w1 6 theta_alpha 67" in printed and "ms per image" in printed


def test_stored_crf_is_the_default_and_no_crf_turns_it_off(weights, tmp_path, capsys) -> None:
    copy = tmp_path / "stored.safetensors"
    shutil.copy(weights, copy)
    stored = {"w1": 5.0, "theta_alpha": 30.0, "theta_beta": 4.0, "iterations": 2}
    update_weights_metadata(copy, crf=stored)
    assert load_weights(copy)[1].crf == CrfParams(**stored)  # round trip through the file
    assert _eval_json(copy, tmp_path)["crf"] == CrfParams(**stored).as_dict()
    assert _eval_json(copy, tmp_path, "--no-crf")["crf"] is None
    assert _eval_json(copy, tmp_path, "--crf-theta-beta", "6")["crf"]["theta_beta"] == 6.0
    capsys.readouterr()
    update_weights_metadata(copy, crf={"w1": "strong"})
    assert main(["eval", "--weights", str(copy), "--format", "synthetic"]) == 2
    assert "metadata field 'crf'" in _one_line_error(capsys)
    with pytest.raises(WeightsError, match="crf w1"):
        load_weights(copy)


def test_predict_crf_flag_prints_its_time(weights, tmp_path, capsys) -> None:
    image = tmp_path / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    args = ["predict", "--weights", str(weights), str(image), "--device", "cpu", "--out"]
    assert main([*args, str(out), "--crf", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "crf: " in printed and "ms per image" in printed
    assert np.asarray(Image.open(out / "scene.png")).shape == (36, 40)
    assert main([*args, str(tmp_path / "p2"), "--no-crf", "--crf-w1", "3"]) == 2
    assert "--no-crf" in _one_line_error(capsys)
    assert main([*args, str(tmp_path / "p3"), "--crf-w1", "3"]) == 2
    assert "add --crf" in _one_line_error(capsys)


def test_missing_pydensecrf_is_one_line(weights, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # `import pydensecrf...` now fails
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not crf_available()
    base = ["eval", "--weights", str(weights), "--format", "synthetic", "--crf"]
    assert main([*base, "--out", str(tmp_path / "s.json")]) == 2
    assert "pip install 'fcnseg[crf]'" in _one_line_error(capsys)
    assert not (tmp_path / "s.json").exists()
    assert _eval_json(weights, tmp_path)["crf"] is None  # without --crf nothing is needed
    stored = tmp_path / "stored.safetensors"
    shutil.copy(weights, stored)
    update_weights_metadata(stored, crf={"w1": 5.0})
    assert main([*base[:2], str(stored), "--format", "synthetic"]) == 2
    assert "stored default CRF (--no-crf skips it)" in _one_line_error(capsys)
    assert _eval_json(stored, tmp_path, "--no-crf")["crf"] is None


# ----------------------------------------------------------------------------------- search
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_crf_search_writes_a_copy_and_leaves_the_input(weights, tmp_path, capsys) -> None:
    source = tmp_path / "in" / "model.safetensors"
    source.parent.mkdir()
    shutil.copy(weights, source)
    before = _digest(source)
    out = tmp_path / "searched"
    args = [
        "crf-search", "--weights", str(source), "--out", str(out), "--format", "synthetic",
        "--device", "cpu", "--max-images", "2", "--w1", "3", "5", "--theta-alpha", "20",
        "--theta-beta", "3", "--iterations", "2",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best: w1" in printed and "without the CRF" in printed
    assert _digest(source) == before and sorted(p.name for p in source.parent.iterdir()) == [
        "model.safetensors"
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "model-crf-search.json",
        "model-crf.safetensors",
    ]
    log = json.loads((out / "model-crf-search.json").read_text())
    # 2 coarse candidates, then w1 +-1 around the better one (its centre already tried).
    assert [t["stage"] for t in log["trials"]] == ["coarse", "coarse", "refine 1", "refine 1"]
    best = max(log["trials"], key=lambda t: t["mean_iu"])
    assert log["best"]["w1"] == best["w1"] and log["mean_iu_after"] == best["mean_iu"]
    assert log["mean_iu_after"] >= log["trials"][0]["mean_iu"]
    meta = load_weights(out / "model-crf.safetensors")[1]
    assert meta.crf == CrfParams.parse(log["best"])
    assert meta["crf_search"]["images"] == 2 and meta["crf_search"]["split"] == "val"
    # The copy's CRF is its default: eval runs it without a flag.
    assert _eval_json(out / "model-crf.safetensors", tmp_path)["crf"] == log["best"]
    assert main(args) == 2  # a second search does not replace the first without --force
    assert "exists" in _one_line_error(capsys)


def test_crf_search_time_limit_and_bad_values(weights, tmp_path, capsys) -> None:
    base = ["crf-search", "--weights", str(weights), "--format", "synthetic", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a"), "--w1", "-2"]) == 2
    assert "--w1" in _one_line_error(capsys)
    assert main([*base, "--out", str(tmp_path / "b"), "--max-minutes", "0"]) == 2
    assert "--max-minutes" in _one_line_error(capsys)
    # Weights whose recipe names no dataset folder, and no --data-root: one line, not a traceback.
    assert main([*base[:3], "--format", "camvid", "--out", str(tmp_path / "d")]) == 2
    assert "--data-root" in _one_line_error(capsys)
    # A tiny budget: the net runs, then the first candidates take the refinement's share too.
    args = [*base, "--out", str(tmp_path / "c"), "--max-images", "1", "--iterations", "1"]
    assert main([*args, "--max-minutes", "0.0001"]) == 2
    assert "no candidate" in _one_line_error(capsys)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


# ------------------------------------------------------------------------------------ serve
def _serve_client(crf: CrfParams | None):
    require_module("fastapi", "pip install -e '.[test]'")
    from fastapi.testclient import TestClient
    from model_helpers import tiny_serve_metadata

    from fcnseg.serve import InferencePool, ServeLimits, create_app

    session = InferenceSession.for_model(NoisyTruth(), tiny_serve_metadata()).with_crf(crf)
    pool = InferencePool(session, queue=1)
    app = create_app(pool, ServeLimits(max_bytes=200_000, max_pixels=50_000, queue=1))
    return TestClient(app, raise_server_exceptions=False)


def _halves_png() -> bytes:
    image = np.zeros((40, 48, 3), np.uint8)
    image[:, :24] = (200, 30, 30)
    image[:, 24:] = (30, 200, 30)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _segment(client, query: str = ""):
    files = {"image": ("x.png", _halves_png(), "image/png")}
    return client.post(f"/v1/segment{query}", files=files)


def test_serve_crf_per_request_and_default() -> None:
    with _serve_client(None) as client:
        assert client.get("/v1/model").json()["crf"]["default"] is False
        off = _segment(client)
        assert off.status_code == 200 and off.json()["crf"] is False
        assert off.json()["crf_ms"] is None and "X-Crf-Ms" not in off.headers
        on = _segment(client, "?crf=1")
        assert on.status_code == 200 and on.json()["crf"] is True
        assert on.json()["crf_ms"] > 0 and float(on.headers["X-Crf-Ms"]) > 0
        assert on.json()["mask_png"] != off.json()["mask_png"]  # the CRF changed the labels
        bad = _segment(client, "?crf=maybe")
        assert bad.status_code == 400 and "crf must be 1 or 0" in bad.json()["error"]
    with _serve_client(CrfParams(iterations=2)) as client:
        model = client.get("/v1/model").json()["crf"]
        assert model["default"] is True and model["params"]["iterations"] == 2
        assert _segment(client).json()["crf"] is True  # the server's default
        assert _segment(client, "?crf=0").json()["crf"] is False


def test_serve_refuses_crf_without_pydensecrf(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with _serve_client(None) as client:
        assert client.get("/v1/model").json()["crf"]["available"] is False
        refused = _segment(client, "?crf=1")
        assert refused.status_code == 400
        message = refused.json()["error"]
        assert message.startswith("crf=1:") and "fcnseg[crf]" in message and "\n" not in message
        assert _segment(client, "?crf=0").status_code == 200


def test_page_has_the_crf_toggle() -> None:
    from fcnseg.serve.app import page_html

    page = page_html()
    assert 'id="crf" type="checkbox"' in page
    assert "/v1/segment?crf=${" in page and 'id="time-crf"' in page


# ------------------------------------------------------------------------ the search's grid
def test_grid_is_deeplabs_and_refinement_narrows_within_bounds() -> None:
    """DeepLab (ICLR 2015, section 4.1): w1 in [5, 10], theta_alpha in [50:10:100], theta_beta in
    [3:6], with w2 = theta_gamma = 3 and 10 iterations fixed; then finer steps around the best."""
    from fcnseg.inference.crf_grid import (
        coarse_candidates,
        grid_steps,
        refined_candidates,
        search_grid,
    )

    grid = search_grid()
    assert grid["theta_alpha"] == (50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
    assert grid["theta_beta"] == (3.0, 4.0, 5.0, 6.0) and grid["w2"] == (3.0,)
    coarse = coarse_candidates(grid)
    assert len(coarse) == 6 * 6 * 4 == len(set(coarse))
    assert coarse == coarse_candidates(grid) and coarse != coarse_candidates(grid, seed=1)
    assert coarse[:10] != sorted(coarse[:10], key=lambda p: (p.w1, p.theta_alpha, p.theta_beta))
    steps = grid_steps(grid)
    assert steps == {"w1": 0.5, "theta_alpha": 5.0, "theta_beta": 0.5}
    best = CrfParams(w1=5.0, theta_alpha=50.0, theta_beta=3.0)
    around = refined_candidates(best, steps, {best})
    assert len(around) == 26 and best not in around
    assert {p.w1 for p in around} == {4.5, 5.0, 5.5}
    # A step that would leave the valid range is dropped (theta_alpha > 0), iterations stay whole.
    edge = refined_candidates(CrfParams(theta_alpha=5.0, iterations=2), {"theta_alpha": 5.0}, set())
    assert {p.theta_alpha for p in edge} == {5.0, 10.0}
    whole = refined_candidates(CrfParams(iterations=4), {"iterations": 2.5}, set())
    assert {p.iterations for p in whole} == {2, 4, 6}
    with pytest.raises(UsageError, match="--theta-beta"):
        search_grid({"theta_beta": [0.0, 3.0]})
