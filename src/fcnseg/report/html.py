"""The HTML both reports are made of: the page frame, its stylesheet, and small escaped parts.

Every string that comes from a file (class names, sample names, metadata, the recipe) goes
through html.escape here or in the sections that use these parts; images are referenced by names
made by the report itself, so nothing from the data decides what a page links to.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

SCORE_LABELS: tuple[tuple[str, str], ...] = (
    ("pixel_accuracy", "Pixel accuracy"),
    ("mean_accuracy", "Mean accuracy"),
    ("mean_iu", "Mean IU"),
    ("frequency_weighted_iu", "Frequency-weighted IU"),
)
#: Metadata entries shown elsewhere in the report (or too long for a table row).
_META_HIDDEN = frozenset({"classes", "palette", "config"})

_CSS = """
:root { --ink: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #3559e0; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
header { background: #161b26; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 21px; font-weight: 650; }
header p { margin: 4px 0 0; color: #c3cad9; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 32px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 18px 22px;
  margin: 0 0 18px; }
h2 { margin: 0 0 12px; font-size: 17px; }
h3 { margin: 18px 0 8px; font-size: 14.5px; color: var(--muted); font-weight: 600; }
.scores { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
.score { border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; background: #fafbfd; }
.score .value { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; }
.score .label { color: var(--muted); font-size: 13px; }
.score.main { border-color: #b9c7f7; background: #eef2fd; }
.two { display: grid; grid-template-columns: minmax(260px, 360px) 1fr; gap: 20px; align-items: start; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; text-transform: uppercase;
  letter-spacing: .4px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; box-shadow: inset 0 0 0 1px rgba(0,0,0,.2); }
img { max-width: 100%; height: auto; display: block; }
.worst { margin: 0 0 14px; }
.worst .caption { font-size: 13.5px; margin: 0 0 4px; }
.worst .caption b { font-variant-numeric: tabular-nums; }
.worst img { width: 100%; }
table.meta th { text-transform: none; letter-spacing: 0; font-size: 13.5px; width: 32%; }
.panels { display: grid; grid-template-columns: repeat(4, 1fr); font-size: 12px; color: var(--muted);
  text-align: center; margin-bottom: 4px; }
.key { font-size: 13px; color: var(--muted); margin: 0 0 10px; }
.key span { margin-right: 14px; }
pre { background: #f6f7f9; border-radius: 8px; padding: 10px 12px; overflow: auto; font-size: 12.5px; }
.note { color: var(--muted); font-size: 13.5px; }
code { background: #f1f3f6; padding: 1px 5px; border-radius: 4px; font-size: 13px; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; padding-bottom: 24px; }
"""


def percent(value: Any) -> str:
    """A score in [0, 1] as a percentage with one decimal ("n/a" for a missing score)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.1f}"


def page(title: str, subtitle: str, body: str) -> str:
    """A whole self-contained page (inline stylesheet, no script, nothing fetched)."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>\n"
        f"<main>\n{body}\n</main>\n"
        "<footer>Written by fcnseg; every picture is a PNG beside this file.</footer>\n"
        "</body>\n</html>\n"
    )


def img(name: str, alt: str) -> str:
    return f'<img src="{escape(name)}" alt="{escape(alt)}" loading="eager">'


def swatch(colour: Any) -> str:
    """A small square of a palette colour ("" when the colour is not an RGB triple)."""
    try:
        r, g, b = (int(c) for c in list(colour)[:3])
    except (TypeError, ValueError):
        return ""
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def prepare_dir(out_dir: Path) -> Path:
    """The report folder, created; an existing file there is refused, never replaced."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"{out_dir}: exists and is not a folder; pass a folder for the report"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def meta_rows(meta: dict[str, Any]) -> str:
    """A key/value table of metadata (sorted; classes, palette and the recipe left out)."""
    rows = []
    for key in sorted(meta):
        if key in _META_HIDDEN:
            continue
        value = meta[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        rows.append(
            f"<tr><th>{escape(str(key))}</th><td><code>{escape(str(text))}</code></td></tr>"
        )
    return '<table class="meta">' + "".join(rows) + "</table>"


def model_section(meta: dict[str, Any]) -> str:
    """The model's metadata and, folded, the training recipe ("" without metadata)."""
    if not meta:
        return ""
    config = meta.get("config")
    details = ""
    if config:
        import yaml

        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        details = f"<details><summary>Training recipe</summary><pre>{escape(text)}</pre></details>"
    return f"<section><h2>Model</h2>{meta_rows(meta)}{details}</section>"
