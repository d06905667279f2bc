"""Augmentation pipelines people already have: torchvision.transforms.v2 or albumentations.

`data.augment: "package.module:factory"` names a function that takes no arguments and returns
the pipeline; from Python, `train_transform(preset, augment=pipeline)` takes the object itself.
The pipeline replaces the built-in scale / crop / flip / jitter steps; fcnseg then converts to
float, normalises for the model and pads to `data.crop_size` (when set) as always, so the
pipeline sees and returns the decoded image (uint8 RGB) and its class mask:

- torchvision.transforms.v2 (and any callable taking and returning `(image, mask)`): called as
  `pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))` with image 3xHxW and mask HxW, so
  v2's geometric transforms move the mask with the image (nearest-neighbour for masks);
- albumentations (recognised by its module): called as `pipeline(image=HxWx3, mask=HxW)` with
  NumPy arrays and the result's "image" / "mask" read back (HxWxC arrays or ToTensorV2's CxHxW).

Padding and fill values are the pipeline's to choose: pad masks with the void label (255 by
default, e.g. v2's `fill={tv_tensors.Mask: 255}`), or padded pixels will be learnt as a class.
A pipeline built from a factory path is rebuilt from that path when a DataLoader worker unpickles
it, so factories may use lambdas. Randomness: torchvision draws from torch's generator, which
training seeds per sample; an albumentations Compose is re-seeded from it on every call (its
`set_random_seed`), so both give the same augmentations on resume and with any worker count.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcnseg.errors import RecipeError

_HWC = 3


def load_pipeline(spec: str) -> Any:
    """Import `module.path:factory` and return `factory()`; one-line RecipeError otherwise."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise RecipeError(f"data.augment: {spec!r} must be 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RecipeError(f"data.augment: cannot import {module_name!r} ({error})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise RecipeError(f"data.augment: {module_name} has no callable {attribute!r}")
    try:
        pipeline = factory()
    except Exception as error:  # noqa: BLE001 - the user's factory may raise anything
        raise RecipeError(
            f"data.augment: {spec}() raised {type(error).__name__}: {error}"
        ) from None
    if not callable(pipeline):
        raise RecipeError(f"data.augment: {spec}() returned {type(pipeline).__name__}, no pipeline")
    return pipeline


def is_albumentations(pipeline: object) -> bool:
    """Whether `pipeline` is an albumentations object (keyword image=/mask= calls)."""
    return type(pipeline).__module__.split(".")[0] == "albumentations"


def _as_chw(image: Any) -> Tensor:
    tensor = torch.as_tensor(
        np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image
    )
    if isinstance(image, np.ndarray) and tensor.ndim == _HWC:
        tensor = tensor.permute(2, 0, 1)
    return tensor.contiguous()


class ExternalPipeline:
    """A torchvision v2 / albumentations pipeline as a joint transform (see the module doc)."""

    def __init__(self, pipeline: Callable | str) -> None:
        self.spec = pipeline if isinstance(pipeline, str) else None
        self.pipeline = load_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        if not callable(self.pipeline):
            raise RecipeError(f"augment: {type(self.pipeline).__name__} is not a pipeline")

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec} if self.spec else dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("pipeline") is None:
            state = {"spec": state["spec"], "pipeline": load_pipeline(state["spec"])}
        self.__dict__.update(state)

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if is_albumentations(self.pipeline):
            # albumentations draws from its own generator: seeding it from torch's makes its
            # draws follow training's per-sample seeds (exact resume, any worker count).
            reseed = getattr(self.pipeline, "set_random_seed", None)
            if callable(reseed):
                reseed(int(torch.randint(0, 2**31 - 1, ()).item()))
            out = self.pipeline(image=image.permute(1, 2, 0).numpy(), mask=mask.numpy())
            new_image, new_mask = _as_chw(out["image"]), torch.as_tensor(out["mask"])
        else:
            from torchvision import tv_tensors

            result = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
            new_image = result[0].as_subclass(Tensor)
            new_mask = result[1].as_subclass(Tensor)
        new_mask = new_mask.squeeze(0) if new_mask.ndim == _HWC else new_mask
        if tuple(new_image.shape[-2:]) != tuple(new_mask.shape[-2:]):
            raise RecipeError(
                f"augment: the pipeline returned an image of {tuple(new_image.shape[-2:])} and a "
                f"mask of {tuple(new_mask.shape[-2:])}; it must transform both alike"
            )
        return new_image, new_mask.long()

    def __repr__(self) -> str:
        return f"ExternalPipeline({self.spec or self.pipeline!r})"
