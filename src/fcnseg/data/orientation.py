"""EXIF orientation of an image and its masks: checked, because fcnseg applies it on load.

Decision (documented in docs/data.md): `data/io.py` applies each file's own EXIF orientation
when it decodes it (`ImageOps.exif_transpose`), images and masks alike, so a phone photo is
trained on as every viewer shows it. Masks are rarely tagged, so an image tagged "rotated" is
then loaded turned against its untagged mask, unless the mask was drawn on the image as shown.
Which of the two an annotation tool did cannot be read from the files, except when the sizes
tell (a quarter turn of a non-square image):

- the sizes agree only as loaded (orientation applied): the mask was drawn on the image as
  shown; consistent, nothing to report;
- the sizes agree only as stored: the mask was drawn on the stored pixels; reported;
- the sizes agree both ways (180 degrees, mirrors, square images) while the orientations
  differ: ambiguous, reported, with the two ways to make it unambiguous.

Only headers are read (the EXIF block sits in the header), so this costs the pre-flight and
`fcnseg data check` no decoding.
"""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.datasets.base import DataError

#: The EXIF Orientation tag, and what each value does to the stored pixels.
ORIENTATION_TAG = 0x0112
ORIENTATION_NAMES: dict[int, str] = {
    1: "none",
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees",
    7: "mirrored and rotated 270 degrees",
    8: "rotated 270 degrees",
}
_QUARTER_TURNS = (5, 6, 7, 8)

FIX = (
    "make it unambiguous: if the mask was drawn on the image as viewers show it, write the "
    "rotation into the image's pixels (e.g. `exiftran -ai FILE`, or PIL "
    "ImageOps.exif_transpose and save); if it was drawn on the stored pixels, remove the "
    "image's tag (e.g. `exiftool -Orientation= FILE`)"
)


def orientation_of(image: object) -> int:
    """The EXIF orientation (1-8) of an open PIL image; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - io.py ignores a broken EXIF block too
        return 1
    return value if value in ORIENTATION_NAMES else 1


def loaded_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) after io.py applies the orientation."""
    return (stored[1], stored[0]) if orientation in _QUARTER_TURNS else stored


def check_orientations(headers: dict[Path, tuple[tuple[int, int], int]]) -> None:
    """Raise one DataError when a sample's files would be loaded turned against each other.

    `headers` maps each image file of the sample (image first) to its stored (width, height)
    and EXIF orientation.
    """
    if len({orientation for _, orientation in headers.values()}) <= 1:
        return
    loaded = {path: loaded_size(size, o) for path, (size, o) in headers.items()}
    if len({size for size, _ in headers.values()}) > 1:
        return  # the stored sizes differ: consistent as loaded, or the size check names it
    (first, (_, first_o)), *others = headers.items()
    other = next(p for p, h in others if h[1] != first_o)
    tagged, untagged = (first, other) if first_o != 1 else (other, first)
    tag = headers[tagged][1]
    how = (
        "may be loaded turned against each other"
        if len(set(loaded.values())) == 1
        else "is loaded turned against each other (their sizes agree only as stored)"
    )
    raise DataError(
        f"{tagged}: EXIF orientation {tag} ({ORIENTATION_NAMES[tag]}), applied on load, but "
        f"{untagged.name} has orientation {headers[untagged][1]}: the pair {how}; {FIX}"
    )
