"""Images with any number of bands and any bit depth: multi-band and tiled TIFF, NumPy, 16-bit.

Why apart from `io.py`: Pillow knows 1, 3 and 4 channels of 8 bits (and 16-bit greyscale);
multispectral and medical data come as 8-band 16-bit TIFFs, float32 rasters or `.npy` cubes.
Those are read here (tifffile for TIFF, numpy for `.npy`; Pillow for everything else), turned
into values by one rule (`image_values`) and matched to the channels a model takes
(`match_channels`). The rules are stated in `fcnseg.data.io`'s module docstring; `io` decodes
what Pillow reads and calls this module for the rest (this module imports nothing of `io`).
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fcnseg.errors import DataError

#: The pixel-cap check of `fcnseg.data.io` (width, height, source), passed in by its caller.
SizeCheck = Callable[[int, int, Path], None]

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
NUMPY_SUFFIXES: tuple[str, ...] = (".npy",)
#: First bytes of a TIFF (classic and BigTIFF, both byte orders) and of a NumPy `.npy` file.
TIFF_MAGIC: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NUMPY_MAGIC: bytes = b"\x93NUMPY"
#: PNG IHDR: bit depth is byte 24 and colour type byte 25 of the file.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GREY_TYPES = (0, 4)
#: Pillow modes `io.pil_values` keeps as one band (8-bit, 16-bit, 32-bit and float greyscale).
PILLOW_GREY_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L", "LA", "1")


@dataclass(frozen=True)
class RasterHeader:
    """What a TIFF or `.npy` header says about its pixels, before any is decoded: the size,
    the band count and the sample type (what `fcnseg serve` budgets and predict checks)."""

    height: int
    width: int
    bands: int
    dtype: np.dtype


def image_values(array: np.ndarray, source: str | Path) -> np.ndarray:
    """The values fcnseg computes with: uint8 as it is, float32 for everything else.

    The rule (no bit shifting anywhere): 8-bit data stays 0-255 (normalisation divides by 255);
    other integer types are divided by their dtype's largest value (65535 for uint16, 32767
    for int16), so every level of 10-, 12- or 14-bit data survives; floats are kept as they
    are (a float32 raster in [0, 1] stays in [0, 1]); NaN or infinite values are an error.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.integer):
        return (array.astype(np.float64) / np.iinfo(array.dtype).max).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise DataError(
                f"{source}: image holds NaN or infinite values; fill them (e.g. with 0) first"
            )
        return values
    raise DataError(f"{source}: pixel type {array.dtype} is not an image; save numbers")


def match_channels(array: np.ndarray, channels: int | None, source: str | Path) -> np.ndarray:
    """H x W x C `array` with `channels` channels: as it is, or 1 band repeated for RGB."""
    have = array.shape[2]
    if channels is None or have == channels:
        return array
    if have == 1 and channels == 3:
        return np.repeat(array, 3, axis=2)
    raise DataError(
        f"{source}: {have} band(s) but the model takes {channels}; give {channels}-band images "
        f"or train a model with model.in_channels={have}"
    )


def _hwc(array: np.ndarray, source: str | Path) -> np.ndarray:
    """An H x W or H x W x C array as H x W x C; anything else is a DataError."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise DataError(
            f"{source}: array of shape {array.shape} is not an image; save H x W or H x W x C"
        )
    return array


def _npy_error(source: str | Path, error: Exception) -> DataError:
    return DataError(
        f"{source}: cannot read NumPy file ({type(error).__name__}: {error}); save it with "
        "numpy.save (no pickled objects)"
    )


def _read_npy(path: Path, check_size: SizeCheck) -> np.ndarray:
    """A `.npy` image (H x W or H x W x C), its size checked against the cap before reading."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise _npy_error(path, error) from None
    array = _hwc(mapped, path)
    check_size(array.shape[1], array.shape[0], path)
    return np.array(array)


