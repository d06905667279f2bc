"""`fcnseg serve`'s access log and last line of defence: a request id per request, one log line
each, JSON errors instead of tracebacks (an ASGI middleware, wrapped around the app)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from fcnseg.serve.connection import ClientGone

log = logging.getLogger("fcnseg.serve")

#: Sent with a refusal that may leave the body unread: the connection is closed after the
#: answer instead of idling until the keep-alive timeout (or reading a body nobody wants).
CLOSE: dict[str, str] = {"Connection": "close"}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON every refusal and error is answered with: {"error": message, "status": code}."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class RequestLog:
    """Pure ASGI middleware: a request id, one log line per request, JSON 500 for a crash.

    Why not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the route in a task
    of its own, so a client that disconnects turns into an exception there, logged with a
    traceback and a 500. Here a `ClientGone` is one "client gone" line, and an unexpected
    error is logged with its traceback once and answered 500 only if nothing was sent yet. A
    request cancelled by uvicorn's stop (after its grace period) is answered 503 if it can be,
    logged in one line, and not re-raised: uvicorn would log the cancellation as a traceback.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status: list[int] = []

        async def tagged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, tagged_send)
        except ClientGone as gone:
            outcome = f"client gone after {gone.received} B"
        except asyncio.CancelledError:  # uvicorn's stop after its grace period: not an error
            outcome = "cancelled: the server is stopping"
            if not status:
                with contextlib.suppress(Exception):
                    message = "the server is stopping; try again shortly"
                    await error_response(503, message, CLOSE)(scope, receive, tagged_send)
        except Exception:  # noqa: BLE001 - the last line of defence: no traceback to a client
            log.exception("request %s failed", request_id)
            if not status:
                await error_response(
                    500, f"internal error (request {request_id}); see the server log"
                )(scope, receive, tagged_send)
        _log_line(scope, outcome or str(status[0] if status else "-"), started, request_id)


def _log_line(scope: dict, outcome: str, started: float, request_id: str) -> None:
    """client METHOD path?query outcome in=bytes ms id."""
    headers = dict(scope.get("headers") or [])
    client = scope.get("client")
    query = scope.get("query_string", b"").decode("latin-1")
    log.info(
        "%s %s %s %s in=%sB %.0fms id=%s",
        client[0] if client else "-",
        scope.get("method", "-"),
        scope.get("path", "") + (f"?{query}" if query else ""),
        outcome,
        headers.get(b"content-length", b"0").decode("latin-1"),
        1000 * (time.perf_counter() - started),
        request_id,
    )
