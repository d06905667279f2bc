"""HTML reports people can look at: an evaluation (`fcnseg eval --report DIR`) and a training
run (`fcnseg report RUN`). Static folders (index.html + PNGs) that open offline from disk."""

from __future__ import annotations

from fcnseg.report.collect import EvalCollector
from fcnseg.report.pages import write_eval_report, write_run_report

__all__ = ["EvalCollector", "write_eval_report", "write_run_report"]
