"""Shared fixtures: where the real data lives, with the skip/fail rule of the project."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from fcnseg.data.io import default_data_dir


def require_real_dataset(name: str, marker_file: str) -> Path:
    """Root of the real dataset `name` under the data dir; skip if absent, fail under CI=true."""
    root = default_data_dir() / name
    if not (root / marker_file).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the {name} copy is missing at {root}")
        pytest.skip(f"real {name} not found at {root} (set FCNSEG_DATA to its parent)")
    return root


@pytest.fixture
def real_camvid() -> Path:
    """The real CamVid copy (../shared/data/camvid here)."""
    return require_real_dataset("camvid", "train.txt")


def in_ci() -> bool:
    """CI=true (set by .ci/run): what CI installs must be there, so its tests cannot skip."""
    return os.environ.get("CI") == "true"


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip (module level too) when something optional is missing; fail under CI=true.

    Why: a test that skips in CI proves nothing, and a skip is easy to miss in a green run. CI
    (.ci/run) installs the test, export and crf extras, so their tests must run there.
    """
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, install: str):
    """`pytest.importorskip(name)` that fails under CI=true; `install` says how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail_in_ci(f"{name} is not installed ({install})")


#: Overrides that make `fcnseg train` a seconds-long run on four 32x32 synthetic scenes, for the
#: CLI tests that need a trained run directory.
TINY_TRAIN_OVERRIDES: list[str] = [
    "model.name=fcn8s_efficientnet_lite0",
    "model.pretrained=false",
    "data.format=synthetic",
    "data.options={num_images: 4, size: [32, 32]}",
    "data.crop_size=[32, 32]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.device=cpu",
    "train.progress=false",
]
