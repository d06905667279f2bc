"""`fcnseg predict`: images -> class-index PNGs + overlays."""

from __future__ import annotations

import argparse
import sys

from fcnseg.cli.arguments import (
    add_crf_options,
    add_engine_option,
    add_inference_options,
    add_mc_options,
    add_model_source,
    crf_arguments,
    inference_options,
)
from fcnseg.cli.predict_raster import add_raster_options, run_raster, wants_raster
from fcnseg.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="images -> class-index PNGs + overlays")
    add_model_source(parser)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--out", default="predictions", help="output folder")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay images")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images of one size per forward (default 1)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: min(2, CPUs), 0 for fewer than 8 inputs)",
    )
    parser.add_argument(
        "--foreground-writes",
        action="store_true",
        help="write outputs in the main thread (the one-image loop, for comparisons)",
    )
    add_inference_options(parser)
    add_mc_options(parser)
    add_engine_option(parser)
    add_crf_options(parser)
    add_raster_options(parser)  # --tiled, --probs: rasters larger than memory


def run(args: argparse.Namespace) -> int:
    """Exit 1 when some inputs failed (each is listed on stderr), else 0; 2 on a refusal (under
    torchrun on every rank, printed once, by the rank that failed)."""
    from fcnseg.engine.distributed import PeerFailed
    from fcnseg.engine.predict import run_prediction

    crf, crf_options = crf_arguments(args)
    if wants_raster(args):
        if args.mc_samples is not None:
            raise UsageError("--mc-samples does not work with --tiled / --probs rasters; drop one")
        if crf or crf_options:
            raise UsageError(
                "--crf: not for raster inputs (--tiled, --probs or large TIFFs, predicted tile "
                "by tile); predict them without --crf"
            )
        return run_raster(args)
    try:
        result = run_prediction(
            args.inputs,
            args.out,
            weights=args.weights,
            checkpoint=args.checkpoint,
            run=args.run,
            device=args.device,
            mode=args.mode,
            options=inference_options(args),
            overlay=not args.no_overlay,
            progress=sys.stderr.isatty(),
            engine=args.engine,
            mc_samples=args.mc_samples,
            seed=args.seed,
            batch_size=args.batch_size,
            num_workers=args.workers,
            background_writes=not args.foreground_writes,
            on_error=_say_error,
            announce=lambda report: _print_summary(report, args.out),
            crf=crf,
            crf_options=crf_options,
        )
    except PeerFailed:
        return 2  # under torchrun: the failing rank printed the one line
    return 1 if result.counts()[1] else 0


def _say_error(error: BaseException) -> None:
    """The one line `fcnseg.cli.main` prints for an error, printed by the torchrun rank that
    failed while the others wait (they all exit 2 after it)."""
    from fcnseg.cli.messages import error_line

    print(error_line("predict", error), file=sys.stderr, flush=True)


def _print_summary(result, out: str) -> None:
    """What rank 0 prints: the mirroring rule when used, the counts, the runtime."""
    written, failed = result.counts()
    if result.mirrored_from is not None:
        print(
            f"inputs share file names: outputs mirror their folders under {out} "
            f"(relative to {result.mirrored_from})"
        )
    summary = f"{len(result.files)} images -> {written} files in {out}"
    if failed:
        summary += f"; {failed} failed (listed on stderr)"
    print(summary)
    print(result.runtime.summary(), flush=True)  # after the summary line, which scripts read first
    if result.mc is not None:
        print(result.mc.summary(), flush=True)
    if result.crf_line:
        print(result.crf_line, flush=True)
