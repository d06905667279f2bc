"""`fcnseg report`: a run directory as DIR/index.html (learning curves + evaluations)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML report of a run directory (curves + eval)")
    parser.add_argument("run", help="run directory written by `fcnseg train`")
    parser.add_argument("--out", help="report folder (default <run>/report)")


def run(args: argparse.Namespace) -> int:
    from fcnseg.report import write_run_report

    index = write_run_report(args.run, args.out)
    print(f"report written to {index}")
    return 0
