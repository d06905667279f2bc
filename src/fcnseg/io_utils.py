"""Atomic file writes: the one writer every checkpoint, weights file, export and score file uses.

A file appears at its destination complete or not at all: it is written to a temporary file in
the same directory, flushed to disk, given the normal file mode and renamed onto the destination
(`os.replace` is atomic within one filesystem). So a SIGKILL during a save leaves the previous
checkpoint intact, and an export that fails its check never replaces a good file.

This module imports nothing from fcnseg, so any layer (engine, export, benchmarks) can use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "default_file_mode"]


def default_file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 minus the process umask.

    Why: `tempfile.mkstemp` creates its file 0o600, which the rename would carry to the
    destination, so weights and scores written for others to read would be private to the
    writer. The umask can only be read by setting it, hence the set-and-restore.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], None], *, durable: bool = True
) -> Path:
    """Run `write(tmp_path)`, then move the result onto `path` atomically; returns `path`.

    `write` receives a temporary path next to `path` and must write the whole file there; if it
    raises, the temporary file is removed and `path` is left as it was. With `durable` the data
    and the directory entry are fsynced, so the new file survives a crash right after the
    rename; without, other processes still see the old file or the whole new one (predict's
    masks, thousands a run, where an fsync each would dominate). The rename replaces the
    directory entry `path`: a symbolic link there is replaced, its target never written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as stream:
                os.fsync(stream.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
    return path
