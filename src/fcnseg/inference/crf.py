"""Fully connected CRF refinement of class probabilities, as DeepLab applies it after its net.

The CRF of Kraehenbuehl & Koltun (NIPS 2011) adds to the net's unary term (-log p) a pairwise
Potts penalty between *all* pixel pairs, weighted by two Gaussian kernels: a position-only one
that removes isolated speckles, and a bilateral one (position + colour) that snaps label edges
to colour edges. Coarse FCN outputs (stride 8 to 32, bilinearly upsampled) blur object borders;
the bilateral kernel is what sharpens them. Mean-field inference with the permutohedral lattice
makes each iteration linear in the number of pixels.

The C++ implementation comes from the optional `pydensecrf2` package (`pip install
fcnseg[crf]`); this module imports it lazily so fcnseg works without it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fcnseg.constants import (
    DEEPLAB_CRF_BILATERAL_COMPAT,
    DEEPLAB_CRF_BILATERAL_SRGB,
    DEEPLAB_CRF_BILATERAL_SXY,
    DEEPLAB_CRF_GAUSSIAN_COMPAT,
    DEEPLAB_CRF_GAUSSIAN_SXY,
)
from fcnseg.inference.crf_params import CrfParams

if TYPE_CHECKING:
    from fcnseg.data.normalization import Normalization

#: Probabilities are clipped to this floor before -log: a zero probability would make a label
#: impossible however strongly the pairwise terms vote for it.
PROB_FLOOR: float = 1e-8


def crf_available() -> bool:
    """True when pydensecrf2 is importable (CRF refinement possible)."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def _as_numpy(array: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def crf_refine(
    image_uint8_hwc: np.ndarray | Tensor,
    probs_chw: np.ndarray | Tensor,
    iterations: int = 5,
    gaussian_sxy: float = DEEPLAB_CRF_GAUSSIAN_SXY,
    gaussian_compat: float = DEEPLAB_CRF_GAUSSIAN_COMPAT,
    bilateral_sxy: float = DEEPLAB_CRF_BILATERAL_SXY,
    bilateral_srgb: float = DEEPLAB_CRF_BILATERAL_SRGB,
    bilateral_compat: float = DEEPLAB_CRF_BILATERAL_COMPAT,
) -> np.ndarray:
    """Refined probabilities C x H x W (float32) of one image.

    Defaults are DeepLab's (see constants.py): smoothness kernel w2 = 3, sigma_gamma = 3;
    appearance kernel w1 = 4, sigma_alpha = 67 px, sigma_beta = 3 (RGB levels). DeepLab ran 10
    mean-field iterations; 5 is the default here for speed.

    Args:
        image_uint8_hwc: the *unnormalised* RGB image, H x W x 3 uint8 (the bilateral kernel
            compares raw colours).
        probs_chw: class probabilities C x H x W (e.g. one image of `predict_probs`).
        iterations: mean-field iterations (0 returns the input probabilities, renormalised).
    """
    image = _as_numpy(image_uint8_hwc)
    probs = _as_numpy(probs_chw).astype(np.float32, copy=False)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image_uint8_hwc must be an H x W x 3 uint8 RGB array, got dtype {image.dtype} "
            f"shape {image.shape}; pass the decoded image before normalisation"
        )
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"probs_chw must be C x H x W matching the image's {image.shape[:2]}, got "
            f"{probs.shape}; resize the probabilities to the image first"
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise ImportError(
            "crf_refine needs pydensecrf2: pip install pydensecrf2 (or fcnseg[crf])"
        ) from error

    num_classes, height, width = probs.shape
    unary = -np.log(np.clip(probs, PROB_FLOOR, 1.0)).reshape(num_classes, -1)
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        rgbim=_writable(image),
        compat=bilateral_compat,
    )
    refined = np.asarray(crf.inference(iterations), dtype=np.float32)
    return refined.reshape(num_classes, height, width)


def _writable(image: np.ndarray) -> np.ndarray:
    """`image` as a C-contiguous array pydensecrf accepts: its Cython wrapper takes a writable
    buffer only, and `np.asarray(PIL image)` is read-only, so such an image is copied."""
    rgb = np.ascontiguousarray(image)
    return rgb if rgb.flags.writeable else rgb.copy()


def crf_refine_batch(images_uint8_nchw: Tensor, probs_nchw: Tensor, **options: float) -> Tensor:
    """`crf_refine` over a batch: uint8 N x 3 x H x W images, N x C x H x W probabilities."""
    if images_uint8_nchw.shape[0] != probs_nchw.shape[0]:
        raise ValueError("images and probabilities must have the same batch size")
    refined = [
        torch.from_numpy(crf_refine(image.permute(1, 2, 0).cpu().numpy(), probs, **options))
        for image, probs in zip(images_uint8_nchw, probs_nchw, strict=True)
    ]
    return torch.stack(refined).to(probs_nchw.device)


def require_crf(where: str = "--crf") -> None:
    """UsageError in one line when pydensecrf2 is missing (the `crf` extra not installed)."""
    if not crf_available():
        from fcnseg.errors import UsageError
        from fcnseg.inference.crf_params import INSTALL_HINT

        raise UsageError(f"{where}: the dense CRF needs pydensecrf2, not installed; {INSTALL_HINT}")


class CrfTimer:
    """Seconds spent in the CRF and images refined, summed over threads (eval, predict, serve
    print or return the time per image)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.images = 0
        self._lock = threading.Lock()

    def add(self, seconds: float, images: int) -> None:
        with self._lock:
            self.seconds += seconds
            self.images += images

    def ms_per_image(self) -> float | None:
        """Mean milliseconds per image, None before the first image."""
        return 1000 * self.seconds / self.images if self.images else None


def refine_logits(
    images_uint8_nchw: Tensor,
    logits_nchw: Tensor,
    params: CrfParams,
    timer: CrfTimer | None = None,
) -> Tensor:
    """The log of the CRF-refined probabilities of a batch of logits (same shape and device).

    Why logs: callers take the argmax of logits or resize them, and the log keeps both
    meanings. Logits at another size than the images are resized to the images first (the CRF
    compares image colours pixel by pixel). The time is added to `timer`.
    """
    started = time.perf_counter()
    size = images_uint8_nchw.shape[-2:]
    logits = logits_nchw.float()
    if logits.shape[-2:] != size:
        logits = torch.nn.functional.interpolate(
            logits, size=size, mode="bilinear", align_corners=False
        )
    probs = torch.softmax(logits, dim=1).cpu()
    refined = crf_refine_batch(images_uint8_nchw.cpu(), probs, **params.kernel_options())
    result = torch.log(refined.clamp_min(PROB_FLOOR)).to(logits_nchw.device)
    if timer is not None:
        timer.add(time.perf_counter() - started, int(logits.shape[0]))
    return result


def uint8_images(normalized: Tensor, normalization: Normalization) -> Tensor:
    """The uint8 RGB images N x 3 x H x W behind a normalised batch (eval's dataset gives only
    those): `Normalization.invert`, back to 0-255, rounded."""
    restored = normalization.invert(normalized.float().cpu()) * 255.0
    return restored.round().clamp(0, 255).to(torch.uint8)


def as_uint8(image: Tensor) -> Tensor:
    """A C x H x W image as uint8 0-255 (a float image is on the 0-1 scale, as sessions take)."""
    if image.dtype == torch.uint8:
        return image
    return (image.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
