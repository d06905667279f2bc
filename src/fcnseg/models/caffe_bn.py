"""caffe-segnet's "BN" layer read into `nn.BatchNorm2d`: the blob layout and its inference form.

Why a rule of its own: the SegNet release's Caffe fork (alexgkendall/caffe-segnet, commit
344c113bf1832886f1cbe9f33ffe28a3beeaf412, src/caffe/layers/bn_layer.cpp) gives its BN layer
two blobs only, a scale and a shift, each 1 x C x 1 x 1, and no running statistics: while
training it normalises by the batch, and SegNet-Tutorial's Scripts/compute_bn_statistics.py
then averages the training set's batch means and variances and folds them in,
`scale' = scale / sqrt(var + eps)` and `shift' = shift - scale * mean / sqrt(var + eps)`, so that
the saved `test_weights.caffemodel` (and every model-zoo caffemodel, whose prototxts say
`bn_mode: INFERENCE`) computes `y = scale' * x + shift'`. The same two blobs, read as
BatchNorm's weight and bias with running mean 0 and running variance 1 - eps, give exactly that
function in eval mode.

A caffemodel saved straight from training (before compute_bn_statistics.py) has the same two
blobs without the statistics folded in; nothing in the file tells them apart, so run the
release's script first, as its README instructs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fcnseg.errors import WeightsError

#: The Caffe layer types whose blobs are (scale, shift); "" is the V1 format (no type string).
BN_LAYER_TYPES: frozenset[str] = frozenset({"BN", ""})


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def bn_updates(
    module_path: str, module: nn.Module, layer_name: str, layer_type: str, blobs: list[np.ndarray]
) -> dict[str, torch.Tensor]:
    """State-dict entries of BatchNorm `module` from a BN layer's folded (scale, shift) blobs.

    Raises WeightsError (one line naming the layer) for another layer type, another blob count
    or blobs that are not C values laid out as 1 x C x 1 x 1 (or plain C).
    """
    channels = module.num_features
    if layer_type not in BN_LAYER_TYPES:
        raise WeightsError(
            f"layer {layer_name} is a Caffe {layer_type!r} layer; {module_path} reads a "
            "caffe-segnet 'BN' layer (scale, shift)"
        )
    if len(blobs) != 2:
        raise WeightsError(
            f"layer {layer_name} has {len(blobs)} blob(s); a caffe-segnet BN layer has 2 "
            "(scale, shift with the statistics folded in by compute_bn_statistics.py)"
        )
    for kind, blob in zip(("scale", "shift"), blobs, strict=True):
        squeezed = [dim for dim in blob.shape if dim != 1]
        if blob.size != channels or len(squeezed) > 1:
            raise WeightsError(
                f"layer {layer_name} {kind} has shape {list(blob.shape)}, {module_path} needs "
                f"1 x {channels} x 1 x 1; build the net that matches the caffemodel"
            )
    state = module.state_dict()
    scale, shift = (torch.from_numpy(blob.reshape(channels).copy()) for blob in blobs)
    dtype = state["weight"].dtype
    return {
        f"{module_path}.weight": scale.to(dtype),
        f"{module_path}.bias": shift.to(dtype),
        f"{module_path}.running_mean": torch.zeros(channels, dtype=dtype),
        # sqrt(running_var + eps) == 1: eval mode computes scale * x + shift, as Caffe does.
        f"{module_path}.running_var": torch.full((channels,), 1.0 - module.eps, dtype=dtype),
    }
