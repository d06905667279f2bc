"""Names that become paths: one rule so that no recipe or weights file decides where fcnseg writes.

A command writes inside the output folder it was given (or `runs/`). Values that come from a
file rather than from the command line (a recipe's `name`, the split or dataset format stored in
a weights file's metadata) may end up in a file or folder name; if they could hold `/` or `..`
a hostile or careless file would steer the write elsewhere. So such values are either refused
(`check_name`, for recipe fields the user types) or reduced to a safe file-name part
(`safe_name`, for values read from metadata), and a final path can be checked to stay inside its
folder (`inside`).
"""

from __future__ import annotations

import re
from pathlib import Path

from fcnseg.errors import OutputError, RecipeError

#: Characters allowed in a name that becomes (part of) a file or folder name.
SAFE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
#: Longest name accepted (file systems allow 255 bytes; leave room for prefixes and suffixes).
MAX_NAME_LENGTH = 128


def is_safe_name(value: object) -> bool:
    """True when `value` is a non-empty string of [A-Za-z0-9._-] that is not '.'/'..'-like."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME_LENGTH
        and SAFE_NAME_PATTERN.match(value) is not None
        and ".." not in value
        and not value.startswith(".")
    )


def check_name(value: object, field: str) -> str:
    """`value` if it is a safe name, else a one-line RecipeError naming `field` and the rule."""
    if not is_safe_name(value):
        raise RecipeError(
            f"{field}: {value!r} cannot name a file or folder; use letters, digits, '.', '_' or "
            f"'-' (no '/', no '..', not starting with '.', at most {MAX_NAME_LENGTH} characters)"
        )
    return str(value)


def safe_name(value: object, fallback: str = "unnamed") -> str:
    """`value` reduced to a safe file-name part: other characters become '_', dots never lead
    or repeat. Used for values read from files (weights metadata) that only label an output."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", str(value))
    text = re.sub(r"\.{2,}", "_", text).lstrip(".")[:MAX_NAME_LENGTH]
    return text if text else fallback


def inside(path: str | Path, folder: str | Path, what: str = "output") -> Path:
    """`path` when it resolves inside `folder`, else a one-line OutputError.

    Symlinks are resolved on both sides, so a link inside the folder that points out of it is
    caught as well.
    """
    target = Path(path).resolve()
    root = Path(folder).resolve()
    if target != root and root not in target.parents:
        raise OutputError(f"{what} {path} would be written outside {folder}; refusing")
    return Path(path)
