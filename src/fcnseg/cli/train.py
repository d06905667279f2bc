"""`fcnseg train`: a YAML recipe (+ key.sub=value overrides) -> a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train from a YAML recipe (+ key.sub=value overrides)"
    )
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    parser.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    parser.add_argument("--resume", help="run directory or checkpoint to continue exactly")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--data-root", help="dataset directory (same as data.root=PATH)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.lr=0.01")


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.train import train_from_recipe

    overrides = list(args.overrides)
    if args.data_root is not None:
        if not Path(args.data_root).is_dir():
            raise FileNotFoundError(
                f"--data-root {args.data_root}: directory not found; fix the path"
            )
        overrides.append(f"data.root={args.data_root}")
    result = train_from_recipe(
        args.config, overrides, out=args.out, resume=args.resume, force=args.force
    )
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir} ({result.stopped}, {result.steps} steps)")
    return 0
