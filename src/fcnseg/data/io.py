"""Decoding of images and masks from disk, with the automatic handling fcnseg documents.

Every loader goes through `read_image` / `read_mask`, so the same rules apply to every format:

- Images: EXIF orientation is applied (a phone photo shows up as the user saw it); RGBA and
  LA lose their alpha channel (composited on black, i.e. alpha dropped); grayscale, palette,
  CMYK and YCbCr become 3-channel RGB for a 3-channel model (1-channel models get grayscale).
- Any number of bands, any bit depth (`read_image`, rules in `image_values`): 8-bit data stays
  uint8 0-255; other integer data (16-bit PNG, 16-bit TIFF) becomes float32 divided by the
  largest value of its dtype (65535 for 16-bit), with no bit shifting, so 12-bit data in a
  16-bit file keeps all its levels (values up to 4095/65535, which the per-channel statistics
  stored with the weights then normalise); float data (float32 TIFF, .npy) is kept as it is.
  Multi-band and tiled TIFFs are read with tifffile, NumPy `.npy` files with numpy (H x W or
  H x W x C). Pillow reads 16-bit colour PNGs as 8 bits; fcnseg warns once and suggests TIFF.
- Masks: 8-bit grayscale ("L") and palette ("P") PNGs hold class ids directly (a VOC palette
  PNG's pixel *index* is the class id, the colours are only for display); 16-bit masks are
  accepted as they are, provided their values are in range; colour (RGB) masks are mapped to
  ids through a palette when the caller gives one, otherwise they are an error; `.npy` masks
  are H x W integer arrays of class ids.
- A file that cannot be decoded (corrupt, truncated, not an image) raises a one-line
  `DataError` naming the file and the fix, never a PIL traceback.
- EXIF orientation: masks get theirs applied too, each file by its own tag; a pair whose tags
  would turn image and mask against each other is found by `data/orientation.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from fcnseg.data import bands
from fcnseg.data.datasets.base import DataError

#: Image suffixes the folder-style loaders accept (lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".npy",
)
#: Environment variable that overrides the data directory (`../shared/data` from the repo root).
DATA_DIR_ENV: str = "FCNSEG_DATA"
#: Environment variable that overrides MAX_PIXELS (e.g. for gigapixel aerial tiles).
MAX_PIXELS_ENV: str = "FCNSEG_MAX_PIXELS"
#: Largest image (width x height) fcnseg decodes: 64 Mpx is 8000 x 8000, far above any
#: segmentation benchmark, and stops a file whose header claims 20000 x 20000 (a decompression
#: bomb) before gigabytes are allocated for it.
MAX_PIXELS: int = 64_000_000
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_BITS_16_TO_8 = 8


def default_data_dir() -> Path:
    """The directory holding the datasets: $FCNSEG_DATA, else `../shared/data` from the repo.

    The repository root is found from this file when fcnseg runs from a source checkout
    (editable install), otherwise the current directory stands in for it.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    repo = Path(__file__).resolve().parents[3]
    if not (repo / "pyproject.toml").is_file():
        repo = Path.cwd()
    return (repo / ".." / "shared" / "data").resolve()


