"""`fcnseg demo`: train + eval + predict on the built-in synthetic data (the README's first run)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train+eval+predict on the built-in synthetic data")
    parser.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of configs/demo.yaml")


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.demo import run_demo

    run_demo(args.out, args.overrides, echo=print)
    return 0