def _npy_stream_header(stream: BinaryIO, source: str) -> RasterHeader:
    """The header of a `.npy` file held in memory (no data read): shape and dtype."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version} is not read here; use numpy.save")
    except (OSError, ValueError, EOFError) as error:
        raise _npy_error(source, error) from None
    if dtype.hasobject:
        raise DataError(f"{source}: a .npy of Python objects is not an image; save numbers")
    if len(shape) not in (2, 3) or min(shape, default=0) < 1:
        raise DataError(
            f"{source}: array of shape {shape} is not an image; save H x W or H x W x C"
        )
    return RasterHeader(shape[0], shape[1], shape[2] if len(shape) == 3 else 1, np.dtype(dtype))


def _tiff_axes(axes: str, shape: tuple[int, ...], source: str | Path) -> tuple[int, int]:
    """(height, width) of a TIFF series from its axes ("YX", "YXS", "SYX", "CYX", ...)."""
    if "Y" not in axes or "X" not in axes or len(shape) > 3:
        raise DataError(
            f"{source}: TIFF with axes {axes} and shape {shape} is not one image; save one "
            "image of H x W x bands"
        )
    return shape[axes.index("Y")], shape[axes.index("X")]


#: Most bands a tifffile-written H x W x C stack may have to be read as bands-last (below).
_SHAPED_BANDS_MAX = 64


def _series_axes(tiff: Any, series: Any) -> tuple[str, tuple[int, ...]]:
    """(axes, shape) of a TIFF series, with one correction: `tifffile.imwrite(path, array)` of
    an H x W x C array with more than 4 bands (and no photometric) stores H pages of W x C, which
    tifffile reads back as axes "QYX". Its own shape record ("shaped" file) says the user's
    array was H x W x C, so when the last axis is the smallest and at most
    `_SHAPED_BANDS_MAX`, read it as "YXS" (bands last) rather than as H planar bands."""
    axes, shape = series.axes, tuple(int(n) for n in series.shape)
    if (
        getattr(tiff, "is_shaped", False)
        and axes == "QYX"
        and shape[2] < min(shape[0], shape[1])
        and shape[2] <= _SHAPED_BANDS_MAX
    ):
        return "YXS", shape
    return axes, shape


def _read_tiff(
    path: Path | BinaryIO, check_size: SizeCheck, source: str | Path | None = None
) -> np.ndarray | None:
    """Every band of a (multi-band, tiled, any-depth) TIFF as H x W x C; None for palette
    TIFFs, whose pixel values are colour indices (Pillow decodes those). `path` may be an
    open binary stream (an upload), named `source` in messages."""
    import tifffile

    source = source if source is not None else path
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            if tiff.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE:
                return None
            axes, shape = _series_axes(tiff, series)
            height, width = _tiff_axes(axes, shape, source)
            check_size(width, height, Path(str(source)))
            array = series.asarray()
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - tifffile and its codecs raise many types
        raise DataError(
            f"{source}: cannot decode TIFF ({type(error).__name__}: {error}); the file is "
            "corrupt, truncated or compressed with a codec not installed (pip install imagecodecs)"
        ) from None
    if array.ndim == 3 and axes.index("Y") == 1:  # planar: bands first
        array = np.moveaxis(array, 0, -1)
    return _hwc(array, source)


def _tiff_header(path: Path | BinaryIO, source: str | Path) -> RasterHeader | None:
    """Size, bands and sample type of a TIFF's first image from its tags; None for palette
    TIFFs (Pillow decodes those to RGB)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            if tiff.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE:
                return None
            series = tiff.series[0]
            axes, shape = _series_axes(tiff, series)
            dtype = np.dtype(series.dtype)
            height, width = _tiff_axes(axes, shape, source)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - tifffile raises many types
        raise DataError(
            f"{source}: not a readable TIFF ({type(error).__name__}); re-export it"
        ) from None
    return RasterHeader(height, width, max(1, int(np.prod(shape)) // (height * width)), dtype)


@functools.cache
def _warn_wide_colour_png(path: str) -> None:
    """Warn once per file that Pillow reads a 16-bit colour PNG as 8 bits."""
    warnings.warn(
        f"{path}: 16-bit colour PNG; Pillow decodes it to 8 bits per channel (its high byte). "
        "Save 16-bit colour data as TIFF or .npy to keep every level",
        stacklevel=4,
    )


def _png_is_wide_colour(path: Path) -> bool:
    """True for a 16-bit PNG of a colour type Pillow narrows to 8 bits (RGB, RGBA)."""
    with path.open("rb") as stream:
        header = stream.read(26)
    if len(header) < 26 or not header.startswith(_PNG_SIGNATURE):
        return False
    depth, colour_type = struct.unpack(">BB", header[24:26])
    return depth == 16 and colour_type not in _PNG_GREY_TYPES


def warn_if_wide_colour_png(path: Path) -> None:
    """Warn (once per file) when Pillow will narrow a 16-bit colour PNG to 8 bits."""
    if path.suffix.lower() == ".png" and _png_is_wide_colour(path):
        _warn_wide_colour_png(str(path))


def read_array(path: Path, check_size: SizeCheck) -> np.ndarray | None:
    """H x W x C raw array of a TIFF or `.npy` file; None for files Pillow decodes (and for
    palette TIFFs, whose values are colour indices)."""
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        return _read_npy(path, check_size)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path, check_size)
    return None


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a TIFF or .npy file from its header (no pixel decoded); None for
    other files (Pillow reads those)."""
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: not a readable NumPy file ({error})") from None
        shape = _hwc(mapped, path).shape
        return shape[1], shape[0]
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tiff:
                axes, shape = _series_axes(tiff, tiff.series[0])
                height, width = _tiff_axes(axes, shape, path)
        except DataError:
            raise
        except Exception as error:  # noqa: BLE001 - tifffile raises many types
            raise DataError(f"{path}: not a readable TIFF ({type(error).__name__})") from None
        return width, height
    return None


def raster_header(path: Path) -> RasterHeader | None:
    """The header of a TIFF or `.npy` file (no pixel decoded); None for the files Pillow
    decodes (PNG, JPEG, ..., palette TIFFs)."""
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise _npy_error(path, error) from None
        shape = _hwc(mapped, path).shape
        return RasterHeader(shape[0], shape[1], shape[2], np.dtype(mapped.dtype))
    if suffix in TIFF_SUFFIXES:
        return _tiff_header(path, path)
    return None


def stream_kind(data: bytes) -> str | None:
    """ "tiff" or "npy" for bytes this module decodes (by their magic), None for Pillow's."""
    if data.startswith(TIFF_MAGIC):
        return "tiff"
    if data.startswith(NUMPY_MAGIC):
        return "npy"
    return None


def stream_header(data: bytes, source: str) -> RasterHeader | None:
    """The header of a TIFF or `.npy` file held in memory (an upload); None when Pillow
    decodes it (another format, or a palette TIFF)."""
    kind = stream_kind(data)
    if kind == "npy":
        return _npy_stream_header(io.BytesIO(data), source)
    if kind == "tiff":
        return _tiff_header(io.BytesIO(data), source)
    return None


def read_stream(data: bytes, source: str, check_size: SizeCheck) -> np.ndarray | None:
    """H x W x C raw array of a TIFF or `.npy` file held in memory; None when Pillow decodes
    it. The header is read first, so `check_size` runs before any pixel is decoded."""
    kind = stream_kind(data)
    if kind == "tiff":
        return _read_tiff(io.BytesIO(data), check_size, source)
    if kind != "npy":
        return None
    header = _npy_stream_header(io.BytesIO(data), source)
    check_size(header.width, header.height, Path(source))
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise _npy_error(source, error) from None
    return _hwc(array, source)


def pillow_bands(image: Any) -> int:
    """Bands `io.pil_values` gives a Pillow image of this mode on its own: 1 for greyscale
    (8-bit, 16-bit, float, with or without alpha), 3 for everything else (alpha dropped)."""
    return 1 if image.mode in PILLOW_GREY_MODES else 3


def check_bands(path: str | Path, channels: int) -> None:
    """One-line DataError (the file, its band count and the fix) when `path` cannot become a
    `channels`-band image by the rules of `io.read_values`, read from its header alone.

    Why from the header: `fcnseg predict` refuses a set of inputs made for another model
    before any is decoded. Pillow's formats become 1 or 3 bands whatever they hold, so they
    are opened only for a model of another band count; a header that cannot be read passes
    here, and decoding reports that file in its own words.
    """
    from PIL import Image

    path = Path(path)
    try:
        header = raster_header(path)
        if header is not None:
            have = header.bands
        elif channels in (1, 3):
            return
        else:
            with Image.open(path) as image:
                have = pillow_bands(image)
    except (DataError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return
    match_channels(np.empty((1, 1, have), np.uint8), channels, path)
