"""The evaluation report: `write_eval_report` (fcnseg eval --report DIR) and `eval_section`,
the part the run report repeats for each `eval-*.json` of a run.

What a section shows: the four FCN scores, per-class IoU (table + bars), and, when the
evaluation's batches were collected (EvalCollector), the row-normalised confusion, the per-image
mean IU histogram and the worst images side by side with their ground truth and errors. PNGs are
written to the report folder under names made here (with a prefix per section).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.report import charts
from fcnseg.report.collect import EvalCollector
from fcnseg.report.html import (
    SCORE_LABELS,
    img,
    model_section,
    page,
    percent,
    prepare_dir,
    swatch,
)


def write_eval_report(
    out_dir: str | Path,
    payload: dict[str, Any],
    meta: dict[str, Any] | None = None,
    collector: EvalCollector | None = None,
    dataset: Any = None,
) -> Path:
    """DIR/index.html (+ PNGs) for one `fcnseg eval`; returns the index path."""
    out_dir = prepare_dir(Path(out_dir))
    meta = meta or {}
    body = eval_section(out_dir, payload, meta, collector, dataset) + model_section(meta)
    title = f"{meta.get('model') or 'model'} on {payload.get('format', '?')} / {payload.get('split', '?')}"
    subtitle = f"weights: {payload.get('source') or meta.get('source') or '?'}"
    index = out_dir / "index.html"
    index.write_text(page(title, subtitle, body), encoding="utf-8")
    return index


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
    parts = [f"<section><h2>{escape(heading)}</h2>", *_scores_html(payload)]
    parts.extend(_trimap_html(payload))
    parts.append(_per_class_html(out_dir / f"{prefix}iou.png", payload, names, palette))
    matrix = collector.confusion if collector is not None else payload.get("confusion_matrix")
    if matrix is not None and len(matrix) == len(names):
        heat = charts.confusion_heatmap(
            out_dir / f"{prefix}confusion.png", names, np.asarray(matrix)
        )
        parts.append(
            "<h3>Confusion (rows: true class, normalised to 100%)</h3>"
            f"{img(heat.name, 'row-normalised confusion matrix')}"
        )
    per_image = _per_image_miu(payload, collector)
    if per_image:
        mean_iu = float(payload.get("mean_iu") or 0.0)
        histogram = charts.mean_iu_histogram(
            out_dir / f"{prefix}per_image_miu.png", per_image, mean_iu
        )
        parts.append(
            f"<h3>Mean IU per image ({len(per_image)} images)</h3>"
            f"{img(histogram.name, 'histogram of per-image mean IU')}"
        )
    if matrix is None and not per_image:
        parts.append(
            '<p class="note">The confusion matrix, per-image scores and worst images come from '
            "<code>fcnseg eval ... --report DIR</code>.</p>"
        )
    if collector is not None and dataset is not None and palette:
        parts.extend(_worst_images_html(out_dir, prefix, collector, dataset, palette))
    parts.append("</section>")
    return "\n".join(parts)


def _scores_html(payload: dict[str, Any]) -> list[str]:
    """What was scored (format / split, images, inference) and the four scores as tiles."""
    parts = []
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
            f'<div class="{css}" data-score="{key}"><div class="value">{percent(payload.get(key))}</div>'
            f'<div class="label">{escape(label)} (%)</div></div>'
        )
    parts.append("</div>")
    return parts


def _trimap_html(payload: dict[str, Any]) -> list[str]:
    """The trimap table (`fcnseg eval --trimap`): scores within N px of the label boundaries."""
    trimap = payload.get("trimap")
    if not isinstance(trimap, dict) or not trimap:
        return []
    rows = "".join(
        f"<tr><td>{escape(str(width))}</td><td>{escape(str(entry.get('pixels')))}</td>"
        f"<td>{percent(entry.get('pixel_accuracy'))}</td><td>{percent(entry.get('mean_iu'))}</td></tr>"
        for width, entry in trimap.items()
        if isinstance(entry, dict)
    )
    return [
        "<h3>Near boundaries (trimap: ground-truth label boundaries +- N px)</h3>",
        '<table class="trimap"><tr><th>N px</th><th>pixels</th><th>pixel acc (%)</th>'
        f"<th>mean IU (%)</th></tr>{rows}</table>",
    ]


def _per_class_html(
    bars_path: Path, payload: dict[str, Any], names: list[str], palette: Any
) -> str:
    """The per-class IoU / accuracy table beside a bar chart of the IoUs (written to bars_path)."""
    ious = [payload.get("per_class_iu", {}).get(name) for name in names]
    accuracies = [payload.get("per_class_accuracy", {}).get(name) for name in names]
    rows = []
    for index, name in enumerate(names):
        colour = palette[index] if palette and index < len(palette) else None
        rows.append(
            f"<tr><td>{swatch(colour) if colour is not None else ''}{escape(name)}</td>"
            f'<td class="num">{percent(ious[index])}</td><td class="num">{percent(accuracies[index])}</td></tr>'
        )
    mean_iu = float(payload.get("mean_iu") or 0.0)
    bars = charts.iou_bars(bars_path, names, ious, palette, mean_iu)
    return (
        '<h3>Per-class IoU</h3><div class="two"><table><tr><th>class</th><th>IoU %</th>'
        f"<th>acc %</th></tr>{''.join(rows)}</table>{img(bars.name, 'per-class IoU bar chart')}</div>"
    )


def _per_image_miu(payload: dict[str, Any], collector: EvalCollector | None) -> list[float]:
    """Each image's mean IU, from the collector or else the JSON ("per_image"), Nones dropped."""
    entries = (
        collector.json_fields()["per_image"]
        if collector is not None
        else payload.get("per_image", [])
    )
    values = [entry.get("mean_iu") for entry in entries]
    return [value for value in values if value is not None]


def _worst_images_html(
    out_dir: Path, prefix: str, collector: EvalCollector, dataset: Any, palette: Any
) -> list[str]:
    """The lowest-mean-IU images, each as image | ground truth | prediction | error map."""
    worst = collector.worst()
    if not worst:
        return []
    parts = [
        f"<h3>The {len(worst)} images with the lowest mean IU</h3>"
        '<p class="key"><span>error map: <b style="color:#e61e1e">red</b> = wrong</span>'
        '<span><b style="color:#696969">dark grey</b> = ignored (void)</span>'
        "<span>ground truth: near-black = void</span></p>"
    ]
    for rank, entry in enumerate(worst, start=1):
        rgb = _raw_rgb(dataset, entry.index, entry.target.shape)
        strip = charts.comparison_strip(
            out_dir / f"{prefix}worst_{rank}.png", rgb, entry.prediction, entry.target, palette
        )
        try:
            name = dataset.sample_name(entry.index)
        except Exception:  # noqa: BLE001
            name = str(entry.index)
        parts.append(
            f'<div class="worst"><p class="caption">{rank}. {escape(str(name))}: mean IU '
            f"<b>{percent(entry.mean_iu)}</b></p>"
            '<div class="panels"><span>image</span><span>ground truth</span>'
            "<span>prediction</span><span>error map</span></div>"
            f"{img(strip.name, f'{name}: image, ground truth, prediction, error map')}</div>"
        )
    return parts


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
