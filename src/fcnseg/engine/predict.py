"""`fcnseg predict`: images -> class-id PNGs (with the palette) and overlays, one per input.

What predict does per input lives here (failure reports, the batch retry that charges an error
to the input that caused it, the output files); loading and running the model is the
`InferenceSession`'s, finding inputs and naming outputs `engine.predict_inputs`', checking and
writing the output files `engine.predict_outputs`', drawing them `engine.render`'s, and the
speed machinery (decode workers, same-size batches, background
writes) `engine.predict_loader`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnseg.data.bands import check_bands
from fcnseg.engine import distributed, predict_outputs
from fcnseg.engine.device import resolve_device
from fcnseg.engine.predict_inputs import collect_inputs, output_names
from fcnseg.engine.predict_loader import (
    BackgroundWriter,
    Decoded,
    decoded_inputs,
    default_workers,
    failure_reason,
    same_size_groups,
    shard,
)
from fcnseg.engine.predict_outputs import (
    Targets,
    check_out_folder,
    check_targets,
    output_targets,
)
from fcnseg.engine.predict_ranks import agree_on_outcome
from fcnseg.engine.render import overlay_image, palette_image
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import FcnsegError, UsageError
from fcnseg.inference.mc_dropout import DEFAULT_SEED

__all__ = [
    "PredictionRun",
    "predict_files",
    "run_prediction",
]


@dataclass
class PredictionRun:
    """What `run_prediction` read and wrote: every input is in `written` or in `failed`."""

    files: list[Path]
    written: list[Path] = field(default_factory=list)
    #: (input, one-line reason) per input that could not be predicted.
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: The inputs' common folder when outputs mirror it (inputs share a file name), else None.
    mirrored_from: Path | None = None
    #: The runtime that ran the model (fcnseg.inference.runtimes.ResolvedRuntime).
    runtime: Any = None
    #: Monte-Carlo dropout settings and time (inference.mc_dropout.MCDropout), else None.
    mc: Any = None
    #: This process's rank under torchrun (0 otherwise); only rank 0 prints the summary.
    rank: int = 0
    #: (files written, inputs failed) summed over all ranks under torchrun, else None.
    world_counts: tuple[int, int] | None = None
    #: `crf: <parameters>; N ms per image` when the dense CRF ran (this rank's images), else "".
    crf_line: str = ""

    def counts(self) -> tuple[int, int]:
        """(files written, inputs failed) over every process: what the summary line reports."""
        if self.world_counts is not None:
            return self.world_counts
        return len(self.written), len(self.failed)


class _Predictor:
    """One `predict_files` call: labels per same-size group, failures charged per input."""

    def __init__(
        self,
        session: InferenceSession,
        out_dir: Path,
        targets: Targets,
        report: PredictionRun | None,
    ) -> None:
        self.session, self.out_dir, self.targets = session, out_dir, targets
        self.report = report
        self.palette = [list(colour) for colour in session.metadata.palette]
        self.written: list[Path] = []

    def skip(self, path: Path, error: BaseException | str) -> None:
        """Report a failed input on stderr and in the report; without a report, raise."""
        if self.report is None:
            if isinstance(error, BaseException):
                raise error
            raise FcnsegError(error)
        reason = error if isinstance(error, str) else failure_reason(path, error)
        print(f"fcnseg predict: skipped {reason}", file=sys.stderr)
        self.report.failed.append((path, reason))

    def usable(self, group: list[Decoded]) -> list[Decoded]:
        """The decoded inputs of `group` whose forward pass fits the pixel cap."""
        ready = []
        for item in group:
            if item.image is None:
                self.skip(item.path, item.reason or f"{item.path}: could not be read")
                continue
            height, width = item.image.shape[-2], item.image.shape[-1]
            try:
                self.session.check_forward_pixels(height, width, item.path)
            except (FcnsegError, OSError) as error:
                self.skip(item.path, error)
                continue
            ready.append(item)
        return ready

    def labels(self, ready: list[Decoded]) -> list[tuple[Decoded, np.ndarray, Any]]:
        """(input, class ids, uncertainty or None) for the inputs that could be predicted: one
        forward for the group, or, when it fails, one per input so the failure is charged to
        its cause. The uncertainty comes with MC dropout only (InferenceSession.segment)."""
        try:
            results = self.session.segment_each([item.image for item in ready])
            return [(item, *result) for item, result in zip(ready, results, strict=True)]
        except (FcnsegError, OSError) as error:
            if len(ready) == 1:
                self.skip(ready[0].path, error)
                return []
        done = []
        for item in ready:
            try:
                done.append((item, *self.session.segment_each([item.image])[0]))
            except (FcnsegError, OSError) as error:
                self.skip(item.path, error)
        return done

    def write_job(
        self,
        path: Path,
        labels: np.ndarray,
        image: torch.Tensor,
        uncertainty: np.ndarray | None = None,
    ):
        """The job writing `path`'s PNG (and overlay, and uncertainty maps), each atomically and
        never through a link (engine.predict_outputs); the files are counted as written now."""
        target, overlay_path, heat_path, raw_path = self.targets[path]
        assert target is not None
        palette, out_dir = self.palette, self.out_dir

        def job() -> None:
            predict_outputs.ensure_folder(out_dir, target.parent)
            predict_outputs.save_image(palette_image(labels, palette), target, "PNG")
            if overlay_path is not None:  # any band count: render.preview_rgb's picture
                overlay = overlay_image(image.permute(1, 2, 0).numpy(), labels, palette)
                predict_outputs.save_image(overlay, overlay_path, "JPEG", quality=90)
            if uncertainty is not None:
                predict_outputs.save_uncertainty(uncertainty, heat_path, raw_path)

        paths = [target, overlay_path] + ([heat_path, raw_path] if uncertainty is not None else [])
        self.written += [written for written in paths if written is not None]
        return job


def predict_files(
    session: InferenceSession,
    files: list[Path],
    out_dir: Path,
    *,
    overlay: bool = True,
    progress: bool = False,
    report: PredictionRun | None = None,
    batch_size: int = 1,
    num_workers: int | None = None,
    background_writes: bool = True,
    names: dict[Path, Path] | None = None,
) -> list[Path]:
    """Write `<name>.png` (class ids, palette) and `<name>_overlay.jpg` per input under out_dir,
    every path checked before the first write (engine.predict_outputs; OutputError).

    Names follow `output_names` (flat stems, or mirrored folders when stems collide); `names`
    passes them in when `files` is one rank's shard, so the names stay those of all inputs. An
    input that cannot be used (unreadable, a decompression bomb, wrong channels, too many pixels
    for one forward) is reported on stderr in one line and skipped; the others are still written.
    Its reason is added to `report.failed` when a report is given, otherwise the error is raised.
    Inputs are decoded to the model's band count (`session.in_channels`); one whose header
    shows bands that cannot become it is refused before any is predicted (a DataError naming
    the file and the fix: the inputs are made for another model, so none would do).

    Speed (engine.predict_loader): inputs decode in `num_workers` DataLoader workers (None: the
    default for this many inputs), consecutive images of one size share a forward of up to
    `batch_size`, and the PNG/JPEG writes run on a background thread; every write has finished
    when this returns. batch_size 1 computes exactly what the one-image loop computed.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be 1 or more")
    channels = session.in_channels
    for path in files:  # before any output folder is made: the inputs fit this model
        check_bands(path, channels)
    targets = _checked_targets(files, out_dir, overlay, names, session.mc is not None)
    predictor = _Predictor(session, out_dir, targets, report)
    workers = default_workers(len(files)) if num_workers is None else num_workers
    # Without a report an error is raised, as before: decode in-process so it is the original one.
    decoded = decoded_inputs(
        files, workers if report is not None else 0, report is None, channels=channels
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="predict", dynamic_ncols=True)
    writer = BackgroundWriter(foreground=not background_writes)
    try:
        _predict_groups(predictor, same_size_groups(decoded, batch_size), writer, bar)
    finally:
        if bar is not None:
            bar.close()
    writer.close()
    if report is not None:
        report.written += predictor.written
    return predictor.written


