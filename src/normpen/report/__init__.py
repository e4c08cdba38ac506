"""The report: run the experiments, then write ``index.html``, ``results.json`` and the figures."""

from normpen.report.runner import Outcome, run_experiment, run_experiments
from normpen.report.writer import ReportDirError, check_output_dir, write_report

__all__ = [
    "Outcome",
    "ReportDirError",
    "check_output_dir",
    "run_experiment",
    "run_experiments",
    "write_report",
]
