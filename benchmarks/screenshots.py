"""The README's screenshots, taken in a real browser: docs/serve_page.png and docs/eval_report.png.

Starts `fcnseg serve` with the shipped CamVid weights on a free loopback port, uploads one
CamVid val image through the page's file input (a sample scene when the data is absent), and
photographs the page; then writes an evaluation report of the same weights on CamVid val
(`fcnseg eval ... --report`, whole-image inference to keep it to a few minutes) unless
`--report DIR` names an existing one, and photographs its top. Chromium is Debian's
(/usr/bin/chromium); Playwright downloads nothing.

    .venv/bin/python benchmarks/screenshots.py            # both pictures
    .venv/bin/python benchmarks/screenshots.py --report runs/report-camvid-val
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FCNSEG_CHROMIUM", "/usr/bin/chromium")
WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0.safetensors"
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
FCNSEG = [sys.executable, "-m", "fcnseg.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"fcnseg serve exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not become healthy in {timeout:.0f} s")


def page_screenshot(weights: Path, image: Path | None, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*FCNSEG, "serve", "--weights", str(weights), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_selector("#samples button")
            if image is not None:
                page.set_input_files("#file", str(image))
            else:
                page.click("#samples button >> nth=0")
            page.wait_for_function("document.body.dataset.state === 'done'", timeout=120_000)
            box = page.locator("#overlay").bounding_box()
            if box:  # hover readout: the class under the cursor
                page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {out}")


def report_screenshot(report: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 1640})
        page.goto((report / "index.html").resolve().as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(out))
        browser.close()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--image", type=Path, default=CAMVID / "val" / "0016E5_07977.png")
    parser.add_argument("--report", type=Path, help="existing eval report folder to photograph")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    image = args.image if args.image.is_file() else None
    page_screenshot(args.weights, image, args.out / "serve_page.png")
    report = args.report
    if report is None:
        if not CAMVID.is_dir():
            raise SystemExit(f"{CAMVID}: no CamVid copy for the report; pass --report DIR")
        report = Path(tempfile.mkdtemp(prefix="fcnseg-report-"))
        subprocess.run(
            [
                *FCNSEG,
                "eval",
                "--weights",
                str(args.weights),
                "--data-root",
                str(CAMVID),
                "--split",
                "val",
                "--mode",
                "whole",
                "--out",
                str(report / "scores.json"),
                "--report",
                str(report),
            ],
            cwd=ROOT,
            check=True,
        )
    report_screenshot(report, args.out / "eval_report.png")


if __name__ == "__main__":
    main()
