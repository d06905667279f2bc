"""Rasters larger than memory: a TIFF read by row window, a tiled TIFF written as rows arrive.

Why not `tifffile.imread`: a 30000 x 30000 RGB image decodes to 2.7 GB and its class scores to
tens of GB. `TiffRowReader.read_rows(top, bottom)` reads and decodes only the TIFF tiles (or
strips) that cross those rows, straight from the file (or, for uncompressed contiguous data, the
bytes of those rows), so a caller walking down the image holds one band of rows at a time.
`TiledTiffSink` is the other end: rows are handed over in order, and a writer thread turns them
into compressed tiles through a bounded queue, so what waits for the disk is a few tile rows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import DataError

#: Largest decoded TIFF segment (tile or strip) read: a file stored as one huge strip would
#: otherwise be decoded whole, which is what the windowed reader exists to avoid.
MAX_SEGMENT_BYTES = 256 * 1024 * 1024
#: Tile side of the TIFFs written (a multiple of 16, as the TIFF standard asks).
OUTPUT_TILE = 256
#: Tile rows that may wait for the writer thread before the producer blocks.
QUEUE_ROWS = 2
#: Sample types read by window: 8- and 16-bit unsigned integers and 32-bit floats (the values
#: then follow `fcnseg.data.bands.image_values`, as in training).
READABLE_DTYPES: tuple[np.dtype, ...] = (
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.float32),
)
#: How to convert a raster that fcnseg cannot read by window.
RETILE_HINT = (
    "store it as a tiled TIFF (e.g. `gdal_translate -co TILED=YES in.tif out.tif` or "
    "tifffile.imwrite(..., tile=(256, 256)))"
)


def _tifffile() -> Any:
    import tifffile

    return tifffile


class TiffRowReader:
    """The first image of a TIFF, read by bands of rows: `read_rows(top, bottom)` -> rows x W x S.

    Any number of samples (bands) per pixel, stored as uint8, uint16 or float32
    (READABLE_DTYPES); rows come back in the file's sample type (`dtype`, native byte order).
    Decodes only the segments (tiles or strips) crossing the band; uncompressed contiguous data
    is read by byte range. Any problem with the file is a one-line `DataError` naming it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self._open()
        try:
            self._layout()
        except DataError:
            self._file.close()
            raise

    def _layout(self) -> None:
        """Size, samples and how the pixels are stored; DataError for what cannot be read."""
        page = self._page
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.samples = int(page.samplesperpixel)
        self.dtype = np.dtype(page.dtype) if page.dtype is not None else None
        self._check()
        #: The samples as stored (the file's byte order), for byte-range reads.
        self._stored = self.dtype.newbyteorder(self._file.byteorder)
        self._separate = self.samples > 1 and page.planarconfig == 2
        self._contiguous = page.is_memmappable and not self._separate and page.compression == 1
        self._segment = (
            (int(page.tilelength), int(page.tilewidth))
            if page.is_tiled
            else (min(int(page.rowsperstrip), self.height), self.width)
        )
        segment_bytes = self._segment[0] * self._segment[1] * self.samples * self.dtype.itemsize
        if not self._contiguous and segment_bytes > MAX_SEGMENT_BYTES:
            raise DataError(
                f"{self.path}: stored in {self._segment[0]}-row strips of "
                f"{segment_bytes / 2**20:.0f} MiB, too large to read by window; {RETILE_HINT}"
            )

    def _open(self) -> Any:
        """The open TiffFile, with its first page as `_page`; any parse failure is a DataError."""
        tifffile = _tifffile()
        try:
            handle = tifffile.TiffFile(self.path)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the parser trips on, the file is bad
            raise DataError(f"{self.path}: not a readable TIFF ({error})") from None
        try:
            self._page = handle.pages.first
        except Exception as error:  # noqa: BLE001 - e.g. IndexError: no first page
            handle.close()
            raise DataError(f"{self.path}: not a readable TIFF (no image: {error!r})") from None
        return handle

    def _check(self) -> None:
        page = self._page
        if self.dtype not in READABLE_DTYPES:
            raise DataError(
                f"{self.path}: {self.dtype} samples; the tiled predict path reads uint8, uint16 "
                "and float32 images: convert it (e.g. gdal_translate -ot Float32)"
            )
        if int(page.imagedepth) != 1 or self.height < 1 or self.width < 1:
            raise DataError(f"{self.path}: a {page.shape} volume is not a 2-D image")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TiffRowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) as a (bottom - top) x width x samples array of `dtype`."""
        if not 0 <= top < bottom <= self.height:
            raise ValueError(f"rows {top}:{bottom} outside 0:{self.height}")
        if self._contiguous:
            return self._read_contiguous(top, bottom)
        band = np.zeros((bottom - top, self.width, self.samples), self.dtype)
        seg_h, seg_w = self._segment
        across = -(-self.width // seg_w)
        per_plane = across * -(-self.height // seg_h)
        planes = range(self.samples) if self._separate else [None]
        for row in range(top // seg_h, (bottom - 1) // seg_h + 1):
            for column in range(across):
                for plane in planes:
                    index = (plane or 0) * per_plane + row * across + column
                    self._paste(band, top, index, plane)
        return band

    def _read_contiguous(self, top: int, bottom: int) -> np.ndarray:
        row_bytes = self.width * self.samples * self.dtype.itemsize
        handle = self._file.filehandle
        handle.seek(int(self._page.dataoffsets[0]) + top * row_bytes)
        data = handle.read((bottom - top) * row_bytes)
        if len(data) != (bottom - top) * row_bytes:
            raise DataError(f"{self.path}: truncated at row {top}; the file is incomplete")
        rows = np.frombuffer(data, self._stored).reshape(bottom - top, self.width, self.samples)
        return rows if self._stored == self.dtype else rows.astype(self.dtype)

    def _paste(self, band: np.ndarray, top: int, index: int, plane: int | None) -> None:
        """Decode segment `index` and copy the part of it inside the band."""
        page, handle = self._page, self._file.filehandle
        count = int(page.databytecounts[index])
        if count == 0:
            return  # a sparse TIFF's missing segment reads as zeros, as tifffile does
        handle.seek(int(page.dataoffsets[index]))
        data = handle.read(count)
        try:
            segment, (_, _, y, x, _), _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as error:  # noqa: BLE001 - any codec failure is the file's problem
            raise DataError(
                f"{self.path}: segment {index} cannot be decoded (compression "
                f"{page.compression!r}: {error}); the file is corrupt or needs imagecodecs"
            ) from None
        if segment is None:
            raise DataError(f"{self.path}: segment {index} is empty or truncated")
        rows = segment[0]  # depth 1: rows x columns x samples
        first, last = max(y, top), min(y + rows.shape[0], top + band.shape[0], self.height)
        columns = min(rows.shape[1], self.width - x)
        if first >= last or columns <= 0:
            return
        part = rows[first - y : last - y, :columns]
        channels = slice(None) if plane is None else slice(plane, plane + 1)
        band[first - top : last - top, x : x + columns, channels] = part


class TiledTiffSink:
    """A tiled, compressed TIFF written from consecutive bands of rows (`put`), then `close`.

    Why a thread: tifffile writes a page from an iterator of tiles in one call, and a caller may
    write two files (labels, probabilities) from one pass; each file's call runs on its own
    thread and pulls tiles from a queue of at most QUEUE_ROWS tile rows.
    """

    def __init__(
        self,
        path: Path,
        height: int,
        width: int,
        dtype: np.dtype | type,
        samples: int = 1,
        **page_options: Any,
    ) -> None:
        self.height, self.width, self.samples = height, width, samples
        self.dtype = np.dtype(dtype)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(QUEUE_ROWS)
        self._error: BaseException | None = None
        shape = (height, width) if samples == 1 else (height, width, samples)
        options = {
            "shape": shape,
            "dtype": self.dtype,
            "tile": (OUTPUT_TILE, OUTPUT_TILE),
            "compression": "zlib",
            "compressionargs": {"level": 1},
            "photometric": "minisblack",
            "metadata": None,
            **page_options,
        }
        self._thread = threading.Thread(target=self._write, args=(path, options), daemon=True)
        self._thread.start()

    def _write(self, path: Path, options: dict[str, Any]) -> None:
        try:
            with _tifffile().TiffWriter(path, bigtiff=True) as writer:
                writer.write(self._tiles(), **options)
        except BaseException as error:  # noqa: BLE001 - handed to the producer in put/close
            self._error = error

    def _tiles(self) -> Iterator[np.ndarray]:
        while (rows := self._queue.get()) is not None:
            for left in range(0, self.width, OUTPUT_TILE):
                tile = np.zeros((OUTPUT_TILE, OUTPUT_TILE, self.samples), self.dtype)
                part = rows[:, left : left + OUTPUT_TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile if self.samples > 1 else tile[..., 0]

    def _send(self, rows: np.ndarray | None) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(rows, timeout=0.5)
                return
            except queue.Full:
                continue
        if rows is None and self._error is None:
            return  # the writer had every tile it needed (the height is a multiple of a tile)
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
        raise RuntimeError("the TIFF writer thread stopped")

    def put(self, rows: np.ndarray) -> None:
        """Append rows (r x width [x samples]) below those already put."""
        self._pending.append(rows.reshape(rows.shape[0], self.width, self.samples))
        self._pending_rows += rows.shape[0]
        while self._pending_rows >= OUTPUT_TILE:
            band = np.concatenate(self._pending)
            self._send(band[:OUTPUT_TILE])
            self._pending, self._pending_rows = [band[OUTPUT_TILE:]], band.shape[0] - OUTPUT_TILE

    def close(self) -> None:
        """Flush the last rows and wait for the file; raises the writer's error, if any."""
        if self._pending_rows:
            self._send(np.concatenate(self._pending))
        self._pending, self._pending_rows = [], 0
        self._send(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the writer after an error elsewhere (the caller discards the file)."""
        self._pending, self._pending_rows = [], 0
        while self._thread.is_alive():
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:  # drop a waiting band to make room for the end mark
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self._thread.join()
