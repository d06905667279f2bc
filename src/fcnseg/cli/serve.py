"""`fcnseg serve`: load the model once and serve it over HTTP (see fcnseg.serve).

The limits are read as text and checked here, before the model loads, so that a bad value
(`--max-upload-mb nan`, `--max-pixels -1`, `--graph-sizes 360by480`) is one line and exit 2,
not argparse's two-line usage message or a traceback.
"""

from __future__ import annotations

import argparse
import math

from fcnseg.cli.arguments import (
    add_crf_options,
    add_engine_option,
    add_inference_options,
    add_mc_options,
    add_model_source,
    crf_arguments,
    inference_options,
)
from fcnseg.errors import UsageError

#: Defaults, repeated from fcnseg.serve.limits (which imports PIL and numpy; the parser may not).
DEFAULT_MAX_PIXELS = 1_200_000
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 64
#: Sizes `--graph-sizes` may name (each fixed-size graph holds its own memory).
MAX_GRAPH_SIZES = 4


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model over HTTP with a browser page")
    add_model_source(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_engine_option(parser)
    parser.add_argument("--workers", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--queue", type=int, default=4, help="requests that may wait (else 503)")
    parser.add_argument("--max-upload-mb", default="10", help="per image (default 10; else 413)")
    parser.add_argument(
        "--max-pixels",
        default=str(DEFAULT_MAX_PIXELS),
        help="memory budget per image in request pixels: the largest forward pass at the model's "
        "input scale and the mode's scales or tiles, plus a quarter of the image (default "
        f"{DEFAULT_MAX_PIXELS:,}: under 1.5 GB peak for the shipped models; else 413)",
    )
    parser.add_argument(
        "--graph-sizes",
        default="",
        help="with --engine onnxruntime: upload sizes HxW,HxW (e.g. 360x480) whose fixed-size "
        "graphs are made at start-up; other sizes run on the dynamic graph (nothing is "
        "exported while serving)",
    )
    parser.add_argument(
        "--body-timeout",
        default=str(DEFAULT_BODY_TIMEOUT_S),
        help="seconds a request's headers or body may stall (default 10; also the grace before "
        "a body must average 16 kB/s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"connections at once (default {DEFAULT_MAX_CONNECTIONS}; more get 503)",
    )
    add_inference_options(parser)
    add_mc_options(parser)
    add_crf_options(parser)  # the default; each request may say crf=0 or crf=1


def positive_number(text: str, flag: str, whole: bool = False) -> float:
    """A finite number > 0 from the command line, or a one-line UsageError naming `flag`."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0) or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise UsageError(f"{flag} must be {kind} above 0, got {text!r}")
    return value


def graph_sizes(text: str) -> list[tuple[int, int]]:
    """`360x480,720x960` -> [(360, 480), (720, 960)], or a one-line UsageError."""
    sizes: list[tuple[int, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sides = item.lower().split("x")
        if len(sides) != 2 or not all(side.isdigit() and 16 <= int(side) <= 8192 for side in sides):
            raise UsageError(f"--graph-sizes: {item!r} is not HxW with sides 16..8192 (360x480)")
        sizes.append((int(sides[0]), int(sides[1])))
    if len(sizes) > MAX_GRAPH_SIZES:
        raise UsageError(f"--graph-sizes: at most {MAX_GRAPH_SIZES} sizes, got {len(sizes)}")
    return sizes


def run(args: argparse.Namespace) -> int:
    """Blocks until interrupted."""
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    max_mb = positive_number(args.max_upload_mb, "--max-upload-mb")
    if max_mb > 1024:
        raise UsageError(f"--max-upload-mb must be at most 1024, got {args.max_upload_mb!r}")
    max_pixels = positive_number(args.max_pixels, "--max-pixels", whole=True)
    if max_pixels > 10**10:
        raise UsageError(f"--max-pixels must be at most 10000000000, got {args.max_pixels!r}")
    body_timeout = positive_number(args.body_timeout, "--body-timeout")
    sizes = graph_sizes(args.graph_sizes)
    crf, crf_options = crf_arguments(args)

    from fcnseg.serve import ServeLimits, load_pool, prepare_graph_sizes, run_server

    limits = ServeLimits(
        max_bytes=max(1, int(max_mb * 1024 * 1024)),
        max_pixels=int(max_pixels),
        queue=args.queue,
        body_timeout_s=body_timeout,
        max_connections=args.max_connections,
    )
    pool = load_pool(
        args.weights,
        args.checkpoint,
        args.run,
        engine=args.engine,
        workers=args.workers,
        queue=args.queue,
        mode=args.mode,
        options=inference_options(args),
        device=args.device,
        mc_samples=args.mc_samples,
        seed=args.seed,
        crf=crf,
        crf_options=crf_options,
    )
    print(pool.session.runtime.summary(), flush=True)
    if pool.session.mc is not None:
        print(pool.session.mc.summary(), flush=True)
    if pool.session.crf is not None:
        print(f"crf by default: {pool.session.crf.describe()} (crf=0 turns it off)", flush=True)
    for line in prepare_graph_sizes(pool, sizes, limits.max_pixels):
        print(line, flush=True)
    run_server(pool, limits, host=args.host, port=args.port)
    return 0
