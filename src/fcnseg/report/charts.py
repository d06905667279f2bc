"""The report's pictures: matplotlib charts and the image | truth | prediction | error strips.

Figures are built with `matplotlib.figure.Figure` (no pyplot), so nothing touches global
state or needs a display, and every function writes exactly one file it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

#: Colour of ignored (void) pixels: in the ground truth panel and in the error map.
VOID_TRUTH = (32, 32, 32)
VOID_ERROR = (105, 105, 105)
WRONG = (230, 30, 30)
_DPI = 110
_TEXT = "#1d2330"


def _style(axis) -> None:
    axis.spines[["top", "right"]].set_visible(False)
    axis.tick_params(colors=_TEXT, labelsize=9)
    axis.grid(True, axis="x", color="#e6e8ee", linewidth=0.8)
    axis.set_axisbelow(True)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=_DPI, bbox_inches="tight", facecolor="white")
    return path


def hex_colour(colour) -> str:
    r, g, b = (int(c) for c in colour[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def iou_bars(
    path: Path, names: list[str], ious: list[float | None], palette: list | None, mean_iu: float
) -> Path:
    """Horizontal bars of per-class IoU (%), in class colours, with the mean as a line."""
    count = len(names)
    figure = Figure(figsize=(7.0, 0.9 + 0.32 * count))
    axis = figure.subplots()
    values = [np.nan if v is None else 100 * v for v in ious]
    colours = [
        hex_colour(palette[i]) if palette and i < len(palette) else "#3559e0" for i in range(count)
    ]
    positions = np.arange(count)[::-1]
    axis.barh(positions, np.nan_to_num(values), color=colours, edgecolor="#00000033", height=0.7)
    for position, value in zip(positions, values, strict=True):
        label = "n/a" if np.isnan(value) else f"{value:.1f}"
        axis.text((0 if np.isnan(value) else value) + 1, position, label, va="center", fontsize=8.5)
    axis.set_yticks(positions, names)
    axis.set_xlim(0, 108)
    axis.axvline(100 * mean_iu, color="#161b26", linestyle="--", linewidth=1)
    axis.text(100 * mean_iu, count - 0.35, f" mean {100 * mean_iu:.1f}", fontsize=8.5)
    axis.set_xlabel("IoU (%)")
    _style(axis)
    return _save(figure, path)


def confusion_heatmap(path: Path, names: list[str], matrix: np.ndarray) -> Path:
    """Row-normalised confusion matrix (rows: truth, columns: prediction) with class names."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    count = len(names)
    side = min(11.0, 2.2 + 0.48 * count)
    figure = Figure(figsize=(side + 1.2, side))
    axis = figure.subplots()
    shown = axis.imshow(100 * normalised, cmap="Blues", vmin=0, vmax=100)
    axis.set_xticks(range(count), names, rotation=45, ha="right", fontsize=9)
    axis.set_yticks(range(count), names, fontsize=9)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if count <= 25:
        for row in range(count):
            for column in range(count):
                value = 100 * normalised[row, column]
                if value >= 0.5 or row == column:
                    axis.text(
                        column,
                        row,
                        f"{value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7.5 if count > 12 else 8.5,
                        color="white" if value > 55 else _TEXT,
                    )
    colourbar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
    colourbar.set_label("% of the true class's pixels")
    return _save(figure, path)


def mean_iu_histogram(path: Path, scores: list[float], overall: float | None = None) -> Path:
    """Histogram of per-image mean IU (%), with the split's mean IU marked."""
    figure = Figure(figsize=(7.0, 3.2))
    axis = figure.subplots()
    values = 100 * np.asarray(scores, dtype=np.float64)
    axis.hist(values, bins=np.linspace(0, 100, 26), color="#3559e0", edgecolor="white")
    if overall is not None:
        axis.axvline(100 * overall, color="#161b26", linestyle="--", linewidth=1)
        axis.annotate(
            f"split mean IU {100 * overall:.1f}",
            (100 * overall, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=9,
        )
    axis.set_xlabel("mean IU of one image (%)")
    axis.set_ylabel("images")
    axis.set_xlim(0, 100)
    _style(axis)
    return _save(figure, path)


def colourise(labels: np.ndarray, palette: list, void: tuple[int, int, int]) -> np.ndarray:
    """Class ids -> RGB with the palette; ids outside it (void) get `void`."""
    table = np.array([list(c)[:3] for c in palette] + [list(void)], dtype=np.uint8)
    index = np.where((labels >= 0) & (labels < len(palette)), labels, len(palette))
    return table[index]


def error_map(
    rgb: np.ndarray, prediction: np.ndarray, target: np.ndarray, num_classes: int
) -> np.ndarray:
    """The image faded to grey; wrong pixels red, ignored pixels flat grey."""
    grey = rgb.astype(np.float32).mean(2, keepdims=True)
    out = np.repeat(0.3 * grey + 0.7 * 245, 3, axis=2)
    valid = (target >= 0) & (target < num_classes)
    out[valid & (prediction != target)] = WRONG
    out[~valid] = VOID_ERROR
    return out.clip(0, 255).astype(np.uint8)


def comparison_strip(
    path: Path,
    rgb: np.ndarray,
    prediction: np.ndarray,
    target: np.ndarray,
    palette: list,
    gap: int = 6,
) -> Path:
    """image | ground truth | prediction | error map, side by side, as one PNG."""
    num_classes = len(palette)
    panels = [
        rgb,
        colourise(target, palette, VOID_TRUTH),
        colourise(prediction, palette, VOID_TRUTH),
        error_map(rgb, prediction, target, num_classes),
    ]
    height, width = target.shape
    strip = np.full((height, 4 * width + 3 * gap, 3), 255, dtype=np.uint8)
    for slot, panel in enumerate(panels):
        strip[:, slot * (width + gap) : slot * (width + gap) + width] = panel
    Image.fromarray(strip).save(path)
    return path


def line_chart(
    path: Path,
    series: dict[str, list[tuple[float, float]]],
    ylabel: str,
    colours: dict[str, str] | None = None,
    xlabel: str = "optimiser step",
    percent: bool = False,
) -> Path:
    """One line per named series of (x, y) points; a legend outside when there are many."""
    figure = Figure(figsize=(7.0, 3.4))
    axis = figure.subplots()
    for index, (name, points) in enumerate(series.items()):
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ys = [100 * y for y in ys] if percent else list(ys)
        colour = (colours or {}).get(name, f"C{index % 10}")
        axis.plot(
            xs,
            ys,
            label=name,
            color=colour,
            linewidth=1.4,
            marker="o" if len(xs) < 30 else None,
            markersize=3,
        )
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(True, axis="both", color="#e6e8ee", linewidth=0.8)
    axis.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        if len(series) > 6:
            axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        else:
            axis.legend(fontsize=9, frameon=False)
    return _save(figure, path)
