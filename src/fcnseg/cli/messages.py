"""The one line `fcnseg` prints for an error: torch-free, imported by `cli` and by commands
that print it themselves (`predict` under torchrun prints it on the rank that failed, before
the other ranks may leave; see engine.predict.run_prediction).
"""

from __future__ import annotations

import errno

from fcnseg.errors import FcnsegError

__all__ = ["describe_os_error", "error_line"]


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


#: errno -> the usual fix, for `describe_os_error`.
_OS_ERROR_FIXES: dict[int, str] = {
    errno.ENOSPC: "free some space or choose another --out",
    errno.EROFS: "the filesystem is read-only; choose another --out",
    errno.EACCES: "check the permissions or choose another location",
    errno.EPERM: "check the permissions or choose another location",
    errno.ENOENT: "check the path",
    errno.EISDIR: "name a file, not a folder",
    errno.ENOTDIR: "a component of the path is a file, not a folder",
    errno.EEXIST: "choose another name or remove it",
}


def describe_os_error(error: OSError) -> str:
    """One line for a filesystem failure: what, which file, and the usual fix.

    fcnseg raises FileNotFoundError with its own one-line message (no errno); that message is
    kept as it is. An OSError from the system (errno set) becomes "file: reason; fix".
    """
    if error.errno is None and error.args:
        return one_line(error.args[0])
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or type(error).__name__
    fix = _OS_ERROR_FIXES.get(error.errno or 0, "check the path and the disk")
    return one_line(f"{where}{reason}; {fix}")


def error_line(command: str, error: FcnsegError | OSError) -> str:
    """`fcnseg COMMAND: error: ...` for a user's error (FcnsegError) or the filesystem's
    (OSError), in one line."""
    text = describe_os_error(error) if isinstance(error, OSError) else str(error)
    return f"fcnseg {command}: error: {one_line(text)}"
