"""Predict never destroys or escapes (issue 22, item 3): engine/predict_outputs.py and the naming
rule of engine/predict_inputs.py, through `fcnseg predict` and `fcnseg eval --report`.

Each refusal: exit status 2, one line on stderr naming the path and the fix, no traceback,
nothing that existed before changed, nothing new anywhere (the sandbox is snapshotted, links
not followed). Each accepted case: every input has its own outputs, all of them on disk.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from image_bytes import png_bytes
from PIL import Image
from test_hostile_inputs import good_meta, run_cli, snapshot

from fcnseg.engine.predict_inputs import output_names
from fcnseg.engine.predict_outputs import save_image
from fcnseg.engine.render import palette_image
from fcnseg.errors import OutputError


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained model's weights (the cases test where files go, not accuracy)."""
    import torch
    from test_hostile_inputs import MODEL

    from fcnseg.engine.checkpoint import save_weights
    from fcnseg.models import build_model

    torch.manual_seed(0)
    meta = good_meta()
    path = tmp_path_factory.mktemp("predict_outputs") / "w.safetensors"
    save_weights(path, build_model(MODEL, meta["num_classes"], pretrained=False), meta)
    return path


def _jpeg(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _files(folder: Path, names: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in names.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def _predict(weights: Path, *args: str) -> list[str]:
    return ["predict", "--weights", str(weights), *args]


def _refused(root: Path, argv: list[str], *words: str) -> str:
    """Run argv in root; assert exit 2, one stderr line with `words`, and no change at all."""
    before = snapshot(root)
    code, stdout, stderr = run_cli(argv, root)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stdout, stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert snapshot(root) == before, "something was written, lost or changed"
    return lines[0]


def _names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- naming rule
@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (["f/scene.png", "f/scene.PNG"], ["scene_png", "scene_png_2"]),
        (
            ["f/scene.jpg", "f/scene.png", "f/scene_png.png"],
            ["scene_jpg", "scene_png", "scene_png_2"],
        ),
        (["f/Scene.png", "g/scene.png"], ["f/Scene", "g/scene"]),
        (["f/a.png", "f/b.png"], ["a", "b"]),
        (
            ["f/Scene.png", "f/scene.png", "f/scene_png.png", "f/scene_png_2.png"],
            ["Scene_png", "scene_png_3", "scene_png_4", "scene_png_2"],
        ),
    ],
)
def test_output_names_are_unique_case_insensitively(inputs, expected):
    names, _ = output_names([Path(item) for item in inputs])
    got = [str(names[Path(item)]) for item in inputs]
    assert got == expected
    assert len({name.casefold() for name in got}) == len(got)


def test_colliding_inputs_all_get_their_outputs(weights, tmp_path):
    inputs = _files(
        tmp_path / "in",
        {
            "scene.png": png_bytes(seed=1),
            "scene.PNG": png_bytes(seed=2),
            "scene.jpg": _jpeg(),
            "scene_png.png": png_bytes(seed=3),
        },
    )
    out = tmp_path / "pred"
    code, stdout, stderr = run_cli(
        _predict(weights, *map(str, inputs), "--out", str(out)), tmp_path
    )
    assert code == 0 and not stderr.strip(), stderr
    assert "4 images -> 8 files" in stdout
    assert len(_names(out)) == 8
    assert len({name.casefold() for name in _names(out)}) == 8
    # Each mask is the prediction of its own input (the seeds differ, so do the images).
    masks = [np.asarray(Image.open(out / name)) for name in _names(out) if name.endswith(".png")]
    assert len(masks) == 4


# ----------------------------------------------------------------- inputs are never outputs
def test_out_is_the_input_folder(weights, tmp_path):
    _files(tmp_path / "frames", {"a.png": png_bytes(), "b.png": png_bytes(seed=1)})
    argv = _predict(weights, str(tmp_path / "frames"), "--out", str(tmp_path / "frames"))
    _refused(tmp_path, argv, "--out", "input folder", "frames")


def test_out_inside_the_input_folder(weights, tmp_path):
    _files(tmp_path / "frames", {"a.png": png_bytes()})
    argv = _predict(weights, "frames", "--out", "frames/masks")
    _refused(tmp_path, argv, "is inside the input folder frames")


def test_out_is_the_input_folder_by_another_spelling(weights, tmp_path):
    _files(tmp_path / "frames", {"a.png": png_bytes()})
    (tmp_path / "alias").symlink_to(tmp_path / "frames")
    argv = _predict(weights, str(tmp_path / "frames"), "--out", "alias/../alias")
    _refused(tmp_path, argv, "input folder")


def test_outputs_would_overwrite_input_files(weights, tmp_path):
    _files(tmp_path / "frames", {"a.png": png_bytes(), "b.png": png_bytes(seed=1)})
    argv = _predict(weights, "frames/*.png", "--out", "frames")
    _refused(tmp_path, argv, "would overwrite the input", "a.png")


