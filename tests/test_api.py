"""The Python way in: `fcnseg.load(weights).predict(image)`, run as the README shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.errors import DataError, UsageError

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights" / "camvid_fcn4s_lite0.safetensors"


def readme_python_example() -> str:
    """The first ```python block of the README's "## Python" section, verbatim."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Python section has no python code block"
    return match.group(1)


@pytest.fixture(scope="module")
def model():
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is shipped with the repository and missing")
    return fcnseg.load(WEIGHTS, device="cpu")


def street_like_image() -> Image.Image:
    """A 72 x 96 RGB image: sky-blue top, grey road bottom, noise (any content will do)."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((72, 96, 3), np.uint8)
    pixels[:30] = (120, 160, 220)
    pixels[30:] = (90, 90, 95)
    noise = rng.integers(-20, 20, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def test_the_readme_example_runs_and_labels_an_image(monkeypatch, model):
    code = readme_python_example()
    assert "fcnseg.load(" in code and ".predict(" in code
    monkeypatch.chdir(REPO)  # the example's weights path is relative to the repository
    image = street_like_image()
    namespace: dict = {"image": image}
    exec(compile(code, "README.md", "exec"), namespace)
    labels = namespace["labels"]
    assert isinstance(labels, np.ndarray) and labels.shape == (72, 96)
    assert labels.dtype == np.int64 and 0 <= labels.min() and labels.max() < 11
    # The same path as the commands: the session's labels for the same pixels.
    session = model.session
    tensor = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
    assert np.array_equal(labels, session.labels([tensor])[0].numpy())


def test_pil_array_and_path_give_the_same_labels(tmp_path, model):
    image = street_like_image()
    image.save(tmp_path / "scene.png")
    from_pil = model.predict(image)
    from_uint8 = model.predict(np.asarray(image))
    from_float = model.predict(np.asarray(image).astype(np.float32) / 255.0)
    from_path = model.predict(tmp_path / "scene.png")
    assert np.array_equal(from_pil, from_uint8) and np.array_equal(from_pil, from_path)
    assert (from_float == from_pil).mean() > 0.99  # float rounding only


def test_probabilities_on_request(model):
    labels, probs = model.predict(street_like_image(), probs=True)
    assert probs.shape == (len(model.classes), 72, 96) and probs.dtype == np.float32
    assert np.allclose(probs.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(probs.argmax(0), labels)


def test_bad_inputs_are_one_line(model):
    with pytest.raises(DataError, match="channels-first"):
        model.predict(np.zeros((3, 40, 50), np.uint8))
    with pytest.raises(DataError, match="4 band"):
        model.predict(np.zeros((40, 50, 4), np.float32))
    with pytest.raises(UsageError, match="PIL image, a NumPy array or a path"):
        model.predict([[1, 2], [3, 4]])


def test_import_fcnseg_stays_torch_free():
    code = "import sys, fcnseg; fcnseg.load; print('torch' in sys.modules)"
    lazy = "import sys, fcnseg; print('torch' in sys.modules, 'load' in dir(fcnseg))"
    env = {"PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["False", "True"], out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "True", out.stderr  # asking for load imports it, not before
