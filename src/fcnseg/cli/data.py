"""`fcnseg data check`: scan a dataset for problems (exit 1 when it has some); with
`--channels N`, each band's mean and std (the normalisation an N-band model trains with)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="dataset tools")
    commands = parser.add_subparsers(dest="data_command", required=True)
    check = commands.add_parser("check", help="scan a dataset for problems")
    check.add_argument("--root", default=None, help="dataset directory (not for synthetic)")
    check.add_argument("--format", required=True)
    check.add_argument("--splits", nargs="+", default=None)
    check.add_argument(
        "--channels",
        type=int,
        default=None,
        help="decode images to this many bands (a model's in_channels) and print each band's "
        "mean and std on the first split: the numbers training stores",
    )


def run(args: argparse.Namespace) -> int:
    from fcnseg.data.check import check_dataset, format_report

    if args.root is not None and not Path(args.root).exists():
        raise FileNotFoundError(f"--root {args.root}: directory not found; fix the path")
    kwargs = {"splits": args.splits} if args.splits else {}
    report = check_dataset(args.root, args.format, channels=args.channels or 3, **kwargs)
    print(format_report(report))
    ok = getattr(report, "ok", True)
    if args.channels and ok:
        from fcnseg.data.stats import describe_channel_statistics

        print(describe_channel_statistics(args.root, args.format, args.splits, args.channels))
    return 0 if ok else 1
