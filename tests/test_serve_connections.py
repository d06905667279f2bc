"""`fcnseg serve`'s connections on a real loopback socket: stalled headers and bodies are dropped
in bounded time, admission comes before the body, a client that leaves frees its slot and its
queued work never runs, a disconnect is one log line, and Ctrl-C / SIGTERM stop a busy server.

Every client here is a raw socket with a timeout, so a regression fails the test instead of
hanging it; the server runs in a thread with the same uvicorn settings `fcnseg serve` uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import require_module
from image_bytes import png_bytes

require_module("fastapi", "pip install -e '.[test]'")  # fails under CI=true
import uvicorn  # noqa: E402
from model_helpers import tiny_serve_metadata  # noqa: E402

from fcnseg.engine.session import InferenceSession  # noqa: E402
from fcnseg.serve import InferencePool, ServeLimits, create_app, server_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST_WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0_fast.safetensors"
METADATA = tiny_serve_metadata()


class Gate(torch.nn.Module):
    """Blocks inside forward until released; counts the forwards that ran."""

    normalization = "imagenet"

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.entered.set()
        self.release.wait(timeout=10)
        return self.conv(images)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(model: torch.nn.Module, **limits) -> Iterator[tuple[int, InferencePool]]:
    """uvicorn in a thread (no signal handlers there), with `fcnseg serve`'s own settings."""
    limits = {"max_bytes": 200_000, "max_pixels": 200_000, "body_timeout_s": 0.5, **limits}
    workers = limits.pop("workers", 1)
    serve_limits = ServeLimits(**limits)
    pool = InferencePool(
        InferenceSession.for_model(model, METADATA), workers=workers, queue=serve_limits.queue
    )
    port = free_port()
    server = uvicorn.Server(server_config(create_app(pool, serve_limits), serve_limits, port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield port, pool
    finally:
        if isinstance(model, Gate):
            model.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        pool.close()


def upload_head(port: int, length: int, timeout: float = 5.0) -> socket.socket:
    """A connection that has sent a raw PNG upload's headers and no body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(
        b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or the socket's timeout fails the test).

    A server that closes with part of a body unread sends a reset after its answer: the answer
    is still read, and the reset ends the stream like a close."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_stalled_bodies_are_dropped_in_bounded_time():
    with live_server(Gate(), queue=2) as (port, pool):
        socks = [upload_head(port, 5000) for _ in range(12)]
        for sock in socks:
            sock.sendall(b"\x89")  # one byte, then nothing
        started = time.monotonic()
        statuses = [status_of(read_all(sock)) for sock in socks]
        elapsed = time.monotonic() - started
        for sock in socks:
            sock.close()
        wait_until(lambda: pool.in_flight == 0)
    assert elapsed < 4.0, elapsed  # timeout 0.5 s; every connection closed by the server
    assert statuses.count(408) == 3 and statuses.count(503) == 9, statuses


def test_a_slow_body_below_the_minimum_rate_is_dropped():
    with live_server(Gate(), min_body_rate=10_000) as (port, _):
        sock = upload_head(port, 5000)
        started = time.monotonic()
        response = b""
        for _ in range(20):  # a byte every 0.3 s: never stalled 0.5 s, but ~3 B/s
            try:
                sock.sendall(b"\x00")
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                response += sock.recv(65536)
            except TimeoutError:
                continue
            if response:
                sock.settimeout(5.0)
                response += read_all(sock)
                break
        sock.close()
    assert status_of(response) == 408 and b"too slow" in response, response
    assert time.monotonic() - started < 3.0


def test_stalled_headers_are_dropped():
    with live_server(Gate()) as (port, _):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POS")
        started = time.monotonic()
        assert read_all(sock) == b""
        sock.close()
    assert time.monotonic() - started < 3.0


def test_admission_comes_before_the_body(caplog):
    """Ten uploads at once with room for two: eight are refused before sending a byte of body,
    so at most two bodies are ever buffered; the two admitted clients leave, freeing both."""
    caplog.set_level(logging.INFO, logger="fcnseg.serve")
    with live_server(Gate(), queue=1, body_timeout_s=5.0) as (port, pool):
        socks = [upload_head(port, 150_000) for _ in range(10)]
        wait_until(lambda: pool.in_flight == 2)
        refused = [sock for sock in socks if _answered(sock)]
        assert len(refused) == 8 and pool.in_flight == 2
        assert all(status_of(read_all(sock)) == 503 for sock in refused)
        for sock in socks:
            sock.close()
        wait_until(lambda: pool.in_flight == 0, 3.0)  # long before the 5 s body timeout
    lines = [r.getMessage() for r in caplog.records if "client gone" in r.getMessage()]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "Traceback" not in caplog.text and " 500 " not in caplog.text


def _answered(sock: socket.socket) -> bool:
    sock.settimeout(2.0)
    try:
        head = sock.recv(12, socket.MSG_PEEK)
    except TimeoutError:
        return False
    finally:
        sock.settimeout(5.0)
    return head.startswith(b"HTTP/1.1")


def test_a_client_that_leaves_frees_its_slot_and_its_queued_work_never_runs(caplog):
    caplog.set_level(logging.INFO, logger="fcnseg.serve")
    gate = Gate()
    image = png_bytes(20, 30)
    with live_server(gate, queue=2) as (port, pool):
        running = upload_head(port, len(image))
        running.sendall(image)
        assert gate.entered.wait(5)
        queued = upload_head(port, len(image))
        queued.sendall(image)
        wait_until(lambda: pool.in_flight == 2)
        queued.close()  # waiting for the worker: cancelled, never run
        wait_until(lambda: pool.in_flight == 1, 3.0)
        running.close()  # mid-forward: its slot comes back before the forward ends
        wait_until(lambda: pool.in_flight == 0, 3.0)
        gate.release.set()
        wait_until(lambda: pool.running == 0)
        after = upload_head(port, len(image))
        after.sendall(image)
        assert status_of(read_all(after)) == 200
        after.close()
    assert gate.calls == 2  # the first upload and the last; the queued one never ran
    gone = [r.getMessage() for r in caplog.records if "client gone" in r.getMessage()]
    assert len(gone) == 2 and all("/v1/segment" in line for line in gone)
    assert "Traceback" not in caplog.text and " 500 " not in caplog.text
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_a_disconnect_mid_body_is_one_line(caplog):
    caplog.set_level(logging.INFO, logger="fcnseg.serve")
    with live_server(Gate(), body_timeout_s=5.0) as (port, pool):
        sock = upload_head(port, 10_000)
        sock.sendall(b"\x89PNG" * 10)
        wait_until(lambda: pool.in_flight == 1)
        sock.close()
        wait_until(lambda: pool.in_flight == 0, 3.0)
    gone = [r.getMessage() for r in caplog.records if "client gone" in r.getMessage()]
    assert gone and "client gone after 40 B" in gone[0]
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


@pytest.mark.skipif(not FAST_WEIGHTS.is_file(), reason="shipped weights absent")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_busy_server_stops_promptly(stop):
    """A real `fcnseg serve` subprocess with an upload mid-inference (16 forwards of the fast
    net) stops within a few seconds of Ctrl-C or SIGTERM, without a traceback."""
    port = free_port()
    command = [sys.executable, "-m", "fcnseg.cli", "serve", "--weights", str(FAST_WEIGHTS)]
    command += ["--port", str(port), "--device", "cpu", "--mode", "multiscale"]
    command += ["--scales", *["1.0"] * 16]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    # SIGINT back to its default in the server: a shell's background job (nohup ... &) ignores
    # it, the child would inherit that, and Python then installs no KeyboardInterrupt handler.
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_until(lambda: _health(port) is not None or server.poll() is not None, 120)
        assert server.poll() is None, server.communicate()[1].decode()[-2000:]
        image = png_bytes(480, 640)  # within the default budget; seconds per forward
        client = upload_head(port, len(image), timeout=60)
        client.sendall(image)
        wait_until(lambda: (_health(port) or {}).get("running") == 1, 30)
        server.send_signal(stop)
        started = time.monotonic()
        _, err = server.communicate(timeout=15)
        elapsed = time.monotonic() - started
        client.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert elapsed < 6.0, elapsed
    assert server.returncode in (130, -signal.SIGTERM), server.returncode
    assert b"Traceback" not in err, err.decode()[-2000:]


def _health(port: int) -> dict | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = read_all(sock)
    except OSError:
        return None
    body = response.partition(b"\r\n\r\n")[2]
    return json.loads(body) if status_of(response) == 200 else None
