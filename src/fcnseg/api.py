"""The Python way in: `fcnseg.load(weights)` then `.predict(image)`.

Why a facade: segmenting one image from Python took three internal imports, a manual
HWC -> CHW, and normalisation by a preset name outside users cannot resolve. `Segmenter` wraps
the one path from image to labels the commands use (`engine.session.InferenceSession`: the
weights' own normalisation numbers, their recommended inference, the runtime), so Python gets
exactly what `fcnseg predict` computes; it only turns what a Python user holds (a PIL image,
a NumPy array, a path) into the tensor the session takes, by the decoding rules of
`fcnseg.data.io`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcnseg.data.bands import image_values, match_channels
from fcnseg.data.io import pil_values, read_image
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import DataError, UsageError
from fcnseg.inference.mc_dropout import DEFAULT_SEED, predictive_entropy
from fcnseg.models.protocol import primary_output

#: What `Segmenter.predict` accepts.
ImageLike = Any  # PIL.Image.Image | np.ndarray | str | os.PathLike


def load(
    source: str | os.PathLike[str],
    *,
    device: str = "auto",
    runtime: str = "torch",
    mode: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Segmenter:
    """A trained model from a `.safetensors` weights file, a `.pt` checkpoint or a run folder.

    `device` ("auto", "cpu", "cuda", ...), `runtime` (the `--engine` word), `mode` and
    `options` (the `--mode` inference and its options) are those of `fcnseg predict`; by
    default the inference the weights recommend is used.
    """
    path = Path(source)
    if path.is_dir():
        where: dict[str, Any] = {"run": path}
    elif path.suffix == ".pt":
        where = {"checkpoint": path}
    else:
        where = {"weights": path}
    session = InferenceSession.load(
        **where, device=device, runtime=runtime, mode=mode, options=options
    )
    return Segmenter(session)


class Segmenter:
    """A loaded model: `predict(image)` -> H x W class ids (and probabilities on request)."""

    def __init__(self, session: InferenceSession) -> None:
        self.session = session

    @property
    def classes(self) -> tuple[str, ...]:
        return self.session.metadata.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.session.metadata.palette

    @property
    def in_channels(self) -> int:
        return int(self.session.loaded.model.in_channels)

    def __repr__(self) -> str:
        meta = self.session.metadata
        return (
            f"Segmenter({meta.model!r}, {meta.num_classes} classes, "
            f"{self.in_channels} channels, {self.session.device})"
        )

    def predict(
        self,
        image: ImageLike,
        *,
        probs: bool = False,
        mc_samples: int | None = None,
        seed: int = DEFAULT_SEED,
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        """Class ids (H x W int64) of `image`; with `probs=True` also the class probabilities
        (num_classes x H x W float32, softmax of the primary head's logits).

        `image`: a PIL image, an H x W or H x W x C NumPy array (uint8 0-255, uint16 divided
        by 65535, or float on the [0, 1] scale), or the path of an image file.

        `mc_samples=N`: Monte-Carlo dropout, as `fcnseg predict --mc-samples N --seed SEED`:
        the ids and probabilities are those of the mean of N passes with dropout on, and the
        per-pixel uncertainty (H x W float32 in [0, 1]: the mean's entropy over log C) comes
        last: `labels, uncertainty = predict(img, mc_samples=8)`, or
        `labels, probs, uncertainty` with `probs=True`. A model without dropout, or an ONNX
        runtime, is a UsageError.
        """
        tensor = as_image_tensor(image, self.in_channels)
        session = self.session.with_mc(mc_samples, seed)
        with torch.no_grad():
            batch = session.normalize([tensor])
            if session.mc is None:
                logits = session.logits(batch)[0].float().cpu()
                labels = logits.argmax(0).numpy().astype(np.int64)
                return (labels, torch.softmax(logits, dim=0).numpy()) if probs else labels
            # MC dropout: the mean of the passes' probabilities, as `fcnseg predict` computes.
            mean = primary_output(session.head_probs(batch))[0].float().cpu()
        labels = mean.argmax(0).numpy().astype(np.int64)
        uncertainty = predictive_entropy(mean[None])[0].numpy()
        return (labels, mean.numpy(), uncertainty) if probs else (labels, uncertainty)


def as_image_tensor(image: ImageLike, channels: int) -> Tensor:
    """`image` (PIL image, NumPy array or path) as the C x H x W tensor the session takes."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, channels)
    if isinstance(image, np.ndarray):
        values = _array_values(image, channels)
    elif _is_pil(image):
        values = pil_values(image, channels, "the PIL image")
    else:
        raise UsageError(
            f"predict() takes a PIL image, a NumPy array or a path, got {type(image).__name__}"
        )
    return torch.from_numpy(np.array(values.transpose(2, 0, 1), order="C"))


def _array_values(array: np.ndarray, channels: int) -> np.ndarray:
    """An H x W or H x W x C array as H x W x `channels` values (io's rules)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise DataError(f"array of shape {array.shape}: give an H x W or H x W x C image")
    if array.shape[2] not in (1, channels) and array.shape[0] == channels:
        raise DataError(
            f"array of shape {array.shape} looks channels-first; pass H x W x C "
            "(numpy: array.transpose(1, 2, 0))"
        )
    return match_channels(image_values(array, "the array"), channels, "the array")


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(image, Image.Image)
