"""Where a dataset named in a recipe or on the command line lives on this machine.

Recipes name their data by a short relative root (`root: camvid`) so that one recipe works on
every machine; this module turns that into a directory: the path itself when it exists from the
current directory, else the same name inside the data directory (`$FCNSEG_DATA`, else
`../shared/data` next to the repository, see `fcnseg.data.io.default_data_dir`).
"""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.io import default_data_dir


def resolve_data_root(root: str | None) -> str | None:
    """A relative root that does not exist here is looked up in the data directory.

    Returns the root unchanged in meaning (absolute, or existing from here) or its data-directory
    counterpart when that exists; otherwise the original path, so the caller's "not found"
    message names what the user wrote. None (formats without files, e.g. synthetic) stays None.
    """
    if root is None:
        return None
    path = Path(root).expanduser()
    if path.is_absolute() or path.exists():
        return str(path)
    candidate = default_data_dir() / path
    return str(candidate) if candidate.exists() else str(path)
