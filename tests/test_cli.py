"""The `fcnseg` command in-process: train -> eval -> predict -> export, and exit 2 on bad input.

Uses the real registry model fcn8s_efficientnet_lite0 without pretrained weights on 32x32
synthetic scenes, so a training run is a few optimiser steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN_OVERRIDES
from PIL import Image

from fcnseg.cli import main

MODEL = "fcn8s_efficientnet_lite0"
TINY = TINY_TRAIN_OVERRIDES


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_train_writes_run(trained_run):
    assert (trained_run / "model.safetensors").is_file()
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    assert "fcn8s_efficientnet_lite0" in (trained_run / "config.yaml").read_text()


def test_train_with_config_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: fromfile\nmodel: {{name: {MODEL}, pretrained: false}}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(out), *TINY[2:]]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_resume_extends_a_finished_run(tmp_path, trained_run):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    assert main(["train", "--resume", str(copy), "train.epochs=2"]) == 0
    assert json.loads((copy / "summary.json").read_text())["steps"] == 4


def test_eval_run_and_weights(trained_run, tmp_path, capsys):
    assert main(["eval", "--run", str(trained_run), "--split", "test", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "Road" in printed or "road" in printed.lower()
    scores = json.loads((trained_run / "eval-synthetic-test.json").read_text())
    assert 0.0 <= scores["mean_iu"] <= 1.0 and len(scores["per_class_iu"]) == 6
    out = tmp_path / "s.json"
    weights = str(trained_run / "model.safetensors")
    assert main(["eval", "--weights", weights, "--format", "synthetic", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["split"] == "val"


def test_weights_recommended_inference_is_the_default(trained_run, tmp_path, capsys):
    import shutil

    from fcnseg.engine.checkpoint import update_weights_metadata

    weights = tmp_path / "w.safetensors"
    shutil.copy(trained_run / "model.safetensors", weights)
    base = ["eval", "--weights", str(weights), "--format", "synthetic", "--device", "cpu"]

    def mode_used(*extra: str) -> tuple[str, dict]:
        out = tmp_path / "s.json"
        assert main([*base, "--out", str(out), *extra]) == 0
        scores = json.loads(out.read_text())
        return scores["mode"], scores["inference_options"]

    assert mode_used() == ("whole", {})  # nothing stored: whole-image inference
    update_weights_metadata(
        weights, inference={"mode": "multiscale", "options": {"scales": [1.0, 1.5]}}
    )
    assert mode_used() == ("multiscale", {"scales": [1.0, 1.5]})
    assert mode_used("--scales", "0.5") == ("multiscale", {"scales": [0.5]})  # CLI overrides
    assert mode_used("--mode", "whole")[0] == "whole"
    predictions = tmp_path / "pred"
    image = tmp_path / "img.png"
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(image)
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(predictions)]) == 0
    assert (predictions / "img.png").is_file()

    update_weights_metadata(weights, inference={"mode": "multiscale", "options": {"tiles": 3}})
    assert main(base) == 2
    assert "inference" in _error_line(capsys)


def test_predict_folder_writes_palette_pngs(trained_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index, size in enumerate([(40, 36), (33, 47)]):
        pixels = np.random.default_rng(index).integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"im{index}.jpg")
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(trained_run), str(images), "--out", str(out)]) == 0
    mask = Image.open(out / "im1.png")
    assert mask.mode == "P" and mask.size == (47, 33)
    assert int(np.asarray(mask).max()) < 6
    palette = mask.getpalette()[:6]
    assert palette == [128, 128, 128, 128, 0, 0] or len(palette) == 6
    overlay = Image.open(out / "im1_overlay.jpg")
    assert overlay.size == (2 * 47, 33)  # input and overlay side by side
    assert (
        main(["predict", "--run", str(trained_run), str(images / "*.jpg"), "--out", str(out)]) == 0
    )


def test_export_safetensors_round_trip(trained_run, tmp_path):
    from fcnseg.engine.checkpoint import load_weights

    out = tmp_path / "w.safetensors"
    checkpoint = str(trained_run / "checkpoints" / "last.pt")
    assert (
        main(["export", "--checkpoint", checkpoint, "--to", "safetensors", "--out", str(out)]) == 0
    )
    _, meta = load_weights(out)
    assert meta["model"] == MODEL and meta["num_classes"] == 6


# ----------------------------------------------------------------------------- bad input
def test_unknown_model_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "model.name=fcn9s_nothing"]) == 2
    assert "fcn9s_nothing" in _error_line(capsys)
    assert not out.exists()


def test_missing_dataset_root_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    camvid = ["data.format=camvid", "data.options={}", "data.root=/nonexistent/cv"]
    assert main(["train", "--out", str(out), *TINY, *camvid]) == 2
    assert "/nonexistent/cv" in _error_line(capsys)
    assert not out.exists()
    # The synthetic set's options kept with data.format=camvid: refused by name, before any write.
    args = ["train", "--out", str(out), *TINY, "data.format=camvid", "data.root=/nonexistent/cv"]
    assert main(args) == 2
    assert "data.options: unknown key 'num_images'" in _error_line(capsys)
    assert not out.exists()
    assert main(["eval", "--run", str(out), "--data-root", "/nonexistent/cv"]) == 2
    _error_line(capsys)


def test_missing_init_weights_exit_2_before_writing(tmp_path, capsys):
    # A later stage (the CamVid hi-res fine-tune, FCN-16s from FCN-32s) started too early.
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *TINY, f"model.init={tmp_path / 'stage1.safetensors'}"]
    assert main(args) == 2
    assert "model.init" in _error_line(capsys)
    assert not out.exists()


def test_stage_two_initialises_from_stage_one(trained_run, tmp_path):
    from fcnseg.engine.checkpoint import load_weights

    out = tmp_path / "stage2"
    init = trained_run / "model.safetensors"
    args = ["train", "--out", str(out), *TINY, f"model.init={init}", "train.lr=1e-12"]
    assert main(args) == 0
    # At lr 1e-12 the parameters barely move, so stage 2 must hold what stage 1 wrote; a fresh
    # random initialisation would be far off (batch norm statistics still update in training
    # mode, so those buffers are left out).
    before, _ = load_weights(init)
    after, _ = load_weights(out / "model.safetensors")
    assert before.keys() == after.keys()
    learned = [k for k in before if "running_" not in k and "num_batches" not in k]
    assert len(learned) > 10
    assert all(np.allclose(before[k].numpy(), after[k].numpy(), atol=1e-8) for k in learned)


def test_weights_for_other_class_count_exit_2(tmp_path, capsys):
    from fcnseg import build_model
    from fcnseg.engine.checkpoint import save_weights

    weights = tmp_path / "four.safetensors"
    meta = {
        "model": MODEL,
        "num_classes": 4,
        "classes": ["a", "b", "c", "d"],
        "palette": [[0, 0, 0]] * 4,
        "normalization": "tf_lite",
        "ignore_index": 255,
    }
    save_weights(weights, build_model(MODEL, 4, pretrained=False), meta)
    assert main(["eval", "--weights", str(weights), "--format", "synthetic"]) == 2
    message = _error_line(capsys)
    assert "4 classes" in message and "6" in message


def test_bad_config_and_override_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: [\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "broken.yaml" in _error_line(capsys)
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in _error_line(capsys)
    assert main(["train", *TINY, "train.lrr=0.1"]) == 2
    assert "train.lrr" in _error_line(capsys)
    assert main(["train", *TINY, "train.epochs"]) == 2
    _error_line(capsys)


def test_existing_run_dir_is_not_overwritten(trained_run, capsys):
    before = (trained_run / "config.yaml").read_text()
    assert main(["train", "--out", str(trained_run), *TINY]) == 2
    assert "--resume" in _error_line(capsys)
    assert (trained_run / "config.yaml").read_text() == before


def test_bad_checkpoint_and_missing_inputs_exit_2(tmp_path, trained_run, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["eval", "--checkpoint", str(junk), "--format", "synthetic"]) == 2
    assert "junk.pt" in _error_line(capsys)
    assert main(["predict", "--run", str(trained_run), str(tmp_path / "none.png")]) == 2
    assert "none.png" in _error_line(capsys)


def test_models_lists_names(capsys):
    assert main(["models", MODEL, "--no-flops"]) == 0
    assert MODEL in capsys.readouterr().out
    assert main(["models", "fcn9s_nothing"]) == 2
    assert "fcn9s_nothing" in _error_line(capsys)


def test_data_check(tmp_path, capsys):
    assert main(["data", "check", "--format", "synthetic", "--splits", "val"]) == 0
    assert "val" in capsys.readouterr().out
    assert main(["data", "check", "--root", str(tmp_path / "nothing"), "--format", "camvid"]) == 2
    assert "nothing" in _error_line(capsys)


@pytest.mark.slow
def test_bench_reports_eager(capsys):
    args = ["bench", MODEL, "--size", "32", "48", "--engines", "eager", "--repeats", "1"]
    assert main(args) == 0
    assert "eager" in capsys.readouterr().out
    assert main(["bench", "fcn9s_nothing", "--size", "32"]) == 2
    assert "fcn9s_nothing" in _error_line(capsys)


def test_demo_pipeline_small(tmp_path):
    out = tmp_path / "demo"
    tiny = [
        "model.pretrained=false",
        "data.options={num_images: 4, size: [32, 32]}",
        "data.val_options={num_images: 2}",
        "data.crop_size=[32, 32]",
        "train.epochs=1",
        "train.progress=false",
        "train.device=cpu",
    ]
    assert main(["demo", "--out", str(out), *tiny]) == 0
    assert json.loads((out / "eval-synthetic-test.json").read_text())["images"] == 2
    assert len(list((out / "predictions").glob("*_overlay.jpg"))) == 2


def test_eval_checkpoint_source(trained_run, tmp_path):
    out = tmp_path / "c.json"
    checkpoint = str(trained_run / "checkpoints" / "best.pt")
    assert main(["eval", "--checkpoint", checkpoint, "--out", str(out), "--size", "24", "24"]) == 0
    assert json.loads(out.read_text())["split"] == "val"


def test_train_data_root_option_reads_that_directory(tmp_path, capsys):
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(2):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 12, (32, 32), dtype=np.uint8)
            Image.fromarray(image).save(root / split / f"f{index}.png")
            Image.fromarray(labels, mode="L").save(root / f"{split}annot" / f"f{index}.png")
    camvid = [*TINY, "data.format=camvid", "data.options={}", "train.max_steps=1"]
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data-root", str(root), *camvid]) == 0
    assert f"root: {root}" in (out / "config.yaml").read_text()
    missing = tmp_path / "elsewhere"
    assert main(["train", "--out", str(missing), "--data-root", "/nonexistent/cv", *camvid]) == 2
    assert "--data-root /nonexistent/cv" in _error_line(capsys)
    assert not missing.exists()
