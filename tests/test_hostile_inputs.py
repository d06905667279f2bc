"""Hostile-input corpus (issue 14, part A): bad recipes, hostile weights, odd images, outputs.

Each case runs `fcnseg.cli.main([...])` in-process inside its own sandbox (the test's tmp
folder, also the working directory) and asserts:

- the exit status (2: refused, one line; 1: some predict inputs failed; 0: handled),
- stderr: exactly the expected number of lines (one for a refusal), never "Traceback",
- nothing that existed before was lost or changed (shared fixtures included),
- nothing was written outside the output folder the case allows (a snapshot of the sandbox
  tree before and after; no allowed folder means nothing may be written at all).

The cases are data (`CASES`), grouped by kind, so that benchmarks/hostile_corpus_table.py can
print the table of benchmarks/RESULTS.md from a run of this file. Read-only folders and a full
disk cannot be made for root without mounting anything, so those cases emulate the failing
system call (EROFS / ENOSPC raised by the write) in-process; an output path under a regular
file gives the kernel's own ENOTDIR.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from image_bytes import header_only_png, png_bytes
from PIL import Image

from fcnseg.cli import main

MODEL = "fcn8s_efficientnet_lite0"
TINY_OPTIONS = {"num_images": 2, "size": [32, 32]}
TRAIN = [
    f"model.name={MODEL}",
    "model.pretrained=false",
    "train.epochs=1",
    "train.device=cpu",
    "train.progress=false",
]


# ------------------------------------------------------------------------------ fixtures
def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    return header_only_png(width, height)


def good_meta() -> dict:
    from fcnseg.data.datasets.registry import get_dataset_class
    from fcnseg.engine.checkpoint import weights_metadata

    info = get_dataset_class("synthetic").class_info
    meta = weights_metadata(
        MODEL,
        {},
        num_classes=len(info.names),
        classes=list(info.names),
        palette=[list(c) for c in info.palette],
        normalization="tf_lite",
        ignore_index=info.ignore_index,
        data_format="synthetic",
    )
    meta["config"] = {"data": {"format": "synthetic", "options": TINY_OPTIONS, "val_split": "val"}}
    return meta


@dataclass
class Shared:
    """Module-wide read-only fixtures: a good weights file (untrained: the cases test handling,
    not accuracy), its tensors, and a 4-channel early-fusion model's weights."""

    root: Path
    weights: Path
    fusion_weights: Path
    tensors: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    from fcnseg.engine.checkpoint import save_weights
    from fcnseg.models import build_model

    root = tmp_path_factory.mktemp("hostile_shared")
    torch.manual_seed(0)
    meta = good_meta()
    model = build_model(MODEL, meta["num_classes"], pretrained=False)
    weights = root / "good.safetensors"
    save_weights(weights, model, meta)
    fusion = build_model(
        "early_fusion", meta["num_classes"], pretrained=False, base=MODEL, in_channels=4
    )
    fusion_weights = root / "fusion.safetensors"
    fusion_meta = {**meta, "model": "early_fusion"}
    fusion_meta["model_options"] = {"base": MODEL, "in_channels": 4}
    save_weights(fusion_weights, fusion, fusion_meta)
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Shared(root, weights, fusion_weights, tensors)


# ------------------------------------------------------------------------- the harness
def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (symlinks not followed) -> a digest of what it is/holds."""
    entries: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                entries[key] = "dir"
            else:
                entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """main(argv) in `cwd` with stdout/stderr captured; an escaping exception is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - a traceback is what the corpus must catch
                traceback.print_exc(file=err)
                code = -1
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


@dataclass
class Sandbox:
    """One case's world: `root` (snapshotted), `cwd` inside it, the shared fixtures."""

    root: Path
    cwd: Path
    shared: Shared
    monkeypatch: pytest.MonkeyPatch

    def file(self, relative: str, data: bytes | str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def weights_with(self, meta: object, name: str = "w.safetensors", tensors=None) -> Path:
        """A weights file with `meta` (any JSON value) as its fcnseg metadata."""
        from safetensors.torch import save_file

        path = self.root / name
        header = {"fcnseg": meta if isinstance(meta, str) else json.dumps(meta)}
        save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata=header)
        return path

    def good_meta_with(self, **changes) -> dict:
        meta = good_meta()
        meta.update(changes)
        return meta


