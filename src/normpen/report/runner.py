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
    seed : int
        The seed the experiment ran with.
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
    seed: int
    seconds: float
    checks: tuple[Check, ...] = ()
    figures: Mapping[str, bytes] = field(default_factory=dict)
    notes: str = ""
    error: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))

    @property
    def passed(self) -> bool:
        """True when the experiment ran and every check passed, empirical checks included.

        An empirical check that fails fails its experiment like a check of the
        claim: the report states what this run measured, and the check's pass
        rate says how often that happens over seeds.
        """
        return self.error is None and all(check.passed for check in self.checks)

    @property
    def result(self) -> str:
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


def run_experiment(experiment: Experiment, quick: bool, seed: int | None = None) -> Outcome:
    """Run ``experiment`` with ``seed`` (default: its own fixed seed) and render its figures.

    An exception becomes an :class:`Outcome` with the traceback as ``error``.
    """
    seed = experiment.seed if seed is None else seed
    start = time.perf_counter()
    try:
        result = experiment.run(quick, seed)
        figures = {name: figure_png(figure) for name, figure in result.figures.items()}
    except Exception:
        return Outcome(experiment, seed, time.perf_counter() - start, error=traceback.format_exc())
    return Outcome(experiment, seed, time.perf_counter() - start, result.checks, figures, result.notes)


def run_experiments(
    experiments: Sequence[Experiment], quick: bool, console: Console | None = None, seed: int | None = None
):
    """Run ``experiments`` in order with a rich progress bar on ``console``; a list of :class:`Outcome`.

    ``seed`` is passed to every experiment; ``None`` runs each with its own fixed seed.
    """
    outcomes = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("experiments", total=len(experiments))
        for experiment in experiments:
            progress.update(task, description=f"running {experiment.name}")
            outcomes.append(run_experiment(experiment, quick, seed))
            progress.advance(task)
        progress.update(task, description="experiments done")
    return outcomes
