"""Bounded load test of `fcnseg serve` on loopback: latency percentiles, throughput, statuses.

Starts the server (shipped CamVid weights unless --url points at a running one), then sends
--requests POST /v1/segment with --concurrency in flight from a thread pool, each a sample scene
resized to --size, and stops by itself: after the last request or at --max-seconds, whichever
comes first (requests not yet sent are skipped and counted). A healthy server answers only 200
and, when its queue is full, 503 with Retry-After; any other 5xx is a failure (exit 1). By
default each client behaves well: after a 503 it waits Retry-After seconds and tries again
(every attempt is counted); --no-retry sends the next request at once, to see raw overload.

    .venv/bin/python benchmarks/serve_load.py --requests 200 --concurrency 8 --size 240 320
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "camvid_fcn4s_lite0.safetensors"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="load.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def one_request(url: str, body: bytes, content_type: str) -> tuple[int, float, str | None]:
    started = time.perf_counter()
    request = urllib.request.Request(
        url + "/v1/segment", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status, retry = response.status, None
    except urllib.error.HTTPError as error:
        error.read()
        status, retry = error.code, error.headers.get("Retry-After")
    except OSError:
        status, retry = 0, None  # connection refused / reset / timeout
    return status, time.perf_counter() - started, retry


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument(
        "--server-args", default="--mode whole --engine torch --workers 1 --queue 4"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-retry", action="store_true", help="do not honour Retry-After")
    args = parser.parse_args()

    from fcnseg.serve.samples import sample_array

    buffer = io.BytesIO()
    height, width = args.size
    Image.fromarray(sample_array(0)).resize((width, height)).save(buffer, format="PNG")
    body, content_type = multipart(buffer.getvalue())

    process = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "fcnseg.cli", "serve", "--weights", str(args.weights)]
        command += ["--port", str(port), *args.server_args.split()]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.3)
        one_request(url, body, content_type)  # warm-up (first forward allocates)

    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = started + args.max_seconds
    skipped = 0

    def worker(_: int) -> None:
        nonlocal skipped
        if time.perf_counter() > stop_at:
            with lock:
                skipped += 1
            return
        while True:
            outcome = one_request(url, body, content_type)
            with lock:
                results.append(outcome)
            status, _, retry = outcome
            if status != 503 or args.no_retry:
                return
            wait = float(retry or 1)
            if time.perf_counter() + wait > stop_at:
                return
            time.sleep(wait)

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(worker, range(args.requests)))
    finally:
        elapsed = time.perf_counter() - started
        if process is not None:
            process.terminate()
            process.wait(timeout=30)

    statuses = Counter(status for status, _, _ in results)
    ok = [seconds for status, seconds, _ in results if status == 200]
    busy = [seconds for status, seconds, _ in results if status == 503]
    retry_after = sorted({value for status, _, value in results if status == 503 and value})
    summary = {
        "url": url,
        "image": f"{width}x{height} PNG ({len(buffer.getvalue())} bytes)",
        "server_args": args.server_args if process is not None else "(external)",
        "requests": args.requests,
        "attempts_sent": len(results),
        "honours_retry_after": not args.no_retry,
        "skipped_after_deadline": skipped,
        "concurrency": args.concurrency,
        "wall_s": round(elapsed, 2),
        "attempts_per_s": round(len(results) / elapsed, 2),
        "ok_per_s": round(len(ok) / elapsed, 2),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "latency_200_p50_ms": round(1000 * percentile(ok, 50), 1),
        "latency_200_p95_ms": round(1000 * percentile(ok, 95), 1),
        "latency_503_p50_ms": round(1000 * percentile(busy, 50), 1),
        "retry_after_values": retry_after,
        "cpu_cores": os.cpu_count(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    bad = {status for status in statuses if status >= 500 and status != 503} | (
        {0} if 0 in statuses else set()
    )
    if bad:
        raise SystemExit(f"unexpected statuses: {sorted(bad)}")


if __name__ == "__main__":
    main()
