"""Where `fcnseg predict` writes, checked before anything is written, and how each file lands.

Why a module of its own: predict once overwrote its input images with masks (`predict frames
--out frames`), let two inputs share an output name, and wrote through a symbolic link left in
--out to a file outside it. The rules that prevent that are one job, apart from what predict
computes (engine.predict) and how fast (engine.predict_loader):

- `check_out_folder`: --out is not a file, and is not (inside) a folder given as an input.
- `output_targets` + `check_targets`: every file predict will write, all checked first: unique
  case-insensitively, inside --out, never an input file, never a symbolic link or a folder, and
  no folder on the way is a symbolic link. One refusal is one `OutputError` line, exit 2.
- `save_image`: each file is written to a temporary file in its folder and renamed onto its name
  (`os.replace` replaces a directory entry: a link that appeared there since the check is
  replaced, never followed), so a file is whole or absent, and nothing outside --out changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fcnseg.errors import OutputError
from fcnseg.io_utils import atomic_write

__all__ = [
    "check_out_folder",
    "check_targets",
    "ensure_folder",
    "output_targets",
    "save_image",
    "save_uncertainty",
]

#: Suffixes of the two files written per input (see engine.predict.write_job).
MASK_SUFFIX, OVERLAY_SUFFIX = ".png", "_overlay.jpg"
#: With --mc-samples: the uncertainty heat map and its 16-bit raw values (engine.render).
UNCERTAINTY_SUFFIX, UNCERTAINTY_RAW_SUFFIX = "_uncertainty.png", "_uncertainty16.png"
#: Input -> (mask PNG, overlay JPEG, uncertainty heat map, uncertainty 16-bit PNG); None: not
#: written.
Targets = dict[Path, tuple[Path | None, ...]]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` names (links followed), None when it does not exist.

    Why inodes and not names: `frames` and `Frames`, `frames/../frames` or a link to it are one
    folder; comparing what the names point at catches every spelling on every disk."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def check_out_folder(out_dir: Path, inputs: Iterable[str] = ()) -> None:
    """OutputError when --out is a file, or is or lies inside a folder given in `inputs`.

    Only folders named as inputs count (`predict frames --out frames/masks` is refused); a glob's
    or a file's folder does not, since `predict '*.jpg' --out masks` in a photo folder is the
    usual use. Overwriting an input file is refused by `check_targets` whatever the spelling.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder; choose a folder name")
    if out_dir.is_symlink() and not out_dir.exists():
        raise OutputError(
            f"--out {out_dir}: is a broken symbolic link; remove it or fix its target"
        )
    folders = {
        identity: item
        for item in inputs
        if Path(item).is_dir() and (identity := _identity(Path(item))) is not None
    }
    if not folders:
        return
    resolved = out_dir.resolve()
    for candidate in (resolved, *resolved.parents):
        folder = folders.get(_identity(candidate) or (-1, -1))
        if folder is not None:
            where = "is" if candidate == resolved else "is inside"
            raise OutputError(
                f"--out {out_dir}: {where} the input folder {folder}, so the masks would mix with "
                "(or overwrite) the images; choose an --out outside it"
            )


def output_targets(
    out_dir: Path, names: dict[Path, Path], overlay: bool, uncertainty: bool = False
) -> Targets:
    """Input -> (its mask PNG, its overlay JPEG, its uncertainty heat map and 16-bit PNG; each
    of the last three None when not written) under `out_dir`, from `names`."""
    targets: Targets = {}
    for path, name in names.items():

        def beside(suffix: str, wanted: bool = True, name: Path = name) -> Path | None:
            return out_dir / name.with_name(name.name + suffix) if wanted else None

        targets[path] = (
            beside(MASK_SUFFIX),
            beside(OVERLAY_SUFFIX, overlay),
            beside(UNCERTAINTY_SUFFIX, uncertainty),
            beside(UNCERTAINTY_RAW_SUFFIX, uncertainty),
        )
    return targets


