"""What an upload may be, and turning one into pixels without trusting it.

A served model is reachable by anyone who can reach the port, so every upload is hostile until
proven otherwise: its byte count is bounded before it is read whole, its pixel count is read
from the file header and checked before a single pixel is decompressed (a 40 kB PNG can declare
50000 x 50000 pixels: a "decompression bomb"), only a handful of well-known decoders are
allowed (Pillow can open EPS, ICNS, ... through plug-ins nobody needs here), and every decoder
failure becomes a one-line `UploadError` with the HTTP status the client should see.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.errors import UsageError

#: Decoders an upload may use (Pillow format names).
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Defaults: 10 MiB per upload, 4 megapixels (e.g. 2000 x 2000), 4 requests waiting.
DEFAULT_MAX_BYTES: int = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS: int = 4_000_000
DEFAULT_QUEUE: int = 4
#: Bytes a multipart body may carry beyond the file itself (boundaries, part headers).
MULTIPART_SLACK: int = 64 * 1024


class UploadError(Exception):
    """A refused upload: `status` (400 or 413) and a message meant for the person sending it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServeLimits:
    """Bounds of the service: upload bytes and pixels, and requests allowed to wait.

    `queue` counts requests waiting for a worker beyond the `workers` being served; one more
    is answered 503 with Retry-After instead of piling up memory and latency.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.queue < 0:
            raise UsageError(
                f"limits must be positive (queue may be 0): max_bytes={self.max_bytes}, "
                f"max_pixels={self.max_pixels}, queue={self.queue}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MB"


def check_size(count: int, limits: ServeLimits) -> None:
    """413 for an upload over `limits.max_bytes`, 400 for an empty one."""
    if count == 0:
        raise UploadError(400, "the upload is empty; choose an image file (PNG, JPEG, WebP)")
    if count > limits.max_bytes:
        raise UploadError(
            413,
            f"the upload is {_megabytes(count)}; this server accepts at most "
            f"{_megabytes(limits.max_bytes)} per image",
        )


def decode_upload(data: bytes, limits: ServeLimits) -> np.ndarray:
    """An uploaded file's bytes -> uint8 RGB array H x W x 3, or an UploadError.

    The same conversions as `fcnseg.data.io.read_image` (EXIF orientation, alpha dropped,
    greyscale / palette / 16-bit to 8-bit RGB), so the server sees what `fcnseg predict` sees.
    """
    from fcnseg.data.io import to_rgb_array  # the package's one set of decoding rules

    check_size(len(data), limits)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise UploadError(413, "the image declares too many pixels to decode safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise UploadError(
            400,
            "the upload is not an image this server can read; send a PNG, JPEG, WebP, BMP, GIF "
            "or TIFF file",
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise UploadError(400, f"the image has no pixels ({width} x {height})")
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"the image is {width} x {height} = {width * height:,} pixels; this server accepts "
            f"at most {limits.max_pixels:,} pixels; downscale it first",
        )
    try:
        image.load()
    except Image.DecompressionBombError:
        raise UploadError(413, "the image declares too many pixels to decode safely") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
        raise UploadError(
            400, f"the {image.format} file is corrupt or truncated; re-export it and try again"
        ) from None
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    return to_rgb_array(image)
