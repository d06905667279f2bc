"""`fcnseg eval`: the four FCN scores + per-class IU on a split (and optionally an HTML report)."""

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="the four FCN scores + per-class IU on a split")
    add_model_source(parser)
    parser.add_argument("--data-root", help="dataset directory")
    parser.add_argument("--format", help="dataset format (camvid, voc, folder, synthetic, ...)")
    parser.add_argument("--split", default=None, help="split to score (default: the val split)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize first")
    parser.add_argument("--out", help="scores JSON (default: <run>/eval-<split>.json or ./)")
    parser.add_argument(
        "--report", metavar="DIR", help="also write an HTML report (DIR/index.html + PNGs)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="let --report write into a folder that is not empty (replacing its report files)",
    )
    parser.add_argument(
        "--trimap",
        nargs="?",
        const="2,5,10,20",
        metavar="N,N,...",
        help="also score within N px of the label boundaries (DeepLab's trimap), for each N "
        "(default widths: 2,5,10,20)",
    )
    add_inference_options(parser)
    add_mc_options(parser)
    add_engine_option(parser)
    add_crf_options(parser)


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.trimap_eval import parse_widths
    from fcnseg.report.eval_report import evaluate_with_report

    trimap = parse_widths(args.trimap) if args.trimap is not None else None
    crf, crf_options = crf_arguments(args)
    result, index = evaluate_with_report(
        args.report,
        force=args.force,
        weights=args.weights,
        checkpoint=args.checkpoint,
        run=args.run,
        device=args.device,
        mode=args.mode,
        options=inference_options(args),
        data_format=args.format,
        data_root=args.data_root,
        split=args.split,
        size=tuple(args.size) if args.size else None,
        out=args.out,
        progress=sys.stderr.isatty(),
        engine=args.engine,
        trimap=trimap,
        mc_samples=args.mc_samples,
        seed=args.seed,
        crf=crf,
        crf_options=crf_options,
    )
    print(result.session.runtime.summary())
    if result.session.mc is not None:
        print(result.session.mc.summary())
    if result.session.crf is not None:
        print(result.session.crf_line())
    print(result.report())
    if index is not None:
        print(f"report written to {index}")
    print(f"scores written to {result.out}")
    return 0
