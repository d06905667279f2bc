"""`fcnseg data convert`: any dataset format written out as the `folder` layout.

For those who want masks on disk (to inspect them, to share them, to train without the source
tool's package): every split that the source has becomes `out/images/<split>/<name>.png` and
`out/masks/<split>/<name>.png` (8-bit class-index PNGs, void = the ignore index), with the
classes (after `class_map`) in `out/classes.yaml`. Images are re-encoded as PNG exactly as
training decodes them (EXIF orientation applied), so the converted set trains identically.

Safety: `out` must be absent or empty; everything is written into a hidden staging folder
inside `out` and moved into place only once every sample converted, so a bad file leaves `out`
as it was (empty) rather than half-filled, and no sample name (they come from the files) can
place a file outside `out`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from fcnseg.data.datasets.base import ClassInfo, DataError, SegmentationDataset
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.errors import OutputError
from fcnseg.paths import inside, safe_name

DEFAULT_SPLITS: tuple[str, ...] = ("train", "val", "test")
_UINT8_LIMIT = 256


@dataclass
class ConvertResult:
    """What was written: images per split, the classes, and the splits the source lacks."""

    out: Path
    classes: tuple[str, ...]
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"--out {out}: exists and is not an empty folder; give a new folder")


def _open_splits(
    data_format: str, root: str | Path, splits: Sequence[str], options: Mapping[str, Any]
) -> tuple[dict[str, SegmentationDataset], dict[str, str]]:
    found: dict[str, SegmentationDataset] = {}
    skipped: dict[str, str] = {}
    for split in splits:
        try:
            found[split] = build_dataset(data_format, root, split, **options)
        except (DataError, FileNotFoundError) as error:
            skipped[split] = str(error)
    if not found:
        raise DataError(next(iter(skipped.values())))
    infos = {split: dataset.class_info for split, dataset in found.items()}
    first = next(iter(infos.values()))
    for split, info in infos.items():
        if info.names != first.names:
            raise DataError(
                f"split {split!r} has classes {list(info.names)}, another {list(first.names)}; "
                "give a class list so that every split has the same classes"
            )
    if first.num_classes >= _UINT8_LIMIT or not 0 <= first.ignore_index < _UINT8_LIMIT:
        raise DataError("data convert writes 8-bit masks: at most 255 classes and void < 256")
    return found, skipped


def _class_file(info: ClassInfo) -> str:
    return yaml.safe_dump(
        {
            "names": list(info.names),
            "palette": [list(colour) for colour in info.palette],
            "ignore_index": info.ignore_index,
        },
        sort_keys=False,
    )


def _write_split(dataset: SegmentationDataset, staging: Path, split: str) -> int:
    used: set[str] = set()
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        name = safe_name(dataset.sample_name(index), fallback=f"sample{index}")
        while name in used:
            name = f"{name}_{index}"
        used.add(name)
        for folder, array, mode in (
            ("images", image.permute(1, 2, 0).numpy(), "RGB"),
            ("masks", mask.numpy().astype(np.uint8), "L"),
        ):
            path = inside(staging / folder / split / f"{name}.png", staging, "converted file")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(array), mode=mode).save(path)
    return len(dataset)


def convert_dataset(
    data_format: str,
    root: str | Path,
    out: str | Path,
    splits: Sequence[str] = DEFAULT_SPLITS,
    class_map: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ConvertResult:
    """Write the `splits` of the `data_format` dataset at `root` into `out` as the folder
    layout (see the module docstring). Splits the source does not have are skipped and
    reported; a bad file stops the conversion with `out` left empty."""
    out = Path(out)
    _check_out(out)
    kwargs = {**(options or {}), "class_map": dict(class_map) if class_map else None}
    datasets, skipped = _open_splits(data_format, root, splits, kwargs)
    info = next(iter(datasets.values())).class_info
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=out))
    try:
        written = {split: _write_split(ds, staging, split) for split, ds in datasets.items()}
        (staging / "classes.yaml").write_text(_class_file(info))
        for child in staging.iterdir():
            child.rename(out / child.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    staging.rmdir()
    return ConvertResult(out, info.names, written, skipped)
