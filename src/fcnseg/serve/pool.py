"""One loaded model, a fixed pool of inference threads and a bounded queue in front of them.

Why threads, not processes: the model is loaded once and shared (a forward pass in eval mode
under no_grad does not mutate it), and PyTorch releases the GIL inside its kernels, so threads
run forwards side by side. Each thread's intra-op parallelism is capped so that
workers x threads <= cores: two workers each spawning a full-width OpenMP team on a 2-core
machine would be slower than one.

Admission is counted on the event loop (one thread, so a plain integer is race-free): at most
`workers + queue` requests hold a slot; the next is refused at once (HTTP 503 + Retry-After)
rather than waiting unboundedly while its memory and latency grow.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fcnseg.engine.render import palette_image, uncertainty_image
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import UsageError
from fcnseg.inference.crf import crf_available
from fcnseg.inference.crf_params import CrfParams
from fcnseg.inference.runtimes import FixedSizeGraphs


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Segmentation:
    """One image's result: class ids (H x W uint8 or int64), the inference time (the CRF's
    included), the dense CRF's own time (None when it did not run) and, with MC dropout, the
    uncertainty (H x W float in [0, 1]) and its heat-map PNG."""

    labels: np.ndarray
    inference_ms: float
    crf_ms: float | None = None
    uncertainty: np.ndarray | None = None
    uncertainty_png: bytes | None = None


class QueueFull(Exception):
    """Every slot is taken; `retry_after` is a whole-second estimate of when one frees up."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy; retry after {retry_after} s")
        self.retry_after = retry_after


class InferencePool:
    """An inference session behind `workers` threads and a bounded queue.

    Args:
        session: the model, its metadata, inference, runtime and device (InferenceSession).
        workers: inference threads.
        queue: requests allowed to wait beyond the `workers` being served.
        threads: intra-op threads per worker (default: cores // workers, at least 1).
    """

    def __init__(
        self,
        session: InferenceSession,
        workers: int = 1,
        queue: int = 4,
        threads: int | None = None,
    ) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        if queue < 0:
            raise UsageError(f"--queue must be 0 or more, got {queue}")
        self.session = session
        #: The CRF a request with crf=1 runs: the session's default, else the weights' stored
        #: parameters, else DeepLab's (fcnseg.inference.crf_params).
        self.crf_params = session.crf or session.metadata.crf or CrfParams()
        self.workers = workers
        self.queue = queue
        self.capacity = workers + queue
        self.threads = threads or max(1, available_cores() // workers)
        self.in_flight = 0
        #: Work items now running on a worker thread (their forward cannot be interrupted).
        self.running = 0
        self._service_s = 1.0  # running mean of one request's time, for Retry-After
        self._lock = threading.Lock()
        torch.set_num_threads(self.threads)
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="fcnseg-infer",
            initializer=torch.set_num_threads,
            initargs=(self.threads,),
        )

    @property
    def mode(self) -> str:
        return self.session.spec.mode

    @property
    def engine(self) -> str:
        """The runtime's name (what `--engine` resolved to)."""
        return self.session.runtime.name

    # ------------------------------------------------------------------ admission (event loop)
    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue's worth of requests per worker."""
        waves = math.ceil(self.capacity / self.workers)
        return max(1, math.ceil(self._service_s * waves))

    def acquire(self) -> None:
        """Take a slot or raise QueueFull; call from the event loop only."""
        if self.in_flight >= self.capacity:
            raise QueueFull(self.retry_after())
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def full(self) -> bool:
        return self.in_flight >= self.capacity

    async def run(self, function, *args: Any) -> Any:
        """Run `function(*args)` on a worker thread (the caller must hold a slot)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, function, args)

    def _timed(self, function, args: tuple) -> Any:
        """Run on the worker; the running mean of the service time (not the wait before it)
        is what Retry-After multiplies by the queue length."""
        started = time.perf_counter()
        with self._lock:
            self.running += 1
        try:
            return function(*args)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.running -= 1
                self._service_s = 0.8 * self._service_s + 0.2 * elapsed

    def close(self) -> int:
        """Drop the work not yet started; return how many items are still running (a forward
        pass cannot be interrupted, so a prompt stop must not wait for them)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            return self.running

    # ----------------------------------------------------------------------- work (threads)
    def segment(self, values: np.ndarray, crf: bool | None = None) -> Segmentation:
        """Class ids of an H x W x C image of the model's band count (uint8 0-255, or float32
        on the [0, 1] scale: `serve.limits.decode_opened`); runs on a worker thread. `crf` turns
        the dense CRF on or off for this image (None: the server's default, `--crf`/stored)."""
        image = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))
        use_crf = self.session.crf is not None if crf is None else crf
        params = self.crf_params if use_crf else None
        started = time.perf_counter()
        if self.session.mc is None:
            labels, crf_s = self.session.labels_with_crf([image], params)
            elapsed_ms = 1000 * (time.perf_counter() - started)
            crf_ms = 1000 * crf_s if params is not None else None
            return Segmentation(labels=labels[0].numpy(), inference_ms=elapsed_ms, crf_ms=crf_ms)
        # MC dropout: the mean of the passes, refined by this request's CRF (a session copy
        # with its own timer gives the CRF's time).
        session = self.session.with_crf(params)
        labels, uncertainty = session.segment([image])
        elapsed_ms = 1000 * (time.perf_counter() - started)
        crf_ms = 1000 * session.crf_timer.seconds if params is not None else None
        unsure = uncertainty[0].numpy() if uncertainty is not None else None
        heat = io.BytesIO()
        if unsure is not None:
            uncertainty_image(unsure).save(heat, format="PNG", optimize=False)
        return Segmentation(
            labels=labels[0].numpy(),
            inference_ms=elapsed_ms,
            crf_ms=crf_ms,
            uncertainty=unsure,
            uncertainty_png=heat.getvalue() if unsure is not None else None,
        )

    def check_crf_request(self, crf: bool | None) -> None:
        """UsageError in one line when a request asks for the CRF this server cannot run."""
        if crf:
            from fcnseg.engine.session import check_crf_usable

            check_crf_usable(self.session.loaded, "crf=1")

    # ---------------------------------------------------------------------------- describing
    @property
    def classes(self) -> list[str]:
        return list(self.session.metadata.classes)

    @property
    def palette(self) -> list[list[int]]:
        return [list(colour) for colour in self.session.metadata.palette]

    def describe(self) -> dict[str, Any]:
        """What /v1/model answers: enough for a client to draw a legend and reproduce a run."""
        metadata, source = self.session.metadata, self.session.loaded.source
        return {
            "name": metadata.model,
            "weights": source.name if source is not None else None,
            "num_classes": metadata.num_classes,
            "classes": self.classes,
            "palette": self.palette,
            "normalization": metadata.normalization,
            "in_channels": self.session.in_channels,
            "ignore_index": metadata.ignore_index,
            "data_format": metadata.data_format,
            "inference": {"mode": self.mode, "options": _jsonable(self.session.spec.options())},
            "engine": self.engine,
            "device": str(self.session.device),
            "workers": self.workers,
            "threads_per_worker": self.threads,
            "queue": self.queue,
            "mc_dropout": self.session.mc.as_json() if self.session.mc is not None else None,
            "crf": {
                "default": self.session.crf is not None,
                "available": crf_available(),
                "params": self.crf_params.as_dict(),
            },
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def class_shares(labels: np.ndarray, num_classes: int) -> list[float]:
    """Fraction of the pixels given to each class (sums to 1)."""
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=num_classes)
    return (counts[:num_classes] / max(1, labels.size)).tolist()


