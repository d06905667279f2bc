"""HTML reports people can look at: an evaluation (`fcnseg eval --report DIR`) and a training
run (`fcnseg report RUN`). Static folders (index.html + PNGs) that open offline from disk.

    report/html.py         the page frame, stylesheet and escaped parts both reports share
    report/eval_page.py    an evaluation's section and its report (write_eval_report)
    report/run_page.py     a run directory's report (write_run_report)
    report/eval_report.py  scoring and reporting in one pass (evaluate_with_report)
    report/collect.py      what the report needs from every evaluated batch (EvalCollector)
    report/charts.py       the PNG charts
"""

from __future__ import annotations

from fcnseg.report.collect import EvalCollector
from fcnseg.report.eval_page import write_eval_report
from fcnseg.report.eval_report import evaluate_with_report
from fcnseg.report.run_page import write_run_report

__all__ = ["EvalCollector", "evaluate_with_report", "write_eval_report", "write_run_report"]
