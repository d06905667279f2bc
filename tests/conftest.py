"""Shared fixtures: where the real data lives, with the skip/fail rule of the project."""

from __future__ import annotations

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