def test_output_would_overwrite_an_input_through_a_hard_link(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    (tmp_path / "pred").mkdir()
    os.link(image, tmp_path / "pred" / "a.png")
    argv = _predict(weights, str(image), "--out", "pred", "--no-overlay")
    _refused(tmp_path, argv, "would overwrite the input")


def test_predicting_again_into_the_same_out_replaces_its_own_outputs(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    argv = _predict(weights, str(image), "--out", "pred")
    assert run_cli(argv, tmp_path)[0] == 0
    first = snapshot(tmp_path / "pred")
    code, _, stderr = run_cli(argv, tmp_path)
    assert code == 0 and not stderr.strip()
    assert snapshot(tmp_path / "pred") == first  # same bytes, no temporary files left


# ------------------------------------------------------------------------ links in --out
def test_link_in_out_is_refused_and_its_target_kept(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"the user's file")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a.png").symlink_to(outside)
    argv = _predict(weights, str(image), "--out", "pred")
    _refused(tmp_path, argv, "symbolic link", "a.png", "remove it")
    assert outside.read_bytes() == b"the user's file"


def test_dangling_link_in_out_is_refused(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a_overlay.jpg").symlink_to(tmp_path / "would-be-created.jpg")
    argv = _predict(weights, str(image), "--out", "pred")
    _refused(tmp_path, argv, "symbolic link", "a_overlay.jpg")


def test_linked_folder_in_out_is_refused(weights, tmp_path):
    a = _files(tmp_path / "in" / "a", {"scene.png": png_bytes()})[0]
    b = _files(tmp_path / "in" / "b", {"scene.png": png_bytes(seed=1)})[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a").symlink_to(elsewhere)  # outputs mirror in/a -> pred/a
    argv = _predict(weights, str(a), str(b), "--out", "pred")
    _refused(tmp_path, argv, "symbolic link", "pred/a")
    assert list(elsewhere.iterdir()) == []


def test_out_that_is_a_broken_link_is_refused(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    (tmp_path / "pred").symlink_to(tmp_path / "nowhere")
    _refused(tmp_path, _predict(weights, str(image), "--out", "pred"), "broken symbolic link")


def test_folder_where_an_output_goes_is_refused(weights, tmp_path):
    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    (tmp_path / "pred" / "a.png").mkdir(parents=True)
    argv = _predict(weights, str(image), "--out", "pred")
    _refused(tmp_path, argv, "is a folder", "a.png")


def test_save_replaces_a_link_planted_after_the_check_never_its_target(tmp_path):
    """The last line of defence: the write itself renames onto the name, never opens it."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep me")
    target = tmp_path / "out" / "a.png"
    target.parent.mkdir()
    target.symlink_to(outside)
    labels = np.zeros((4, 5), dtype=np.uint8)
    save_image(palette_image(labels, [[0, 0, 0], [9, 9, 9]]), target, "PNG")
    assert outside.read_bytes() == b"keep me"
    assert not target.is_symlink() and target.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def test_save_writes_the_bytes_a_plain_save_writes(tmp_path):
    """Bit-identical outputs: the atomic write changes where bytes go, not which bytes."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (30, 40), dtype=np.uint8)
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    rgb = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    palette_image(labels, palette).save(tmp_path / "plain.png")
    rgb.save(tmp_path / "plain.jpg", quality=90)
    save_image(palette_image(labels, palette), tmp_path / "atomic.png", "PNG")
    save_image(rgb, tmp_path / "atomic.jpg", "JPEG", quality=90)
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "atomic.png").read_bytes()
    assert (tmp_path / "plain.jpg").read_bytes() == (tmp_path / "atomic.jpg").read_bytes()


def test_failed_write_names_the_target_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half")
        raise OSError(28, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    target = tmp_path / "a.png"
    with pytest.raises(OSError) as caught:
        save_image(Image.new("P", (2, 2)), target, "PNG")
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_check_runs_before_the_model_loads(weights, tmp_path, monkeypatch):
    _files(tmp_path / "frames", {"a.png": png_bytes()})

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the output check")

    monkeypatch.setattr("fcnseg.engine.predict.InferenceSession.load", no_load)
    argv = _predict(weights, "frames", "--out", "frames")
    _refused(tmp_path, argv, "input folder")


def test_predict_files_refuses_too(tmp_path):
    """The library function checks as the command does (its callers get the same guarantee)."""
    from test_engine_predict import tiny_session

    from fcnseg.engine.predict import predict_files

    (image,) = _files(tmp_path / "in", {"a.png": png_bytes()})
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="overwrite the input"):
        predict_files(tiny_session(), [image], tmp_path / "in", overlay=False)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- eval --report DIR
def _eval(weights: Path, report: Path, *extra: str) -> list[str]:
    args = ["eval", "--weights", str(weights), "--format", "synthetic", "--mode", "whole"]
    return [*args, "--out", "scores.json", "--report", str(report), *extra]


def test_eval_report_refuses_a_folder_that_is_not_empty(weights, tmp_path):
    report = tmp_path / "site"
    report.mkdir()
    (report / "index.html").write_text("<h1>my home page</h1>")
    _refused(tmp_path, _eval(weights, report), "--report", "not empty", "--force")


def test_eval_report_refuses_a_file(weights, tmp_path):
    (tmp_path / "site").write_text("a file")
    _refused(tmp_path, _eval(weights, tmp_path / "site"), "not a folder")


def test_eval_report_force_and_empty_folders_are_written(weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = run_cli(_eval(weights, empty), tmp_path)
    assert code == 0, stderr
    assert (empty / "index.html").is_file()
    (empty / "notes.txt").write_text("mine")
    code, _, stderr = run_cli(_eval(weights, empty, "--force"), tmp_path)
    assert code == 0, stderr
    assert (empty / "notes.txt").read_text() == "mine" and (empty / "index.html").is_file()
