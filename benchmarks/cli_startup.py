"""How fast `fcnseg` answers when nothing needs a model: issue 21's "a CLI that answers at once".

Question answered: how long do `fcnseg --help`, `fcnseg eval --help` and a usage error (an
unknown `--engine`) take, from process start to exit, now that the parser imports no torch,
against what they cost before, when the package `__init__` imported the model registry (torch
and torchvision) ahead of any parsing? Target: under 0.5 s each on a quiet machine.

Method: each case runs as a fresh interpreter (`python -c` calling `fcnseg.cli.main`, the
console script's entry) `--repeats` times, interleaved round by round so load changes hit every
case alike; the median wall seconds per case are printed with the load average. Two baselines
run in the same rounds: "import torch" (`python -c "import torch"`, the floor of any command
that imports it) and the old behaviour ("old: --help", `fcnseg.models` imported first, as the
old package `__init__` did, then the same `--help`). Ratios are old / new.

Run:  .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SOURCE = str(Path(__file__).resolve().parent.parent / "src")

#: What the console script does: parse and run `argv`, exit with its status.
MAIN = "import sys; from fcnseg.cli import main; sys.exit(main({argv!r}))"
CASES: dict[str, str] = {
    "fcnseg --help": MAIN.format(argv=["--help"]),
    "fcnseg eval --help": MAIN.format(argv=["eval", "--help"]),
    "usage error": MAIN.format(argv=["eval", "--weights", "w", "--engine", "nothing"]),
    "import torch": "import torch",
    "old: --help": "import fcnseg.models; " + MAIN.format(argv=["--help"]),
}
#: (new case, baseline) pairs whose ratio is printed.
RATIOS = (("fcnseg --help", "old: --help"), ("fcnseg --help", "import torch"))


def time_once(code: str) -> float:
    """Wall seconds of `python -c code` in a fresh process (stdout/stderr discarded)."""
    env = {**os.environ, "PYTHONPATH": SOURCE}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - started


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each runs every case)")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, {platform.python_version()}")
    print(f"load before: {load_average()}")
    for code in CASES.values():  # warm the file cache once, untimed
        time_once(code)
    seconds: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, code in CASES.items():
            seconds[name].append(time_once(code))
    print(f"load after:  {load_average()}")
    print("\n| case | median s | runs (s) |\n|---|---|---|")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        runs = ", ".join(f"{value:.2f}" for value in values)
        print(f"| {name} | {medians[name]:.3f} | {runs} |")
    for new, baseline in RATIOS:
        print(f"{baseline} / {new}: {medians[baseline] / medians[new]:.1f}x")


if __name__ == "__main__":
    main()
