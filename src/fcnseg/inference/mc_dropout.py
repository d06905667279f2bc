"""Monte-Carlo dropout at test time: N stochastic passes averaged, and how unsure the mean is.

Why: a net trained with dropout (Bayesian SegNet; the paper FCNs' fc6/fc7) approximates a
posterior over its weights; keeping dropout on at test time and averaging the softmax of N passes
gives better-calibrated probabilities and, from their spread, a per-pixel uncertainty (Kendall,
Badrinarayanan and Cipolla, "Bayesian SegNet", 2015). This module is the one place that samples;
`engine.session.InferenceSession` calls it for eval, predict, serve and the Python API.

What is sampled: only the dropout layers (`DROPOUT_TYPES`) are switched to training mode during
the passes; batch norm and everything else stay in eval mode, so the running statistics are
used and never updated. Each pass is one full inference of the session's mode (whole, sliding
or multi-scale), so sampling composes with every mode.

Reproducibility: each call seeds PyTorch's generator with `MCDropout.seed` inside
`torch.random.fork_rng`, so the same image (in the same batch position) gets the same masks in
predict, eval, serve and the API, and the caller's random stream is left as it was. A lock
serialises sampling across threads (dropout draws from the global generator; serve's workers
share one model).

The uncertainty is the predictive entropy of the mean, H = -sum_c p_c log p_c, divided by
log(C) so that it lies in [0, 1] whatever the class count: 0 where every pass agrees with full
confidence, 1 where the mean is uniform over the classes.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fcnseg.errors import UsageError
from fcnseg.models.protocol import map_heads

ModelOutput = Tensor | dict[str, Tensor]

#: The layers MC dropout switches on: every dropout flavour of torch.nn.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
#: The seed of the dropout masks when none is given (`--seed`).
DEFAULT_SEED: int = 0
#: More passes than this is a typo (each is a full forward); Bayesian SegNet used 50.
MAX_SAMPLES: int = 1000
#: Runtimes that can sample: exported graphs carry dropout as the identity.
SAMPLING_RUNTIMES: tuple[str, ...] = ("torch",)

_SAMPLING_LOCK = threading.Lock()

__all__ = [
    "DEFAULT_SEED",
    "DROPOUT_TYPES",
    "MCDropout",
    "check_request",
    "check_runtime",
    "dropout_modules",
    "dropout_sampling",
    "mc_dropout_probs",
    "predictive_entropy",
    "require_dropout",
]


@dataclass
class MCDropout:
    """How to sample (`samples` passes, masks from `seed`) and what the sampling cost so far.

    The counters (`images`, `seconds`) are updated under the sampling lock, so a summary is
    right even when serve's workers share one instance."""

    samples: int
    seed: int = DEFAULT_SEED
    images: int = field(default=0, compare=False)
    seconds: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise UsageError(f"--mc-samples must be a whole number, got {self.samples!r}")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise UsageError(
                f"--mc-samples must be between 1 and {MAX_SAMPLES}, got {self.samples}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"--seed must be a whole number 0 or more, got {self.seed!r}")

    def per_image_ms(self) -> float | None:
        """Mean milliseconds of sampling per image so far (None before the first)."""
        return 1000 * self.seconds / self.images if self.images else None

    def summary(self) -> str:
        """One line for the terminal: passes, seed and the time per image."""
        line = f"mc-dropout: {self.samples} samples per image (seed {self.seed})"
        per_image = self.per_image_ms()
        if per_image is not None:
            line += f", {per_image:.1f} ms per image over {self.images} images"
        return line

    def as_json(self) -> dict[str, float | int | None]:
        per_image = self.per_image_ms()
        return {
            "samples": self.samples,
            "seed": self.seed,
            "ms_per_image": None if per_image is None else round(per_image, 1),
        }


def dropout_modules(model: object) -> list[nn.Module]:
    """The dropout layers of `model` (none for anything that is not an nn.Module)."""
    if not isinstance(model, nn.Module):
        return []
    return [module for module in model.modules() if isinstance(module, DROPOUT_TYPES)]


def require_dropout(model: object, name: str) -> None:
    """UsageError (one line) when `model` has no dropout layer to sample."""
    if not dropout_modules(model):
        raise UsageError(
            f"model {name} has no dropout layers; --mc-samples needs a net with dropout such as "
            "bayesian_segnet_* (or the paper FCNs, fcn*_vgg16)"
        )


def check_runtime(runtime: str) -> None:
    """UsageError (one line) for a runtime that cannot sample (the ONNX graphs)."""
    if runtime not in SAMPLING_RUNTIMES and runtime != "auto":
        raise UsageError(
            f"--mc-samples needs --engine torch (or auto): the {runtime} graph is exported with "
            "dropout off, so every pass would be the same"
        )


def check_request(
    samples: int | None, seed: int, runtime: str, model: object = None, name: str = ""
) -> None:
    """Whether sampling can be done, checked before the work starts: `samples`/`seed` in bounds,
    a runtime that can sample and, when `model` is given, dropout layers in it (one-line
    UsageError); nothing when `samples` is None (no sampling asked)."""
    if samples is not None:
        MCDropout(samples, seed)
        check_runtime(runtime)
        if model is not None:
            require_dropout(model, name)


@contextlib.contextmanager
def dropout_sampling(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Dropout layers of `model` in training mode for the block; every other layer untouched
    (batch norm keeps its running statistics); each layer's own mode restored after."""
    layers = dropout_modules(model)
    before = [layer.training for layer in layers]
    try:
        for layer in layers:
            layer.train(True)
        yield layers
    finally:
        for layer, mode in zip(layers, before, strict=True):
            layer.train(mode)


def _devices(batch: Tensor) -> list[int]:
    """CUDA devices whose generator fork_rng must save and restore (none on the CPU)."""
    if batch.device.type != "cuda":
        return []
    index = batch.device.index
    return [torch.cuda.current_device() if index is None else index]


def mc_dropout_probs(
    model: nn.Module,
    batch: Tensor,
    probs_of: Callable[[Tensor], ModelOutput],
    sampling: MCDropout,
) -> ModelOutput:
    """Mean class probabilities of `sampling.samples` passes of `probs_of(batch)` with the
    dropout layers of `model` active (`probs_of` runs `model`, in whatever inference mode);
    per head for multi-head models. Seeded by `sampling.seed`; the time is added to
    `sampling`'s counters."""
    started = time.perf_counter()
    with _SAMPLING_LOCK, torch.no_grad(), torch.random.fork_rng(devices=_devices(batch)):
        torch.manual_seed(sampling.seed)
        with dropout_sampling(model):
            total = probs_of(batch)
            for _ in range(sampling.samples - 1):
                total = _add(total, probs_of(batch))
        mean = map_heads(total, lambda summed: summed / sampling.samples)
        sampling.images += int(batch.shape[0])
        sampling.seconds += time.perf_counter() - started
    return mean


def _add(total: ModelOutput, more: ModelOutput) -> ModelOutput:
    if isinstance(total, dict) and isinstance(more, dict):
        return {head: total[head] + more[head] for head in total}
    assert isinstance(total, Tensor) and isinstance(more, Tensor)
    return total + more


def predictive_entropy(probs: Tensor) -> Tensor:
    """N x H x W entropy of N x C x H x W probabilities, divided by log(C): in [0, 1]."""
    classes = probs.shape[1]
    if classes < 2:
        return torch.zeros(probs.shape[0], *probs.shape[2:], device=probs.device)
    p = probs.float()
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return (entropy / math.log(classes)).clamp_(0.0, 1.0)
