"""The HTTP service: `create_app(pool, limits)` -> a FastAPI app.

Routes:
    GET  /                 the page (one HTML file, inline CSS/JS, no external asset)
    GET  /healthz          liveness: {"status": "ok"} once the model is loaded
    GET  /v1/model         model name, classes, palette, normalisation, inference settings
    GET  /v1/samples       the sample scenes: [{"name", "url"}]
    GET  /v1/samples/N.png one sample scene
    POST /v1/segment       multipart field "image" (or a raw image body) -> JSON, or with
                           ?format=png the class-index PNG itself; ?crf=1 / ?crf=0 turns the
                           dense CRF on or off for this image (default: the server's --crf)

Every error a client can see is JSON {"error": message, "status": code}; no traceback leaves
the process (the log keeps it, tagged with the request id the client also gets). One log line
per request on the "fcnseg.serve" logger: method, path, status, bytes in, milliseconds; a client
that leaves before its answer is one line too ("client gone"), not a traceback and not a 500.

A segment request takes its slot in the pool before a byte of its body is read (so at most
workers + queue bodies are buffered), reads its body under a timeout and a minimum rate, is
checked against the pixel budget from the image header alone, and only then decoded and run on
a worker thread; if its client disconnects meanwhile, the work is cancelled (or, when already
running, its result dropped) and the slot freed at once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fcnseg.errors import UsageError
from fcnseg.serve.connection import ClientGone, read_body, wait_for_disconnect
from fcnseg.serve.limits import (
    MULTIPART_SLACK,
    OpenedUpload,
    ServeLimits,
    UploadError,
    check_size,
    decode_opened,
    largest_fitting,
    open_upload,
)
from fcnseg.serve.pool import InferencePool, QueueFull, Segmentation, class_shares, mask_png
from fcnseg.serve.request_log import CLOSE, RequestLog
from fcnseg.serve.request_log import error_response as _error
from fcnseg.serve.samples import SAMPLE_COUNT, sample_name, sample_png

log = logging.getLogger("fcnseg.serve")

#: Multipart field names accepted for the image (the page sends "image").
UPLOAD_FIELDS: tuple[str, ...] = ("image", "file")
#: Values of the `crf` query parameter: on, off (absent: the server's default).
CRF_WORDS: dict[str, bool] = {
    "1": True,
    "true": True,
    "on": True,
    "0": False,
    "false": False,
    "off": False,
}


def page_html() -> str:
    """The page, a package data file (fcnseg/serve/page.html)."""
    return resources.files("fcnseg.serve").joinpath("page.html").read_text(encoding="utf-8")


async def _read_declared(request: Request, limits: ServeLimits) -> bytes:
    """The body: a Content-Length over the limit is refused before a byte is read."""
    limit = limits.max_bytes + MULTIPART_SLACK
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(
            413,
            f"the upload is {int(declared) / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB",
        )
    return await read_body(request.receive, limit, limits)


async def _upload_bytes(request: Request, limits: ServeLimits) -> bytes:
    """The image file of a multipart form (field "image" or "file"), or a raw image body."""
    content_type = request.headers.get("content-type", "")
    body = await _read_declared(request, limits)
    if not content_type.startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(max_files=2, max_fields=8)
    except Exception:  # noqa: BLE001 - python-multipart raises several types for broken bodies
        raise UploadError(
            400, "the multipart form could not be parsed; send field 'image'"
        ) from None
    try:
        for name in UPLOAD_FIELDS:
            part = form.get(name)
            if part is not None and hasattr(part, "read"):
                return await part.read()
        raise UploadError(
            400, "no image in the form; send the file as multipart field 'image' (type=file)"
        )
    finally:
        await form.close()


def create_app(pool: InferencePool, limits: ServeLimits | None = None) -> FastAPI:
    """The service around an already-loaded `pool` (loaded once, shared by all requests)."""
    limits = limits or ServeLimits(queue=pool.queue)
    app = FastAPI(title="fcnseg", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool = pool
    app.state.limits = limits
    _add_logging_and_errors(app)
    _add_read_routes(app, pool, limits, page_html())
    _add_segment_route(app, pool, limits)
    return app


def _add_logging_and_errors(app: FastAPI) -> None:
    """One log line per request, and every error as JSON without a traceback."""
    app.add_middleware(RequestLog)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        messages = {404: "no such page", 405: f"method {request.method} is not allowed here"}
        message = messages.get(error.status_code, str(error.detail))
        return _error(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(
            400, "malformed request: " + "; ".join(str(e.get("msg")) for e in error.errors())
        )


def _add_read_routes(app: FastAPI, pool: InferencePool, limits: ServeLimits, html: str) -> None:
    """The page, health, model description and sample scenes."""

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "in_flight": pool.in_flight,
            "running": pool.running,
            "capacity": pool.capacity,
        }

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return {
            **pool.describe(),
            "limits": _limits_json(pool, limits),
        }

    @app.get("/v1/samples")
    async def samples() -> list[dict[str, str]]:
        return [
            {"name": sample_name(index), "url": f"/v1/samples/{index}.png"}
            for index in range(SAMPLE_COUNT)
        ]

    @app.get("/v1/samples/{name}")
    async def sample(name: str) -> Response:
        stem = name.removesuffix(".png")
        if not stem.isdigit() or not 0 <= int(stem) < SAMPLE_COUNT:
            return _error(
                404, f"no sample {name!r}; there are {SAMPLE_COUNT} (0-{SAMPLE_COUNT - 1})"
            )
        return Response(
            sample_png(int(stem)),
            media_type="image/png",
            headers={"Cache-Control": "public, max-age=86400"},
        )


def _limits_json(pool: InferencePool, limits: ServeLimits) -> dict[str, Any]:
    """The limits as a client needs them: the budget is in request pixels (model- and
    mode-dependent), so the largest 4:3 image it admits is given in image pixels too; the page
    shows `max_pixels` as "up to N megapixels"."""
    width, height = largest_fitting(40_000, 30_000, pool.session.request_pixels, limits.max_pixels)
    return {
        "max_upload_bytes": limits.max_bytes,
        "max_pixels": width * height,
        "largest_4x3_image": [width, height],
        "max_request_pixels": limits.max_pixels,
    }


def _add_segment_route(app: FastAPI, pool: InferencePool, limits: ServeLimits) -> None:
    """POST /v1/segment: admission, upload limits, the work on a pool thread, the answer."""

    @app.post("/v1/segment")
    async def segment(request: Request, format: str = "json", crf: str | None = None) -> Response:
        if format not in ("json", "png"):
            return _error(400, f"format must be 'json' or 'png', got {format!r}")
        if crf is not None and crf.lower() not in CRF_WORDS:
            return _error(400, f"crf must be 1 or 0 (on or off), got {crf[:20]!r}")
        use_crf = CRF_WORDS[crf.lower()] if crf is not None else None
        try:
            pool.check_crf_request(use_crf)
        except UsageError as error:
            return _error(400, str(error))
        try:
            pool.acquire()  # before a byte of the body: a full server buffers nothing more
        except QueueFull as error:
            return _busy(error.retry_after)
        started = time.perf_counter()
        try:
            data = await _upload_bytes(request, limits)
            check_size(len(data), limits)
            channels = pool.session.in_channels
            image = open_upload(data, limits, pool.session.request_pixels, channels)
            _, result, png = await _run_while_connected(request, pool, image, len(data), use_crf)
        except UploadError as error:  # the body may be unread: close rather than wait for it
            return _error(error.status, error.message, headers=CLOSE)
        finally:
            pool.release()
        total_ms = 1000 * (time.perf_counter() - started)
        height, width = result.labels.shape
        timing = {
            "X-Inference-Ms": f"{result.inference_ms:.1f}",
            "X-Image-Size": f"{width}x{height}",
        }
        if result.crf_ms is not None:
            timing["X-Crf-Ms"] = f"{result.crf_ms:.1f}"
        if format == "png":
            return Response(png, media_type="image/png", headers=timing)
        payload = _segment_json(pool, result, png, total_ms)
        return JSONResponse(payload, headers=timing)


async def _run_while_connected(
    request: Request, pool: InferencePool, image: OpenedUpload, received: int, crf: bool | None
) -> tuple[Any, Segmentation, bytes]:
    """The work on a pool thread, abandoned as soon as the client disconnects.

    Work not yet started is cancelled (it never runs); work already running cannot be
    interrupted mid-forward, so it is told to stop at its next step and its result dropped.
    Either way the caller frees the slot at once and `ClientGone` is raised.
    """
    gone = threading.Event()
    work = asyncio.ensure_future(pool.run(_work, pool, image, gone, crf))
    watch = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled (server shutdown): the work must not outlive it
        gone.set()
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work not in done:
        gone.set()
        work.cancel()
        raise ClientGone(received)
    return work.result()


def _segment_json(pool: InferencePool, result: Segmentation, png: bytes, total_ms: float) -> dict:
    """The JSON answer of POST /v1/segment: size, classes, shares, legend, mask, timings."""
    height, width = result.labels.shape
    classes = pool.classes
    shares = class_shares(result.labels, len(classes))
    palette = pool.palette
    legend = sorted(
        (
            {"id": index, "name": name, "color": palette[index], "share": shares[index]}
            for index, name in enumerate(classes)
        ),
        key=lambda entry: (-entry["share"], entry["id"]),
    )
    payload = {
        "width": width,
        "height": height,
        "model": pool.session.metadata.model,
        "classes": classes,
        "palette": palette,
        "shares": {name: shares[index] for index, name in enumerate(classes)},
        "legend": legend,
        "mask_png": base64.b64encode(png).decode("ascii"),
        "inference_ms": round(result.inference_ms, 1),
        "total_ms": round(total_ms, 1),
        "mode": pool.mode,
        "crf": result.crf_ms is not None,
        "crf_ms": None if result.crf_ms is None else round(result.crf_ms, 1),
    }
    if result.uncertainty is not None and result.uncertainty_png is not None and pool.session.mc:
        # MC dropout: the heat map of the mean's entropy / log C (inference.mc_dropout).
        payload["uncertainty_png"] = base64.b64encode(result.uncertainty_png).decode("ascii")
        payload["mean_uncertainty"] = round(float(result.uncertainty.mean()), 4)
        payload["mc_samples"] = pool.session.mc.samples
    return payload


def _busy(retry_after: int) -> JSONResponse:
    return _error(
        503,
        f"the server is busy with other images; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after), **CLOSE},
    )


def _work(pool: InferencePool, image: OpenedUpload, gone: threading.Event, crf: bool | None):
    """Decode (to the model's band count), segment and encode one upload on a worker thread
    (all CPU-bound work); each step first checks that the client is still there."""
    if gone.is_set():
        raise ClientGone()
    values = decode_opened(image, pool.session.in_channels)
    if gone.is_set():
        raise ClientGone()
    result = pool.segment(values, crf)
    if gone.is_set():
        raise ClientGone()
    return values, result, mask_png(result.labels, pool.palette)
