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
from fcnseg.serve.pool import SERVE_ENGINES, InferencePool, available_cores

__all__ = [
    "SERVE_ENGINES",
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

    `engine` ("auto", "torch", "onnxruntime", "onnxruntime-int8") goes through the same
    resolver as eval and predict (fcnseg.inference.engines), so the ONNX graph is exported and
    checked once per weights file and reused from its cache at every later start.
    """
    import torch

    from fcnseg.engine.predict import inference_settings, load_trained_model
    from fcnseg.inference.engines import ENGINE_CHOICES, resolve_engine

    if engine not in ENGINE_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if workers < 1 or workers > available_cores() * 4:
        raise UsageError(f"--workers must be between 1 and {available_cores() * 4}, got {workers}")
    model, meta = load_trained_model(weights, checkpoint, run)
    mode, options = inference_settings(meta, mode, dict(options or {}))
    torch_device = torch.device(device)
    if engine == "onnxruntime" and torch_device.type != "cpu":
        raise UsageError("--engine onnxruntime runs on the CPU here; pass --device cpu")
    threads = max(1, available_cores() // workers)
    resolved = resolve_engine(
        model.to(torch_device), meta["source"], engine, device=torch_device, threads=threads
    )
    pool = InferencePool(
        resolved.runnable,
        meta,
        mode=mode,
        options=options,
        workers=workers,
        queue=queue,
        threads=threads,
        device=torch_device,
        engine=resolved.name,
    )
    pool.resolved_engine = resolved  # type: ignore[attr-defined] - for the start-up line
    return pool


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
