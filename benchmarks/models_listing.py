"""`fcnseg models` wall time: the shipped cost table (now) vs building every model (before).

    PYTHONPATH=src .venv/bin/python benchmarks/models_listing.py --rounds 3

Each round runs both in a fresh interpreter (so imports count, as for a user): the command as
shipped, and the former listing (every registered model built on the meta device, FLOPs counted).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

NOW = [sys.executable, "-m", "fcnseg.cli", "models"]
BEFORE = [
    sys.executable,
    "-c",
    "from fcnseg.models.table import format_model_table, model_table;"
    "print(format_model_table(model_table()))",
]


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    now, before = [], []
    for _ in range(args.rounds):
        now.append(seconds(NOW))
        before.append(seconds(BEFORE))
    now_s, before_s = statistics.median(now), statistics.median(before)
    print(f"shipped table: median {now_s:.2f} s {[round(s, 2) for s in now]}")
    print(f"build all:     median {before_s:.2f} s {[round(s, 2) for s in before]}")
    print(f"ratio: {before_s / now_s:.1f}x faster")


if __name__ == "__main__":
    main()
