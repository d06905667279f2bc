"""`fcnseg models`: the registry as a table (parameters, GFLOPs, weights); the costs come from
the table shipped in the package (fcnseg/models/model_table.json), nothing is built."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the models (parameters, GFLOPs, weights)")
    parser.add_argument("names", nargs="*", help="only these models (default: all)")
    parser.add_argument("--no-flops", action="store_true", help="leave out the GFLOPs column")


def run(args: argparse.Namespace) -> int:
    from fcnseg.models import model_info
    from fcnseg.models.table import format_model_table, listed_model_table

    names = args.names or None
    for name in names or []:
        model_info(name)  # unknown name -> one-line error before any model is built
    print(format_model_table(listed_model_table(names, flops=not args.no_flops)))
    return 0
