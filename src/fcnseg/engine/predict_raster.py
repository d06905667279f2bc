"""`fcnseg predict` on rasters larger than memory: a tiled TIFF in, tiled TIFFs of labels out.

Why a path of its own: `predict` decodes each image whole and keeps its logits, which for a
30000 x 30000 image is 2.7 GB of pixels and ~40 GB of scores. Here the image is read one band
of tile rows at a time (`data.raster_io.TiffRowReader`), run through the model by overlapping
tiles blended exactly as the sliding mode blends them (`inference.raster`), and each band's
labels (and, with `probs`, class probabilities) are streamed into tiled, zlib-compressed TIFFs
(`data.raster_io.TiledTiffSink`). Peak memory is O(tile height x image width), independent of
the image's height; `peak_rss_bytes` reports it.

Inputs: any band count the model takes (one band repeated for an RGB model) of uint8, uint16
or float32 samples, each tile's values computed by training's rules (`_prepare`), so the labels
are those `predict` computes on the decoded image with the same sliding options.

Outputs, per input `<name>.tif`: `<name>_labels.tif` (uint8 class ids with the model's palette
as the TIFF colour map; uint16 without one above 256 classes) and, with `probs`,
`<name>_probs.tif` (H x W x C: "uint8" = round(255 p) per class, "float16" = p). Each is written
to a temporary file in the output folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnseg.data.bands import image_values, match_channels
from fcnseg.data.raster_io import TiffRowReader, TiledTiffSink
from fcnseg.engine.predict_inputs import collect_inputs, output_names
from fcnseg.engine.predict_outputs import check_out_folder, check_targets, ensure_folder
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import DataError, UsageError
from fcnseg.inference.raster import TileGrid, stream_blended_logits
from fcnseg.inference.sliding import DEFAULT_OVERLAP
from fcnseg.inference.spec import InferenceSpec
from fcnseg.io_utils import atomic_write
from fcnseg.models.protocol import primary_output

#: Inputs with more pixels than this (all of them TIFFs) take this path without --tiled.
RASTER_AUTO_PIXELS = 100_000_000
#: Tile side when neither the command line nor the weights give one.
DEFAULT_RASTER_TILE = 512
PROBABILITY_FORMATS: tuple[str, ...] = ("uint8", "float16")
TIFF_SUFFIXES = (".tif", ".tiff")
#: Called with (rows done, rows in all) after each band: a progress bar, a benchmark's log.
Progress = Callable[[int, int], None]


@dataclass
class RasterResult:
    """One raster predicted: what was written, its size and the time it took."""

    source: Path
    written: list[Path]
    height: int
    width: int
    seconds: float

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


@dataclass
class RasterRun:
    """What `run_raster_prediction` did, for the command's summary."""

    results: list[RasterResult] = field(default_factory=list)
    runtime: Any = None
    options: dict[str, Any] = field(default_factory=dict)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports kilobytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def wants_raster(inputs: list[str], tiled: bool) -> bool:
    """Whether `fcnseg predict` takes the raster path: asked for (--tiled), or every input is a
    TIFF file and one holds more than RASTER_AUTO_PIXELS pixels (read from its header)."""
    if tiled:
        return True
    paths = [Path(item) for item in inputs]
    if not paths or not all(p.suffix.lower() in TIFF_SUFFIXES and p.is_file() for p in paths):
        return False
    for path in paths:
        try:
            with TiffRowReader(path) as reader:
                if reader.height * reader.width > RASTER_AUTO_PIXELS:
                    return True
        except DataError:
            continue  # the ordinary path reports the file in its own words
    return False


