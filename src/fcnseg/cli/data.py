"""`fcnseg data check`: scan a dataset for problems (exit 1 when it has some; with
`--channels N`, each band's mean and std: the normalisation an N-band model trains with);
`fcnseg data convert`: write any format as the `folder` layout (index masks + classes.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcnseg.errors import UsageError


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", "--data-root", dest="root", default=None, help="dataset directory"
    )
    parser.add_argument("--format", required=True)
    parser.add_argument(
        "--class-map",
        default=None,
        help="data.class_map as a YAML/JSON file or inline, e.g. '{car: vehicle, tree: ignore}'",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option (data.options), e.g. background=false; repeatable",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="dataset tools")
    commands = parser.add_subparsers(dest="data_command", required=True)
    check = commands.add_parser("check", help="scan a dataset for problems")
    _add_dataset_arguments(check)
    check.add_argument("--splits", nargs="+", default=None)
    check.add_argument(
        "--channels",
        type=int,
        default=None,
        help="decode images to this many bands (a model's in_channels) and print each band's "
        "mean and std on the first split: the numbers training stores",
    )
    convert = commands.add_parser(
        "convert", help="write a dataset as images/ + index masks/ + classes.yaml (folder format)"
    )
    _add_dataset_arguments(convert)
    convert.add_argument("--out", required=True, help="a new or empty folder")
    convert.add_argument("--splits", nargs="+", default=["train", "val", "test"])


def _yaml(text: str, what: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{what}: cannot parse {text!r} ({type(error).__name__})") from None


def dataset_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """--option KEY=VALUE pairs (YAML values) and --class-map as build_dataset keywords."""
    keywords: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {item!r}: expected KEY=VALUE")
        keywords[key] = _yaml(value, f"--option {key}")
    if args.class_map:
        source = Path(args.class_map)
        text = source.read_text() if source.is_file() else args.class_map
        class_map = _yaml(text, "--class-map")
        if not isinstance(class_map, dict):
            raise UsageError("--class-map: expected a mapping 'source: target' (or a file of one)")
        keywords["class_map"] = class_map
    return keywords


def run(args: argparse.Namespace) -> int:
    if args.root is not None and not Path(args.root).exists():
        raise FileNotFoundError(f"--root {args.root}: directory not found; fix the path")
    keywords = dataset_keywords(args)
    if args.data_command == "convert":
        from fcnseg.data.convert import convert_dataset

        if args.root is None:
            raise UsageError("data convert needs --data-root")
        class_map = keywords.pop("class_map", None)
        result = convert_dataset(args.format, args.root, args.out, args.splits, class_map, keywords)
        for split, count in result.written.items():
            print(f"{split}: {count} images -> {result.out / 'images' / split}")
        for split, reason in result.skipped.items():
            print(f"{split}: skipped ({reason})")
        print(f"classes ({len(result.classes)}): {', '.join(result.classes)}")
        print(f"wrote {result.out / 'classes.yaml'}; train with data.format=folder")
        return 0
    from fcnseg.data.check import check_dataset, format_report

    kwargs = {"splits": args.splits} if args.splits else {}
    report = check_dataset(
        args.root, args.format, channels=args.channels or 3, **kwargs, **keywords
    )
    print(format_report(report))
    ok = getattr(report, "ok", True)
    if args.channels and ok:
        from fcnseg.data.stats import describe_channel_statistics

        print(describe_channel_statistics(args.root, args.format, args.splits, args.channels))
    return 0 if ok else 1
