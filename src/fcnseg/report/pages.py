"""HTML reports: `write_eval_report` (fcnseg eval --report DIR) and `write_run_report`
(fcnseg report RUN).

Each report is DIR/index.html plus the PNGs it shows, beside it: one folder that opens from
disk, offline, with no CDN or script. Every string that comes from a file (class names, sample
names, metadata, the recipe) goes through html.escape, and every file written has a name made
here, joined to DIR: nothing from the data decides where a file lands.
"""

from __future__ import annotations

import csv
import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.report import charts
from fcnseg.report.collect import EvalCollector

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


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.1f}"


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>\n"
        f"<main>\n{body}\n</main>\n"
        "<footer>Written by fcnseg; every picture is a PNG beside this file.</footer>\n"
        "</body>\n</html>\n"
    )


def _img(name: str, alt: str) -> str:
    return f'<img src="{escape(name)}" alt="{escape(alt)}" loading="eager">'


def _swatch(colour: Any) -> str:
    try:
        r, g, b = (int(c) for c in list(colour)[:3])
    except (TypeError, ValueError):
        return ""
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def _prepare_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"{out_dir}: exists and is not a folder; pass a folder for the report"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _meta_rows(meta: dict[str, Any]) -> str:
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


def _raw_rgb(dataset: Any, index: int, shape: tuple[int, int]) -> np.ndarray:
    """Dataset image `index` as uint8 H x W x 3 at the prediction's size (grey if unusable)."""
    from PIL import Image

    try:
        image, _ = dataset.load(index)
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4, 6) and array.shape[-1] not in (3,):
            array = array.transpose(1, 2, 0)
        array = array[..., :3] if array.shape[-1] >= 3 else np.repeat(array[..., :1], 3, axis=2)
        array = np.asarray(array, dtype=np.uint8)
        if array.shape[:2] != shape:
            array = np.asarray(Image.fromarray(array).resize((shape[1], shape[0]), Image.BILINEAR))
        return array
    except Exception:  # noqa: BLE001 - a picture the report cannot draw must not cost the report
        return np.full((*shape, 3), 200, dtype=np.uint8)


