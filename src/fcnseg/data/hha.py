"""HHA: a depth map re-encoded as three image-like channels (Gupta et al., ECCV 2014).

The three channels are horizontal disparity, height above the ground, and the angle between the
local surface normal and gravity. A convnet pretrained on RGB transfers better to these than to
raw depth, which is why the FCN paper's best RGB-D net (late fusion) uses an HHA stream.

Conventions (all arrays are numpy, H x W):

- Depth is in metres; 0 or NaN marks a missing measurement.
- Camera frame: x right, y down, z forward (the pinhole model of the intrinsics). Pixel
  coordinates are MATLAB-style 1-based (column j, row i of the array sit at u = j + 1,
  v = i + 1), because the NYUDv2 calibration (and Gupta's code) is expressed that way.
- Gravity is represented by the unit *up* vector in the camera frame; a level camera has
  up = (0, -1, 0).
- Surface normals are oriented towards the camera, so a floor has normal == up (angle 0 deg),
  a wall 90 deg and a ceiling 180 deg.

Gravity estimation follows Gupta's iterative alignment: starting from the level-camera guess,
collect the normals nearly parallel to the current estimate (floors, ceilings, table tops) and
those nearly perpendicular to it (walls), then take the direction most parallel to the first set
and most perpendicular to the second, i.e. the eigenvector of smallest eigenvalue of
sum(n n^T, walls) - sum(n n^T, floors); repeat with a tighter threshold. Pass `up=` to skip it
when the gravity direction is known (e.g. from an accelerometer or a synthetic scene).

8-bit encoding (`encode_hha`) matches rcnn-depth's saveHHA.m: 31000 / depth_cm (depth clamped at
>= 100 cm), height in cm above the lowest point, angle + 38 degrees, each rounded and saturated
to 0..255; missing pixels encode as 0 (MATLAB's uint8(NaN)). Channel order as stored on disk:
(disparity, height, angle).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from fcnseg.constants import (
    HHA_ANGLE_OFFSET_DEG,
    HHA_DEFAULT_CAMERA_HEIGHT_CM,
    HHA_DISPARITY_NUMERATOR_CM,
    HHA_GRAVITY_ANGLE_THRESHOLDS_DEG,
    HHA_GRAVITY_HALF_WIDTH,
    HHA_GRAVITY_ITERATIONS,
    HHA_MIN_DEPTH_CM,
    HHA_MIN_FLOOR_DROP_CM,
    HHA_NORMAL_HALF_WIDTH,
    NYUD_CX,
    NYUD_CY,
    NYUD_FX,
    NYUD_FY,
)

_CM_PER_M = 100.0
_MM_PER_M = 1000.0
_UINT8_MAX = 255.0
#: Initial gravity guess: a level camera, whose "up" is minus the image's y axis.
LEVEL_CAMERA_UP: tuple[float, float, float] = (0.0, -1.0, 0.0)
#: A window must have at least this many valid depth samples for its plane fit to count
#: (three points define a plane; a few more keep the fit away from degenerate lines).
_MIN_SUPPORT = 4


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels (1-based principal point, see the module docstring)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, factor: float) -> CameraIntrinsics:
        """Intrinsics of the image resized by `factor` (pixel centres kept aligned)."""
        # A 1-based coordinate u maps to (u - 0.5) * factor + 0.5 under resizing.
        return CameraIntrinsics(
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=(self.cx - 0.5) * factor + 0.5,
            cy=(self.cy - 0.5) * factor + 0.5,
        )


NYUD_INTRINSICS = CameraIntrinsics(fx=NYUD_FX, fy=NYUD_FY, cx=NYUD_CX, cy=NYUD_CY)


@dataclass(frozen=True)
class HHAComponents:
    """The HHA channels in physical units, before 8-bit encoding (NaN where undefined)."""

    disparity: np.ndarray  # 1 / depth, in 1/m
    height: np.ndarray  # metres above the estimated floor
    angle: np.ndarray  # degrees between the surface normal and up
    up: np.ndarray  # unit up vector in the camera frame (3,)


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def backproject(depth: np.ndarray, intrinsics: CameraIntrinsics = NYUD_INTRINSICS) -> np.ndarray:
    """Camera-frame points H x W x 3 (metres) of a depth map; missing pixels give NaN."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D H x W array, got shape {depth.shape}")
    height, width = depth.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    z = np.where(_valid_depth(depth), depth.astype(np.float64), np.nan)
    x = (cols + 1.0 - intrinsics.cx) * z / intrinsics.fx
    y = (rows + 1.0 - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=-1)


