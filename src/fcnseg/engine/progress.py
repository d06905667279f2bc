"""The training loop's tqdm bar: one per epoch on rank 0, with loss, lr and images per second;
and `task_bar`, the bar of a command's other long tasks (the CRF parameter search).

Why apart from the loop: it is display only (nothing in it is checkpointed or affects the
computation), and the loop module is kept to the state and steps that a resume must replay.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from fcnseg.config import TrainConfig
from fcnseg.engine import distributed


def epoch_bar(cfg: TrainConfig, epoch: int, batches_per_epoch: int, start_batch: int) -> Any:
    """The epoch's tqdm bar (rank 0, when `train.progress`), else None."""
    if not (cfg.progress and distributed.is_main()):
        return None
    from tqdm import tqdm

    return tqdm(
        total=batches_per_epoch,
        initial=start_batch,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        dynamic_ncols=True,
        leave=False,
    )


def show(bar: Any, tick: float, batch_images: int, mean_loss: float, lr: float) -> None:
    """Advance the bar by one optimiser step and show the running loss, lr and throughput."""
    elapsed = max(1e-9, time.monotonic() - tick)
    bar.update(1)
    throughput = bar.n * batch_images * distributed.world_size() / elapsed
    bar.set_postfix(
        loss=f"{mean_loss:.4g}", lr=f"{lr:.3g}", img_s=f"{throughput:.1f}" if bar.n else "-"
    )


@contextlib.contextmanager
def task_bar(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar of `total` steps for a command's long task (`fcnseg crf-search`), closed on
    leaving; None when not `enabled` (not a terminal) or on a rank other than 0."""
    if not (enabled and distributed.is_main()):
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()
