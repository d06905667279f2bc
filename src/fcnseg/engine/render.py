"""The images `fcnseg predict` and `serve` write: class-id PNGs with the palette, and overlays.

Two palettes, two jobs. The class-id PNGs keep the dataset's palette (a CamVid or VOC tool reads
them as it reads the dataset's own labels). The overlays are for eyes, and a dataset palette is
not made for that: CamVid's Road, Pavement and Car are three purples. Overlays therefore use
Kenneth L. Kelly's "Twenty-two colors of maximum contrast" (Color Engineering 3(6), 1965; the
ISCC-NBS centroid colours, white and black left out), in Kelly's order, where each colour is
chosen to differ most from those before it. CamVid's classes get the colour that suggests them
(sky light blue, tree green, ...); every other class takes the next unused colour in order. The
page (serve/page.html) carries the same two tables; tests/test_engine_render.py checks they match.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Opacity of the class colours in the overlay images.
OVERLAY_ALPHA: float = 0.5

Colour = tuple[int, int, int]

#: Kelly's 20 colours (white and black left out), in his order of maximum contrast.
KELLY_COLOURS: tuple[Colour, ...] = (
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50),
    (194, 178, 128), (132, 132, 130), (0, 136, 86), (230, 143, 172), (0, 103, 165),
    (249, 147, 121), (96, 78, 151), (246, 166, 0), (179, 68, 108), (220, 211, 0),
    (136, 45, 23), (141, 182, 0), (101, 69, 34), (226, 88, 34), (43, 61, 38),
)  # fmt: skip
#: CamVid's label colour (the dataset palette) -> its overlay colour. Chosen among Kelly's
#: colours for the largest smallest CIE76 distance between any two classes (32) and between
#: Road, Pavement and Car (59; 37 in the dataset palette), the colours suggesting the class.
CAMVID_OVERLAY: dict[Colour, Colour] = {
    (128, 128, 128): (161, 202, 241),  # Sky: light blue
    (128, 0, 0): (132, 132, 130),  # Building: grey
    (192, 192, 128): (243, 195, 0),  # Pole: yellow
    (128, 64, 128): (135, 86, 146),  # Road: purple
    (60, 40, 222): (194, 178, 128),  # Pavement: buff
    (128, 128, 0): (0, 136, 86),  # Tree: green
    (192, 128, 128): (249, 147, 121),  # SignSymbol: yellowish pink
    (64, 64, 128): (136, 45, 23),  # Fence: reddish brown
    (64, 0, 128): (243, 132, 0),  # Car: orange
    (64, 64, 0): (0, 103, 165),  # Pedestrian: blue
    (0, 128, 192): (141, 182, 0),  # Bicyclist: yellow green
    (0, 0, 0): (0, 0, 0),  # void / background stays black
}


def overlay_palette(palette: Sequence[Sequence[int]]) -> list[Colour]:
    """The overlay colour of each class, given the dataset palette (see the module docstring).

    A dataset colour in CAMVID_OVERLAY takes its colour there; the others take Kelly's colours
    in order, skipping those already used, and repeat them only past the 20th class.
    """
    dataset = [(int(c[0]), int(c[1]), int(c[2])) for c in palette]
    colours: list[Colour | None] = [CAMVID_OVERLAY.get(colour) for colour in dataset]
    free = [colour for colour in KELLY_COLOURS if colour not in colours]
    free = free or list(KELLY_COLOURS)
    for index, colour in enumerate(colours):
        if colour is None:
            colours[index] = free.pop(0) if free else KELLY_COLOURS[index % len(KELLY_COLOURS)]
    return [colour for colour in colours if colour is not None]


def palette_image(
    labels: np.ndarray, palette: list[list[int]] | list[tuple[int, int, int]]
) -> Image.Image:
    """A mode "P" PNG whose pixel values are class ids and whose palette is the dataset's."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


#: Samples per band the preview stretch looks at (a strided subset of larger images).
PREVIEW_SAMPLES: int = 1_000_000
#: Percentiles each band of a non-8-bit preview is stretched between (robust to hot pixels).
PREVIEW_PERCENTILES: tuple[float, float] = (2.0, 98.0)


def preview_rgb(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 picture of an H x W x C input, for overlays of any band count.

    The rule: 8-bit RGB is shown as it is (the usual case, unchanged); one or two bands show
    the first band as grey; three or more show the first three bands as red, green and blue
    (a multispectral image's first three bands, whatever they measure). 8-bit bands are shown
    at their own values; other data (16-bit, float) is stretched per band, linearly from its
    2nd to its 98th percentile onto 0-255, since 12-bit data on a 16-bit scale or reflectances
    in [0, 0.3] would otherwise be black.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return image
    shown = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    if shown.dtype == np.uint8:
        return np.ascontiguousarray(shown)
    return np.stack([_stretch(shown[..., band]) for band in range(3)], axis=-1)


def _stretch(band: np.ndarray) -> np.ndarray:
    """One band linearly onto 0-255 between its PREVIEW_PERCENTILES (a flat band is black)."""
    values = band.astype(np.float32, copy=False)
    step = max(1, int(np.sqrt(values.size / PREVIEW_SAMPLES)))
    low, high = np.percentile(values[::step, ::step], PREVIEW_PERCENTILES)
    if not high > low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def overlay_image(
    rgb: np.ndarray, labels: np.ndarray, palette, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The input and, beside it, the input blended with the overlay colours of the classes
    (`overlay_palette` of the dataset palette `palette`), for eyeballing. `rgb` is any
    H x W x C input, shown by `preview_rgb` (8-bit RGB as it is)."""
    rgb = preview_rgb(rgb)
    table = np.asarray(overlay_palette(palette), dtype=np.float32)
    colours = table[np.clip(labels, 0, len(table) - 1)]
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    side_by_side = np.concatenate([rgb.astype(np.float32), blended], axis=1)
    return Image.fromarray(side_by_side.clip(0, 255).astype(np.uint8), mode="RGB")


#: The perceptual colour map of the uncertainty heat maps (matplotlib's "inferno": monotonic in
#: lightness, readable in grey and by colour-blind eyes): black = certain, pale yellow = unsure.
UNCERTAINTY_COLOURMAP: str = "inferno"


def uncertainty_image(uncertainty: np.ndarray) -> Image.Image:
    """An RGB heat map of H x W uncertainty in [0, 1] (`UNCERTAINTY_COLOURMAP`, 0 -> 1)."""
    from matplotlib import colormaps

    table = colormaps[UNCERTAINTY_COLOURMAP].resampled(256)(np.linspace(0.0, 1.0, 256))
    lut = (table[:, :3] * 255).round().astype(np.uint8)
    index = (np.clip(uncertainty, 0.0, 1.0) * 255).round().astype(np.intp)
    return Image.fromarray(lut[index], mode="RGB")


def uncertainty_raw(uncertainty: np.ndarray) -> Image.Image:
    """H x W uncertainty in [0, 1] as a 16-bit greyscale PNG: value = round(u x 65535)."""
    values = (np.clip(uncertainty, 0.0, 1.0) * 65535).round().astype(np.uint16)
    return Image.fromarray(values)
