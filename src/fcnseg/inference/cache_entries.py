"""One entry of the ONNX graph cache (a graph and its JSON sidecar) and the proof of its contents.

Why a proof and not a byte count: a graph of another model with the same architecture (the two
shipped CamVid models) has exactly the same size, so a graph copied over an entry, with or
without its sidecar, was used and reported as "argmax agreement 100.00%". The sidecar now
records the SHA-256 of the weights file the graph was exported from and of the graph's bytes,
and `verify` recomputes both on every load (fixed-size and int8 graphs too). An entry that fails
is named in one line on stderr and removed (`discard`), so the caller exports it again; a graph
that failed its agreement check is not kept either (`write_record` removes it and keeps the
record, so `auto` still falls back to PyTorch at once next time).

torch-free; `graph_cache` builds on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.errors import FcnsegError
from fcnseg.io_utils import atomic_write

__all__ = ["CacheEntry", "CacheUnusable", "file_sha256", "warn", "weights_digest"]


class CacheUnusable(FcnsegError):
    """A cache entry failed its proof and could not be removed; the message says what to do."""


def warn(message: str) -> None:
    """A cache entry that failed its proof, in one line on stderr (not a progress note)."""
    print(" ".join(message.split()), file=sys.stderr, flush=True)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's bytes, read in 1 MiB blocks (never memoised: this is the proof)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def weights_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a weights file, memoised per process by path, inode, size and mtime (the
    weights are read for every cache lookup; the graphs are hashed every time)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = file_sha256(path)
    return _DIGESTS[memo]


@dataclass(frozen=True)
class CacheEntry:
    """One cached graph and its sidecar (the check's record and the two hashes)."""

    onnx: Path
    sidecar: Path

    @classmethod
    def in_folder(cls, folder: Path, name: str) -> CacheEntry:
        return cls(folder / f"{name}.onnx", folder / f"{name}.json")

    def exists(self) -> bool:
        """Whether either file (or anything under its name) is there."""
        return any(os.path.lexists(path) for path in (self.onnx, self.sidecar))

    def record(self) -> dict[str, Any] | None:
        """The sidecar's JSON object, None when missing or unreadable (not a proof: `verify`)."""
        try:
            record = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def verify(self, weights_sha256: str, options: dict[str, Any]) -> tuple[dict | None, str]:
        """(the record, "") when the entry proves it holds the graph of these weights and export
        options; else (None, why not). A record of a failed check needs no graph: it only says
        "do not use onnxruntime for these weights"."""
        record = self.record()
        if record is None:
            return None, "has no readable sidecar record"
        if record.get("weights_sha256") != weights_sha256:
            return None, "was exported from other weights (the sidecar's weights hash differs)"
        if json.loads(json.dumps(record.get("options"))) != json.loads(json.dumps(options)):
            return None, "was exported with other options"
        if not (record.get("check") or {}).get("passed"):
            return record, ""
        expected = record.get("onnx_sha256")
        if not isinstance(expected, str):
            return None, "has no graph hash in its sidecar (an older cache)"
        try:
            actual = file_sha256(self.onnx)
        except OSError as error:
            return None, f"cannot be read ({error.strerror or type(error).__name__})"
        if actual != expected:
            return None, "does not match the hash its sidecar recorded (the bytes changed)"
        return record, ""

    def discard(self, why: str) -> None:
        """Say in one line why this entry is not used, and remove both files so that nothing
        that failed its proof stays in the cache. CacheUnusable when they cannot be removed."""
        warn(f"fcnseg: cached ONNX graph {self.onnx} {why}; removing it and exporting again")
        self.remove()

    def remove(self) -> None:
        """Both files removed (missing ones are fine); CacheUnusable when one cannot be."""
        for path in (self.onnx, self.sidecar):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise CacheUnusable(
                    f"{path}: a bad ONNX cache entry cannot be removed "
                    f"({error.strerror or type(error).__name__}); delete it or use --engine torch"
                ) from None


def write_record(entry: CacheEntry, record: dict[str, Any]) -> dict[str, Any]:
    """Write the sidecar (atomically) with the graph's size and SHA-256; returns what was written.

    A graph whose check failed is removed after its record is written: the record alone is
    what `auto` needs to fall back at once, and a failed graph must not be found again."""
    record = {**record, "onnx_bytes": entry.onnx.stat().st_size}
    record["onnx_sha256"] = file_sha256(entry.onnx)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write(entry.sidecar, lambda tmp: tmp.write_text(text))
    if not (record.get("check") or {}).get("passed"):
        entry.onnx.unlink(missing_ok=True)
    return record
