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

from fcnseg.errors import DataError, UsageError

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


#: Peak-RSS bytes one request pixel stands for (InferenceSpec.request_pixels: ~450 B per
#: forward pixel measured on the shipped CamVid nets).
REQUEST_PIXEL_BYTES: int = 450
#: How uploads are named in messages.
UPLOAD_NAME: str = "the upload"


def input_bytes_per_pixel(bands: int, dtype: np.dtype, channels: int) -> int:
    """Bytes per image pixel an upload's own arrays hold while it is served.

    The decoded samples (`bands` x itemsize); for data other than uint8 the conversion to
    values (`image_values`: a float64 quotient for integers, a float32 copy for floats) and the
    float32 values of the model's `channels`; then those channels as a C x H x W copy and as the
    float32 normalised batch. uint8 values are the decoded array itself (or its grey repeated),
    and their C x H x W copy is uint8.
    """
    dtype = np.dtype(dtype)
    raw = bands * dtype.itemsize
    if dtype == np.uint8:
        return raw + channels * (1 + 1 + 4)
    quotient = 8 if np.issubdtype(dtype, np.integer) else 4
    return raw + bands * quotient + channels * (4 + 4 + 4)


#: An 8-bit RGB upload's arrays: inside the per-request-pixel cost the budget was measured with.
RGB8_INPUT_BYTES: int = input_bytes_per_pixel(3, np.dtype(np.uint8), 3)


def upload_cost(cost: PixelCost | None, bytes_per_pixel: int) -> PixelCost:
    """`cost` (request pixels; None: the image's pixels) plus, in request pixels, the bytes per
    pixel an upload's arrays take beyond an 8-bit RGB upload's (REQUEST_PIXEL_BYTES each): a
    16-bit, float or many-band upload decodes to arrays several times larger than those the
    budget was measured with, and the budget must see them before they are allocated."""
    base = cost or (lambda h, w: h * w)
    extra = max(0, bytes_per_pixel - RGB8_INPUT_BYTES)
    if not extra:
        return base
    return lambda h, w: base(h, w) + math.ceil(h * w * extra / REQUEST_PIXEL_BYTES)


@dataclass(frozen=True)
class OpenedUpload:
    """An upload whose header was read and checked; no pixel decoded yet.

    `image` is the lazily opened Pillow image for Pillow's formats (and palette TIFFs); None
    for TIFF and `.npy` files, which `fcnseg.data.bands` decodes from `data` with every band
    and its bit depth. `bands` and `dtype` are the decoded samples' (what the budget counts).
    """

    data: bytes
    width: int
    height: int
    bands: int
    dtype: np.dtype
    image: Image.Image | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _pillow_samples(image: Image.Image) -> tuple[int, np.dtype]:
    """(bands, sample type) Pillow decodes an image of this mode to."""
    if image.mode.startswith("I;16"):
        return 1, np.dtype(np.uint16)
    if image.mode in ("I", "F"):
        return 1, np.dtype(np.int32 if image.mode == "I" else np.float32)
    return len(image.getbands()), np.dtype(np.uint8)


def _open_with_pillow(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise UploadError(413, "the image declares too many pixels to decode safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise UploadError(
            400,
            "the upload is not an image this server can read; send a PNG, JPEG, WebP, BMP, GIF, "
            "TIFF or NumPy .npy file",
        ) from None


def open_upload(
    data: bytes, limits: ServeLimits, cost: PixelCost | None = None, channels: int = 3
) -> OpenedUpload:
    """An upload opened lazily: its header read and checked, no pixel decoded.

    Why lazily: the header alone says how many pixels, bands and bytes per sample a file
    holds, so a 40 kB file that declares 2000 x 2000 (or 50000 x 50000) pixels, or a cube
    whose decoded arrays would not fit the budget (`upload_cost`: the real bytes per pixel),
    is refused (413) before it costs its decoded size in memory; one whose band count cannot
    become the model's `channels` is refused (400) with the rule's one line. TIFF and `.npy`
    files are recognised by their first bytes and read as `fcnseg predict` reads them.
    """
    from fcnseg.data import bands as band_rules

    check_size(len(data), limits)
    try:
        header = band_rules.stream_header(data, UPLOAD_NAME)
    except DataError as error:
        raise UploadError(400, str(error)) from None
    image = None
    if header is not None:
        width, height, count, dtype = header.width, header.height, header.bands, header.dtype
    else:
        image = _open_with_pillow(data)
        (width, height), (count, dtype) = image.size, _pillow_samples(image)
    if width < 1 or height < 1:
        raise UploadError(400, f"the image has no pixels ({width} x {height})")
    bytes_per_pixel = input_bytes_per_pixel(count, dtype, channels)
    check_pixels(width, height, limits, upload_cost(cost, bytes_per_pixel))
    if header is not None or channels not in (1, 3):  # Pillow's images become 1 or 3 bands
        have = count if image is None else band_rules.pillow_bands(image)
        try:
            band_rules.match_channels(np.empty((1, 1, have), np.uint8), channels, UPLOAD_NAME)
        except DataError as error:
            raise UploadError(400, str(error)) from None
    return OpenedUpload(data, width, height, count, dtype, image)


def decode_opened(upload: OpenedUpload, channels: int = 3) -> np.ndarray:
    """The values of an upload `open_upload` accepted: H x W x `channels`, uint8 for 8-bit
    data and float32 on the [0, 1] scale otherwise.

    The rules of `fcnseg.data.io.read_values`, so the server sees what `fcnseg predict` sees:
    EXIF orientation, alpha dropped, greyscale repeated for RGB; 16-bit data divided by 65535
    (never shifted), floats kept; every band of a TIFF or `.npy`. An 8-bit RGB upload for an
    RGB model is the decoded array itself, as before.
    """
    from fcnseg.data import bands as band_rules
    from fcnseg.data.io import check_pixel_count, pil_values

    try:
        if upload.image is None:
            raw = band_rules.read_stream(upload.data, UPLOAD_NAME, check_pixel_count)
            if raw is None:  # pragma: no cover - open_upload read its header as TIFF or .npy
                raise UploadError(400, "the upload's header and its data disagree")
            values = band_rules.image_values(raw, UPLOAD_NAME)
            return band_rules.match_channels(values, channels, UPLOAD_NAME)
        return pil_values(_loaded(upload.image), channels, UPLOAD_NAME)
    except DataError as error:
        raise UploadError(400, str(error)) from None


def _loaded(image: Image.Image) -> Image.Image:
    """A lazily opened Pillow image decoded, EXIF orientation applied (UploadError if bad)."""
    try:
        image.load()
    except Image.DecompressionBombError:
        raise UploadError(413, "the image declares too many pixels to decode safely") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
        raise UploadError(
            400, f"the {image.format} file is corrupt or truncated; re-export it and try again"
        ) from None
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        return image


def decode_upload(
    data: bytes, limits: ServeLimits, cost: PixelCost | None = None, channels: int = 3
) -> np.ndarray:
    """An uploaded file's bytes -> H x W x `channels` values (decode_opened), or an
    UploadError."""
    return decode_opened(open_upload(data, limits, cost, channels), channels)
