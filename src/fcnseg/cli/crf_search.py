"""`fcnseg crf-search`: the dense CRF's parameters searched on a validation split, stored in a
copy of the weights (see fcnseg.engine.crf_search)."""

from __future__ import annotations

import argparse
import sys

from fcnseg.cli.arguments import add_inference_options, inference_options
from fcnseg.constants import DEEPLAB_CRF_SEARCH_IMAGES

#: Grid flags: (flag, CrfParams field, value type). DeepLab's grid for the first three.
GRID_FLAGS: tuple[tuple[str, str, type], ...] = (
    ("--w1", "w1", float),
    ("--theta-alpha", "theta_alpha", float),
    ("--theta-beta", "theta_beta", float),
    ("--w2", "w2", float),
    ("--theta-gamma", "theta_gamma", float),
    ("--iterations", "iterations", int),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crf-search",
        help="search the dense CRF's parameters on a split; write them into a copy of the weights",
        description="Coarse grid then finer steps around the best point, as DeepLab did "
        "(default grid: w1 5..10, theta_alpha 50..100 by 10, theta_beta 3..6; w2 3, theta_gamma "
        "3 and 10 iterations fixed). A flag given several values searches them; one value fixes "
        "it. Writes OUT/<weights>-crf.safetensors (the input is never written) and "
        "OUT/<weights>-crf-search.json (every candidate's mean IU).",
    )
    parser.add_argument("--weights", required=True, help="weights (.safetensors) to search for")
    parser.add_argument("--out", required=True, help="folder for the weights copy and the log")
    parser.add_argument("--data-root", help="dataset directory")
    parser.add_argument("--format", help="dataset format (default: the weights' recipe)")
    parser.add_argument("--split", default="val", help="split to search on (default val)")
    parser.add_argument(
        "--max-images",
        type=int,
        default=DEEPLAB_CRF_SEARCH_IMAGES,
        help=f"images of the split used (default {DEEPLAB_CRF_SEARCH_IMAGES}, as DeepLab)",
    )
    parser.add_argument("--max-minutes", type=float, default=60.0, help="time limit (default 60)")
    parser.add_argument(
        "--refine-rounds",
        type=int,
        default=1,
        help="finer rounds around the best point, each step half the last (default 1)",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier search's files")
    for flag, _, kind in GRID_FLAGS:
        parser.add_argument(flag, type=kind, nargs="+", metavar="V", help="values to try")
    add_inference_options(parser)


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.crf_search import run_crf_search

    result = run_crf_search(
        weights=args.weights,
        out_dir=args.out,
        data_format=args.format,
        data_root=args.data_root,
        split=args.split,
        device=args.device,
        mode=args.mode,
        options=inference_options(args),
        grid_values={name: getattr(args, name) for _, name, _ in GRID_FLAGS},
        max_images=args.max_images,
        max_minutes=args.max_minutes,
        refine_rounds=args.refine_rounds,
        force=args.force,
        progress=sys.stderr.isatty(),
        say=lambda line: print(line, flush=True),
    )
    tried = len(result.trials)
    stopped = " (stopped by --max-minutes)" if result.stopped_by_time else ""
    print(f"candidates tried: {tried} ({result.grid_size} in the coarse grid){stopped}")
    print(f"best: {result.best.describe()}")
    print(
        f"mean IU on {result.images} images: {100 * result.mean_iu_before:.2f} without the CRF, "
        f"{100 * result.mean_iu_after:.2f} with it; {result.ms_per_image():.1f} ms per image"
    )
    print(f"weights with these parameters as their default CRF: {result.weights_out}")
    print(f"every candidate's score: {result.log_out}")
    return 0
