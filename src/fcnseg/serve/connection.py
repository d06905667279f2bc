"""Connections that cannot hold the server: header and body timeouts, a minimum body rate,
and telling when a client has gone.

Why here and not in uvicorn's settings: uvicorn (0.55, h11) has a keep-alive timeout between
requests but none while a request's headers or body trickle in, so a client that sends one byte
and stops holds its connection (and, once admitted, a queue slot) forever. Headers are guarded
by a small subclass of uvicorn's h11 protocol (`GuardedH11Protocol`); the body by the reader
the route uses (`read_body`), which also refuses a body over its byte limit as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from fcnseg.serve.limits import ServeLimits, UploadError

log = logging.getLogger("fcnseg.serve")

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientGone(Exception):
    """The client closed its connection; nothing can be sent to it any more."""

    def __init__(self, received: int = 0) -> None:
        super().__init__(f"client gone after {received} B")
        self.received = received


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers.

    The timer runs from the connection's start (and from the first byte of each later request
    on a kept-alive connection) until the request line and headers are complete; a connection
    still without complete headers then is closed, with one log line.
    """

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting:
            if self._header_timer is None:
                self._arm_header_timer()
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}" if self.client else "-"
        log.info("%s dropped: no complete request headers in %g s", client, self.header_timeout_s)
        self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn should use (`Config(http=...)`), with this header timeout."""
    return type("GuardedH11", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


async def read_body(receive: Receive, limit: int, limits: ServeLimits) -> bytes:
    """The request body, refused as it arrives when too big, stalled or too slow.

    413 as soon as it passes `limit` bytes; 408 when no byte came for `limits.body_timeout_s`
    seconds, or when after that long fewer than `limits.min_body_rate` bytes per second have
    come on average; `ClientGone` when the client disconnects. Nothing waits unbounded.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    received = 0
    while True:
        elapsed = loop.time() - started
        if elapsed > limits.body_timeout_s and received < limits.min_body_rate * elapsed:
            raise UploadError(
                408,
                f"the upload is too slow ({received / elapsed / 1024:.1f} kB/s after "
                f"{elapsed:.0f} s); this server needs at least "
                f"{limits.min_body_rate / 1024:.0f} kB/s",
            )
        try:
            message = await asyncio.wait_for(receive(), timeout=limits.body_timeout_s)
        except TimeoutError:
            raise UploadError(
                408, f"the upload stalled: no data for {limits.body_timeout_s:g} s"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone(received)
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise UploadError(413, f"the upload is over the limit of {limit / 2**20:.1f} MB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (call only after the whole body was read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
