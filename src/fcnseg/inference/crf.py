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
        rgbim=np.ascontiguousarray(image),
        compat=bilateral_compat,
    )
    refined = np.asarray(crf.inference(iterations), dtype=np.float32)
    return refined.reshape(num_classes, height, width)


def crf_refine_batch(images_uint8_nchw: Tensor, probs_nchw: Tensor, **options: float) -> Tensor:
    """`crf_refine` over a batch: uint8 N x 3 x H x W images, N x C x H x W probabilities."""
    if images_uint8_nchw.shape[0] != probs_nchw.shape[0]:
        raise ValueError("images and probabilities must have the same batch size")
    refined = [
        torch.from_numpy(crf_refine(image.permute(1, 2, 0).cpu().numpy(), probs, **options))
        for image, probs in zip(images_uint8_nchw, probs_nchw, strict=True)
    ]
    return torch.stack(refined).to(probs_nchw.device)