def max_pixels() -> int:
    """The pixel cap in force: $FCNSEG_MAX_PIXELS when set to a positive integer, else MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"${MAX_PIXELS_ENV}={text!r}: must be a positive whole number of pixels")
    return value


def check_pixel_count(width: int, height: int, source: str | Path) -> None:
    """DataError when a `width` x `height` image exceeds the pixel cap (read from its header)."""
    cap = max_pixels()
    if width * height > cap:
        raise DataError(
            f"{source}: {width}x{height} image ({width * height / 1e6:.0f} Mpx) exceeds the "
            f"{cap / 1e6:.0f} Mpx cap; resize it, or raise ${MAX_PIXELS_ENV} if it is genuine"
        )


def _open(path: Path) -> Image.Image:
    """Open and fully decode `path` (so truncation is detected here, not mid-epoch).

    The header's size is checked against the pixel cap before any pixel is decoded; PIL's own
    bomb check is switched off for that call because the cap replaces it with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; check the dataset root and list files")
    try:
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
        check_pixel_count(image.width, image.height, path)
        image.load()
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as error:
        raise DataError(
            f"{path}: cannot decode ({type(error).__name__}: {error}); the file is corrupt or "
            "truncated: re-export or re-download it, or remove it from the dataset"
        ) from None
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not kill the image
        return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an H x W x 3 uint8 array: the 8-bit RGB view of an upload
    (`fcnseg serve`); 16-bit greyscale keeps its high byte here only. Training and prediction
    decode through `read_image`, which keeps every level."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        values = np.clip(values >> _BITS_16_TO_8, 0, 255).astype(np.uint8)
        return np.repeat(values[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(values[..., None], 3, axis=2)
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def pil_values(image: Image.Image, channels: int | None, source: str | Path) -> np.ndarray:
    """A decoded Pillow image as H x W x C values with `channels` bands (alpha dropped;
    greyscale repeated for RGB; colour made greyscale, ITU-R 601 luma, for 1 channel)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, np.iinfo(np.uint16).max)
        values = bands.image_values(wide.astype(np.uint16)[..., None], source)
        return bands.match_channels(values, channels, source)
    if image.mode == "F":
        values = bands.image_values(np.asarray(image)[..., None], source)
        return bands.match_channels(values, channels, source)
    if channels == 1 or (channels is None and image.mode in ("L", "1")):
        if image.mode in ("LA", "RGBA", "PA"):
            image = image.convert("RGB")
        return np.asarray(image.convert("L"))[..., None]
    return bands.match_channels(to_rgb_array(image), channels, source)


def read_values(path: str | Path, channels: int | None = 3) -> np.ndarray:
    """H x W x C values of an image file (rules in the module docstring) with `channels`
    bands (None: the file's own)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; check the dataset root and list files")
    raw = bands.read_array(path, check_pixel_count)
    if raw is not None:
        return bands.match_channels(bands.image_values(raw, path), channels, path)
    bands.warn_if_wide_colour_png(path)
    return pil_values(_open(path), channels, path)


def read_image(path: str | Path, channels: int | None = 3) -> Tensor:
    """Decode an image file to a C x H x W tensor with `channels` channels (None: the file's).

    uint8 for 8-bit data, float32 on the [0, 1] scale otherwise (see `bands.image_values`). A
    band count that cannot become `channels` is a one-line DataError naming the file and fix.
    """
    array = read_values(path, channels)
    # One C-ordered copy, so the tensor owns writable memory (Pillow's arrays are read-only).
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C"))


def read_mask(
    path: str | Path, palette: Sequence[Sequence[int]] | None = None, ignore_index: int = 255
) -> Tensor:
    """Decode a label image to an int64 tensor H x W of class ids.

    Args:
        path: PNG (or other lossless) label file.
        palette: colours of classes 0..n-1; needed only for colour (RGB/RGBA) masks, whose
            pixels are then mapped to class ids. Black pixels that match no class become
            `ignore_index` only if black is not a class colour; any other unknown colour is an
            error naming one offending colour.
        ignore_index: label given to unlabelled (black) pixels of a colour mask.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return read_npy_mask(path)
    image = _open(path)
    if image.mode in ("L", "P", "1") or image.mode in _SIXTEEN_BIT_MODES:
        return torch.from_numpy(np.asarray(image, dtype=np.int64).copy())
    if image.mode in ("RGB", "RGBA"):
        if palette is None:
            raise DataError(
                f"{path}: colour ({image.mode}) mask but no palette; save masks as class-index "
                "PNGs (8-bit grayscale or palette mode) or give the class colours in a class file"
            )
        return colour_mask_to_ids(np.asarray(image.convert("RGB")), palette, ignore_index, path)
    if image.mode == "LA":
        return torch.from_numpy(np.asarray(image.getchannel("L"), dtype=np.int64).copy())
    raise DataError(
        f"{path}: unsupported mask mode {image.mode!r}; save masks as 8-bit grayscale or palette "
        "PNGs holding class ids"
    )


def read_npy_mask(path: Path) -> Tensor:
    """A `.npy` label map (H x W integers), beside `.npy` images."""
    array = bands.read_array(path, check_pixel_count)
    if array is None or array.shape[2] != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: a .npy mask must be an H x W array of integer class ids")
    return torch.from_numpy(array[..., 0].astype(np.int64))


def colour_mask_to_ids(
    rgb: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int, path: Path | str
) -> Tensor:
    """Map an H x W x 3 colour mask to class ids through `palette` (one colour per class)."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(palette)}
    table.setdefault(0, ignore_index)  # black = unlabelled unless black is a class colour
    keys = np.array(sorted(table), dtype=np.int64)
    values = np.array([table[k] for k in keys], dtype=np.int64)
    position = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    unknown = keys[position] != code
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        colour = tuple(int(c) for c in rgb[y, x])
        raise DataError(
            f"{path}: colour {colour} at (row {y}, col {x}) is not in the class palette; add it "
            "to the class file or repaint those pixels"
        )
    return torch.from_numpy(values[position])


def read_mat_segmentation(path: str | Path, struct: str = "GTcls", field: str = "Segmentation"):
    """Read the label map of a MATLAB file, e.g. SBD's `GTcls.Segmentation`, as int64 H x W."""
    from scipy.io import loadmat  # imported lazily: only the .mat formats need scipy

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; check the dataset root and list files")
    try:
        contents = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as error:  # noqa: BLE001 - scipy raises many types for bad files
        raise DataError(
            f"{path}: cannot read MATLAB file ({type(error).__name__}); re-download it"
        ) from None
    try:
        value = contents[struct]
        labels = getattr(value, field) if field else value
    except (KeyError, AttributeError):
        raise DataError(
            f"{path}: no {struct}.{field} in this .mat file; is it the right dataset format?"
        ) from None
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def check_pair(
    image: Tensor,
    mask: Tensor,
    num_classes: int,
    ignore_index: int,
    image_path: str | Path,
    mask_path: str | Path,
) -> None:
    """Raise a one-line DataError if the mask does not fit the image or holds unknown labels."""
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        raise DataError(
            f"{mask_path}: mask is {tuple(mask.shape[-2:])} (HxW) but image {image_path} is "
            f"{tuple(image.shape[-2:])}; re-export the mask at the image's size"
        )
    bad = (mask < 0) | (mask >= num_classes)
    bad &= mask != ignore_index
    if bad.any():
        values = sorted({int(v) for v in mask[bad].unique()[:5]})
        raise DataError(
            f"{mask_path}: label values {values} are outside [0, {num_classes}) and not the void "
            f"label {ignore_index}; fix the mask or the class list"
        )


def find_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (sorted, hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def require_files(pairs: list[tuple[Path, Path]], source: str | Path) -> None:
    """Raise one DataError naming every missing file of `pairs` (listed in `source`)."""
    missing = [str(path) for pair in pairs for path in pair if not Path(path).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise DataError(
            f"{source}: {len(missing)} listed file(s) missing: {shown}; restore them or remove "
            "their entries from the list"
        )


def read_id_list(list_file: Path) -> list[str]:
    """Read a one-id-per-line list (VOC ImageSets style); the first column of each line."""
    if not list_file.is_file():
        raise DataError(
            f"{list_file}: list file not found; check the dataset root and the split name"
        )
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{list_file}: the list is empty; it must name one image id per line")
    return ids


def index_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of `folder` keyed by stem; two files with one stem are an error."""
    by_stem: dict[str, Path] = {}
    for path in find_images(folder):
        if path.stem in by_stem:
            raise DataError(
                f"{path}: duplicate stem {path.stem!r} (also {by_stem[path.stem].name}); keep "
                "one file per stem so images and masks pair unambiguously"
            )
        by_stem[path.stem] = path
    return by_stem


def pair_folders(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair images and masks of two folders by file stem; unmatched files are errors."""
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: folder not found; check the dataset root and split name")
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: mask folder not found; put the masks there")
    images, masks = index_by_stem(image_dir), index_by_stem(mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no images found; check the dataset root and split name")
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        stem = unmatched[0]
        if stem in images:
            problem = f"image {images[stem]} has no mask in {mask_dir}"
        else:
            problem = f"mask {masks[stem]} has no image in {image_dir}"
        raise DataError(
            f"{problem} ({len(unmatched)} unmatched file(s)); add the missing files or remove "
            "the extra ones"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]
