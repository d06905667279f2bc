"""Which runtime runs a loaded model in `eval`, `predict` and `serve`: PyTorch or onnxruntime.

Why a choice: onnxruntime runs the shipped CamVid model about twice as fast as PyTorch eager on
this 2-core CPU, but only on a graph exported and checked once (`fcnseg.inference.graph_cache`).

Runtimes (`--engine`, the words of `fcnseg.choices.RUNTIME_CHOICES`): "torch" (the nn.Module),
"onnxruntime" (fp32 graph, plus fixed-size graphs for sizes that keep coming back, see
FixedSizeGraphs), "onnxruntime-int8" (a statically quantised graph, QDQ, per-channel weights;
created only by `fcnseg export --to onnx --int8 --calibrate ROOT`, see `quantize.py`, because it
needs calibration images) and "auto": onnxruntime when it is importable and the device is the
CPU, else torch; if the export or its check fails, auto falls back to torch and says why. auto
never picks int8: the accuracy change is the user's decision.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.choices import RUNTIME_CHOICES
from fcnseg.errors import UsageError
from fcnseg.exported import InferenceOnly
from fcnseg.inference.graph_cache import (
    DEFAULT_OPSET,
    FIXED_SIZE_AFTER_CALLS,
    MAX_FIXED_SIZES,
    ExportOptions,
    Log,
    announce,
    export_checked,
    open_int8,
    wrap_like_model,
)

INSTALL_HINT: str = "pip install 'fcnseg[export]'"
#: The runtimes that run on onnxruntime (on the CPU here).
ONNX_RUNTIMES: tuple[str, ...] = ("onnxruntime", "onnxruntime-int8")


@dataclass
class ResolvedRuntime:
    """The runnable for predict_logits and how it was chosen (printed, stored in eval JSON)."""

    runnable: Any
    #: "torch", "onnxruntime" or "onnxruntime-int8".
    name: str
    requested: str
    #: Why this runtime: auto's reason, or the fallback's cause.
    reason: str = ""
    onnx_path: Path | None = None
    #: The sidecar's record (check result, export options, when), for ONNX runtimes.
    record: dict[str, Any] | None = None
    #: "cache" when an earlier check was reused, "exported" when this call exported + checked.
    origin: str = ""

    def summary(self) -> str:
        """One line for the terminal (`engine: NAME`, as the --engine flag says), graph file,
        check and reason."""
        parts = [f"engine: {self.name}"]
        if self.onnx_path is not None:
            check = (self.record or {}).get("check") or {}
            agreement = check.get("argmax_agreement")
            detail = f"{self.onnx_path} ({self.origin}"
            if agreement is not None:
                detail += f", argmax agreement with PyTorch {100 * agreement:.2f}%"
            parts.append(detail + ")")
        if self.reason:
            parts.append(f"[{self.reason}]")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The eval JSON's `engine_details`."""
        check = (self.record or {}).get("check")
        return {
            "requested": self.requested,
            "reason": self.reason or None,
            "onnx": str(self.onnx_path) if self.onnx_path else None,
            "origin": self.origin or None,
            "check": check,
            "fixed_size_graphs": (
                self.runnable.fixed_sizes if isinstance(self.runnable, FixedSizeGraphs) else []
            ),
        }


