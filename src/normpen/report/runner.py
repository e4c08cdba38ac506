"""Run experiments with a progress bar, one :class:`Outcome` each; one that raises fails, the run goes on."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from normpen.experiments.base import Check, Experiment
from normpen.report.figures import figure_png

__all__ = ["Outcome", "run_experiment", "run_experiments"]


@dataclass(frozen=True)
class Outcome:
    """What running one experiment gave: its checks and rendered figures, or the error it raised.

    Attributes
    ----------
    experiment : Experiment
    seconds : float
        Wall-clock time of the run, figures rendered included.
    checks : tuple of Check
    figures : mapping of str to bytes
        Figure name to PNG bytes.
    notes : str
    error : str or None
        The traceback, when the experiment raised (then ``checks`` and ``figures`` are empty).
    """

    experiment: Experiment
    seconds: float
    checks: tuple[Check, ...] = ()
    figures: Mapping[str, bytes] = field(default_factory=dict)
    notes: str = ""
    error: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))

    @property
    def passed(self) -> bool:
        """True when the experiment ran and every check passed."""
        return self.error is None and all(check.passed for check in self.checks)

    @property
    def verdict(self) -> str:
        """``"pass"``, ``"fail"`` (a check failed) or ``"error"`` (the experiment raised)."""
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.passed)

    def figure_file(self, figure_name: str) -> str:
        """File name of a figure beside the report: ``<experiment>.<figure>.png`` (slugs hold no dots)."""
        return f"{self.experiment.name}.{figure_name}.png"


def run_experiment(experiment: Experiment, quick: bool) -> Outcome:
    """Run ``experiment`` and render its figures; an exception becomes a failed :class:`Outcome`."""
    start = time.perf_counter()
    try:
        result = experiment.run(quick)
        figures = {name: figure_png(figure) for name, figure in result.figures.items()}
    except Exception:
        return Outcome(experiment, time.perf_counter() - start, error=traceback.format_exc())
    return Outcome(experiment, time.perf_counter() - start, result.checks, figures, result.notes)


def run_experiments(experiments: Sequence[Experiment], quick: bool, console: Console | None = None):
    """Run ``experiments`` in order with a rich progress bar on ``console``; a list of :class:`Outcome`."""
    outcomes = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("experiments", total=len(experiments))
        for experiment in experiments:
            progress.update(task, description=f"running {experiment.name}")
            outcomes.append(run_experiment(experiment, quick))
            progress.advance(task)
        progress.update(task, description="experiments done")
    return outcomes
