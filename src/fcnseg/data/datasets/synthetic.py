"""A procedural street-scene dataset: no download, deterministic, and not solvable pixel-wise.

Why it exists: the training job must run on a fresh machine with no dataset, and still show
that a segmentation net learns something a per-pixel colour classifier cannot. Each scene has a
sky above a random horizon, a road below it, textured buildings, cars, thin poles and round
signs. Colours are drawn so that classes overlap in colour space (an overcast sky is as grey as
the road, cars take building colours, poles take road greys), and every image gets texture
(windows, lane marks, wheels, clouds) and pixel noise: only position, shape and context
separate the classes.

Like PASCAL VOC, a one-pixel void band (label 255) surrounds every object (car, pole, sign),
so the loss's ignore label and the metrics' void handling are exercised.

Each image depends only on (seed, split, index): `SyntheticStreets(split="val")[7]` is the same
on every machine and in every DataLoader worker, and the splits never share an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fcnseg.data.datasets.base import ClassInfo, JointTransform, SegmentationDataset
from fcnseg.errors import DataError

SYNTHETIC_CLASS_INFO = ClassInfo(
    names=("sky", "building", "road", "car", "pole", "sign"),
    palette=(
        (70, 130, 180),
        (70, 70, 70),
        (128, 64, 128),
        (0, 0, 142),
        (153, 153, 153),
        (220, 220, 0),
    ),
    ignore_index=255,
)
SKY, BUILDING, ROAD, CAR, POLE, SIGN = range(6)
_OBJECT_CLASSES = (CAR, POLE, SIGN)
#: Default image size (height, width) and images per split.
DEFAULT_SIZE: tuple[int, int] = (128, 160)
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 320, "val": 80, "test": 80}
_SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_PIXEL_NOISE_STD = 10.0


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [-1, 1] with feature size about `cell` pixels."""
    grid = rng.uniform(-1.0, 1.0, size=(height // cell + 2, width // cell + 2))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _grey(rng: np.random.Generator, low: float, high: float, tint: float = 12.0) -> np.ndarray:
    level = rng.uniform(low, high)
    return np.clip(level + rng.uniform(-tint, tint, size=3), 0, 255)


def _body_colour(rng: np.random.Generator) -> np.ndarray:
    """Colours shared by buildings and cars: greys, browns, reds, blues, whites."""
    if rng.random() < 0.4:
        return _grey(rng, 40, 220)
    return rng.uniform(20, 235, size=3)


@dataclass
class _Canvas:
    """A scene being drawn: float H x W x 3 image, labels, pixel coordinates, the horizon row.

    Each painter below draws one kind of thing in the order `render_scene` calls them; the
    random draws happen in a fixed order, which is what makes a scene a function of its seed.
    """

    image: np.ndarray
    labels: np.ndarray
    #: Row index as an H x 1 column and column index as a 1 x W row (broadcast to masks).
    rows: np.ndarray
    cols: np.ndarray
    horizon: int

    @property
    def height(self) -> int:
        return self.labels.shape[0]

    @property
    def width(self) -> int:
        return self.labels.shape[1]

    def paint(self, region: np.ndarray, colour: np.ndarray | float) -> None:
        """Colour the pixels of boolean mask `region` (`colour`: RGB, scalar or H x W x 3)."""
        self.image = np.where(region[..., None], colour, self.image)


def _paint_sky(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Sky: vertical gradient (blue or overcast grey) with soft clouds."""
    top = rng.choice([np.array([90.0, 140, 210]), _grey(rng, 120, 200)]) + rng.uniform(-20, 20, 3)
    bottom = np.clip(top + rng.uniform(10, 50), 0, 255)
    t = (canvas.rows / max(canvas.horizon, 1))[..., None]
    canvas.image[:] = top * (1 - t) + bottom * t
    clouds = _smooth_noise(rng, canvas.height, canvas.width, 16)
    canvas.image += 25.0 * np.clip(clouds, 0, 1)[..., None]


def _paint_road(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Road: grey asphalt with coarse texture, getting lighter towards the horizon, lane dashes."""
    rows, cols, horizon, height = canvas.rows, canvas.cols, canvas.horizon, canvas.height
    ground = rows >= horizon
    road_colour = _grey(rng, 60, 170)
    depth = np.clip((rows - horizon) / max(height - horizon, 1), 0, 1)[..., None]
    texture = _smooth_noise(rng, height, canvas.width, 4)[..., None]
    canvas.paint(ground, road_colour * (1.1 - 0.2 * depth) + 18.0 * texture)
    canvas.labels[ground.repeat(canvas.width, axis=1)] = ROAD
    centre = canvas.width * rng.uniform(0.35, 0.65)
    lane = (np.abs(cols - centre) < 1 + 2 * depth[..., 0]) & ground & ((rows // 6) % 2 == 0)
    canvas.image[lane] = rng.uniform(200, 250)


def _paint_buildings(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Buildings: rectangles standing on the horizon, with a grid of darker windows."""
    rows, cols, horizon, width = canvas.rows, canvas.cols, canvas.horizon, canvas.width
    x = int(rng.integers(-10, 10))
    while x < width:
        building_width = int(rng.integers(width // 8, width // 3))
        if rng.random() < 0.8:
            roof = int(rng.integers(2, max(3, horizon - 4)))
            base = horizon + int(rng.integers(0, 4))
            region = (rows >= roof) & (rows < base) & (cols >= x) & (cols < x + building_width)
            colour = _body_colour(rng)
            period_y, period_x = int(rng.integers(5, 10)), int(rng.integers(5, 10))
            windows = ((rows - roof) % period_y < period_y // 2) & (
                (cols - x) % period_x < period_x // 2
            )
            shade = np.where(windows, rng.uniform(0.35, 0.7), 1.0)[..., None]
            canvas.paint(region, colour * shade)
            canvas.labels[region] = BUILDING
        x += building_width + int(rng.integers(0, width // 10))


def _paint_poles(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Poles: thin vertical bars from the road upwards, some carrying a round sign."""
    rows, cols, height = canvas.rows, canvas.cols, canvas.height
    for _ in range(int(rng.integers(1, 4))):
        px = int(rng.integers(2, canvas.width - 4))
        foot = int(rng.integers(canvas.horizon + 2, height))
        pole_height = int(rng.uniform(0.3, 0.7) * height)
        pole_top = max(0, foot - pole_height)
        thickness = int(rng.integers(2, 4))
        region = (cols >= px) & (cols < px + thickness) & (rows >= pole_top) & (rows < foot)
        canvas.paint(region, _grey(rng, 50, 170))
        canvas.labels[region] = POLE
        if rng.random() < 0.6:
            radius = float(rng.uniform(4, 9))
            distance = (rows - pole_top) ** 2 + (cols - px - thickness / 2) ** 2
            disc, inner = distance < radius**2, distance < (0.6 * radius) ** 2
            sign_colour = rng.choice(
                [np.array([200.0, 30, 30]), np.array([30.0, 60, 200]), _body_colour(rng)]
            )
            canvas.paint(disc, sign_colour)
            canvas.paint(inner, rng.uniform(180, 250, 3))
            canvas.labels[disc] = SIGN


def _paint_cars(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Cars: boxes on the road, with a window band and two dark wheels; nearer ones are bigger."""
    rows, cols, horizon, height = canvas.rows, canvas.cols, canvas.horizon, canvas.height
    for _ in range(int(rng.integers(1, 5))):
        bottom_row = int(rng.integers(horizon + 4, height + 6))
        scale = (bottom_row - horizon) / max(height - horizon, 1)
        car_height = max(6, int(height * (0.08 + 0.25 * scale)))
        car_width = int(car_height * rng.uniform(1.4, 2.4))
        left = int(rng.integers(-car_width // 2, canvas.width - car_width // 2))
        top_row = bottom_row - car_height
        body = (
            (rows >= top_row)
            & (rows < bottom_row - car_height // 5)
            & (cols >= left)
            & (cols < left + car_width)
        )
        canvas.paint(body, _body_colour(rng))
        glass = (
            body
            & (rows < top_row + car_height // 3)
            & (cols >= left + car_width // 6)
            & (cols < left + car_width - car_width // 6)
        )
        canvas.paint(glass, rng.uniform(20, 90, 3))
        wheel_radius = car_height / 5
        wheels = np.zeros_like(body)
        for centre_x in (left + car_width / 4, left + 3 * car_width / 4):
            wheels |= (rows - (bottom_row - wheel_radius)) ** 2 + (
                cols - centre_x
            ) ** 2 < wheel_radius**2
        canvas.paint(wheels, rng.uniform(10, 40))
        canvas.labels[body | wheels] = CAR


def _mark_void_band(labels: np.ndarray) -> None:
    """Void band: one pixel outside every object, where annotators' outlines are unsure."""
    objects = np.isin(labels, _OBJECT_CLASSES)
    grown = objects.copy()
    grown[1:] |= objects[:-1]
    grown[:-1] |= objects[1:]
    grown[:, 1:] |= objects[:, :-1]
    grown[:, :-1] |= objects[:, 1:]
    labels[grown & ~objects] = SYNTHETIC_CLASS_INFO.ignore_index


def render_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: (uint8 H x W x 3 image, int64 H x W labels with 255 void bands)."""
    canvas = _Canvas(
        image=np.zeros((height, width, 3), dtype=np.float64),
        labels=np.zeros((height, width), dtype=np.int64),
        rows=np.arange(height)[:, None],
        cols=np.arange(width)[None, :],
        horizon=int(height * rng.uniform(0.35, 0.55)),
    )
    for painter in (_paint_sky, _paint_road, _paint_buildings, _paint_poles, _paint_cars):
        painter(rng, canvas)
    _mark_void_band(canvas.labels)
    image = canvas.image * rng.uniform(0.75, 1.2)  # exposure
    image += rng.normal(0.0, _PIXEL_NOISE_STD, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), canvas.labels


class SyntheticStreets(SegmentationDataset):
    """Procedural street scenes (6 classes, void 255), generated on the fly.

    Args:
        root: ignored (accepted so the registry can build every format alike).
        split: "train", "val" or "test"; each split draws from its own seeds.
        transform: joint transform applied to (uint8 image, int64 mask).
        num_images: images in the split (default: DEFAULT_SPLIT_SIZES[split]).
        size: (height, width) of every image.
        seed: base seed; change it for an independent dataset.
    """

    class_info = SYNTHETIC_CLASS_INFO

    def __init__(
        self,
        root: object = None,
        split: str = "train",
        transform: JointTransform | None = None,
        num_images: int | None = None,
        size: tuple[int, int] = DEFAULT_SIZE,
        seed: int = 0,
    ) -> None:
        super().__init__(transform)
        if split not in _SPLIT_IDS:
            raise DataError(f"split {split!r} is unknown; use one of {tuple(_SPLIT_IDS)}")
        count = DEFAULT_SPLIT_SIZES[split] if num_images is None else int(num_images)
        if count < 1:
            raise DataError(f"num_images must be at least 1, got {num_images}")
        height, width = int(size[0]), int(size[1])
        if height < 32 or width < 32:
            raise DataError(f"size must be at least 32x32 for the scenes to fit, got {size}")
        self.root = None  # type: ignore[assignment]
        self.split = split
        self.size = (height, width)
        self.seed = int(seed)
        self.samples = [f"synthetic_{split}_{index:05d}" for index in range(count)]

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} images")
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], index))
        image, labels = render_scene(rng, *self.size)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(labels)
