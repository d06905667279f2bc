"""The end of a `fcnseg predict` run under torchrun: every rank agrees on one outcome (the
lowest failing rank's error, or the report with its counts summed) before any rank leaves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import torch

from fcnseg.engine import distributed


class RankReport(Protocol):
    """What a rank's report offers here (engine.predict.PredictionRun has it)."""

    written: list[Path]
    failed: list[tuple[Path, str]]
    rank: int
    world_counts: tuple[int, int] | None


Report = TypeVar("Report", bound=RankReport)


def agree_on_outcome(
    report: Report | None,
    error: BaseException | None,
    device: torch.device,
    on_error: Callable[[BaseException], None] | None,
    announce: Callable[[Report], None] | None,
) -> Report:
    """The outcome every rank agrees on (see run_prediction): the lowest failing rank's error,
    else the report with the counts summed over the ranks.

    Why agree first: a rank that raised and left while the others waited in a collective made
    them fail with gloo's own traceback, and one that left first had torchrun kill the others
    before they printed; now every rank learns the outcome in one collective, the one line (or
    the summary) is printed, and only then does any rank leave (a barrier)."""
    world = distributed.world_size()
    failed = distributed.first_failed_rank(error is not None, device)
    if failed is not None:
        reporter = error is not None and failed == distributed.rank()
        if world == 1 or on_error is None:
            if reporter:
                raise error  # type: ignore[misc]
        else:
            if reporter:
                on_error(error)  # type: ignore[arg-type]
            distributed.barrier()
        raise distributed.PeerFailed(f"rank {failed} failed and reported the error")
    assert report is not None
    if world > 1:
        report.world_counts = summed_over_ranks(report, device)
    if announce is not None and report.rank == 0:
        announce(report)
    distributed.barrier()
    return report


def summed_over_ranks(report: RankReport, device: torch.device) -> tuple[int, int]:
    """(files written, inputs failed) summed over every torchrun rank."""
    counts = torch.tensor([len(report.written), len(report.failed)], dtype=torch.int64)
    counts = counts.to(device if device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(counts)
    return int(counts[0]), int(counts[1])
