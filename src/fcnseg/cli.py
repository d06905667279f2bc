"""The `fcnseg` command: train, eval, predict, models, data check, export, bench, demo.

Every subcommand turns bad input (unknown model, missing data, wrong class count, invalid
recipe or override) into one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fcnseg.errors import FcnsegError, UsageError

#: Exit status for bad input (argparse uses the same for usage errors).
EXIT_BAD_INPUT = 2
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
#: `--engine` choices: fcnseg.inference.engines.ENGINE_CHOICES, spelled out so that parsing the
#: command line does not import torch (tests/test_engines.py checks that the two agree).
ENGINE_CHOICES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--weights", help="released weights (.safetensors with fcnseg metadata)")
    group.add_argument("--checkpoint", help="training checkpoint (.pt)")
    group.add_argument("--run", help="run directory written by `fcnseg train`")


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    parser.add_argument(
        "--mode",
        default=None,
        choices=["whole", "sliding", "multiscale"],
        help="inference mode (default: the one the weights recommend, else whole)",
    )
    parser.add_argument("--tile-size", type=int, nargs="+", help="sliding-window tile (H [W])")
    parser.add_argument("--scales", type=float, nargs="+", help="multi-scale factors")


def _add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="torch",
        choices=ENGINE_CHOICES,
        help="what runs the model: torch (default), auto (onnxruntime when installed and on the "
        "CPU, else torch), onnxruntime, onnxruntime-int8 (made by `export --int8`); the ONNX "
        "graph is exported and checked once and cached beside the weights "
        "(<weights>.onnx-cache/), the one write outside --out, which is why it is opt-in",
    )


def _inference_options(args: argparse.Namespace) -> dict:
    options: dict = {}
    if args.tile_size:
        options["tile_size"] = (
            tuple(args.tile_size) if len(args.tile_size) > 1 else args.tile_size[0]
        )
    if args.scales:
        options["scales"] = tuple(args.scales)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a YAML recipe (+ key.sub=value overrides)")
    train.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    train.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", help="run directory or checkpoint to continue exactly")
    train.add_argument("--force", action="store_true", help="write into a non-empty --out")
    train.add_argument("--data-root", help="dataset directory (same as data.root=PATH)")
    train.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.lr=0.01")

    evaluate = sub.add_parser("eval", help="the four FCN scores + per-class IU on a split")
    _add_model_source(evaluate)
    evaluate.add_argument("--data-root", help="dataset directory")
    evaluate.add_argument("--format", help="dataset format (camvid, voc, folder, synthetic, ...)")
    evaluate.add_argument("--split", default=None, help="split to score (default: the val split)")
    evaluate.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize first")
    evaluate.add_argument("--out", help="scores JSON (default: <run>/eval-<split>.json or ./)")
    evaluate.add_argument(
        "--report", metavar="DIR", help="also write an HTML report (DIR/index.html + PNGs)"
    )
    _add_inference_options(evaluate)
    _add_engine_option(evaluate)

    predict = sub.add_parser("predict", help="images -> class-index PNGs + overlays")
    _add_model_source(predict)
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--out", default="predictions", help="output folder")
    predict.add_argument("--no-overlay", action="store_true", help="skip the overlay images")
    predict.add_argument(
        "--batch-size", type=int, default=1, help="images of one size per forward (default 1)"
    )
    predict.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: min(2, CPUs), 0 for fewer than 8 inputs)",
    )
    predict.add_argument(
        "--foreground-writes",
        action="store_true",
        help="write outputs in the main thread (the one-image loop, for comparisons)",
    )
    _add_inference_options(predict)
    _add_engine_option(predict)

    models = sub.add_parser("models", help="list the models (parameters, GFLOPs, weights)")
    models.add_argument("names", nargs="*", help="only these models (default: all)")
    models.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="scan a dataset for problems")
    check.add_argument("--root", default=None, help="dataset directory (not for synthetic)")
    check.add_argument("--format", required=True)
    check.add_argument("--splits", nargs="+", default=None)

    export = sub.add_parser("export", help="export to ONNX, TorchScript or safetensors")
    _add_model_source(export)
    export.add_argument(
        "--to", dest="target", required=True, choices=["onnx", "torchscript", "safetensors"]
    )
    export.add_argument("--out", required=True, help="output file")
    export.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: static int8 quantisation (QDQ, per-channel weights), also cached for "
        "--engine onnxruntime-int8",
    )
    export.add_argument(
        "--calibrate", metavar="ROOT", help="--int8: dataset root (with --format) or image folder"
    )
    export.add_argument(
        "--format", help="--int8: dataset format of ROOT (default: folder of images)"
    )
    export.add_argument("--calibration-split", default="train", help="--int8: split (train)")
    export.add_argument(
        "--calibration-images", type=int, default=32, help="--int8: images, spread over the split"
    )

    caffe = sub.add_parser(
        "import-caffe", help="a Caffe .caffemodel (the FCN release) -> .safetensors weights"
    )
    caffe.add_argument("caffemodel", help="the .caffemodel file")
    caffe.add_argument(
        "--release",
        help="the release net the file is (voc-fcn8s, siftflow-fcn16s, nyud-fcn32s-color-hha, "
        "...): picks --model, its options and --format (docs/paper_fidelity.md lists them)",
    )
    caffe.add_argument("--model", help="paper net with the same layers, e.g. fcn8s_vgg16")
    caffe.add_argument(
        "--format", help="dataset whose classes the net scores (default: the release's, or voc)"
    )
    caffe.add_argument("--out", required=True, help="output .safetensors")
    caffe.add_argument(
        "--partial", action="store_true", help="allow net layers the caffemodel lacks (keep init)"
    )
    caffe.add_argument(
        "--options", nargs="+", default=[], help="model options key=value, e.g. at_once=true"
    )

    bench = sub.add_parser("bench", help="inference speed of a model per engine")
    bench.add_argument("model", help="registry model name")
    bench.add_argument("--size", type=int, nargs="+", default=[512], help="H [W] (default 512)")
    bench.add_argument("--engines", nargs="+", default=None, help="eager, fused, onnxruntime, ...")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--num-classes", type=int, default=21)

    demo = sub.add_parser("demo", help="train+eval+predict on the built-in synthetic data")
    demo.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    demo.add_argument("overrides", nargs="*", help="key.sub=value overrides of configs/demo.yaml")

    serve = sub.add_parser("serve", help="serve a model over HTTP with a browser page")
    _add_model_source(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _add_engine_option(serve)
    serve.add_argument("--workers", type=int, default=1, help="inference threads (default 1)")
    serve.add_argument("--queue", type=int, default=4, help="requests that may wait (else 503)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="per image (else 413)")
    serve.add_argument("--max-pixels", type=int, default=4_000_000, help="per image (else 413)")
    _add_inference_options(serve)

    report = sub.add_parser("report", help="HTML report of a run directory (curves + eval)")
    report.add_argument("run", help="run directory written by `fcnseg train`")
    report.add_argument("--out", help="report folder (default <run>/report)")
    return parser


# ----------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from fcnseg.config import load_config
    from fcnseg.engine.checkpoint import config_from_checkpoint
    from fcnseg.engine.train import train

    if args.data_root is not None:
        if not Path(args.data_root).is_dir():
            raise FileNotFoundError(
                f"--data-root {args.data_root}: directory not found; fix the path"
            )
        args.overrides = [*args.overrides, f"data.root={args.data_root}"]
    if args.resume:
        if args.config:
            config = load_config(args.config, args.overrides)
        else:
            config = config_from_checkpoint(args.resume, args.overrides)
    else:
        config = load_config(args.config, args.overrides)
    result = train(config, out=args.out, resume=args.resume, force=args.force)
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir} ({result.stopped}, {result.steps} steps)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fcnseg.engine.run_eval import run_evaluation

    collectors: list = []  # filled by the --report hook once the split is built
    result = run_evaluation(
        weights=args.weights,
        checkpoint=args.checkpoint,
        run=args.run,
        device=args.device,
        mode=args.mode,
        options=_inference_options(args),
        data_format=args.format,
        data_root=args.data_root,
        split=args.split,
        size=tuple(args.size) if args.size else None,
        out=args.out,
        progress=sys.stderr.isatty(),
        batch_hook=_report_collector(collectors) if args.report else None,
        payload_extras=(
            (lambda run: collectors[0].json_fields(_sample_names(run.dataset)))
            if args.report
            else None
        ),
        engine=args.engine,
    )
    print(result.engine.summary())
    print(result.report())
    if args.report:
        from fcnseg.report import write_eval_report

        index = write_eval_report(
            args.report, result.payload, result.meta, collectors[0], result.dataset
        )
        print(f"report written to {index}")
    print(f"scores written to {result.out}")
    return 0


def _report_collector(collectors: list):
    """A batch hook for run_evaluation: builds the report's collector once the split is known."""

    def hook(dataset, loader):
        from fcnseg.report import EvalCollector

        # The loader's order (this rank's shard) maps batch positions to dataset indices.
        indices = list(getattr(loader.sampler, "indices", range(len(dataset))))
        collectors.append(EvalCollector(dataset.num_classes, dataset.ignore_index, indices))
        return collectors[-1]

    return hook


