"""The cache of checked ONNX graphs behind the onnxruntime runtimes of `eval`, `predict`, `serve`.

Why a cache: exporting and checking a graph costs seconds to minutes (the VGG16 paper net:
minutes), so doing it on every command would eat onnxruntime's gain. A graph is therefore
exported once per weights file and export options, checked once against PyTorch, and reused:

- **Where**: `<weights file>.onnx-cache/` beside the weights file (so the cache goes wherever
  the weights go, and deleting the weights' folder deletes it). When that folder cannot be
  written (read-only install, someone else's files), the user cache
  `$XDG_CACHE_HOME/fcnseg/onnx-cache/` (default `~/.cache/fcnseg/onnx-cache/`) is used instead.
  Nothing is written anywhere else. Both places are looked up when reading.
- **Key**: `<sha256 of the weights file, 16 hex>-<hash of the export options, 8 hex>.onnx`; the
  options are the opset, dynamic axes, precision (fp32 / int8) and this module's cache format
  version. A retrained file with the same name gets a new key; an old entry is never trusted.
- **Check, once**: argmax agreement with PyTorch >= 99.9 % on random inputs at two sizes (neither
  a multiple of 32; dynamic H/W is what whole / sliding / multi-scale inference need), measured
  by `fcnseg.export.compare_graph`. The result goes to a JSON sidecar (`<same name>.json`)
  written after the graph, with the SHA-256 of the weights file and of the graph's bytes; a
  later run opens the graph without exporting or checking only when both hashes match again
  (`cache_entries.CacheEntry.verify`, on every load). An entry that fails (a graph of other
  weights copied in, with or without its sidecar; changed or random bytes; a graph onnxruntime
  cannot open) is named in one line on stderr, removed and exported again. A failed check is
  recorded without its graph, so `auto` falls back to PyTorch at once next time.
- **Fixed-size graphs**: an input size that keeps coming back (the second call at a size, batch
  1, up to 4 sizes a process) gets its own graph exported at that size, cached and checked the
  same way (at its size), because onnxruntime folds the shape arithmetic of a fixed-size graph
  (see FixedSizeGraphs: about 20 % faster for the CamVid models at 360x480).

Which runtime runs a model is decided in `fcnseg.inference.runtimes`; this module only makes,
finds and opens graphs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.errors import FcnsegError, UsageError
from fcnseg.export import DEFAULT_EXAMPLE_SIZE, compare_graph
from fcnseg.inference.cache_entries import (
    CacheEntry,
    CacheUnusable,
    file_sha256,
    weights_digest,
    write_record,
)

__all__ = [
    "CacheEntry",
    "CacheUnusable",
    "ExportOptions",
    "RuntimeUnusable",
    "export_checked",
    "file_sha256",
    "find_cached",
    "open_int8",
    "runtime_check",
    "weights_digest",
    "write_record",
]

#: Bump when the cached files' meaning changes (export code, check rule): old entries go stale.
#: 3: the sidecar proves its graph (weights and graph SHA-256, checked on every load).
CACHE_FORMAT_VERSION: int = 3
DEFAULT_OPSET: int = 17
#: Random-input sizes of the one-time check: neither a multiple of 32, portrait and landscape.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((203, 257), (255, 189))
MIN_ARGMAX_AGREEMENT: float = 0.999
#: Input sizes per process that get their own fixed-size graph (see FixedSizeGraphs).
MAX_FIXED_SIZES: int = 4
#: Calls at one size before its fixed-size graph is made: a size seen once stays dynamic.
FIXED_SIZE_AFTER_CALLS: int = 2
CACHE_SUFFIX: str = ".onnx-cache"

Log = Callable[[str], None]


class RuntimeUnusable(FcnsegError):
    """A runtime asked for by name cannot be used (no cached int8 graph, a graph that disagrees
    with PyTorch); the message says why and the fix."""


def announce(message: str) -> None:
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


def cache_name(weights_path: str | os.PathLike[str], options: ExportOptions) -> str:
    """`<sha256 of the weights, 16 hex>-<options key>`: the cache file's stem."""
    return f"{weights_digest(weights_path)[:16]}-{options.key()}"


def lookup(
    weights_path: str | os.PathLike[str], options: ExportOptions, *, say: bool = True
) -> tuple[CacheEntry | None, dict[str, Any] | None, str]:
    """(entry, its verified record, "") for these weights and options, beside the weights first,
    then in the user cache; (None, None, why) when neither holds one that proves its contents
    (`CacheEntry.verify`). An entry that fails is removed, and named on stderr when `say`."""
    name = cache_name(weights_path, options)
    digest = weights_digest(weights_path)
    problems: list[str] = []
    for folder in (beside_cache_dir(weights_path), user_cache_dir()):
        entry = CacheEntry.in_folder(folder, name)
        if not entry.exists():
            continue
        record, problem = entry.verify(digest, asdict(options))
        if record is not None:
            return entry, record, ""
        if say:
            entry.discard(problem)
        else:
            entry.remove()
        problems.append(f"{entry.onnx} {problem}")
    return None, None, "; ".join(problems)


def find_cached(weights_path: str | os.PathLike[str], options: ExportOptions) -> CacheEntry | None:
    """The cached entry for these weights and options that proves its contents, or None
    (`lookup`; an entry that fails is named on stderr and removed)."""
    return lookup(weights_path, options)[0]


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
    `resolve_runtime`'s reuse rule) needs to know only one."""
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


# ----------------------------------------------------------------------------------- check


