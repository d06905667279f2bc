"""The overlap-tile strategy (Ronneberger et al. 2015, figure 2): any image, valid tiles, mirrors.

Why a mode of its own, not the sliding window: a net of valid convolutions (`unet2015`) predicts
only the centre of its input; its tiles must not overlap in the output but must overlap in the
input by the context the net consumes. The image is mirrored by that context on every side
(and further when it is smaller than a tile), output tiles are laid edge to edge (the last
row/column flush with the border, as `sliding.tile_starts` lays them), and each tile's input is
the tile grown by the context, cut from the mirrored image: real neighbouring pixels inside the
image, the mirror image beyond its border. The tiles' outputs cover the image exactly; nothing
is blended.

A model takes part by declaring `tile_context` (pixels lost per side); it may add
`valid_forward` (the bare valid net, called on each tile's input), `tile_output_size(side)`
(the nearest output side it can produce from a valid tile) and `default_tile_output`. Without
`valid_forward` (an onnxruntime graph of the model's contract forward), each tile's input goes
through the forward and its centre is kept: for `unet2015` that is the same numbers, because
its forward keeps the pooling grid of its input (models/unet2015.py).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fcnseg.errors import UsageError
from fcnseg.exported import InferenceOnly
from fcnseg.inference.sliding import Forward, ModelOutput, tile_starts
from fcnseg.models.mirror import mirror_pad
from fcnseg.models.protocol import as_heads, like_output

#: Attributes a model declares its tile geometry with (copied onto runtimes that wrap it).
GEOMETRY_ATTRIBUTES: tuple[str, ...] = ("tile_context", "tile_output_size", "default_tile_output")


class WithTileGeometry(InferenceOnly):
    """A runnable (e.g. an onnxruntime graph of the model) carrying the model's tile geometry.

    Why: the overlap-tile mode reads the context from what it runs; an exported graph has no
    attributes, so the inference session hands over the loaded model's (`with_tile_geometry`).
    """

    def __init__(self, runnable: Forward, model: Any) -> None:
        self.runnable = runnable
        self.in_channels = getattr(model, "in_channels", 3)
        for name in GEOMETRY_ATTRIBUTES:
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def __call__(self, images: Tensor) -> ModelOutput:
        return self.runnable(images)


def _tile_sides(model: Any, tile_size: int | tuple[int, ...] | None) -> tuple[int, int]:
    if tile_size is None:
        tile_size = getattr(model, "default_tile_output", None)
        if tile_size is None:
            raise UsageError("overlap_tile inference needs tile_size (the output tile side)")
    sides = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
    if len(sides) != 2 or any(int(side) < 1 for side in sides):
        raise UsageError(f"tile_size must be a positive int or (height, width), got {tile_size!r}")
    snap = getattr(model, "tile_output_size", None)
    if snap is not None:
        return int(snap(int(sides[0]))), int(snap(int(sides[1])))
    return int(sides[0]), int(sides[1])


def overlap_tile_logits(
    model: Forward, images: Tensor, tile_size: int | tuple[int, ...] | None = None
) -> ModelOutput:
    """Logits N x C x H x W of `images`: valid tiles of `model` over the mirrored image.

    `tile_size` is the output tile (default: the model's `default_tile_output`), moved to the
    nearest side the model can produce (`tile_output_size`). UsageError when `model` does not
    declare `tile_context`.
    """
    context = getattr(model, "tile_context", None)
    if not isinstance(context, int) or context < 0:
        raise UsageError(
            "overlap_tile inference needs a net of valid convolutions that declares its context "
            "(unet2015); use --mode sliding for this model"
        )
    tile_h, tile_w = _tile_sides(model, tile_size)
    height, width = images.shape[-2:]
    padded = mirror_pad(
        images,
        context,
        context + max(0, tile_h - height),
        context,
        context + max(0, tile_w - width),
    )
    valid = getattr(model, "valid_forward", None)
    outputs: dict[str, Tensor] = {}
    reference: ModelOutput | None = None
    for y in tile_starts(max(height, tile_h), tile_h, tile_h):
        for x in tile_starts(max(width, tile_w), tile_w, tile_w):
            window = padded[..., y : y + tile_h + 2 * context, x : x + tile_w + 2 * context]
            if valid is not None:
                reference = valid(window)
                tiles = as_heads(reference)
            else:
                reference = model(window)
                tiles = {
                    key: logits[..., context : context + tile_h, context : context + tile_w]
                    for key, logits in as_heads(reference).items()
                }
            for key, logits in tiles.items():
                if key not in outputs:
                    size = (max(height, tile_h), max(width, tile_w))
                    outputs[key] = logits.new_zeros(*logits.shape[:2], *size)
                outputs[key][..., y : y + tile_h, x : x + tile_w] = logits
    cropped = {key: value[..., :height, :width].contiguous() for key, value in outputs.items()}
    return like_output(cropped, reference)


def with_tile_geometry(runnable: Any, model: Any) -> Any:
    """`runnable` as the overlap-tile mode can use it: itself when it is `model` or when `model`
    declares no tile geometry, else wrapped with `model`'s (see WithTileGeometry)."""
    if runnable is model or not hasattr(model, "tile_context"):
        return runnable
    return WithTileGeometry(runnable, model)