def _predict_groups(
    predictor: _Predictor, groups: Iterator[list[Decoded]], writer: BackgroundWriter, bar: Any
) -> None:
    """Labels per same-size group, each output handed to `writer`; on an error the writer
    drains what is queued and the loop's own error is the one raised."""
    try:
        for group in groups:
            if bar is not None:
                bar.update(len(group))
            ready = predictor.usable(group)
            for item, labels, uncertainty in predictor.labels(ready) if ready else []:
                writer.submit(predictor.write_job(item.path, labels, item.image, uncertainty))
    except BaseException:
        writer.foreground = True  # stop taking jobs; drain what is queued, keep the first error
        try:
            writer.close()
        except BaseException:  # noqa: BLE001 - the loop's own error is the one to report
            pass
        raise


def _checked_targets(
    files: list[Path],
    out_dir: Path,
    overlay: bool,
    names: dict[Path, Path] | None,
    uncertainty: bool = False,
) -> Targets:
    """Every output path of `files`, checked (engine.predict_outputs); --out created after."""
    check_out_folder(out_dir)
    names = names or output_names(files)[0]
    targets = output_targets(out_dir, {path: names[path] for path in files}, overlay, uncertainty)
    check_targets(out_dir, targets, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    return targets


# size: one call per step; the inference options (MC dropout --mc-samples/--seed) add lines
def run_prediction(
    inputs: list[str],
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    device: str = "auto",
    mode: str | None = None,
    options: dict[str, Any] | None = None,
    overlay: bool = True,
    progress: bool = False,
    engine: str = "torch",
    mc_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    batch_size: int = 1,
    num_workers: int | None = None,
    background_writes: bool = True,
    on_error: Callable[[BaseException], None] | None = None,
    announce: Callable[[PredictionRun], None] | None = None,
    crf: bool | None = None,
    crf_options: dict[str, Any] | None = None,
) -> PredictionRun:
    """`fcnseg predict` as a function: the inputs, the files written and the inputs that failed.

    Inputs (collect_inputs) and every output path (engine.predict_outputs) are checked before
    the model loads (InferenceSession.load: `mode`/`options` default to what the weights
    recommend, `crf`/`crf_options` too; `engine` is the runtime). A bad input is skipped and
    reported (predict_files, which takes the speed options); the caller decides the exit status.
    `mc_samples`/`seed`: MC dropout (InferenceSession.load; adds the uncertainty files). Under
    torchrun rank r
    predicts inputs i with i % world == r under the names of all inputs, so each is written
    once; `report.counts()` sums the ranks. `announce(report)` runs on rank 0 only and
    `on_error(error)` on the lowest failing rank only, both before the ranks part (`predict_ranks.agree_on_outcome`), so
    torchrun, which stops every worker once one exits, cannot cut the summary or the error
    line short; with `on_error`, every rank then raises `distributed.PeerFailed` (reported),
    without it the failing rank raises its error and the others PeerFailed.
    """
    torch_device = resolve_device(device, engine)
    session_args = {
        "weights": weights,
        "checkpoint": checkpoint,
        "run": run,
        "device": str(torch_device),
        "runtime": engine,
        "mode": mode,
        "options": options,
        "mc_samples": mc_samples,
        "seed": seed,
        "crf": crf,
        "crf_options": crf_options,
    }
    speed = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "background_writes": background_writes,
    }
    with distributed.process_group(torch_device.type):
        report, error = None, None
        try:
            report = _predict_this_rank(
                inputs, Path(out_dir), session_args, overlay, progress, speed
            )
        except (FcnsegError, OSError) as caught:
            error = caught
        return agree_on_outcome(report, error, torch_device, on_error, announce)


def _predict_this_rank(
    inputs: list[str],
    out_dir: Path,
    session_args: dict[str, Any],
    overlay: bool,
    progress: bool,
    speed: dict[str, Any],
) -> PredictionRun:
    """This process's share of run_prediction (all of it without torchrun)."""
    files = collect_inputs(inputs)
    names, mirrored_from = output_names(files)
    check_out_folder(out_dir, inputs)
    uncertainty = session_args.get("mc_samples") is not None
    check_targets(out_dir, output_targets(out_dir, names, overlay, uncertainty), files)
    session = InferenceSession.load(**session_args)
    rank, world = distributed.rank(), distributed.world_size()
    report = PredictionRun(
        files, mirrored_from=mirrored_from, runtime=session.runtime, rank=rank, mc=session.mc
    )
    predict_files(
        session,
        shard(files, rank, world),
        out_dir,
        overlay=overlay,
        progress=progress and rank == 0,
        report=report,
        names=names,
        **speed,
    )
    report.crf_line = session.crf_line()
    return report
