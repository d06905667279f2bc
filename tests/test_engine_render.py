"""Overlay colours (fcnseg.engine.render): distinguishable, the dataset palette kept in the PNGs,
and the page (serve/page.html) using the same tables."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np

from fcnseg.constants import CAMVID_PALETTE
from fcnseg.engine.render import (
    CAMVID_OVERLAY,
    KELLY_COLOURS,
    overlay_image,
    overlay_palette,
    palette_image,
)

PAGE = Path(__file__).resolve().parents[1] / "src" / "fcnseg" / "serve" / "page.html"


def _lab(colour) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour: the space where distance approximates what eyes see."""
    rgb = np.asarray(colour, dtype=np.float64) / 255
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (
        np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
        @ linear
        / np.array([0.95047, 1.0, 1.08883])
    )
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _delta_e(a, b) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def test_camvid_overlay_colours_are_distinguishable_where_the_dataset_palette_is_not():
    camvid = [tuple(c) for c in CAMVID_PALETTE[:11]]
    overlay = overlay_palette(camvid)
    road, pavement, car = 3, 4, 8
    # The dataset palette: three purples.
    assert (
        min(_delta_e(camvid[i], camvid[j]) for i, j in combinations((road, pavement, car), 2)) < 45
    )
    assert (
        min(_delta_e(overlay[i], overlay[j]) for i, j in combinations((road, pavement, car), 2))
        > 55
    )
    # Every pair of the 11 classes: CIE76 distance above 30 (about 10 is "clearly different").
    assert min(_delta_e(a, b) for a, b in combinations(overlay, 2)) > 30
    assert len(set(overlay)) == 11


def test_other_palettes_take_kellys_colours_in_order():
    voc_like = [(0, 0, 0)] + [(10 * i, 5, 5) for i in range(1, 21)]
    overlay = overlay_palette(voc_like)
    assert overlay[0] == (0, 0, 0) and overlay[1:] == list(KELLY_COLOURS)
    many = overlay_palette([(i, i, i) for i in range(1, 30)])
    assert many[:20] == list(KELLY_COLOURS) and len(many) == 29


def test_png_keeps_the_dataset_palette_and_the_overlay_uses_the_overlay_colours():
    camvid = [list(c) for c in CAMVID_PALETTE[:11]]
    labels = np.full((2, 3), 8, dtype=np.int64)  # Car everywhere
    png = palette_image(labels, camvid)
    assert png.getpalette()[3 * 8 : 3 * 9] == camvid[8]
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    blended = np.asarray(overlay_image(rgb, labels, camvid, alpha=1.0))[:, 3:]
    assert (blended == np.asarray(CAMVID_OVERLAY[tuple(camvid[8])])).all()


def test_the_page_carries_the_same_colour_tables():
    html = PAGE.read_text()
    found = re.search(
        r'<script type="application/json" id="overlay-colours">(.*?)</script>', html, re.S
    )
    assert found
    tables = json.loads(found.group(1))
    assert [tuple(c) for c in tables["kelly"]] == list(KELLY_COLOURS)
    assert {tuple(a): tuple(b) for a, b in tables["camvid"]} == CAMVID_OVERLAY