def onnxruntime_available() -> bool:
    """Whether onnx and onnxruntime import (the `export` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class FixedSizeGraphs(InferenceOnly):
    """The fp32 onnxruntime engine: the dynamic graph, plus a fixed-size graph for each input
    size that keeps coming back.

    Why: with symbolic height and width, onnxruntime keeps the shape arithmetic in the graph
    (TF-"same" pads computed per call, crops, resize sizes) and cannot fold the constant pads
    into the convolutions; a graph exported at one size has all of that folded. On this 2-core
    CPU the fast CamVid model at 360x480 runs about 20 % faster that way (benchmarks/RESULTS.md).
    Exporting costs seconds, so a size gets its graph only on its FIXED_SIZE_AFTER_CALLS-th call
    (a folder of odd-sized photos, or one upload to `serve`, never pays for it), for at most
    MAX_FIXED_SIZES sizes per process, batch 1 only. Each graph goes through the same cache and
    one-time check as the dynamic one (at its own size); if its export or check fails, that
    size stays on the dynamic graph and the reason is logged once. Calls wait while a graph is
    being made (once per size; `serve`'s other threads too), which keeps the bookkeeping simple.

    `freeze()` stops all exporting from then on: `serve` makes the graphs of the sizes it was
    given at start-up and then freezes, so no request ever waits for (or pays memory for) an
    export; a size without a graph is run by the dynamic graph, logged once per size.
    """

    #: Sizes whose "no graph, frozen" line was logged (bounded: sizes come from uploads).
    MAX_LOGGED_SIZES = 64

    def __init__(
        self,
        model: nn.Module,
        weights_path: str | os.PathLike[str],
        dynamic: Any,
        *,
        opset: int = DEFAULT_OPSET,
        threads: int | None = None,
        log: Log | None = announce,
        max_sizes: int = MAX_FIXED_SIZES,
        after_calls: int = FIXED_SIZE_AFTER_CALLS,
    ) -> None:
        self.model, self.weights_path, self.dynamic = model, weights_path, dynamic
        self.opset, self.threads, self.log = opset, threads, log
        self.max_sizes, self.after_calls = max_sizes, after_calls
        #: size -> its graph, or None when it could not be made (that size stays dynamic).
        self.graphs: dict[tuple[int, int], Any | None] = {}
        self.calls: dict[tuple[int, int], int] = {}
        self.frozen = False
        self._logged: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        wrap_like_model(self, model)

    def freeze(self) -> None:
        """Export nothing more: sizes without a graph now stay on the dynamic graph."""
        with self._lock:
            self.frozen = True
            self.calls.clear()

    def graph_for(self, images: Tensor) -> Any:
        """The runnable for this batch: its size's fixed graph when there is (or now is) one."""
        if images.dim() != 4 or images.shape[0] != 1:
            return self.dynamic
        size = (int(images.shape[-2]), int(images.shape[-1]))
        with self._lock:
            if size not in self.graphs and self.frozen:
                self._log_unprepared(size)
                return self.dynamic
            if size not in self.graphs:
                self.calls[size] = self.calls.get(size, 0) + 1
                if self.calls[size] < self.after_calls or len(self.graphs) >= self.max_sizes:
                    return self.dynamic
                self.graphs[size] = self._make(size)
            return self.graphs[size] or self.dynamic

    def _log_unprepared(self, size: tuple[int, int]) -> None:
        if self.log and size not in self._logged and len(self._logged) < self.MAX_LOGGED_SIZES:
            self._logged.add(size)
            self.log(
                f"fcnseg: input {size[0]}x{size[1]} has no fixed-size graph (none is exported "
                "while serving; see serve --graph-sizes): the dynamic ONNX graph runs it"
            )

    def _make(self, size: tuple[int, int]) -> Any | None:
        options = ExportOptions(opset=self.opset, dynamic=False, size=size)
        try:
            runnable, *_ = export_checked(
                self.model, self.weights_path, options, threads=self.threads, log=self.log
            )
        except Exception as error:  # noqa: BLE001 - the dynamic graph still serves this size
            if self.log:
                reason = " ".join(str(error).split()) or type(error).__name__
                self.log(f"fcnseg: no fixed-size graph for {size[0]}x{size[1]}: {reason}")
            return None
        return runnable

    def __call__(self, images: Tensor) -> Any:
        return self.graph_for(images)(images)

    @property
    def fixed_sizes(self) -> list[list[int]]:
        """Sizes now served by their own graph (for the eval JSON)."""
        return [list(size) for size, graph in self.graphs.items() if graph is not None]


def _obstacle(device: torch.device, weights_path: str | os.PathLike[str] | None) -> str | None:
    """Why onnxruntime cannot run this model here, or None when it can."""
    if device.type != "cpu":
        return f"onnxruntime runs on the CPU here and the device is {device}"
    if not onnxruntime_available():
        return f"onnxruntime is not installed ({INSTALL_HINT})"
    if weights_path is None or not Path(weights_path).is_file():
        return "no weights file to key the ONNX cache by"
    return None


def _onnxruntime(
    model: nn.Module,
    weights_path: str | os.PathLike[str],
    requested: str,
    reason: str,
    *,
    opset: int,
    threads: int | None,
    log: Log | None,
) -> ResolvedRuntime:
    """The fp32 graph (cached, checked once) behind FixedSizeGraphs."""
    options = ExportOptions(opset=opset)
    runnable, entry, record, origin = export_checked(
        model, weights_path, options, threads=threads, log=log
    )
    router = FixedSizeGraphs(model, weights_path, runnable, opset=opset, threads=threads, log=log)
    return ResolvedRuntime(router, "onnxruntime", requested, reason, entry.onnx, record, origin)


def resolve_runtime(
    model: nn.Module,
    weights_path: str | os.PathLike[str] | None,
    runtime: str = "auto",
    *,
    device: torch.device | str = "cpu",
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
    log: Log | None = announce,
) -> ResolvedRuntime:
    """The runnable `predict_logits` should call for `model` (loaded from `weights_path`).

    Args:
        runtime: "auto" | "torch" | "onnxruntime" | "onnxruntime-int8" (see the module doc).
        weights_path: the file the weights were read from (safetensors or checkpoint): its hash
            keys the cache, and the cache lives beside it. None: no cache, so auto is torch.
        device: the torch device; onnxruntime runs on the CPU here, so auto picks torch for CUDA
            and naming an ONNX runtime with a CUDA device is a UsageError.
        log: where the one-time export is announced (stdout by default; None: silent).

    Raises UsageError / RuntimeUnusable for a named runtime that cannot be used; auto never
    raises for the runtime's sake, it falls back to torch with the reason in `.reason`.
    """
    if runtime not in RUNTIME_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(RUNTIME_CHOICES)}, got {runtime!r}")
    device = torch.device(device)
    if runtime == "torch":
        return ResolvedRuntime(model.eval(), "torch", runtime, "asked for")
    obstacle = _obstacle(device, weights_path)
    graph: dict[str, Any] = {"opset": opset, "threads": threads, "log": log}
    if runtime == "auto":
        if obstacle is not None:
            return ResolvedRuntime(model.eval(), "torch", runtime, obstacle)
        try:
            return _onnxruntime(
                model, weights_path, runtime, "auto: onnxruntime installed", **graph
            )
        except Exception as error:  # noqa: BLE001 - auto falls back on any export failure
            reason = " ".join(str(error).split()) or type(error).__name__
            return ResolvedRuntime(
                model.eval(), "torch", runtime, f"onnxruntime unusable: {reason}"
            )
    if obstacle is not None:
        raise UsageError(f"--engine {runtime}: {obstacle}")
    if runtime == "onnxruntime":
        return _onnxruntime(model, weights_path, runtime, "", **graph)
    runnable, entry, record = open_int8(model, weights_path, opset=opset, threads=threads)
    return ResolvedRuntime(runnable, "onnxruntime-int8", runtime, "", entry.onnx, record, "cache")
