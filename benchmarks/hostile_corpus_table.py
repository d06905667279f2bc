"""Run the hostile-input corpus (tests/test_hostile_inputs.py) and print its markdown table.

    python benchmarks/hostile_corpus_table.py            # runs pytest, prints the table

One row per kind: how many cases were tried, what each was expected to end in (exit status and
stderr lines, from the corpus's own `CASES`), and how many ended that way (passed) or not.
Why a script rather than a copy of pytest's output: benchmarks/RESULTS.md records the table, and
it must be regenerated from the same cases the test runs.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = ROOT / "tests" / "test_hostile_inputs.py"
OUTCOMES = {
    (2, 1): "refused: exit 2, one line",
    (1, 1): "bad input skipped, rest written: exit 1, one line",
    (1, 0): "reported in the check's table: exit 1",
    (0, 0): "handled: exit 0, nothing lost",
}


def _cases() -> list:
    sys.path.insert(0, str(TEST_FILE.parent))
    import test_hostile_inputs  # noqa: PLC0415 - the corpus is the test module itself

    return test_hostile_inputs.CASES


def run_corpus() -> tuple[dict[str, str], float]:
    """Test id -> "passed" / "failed" / "skipped", and the wall time of the pytest run."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(TEST_FILE),
                "-k",
                "test_hostile_input",
                f"--junitxml={report}",
            ],
            cwd=ROOT,
            check=False,
        )
        wall = time.perf_counter() - start
        results: dict[str, str] = {}
        for testcase in ET.parse(report).getroot().iter("testcase"):
            name = testcase.get("name", "")
            if not name.startswith("test_hostile_input["):
                continue
            case_id = name[len("test_hostile_input[") : -1]
            state = "passed"
            for child in testcase:
                if child.tag in ("failure", "error"):
                    state = "failed"
                elif child.tag == "skipped":
                    state = "skipped"
            results[case_id] = state
    return results, wall


def table(results: dict[str, str]) -> str:
    rows: dict[str, Counter] = defaultdict(Counter)
    expected: dict[str, Counter] = defaultdict(Counter)
    for case in _cases():
        rows[case.kind][results.get(case.id, "not run")] += 1
        outcome = OUTCOMES.get((case.exit, case.stderr_lines), f"exit {case.exit}")
        expected[case.kind][outcome] += 1
    lines = [
        "| kind | cases tried | expected outcome (cases) | as expected | not as expected |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    total = Counter()
    for kind, counts in rows.items():
        tried = sum(counts.values())
        outcomes = "; ".join(f"{text} ({n})" for text, n in expected[kind].items())
        bad = tried - counts["passed"]
        lines.append(f"| {kind} | {tried} | {outcomes} | {counts['passed']} | {bad} |")
        total.update(counts)
    tried = sum(total.values())
    lines.append(
        f"| **all** | **{tried}** | | **{total['passed']}** | **{tried - total['passed']}** |"
    )
    return "\n".join(lines)


def main() -> int:
    results, wall = run_corpus()
    load = os.getloadavg()
    print(
        f"command: python benchmarks/hostile_corpus_table.py (pytest {TEST_FILE.relative_to(ROOT)})"
    )
    print(
        f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"date {datetime.date.today().isoformat()}; corpus wall time {wall:.0f} s\n"
    )
    print(table(results))
    return 0 if all(state == "passed" for state in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
