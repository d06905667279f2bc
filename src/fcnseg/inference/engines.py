"""Which engine runs a loaded model in `eval`, `predict` and `serve`: PyTorch or onnxruntime.

Why a resolver: onnxruntime runs the shipped CamVid model about twice as fast as PyTorch eager
on this 2-core CPU, but exporting and checking a graph costs seconds to minutes (the VGG16 paper
net: minutes), so doing it on every command would eat the gain. `resolve_engine` therefore
exports once per weights file and export options, checks the graph once against PyTorch, and
reuses it from a cache:

- **Where**: `<weights file>.onnx-cache/` beside the weights file (so the cache goes wherever
  the weights go, and deleting the weights' folder deletes it). When that folder cannot be
  written (read-only install, someone else's files), the user cache
  `$XDG_CACHE_HOME/fcnseg/onnx-cache/` (default `~/.cache/fcnseg/onnx-cache/`) is used instead.
  Nothing is written anywhere else. Both places are looked up when reading.
- **Key**: `<sha256 of the weights file, 16 hex>-<hash of the export options, 8 hex>.onnx`; the
  options are the opset, dynamic axes, precision (fp32 / int8) and this module's cache format
  version. A retrained file with the same name gets a new key; an old entry is never trusted.
- **Check, once**: argmax agreement with PyTorch >= 99.9 % on random inputs at two sizes (neither
  a multiple of 32; dynamic H/W is what whole / sliding / multi-scale inference need). The result
  goes to a JSON sidecar (`<same name>.json`) written after the graph; a later run that finds a
  passed sidecar and its graph opens the graph without exporting or checking. A failed check is
  recorded too, so `auto` falls back to PyTorch at once next time.
- **Fixed-size graphs**: an input size that keeps coming back (the second call at a size, batch
  1, up to 4 sizes a process) gets its own graph exported at that size, cached and checked the
  same way (at its size), because onnxruntime folds the shape arithmetic of a fixed-size graph
  (see FixedSizeGraphs: about 20 % faster for the CamVid models at 360x480).

Engines: "torch" (the nn.Module), "onnxruntime" (fp32 graph), "onnxruntime-int8" (a statically
quantised graph, QDQ, per-channel weights; created only by `fcnseg export --to onnx --int8
--calibrate ROOT`, see `quantize.py`, because it needs calibration images) and "auto":
onnxruntime when it is importable and the device is the CPU, else torch; if the export or its
check fails, auto falls back to torch and says why. auto never picks int8: the accuracy change is
the user's decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.errors import FcnsegError, UsageError
from fcnseg.export import DEFAULT_EXAMPLE_SIZE, InferenceOnly
from fcnseg.io_utils import atomic_write

ENGINE_CHOICES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: Bump when the cached files' meaning changes (export code, check rule): old entries go stale.
CACHE_FORMAT_VERSION: int = 2
DEFAULT_OPSET: int = 17
#: Random-input sizes of the one-time check: neither a multiple of 32, portrait and landscape.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((203, 257), (255, 189))
MIN_ARGMAX_AGREEMENT: float = 0.999
#: Input sizes per process that get their own fixed-size graph (see FixedSizeGraphs).
MAX_FIXED_SIZES: int = 4
#: Calls at one size before its fixed-size graph is made: a size seen once stays dynamic.
FIXED_SIZE_AFTER_CALLS: int = 2
CACHE_SUFFIX: str = ".onnx-cache"
INSTALL_HINT: str = "pip install 'fcnseg[export]'"

Log = Callable[[str], None]


class EngineError(FcnsegError):
    """An engine that was asked for by name cannot be used; the message says why and the fix."""


def _announce(message: str) -> None:
    """Progress notes go to stdout: stderr is the one-line error channel of the CLI."""
    print(message, file=sys.stdout, flush=True)


# ------------------------------------------------------------------------------ cache keys


@dataclass(frozen=True)
class ExportOptions:
    """What, besides the weights, decides the exported graph (and so its cache key)."""

    opset: int = DEFAULT_OPSET
    dynamic: bool = True
    int8: bool = False
    #: (height, width) of a fixed-size graph (batch 1); None for the dynamic graph.
    size: tuple[int, int] | None = None

    def key(self) -> str:
        """8 hex digits of the options plus the cache format version."""
        payload = json.dumps({**asdict(self), "format": CACHE_FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:8]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's bytes (memoised per process by path, size and mtime)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def user_cache_dir() -> Path:
    """The fallback cache: `$XDG_CACHE_HOME/fcnseg/onnx-cache` (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fcnseg" / "onnx-cache"


def beside_cache_dir(weights_path: str | os.PathLike[str]) -> Path:
    """The preferred cache: `<weights file name>.onnx-cache/` in the weights' folder."""
    weights_path = Path(weights_path)
    return weights_path.parent / f"{weights_path.name}{CACHE_SUFFIX}"


def folder_writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (made if missing): tried, not guessed, since
    permission bits say nothing for root, read-only mounts or ACLs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class CacheEntry:
    """One cached graph and its sidecar (the check's record)."""

    onnx: Path
    sidecar: Path

    @classmethod
    def in_folder(cls, folder: Path, name: str) -> CacheEntry:
        return cls(folder / f"{name}.onnx", folder / f"{name}.json")

    def record(self) -> dict[str, Any] | None:
        """The sidecar's record when it belongs to an existing graph of the recorded size."""
        try:
            record = json.loads(self.sidecar.read_text())
            if not isinstance(record, dict):
                return None
            if self.onnx.stat().st_size != record.get("onnx_bytes"):
                return None  # graph replaced or truncated after the check: not trusted
        except (OSError, ValueError):
            return None
        return record


def cache_name(weights_path: str | os.PathLike[str], options: ExportOptions) -> str:
    """`<sha256 of the weights, 16 hex>-<options key>`: the cache file's stem."""
    return f"{weights_digest(weights_path)[:16]}-{options.key()}"


def find_cached(weights_path: str | os.PathLike[str], options: ExportOptions) -> CacheEntry | None:
    """The cached entry for these weights and options with a readable record, beside the weights
    first, then in the user cache; None when neither has one."""
    name = cache_name(weights_path, options)
    for folder in (beside_cache_dir(weights_path), user_cache_dir()):
        entry = CacheEntry.in_folder(folder, name)
        if entry.record() is not None:
            return entry
    return None


def writable_entry(weights_path: str | os.PathLike[str], options: ExportOptions) -> CacheEntry:
    """Where a new entry goes: beside the weights when that folder is writable, else the user
    cache. Raises OSError when neither can be written."""
    name = cache_name(weights_path, options)
    for folder in (beside_cache_dir(weights_path), user_cache_dir()):
        if folder_writable(folder):
            return CacheEntry.in_folder(folder, name)
    raise PermissionError(
        f"cannot write an ONNX cache beside {weights_path} nor in {user_cache_dir()}; "
        "set XDG_CACHE_HOME to a writable folder or use --engine torch"
    )


def cache_record(
    weights_path: str | Path,
    options: ExportOptions,
    check: dict[str, Any],
    started: float,
    **details: Any,
) -> dict[str, Any]:
    """The sidecar's content for a graph made from `weights_path`: what it was made from, how it
    was checked, when, in how long (since `started`, a perf_counter value) and by which versions.

    One shape for the fp32 export and the int8 quantisation, so that a reader of the cache (and
    `resolve_engine`'s reuse rule) needs to know only one."""
    return {
        "weights": str(Path(weights_path).resolve()),
        "weights_sha256": weights_digest(weights_path),
        "options": asdict(options),
        **details,
        "check": check,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 2),
        "versions": _versions(),
    }