@dataclass
class Case:
    """One hostile input: `make(sandbox)` -> (argv, folders the command may write under)."""

    kind: str
    name: str
    make: Callable[[Sandbox], tuple[list[str], list[Path]]]
    exit: int = 2
    #: Exact number of stderr lines (1 for a refusal or one failed input).
    stderr_lines: int = 1
    #: Words the stderr (lower-cased) must contain.
    says: tuple[str, ...] = ()
    #: Extra assertions on (sandbox, stdout).
    check: Callable[[Sandbox, str], None] | None = None
    outcome: str = field(default="")

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"


CASES: list[Case] = []


def case(kind: str, name: str, exit: int = 2, lines: int = 1, says=(), check=None):
    def wrap(make):
        CASES.append(Case(kind, name, make, exit, lines, tuple(says), check))
        return make

    return wrap


# ---------------------------------------------------------------- recipes and overrides
def _train(sandbox: Sandbox, *extra: str) -> tuple[list[str], list[Path]]:
    return ["train", "--out", str(sandbox.root / "run"), *TRAIN, *extra], []


def _recipe(sandbox: Sandbox, text: str | bytes, *extra: str) -> tuple[list[str], list[Path]]:
    path = sandbox.file("recipe.yaml", text)
    argv, allowed = _train(sandbox, *extra)
    return [*argv[:1], "--config", str(path), *argv[1:]], allowed


