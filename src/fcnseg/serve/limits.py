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
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.errors import UsageError

#: Decoders an upload may use (Pillow format names).
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Defaults: 10 MiB per upload, 4 requests waiting.
DEFAULT_MAX_BYTES: int = 10 * 1024 * 1024
DEFAULT_QUEUE: int = 4
#: The per-request memory budget in "request pixels" (`InferenceSpec.request_pixels`: the
#: largest forward pass at the model's input scale and the mode's largest scale or tile batch,
#: plus a quarter of the image). Measured, the whole server peaks at ~0.75 GB (torch, the model)
#: plus ~0.5 kB per request pixel, so 1.2 M keeps one request under 1.5 GB peak RSS with either
#: shipped CamVid net (benchmarks/RESULTS.md, serve memory). The lite0 net in its recommended
#: inference (input scale 2, multi-scale 1.25) then takes up to ~184 000 image pixels (480 x 360
#: is 1.12 M request pixels; 640 x 480 is refused); the fast net (input scale 1.334, whole) up
#: to ~590 000 (600 x 960; 720 x 960 is refused). A 2000 x 2000 upload is refused by both.
DEFAULT_MAX_PIXELS: int = 1_200_000
#: A body must keep arriving: no gap longer than this many seconds, and after that long at
#: least MIN_BODY_RATE bytes per second on average (a client stalled after 1 byte is dropped).
DEFAULT_BODY_TIMEOUT_S: float = 10.0
DEFAULT_MIN_BODY_RATE: int = 16 * 1024
#: Connections (and requests in progress) uvicorn takes at once; more get 503 from uvicorn.
DEFAULT_MAX_CONNECTIONS: int = 64
#: Bytes a multipart body may carry beyond the file itself (boundaries, part headers).
MULTIPART_SLACK: int = 64 * 1024
#: What `limits.max_pixels` is compared with: request pixels of a height x width image.
PixelCost = Callable[[int, int], int]


class UploadError(Exception):
    """A refused upload: `status` (400 or 413) and a message meant for the person sending it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServeLimits:
    """Bounds of the service: upload bytes, the pixel budget, waiting requests, connections.

    `queue` counts requests waiting for a worker beyond the `workers` being served; one more
    is answered 503 with Retry-After instead of piling up memory and latency. A request holds
    its slot from before its body is read until its answer, so at most workers + queue bodies
    are ever buffered. `max_pixels` is in request pixels (see DEFAULT_MAX_PIXELS).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = DEFAULT_QUEUE
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    min_body_rate: int = DEFAULT_MIN_BODY_RATE
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        whole = (self.max_bytes, self.max_pixels, self.queue, self.min_body_rate)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in whole):
            raise UsageError(f"limits must be whole numbers: {self.as_dict()}")
        if self.max_bytes < 1 or self.max_pixels < 1 or self.queue < 0 or self.min_body_rate < 0:
            raise UsageError(
                f"limits must be positive (queue may be 0): max_bytes={self.max_bytes}, "
                f"max_pixels={self.max_pixels}, queue={self.queue}"
            )
        if not (math.isfinite(self.body_timeout_s) and 0 < self.body_timeout_s <= 3600):
            raise UsageError(f"--body-timeout must be in (0, 3600] s, got {self.body_timeout_s}")
        if not 1 <= self.max_connections <= 100_000:
            raise UsageError(f"--max-connections must be 1 or more, got {self.max_connections}")

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


def largest_fitting(width: int, height: int, cost: PixelCost, budget: int) -> tuple[int, int]:
    """The largest size of this aspect ratio whose cost fits `budget` (for the 413 message)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        size = max(1, int(width * middle)), max(1, int(height * middle))
        low, high = (middle, high) if cost(size[1], size[0]) <= budget else (low, middle)
    return max(1, int(width * low)), max(1, int(height * low))


def check_pixels(width: int, height: int, limits: ServeLimits, cost: PixelCost | None) -> None:
    """413 when a `width` x `height` image is over the pixel budget, with the size that fits.

    `cost` maps height, width to request pixels (the model's input scale and inference mode);
    None counts the image's own pixels.
    """
    cost = cost or (lambda h, w: h * w)
    needed = cost(height, width)
    if needed <= limits.max_pixels:
        return
    fit_width, fit_height = largest_fitting(width, height, cost, limits.max_pixels)
    raise UploadError(
        413,
        f"the image is {width} x {height}; with this model and inference it needs "
        f"{needed:,} request pixels and this server's limit is {limits.max_pixels:,} "
        f"(--max-pixels); downscale it to at most {fit_width} x {fit_height}",
    )


def open_upload(data: bytes, limits: ServeLimits, cost: PixelCost | None = None) -> Image.Image:
    """An upload opened lazily: its header read and its size checked, no pixel decoded.

    Why lazily: `Image.open` reads only the header, so a 40 kB file that declares 2000 x 2000
    (or 50000 x 50000) pixels is refused here before it costs its decoded size in memory.
    """
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
    check_pixels(width, height, limits, cost)
    return image


def decode_opened(image: Image.Image) -> np.ndarray:
    """The pixels of an image `open_upload` accepted, as uint8 RGB H x W x 3.

    The same conversions as `fcnseg.data.io.read_image` (EXIF orientation, alpha dropped,
    greyscale / palette / 16-bit to 8-bit RGB), so the server sees what `fcnseg predict` sees.
    """
    from fcnseg.data.io import to_rgb_array  # the package's one set of decoding rules

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


def decode_upload(data: bytes, limits: ServeLimits, cost: PixelCost | None = None) -> np.ndarray:
    """An uploaded file's bytes -> uint8 RGB array H x W x 3, or an UploadError."""
    return decode_opened(open_upload(data, limits, cost))