def eval_section(
    out_dir: Path,
    payload: dict[str, Any],
    meta: dict[str, Any] | None = None,
    collector: EvalCollector | None = None,
    dataset: Any = None,
    prefix: str = "",
    heading: str = "Evaluation",
) -> str:
    """The HTML of one evaluation (its PNGs written to out_dir, names starting with prefix)."""
    meta = meta or {}
    names = list(payload.get("per_class_iu", {}).keys()) or [
        str(c) for c in meta.get("classes", [])
    ]
    palette = meta.get("palette") or (list(dataset.palette) if dataset is not None else None)
    ious = [payload.get("per_class_iu", {}).get(name) for name in names]
    accuracies = [payload.get("per_class_accuracy", {}).get(name) for name in names]
    mean_iu = float(payload.get("mean_iu") or 0.0)
    parts = [f"<section><h2>{escape(heading)}</h2>"]
    facts = [
        f"{escape(str(payload.get(key)))}"
        for key in ("format", "split")
        if payload.get(key) is not None
    ]
    described = " / ".join(facts)
    if payload.get("images") is not None:
        described += f" · {escape(str(payload['images']))} images"
    if payload.get("mode"):
        options = payload.get("inference_options") or {}
        described += f" · {escape(str(payload['mode']))} inference"
        if options:
            described += f" <code>{escape(json.dumps(options))}</code>"
    if described:
        parts.append(f'<p class="note">{described}</p>')
    parts.append('<div class="scores">')
    for key, label in SCORE_LABELS:
        css = "score main" if key == "mean_iu" else "score"
        parts.append(
            f'<div class="{css}" data-score="{key}"><div class="value">{_pct(payload.get(key))}</div>'
            f'<div class="label">{escape(label)} (%)</div></div>'
        )
    parts.append("</div>")

    # Per-class table + bar chart.
    rows = []
    for index, name in enumerate(names):
        colour = palette[index] if palette and index < len(palette) else None
        rows.append(
            f"<tr><td>{_swatch(colour) if colour is not None else ''}{escape(name)}</td>"
            f'<td class="num">{_pct(ious[index])}</td><td class="num">{_pct(accuracies[index])}</td></tr>'
        )
    bars = charts.iou_bars(out_dir / f"{prefix}iou.png", names, ious, palette, mean_iu)
    parts.append(
        '<h3>Per-class IoU</h3><div class="two"><table><tr><th>class</th><th>IoU %</th>'
        f"<th>acc %</th></tr>{''.join(rows)}</table>{_img(bars.name, 'per-class IoU bar chart')}</div>"
    )

    matrix = collector.confusion if collector is not None else payload.get("confusion_matrix")
    if matrix is not None and len(matrix) == len(names):
        heat = charts.confusion_heatmap(
            out_dir / f"{prefix}confusion.png", names, np.asarray(matrix)
        )
        parts.append(
            "<h3>Confusion (rows: true class, normalised to 100%)</h3>"
            f"{_img(heat.name, 'row-normalised confusion matrix')}"
        )
    per_image = [
        entry.get("mean_iu")
        for entry in (
            collector.json_fields()["per_image"]
            if collector is not None
            else payload.get("per_image", [])
        )
    ]
    per_image = [value for value in per_image if value is not None]
    if per_image:
        histogram = charts.mean_iu_histogram(
            out_dir / f"{prefix}per_image_miu.png", per_image, mean_iu
        )
        parts.append(
            f"<h3>Mean IU per image ({len(per_image)} images)</h3>"
            f"{_img(histogram.name, 'histogram of per-image mean IU')}"
        )
    if matrix is None and not per_image:
        parts.append(
            '<p class="note">The confusion matrix, per-image scores and worst images come from '
            "<code>fcnseg eval ... --report DIR</code>.</p>"
        )

    if collector is not None and dataset is not None and palette:
        worst = collector.worst()
        if worst:
            parts.append(
                f"<h3>The {len(worst)} images with the lowest mean IU</h3>"
                '<p class="key"><span>error map: <b style="color:#e61e1e">red</b> = wrong</span>'
                '<span><b style="color:#696969">dark grey</b> = ignored (void)</span>'
                "<span>ground truth: near-black = void</span></p>"
            )
            for rank, entry in enumerate(worst, start=1):
                rgb = _raw_rgb(dataset, entry.index, entry.target.shape)
                strip = charts.comparison_strip(
                    out_dir / f"{prefix}worst_{rank}.png",
                    rgb,
                    entry.prediction,
                    entry.target,
                    palette,
                )
                try:
                    name = dataset.sample_name(entry.index)
                except Exception:  # noqa: BLE001
                    name = str(entry.index)
                parts.append(
                    f'<div class="worst"><p class="caption">{rank}. {escape(str(name))}: mean IU '
                    f"<b>{_pct(entry.mean_iu)}</b></p>"
                    '<div class="panels"><span>image</span><span>ground truth</span>'
                    "<span>prediction</span><span>error map</span></div>"
                    f"{_img(strip.name, f'{name}: image, ground truth, prediction, error map')}</div>"
                )
    parts.append("</section>")
    return "\n".join(parts)


def _model_section(meta: dict[str, Any]) -> str:
    if not meta:
        return ""
    config = meta.get("config")
    details = ""
    if config:
        import yaml

        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        details = f"<details><summary>Training recipe</summary><pre>{escape(text)}</pre></details>"
    return f"<section><h2>Model</h2>{_meta_rows(meta)}{details}</section>"


def write_eval_report(
    out_dir: str | Path,
    payload: dict[str, Any],
    meta: dict[str, Any] | None = None,
    collector: EvalCollector | None = None,
    dataset: Any = None,
) -> Path:
    """DIR/index.html (+ PNGs) for one `fcnseg eval`; returns the index path."""
    out_dir = _prepare_dir(Path(out_dir))
    meta = meta or {}
    body = eval_section(out_dir, payload, meta, collector, dataset) + _model_section(meta)
    title = f"{meta.get('model') or 'model'} on {payload.get('format', '?')} / {payload.get('split', '?')}"
    subtitle = f"weights: {payload.get('source') or meta.get('source') or '?'}"
    index = out_dir / "index.html"
    index.write_text(_page(title, subtitle, body), encoding="utf-8")
    return index


# ------------------------------------------------------------------------------- run report
def _read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _points(rows: list[dict[str, str]], column: str) -> list[tuple[float, float]]:
    points = []
    for row in rows:
        value, step = row.get(column), row.get("step")
        if value in (None, "") or step in (None, ""):
            continue
        try:
            points.append((float(step), float(value)))
        except ValueError:
            continue
    return points


