"""The run's clock: what `train.max_minutes` and `train.schedule_span=budget` are measured by."""

from __future__ import annotations

import time


class Stopwatch:
    """Seconds since the run started, across resumes (the time budget covers the whole run)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def continue_from(self, elapsed: float) -> None:
        """Count `elapsed` seconds already spent by the interrupted part of the run."""
        self.start = time.monotonic() - elapsed