def surface_normals(points: np.ndarray, half_width: int = HHA_NORMAL_HALF_WIDTH) -> np.ndarray:
    """Unit normals H x W x 3 from a least-squares plane over a square window, camera-facing.

    Each pixel's normal is the eigenvector of least variance of the valid points in its
    (2 * half_width + 1)^2 window (box-filtered first and second moments, so the cost does not
    grow with the window). Missing points carry no weight; windows with too few points give NaN.
    """
    valid = np.isfinite(points).all(axis=-1)
    weight = valid.astype(np.float64)
    p = np.where(valid[..., None], points, 0.0)
    size = 2 * half_width + 1

    def box(values: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(values, size=size, mode="constant")

    count = box(weight)
    safe = np.maximum(count, 1e-12)
    mean = np.stack([box(p[..., k]) / safe for k in range(3)], axis=-1)
    cov = np.empty(points.shape[:2] + (3, 3))
    for a in range(3):
        for b in range(a, 3):
            moment = box(p[..., a] * p[..., b]) / safe
            cov[..., a, b] = cov[..., b, a] = moment - mean[..., a] * mean[..., b]
    enough = count * size * size >= _MIN_SUPPORT - 0.5
    cov[~enough] = np.eye(3)
    _, vectors = np.linalg.eigh(cov)
    normals = vectors[..., :, 0]
    # Orient towards the camera: the normal and the viewing ray (the point itself) oppose.
    facing = np.einsum("hwk,hwk->hw", normals, np.where(valid[..., None], points, mean))
    normals = np.where((facing > 0)[..., None], -normals, normals)
    normals[~(enough & valid)] = np.nan
    return normals


def estimate_up(
    normals: np.ndarray,
    initial: tuple[float, float, float] | np.ndarray = LEVEL_CAMERA_UP,
    angle_thresholds_deg: tuple[float, ...] = HHA_GRAVITY_ANGLE_THRESHOLDS_DEG,
    iterations: tuple[int, ...] = HHA_GRAVITY_ITERATIONS,
) -> np.ndarray:
    """Gupta's iterative gravity estimate from surface normals; returns a unit up vector.

    With the current estimate g, normals with |n.g| > cos(t) are "horizontal surfaces" and those
    with |n.g| < sin(t) are "vertical surfaces"; the new g minimises
    sum_vertical (n.g)^2 - sum_horizontal (n.g)^2, and keeps the sign of the previous g.
    """
    flat = normals.reshape(-1, 3)
    flat = flat[np.isfinite(flat).all(axis=1)]
    up = np.asarray(initial, dtype=np.float64)
    up = up / np.linalg.norm(up)
    if len(flat) == 0:
        return up
    for threshold, rounds in zip(angle_thresholds_deg, iterations, strict=True):
        cos_t, sin_t = np.cos(np.deg2rad(threshold)), np.sin(np.deg2rad(threshold))
        for _ in range(rounds):
            similarity = np.abs(flat @ up)
            horizontal = flat[similarity > cos_t]
            vertical = flat[similarity < sin_t]
            scatter = vertical.T @ vertical - horizontal.T @ horizontal
            _, vectors = np.linalg.eigh(scatter)
            candidate = vectors[:, 0]
            up = candidate * (1.0 if candidate @ up >= 0 else -1.0)
    return up / np.linalg.norm(up)


def hha_components(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics = NYUD_INTRINSICS,
    up: tuple[float, float, float] | np.ndarray | None = None,
    normal_half_width: int = HHA_NORMAL_HALF_WIDTH,
    gravity_half_width: int = HHA_GRAVITY_HALF_WIDTH,
) -> HHAComponents:
    """Disparity, height above the floor and angle with gravity of a depth map (metres).

    Args:
        depth: H x W depth in metres (0/NaN = missing).
        intrinsics: camera intrinsics at this resolution (`CameraIntrinsics.scaled` for resized
            images); NYUDv2's colour camera by default.
        up: known unit up vector in the camera frame; None estimates it from the normals.
    """
    points = backproject(depth, intrinsics)
    normals = surface_normals(points, normal_half_width)
    if up is None:
        up_vector = estimate_up(surface_normals(points, gravity_half_width))
    else:
        up_vector = np.asarray(up, dtype=np.float64)
        if up_vector.shape != (3,) or not np.isfinite(up_vector).all() or not up_vector.any():
            raise ValueError(f"up must be a finite non-zero 3-vector, got {up!r}")
        up_vector = up_vector / np.linalg.norm(up_vector)
    elevation = points @ up_vector  # metres above the camera centre, NaN where missing
    lowest = np.nanmin(elevation) if np.isfinite(elevation).any() else 0.0
    if lowest * _CM_PER_M > -HHA_MIN_FLOOR_DROP_CM:
        # The floor is not in view: assume the usual camera height above it.
        lowest = -HHA_DEFAULT_CAMERA_HEIGHT_CM / _CM_PER_M
    cosine = np.clip(normals @ up_vector, -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        disparity = np.where(_valid_depth(depth), 1.0 / depth, np.nan)
    return HHAComponents(
        disparity=disparity,
        height=elevation - lowest,
        angle=np.degrees(np.arccos(cosine)),
        up=up_vector,
    )


def encode_hha(components: HHAComponents) -> np.ndarray:
    """8-bit H x W x 3 HHA image (disparity, height, angle) exactly as saveHHA.m scales it."""
    depth_cm = _CM_PER_M / components.disparity
    disparity = HHA_DISPARITY_NUMERATOR_CM / np.maximum(depth_cm, HHA_MIN_DEPTH_CM)
    channels = [
        disparity,
        components.height * _CM_PER_M,
        components.angle + HHA_ANGLE_OFFSET_DEG,
    ]
    stacked = np.stack(channels, axis=-1)
    stacked = np.nan_to_num(stacked, nan=0.0)
    return np.clip(np.round(stacked), 0, _UINT8_MAX).astype(np.uint8)


def depth_to_hha(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics = NYUD_INTRINSICS,
    up: tuple[float, float, float] | np.ndarray | None = None,
) -> np.ndarray:
    """Depth in metres -> 8-bit HHA image H x W x 3 (see `hha_components`, `encode_hha`)."""
    return encode_hha(hha_components(depth, intrinsics, up=up))


def write_hha_folder(
    depth_dir: Path, out_dir: Path, intrinsics: CameraIntrinsics = NYUD_INTRINSICS
) -> int:
    """Encode every 16-bit depth PNG (millimetres) of `depth_dir` as an HHA PNG in `out_dir`.

    This is how `data/hha/` of the NYUDv2 layout is produced when only depth is at hand;
    returns the number of files written.
    """
    from PIL import Image

    depth_dir, out_dir = Path(depth_dir), Path(out_dir)
    files = sorted(depth_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{depth_dir}: no depth PNGs found; pass the data/depth folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        depth_m = np.asarray(Image.open(path), dtype=np.float64) / _MM_PER_M
        Image.fromarray(depth_to_hha(depth_m, intrinsics)).save(out_dir / path.name)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    """`python -m fcnseg.data.hha DEPTH_DIR OUT_DIR`: precompute HHA images."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("depth_dir", type=Path, help="folder of 16-bit depth PNGs in mm")
    parser.add_argument("out_dir", type=Path, help="where the HHA PNGs go")
    args = parser.parse_args(argv)
    count = write_hha_folder(args.depth_dir, args.out_dir)
    print(f"wrote {count} HHA images to {args.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
