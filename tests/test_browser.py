"""The page and the report in a real browser: Playwright driving Debian's chromium.

Chromium is the system binary (/usr/bin/chromium, installed by .ci/run with apt-get); Playwright
downloads nothing. Without it the tests skip locally and fail under CI=true.

1. `fcnseg serve` (shipped CamVid weights, whole-image inference) runs as a subprocess on a free
   loopback port; an image is uploaded through the page's file input; the overlay must appear
   at the input's size, with a legend of the model's classes, and a wrong file must show a
   friendly error. A screenshot is saved (to docs/serve_page.png when FCNSEG_SCREENSHOTS=1).
2. An evaluation report opened from disk: every <img> decoded, the JSON's scores on the page.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("FCNSEG_CHROMIUM", "/usr/bin/chromium"))
WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0.safetensors"
CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run installs chromium with apt-get")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install 'fcnseg[browser]')")
    if not CHROMIUM.is_file():
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable, "-m", "fcnseg.cli", "serve", "--weights", str(WEIGHTS),
        "--port", str(port), "--mode", "whole", "--engine", "torch", "--max-pixels", "1000000",
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


def test_page_upload_shows_overlay_and_legend(browser, server, tmp_path):
    url, log = server
    image = tmp_path / "street.png"
    from fcnseg.serve.samples import sample_array

    Image.fromarray(sample_array(0)).resize((320, 240)).save(image)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests_outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith((url, "data:", "blob:")) else requests_outside.append(r.url)
        ),
    )
    page.goto(url)
    page.wait_for_selector("#legend li")
    page.set_input_files("#file", str(image))
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
    size = page.evaluate(
        "[document.getElementById('overlay').width, document.getElementById('overlay').height]"
    )
    assert size == [320, 240]
    assert page.evaluate("document.getElementById('photo').naturalWidth") == 320
    legend = page.locator("#legend li").evaluate_all("items => items.map(i => i.dataset.class)")
    assert sorted(legend) == sorted(CAMVID_CLASSES)
    shares = page.locator("#legend .share").all_inner_texts()
    assert all(text.endswith("%") for text in shares)
    assert page.get_attribute("#download-mask", "href").startswith("data:image/png;base64,")
    assert "ms" in page.inner_text("#time-inference")
    # Opacity slider drives the overlay.
    page.fill("#opacity", "20")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("getComputedStyle(document.getElementById('overlay')).opacity") == "0.2"
    page.fill("#opacity", "55")
    page.dispatch_event("#opacity", "input")
    # Both downloads: the class-index PNG (palette mode) and the overlay, at the input's size.
    for button, mode in (("#download-mask", "P"), ("#download-overlay", "RGBA")):
        with page.expect_download() as download:
            page.click(button)
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        picture = Image.open(saved)
        assert picture.size == (320, 240) and picture.mode == mode, (button, picture.mode)
    screenshot = tmp_path / "serve_page.png"
    page.screenshot(path=str(screenshot))
    if os.environ.get("FCNSEG_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "serve_page.png"))
    assert screenshot.stat().st_size > 10_000

    # A file that is not an image: a friendly message, no traceback.
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=30_000)
    message = page.inner_text("#error")
    assert "can't be segmented" in message and "Traceback" not in message
    page.close()
    assert requests_outside == []
    assert "POST /v1/segment?crf=0 200" in log.read_text()  # the page sends its CRF toggle


def test_page_crf_toggle_segments_again_with_the_crf(browser, server, tmp_path):
    """The page's dense-CRF toggle re-sends the image with crf=1 and shows the CRF's time;
    turned off again, the next result says "off"."""
    from conftest import skip_or_fail_in_ci

    from fcnseg.inference.crf import crf_available
    from fcnseg.serve.samples import sample_array

    if not crf_available():
        skip_or_fail_in_ci("pydensecrf2 is not installed (pip install -e '.[crf]')")
    url, log = server
    image = tmp_path / "street.png"
    Image.fromarray(sample_array(1)).resize((160, 120)).save(image)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector("#legend li")
    assert not page.is_checked("#crf")  # the server runs without --crf
    page.set_input_files("#file", str(image))
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
    assert page.inner_text("#time-crf") == "off"
    page.check("#crf")
    crf_shown = "document.getElementById('time-crf').textContent.endsWith('ms')"
    page.wait_for_function(crf_shown, timeout=60_000)
    page.uncheck("#crf")
    page.wait_for_function("document.getElementById('time-crf').textContent === 'off'")
    page.close()
    text = log.read_text()
    assert "/v1/segment?crf=1 200" in text and "/v1/segment?crf=0 200" in text


def test_eval_report_opens_with_images_and_scores(browser, tmp_path):
    from test_report import _scores_shown, build_eval

    from fcnseg.report import write_eval_report

    dataset, collector, payload, meta = build_eval(tmp_path)
    index = write_eval_report(tmp_path / "report", payload, meta, collector, dataset)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    widths = page.locator("img").evaluate_all("images => images.map(i => i.naturalWidth)")
    assert len(widths) >= 3 + 6 and all(width > 0 for width in widths)
    shown = _scores_shown(index.read_text())
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        text = page.inner_text(f'[data-score="{key}"] .value')
        assert text == f"{100 * payload[key]:.1f}" == shown[key]
    page.close()


def test_page_fits_a_phone_and_draws_a_sample_in_the_overlay_colours(browser, server):
    """At 390 x 844 (a phone) nothing is wider than the screen, before and after a result; a
    sample scene's overlay pixels are the distinguishable overlay colours (engine/render.py),
    while the class-index PNG keeps the dataset palette."""
    from fcnseg.constants import CAMVID_PALETTE
    from fcnseg.engine.render import overlay_palette

    url, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(url)
    page.wait_for_selector("#legend li")
    page.wait_for_selector("#samples button")
    width = "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    assert page.evaluate(width) <= 390
    page.click("#samples button >> nth=0")
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
    assert page.evaluate(width) <= 390
    drawn = page.evaluate(
        """(() => { const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set(); for (let i = 0; i < d.length; i += 4 * 97) seen.add(`${d[i]},${d[i+1]},${d[i+2]}`);
        return [...seen]; })()"""
    )
    overlay = {f"{r},{g},{b}" for r, g, b in overlay_palette(CAMVID_PALETTE[:11])}
    dataset_only = {f"{r},{g},{b}" for r, g, b in CAMVID_PALETTE[:11]} - overlay
    assert set(drawn) <= overlay and len(drawn) >= 4
    assert not set(drawn) & dataset_only
    swatch = page.locator("#legend li[data-class='Car'] .swatch").evaluate(
        "s => getComputedStyle(s).backgroundColor"
    )
    assert swatch == "rgb({}, {}, {})".format(*overlay_palette(CAMVID_PALETTE[:11])[8])
    page.close()
