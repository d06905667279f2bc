"""`fcnseg export`: a trained model as ONNX (fp32 or calibrated int8), TorchScript or safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.cli.arguments import add_model_source


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export to ONNX, TorchScript or safetensors")
    add_model_source(parser)
    parser.add_argument(
        "--to", dest="target", required=True, choices=["onnx", "torchscript", "safetensors"]
    )
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: static int8 quantisation (QDQ, per-channel weights), also cached for "
        "--engine onnxruntime-int8",
    )
    parser.add_argument(
        "--calibrate", metavar="ROOT", help="--int8: dataset root (with --format) or image folder"
    )
    parser.add_argument(
        "--format", help="--int8: dataset format of ROOT (default: folder of images)"
    )
    parser.add_argument("--calibration-split", default="train", help="--int8: split (train)")
    parser.add_argument(
        "--calibration-images", type=int, default=32, help="--int8: images, spread over the split"
    )


def run(args: argparse.Namespace) -> int:
    from fcnseg.errors import UsageError

    if args.int8 and (args.target != "onnx" or not args.calibrate):
        raise UsageError("--int8 needs --to onnx and --calibrate ROOT (training images)")
    if not args.int8 and (args.calibrate is not None or args.format is not None):
        raise UsageError("--calibrate and --format belong to --int8; add --int8")
    if args.int8:
        return _run_int8(args)
    from fcnseg.engine.exporting import export_trained

    out = export_trained(
        args.target, args.out, weights=args.weights, checkpoint=args.checkpoint, run=args.run
    )
    print(f"wrote {out}")
    return 0


def _run_int8(args: argparse.Namespace) -> int:
    from fcnseg.engine.exporting import export_int8

    out = Path(args.out)
    entry, record = export_int8(
        out,
        args.calibrate,
        weights=args.weights,
        checkpoint=args.checkpoint,
        run=args.run,
        data_format=args.format,
        split=args.calibration_split,
        count=args.calibration_images,
    )
    agreement = 100 * record["check"]["argmax_agreement"]
    print(
        f"wrote {out} (int8; cached as {entry.onnx} for --engine onnxruntime-int8; argmax "
        f"agreement with PyTorch {agreement:.2f}% on {record['check']['inputs']})"
    )
    return 0
