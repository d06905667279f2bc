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

#: Runtimes (`--engine`) that run on the CPU only here (onnxruntime's CPU provider).
CPU_ONLY_RUNTIMES: tuple[str, ...] = ("onnxruntime", "onnxruntime-int8")


def resolve_device(name: str, runtime: str | None = None) -> torch.device:
    """ "auto" picks CUDA when present, unless `runtime` runs on the CPU only (onnxruntime);
    otherwise the named device (one-line error if absent).

    One rule for train, eval, predict and serve, so `--device auto --engine onnxruntime` means
    the CPU in every command instead of an error on a CUDA machine.
    """
    if name == "auto":
        if runtime in CPU_ONLY_RUNTIMES:
            return torch.device("cpu")
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
