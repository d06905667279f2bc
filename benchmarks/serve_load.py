"""Bounded load test of `fcnseg serve` on loopback: latency percentiles, throughput, statuses.

Starts the server (shipped CamVid weights unless --url points at a running one), then sends
--requests POST /v1/segment with --concurrency in flight from a thread pool, each a sample scene
resized to --size, and stops by itself: after the last request or at --max-seconds, whichever
comes first (requests not yet sent are skipped and counted). A healthy server answers only 200
and, when its queue is full, 503 with Retry-After; any other 5xx is a failure (exit 1). By
default each client behaves well: after a 503 it waits Retry-After seconds and tries again
(every attempt is counted); --no-retry sends the next request at once, to see raw overload.

    .venv/bin/python benchmarks/serve_load.py --requests 200 --concurrency 8 --size 240 320

Memory: the server's resident memory is sampled from /proc while it runs; its peak (VmHWM) is
reported as `server_peak_rss_mb`, with the idle RSS after start-up. `--mix 360x480,2000x2000`
sends those sizes in turn instead of --size, and `--baseline-max-pixels N` first runs the same
load against a server whose pixel budget is N (e.g. 10000000000: the budget disabled), then
against --server-args as given, and reports both with the ratio of their peaks:

    .venv/bin/python benchmarks/serve_load.py --weights weights/camvid_fcn4s_lite0_fast.safetensors \
        --mix 360x480,2000x2000 --requests 8 --concurrency 4 --baseline-max-pixels 10000000000
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


def one_request(
    url: str, body: bytes, content_type: str, timeout: float = 60.0
) -> tuple[int, float, str | None]:
    started = time.perf_counter()
    request = urllib.request.Request(
        url + "/v1/segment", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
    parser.add_argument("--client-timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--mix", default="", help="image sizes HxW,HxW sent in turn")
    parser.add_argument(
        "--baseline-max-pixels", type=int, help="first run a server with this --max-pixels"
    )
    args = parser.parse_args()

    from fcnseg.serve.samples import sample_array

    sizes = [tuple(int(n) for n in item.split("x")) for item in args.mix.split(",") if item]
    sizes = sizes or [tuple(args.size)]
    bodies: list[tuple[bytes, str, int]] = []
    for height, width in sizes:
        buffer = io.BytesIO()
        Image.fromarray(sample_array(0)).resize((width, height)).save(buffer, format="PNG")
        bodies.append((*multipart(buffer.getvalue()), len(buffer.getvalue())))
    runs = []
    if args.baseline_max_pixels:
        baseline = f"{args.server_args} --max-pixels {args.baseline_max_pixels}"
        runs.append(("baseline", load_run(args, baseline, sizes, bodies)))
    runs.append(("budget", load_run(args, args.server_args, sizes, bodies)))
    summary = runs[0][1] if len(runs) == 1 else dict(runs)
    if len(runs) == 2:
        summary["peak_rss_ratio_budget_to_baseline"] = round(
            runs[1][1]["server_peak_rss_mb"] / runs[0][1]["server_peak_rss_mb"], 3
        )
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    bad = set().union(*(set(run["unexpected_statuses"]) for _, run in runs))
    if bad:
        raise SystemExit(f"unexpected statuses: {sorted(bad)}")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/PID/status memory field in MiB (VmRSS now, VmHWM the peak); 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(args: argparse.Namespace, server_args: str) -> tuple[subprocess.Popen, str]:
    """`fcnseg serve` on a free loopback port, once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fcnseg.cli", "serve", "--weights", str(args.weights)]
    command += ["--port", str(port), *server_args.split()]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("the server did not start") from None
            time.sleep(0.3)


def load_run(
    args: argparse.Namespace, server_args: str, sizes: list, bodies: list
) -> dict[str, object]:
    """One load run (a server of its own unless --url) and its summary."""
    process = None
    url = args.url
    if url is None:
        process, url = start_server(args, server_args)
        one_request(url, *bodies[0][:2])  # warm-up (first forward allocates)
    idle_mb = rss_mb(process.pid) if process is not None else 0.0
    sampled: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while process is not None and not sampling.wait(0.2):
            sampled.append(rss_mb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = started + args.max_seconds
    skipped = 0

    def worker(index: int) -> None:
        nonlocal skipped
        body, content_type, _ = bodies[index % len(bodies)]
        if time.perf_counter() > stop_at:
            with lock:
                skipped += 1
            return
        while True:
            outcome = one_request(url, body, content_type, args.client_timeout)
            with lock:
                results.append((*outcome, index % len(bodies)))
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
        sampling.set()
        peak_mb = rss_mb(process.pid, "VmHWM") if process is not None else 0.0
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return summarise(args, server_args, sizes, bodies, results, elapsed, skipped) | {
        "server_idle_rss_mb": round(idle_mb),
        "server_peak_rss_mb": round(peak_mb),
        "server_rss_samples_max_mb": round(max(sampled, default=0.0)),
    }


def summarise(args, server_args, sizes, bodies, results, elapsed, skipped) -> dict[str, object]:
    """Statuses, latencies and throughput of one run, per image size."""
    statuses = Counter(status for status, *_ in results)
    ok = [seconds for status, seconds, *_ in results if status == 200]
    busy = [seconds for status, seconds, *_ in results if status == 503]
    retry_after = sorted({value for status, _, value, _ in results if status == 503 and value})
    per_size = {}
    for index, (height, width) in enumerate(sizes):
        mine = [r for r in results if r[3] == index]
        per_size[f"{width}x{height}"] = {
            "png_bytes": bodies[index][2],
            "status_counts": {str(k): v for k, v in sorted(Counter(r[0] for r in mine).items())},
            "latency_200_p50_ms": round(
                1000 * percentile([r[1] for r in mine if r[0] == 200], 50), 1
            ),
        }
    bad = {status for status in statuses if status >= 500 and status != 503} | (
        {0} if 0 in statuses else set()
    )
    return {
        "server_args": server_args if args.url is None else "(external)",
        "images": per_size,
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
        "unexpected_statuses": sorted(bad),
    }


if __name__ == "__main__":
    main()
