"""Batch-norm statistics re-estimated over training data with the weights frozen.

Why: a batch-norm layer normalises with the batch's own statistics while training and with its
running averages at test time. The running averages trail the weights (an exponential average
with momentum 0.1 over the last few dozen steps); when the weights still move fast, as in a
short run at SegNet's learning rate of 0.1, the test-time net sees statistics of older weights
and its predictions collapse (measured: 24% pixel accuracy in training mode, 2% in eval mode on
a CamVid training image after 65 steps). The SegNet release therefore never tests with running
averages: its `Scripts/compute_bn_statistics.py` (alexgkendall/SegNet-Tutorial) runs the
trained net over the training set, averages every BN layer's per-batch mean and variance
(Bessel-corrected), and only then tests. `recompute_bn_statistics` is that pass: BN layers in
training mode with a cumulative average (`momentum=None`), every other layer in eval mode (the
release runs Caffe's TEST phase, dropout off), no gradients, the weights untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, Subset

from fcnseg.engine.checkpoint import rng_state, set_rng_state


def batch_norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every batch-norm layer of `model` that keeps running statistics."""
    return [
        module
        for module in model.modules()
        if isinstance(module, _BatchNorm) and module.track_running_stats
    ]


def recompute_bn_statistics(
    model: nn.Module, images: Iterable[Tensor], device: torch.device | str = "cpu"
) -> int:
    """Replace every BN layer's running mean and variance by their averages over the batches of
    `images` (the release's compute_bn_statistics.py); returns the number of batches used.

    The model's training/eval mode, the layers' momentum and the RNG streams (a training
    run's resume must not depend on whether this ran) are restored afterwards.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [layer.momentum for layer in layers]
    saved_rng = rng_state()
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative: the plain average over the batches seen
        layer.train()
    batches = 0
    try:
        with torch.no_grad():
            for batch in images:
                model(batch.to(device))
                batches += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
        set_rng_state(saved_rng)
    if batches == 0:
        raise ValueError("recompute_bn_statistics: no batches of images were given")
    return batches


def recompute_on_training_set(
    model: nn.Module,
    train_set: Dataset,
    batch_size: int,
    batches: int | None,
    device: torch.device | str = "cpu",
) -> int:
    """`train.bn_statistics=recompute` before a validation: the pass over the first `batches`
    batches (None: all) of the training set in order, so every rank sees the same batches and
    the ranks' weights stay equal."""
    size = len(train_set)  # type: ignore[arg-type]
    count = size if batches is None else min(size, batches * batch_size)
    loader = DataLoader(Subset(train_set, range(count)), batch_size=batch_size, shuffle=False)
    return recompute_bn_statistics(model, (batch[0] for batch in loader), device)