def _read_val_scores(path: Path) -> dict[int, dict[str, Any]]:
    """Each validation's per-class IU by step; a repeated step (a resume) keeps the last."""
    by_step: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return by_step
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            by_step[int(record["step"])] = record.get("per_class_iu") or {}
        except (ValueError, KeyError, TypeError):
            continue
    return by_step


def _weights_metadata(path: Path) -> dict[str, Any]:
    """The fcnseg metadata of a weights file, read from its header only (no tensors)."""
    if not path.is_file():
        return {}
    try:
        from safetensors import safe_open

        from fcnseg.engine.checkpoint import WEIGHTS_METADATA_KEY

        with safe_open(str(path), framework="pt") as stream:
            header = stream.metadata() or {}
        return json.loads(header.get(WEIGHTS_METADATA_KEY, "{}"))
    except Exception:  # noqa: BLE001 - a report of a run with a broken weights file still helps
        return {}


def write_run_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """RUN/report/index.html (or OUT/index.html): learning curves, evaluations, model, recipe."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found; pass a `fcnseg train` output")
    rows = _read_metrics(run_dir / "metrics.csv")
    by_step = _read_val_scores(run_dir / "val_scores.jsonl")
    evals = sorted(run_dir.glob("eval-*.json"))
    if not rows and not by_step and not evals:
        raise FileNotFoundError(
            f"{run_dir}: no metrics.csv, val_scores.jsonl or eval-*.json; is it a run directory?"
        )
    out_dir = _prepare_dir(Path(out_dir) if out_dir is not None else run_dir / "report")
    meta = _weights_metadata(run_dir / "model.safetensors")
    if (run_dir / "config.yaml").is_file():
        meta["config"] = (run_dir / "config.yaml").read_text()
    classes = [str(c) for c in meta.get("classes", [])]
    palette = meta.get("palette")
    parts = ["<section><h2>Learning curves</h2>"]
    loss = _points(rows, "train_loss")
    if loss:
        chart = charts.line_chart(out_dir / "loss.png", {"training loss": loss}, "loss")
        parts.append(f"<h3>Training loss</h3>{_img(chart.name, 'training loss by step')}")
    scores = {label: _points(rows, key) for key, label in SCORE_LABELS}
    scores = {label: points for label, points in scores.items() if points}
    if scores:
        chart = charts.line_chart(
            out_dir / "val_scores.png", scores, "validation score (%)", percent=True
        )
        parts.append(f"<h3>Validation scores</h3>{_img(chart.name, 'validation scores by step')}")
    if by_step:
        names = classes or sorted({name for record in by_step.values() for name in record})
        series = {
            name: [
                (step, record[name])
                for step, record in sorted(by_step.items())
                if record.get(name) is not None
            ]
            for name in names
        }
        colours = (
            {name: charts._hex(palette[i]) for i, name in enumerate(names) if i < len(palette)}
            if palette and len(names) <= 12
            else None
        )
        chart = charts.line_chart(
            out_dir / "per_class_iu.png", series, "validation IoU (%)", colours, percent=True
        )
        parts.append(
            f"<h3>Per-class validation IoU</h3>{_img(chart.name, 'per-class IoU by step')}"
        )
    if len(parts) == 1:
        parts.append('<p class="note">This run has no metrics.csv or val_scores.jsonl.</p>')
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            shown = {k: v for k, v in summary.items() if k != "last_scores"}
            parts.append(f"<h3>Summary</h3>{_meta_rows(shown)}")
        except ValueError:
            pass
    parts.append("</section>")
    for number, path in enumerate(evals):
        try:
            payload = json.loads(path.read_text())
        except ValueError:
            continue
        parts.append(
            eval_section(
                out_dir, payload, meta, prefix=f"eval{number}_", heading=f"Evaluation: {path.name}"
            )
        )
    parts.append(_model_section(meta))
    title = f"Run {run_dir.resolve().name}"
    subtitle = f"{meta.get('model') or 'model'} · {len(classes) or '?'} classes · {run_dir}"
    index = out_dir / "index.html"
    index.write_text(_page(title, subtitle, "\n".join(parts)), encoding="utf-8")
    return index