def raster_options(spec: InferenceSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Sliding-window options of the raster path: the command line's, else those the weights
    recommend for sliding, else a DEFAULT_RASTER_TILE tile; checked as InferenceSpec checks."""
    if "scales" in given or "flip" in given:
        raise UsageError("--tiled runs sliding-window inference; drop --scales")
    recommended = spec.options() if spec.mode == "sliding" else {}
    merged = {**recommended, **given}
    merged.setdefault("tile_size", DEFAULT_RASTER_TILE)
    return InferenceSpec.parse("sliding", merged).options()


def _label_page(session: InferenceSession) -> tuple[np.dtype, dict[str, Any]]:
    """The labels' sample type and TIFF page options (colour map and class names)."""
    metadata = session.metadata
    description = json.dumps({"fcnseg": "labels", "classes": list(metadata.classes)})
    if metadata.num_classes > 256:
        return np.dtype(np.uint16), {"description": description}
    colormap = np.zeros((3, 256), np.uint16)
    for index, colour in enumerate(metadata.palette[:256]):
        colormap[:, index] = [channel * 257 for channel in colour]
    options = {"photometric": "palette", "colormap": colormap, "description": description}
    return np.dtype(np.uint8), options


def _probability_rows(logits: torch.Tensor, probs: str) -> np.ndarray:
    """rows x W x C class probabilities in the `probs` format."""
    p = torch.softmax(logits[0], dim=0).permute(1, 2, 0)
    if probs == "uint8":
        return (p * 255.0).round().to(torch.uint8).cpu().numpy()
    return p.to(torch.float16).cpu().numpy()


def _prepare(session: InferenceSession, source: Path):
    """Crop -> the normalised batch, by training's rules: the crop's values (`image_values`:
    uint8 as it is, uint16 / 65535, float32 as it is), its bands matched to the model's
    (`match_channels`: one band repeated for an RGB model), then the stored normalisation.
    Elementwise, so a crop's values are those of the same pixels of the whole decoded image."""
    channels = session.in_channels

    def prepare(crop: np.ndarray) -> torch.Tensor:
        values = match_channels(image_values(crop, source), channels, source)
        return session.normalize([torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)])

    return prepare


def _stream(
    session: InferenceSession,
    reader: TiffRowReader,
    options: dict[str, Any],
    sinks: tuple[TiledTiffSink, TiledTiffSink | None],
    probs: str | None,
    progress: Progress | None = None,
) -> None:
    """Run the model down the raster and feed every band to the sinks."""
    grid = TileGrid.of(
        reader.height,
        reader.width,
        options["tile_size"],
        options.get("tile_stride"),
        options.get("overlap", DEFAULT_OVERLAP),
    )
    runnable = session.runnable

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return primary_output(runnable(batch))

    labels_sink, probs_sink = sinks
    bands = stream_blended_logits(
        forward,
        reader.read_rows,
        grid,
        _prepare(session, reader.path),
        blend=options.get("blend", "gaussian"),
        tile_batch=options.get("tile_batch", 1),
        device=session.device,
    )
    for top, logits in bands:
        labels_sink.put(logits.argmax(1)[0].cpu().numpy().astype(labels_sink.dtype))
        if probs_sink is not None and probs is not None:
            probs_sink.put(_probability_rows(logits, probs))
        if progress is not None:
            progress(top + logits.shape[2], reader.height)


def _write_outputs(
    session: InferenceSession,
    reader: TiffRowReader,
    options: dict[str, Any],
    targets: tuple[Path, Path | None],
    probs: str | None,
    progress: Progress | None = None,
) -> None:
    """Both files from one pass, each to its temporary path (the caller renames them)."""
    dtype, page = _label_page(session)
    height, width = reader.height, reader.width
    labels_sink = TiledTiffSink(targets[0], height, width, dtype, **page)
    probs_sink = None
    sinks = (labels_sink, probs_sink)
    try:
        if targets[1] is not None:
            probs_dtype = np.uint8 if probs == "uint8" else np.float16
            classes = session.metadata.num_classes
            probs_sink = TiledTiffSink(
                targets[1], height, width, probs_dtype, classes, planarconfig="contig"
            )
            sinks = (labels_sink, probs_sink)
        _stream(session, reader, options, sinks, probs, progress)
    except BaseException:
        for sink in sinks:
            if sink is not None:
                sink.abort()
        raise
    for sink in sinks:
        if sink is not None:
            sink.close()


