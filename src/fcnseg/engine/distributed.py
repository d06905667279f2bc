"""torchrun integration: process-group setup, rank helpers and a resumable sharded sampler.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; with them present `setup()` joins the process
group (NCCL on GPUs, gloo on CPU) and `process_group()` leaves it again. Every helper degrades to the single-process case, so the
engine has one code path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 writes files and prints, so N processes produce one run directory."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def setup(device_kind: str) -> torch.device | None:
    """Join the torchrun process group if launched by torchrun; returns the rank's device."""
    if not launched_by_torchrun() or is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(device_kind: str) -> Iterator[torch.device | None]:
    """Join torchrun's process group for the block (see `setup`; yields the rank's device, or
    None when not launched by torchrun) and leave it at the end, also on errors.

    Why leave explicitly: a process that exits with the group still open may abort at
    interpreter shutdown ("terminate called without an active exception", SIGABRT) when
    gloo's threads are destroyed unjoined, which turns a finished run into a failed torchrun.
    A group the caller joined before (is_distributed() already true) is left to the caller.
    """
    device = setup(device_kind)
    try:
        yield device
    finally:
        if device is not None and is_distributed():
            dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` inside DistributedDataParallel under torchrun (gradients averaged over ranks at
    each backward), the model itself otherwise; `checkpoint.unwrap` undoes it."""
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


class PeerFailed(Exception):
    """Another torchrun rank failed and reported its error; this rank exits with the same
    status without repeating it (see `first_failed_rank`)."""


def first_failed_rank(failed: bool, device: torch.device) -> int | None:
    """The lowest rank whose `failed` is true, agreed by every rank (None: none failed).

    Every rank must call it, failed or not: one collective where each learns whether to go on,
    so no rank exits while another waits in a later collective (which would end it with gloo's
    "connection closed" traceback instead of the one-line error).
    """
    if not is_distributed():
        return 0 if failed else None
    world = world_size()
    tensor = torch.tensor([rank() if failed else world], dtype=torch.int64)
    tensor = tensor.to(device if device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    first = int(tensor.item())
    return None if first >= world else first


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (e.g. "time budget exceeded") for every rank, so all stop together."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(tensor, 0)
    return bool(tensor.item())


def broadcast_value(value: float, device: torch.device) -> float:
    """Rank 0's number (e.g. the share of the time budget spent) for every rank."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return float(tensor.item())


class EpochSampler(Sampler[int]):
    """Shuffled, rank-sharded indices, reproducible from (seed, epoch) and skippable.

    The permutation is drawn from a generator seeded with seed + epoch, so a checkpoint only
    needs the epoch and the number of batches already consumed (`start_batch`) to continue at
    the same sample. Rank r takes positions r, r + W, r + 2W, ... of the (padded) permutation,
    so the union of the ranks' batch i is batch i of a one-process run with W x the batch size:
    the same global batch whatever the number of processes.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank_id: int | None = None,
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_replicas = num_replicas if num_replicas is not None else world_size()
        self.rank = rank_id if rank_id is not None else rank()
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_order(self) -> list[int]:
        """This rank's indices for the whole epoch (before skipping)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        global_batch = self.batch_size * self.num_replicas
        if self.drop_last and self.length >= global_batch:
            order = order[: (self.length // global_batch) * global_batch]
        else:
            padded = -(-len(order) // self.num_replicas) * self.num_replicas
            order = order + order[: padded - len(order)]
        return order[self.rank :: self.num_replicas]

    def batches_per_epoch(self) -> int:
        count = len(self.epoch_order())
        if self.drop_last and count >= self.batch_size:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, len(self.epoch_order()) - self.start_batch * self.batch_size)


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so each sample's augmentation is seeded by (seed, epoch, index).

    Random crops/flips then depend neither on the number of data-loader workers nor on the
    number of processes, nor on where training was interrupted: the RNG streams of python,
    numpy and torch are forked around each `__getitem__`, so the caller's streams (dropout)
    are untouched.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str):
        # Forward metadata (classes, palette, ignore_index...) to the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        import random

        import numpy as np

        sample_seed = (self.seed * 1_000_003 + self.epoch * 100_003 + index) % (2**31)
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
