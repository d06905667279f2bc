"""The page's uncertainty toggle in a real browser (issue 25, item 2): `fcnseg serve --mc-samples`.

`fcnseg serve` runs a net with dropout (the paper FCN-32s, widths / 16) with `--mc-samples 3`;
an uploaded image must offer the "Show uncertainty" toggle, which swaps the class overlay for the
heat map the server returned, at the image's size. Chromium as in tests/test_browser.py (skips
locally without it, fails under CI=true).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import _free_port, browser  # noqa: F401 - the fixture is used by name
from test_mc_dropout_commands import dropout_weights, scene  # noqa: F401 - fixture by name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mc_server(tmp_path_factory, dropout_weights):  # noqa: F811 - the imported fixture
    pytest.importorskip("fastapi")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-mc") / "serve.log"
    command = [
        sys.executable, "-m", "fcnseg.cli", "serve", "--weights", str(dropout_weights),
        "--port", str(port), "--engine", "torch", "--mc-samples", "3",
    ]  # fmt: skip
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"fcnseg serve exited {process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"fcnseg serve not healthy in 90 s: {log.read_text()[-2000:]}")
                time.sleep(0.25)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_uncertainty_toggle_shows_the_heat_map(browser, mc_server, tmp_path):  # noqa: F811
    url, log = mc_server
    assert "mc-dropout: 3 samples per image (seed 0)" in log.read_text()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector("#legend li")
    assert "MC dropout ×3" in page.inner_text("#model-mode")
    assert not page.is_visible("#uncertainty-toggle")  # nothing to toggle before a result
    page.set_input_files("#file", str(scene(tmp_path / "street.png", 48, 64)))
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
    assert page.is_visible("#uncertainty-toggle") and not page.is_visible("#uncertainty")
    assert "3 samples" in page.inner_text("#uncertainty-mean")
    page.check("#show-uncertainty")
    assert page.is_visible("#uncertainty")
    assert page.evaluate("getComputedStyle(document.getElementById('overlay')).visibility") == (
        "hidden"
    )
    page.wait_for_function("document.getElementById('uncertainty').naturalWidth > 0")
    size = page.evaluate(
        "[document.getElementById('uncertainty').naturalWidth,"
        " document.getElementById('uncertainty').naturalHeight]"
    )
    assert size == [64, 48]
    page.uncheck("#show-uncertainty")
    assert not page.is_visible("#uncertainty")
    assert page.evaluate("getComputedStyle(document.getElementById('overlay')).visibility") == (
        "visible"
    )
    page.close()
