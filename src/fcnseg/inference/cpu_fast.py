"""CPU fast paths for inference: conv+BN folding, channels_last, bf16, torch.compile.

Each helper returns a model that computes the same function as the eager fp32 model up to float
rounding (bf16 excepted, which callers must check with `argmax_agreement`), so that
`fcnseg bench` (inference/bench.py) compares engines on equal terms. The commands that predict
(`predict`, `eval`) run the eager model; these paths are measured, not yet wired into them.

Folding BN into the preceding convolution removes one full read and write of every feature map:
at inference BN is an affine map per channel, which the convolution can absorb into its weights
and bias. The pairing conv -> BN is found by running the model once with hooks (a BN whose input
*is* the output tensor of a convolution), which works for any architecture, not only for
`nn.Sequential` chains; the folded model is then checked numerically against the original.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from fcnseg.models.protocol import PROTOCOL_ATTRIBUTES

#: Folding is exact in real arithmetic; in float32 it changes logits by rounding only.
FOLD_CHECK_ATOL: float = 1e-3


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _bn_remainder(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BN after folding: nothing, or the activation fused BN layers carry
    (timm's BatchNormAct2d applies drop + act after normalising)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    if isinstance(act, nn.Module) and type(bn).__name__ == "BatchNormAct2d":
        return nn.Sequential(drop if isinstance(drop, nn.Module) else nn.Identity(), act)
    raise TypeError(f"unknown BatchNorm subclass {type(bn).__name__}")


def find_conv_bn_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN consumes exactly the conv's output tensor."""
    names = {module: name for name, module in model.named_modules()}
    # Holding the tensors keeps their ids unique for the whole pass (ids are recycled on free).
    conv_outputs: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    conv_use: dict[str, int] = {}
    handles = []

    def on_conv(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        conv_outputs[id(output)] = (names[module], output)
        conv_use[names[module]] = conv_use.get(names[module], 0) + 1

    def on_bn(module: nn.Module, inputs: Any) -> None:
        source = conv_outputs.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            pairs.append((source[0], names[module]))

    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(on_bn))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # A module called twice (shared weights) cannot be folded for one of its uses only.
    unique = [(c, b) for c, b in dict.fromkeys(pairs) if conv_use.get(c, 0) == 1]
    return unique


def fold_conv_bn(model: nn.Module, example: Tensor, check: bool = True) -> nn.Module:
    """A copy of `model` (eval) with every conv -> BN pair folded into the convolution.

    Raises ValueError when the folded copy does not reproduce the original on `example` (e.g.
    a convolution output that is also used elsewhere than by its BN).
    """
    original = model.eval()
    folded = copy.deepcopy(original).eval()
    for conv_name, bn_name in find_conv_bn_pairs(folded, example):
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
            continue
        try:
            remainder = _bn_remainder(bn)
        except TypeError:
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        )
        conv.weight, conv.bias = weight, bias
        _set_submodule(folded, bn_name, remainder)
    if check:
        with torch.no_grad():
            expected, actual = original(example), folded(example)
        pairs = expected.items() if isinstance(expected, dict) else [("", expected)]
        for key, value in pairs:
            other = actual[key] if isinstance(actual, dict) else actual
            diff = float((value - other).abs().max())
            if diff > FOLD_CHECK_ATOL:
                raise ValueError(
                    f"conv+BN folding changed the output by {diff:.2e}; use the model unfolded"
                )
    return folded


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


class ChannelsLast(nn.Module):
    """Wraps a channels_last model: converts inputs, returns contiguous NCHW outputs.

    oneDNN convolutions run fastest in NHWC; converting the (3-channel) input is cheap, and
    returning standard-layout logits keeps every consumer layout-agnostic.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self.dtype = dtype
        # A wrapped fcnseg model keeps its contract, so callers can treat the wrapper as the model.
        for name in PROTOCOL_ATTRIBUTES:
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is not None:
            with torch.autocast("cpu", dtype=self.dtype):
                out = self.model(x)
        else:
            out = self.model(x)
        if isinstance(out, dict):
            return {k: v.float().contiguous() for k, v in out.items()}
        return out.float().contiguous()


def argmax_agreement(reference: Tensor, candidate: Tensor) -> float:
    """Share of pixels whose predicted class is the same: the accuracy check of a fast path."""
    return float((reference.argmax(1) == candidate.argmax(1)).float().mean())


def optimize_for_cpu(
    model: nn.Module,
    example: Tensor,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    bf16: bool = False,
    compile: bool = False,
) -> Callable[[Tensor], Tensor | dict[str, Tensor]]:
    """The fastest CPU variant of `model` this build of PyTorch supports, numerically checked.

    Args:
        example: a representative input (used to find conv/BN pairs and to check results).
        fold_bn: fold BN into convolutions (exact up to rounding).
        channels_last: NHWC memory layout for oneDNN.
        bf16: run under CPU autocast in bfloat16 (only worth it on CPUs with AVX512-BF16/AMX;
            check `argmax_agreement` before trusting it).
        compile: wrap with `torch.compile` (inductor); the first calls compile and are slow.
    """
    fast: nn.Module = model.eval()
    if fold_bn and count_batchnorms(fast):
        fast = fold_conv_bn(fast, example)
    if channels_last or bf16:
        fast = ChannelsLast(fast, dtype=torch.bfloat16 if bf16 else None).eval()
    if compile:
        return torch.compile(fast, dynamic=False)
    return fast
