"""`fcnseg import-caffe`: a Caffe .caffemodel (the FCN or DeepLab release) -> .safetensors weights."""

from __future__ import annotations

import argparse
from typing import Any

from fcnseg.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-caffe",
        help="a Caffe .caffemodel (the FCN or DeepLab release) -> .safetensors weights",
    )
    parser.add_argument("caffemodel", help="the .caffemodel file")
    parser.add_argument(
        "--release",
        help="the release net the file is (voc-fcn8s, siftflow-fcn16s, nyud-fcn32s-color-hha, "
        "deeplab-largefov, camvid-segnet-basic, ...): picks --model, its options and --format "
        "(docs/paper_fidelity.md lists them)",
    )
    parser.add_argument("--model", help="paper net with the same layers, e.g. fcn8s_vgg16")
    parser.add_argument(
        "--format", help="dataset whose classes the net scores (default: the release's, or voc)"
    )
    parser.add_argument("--out", required=True, help="output .safetensors")
    parser.add_argument(
        "--partial", action="store_true", help="allow net layers the caffemodel lacks (keep init)"
    )
    parser.add_argument(
        "--options", nargs="+", default=[], help="model options key=value, e.g. at_once=true"
    )


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.caffe_import import import_caffe_release

    imported = import_caffe_release(
        args.caffemodel,
        out=args.out,
        release=args.release,
        model=args.model,
        data_format=args.format,
        partial=args.partial,
        options=_model_options(args.options),
    )
    print(f"wrote {args.out}: {len(imported.loaded)} layers from {args.caffemodel}")
    if imported.unused:
        print(f"caffemodel layers not in {imported.model} (skipped): {', '.join(imported.unused)}")
    return 0


def _model_options(items: list[str]) -> dict[str, Any]:
    """`key=value` words as builder options, each value read as YAML (true, 16, [1, 2])."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item}: model options are key=value, e.g. at_once=true")
        options[key] = yaml.safe_load(value)
    return options
