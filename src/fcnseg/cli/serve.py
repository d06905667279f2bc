"""`fcnseg serve`: load the model once and serve it over HTTP (see fcnseg.serve)."""

from __future__ import annotations

import argparse

from fcnseg.cli.arguments import (
    add_engine_option,
    add_inference_options,
    add_model_source,
    inference_options,
)
from fcnseg.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model over HTTP with a browser page")
    add_model_source(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_engine_option(parser)
    parser.add_argument("--workers", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--queue", type=int, default=4, help="requests that may wait (else 503)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="per image (else 413)")
    parser.add_argument("--max-pixels", type=int, default=4_000_000, help="per image (else 413)")
    add_inference_options(parser)


def run(args: argparse.Namespace) -> int:
    """Blocks until interrupted."""
    from fcnseg.serve import ServeLimits, load_pool, run_server

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    limits = ServeLimits(
        max_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        queue=args.queue,
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
    )
    print(pool.session.runtime.summary(), flush=True)
    run_server(pool, limits, host=args.host, port=args.port)
    return 0
