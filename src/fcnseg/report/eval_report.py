"""`fcnseg eval --report DIR` as a function: score a split and draw its HTML report in one pass.

Why a function of its own: the report needs what only the evaluation sees (every batch's
predictions, for the confusion matrix, per-image scores and worst images), so it hooks into
`run_evaluation` rather than reading its JSON afterwards. A Python user gets the same report
from the same one call as the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.report.collect import EvalCollector
from fcnseg.report.eval_page import write_eval_report

if TYPE_CHECKING:  # the engine imports torch; the report package must not, just to be named
    from fcnseg.engine.run_eval import EvalRun


def evaluate_with_report(
    report_dir: str | Path | None, *, force: bool = False, **evaluation: Any
) -> tuple[EvalRun, Path | None]:
    """`run_evaluation(**evaluation)`, plus REPORT_DIR/index.html when `report_dir` is given.

    A non-empty `report_dir` is refused unless `force` (checked before the evaluation runs, so
    a Python caller cannot replace a user's index.html by accident either). Returns (the EvalRun, the report's index path or None). With a report, the scores JSON also
    carries the confusion matrix and the per-image mean IU the report shows.
    """
    from fcnseg.engine.run_eval import check_report_folder, run_evaluation

    check_report_folder(report_dir, force=force)
    if report_dir is None:
        return run_evaluation(**evaluation), None
    collectors: list[EvalCollector] = []  # filled by the hook once the split is built

    def batch_hook(dataset: Any, loader: Any) -> EvalCollector:
        # The loader's order (this rank's shard) maps batch positions to dataset indices.
        indices = list(getattr(loader.sampler, "indices", range(len(dataset))))
        collectors.append(EvalCollector(dataset.num_classes, dataset.ignore_index, indices))
        return collectors[-1]

    def payload_extras(result: EvalRun) -> dict[str, Any]:
        return collectors[0].json_fields(sample_names(result.dataset))

    result = run_evaluation(**evaluation, batch_hook=batch_hook, payload_extras=payload_extras)
    index = write_eval_report(
        report_dir, result.payload, result.meta, collectors[0], result.dataset
    )
    return result, index


def sample_names(dataset: Any) -> list[str]:
    """Every sample's name for the report (its index where the dataset cannot name it)."""
    try:
        return [dataset.sample_name(index) for index in range(len(dataset))]
    except Exception:  # noqa: BLE001 - names are a nicety of the report
        return [str(index) for index in range(len(dataset))]
