"""`fcnseg serve`: a trained model behind HTTP (FastAPI + uvicorn, the optional `serve` extra).

`load_pool` loads the model once and wraps it in an `InferencePool`; `create_app` builds the
routes around it; `run_server` starts uvicorn. The page at GET / needs nothing but the server.
FastAPI is imported only here, so the rest of fcnseg never needs the extra.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from fcnseg.errors import UsageError
from fcnseg.serve.limits import ServeLimits, UploadError, decode_upload
from fcnseg.serve.pool import InferencePool, available_cores, prepare_graph_sizes

__all__ = [
    "InferencePool",
    "ServeLimits",
    "UploadError",
    "create_app",
    "decode_upload",
    "load_pool",
    "prepare_graph_sizes",
    "run_server",
    "server_config",
]

#: Seconds a stop (Ctrl-C, SIGTERM) waits for requests in progress before cancelling them.
SHUTDOWN_GRACE_S: int = 2
#: Seconds an idle kept-alive connection stays open.
KEEP_ALIVE_S: int = 5

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
    mc_samples: int | None = None,
    seed: int = 0,
    crf: bool | None = None,
    crf_options: dict[str, Any] | None = None,
) -> InferencePool:
    """Load a trained model once and put it behind a pool of `workers` inference threads.

    The model goes through the same `InferenceSession.load` as eval and predict, so `engine`
    (the runtime: "auto", "torch", "onnxruntime", "onnxruntime-int8") is resolved the same way:
    the ONNX graph is exported and checked once per weights file and reused from its cache at
    every later start. Each worker's runtime gets cores // workers threads. `mc_samples`/`seed`:
    Monte-Carlo dropout (InferenceSession.load); each answer then carries the uncertainty map.
    `crf`/`crf_options`: the dense CRF every request gets unless it says crf=0 (--crf, --no-crf,
    --crf-*).
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
        mc_samples=mc_samples,
        seed=seed,
        crf=crf,
        crf_options=crf_options,
    )
    return InferencePool(session, workers=workers, queue=queue, threads=threads)


def server_config(app: Any, limits: ServeLimits, host: str = "127.0.0.1", port: int = 8000) -> Any:
    """uvicorn's settings for `app`: bounded connections, timeouts, a prompt stop.

    `limit_concurrency` caps connections and requests in progress (uvicorn answers 503 beyond
    it); the guarded h11 protocol closes a connection whose headers do not arrive within the
    body timeout (fcnseg.serve.connection); a stop waits SHUTDOWN_GRACE_S for requests in
    progress, then cancels them. uvicorn's own access log is off: each request is logged once,
    with its request id and timing, by the app.
    """
    import uvicorn

    from fcnseg.serve.connection import guarded_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits.body_timeout_s),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


def run_server(
    pool: InferencePool, limits: ServeLimits, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); one log line per request on stderr.

    A stop does not wait for a forward pass in progress (it cannot be interrupted and may take
    minutes): once uvicorn has closed the connections, a worker still running is abandoned and
    the process exits at once (`os._exit`, after flushing), with 130 after Ctrl-C.
    """
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
        f"queue {pool.queue}, at most {limits.max_pixels:,} request pixels and "
        f"{limits.max_bytes / 2**20:.1f} MB per image) on http://{host}:{port}/",
        flush=True,
    )
    interrupted = False
    try:
        uvicorn.Server(server_config(app, limits, host, port)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it caught once it has stopped
        interrupted = True
    running = pool.close()
    if running:
        print(f"fcnseg serve: stopped; {running} inference(s) in progress dropped", flush=True)
        sys.stderr.flush()
        os._exit(130 if interrupted else 0)
    if interrupted:
        raise KeyboardInterrupt