def _sample_names(dataset) -> list[str]:
    try:
        return [dataset.sample_name(index) for index in range(len(dataset))]
    except Exception:  # noqa: BLE001 - names are a nicety of the report
        return [str(index) for index in range(len(dataset))]


def cmd_predict(args: argparse.Namespace) -> int:
    from fcnseg.engine.predict import run_prediction

    result = run_prediction(
        args.inputs,
        args.out,
        weights=args.weights,
        checkpoint=args.checkpoint,
        run=args.run,
        device=args.device,
        mode=args.mode,
        options=_inference_options(args),
        overlay=not args.no_overlay,
        progress=sys.stderr.isatty(),
        engine=args.engine,
        batch_size=args.batch_size,
        num_workers=args.workers,
        background_writes=not args.foreground_writes,
    )
    written, failed = result.counts()
    if result.rank != 0:
        return 1 if failed else 0  # under torchrun only rank 0 prints the summary
    if result.mirrored_from is not None:
        print(
            f"inputs share file names: outputs mirror their folders under {args.out} "
            f"(relative to {result.mirrored_from})"
        )
    summary = f"{len(result.files)} images -> {written} files in {args.out}"
    if failed:
        summary += f"; {failed} failed (listed on stderr)"
    print(summary)
    print(result.engine.summary())  # after the summary line, which scripts read first
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from fcnseg.models import model_info
    from fcnseg.models.table import format_model_table, model_table

    names = args.names or None
    for name in names or []:
        model_info(name)  # unknown name -> one-line error before any model is built
    print(format_model_table(model_table(names, flops=not args.no_flops)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from fcnseg.data.check import check_dataset, format_report

    if args.root is not None and not Path(args.root).exists():
        raise FileNotFoundError(f"--root {args.root}: directory not found; fix the path")
    kwargs = {"splits": args.splits} if args.splits else {}
    report = check_dataset(args.root, args.format, **kwargs)
    print(format_report(report))
    ok = getattr(report, "ok", True)
    return 0 if ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from fcnseg.engine.checkpoint import save_weights
    from fcnseg.engine.predict import load_trained_model

    calibration = (args.calibrate, args.format)
    if args.int8 and (args.target != "onnx" or not args.calibrate):
        raise UsageError("--int8 needs --to onnx and --calibrate ROOT (training images)")
    if not args.int8 and any(value is not None for value in calibration):
        raise UsageError("--calibrate and --format belong to --int8; add --int8")
    model, meta = load_trained_model(args.weights, args.checkpoint, args.run)
    out = Path(args.out)
    if args.int8:
        from fcnseg.inference.quantize import calibration_images, quantize_int8

        images, source = calibration_images(
            args.calibrate,
            meta["normalization"],
            data_format=args.format,
            split=args.calibration_split,
            count=args.calibration_images,
        )
        entry, record = quantize_int8(
            model, meta["source"], images, calibration_source=source, out=out
        )
        agreement = 100 * record["check"]["argmax_agreement"]
        print(
            f"wrote {out} (int8; cached as {entry.onnx} for --engine onnxruntime-int8; argmax "
            f"agreement with PyTorch {agreement:.2f}% on {record['check']['inputs']})"
        )
        return 0
    if args.target == "safetensors":
        meta = {key: value for key, value in meta.items() if key not in ("config", "source")}
        save_weights(out, model, meta)
    else:
        from fcnseg import export

        exporter = export.export_onnx if args.target == "onnx" else export.export_torchscript
        exporter(model, out, classes=meta["classes"], normalization=meta["normalization"])
    print(f"wrote {out}")
    return 0


def cmd_import_caffe(args: argparse.Namespace) -> int:
    import yaml

    from fcnseg.data.datasets.registry import get_dataset_class
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model
    from fcnseg.models.caffe import load_caffemodel, release_net

    release = release_net(args.release) if args.release else None
    model_name = args.model or (release.model if release else None)
    if model_name is None:
        raise UsageError("import-caffe: pass --release NET (e.g. voc-fcn8s) or --model NAME")
    options: dict = dict(release.options) if release and model_name == release.model else {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item}: model options are key=value, e.g. at_once=true")
        options[key] = yaml.safe_load(value)
    options.setdefault("normalization", "caffe_bgr")  # what every Caffe FCN net was trained on
    data_format = args.format or (release.data_format if release else "voc")
    info = get_dataset_class(data_format).class_info
    leading = release.leading_classes if release and data_format == release.data_format else ()
    classes = [*leading, *info.names]
    palette = [(0, 0, 0)] * len(leading) + [tuple(colour) for colour in info.palette]
    model = build_model(model_name, len(classes), pretrained=False, **options)
    loaded, unused = load_caffemodel(model, args.caffemodel, strict=not args.partial)
    meta = weights_metadata(
        model_name,
        options,
        num_classes=len(classes),
        classes=classes,
        palette=palette,
        normalization=model.normalization,
        ignore_index=info.ignore_index,
        data_format=data_format,
        converted_from=Path(args.caffemodel).name,
        **({"release_net": args.release} if args.release else {}),
    )
    save_weights(Path(args.out), model, meta)
    print(f"wrote {args.out}: {len(loaded)} layers from {args.caffemodel}")
    if unused:
        print(f"caffemodel layers not in {model_name} (skipped): {', '.join(unused)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: train on synthetic scenes, evaluate on the test split, predict."""
    from fcnseg.config import load_config
    from fcnseg.engine.predict import run_prediction
    from fcnseg.engine.run_eval import run_evaluation
    from fcnseg.engine.train import train

    config = load_config(DEMO_CONFIG, args.overrides)
    result = train(config, out=args.out)
    run_dir = result.run_dir
    assert run_dir is not None
    print(f"run directory: {run_dir}")
    device = config.train.device
    progress = sys.stderr.isatty()
    scored = run_evaluation(
        run=run_dir, split="test", device=device, mode="whole", progress=progress
    )
    print(scored.report())
    print(f"scores written to {scored.out}")
    images = _write_demo_inputs(config, run_dir / "demo_inputs")
    predictions = run_dir / "predictions"
    predicted = run_prediction(
        [str(images)], predictions, run=run_dir, device=device, mode="whole", progress=progress
    )
    print(f"{len(predicted.files)} images -> {len(predicted.written)} files in {predictions}")
    return 0


def _write_demo_inputs(config, folder: Path, count: int = 4) -> Path:
    """A few test-split scenes as PNG files, so the demo exercises predict on real files."""
    from PIL import Image

    from fcnseg.config import eval_options
    from fcnseg.engine.setup import build_eval_dataset

    dataset = build_eval_dataset(config.data.format, None, "test", eval_options(config.data))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, len(dataset))):
        image, _ = dataset.load(index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"scene_{index}.png")
    return folder


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the model once and serve it (see fcnseg.serve); blocks until interrupted."""
    from fcnseg.serve import ServeLimits, load_pool, run_server

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    limits = ServeLimits(
        max_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        queue=args.queue,
    )
    device = "cpu" if args.device == "auto" else args.device
    if args.device == "auto":
        import torch

        on_gpu = torch.cuda.is_available() and args.engine in ("torch", "auto")
        device = "cuda" if on_gpu else "cpu"
    pool = load_pool(
        args.weights,
        args.checkpoint,
        args.run,
        engine=args.engine,
        workers=args.workers,
        queue=args.queue,
        mode=args.mode,
        options=_inference_options(args),
        device=device,
    )
    print(pool.resolved_engine.summary(), flush=True)
    run_server(pool, limits, host=args.host, port=args.port)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render a run directory as DIR/index.html (learning curves + evaluations)."""
    from fcnseg.report import write_run_report

    index = write_run_report(args.run, args.out)
    print(f"report written to {index}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "models": cmd_models,
    "data": cmd_data,
    "export": cmd_export,
    "import-caffe": cmd_import_caffe,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "serve": cmd_serve,
    "report": cmd_report,
}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe_os_error(error: OSError) -> str:
    """One line for a filesystem failure: what, which file, and the usual fix.

    fcnseg raises FileNotFoundError with its own one-line message (no errno); that message is
    kept as it is. An OSError from the system (errno set) becomes "file: reason; fix".
    """
    if error.errno is None and error.args:
        return _one_line(error.args[0])
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or type(error).__name__
    fixes = {
        errno.ENOSPC: "free some space or choose another --out",
        errno.EROFS: "the filesystem is read-only; choose another --out",
        errno.EACCES: "check the permissions or choose another location",
        errno.EPERM: "check the permissions or choose another location",
        errno.ENOENT: "check the path",
        errno.EISDIR: "name a file, not a folder",
        errno.ENOTDIR: "a component of the path is a file, not a folder",
        errno.EEXIST: "choose another name or remove it",
    }
    fix = fixes.get(error.errno or 0, "check the path and the disk")
    return _one_line(f"{where}{reason}; {fix}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when some inputs failed, 2 on bad input.

    The error model (fcnseg.errors): an `FcnsegError` is the user's to fix and the filesystem
    failing (missing, read-only, full) is the machine's; both become one line on stderr with exit
    status 2. Anything else is a bug in fcnseg and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FcnsegError as error:
        print(f"fcnseg {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"fcnseg {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fcnseg: interrupted", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
