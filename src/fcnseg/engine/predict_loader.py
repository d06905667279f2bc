"""The scaling parts of `fcnseg predict`: DataLoader decoding, same-size batches, background writes.

Why a module of its own: `engine.predict` owns *what* predict does per input (names, failure
reports, output formats); this module owns *how fast* it gets there, so the hardened per-input
rules stay in one place and the pipeline around them can change without touching them.

- Decoding runs in DataLoader workers; a failure there comes back as a `Decoded` record with a
  one-line reason instead of an exception, so one bad file cannot stop the loader.
- Consecutive images of one size are stacked into one forward (`batch_size`; 1 is today's loop).
- PNG/JPEG encoding runs on one background thread behind a bounded queue, so the forward of the
  next batch overlaps the writes of the last; an error there is re-raised in the caller, as it
  would have been in the foreground.
- Under torchrun each rank takes inputs i with i % world == rank (see `shard`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from fcnseg.errors import FcnsegError

#: Fewer inputs than this decode in the main process: worker start-up would cost more than it saves.
FEW_INPUTS: int = 8

#: Outputs waiting for the writer thread at most; bounds memory when writing is the bottleneck.
WRITE_QUEUE_SIZE: int = 8


def failure_reason(path: Path, error: BaseException) -> str:
    """The one-line reason printed for an input that failed (same text in a worker or not)."""
    reason = " ".join(str(error).split())
    if isinstance(error, OSError) and error.errno is not None:
        reason = f"{path}: {error.strerror}"
    if not reason.startswith(str(path)):
        reason = f"{path}: {reason}"
    return reason


def default_workers(count: int) -> int:
    """min(2, CPUs) decode workers, or 0 (decode in-process) for fewer than FEW_INPUTS inputs."""
    if count < FEW_INPUTS:
        return 0
    return min(2, os.cpu_count() or 1)


def shard(items: list, rank: int, world: int) -> list:
    """Items i with i % world == rank: every item goes to exactly one of `world` ranks."""
    return items[rank::world]


@dataclass
class Decoded:
    """One input after decoding: the image, or the reason it could not be decoded."""

    index: int
    path: Path
    image: torch.Tensor | None
    reason: str | None = None


class DecodeDataset(Dataset):
    """Decodes `files[i]` to `channels` bands (the model's; `io.read_image`'s rules, as
    training decodes); with `raise_errors` False, a bad file yields a failure record.

    Why records and not exceptions: an exception in a DataLoader worker is re-raised in the main
    process and ends the iteration, so every input after a corrupt one would be lost.
    """

    def __init__(self, files: list[Path], raise_errors: bool = False, channels: int = 3) -> None:
        self.files = files
        self.raise_errors = raise_errors
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        from fcnseg.data.io import read_image

        path = self.files[index]
        try:
            return Decoded(index, path, read_image(path, self.channels))
        except (FcnsegError, OSError) as error:
            if self.raise_errors:
                raise
            return Decoded(index, path, None, failure_reason(path, error))


def _identity(item: Decoded) -> Decoded:
    return item


def decoded_inputs(
    files: list[Path], num_workers: int, raise_errors: bool = False, channels: int = 3
) -> Iterator[Decoded]:
    """The inputs decoded in order to `channels` bands, by `num_workers` DataLoader workers
    (0: in this process)."""
    dataset = DecodeDataset(files, raise_errors=raise_errors, channels=channels)
    if num_workers <= 0:
        yield from (dataset[index] for index in range(len(dataset)))
        return
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        prefetch_factor=4,
    )
    yield from loader


def same_size_groups(items: Iterator[Decoded], batch_size: int) -> Iterator[list[Decoded]]:
    """Consecutive decoded images of one H x W in groups of at most `batch_size`.

    Failure records are yielded alone (a group of one with no image), in input order, so their
    report lines appear where today's loop would print them.
    """
    pending: list[Decoded] = []
    for item in items:
        if item.image is None:
            if pending:
                yield pending
                pending = []
            yield [item]
            continue
        if pending and (
            len(pending) >= batch_size or pending[0].image.shape != item.image.shape  # type: ignore[union-attr]
        ):
            yield pending
            pending = []
        pending.append(item)
    if pending:
        yield pending


class BackgroundWriter:
    """Runs write jobs on one thread behind a bounded queue; `close()` waits for all of them.

    The first exception a job raises is kept and re-raised by the next `submit` or by `close`,
    so a full disk still stops predict with its usual error instead of passing silently. With
    `foreground` True the jobs run in the caller at once (today's loop, for comparisons).
    """

    def __init__(self, foreground: bool = False, size: int = WRITE_QUEUE_SIZE) -> None:
        self.foreground = foreground
        self.error: BaseException | None = None
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        if not foreground:
            self._thread = threading.Thread(target=self._run, name="fcnseg-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                    self.error = error

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        if self.foreground:
            job()
            return
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        """Wait until every submitted job has run; re-raise the first error of any of them."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise()
