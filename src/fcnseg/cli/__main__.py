"""`python -m fcnseg.cli ...`: the `fcnseg` command (benchmarks and the browser tests use it)."""

from __future__ import annotations

import os
import sys

from fcnseg.cli import main

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
