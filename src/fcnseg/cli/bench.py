"""`fcnseg bench`: inference speed of a registry model per engine."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="inference speed of a model per engine")
    parser.add_argument("model", help="registry model name")
    parser.add_argument("--size", type=int, nargs="+", default=[512], help="H [W] (default 512)")
    parser.add_argument("--engines", nargs="+", default=None, help="eager, fused, onnxruntime, ...")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=21)


def run(args: argparse.Namespace) -> int:
    from fcnseg.inference.bench import run_bench

    size = tuple(args.size) if len(args.size) > 1 else args.size[0]
    options = {"engines": tuple(args.engines)} if args.engines else {}
    report = run_bench(
        args.model,
        size,
        repeats=args.repeats,
        num_classes=args.num_classes,
        batch=args.batch,
        threads=args.threads,
        pretrained=False,
        **options,
    )
    print(report)
    return 0
