"""`fcnseg serve`: a trained model behind HTTP (FastAPI + uvicorn, the optional `serve` extra).

`load_pool` loads the model once and wraps it in an `InferencePool`; `create_app` builds the
routes around it; `run_server` starts uvicorn. The page at GET / needs nothing but the server.
FastAPI is imported only here, so the rest of fcnseg never needs the extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fcnseg.errors import UsageError
from fcnseg.serve.limits import ServeLimits, UploadError, decode_upload
from fcnseg.serve.pool import InferencePool, available_cores

__all__ = [
    "InferencePool",
    "ServeLimits",
    "UploadError",
    "create_app",
    "decode_upload",
    "load_pool",
    "run_server",
]

MISSING_EXTRA = "fcnseg serve needs FastAPI and uvicorn: pip install 'fcnseg[serve]'"


def create_app(pool: InferencePool, limits: ServeLimits | None = None):
    """See `fcnseg.serve.app.create_app` (imported lazily: FastAPI is an optional extra)."""
    try:
        from fcnseg.serve.app import create_app as build
    except ImportError as error:
        raise UsageError(f"{MISSING_EXTRA} ({error})") from None
    return build(pool, limits)


def load_pool(
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    *,
    engine: str = "torch",
    workers: int = 1,
    queue: int = 4,
    mode: str | None = None,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
) -> InferencePool:
    """Load a trained model once and put it behind a pool of `workers` inference threads.

    The model goes through the same `InferenceSession.load` as eval and predict, so `engine`
    (the runtime: "auto", "torch", "onnxruntime", "onnxruntime-int8") is resolved the same way:
    the ONNX graph is exported and checked once per weights file and reused from its cache at
    every later start. Each worker's runtime gets cores // workers threads.
    """
    from fcnseg.choices import RUNTIME_CHOICES
    from fcnseg.engine.session import InferenceSession

    if engine not in RUNTIME_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(RUNTIME_CHOICES)}, got {engine!r}")
    if workers < 1 or workers > available_cores() * 4:
        raise UsageError(f"--workers must be between 1 and {available_cores() * 4}, got {workers}")
    threads = max(1, available_cores() // workers)
    session = InferenceSession.load(
        weights=weights,
        checkpoint=checkpoint,
        run=run,
        device=device,
        runtime=engine,
        mode=mode,
        options=options,
        threads=threads,
    )
    return InferencePool(session, workers=workers, queue=queue, threads=threads)


def run_server(
    pool: InferencePool, limits: ServeLimits, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve until interrupted; one log line per request on stderr (uvicorn's own access log
    is off, so each request is logged once, with its request id and timing)."""
    try:
        import uvicorn
    except ImportError as error:
        raise UsageError(f"{MISSING_EXTRA} ({error})") from None
    app = create_app(pool, limits)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("fcnseg.serve").setLevel(logging.INFO)
    describe = pool.describe()
    print(
        f"fcnseg serve: {describe['name']} ({len(pool.classes)} classes, {pool.mode} inference, "
        f"engine {pool.engine}, {pool.workers} worker(s) x {pool.threads} thread(s), "
        f"queue {pool.queue}) on http://{host}:{port}/",
        flush=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    finally:
        pool.close()