def mask_png(labels: np.ndarray, palette: list[list[int]]) -> bytes:
    """The class-index PNG (mode "P": pixel values are class ids, shown in class colours)."""
    buffer = io.BytesIO()
    palette_image(labels, palette).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def prepare_graph_sizes(
    pool: InferencePool, sizes: list[tuple[int, int]], max_pixels: int
) -> list[str]:
    """Make the fixed-size ONNX graphs for uploads of these (height, width) sizes now, then
    export nothing more while serving; returns one line per size for the start-up banner.

    Why at start-up: exporting inside a request took 19 s and gigabytes at 2000 x 2000. Each
    size is run once on a blank image with exporting allowed from the first call, so every
    input the runtime sees for it (multi-scale sizes, tiles, flips) gets its graph; a size over
    the pixel budget is refused, since no upload of it would be served.
    """
    for height, width in sizes:
        needed = pool.session.request_pixels(height, width)
        if needed > max_pixels:
            raise UsageError(
                f"--graph-sizes {height}x{width}: needs {needed:,} request pixels, over "
                f"--max-pixels {max_pixels:,}; no upload of that size would be served"
            )
    runnable = pool.session.runnable
    if not isinstance(runnable, FixedSizeGraphs):
        return [f"--graph-sizes ignored: engine {pool.engine} has no fixed-size graphs"] * bool(
            sizes
        )
    lines: list[str] = []
    runnable.after_calls = 1
    for height, width in sizes:
        pool.segment(np.zeros((height, width, pool.session.in_channels), dtype=np.uint8))
        lines.append(f"fixed-size ONNX graphs ready for {height}x{width} uploads")
    runnable.freeze()
    return lines
