"""Which device a run or an inference uses, and the seeding that makes a run repeatable.

Both are decided once, before any model or data exists: the device because torchrun may give
each rank its own GPU, the seeds because building the model draws its initial weights from the
global RNG streams.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from fcnseg.engine import distributed
from fcnseg.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; otherwise the named device (one-line error if absent)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device {name!r}: unknown; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: CUDA is not available here; use --device cpu")
    return device


@contextlib.contextmanager
def training_device(name: str) -> Iterator[torch.device]:
    """The device of this training process for the block: `name` resolved, then, under
    torchrun, the rank's own device with the process group joined for the block and left after
    it (GPU `LOCAL_RANK`, or the CPU with gloo; see distributed.process_group)."""
    device = resolve_device(name)
    with distributed.process_group(device.type) as rank_device:
        yield rank_device if rank_device is not None else device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with `deterministic`, ask for deterministic kernels too
    (what makes a resumed CPU run bit-identical to an uninterrupted one)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