def runtime_check(
    model: nn.Module,
    runnable: Callable[[Tensor], Any],
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    seed: int = 0,
) -> dict[str, Any]:
    """The sidecar's check record of `runnable` against `model` (fcnseg.export.compare_graph on
    random inputs at `sizes`): passed when the worst head and size keep MIN_ARGMAX_AGREEMENT of
    the argmax; max |logit difference| is recorded, not judged (int8 moves logits, not labels)."""
    entries = compare_graph(model, runnable, sizes, seed=seed)
    worst_agreement = min((entry.argmax_agreement for entry in entries), default=1.0)
    return {
        "passed": worst_agreement >= MIN_ARGMAX_AGREEMENT,
        "argmax_agreement": worst_agreement,
        "max_abs_diff": max((entry.max_abs_diff for entry in entries), default=0.0),
        "threshold": MIN_ARGMAX_AGREEMENT,
        "inputs": "random normal",
        "per_size": [
            {
                "size": list(entry.size),
                "agreement": entry.argmax_agreement,
                "max_abs": entry.max_abs_diff,
            }
            for entry in entries
        ],
    }


# ------------------------------------------------------------------------------- the graphs


def wrap_like_model(runnable: Any, model: nn.Module) -> Any:
    """Give the ORT session the model attributes evaluation reads (input channels of RGB-D
    models, the heads of multi-head models)."""
    for name in ("in_channels", "head_classes", "num_classes"):
        if hasattr(model, name):
            setattr(runnable, name, getattr(model, name))
    return runnable


def _open(path: Path, model: nn.Module, threads: int | None) -> Any:
    from fcnseg.exported import OnnxRuntimeModel

    return wrap_like_model(OnnxRuntimeModel(path, threads=threads), model)


def export_checked(
    model: nn.Module,
    weights_path: str | os.PathLike[str],
    options: ExportOptions = ExportOptions(),
    *,
    threads: int | None = None,
    log: Log | None = announce,
) -> tuple[Any, CacheEntry, dict[str, Any], str]:
    """(ORT runnable, cache entry, record, "cache" | "exported") for the fp32 graph of `model`
    whose weights are `weights_path`: reused when checked before, else exported and checked once.

    Raises RuntimeUnusable when the (new or recorded) check failed.
    """
    from fcnseg.export import export_onnx

    if options.int8:
        raise UsageError("export_checked makes fp32 graphs; int8 ones come from fcnseg export")
    model = model.eval()
    cached, record, _ = lookup(weights_path, options)
    if cached is not None and record is not None:
        if not (record.get("check") or {}).get("passed"):
            raise RuntimeUnusable(_failed_message(record, cached))
        try:
            return _open(cached.onnx, model, threads), cached, record, "cache"
        except Exception as error:  # noqa: BLE001 - onnxruntime's own error types; re-export
            cached.discard(f"cannot be opened by onnxruntime ({_one_line(error)})")
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
    runnable = _open_new(entry, model, threads)
    check = runtime_check(model, runnable, check_sizes)
    record = cache_record(weights_path, options, check, started, cache_format=CACHE_FORMAT_VERSION)
    record = write_record(entry, record)  # a failed graph is removed, its record kept
    if not check["passed"]:
        raise RuntimeUnusable(_failed_message(record, entry))
    return runnable, entry, record, "exported"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _open_new(entry: CacheEntry, model: nn.Module, threads: int | None) -> Any:
    """The graph just exported, opened; removed and RuntimeUnusable when onnxruntime cannot."""
    try:
        return _open(entry.onnx, model, threads)
    except Exception as error:  # noqa: BLE001 - onnxruntime's own error types
        entry.remove()
        raise RuntimeUnusable(
            f"{entry.onnx}: onnxruntime cannot open the graph just exported "
            f"({_one_line(error)}); use --engine torch"
        ) from None


def _failed_message(record: dict[str, Any], entry: CacheEntry) -> str:
    check = record.get("check") or {}
    return (
        f"{entry.onnx}: the ONNX graph disagrees with PyTorch (argmax agreement "
        f"{100 * float(check.get('argmax_agreement', 0.0)):.3f}% < "
        f"{100 * MIN_ARGMAX_AGREEMENT:.1f}%, recorded in {entry.sidecar.name}); use --engine torch"
    )


def _versions() -> dict[str, str]:
    import onnxruntime

    from fcnseg.version import __version__

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
    entry, record, problem = lookup(weights_path, options, say=False)
    make = (
        f"make it once with `fcnseg export --weights {weights_path} --to onnx --int8 "
        "--calibrate TRAIN_ROOT --format FORMAT --out FILE.onnx`"
    )
    if entry is None or record is None:
        why = f"the cached one {problem} and was removed" if problem else "none is cached"
        raise RuntimeUnusable(
            f"no usable int8 graph for {weights_path} (key {cache_name(weights_path, options)}: "
            f"{why}); {make}"
        )
    if not (record.get("check") or {}).get("passed"):
        check = record.get("check") or {}
        raise RuntimeUnusable(
            f"{entry.onnx}: the int8 graph failed its check (argmax agreement "
            f"{100 * float(check.get('argmax_agreement', 0.0)):.2f}%); use --engine onnxruntime"
        )
    try:
        return _open(entry.onnx, model, threads), entry, record
    except Exception as error:  # noqa: BLE001 - onnxruntime's own error types
        entry.remove()
        raise RuntimeUnusable(
            f"{entry.onnx}: onnxruntime cannot open the cached int8 graph ({_one_line(error)}); "
            f"it was removed; {make}"
        ) from None
