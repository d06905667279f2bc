"""Which files `fcnseg predict` reads and under which names it writes their results.

Inputs are files, folders and glob patterns (`**` included, directory symlinks not followed);
each file is read once however many times it is named. Outputs keep the inputs' stems, and
mirror their folders only when two inputs share a stem; names are unique case-insensitively
(`output_names`), so no result overwrites another on any disk.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

#: Image file suffixes taken from a folder given as an input.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy")
_MAGIC = "*?["


def _match_parts(parts: list[str], segments: list[str]) -> bool:
    """Whether path components `parts` match glob `segments` (`**` = zero or more folders)."""
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        if _match_parts(parts, rest):
            return True
        return bool(parts) and not parts[0].startswith(".") and _match_parts(parts[1:], segments)
    if not parts:
        return False
    name = parts[0]
    if name.startswith(".") and not head.startswith("."):
        return False  # as glob: wildcards do not match hidden names
    return fnmatch.fnmatchcase(name, head) and _match_parts(parts[1:], rest)


def expand_glob(pattern: str) -> list[Path]:
    """Files matching `pattern` (with `**`), found without following directory symlinks.

    Why not glob.glob: on this Python it follows symlinked folders under `**`, so a link to a
    parent folder repeats the same files until the path length limit. os.walk with
    followlinks=False visits each real folder once; a symlinked file is still matched.
    """
    segments = pattern.replace(os.sep, "/").split("/")
    absolute = pattern.startswith(("/", os.sep))
    base_parts: list[str] = []
    for segment in segments[1 if absolute else 0 :]:
        if any(char in segment for char in _MAGIC):
            break
        base_parts.append(segment)
    rest = segments[(1 if absolute else 0) + len(base_parts) :]
    base = Path("/" if absolute else ".").joinpath(*base_parts)
    if not rest or not base.is_dir():
        return []
    rest = [segment for segment in rest if segment]  # "a//b" and a trailing "/"
    found: list[Path] = []
    for folder, dirs, names in os.walk(base, followlinks=False):
        dirs.sort()
        relative = Path(folder).relative_to(base).parts
        for name in sorted(names):
            if _match_parts([*relative, name], rest):
                found.append(Path(folder) / name)
    return found


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files from paths, folders (their images) and glob patterns, each file once.

    A file reached twice (named twice, by two patterns, or through a symlink) is listed once,
    by its resolved path; order is the order of first appearance. One-line error if none.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            found.append(path)
        elif any(char in item for char in _MAGIC):
            found += [p for p in expand_glob(item) if p.is_file()]
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or glob; check the path")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise FileNotFoundError(
            f"{' '.join(inputs)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return list(unique.values())


def _folded(name: Path) -> str:
    """The key two output names collide under: case-folded, as on case-insensitive disks."""
    return str(name).casefold()


def _unique_in_order(keys: dict[Path, Path]) -> dict[Path, Path]:
    """`keys` with every case-insensitive collision resolved: names that collide with no other
    keep theirs; in a colliding group the first input (in input order) keeps the name and the
    others get `_2`, `_3`, ... (the first free one, never one another input holds)."""
    counts: dict[str, int] = {}
    for key in keys.values():
        counts[_folded(key)] = counts.get(_folded(key), 0) + 1
    taken = {_folded(key) for key in keys.values() if counts[_folded(key)] == 1}
    names: dict[Path, Path] = {}
    for path, key in keys.items():
        if counts[_folded(key)] == 1:
            names[path] = key
            continue
        candidate, number = key, 1
        while _folded(candidate) in taken:
            number += 1
            candidate = key.with_name(f"{key.name}_{number}")
        taken.add(_folded(candidate))
        names[path] = candidate
    return names


def output_names(files: list[Path]) -> tuple[dict[Path, Path], Path | None]:
    """Output path (relative to --out, without suffix) per input, and the mirrored root.

    The naming rule (docs/architecture.md, "What predict writes"): names are compared
    case-insensitively, since `scene.png` and `Scene.png` are one file on macOS and Windows.

    1. Every input's stem when no two stems are equal (`<stem>.png`, as always).
    2. Else the outputs mirror the inputs' folders relative to their common folder
       (`a/scene.png`, `b/scene.png`), and the common folder is returned so the rule can be
       printed.
    3. Inputs whose name is still shared (scene.png, scene.jpg in one folder) take their
       lower-cased suffix: `scene_png`, `scene_jpg`.
    4. A name still shared after that (scene.png + scene.PNG, or scene.png + scene_png.png)
       stays with the first input in input order; the others get `_2`, `_3`, ...

    So no output name is another's, whatever the disk's case rules; nothing is lost.
    """
    stems = [path.stem.casefold() for path in files]
    if len(set(stems)) == len(stems):
        return {path: Path(path.stem) for path in files}, None
    resolved = {path: path.resolve() for path in files}
    root = Path(os.path.commonpath([str(r.parent) for r in resolved.values()]))
    keys = {path: resolved[path].parent.relative_to(root) / path.stem for path in files}
    counts: dict[str, int] = {}
    for key in keys.values():
        counts[_folded(key)] = counts.get(_folded(key), 0) + 1
    for path, key in keys.items():
        if counts[_folded(key)] > 1:
            keys[path] = key.with_name(f"{path.stem}_{path.suffix.lstrip('.').lower() or 'file'}")
    return _unique_in_order(keys), root