def predict_raster(
    session: InferenceSession,
    path: Path,
    targets: tuple[Path, Path | None],
    options: dict[str, Any],
    probs: str | None = None,
    progress: Progress | None = None,
) -> RasterResult:
    """Labels (targets[0]) and probabilities (targets[1], when given, in the `probs` format) of
    one raster, each file renamed into place only once complete."""
    if probs is not None and probs not in PROBABILITY_FORMATS:
        raise UsageError(f"--probs {probs}: expected one of {', '.join(PROBABILITY_FORMATS)}")
    started = time.perf_counter()
    with TiffRowReader(path) as reader:
        _check_channels(session, reader)
        labels_target, probs_target = targets

        def write_labels(labels_tmp: Path) -> None:
            if probs_target is None:
                _write_outputs(session, reader, options, (labels_tmp, None), probs, progress)
                return

            def write_both(probs_tmp: Path) -> None:
                targets = (labels_tmp, probs_tmp)
                _write_outputs(session, reader, options, targets, probs, progress)

            atomic_write(probs_target, write_both)

        atomic_write(labels_target, write_labels)
        size = (reader.height, reader.width)
    written = [labels_target] + ([probs_target] if probs_target is not None else [])
    return RasterResult(path, written, *size, time.perf_counter() - started)


def _check_channels(session: InferenceSession, reader: TiffRowReader) -> None:
    """The raster's bands can become the model's (`match_channels`' rule and one-line error)."""
    match_channels(np.empty((1, 1, reader.samples), np.uint8), session.in_channels, reader.path)


def raster_targets(
    out_dir: Path, files: list[Path], with_probs: bool
) -> dict[Path, tuple[Path, Path | None]]:
    """Input -> (its label TIFF, its probability TIFF or None), named by predict's naming rule
    (unique case-insensitively, see engine/predict_inputs.output_names)."""
    names, _ = output_names(files)
    targets: dict[Path, tuple[Path, Path | None]] = {}
    for path in files:
        name = out_dir / names[path]
        probs_path = name.with_name(name.name + "_probs.tif") if with_probs else None
        targets[path] = (name.with_name(name.name + "_labels.tif"), probs_path)
    return targets


def run_raster_prediction(
    inputs: list[str],
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    device: str = "auto",
    engine: str = "torch",
    mode: str | None = None,
    options: Mapping[str, Any] | None = None,
    probs: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> RasterRun:
    """`fcnseg predict --tiled` as a function. Every input's header is checked before the model
    loads, so a file that is not a readable TIFF of uint8, uint16 or float32 samples stops the
    command before any work; one whose band count does not fit the model stops it before the
    first tile."""
    if mode not in (None, "sliding"):
        raise UsageError(f"--tiled runs sliding-window inference; drop --mode {mode}")
    if probs is not None and probs not in PROBABILITY_FORMATS:
        raise UsageError(f"--probs {probs}: expected one of {', '.join(PROBABILITY_FORMATS)}")
    out_dir = Path(out_dir)
    check_out_folder(out_dir, inputs)
    files = collect_inputs(inputs)
    for path in files:
        TiffRowReader(path).close()
    targets = raster_targets(out_dir, files, probs is not None)
    check_targets(out_dir, targets, files)  # no input replaced, no link followed, unique names
    session = InferenceSession.load(
        weights=weights,
        checkpoint=checkpoint,
        run=run,
        device=device,
        runtime=engine,
        threads=threads,
    )
    chosen = raster_options(session.spec, options or {})
    report = RasterRun(runtime=session.runtime, options=chosen)
    for path in files:
        ensure_folder(out_dir, targets[path][0].parent)
        report.results.append(predict_raster(session, path, targets[path], chosen, probs, progress))
    return report
