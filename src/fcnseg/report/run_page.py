"""The run report: `write_run_report` (fcnseg report RUN).

A training run directory as RUN/report/index.html: the training loss and validation scores by
step (metrics.csv), per-class validation IoU by step (val_scores.jsonl), the summary, every
`eval-*.json` found in the run, and the model's metadata and recipe. Files a run may lack are
skipped (a report of half a run still helps); a file that is there but malformed is one line
naming it (report/inputs.py), before the report folder is touched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fcnseg.report import charts
from fcnseg.report.eval_page import eval_section
from fcnseg.report.html import SCORE_LABELS, img, meta_rows, model_section, page, prepare_dir
from fcnseg.report.inputs import (
    check_metadata,
    read_eval,
    read_metrics,
    read_summary,
    read_text,
    read_val_scores,
)


def write_run_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """RUN/report/index.html (or OUT/index.html): learning curves, evaluations, model, recipe."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found; pass a `fcnseg train` output")
    rows = read_metrics(run_dir / "metrics.csv")
    by_step = read_val_scores(run_dir / "val_scores.jsonl")
    evals = {path: read_eval(path) for path in sorted(run_dir.glob("eval-*.json"))}
    summary = read_summary(run_dir / "summary.json")
    if not rows and not by_step and not evals:
        raise FileNotFoundError(
            f"{run_dir}: no metrics.csv, val_scores.jsonl or eval-*.json; is it a run directory?"
        )
    meta = check_metadata(
        _weights_metadata(run_dir / "model.safetensors"), run_dir / "model.safetensors"
    )
    out_dir = prepare_dir(Path(out_dir) if out_dir is not None else run_dir / "report")
    if (run_dir / "config.yaml").is_file():
        meta["config"] = read_text(run_dir / "config.yaml")
    classes = [str(c) for c in meta.get("classes", [])]
    parts = _curves_html(out_dir, rows, by_step, classes, meta.get("palette"))
    parts.append(_summary_html(summary))
    parts.append("</section>")
    for number, (path, payload) in enumerate(evals.items()):
        parts.append(
            eval_section(
                out_dir, payload, meta, prefix=f"eval{number}_", heading=f"Evaluation: {path.name}"
            )
        )
    parts.append(model_section(meta))
    title = f"Run {run_dir.resolve().name}"
    subtitle = f"{meta.get('model') or 'model'} · {len(classes) or '?'} classes · {run_dir}"
    index = out_dir / "index.html"
    index.write_text(page(title, subtitle, "\n".join(parts)), encoding="utf-8")
    return index


def _curves_html(
    out_dir: Path,
    rows: list[dict[str, str]],
    by_step: dict[int, dict[str, Any]],
    classes: list[str],
    palette: Any,
) -> list[str]:
    """The learning-curves section, left open for the summary: loss, scores, per-class IoU."""
    parts = ["<section><h2>Learning curves</h2>"]
    loss = _points(rows, "train_loss")
    if loss:
        chart = charts.line_chart(out_dir / "loss.png", {"training loss": loss}, "loss")
        parts.append(f"<h3>Training loss</h3>{img(chart.name, 'training loss by step')}")
    scores = {label: _points(rows, key) for key, label in SCORE_LABELS}
    scores = {label: points for label, points in scores.items() if points}
    if scores:
        chart = charts.line_chart(
            out_dir / "val_scores.png", scores, "validation score (%)", percent=True
        )
        parts.append(f"<h3>Validation scores</h3>{img(chart.name, 'validation scores by step')}")
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
            {
                name: charts.hex_colour(palette[i])
                for i, name in enumerate(names)
                if i < len(palette)
            }
            if palette and len(names) <= 12
            else None
        )
        chart = charts.line_chart(
            out_dir / "per_class_iu.png", series, "validation IoU (%)", colours, percent=True
        )
        parts.append(f"<h3>Per-class validation IoU</h3>{img(chart.name, 'per-class IoU by step')}")
    if len(parts) == 1:
        parts.append('<p class="note">This run has no metrics.csv or val_scores.jsonl.</p>')
    return parts


def _summary_html(summary: dict[str, Any] | None) -> str:
    """The run's summary.json as a table (the last scores are shown elsewhere); "" if none."""
    if summary is None:
        return ""
    shown = {k: v for k, v in summary.items() if k != "last_scores"}
    return f"<h3>Summary</h3>{meta_rows(shown)}"


def _points(rows: list[dict[str, str]], column: str) -> list[tuple[float, float]]:
    """(step, value) of a metrics.csv column, rows without either skipped."""
    points = []
    for row in rows:
        value, step = row.get(column), row.get("step")
        if value in (None, "") or step in (None, ""):
            continue
        try:
            point = (float(step), float(value))
        except ValueError:
            continue
        if math.isfinite(point[0]) and math.isfinite(point[1]):  # a diverged run's nan / inf
            points.append(point)
    return points


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