def write_record(entry: CacheEntry, record: dict[str, Any]) -> None:
    """Write the sidecar (atomically) with the graph's size, so a replaced graph is noticed."""
    record = {**record, "onnx_bytes": entry.onnx.stat().st_size}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write(entry.sidecar, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------------- check


def _heads(output: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
    return output if isinstance(output, dict) else {"logits": output}


def agreement_check(
    model: nn.Module,
    runnable: Callable[[Tensor], Any],
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    seed: int = 0,
    in_channels: int = 3,
) -> dict[str, Any]:
    """Argmax agreement and max |logit difference| of `runnable` against `model` on random
    inputs at `sizes` (the worst head and size counts). Returns the record for the sidecar."""
    generator = torch.Generator().manual_seed(seed)
    worst_agreement, worst_diff = 1.0, 0.0
    per_size: list[dict[str, Any]] = []
    with torch.no_grad():
        for height, width in sizes:
            images = torch.randn(1, in_channels, height, width, generator=generator)
            reference, candidate = _heads(model(images)), _heads(runnable(images))
            if len(reference) != len(candidate):
                raise EngineError(
                    f"exported graph has {len(candidate)} outputs, not {len(reference)}"
                )
            for ref, cand in zip(reference.values(), candidate.values(), strict=True):
                if tuple(ref.shape) != tuple(cand.shape):
                    raise EngineError(
                        f"exported graph gives shape {tuple(cand.shape)} at {height}x{width}, "
                        f"PyTorch {tuple(ref.shape)}"
                    )
                agreement = float((ref.argmax(1) == cand.argmax(1)).float().mean())
                diff = float((ref.float() - cand.float()).abs().max())
                worst_agreement = min(worst_agreement, agreement)
                worst_diff = max(worst_diff, diff)
                per_size.append({"size": [height, width], "agreement": agreement, "max_abs": diff})
    return {
        "passed": worst_agreement >= MIN_ARGMAX_AGREEMENT,
        "argmax_agreement": worst_agreement,
        "max_abs_diff": worst_diff,
        "threshold": MIN_ARGMAX_AGREEMENT,
        "inputs": "random normal",
        "per_size": per_size,
    }


# --------------------------------------------------------------------------------- engines


@dataclass
class ResolvedEngine:
    """The runnable for predict_logits and how it was chosen (printed, stored in eval JSON)."""

    runnable: Any
    #: "torch", "onnxruntime" or "onnxruntime-int8".
    name: str
    requested: str
    #: Why this engine: auto's reason, or the fallback's cause.
    reason: str = ""
    onnx_path: Path | None = None
    #: The sidecar's record (check result, export options, when), for ONNX engines.
    record: dict[str, Any] | None = None
    #: "cache" when an earlier check was reused, "exported" when this call exported + checked.
    origin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the terminal: engine, graph file, check and reason."""
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


def _wrap(runnable: Any, model: nn.Module) -> Any:
    """Give the ORT session the model attributes evaluation reads (input channels of RGB-D
    models, the heads of multi-head models)."""
    for name in ("in_channels", "head_classes", "num_classes"):
        if hasattr(model, name):
            setattr(runnable, name, getattr(model, name))
    return runnable


def _open(path: Path, model: nn.Module, threads: int | None) -> Any:
    from fcnseg.export import OnnxRuntimeModel

    return _wrap(OnnxRuntimeModel(path, threads=threads), model)


def export_checked(
    model: nn.Module,
    weights_path: str | os.PathLike[str],
    options: ExportOptions = ExportOptions(),
    *,
    threads: int | None = None,
    log: Log | None = _announce,
) -> tuple[Any, CacheEntry, dict[str, Any], str]:
    """(ORT runnable, cache entry, record, "cache" | "exported") for the fp32 graph of `model`
    whose weights are `weights_path`: reused when checked before, else exported and checked once.

    Raises EngineError when the (new or recorded) check failed.
    """
    from fcnseg.export import export_onnx

    if options.int8:
        raise UsageError("export_checked makes fp32 graphs; int8 ones come from fcnseg export")
    model = model.eval()
    cached = find_cached(weights_path, options)
    if cached is not None:
        record = cached.record() or {}
        if not (record.get("check") or {}).get("passed"):
            raise EngineError(_failed_message(record, cached))
        return _open(cached.onnx, model, threads), cached, record, "cache"
    entry = writable_entry(weights_path, options)
    if log:
        what = "" if options.size is None else f" at fixed size {options.size[0]}x{options.size[1]}"
        log(f"fcnseg: exporting {Path(weights_path).name} to ONNX once{what}: {entry.onnx}")
    started = time.perf_counter()
    export_onnx(
        model,
        entry.onnx,
        opset=options.opset,
        dynamic=options.dynamic and options.size is None,
        example_size=options.size or DEFAULT_EXAMPLE_SIZE,
        check_sizes=[],
    )
    # A fixed-size graph is checked at its size, on two random inputs.
    check_sizes = CHECK_SIZES if options.size is None else (options.size, options.size)
    runnable = _open(entry.onnx, model, threads)
    check = agreement_check(model, runnable, check_sizes, in_channels=int(model.in_channels))
    record = cache_record(weights_path, options, check, started, cache_format=CACHE_FORMAT_VERSION)
    write_record(entry, record)
    if not check["passed"]:
        raise EngineError(_failed_message(record, entry))
    return runnable, entry, record, "exported"


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
    """

    def __init__(
        self,
        model: nn.Module,
        weights_path: str | os.PathLike[str],
        dynamic: Any,
        *,
        opset: int = DEFAULT_OPSET,
        threads: int | None = None,
        log: Log | None = _announce,
        max_sizes: int = MAX_FIXED_SIZES,
        after_calls: int = FIXED_SIZE_AFTER_CALLS,
    ) -> None:
        self.model, self.weights_path, self.dynamic = model, weights_path, dynamic
        self.opset, self.threads, self.log = opset, threads, log
        self.max_sizes, self.after_calls = max_sizes, after_calls
        #: size -> its graph, or None when it could not be made (that size stays dynamic).
        self.graphs: dict[tuple[int, int], Any | None] = {}
        self.calls: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        _wrap(self, model)

    def graph_for(self, images: Tensor) -> Any:
        """The runnable for this batch: its size's fixed graph when there is (or now is) one."""
        if images.dim() != 4 or images.shape[0] != 1:
            return self.dynamic
        size = (int(images.shape[-2]), int(images.shape[-1]))
        with self._lock:
            if size not in self.graphs:
                self.calls[size] = self.calls.get(size, 0) + 1
                if self.calls[size] < self.after_calls or len(self.graphs) >= self.max_sizes:
                    return self.dynamic
                self.graphs[size] = self._make(size)
            return self.graphs[size] or self.dynamic

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


def _failed_message(record: dict[str, Any], entry: CacheEntry) -> str:
    check = record.get("check") or {}
    return (
        f"{entry.onnx}: the ONNX graph disagrees with PyTorch (argmax agreement "
        f"{100 * float(check.get('argmax_agreement', 0.0)):.3f}% < "
        f"{100 * MIN_ARGMAX_AGREEMENT:.1f}%, recorded in {entry.sidecar.name}); use --engine torch"
    )


def _versions() -> dict[str, str]:
    import onnxruntime

    from fcnseg import __version__

    return {
        "fcnseg": __version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def open_int8(
    model: nn.Module,
    weights_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
) -> tuple[Any, CacheEntry, dict[str, Any]]:
    """The cached int8 graph of these weights (made by `fcnseg export --int8`), opened."""
    options = ExportOptions(opset=opset, int8=True)
    entry = find_cached(weights_path, options)
    if entry is None:
        raise EngineError(
            f"no int8 graph cached for {weights_path} (key {cache_name(weights_path, options)}); "
            f"make it once with `fcnseg export --weights {weights_path} --to onnx --int8 "
            "--calibrate TRAIN_ROOT --format FORMAT --out FILE.onnx`"
        )
    record = entry.record() or {}
    if not (record.get("check") or {}).get("passed"):
        check = record.get("check") or {}
        raise EngineError(
            f"{entry.onnx}: the int8 graph failed its check (argmax agreement "
            f"{100 * float(check.get('argmax_agreement', 0.0)):.2f}%); use --engine onnxruntime"
        )
    return _open(entry.onnx, model, threads), entry, record


def resolve_engine(
    model: nn.Module,
    weights_path: str | os.PathLike[str] | None,
    engine: str = "auto",
    *,
    device: torch.device | str = "cpu",
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
    log: Log | None = _announce,
) -> ResolvedEngine:
    """The runnable `predict_logits` should call for `model` (loaded from `weights_path`).

    Args:
        engine: "auto" | "torch" | "onnxruntime" | "onnxruntime-int8" (see the module doc).
        weights_path: the file the weights were read from (safetensors or checkpoint): its hash
            keys the cache, and the cache lives beside it. None: no cache, so auto is torch.
        device: the torch device; onnxruntime runs on the CPU here, so auto picks torch for CUDA
            and naming an ONNX engine with a CUDA device is a UsageError.
        log: where the one-time export is announced (stdout by default; None: silent).

    Raises UsageError / EngineError for a named engine that cannot be used; auto never raises
    for the engine's sake, it falls back to torch with the reason in `.reason`.
    """
    if engine not in ENGINE_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    device = torch.device(device)
    if engine == "torch":
        return ResolvedEngine(model.eval(), "torch", engine, "asked for")
    obstacle = None
    if device.type != "cpu":
        obstacle = f"onnxruntime runs on the CPU here and the device is {device}"
    elif not onnxruntime_available():
        obstacle = f"onnxruntime is not installed ({INSTALL_HINT})"
    elif weights_path is None or not Path(weights_path).is_file():
        obstacle = "no weights file to key the ONNX cache by"
    if engine == "auto":
        if obstacle is not None:
            return ResolvedEngine(model.eval(), "torch", engine, obstacle)
        try:
            runnable, entry, record, origin = export_checked(
                model, weights_path, ExportOptions(opset=opset), threads=threads, log=log
            )
        except Exception as error:  # noqa: BLE001 - auto falls back on any export failure
            reason = " ".join(str(error).split()) or type(error).__name__
            return ResolvedEngine(model.eval(), "torch", engine, f"onnxruntime unusable: {reason}")
        return ResolvedEngine(
            FixedSizeGraphs(model, weights_path, runnable, opset=opset, threads=threads, log=log),
            "onnxruntime",
            engine,
            "auto: onnxruntime installed",
            entry.onnx,
            record,
            origin,
        )
    if obstacle is not None:
        raise UsageError(f"--engine {engine}: {obstacle}")
    if engine == "onnxruntime":
        runnable, entry, record, origin = export_checked(
            model, weights_path, ExportOptions(opset=opset), threads=threads, log=log
        )
        runnable = FixedSizeGraphs(
            model, weights_path, runnable, opset=opset, threads=threads, log=log
        )
        return ResolvedEngine(runnable, "onnxruntime", engine, "", entry.onnx, record, origin)
    runnable, entry, record = open_int8(model, weights_path, opset=opset, threads=threads)
    return ResolvedEngine(runnable, "onnxruntime-int8", engine, "", entry.onnx, record, "cache")