LAUGHS = "\n".join(
    ["data:", "  options:", "    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
)
case("recipe", "billion-laughs-aliases", says=("alias",))(lambda s: _recipe(s, LAUGHS))
case("recipe", "anchor-in-override", says=("anchor",))(
    lambda s: _train(s, "data.options=&x {num_images: 2}")
)
case("recipe", "unknown-data-option-for-format", says=("num_images", "camvid"))(
    lambda s: _train(s, "data.format=camvid", "data.options={num_images: 4, size: [32, 32]}")
)
case("recipe", "unknown-val-option", says=("data.val_options", "bogus"))(
    lambda s: _train(s, "data.val_options={bogus: 1}")
)
case("recipe", "unknown-eval-option", says=("eval.options", "tiles"))(
    lambda s: _train(s, "eval.options={tiles: 3}")
)
case("recipe", "unknown-model-option", says=("model.options", "depth"))(
    lambda s: _train(s, "model.options={depth: 3}")
)
case("recipe", "unknown-option-through-fusion-base", says=("model.options", "wings"))(
    lambda s: _train(s, "model.name=late_fusion", f"model.options={{base: {MODEL}, wings: 2}}")
)
case("recipe", "name-escapes-runs", says=("name",))(lambda s: _train(s, "name=../../escaped"))
case("recipe", "name-with-separator", says=("name",))(
    lambda s: _recipe(s, "name: a/b\n", "--out", str(s.root / "run2"))
)
case("recipe", "override-without-equals", says=("override",))(lambda s: _train(s, "train.lr"))
case("recipe", "override-wrong-type", says=("train.lr",))(lambda s: _train(s, "train.lr=fast"))
case("recipe", "unknown-top-level-key", says=("unknown config key",))(
    lambda s: _train(s, "trian.lr=0.1")
)
case("recipe", "recipe-is-a-list", says=("mapping",))(lambda s: _recipe(s, "- a\n- b\n"))
case("recipe", "recipe-is-binary", says=("not a text file",))(
    lambda s: _recipe(s, b"\xff\xfe\x00\x81" * 64)
)
case("recipe", "invalid-yaml", says=("invalid yaml",))(
    lambda s: _recipe(s, "train: {lr: [unclosed\n")
)
case("recipe", "unknown-model", says=("unknown model",))(
    lambda s: _train(s, "model.name=fcn9s_nothing")
)
case("recipe", "unknown-data-format", says=("format",))(lambda s: _train(s, "data.format=vocx"))
case("recipe", "missing-recipe-file", says=("not found",))(
    lambda s: (["train", "--config", str(s.root / "nope.yaml")], [])
)
case("recipe", "base-cycle", says=("cycle",))(lambda s: _recipe(s, "base: recipe.yaml\n"))
case("recipe", "release-preset-on-other-model", says=("release",))(
    lambda s: _train(s, "train.preset=release")
)
case("recipe", "model-options-not-a-mapping", says=("model.options",))(
    lambda s: _train(s, "model.options=5")
)


case("recipe", "out-root-climbs-out", says=("out_root",))(
    lambda s: _recipe(s, "out_root: ../../elsewhere\n")
)


def _run_with_laughs(sandbox: Sandbox):
    meta = good_meta()
    del meta["config"]
    (sandbox.root / "run").mkdir()
    sandbox.weights_with(meta, "run/model.safetensors", tensors=sandbox.shared.tensors)
    sandbox.file("run/config.yaml", LAUGHS)
    image = sandbox.file("in/a.png", png_bytes())
    out = sandbox.root / "pred"
    return ["predict", "--run", str(sandbox.root / "run"), str(image), "--out", str(out)], [out]


case("recipe", "run-config-with-aliases-ignored", exit=0, lines=0)(_run_with_laughs)


# ----------------------------------------------------------------- hostile weights files
def _predict_with(sandbox: Sandbox, weights: Path, *extra: str) -> tuple[list[str], list[Path]]:
    image = sandbox.file("in/a.png", png_bytes())
    out = sandbox.root / "pred"
    return ["predict", "--weights", str(weights), str(image), "--out", str(out), *extra], []


def _hostile(**changes):
    return lambda s: _predict_with(s, s.weights_with(s.good_meta_with(**changes)))


case("weights", "metadata-is-a-list", says=("not an object",))(
    lambda s: _predict_with(s, s.weights_with([1, 2, 3]))
)
case("weights", "metadata-not-json", says=("not valid json",))(
    lambda s: _predict_with(s, s.weights_with("{not json"))
)
case("weights", "num-classes-2e8", says=("num_classes",))(_hostile(num_classes=200_000_000))
case("weights", "num-classes-string", says=("num_classes",))(_hostile(num_classes="6"))
case("weights", "num-classes-zero", says=("num_classes",))(_hostile(num_classes=0))
case("weights", "classes-wrong-length", says=("classes",))(_hostile(classes=["a", "b"]))
case("weights", "palette-is-an-int", says=("palette",))(_hostile(palette=7))
case("weights", "palette-one-colour", says=("palette",))(_hostile(palette=[[0, 0, 0]]))
case("weights", "palette-colour-out-of-range", says=("palette",))(
    _hostile(palette=[[300, 0, 0]] * 6)
)
case("weights", "normalization-unknown", says=("normalization",))(_hostile(normalization="x"))
case("weights", "model-options-a-list", says=("model_options",))(_hostile(model_options=[1]))
case("weights", "model-options-unknown-key", says=("wings",))(
    lambda s: _predict_with(
        s, s.weights_with(s.good_meta_with(model_options={"wings": 2}), tensors=s.shared.tensors)
    )
)
case("weights", "model-option-huge-int", says=("model_options",))(
    _hostile(model_options={"head_channels": 10**12})
)
case("weights", "inference-scales-60", says=("scales",))(
    _hostile(inference={"mode": "multiscale", "options": {"scales": [60]}})
)
case("weights", "inference-tile-100000", says=("tile_size",))(
    _hostile(inference={"mode": "sliding", "options": {"tile_size": 100000}})
)
case("weights", "inference-mode-unknown", says=("inference",))(
    _hostile(inference={"mode": "turbo", "options": {}})
)
case("weights", "inference-value-a-string", says=("scales",))(
    _hostile(inference={"mode": "multiscale", "options": {"scales": "big"}})
)
case("weights", "model-name-unknown", says=("unknown model",))(
    lambda s: _predict_with(s, s.weights_with(s.good_meta_with(model="fcn9s_nothing")))
)
case("weights", "no-fcnseg-header", says=("metadata",))(lambda s: _predict_with(s, _no_header(s)))
case("weights", "not-safetensors", says=("not a readable",))(
    lambda s: _predict_with(s, s.file("junk.safetensors", b"\x00garbage" * 100))
)
case("weights", "tensors-do-not-fit", says=("do not fit",))(
    lambda s: _predict_with(
        s,
        s.weights_with(
            s.good_meta_with(num_classes=5, classes=list("abcde"), palette=[[0, 0, 0]] * 5),
            tensors=s.shared.tensors,
        ),
    )
)
case("weights", "pickle-payload-checkpoint", says=("not a readable",))(
    lambda s: (
        [
            "predict",
            "--checkpoint",
            str(_pickle_bomb(s)),
            str(s.file("in/a.png", png_bytes())),
            "--out",
            str(s.root / "pred"),
        ],
        [],
    )
)
case("weights", "cli-scales-60", says=("scales",))(
    lambda s: _predict_with(s, s.shared.weights, "--mode", "multiscale", "--scales", "60")
)
case("weights", "cli-tile-size-5", says=("tile_size",))(
    lambda s: _predict_with(s, s.shared.weights, "--mode", "sliding", "--tile-size", "5")
)
case("weights", "eval-with-list-metadata", says=("not an object",))(
    lambda s: (["eval", "--weights", str(s.weights_with([])), "--format", "synthetic"], [])
)


def _no_header(sandbox: Sandbox) -> Path:
    from safetensors.torch import save_file

    path = sandbox.root / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    return path


class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD-RAN",))


def _pickle_bomb(sandbox: Sandbox) -> Path:
    path = sandbox.root / "evil.pt"
    with open(path, "wb") as stream:
        pickle.dump({"model": _Payload(), "meta": {}}, stream)
    return path


# ----------------------------------------------------------------------------- images
def _predict_inputs(sandbox: Sandbox, files: dict[str, bytes], *extra: str):
    paths = [str(sandbox.file(f"in/{name}", data)) for name, data in files.items()]
    out = sandbox.root / "pred"
    argv = ["predict", "--weights", str(sandbox.shared.weights), *paths, "--out", str(out)]
    return [*argv, *extra], [out]


def _written(*names: str):
    def check(sandbox: Sandbox, stdout: str) -> None:
        present = sorted(
            str(p.relative_to(sandbox.root / "pred"))
            for p in (sandbox.root / "pred").rglob("*")
            if p.is_file()
        )
        assert present == sorted(names), present

    return check


case(
    "images",
    "corrupt-among-good",
    exit=1,
    says=("bad.png", "skipped"),
    check=_written("good.png", "good_overlay.jpg", "later.png", "later_overlay.jpg"),
)(
    lambda s: _predict_inputs(
        s,
        {
            "good.png": png_bytes(),
            "bad.png": b"\x89PNG\r\n\x1a\nnot really",
            "later.png": png_bytes(seed=1),
        },
    )
)
case(
    "images",
    "truncated-png",
    exit=1,
    says=("cut.png",),
    check=_written("good.png", "good_overlay.jpg"),
)(lambda s: _predict_inputs(s, {"good.png": png_bytes(), "cut.png": png_bytes(64, 64)[:200]}))
case(
    "images",
    "decompression-bomb-header",
    exit=1,
    says=("bomb.png", "mpx"),
    check=_written("good.png", "good_overlay.jpg"),
)(lambda s: _predict_inputs(s, {"good.png": png_bytes(), "bomb.png": bomb_png()}))
case(
    "images",
    "text-file-named-png",
    exit=1,
    says=("notes.png",),
    check=_written("good.png", "good_overlay.jpg"),
)(lambda s: _predict_inputs(s, {"good.png": png_bytes(), "notes.png": b"hello, world\n" * 20}))
case("images", "only-input-is-a-bomb", exit=1, says=("bomb.png",), check=_written())(
    lambda s: _predict_inputs(s, {"bomb.png": bomb_png(30000, 30000)})
)


def _odd_images() -> dict[str, bytes]:
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 20), 40000, dtype=np.uint16)).save(buffer, format="PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 16), (10, 20, 30, 0)).save(cmyk, format="JPEG")
    return {
        "grey16.png": buffer.getvalue(),
        "rgba.png": png_bytes(mode="RGBA"),
        "palette.png": png_bytes(mode="P"),
        "gray.png": png_bytes(mode="L"),
        "cmyk.jpg": cmyk.getvalue(),
        "tiny.png": png_bytes(1, 1),
    }


case(
    "images",
    "odd-but-valid-modes",
    exit=0,
    lines=0,
    check=_written(
        *[
            f"{n}{s}"
            for n in ("grey16", "rgba", "palette", "gray", "cmyk", "tiny")
            for s in (".png", "_overlay.jpg")
        ]
    ),
)(lambda s: _predict_inputs(s, _odd_images()))
# Inputs made for another model are refused from their headers before any output (issue 23).
case("images", "wrong-channels-for-model", says=("rgb.png", "3 band(s) but the model takes 4"))(
    lambda s: (
        [
            "predict",
            "--weights",
            str(s.shared.fusion_weights),
            str(s.file("in/rgb.png", png_bytes())),
            "--out",
            str(s.root / "pred"),
        ],
        [],
    )
)


def _pixel_cap(sandbox: Sandbox):
    sandbox.monkeypatch.setenv("FCNSEG_MAX_FORWARD_PIXELS", "10000")
    return _predict_inputs(
        sandbox, {"big.png": png_bytes(64, 64)}, "--mode", "multiscale", "--scales", "4"
    )


case("images", "forward-pixel-cap", exit=1, says=("forward pass",), check=_written())(_pixel_cap)


def _folder_dataset(sandbox: Sandbox, bad: bytes) -> Path:
    root = sandbox.root / "data"
    names = [f"c{i}" for i in range(6)]
    sandbox.file("data/classes.yaml", json.dumps({"names": names}))
    mask = io.BytesIO()
    Image.fromarray(np.zeros((32, 40), dtype=np.uint8)).save(mask, format="PNG")
    for stem, data in (("ok", png_bytes()), ("zz_bad", bad)):
        sandbox.file(f"data/images/val/{stem}.png", data)
        sandbox.file(f"data/masks/val/{stem}.png", mask.getvalue())
    return root


case("images", "eval-folder-with-bomb", says=("zz_bad.png",))(
    lambda s: (
        [
            "eval",
            "--weights",
            str(s.shared.weights),
            "--format",
            "folder",
            "--data-root",
            str(_folder_dataset(s, bomb_png())),
            "--split",
            "val",
            "--out",
            str(s.root / "s.json"),
        ],
        [],
    )
)
case("images", "eval-folder-with-corrupt", says=("zz_bad.png",))(
    lambda s: (
        [
            "eval",
            "--weights",
            str(s.shared.weights),
            "--format",
            "folder",
            "--data-root",
            str(_folder_dataset(s, b"garbage")),
            "--split",
            "val",
            "--out",
            str(s.root / "s.json"),
        ],
        [],
    )
)
case("images", "data-check-folder-with-bomb", exit=1, lines=0)(
    lambda s: (
        [
            "data",
            "check",
            "--format",
            "folder",
            "--root",
            str(_folder_dataset(s, bomb_png())),
            "--splits",
            "val",
        ],
        [],
    )
)
case("images", "data-check-unknown-format", says=("format",))(
    lambda s: (["data", "check", "--format", "nope"], [])
)


# ------------------------------------------------------------------- predict collisions
def _names_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _expect(*names: str):
    def check(sandbox: Sandbox, stdout: str) -> None:
        assert _names_under(sandbox.root / "pred") == sorted(names), stdout

    return check


def _collide(sandbox: Sandbox):
    a = sandbox.file("in/a/scene.png", png_bytes(seed=1))
    b = sandbox.file("in/b/scene.png", png_bytes(seed=2))
    out = sandbox.root / "pred"
    return [
        "predict",
        "--weights",
        str(sandbox.shared.weights),
        str(a),
        str(b),
        "--out",
        str(out),
        "--no-overlay",
    ], [out]


case(
    "predict", "same-name-two-folders", exit=0, lines=0, check=_expect("a/scene.png", "b/scene.png")
)(_collide)
case(
    "predict",
    "same-stem-two-suffixes",
    exit=0,
    lines=0,
    check=_expect("scene_jpg.png", "scene_png.png"),
)(lambda s: _predict_inputs(s, {"scene.png": png_bytes(), "scene.jpg": _jpeg()}, "--no-overlay"))


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _twice(sandbox: Sandbox):
    image = sandbox.file("in/one.png", png_bytes())
    out = sandbox.root / "pred"
    return [
        "predict",
        "--weights",
        str(sandbox.shared.weights),
        str(image),
        str(image),
        str(sandbox.root / "in"),
        "--out",
        str(out),
        "--no-overlay",
    ], [out]


def _one_image(sandbox: Sandbox, stdout: str) -> None:
    assert _names_under(sandbox.root / "pred") == ["one.png"]
    assert stdout.strip().startswith("1 images"), stdout


case("predict", "same-file-three-ways", exit=0, lines=0, check=_one_image)(_twice)


def _loop(sandbox: Sandbox):
    sandbox.file("tree/x/one.png", png_bytes())
    sandbox.file("tree/y/two.png", png_bytes(seed=3))
    (sandbox.root / "tree" / "x" / "back").symlink_to(sandbox.root / "tree")
    (sandbox.root / "tree" / "y" / "self").symlink_to(sandbox.root / "tree" / "y")
    out = sandbox.root / "pred"
    pattern = str(sandbox.root / "tree" / "**" / "*.png")
    return [
        "predict",
        "--weights",
        str(sandbox.shared.weights),
        pattern,
        "--out",
        str(out),
        "--no-overlay",
    ], [out]


def _two_images(sandbox: Sandbox, stdout: str) -> None:
    assert _names_under(sandbox.root / "pred") == ["one.png", "two.png"]
    assert stdout.strip().startswith("2 images"), stdout


case("predict", "glob-through-symlink-loops", exit=0, lines=0, check=_two_images)(_loop)


def _linked_file(sandbox: Sandbox):
    real = sandbox.file("in/real.png", png_bytes())
    (sandbox.root / "in" / "alias.png").symlink_to(real)
    out = sandbox.root / "pred"
    return [
        "predict",
        "--weights",
        str(sandbox.shared.weights),
        str(sandbox.root / "in"),
        "--out",
        str(out),
        "--no-overlay",
    ], [out]


case(
    "predict",
    "symlinked-file-listed-once",
    exit=0,
    lines=0,
    check=lambda s, out: _names_under(s.root / "pred").__len__() == 1 or pytest.fail(out),
)(_linked_file)


def _keeps_other_files(sandbox: Sandbox):
    sandbox.file("pred/notes.txt", "mine")
    return _predict_inputs(sandbox, {"a.png": png_bytes()}, "--no-overlay")


case("predict", "existing-files-in-out-kept", exit=0, lines=0, check=_expect("a.png", "notes.txt"))(
    _keeps_other_files
)


# ------------------------------------------------------------- outputs and filesystem
def _under_file(sandbox: Sandbox) -> Path:
    return sandbox.file("plain.txt", "a file, not a folder") / "sub"


case("outputs", "predict-out-is-a-file", says=("not a folder",))(
    lambda s: (
        [
            "predict",
            "--weights",
            str(s.shared.weights),
            str(s.file("in/a.png", png_bytes())),
            "--out",
            str(s.file("taken", "x")),
        ],
        [],
    )
)
case("outputs", "predict-out-under-a-file", says=("not a folder",))(
    lambda s: (
        [
            "predict",
            "--weights",
            str(s.shared.weights),
            str(s.file("in/a.png", png_bytes())),
            "--out",
            str(_under_file(s)),
        ],
        [],
    )
)
case("outputs", "eval-out-under-a-file", says=("not a directory",))(
    lambda s: (
        [
            "eval",
            "--weights",
            str(s.shared.weights),
            "--format",
            "synthetic",
            "--out",
            str(_under_file(s) / "s.json"),
        ],
        [],
    )
)
case("outputs", "export-out-is-a-folder", says=("directory",))(
    lambda s: (
        [
            "export",
            "--weights",
            str(s.shared.weights),
            "--to",
            "safetensors",
            "--out",
            str(_folder_with_file(s)),
        ],
        [],
    )
)
case("outputs", "export-out-under-a-file", says=("not a directory",))(
    lambda s: (
        [
            "export",
            "--weights",
            str(s.shared.weights),
            "--to",
            "safetensors",
            "--out",
            str(_under_file(s) / "m.safetensors"),
        ],
        [],
    )
)


def _folder_with_file(sandbox: Sandbox) -> Path:
    sandbox.file("exported/keep.txt", "keep")
    return sandbox.root / "exported"


def _failing_fsync(code: int, sandbox: Sandbox):
    """Emulate a read-only / full filesystem for atomic writes (root ignores chmod)."""
    import fcnseg.io_utils as io_utils

    def refuse(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    sandbox.monkeypatch.setattr(io_utils.os, "fsync", refuse)


def _eval_failing_disk(code: int):
    def make(sandbox: Sandbox):
        target = sandbox.file("scores/s.json", '{"old": true}')
        _failing_fsync(code, sandbox)
        return [
            "eval",
            "--weights",
            str(sandbox.shared.weights),
            "--format",
            "synthetic",
            "--out",
            str(target),
        ], []

    return make


case("outputs", "eval-read-only-emulated", says=("read-only",))(_eval_failing_disk(errno.EROFS))
case("outputs", "eval-full-disk-emulated", says=("space",))(_eval_failing_disk(errno.ENOSPC))


def _predict_read_only(sandbox: Sandbox):
    def refuse(self, fp, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(fp))

    made = _predict_inputs(sandbox, {"a.png": png_bytes()})
    sandbox.monkeypatch.setattr(Image.Image, "save", refuse)
    return made


case("outputs", "predict-read-only-emulated", says=("read-only",))(_predict_read_only)


def _stored_split_escape(sandbox: Sandbox):
    meta = good_meta()
    meta["config"]["data"]["val_split"] = "../../escaped"
    run = sandbox.root / "run"
    run.mkdir()
    weights = sandbox.weights_with(meta, "run/model.safetensors", tensors=sandbox.shared.tensors)
    assert weights.parent == run
    return ["eval", "--run", str(run)], []


case("outputs", "eval-stored-split-escapes", says=("split",))(_stored_split_escape)


def _stored_format_escape(sandbox: Sandbox):
    meta = good_meta()
    meta["data_format"] = "../../x"
    meta["config"]["data"]["format"] = "../../x"
    run = sandbox.root / "run"
    run.mkdir()
    sandbox.weights_with(meta, "run/model.safetensors", tensors=sandbox.shared.tensors)
    return ["eval", "--run", str(run)], []


case("outputs", "eval-stored-format-escapes", says=("format",))(_stored_format_escape)


# --------------------------------------------- issue 22: recipe numbers, class files, pickles
for _override, _key in (
    ("train.lr=.nan", "train.lr"),
    ("train.lr=1e30", "train.lr"),
    ("train.distill_weight=.nan", "train.distill_weight"),
    ("train.distill_temperature=.inf", "train.distill_temperature"),
    ("train.momentum=-.inf", "train.momentum"),
):
    case("recipe", f"number-{_override.split('=')[0]}-{_override.split('=')[1]}", says=(_key,))(
        lambda s, o=_override: _train(s, o)
    )


def _folder_train(sandbox: Sandbox, classes: str) -> tuple[list[str], list[Path]]:
    """`train` on a folder dataset (one good pair) whose classes.yaml is `classes`."""
    sandbox.file("data/classes.yaml", classes)
    mask = io.BytesIO()
    Image.fromarray(np.zeros((32, 40), dtype=np.uint8)).save(mask, format="PNG")
    sandbox.file("data/images/a.png", png_bytes())
    sandbox.file("data/masks/a.png", mask.getvalue())
    return _train(
        sandbox, "data.format=folder", "data.options={}", f"data.root={sandbox.root / 'data'}"
    )


case("data", "classes-palette-of-strings", says=("classes.yaml", "palette"))(
    lambda s: _folder_train(s, "names: [a, b]\npalette: [red, blue]\n")
)
case("data", "classes-palette-string-values", says=("classes.yaml", "palette"))(
    lambda s: _folder_train(s, "names: [a, b]\npalette: [[a, b, c], [0, 0, 0]]\n")
)
case("data", "classes-palette-a-number", says=("classes.yaml", "palette"))(
    lambda s: _folder_train(s, "names: [a, b]\npalette: 7\n")
)
case("data", "classes-ignore-index-text", says=("classes.yaml", "ignore_index"))(
    lambda s: _folder_train(s, "names: [a, b]\nignore_index: abc\n")
)
case("data", "classes-names-a-string", says=("classes.yaml", "names"))(
    lambda s: _folder_train(s, "names: abc\n")
)
case("weights", "pickle-payload-encoder-weights", says=("encoder weights", "evil.pt"))(
    lambda s: _train(s, f"model.options={{encoder_weights: {_pickle_bomb(s)}}}")
)
case("weights", "pickle-payload-encoder-weights-paper-net", says=("encoder weights", "evil.pt"))(
    lambda s: _train(
        s,
        "model.name=fcn32s_vgg16_padded",
        f"model.options={{width_divisor: 64, encoder_weights: {_pickle_bomb(s)}}}",
    )
)


# ---------------------------------------------------------------------------- the test
@pytest.fixture
def sandbox(tmp_path, shared, monkeypatch) -> Sandbox:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return Sandbox(tmp_path, cwd, shared, monkeypatch)


@pytest.mark.parametrize("hostile", CASES, ids=lambda c: c.id)
def test_hostile_input(hostile: Case, sandbox: Sandbox, capfd):
    argv, allowed = hostile.make(sandbox)
    before = snapshot(sandbox.root)
    before_shared = snapshot(sandbox.shared.root)
    code, stdout, stderr = run_cli(argv, sandbox.cwd)
    sandbox.monkeypatch.undo()  # emulated failures end with the command
    assert "Traceback" not in stderr, stderr
    assert "PAYLOAD-RAN" not in stdout + capfd.readouterr().out
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == hostile.stderr_lines, stderr
    assert code == hostile.exit, (code, stderr, stdout)
    for word in hostile.says:
        assert word.lower() in stderr.lower(), stderr
    after = snapshot(sandbox.root)
    changed = [key for key, digest in before.items() if after.get(key) != digest]
    assert not changed, f"lost or overwritten: {changed}"
    allowed_roots = [str(path.relative_to(sandbox.root)) for path in allowed]
    new = [key for key in after if key not in before]
    outside = [
        key
        for key in new
        if not any(key == root or key.startswith(root + os.sep) for root in allowed_roots)
    ]
    assert not outside, f"written outside {allowed_roots or 'nothing allowed'}: {outside}"
    assert snapshot(sandbox.shared.root) == before_shared, "shared fixtures changed"
    if hostile.check is not None:
        hostile.check(sandbox, stdout)


def test_corpus_is_large_enough():
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


def test_default_scores_path_stays_in_the_run(tmp_path):
    from fcnseg.engine.run_eval import default_scores_path
    from fcnseg.paths import inside

    path = default_scores_path(tmp_path, "../../fmt", "../../../etc/split")
    assert path.parent == tmp_path and "/" not in path.name
    inside(path, tmp_path)


def test_fusion_option_check_accepts_the_base_options():
    from fcnseg.models.factory import accepted_options

    assert {"stream_weights", "output_stride", "encoder"} <= accepted_options("late_fusion")