def _check_unique(out_dir: Path, files: list[Path]) -> None:
    """No two targets, and no target and a folder on another's way, share a name
    case-insensitively (the naming rule guarantees it; checked because losing output is worse
    than refusing)."""
    seen: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    for file in files:
        relative = file.relative_to(out_dir)
        key = str(relative).casefold()
        if key in seen:
            raise OutputError(
                f"--out {out_dir}: {seen[key]} and {file} would be one file on a case-insensitive "
                "disk; rename one of the inputs"
            )
        seen[key] = file
        for parent in list(relative.parents)[:-1]:
            folders.setdefault(str(parent).casefold(), out_dir / parent)
    for key, folder in folders.items():
        if key in seen:
            raise OutputError(
                f"--out {out_dir}: {seen[key]} would be both a file and the folder {folder}; "
                "rename one of the inputs"
            )


def _check_target(out_dir: Path, target: Path, inputs: dict[tuple[int, int], Path]) -> None:
    """One target: inside --out by its name, no linked folder on the way, not a link, not a
    folder, not an input."""
    relative = target.relative_to(out_dir)
    if ".." in relative.parts:
        raise OutputError(f"output {target} would be written outside {out_dir}; refusing")
    for parent in reversed(list(relative.parents)[:-1]):
        folder = out_dir / parent
        if folder.is_symlink():
            raise OutputError(
                f"--out {out_dir}: {folder} is a symbolic link; predict never writes through "
                "links; remove it or choose another --out"
            )
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"--out {out_dir}: {folder} is a file, not a folder; remove it")
    if target.is_symlink():
        raise OutputError(
            f"--out {out_dir}: {target} is a symbolic link (to {os.readlink(target)}); predict "
            "never writes through links; remove it or choose another --out"
        )
    if target.is_dir():
        raise OutputError(
            f"--out {out_dir}: {target} is a folder; remove it or choose another --out"
        )
    source = inputs.get(_identity(target) or (-1, -1))
    if source is not None:
        raise OutputError(
            f"--out {out_dir}: writing {target} would overwrite the input {source}; choose an "
            "--out that holds no inputs"
        )


def check_targets(
    out_dir: Path, targets: dict[Path, tuple[Path | None, ...]], inputs: Iterable[Path]
) -> None:
    """Every target checked (see the module doc) before the first is written; OutputError."""
    identities = {identity: path for path in inputs if (identity := _identity(path)) is not None}
    files = [file for pair in targets.values() for file in pair if file is not None]
    _check_unique(out_dir, files)
    for file in files:
        _check_target(out_dir, file, identities)


def ensure_folder(out_dir: Path, folder: Path) -> None:
    """Create `folder` (at or under `out_dir`) one level at a time, refusing a symbolic link on
    the way, so a link planted after the check is not followed by the write either."""
    out_dir.mkdir(parents=True, exist_ok=True)
    current = out_dir
    for part in folder.relative_to(out_dir).parts:
        current = current / part
        if current.is_symlink():
            raise OutputError(
                f"--out {out_dir}: {current} is a symbolic link; predict never writes through "
                "links; remove it"
            )
        current.mkdir(exist_ok=True)


def save_uncertainty(uncertainty: Any, heat_map: Path | None, raw: Path | None) -> None:
    """H x W uncertainty in [0, 1] saved as its heat map and its 16-bit PNG (engine.render),
    each by `save_image`; a target that is None is not written."""
    from fcnseg.engine.render import uncertainty_image, uncertainty_raw  # PIL: only here

    if heat_map is not None:
        save_image(uncertainty_image(uncertainty), heat_map, "PNG")
    if raw is not None:
        save_image(uncertainty_raw(uncertainty), raw, "PNG")


def save_image(image: Any, target: Path, image_format: str, **params: Any) -> None:
    """`image` (PIL) saved as `target` atomically: a temporary file in the same folder, renamed.

    Not fsynced (`durable=False`): thousands of masks a run would each wait for the disk, and
    the rename alone already makes every file whole or absent to other processes. An OSError
    names `target`, not the temporary file.
    """
    try:
        atomic_write(
            target,
            lambda tmp: image.save(tmp, format=image_format, **params),
            durable=False,
        )
    except OSError as error:
        if error.filename is not None and Path(str(error.filename)).name.startswith(
            f".{target.name}."
        ):
            error.filename = str(target)
        raise
