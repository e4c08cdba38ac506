"""The experiments ``normpen report`` runs, in report order.

Adding an experiment: one module in :mod:`normpen.experiments` defining an
``EXPERIMENT`` (see :mod:`normpen.experiments.base`), plus one line in
:data:`EXPERIMENTS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from normpen.experiments import sparsity_dialogue
from normpen.experiments.base import Experiment

__all__ = ["EXPERIMENTS", "select"]

EXPERIMENTS: tuple[Experiment, ...] = (
    sparsity_dialogue.EXPERIMENT,
)


def select(names: Sequence[str] | None = None) -> list[Experiment]:
    """The registered experiments named in ``names`` (in registry order), all of them when ``names`` is empty.

    Raises ``ValueError`` listing the known names when a name is unknown, and
    when two registered experiments share a name.
    """
    known = {}
    for experiment in EXPERIMENTS:
        if experiment.name in known:
            raise ValueError(f"two registered experiments are named {experiment.name!r}; rename one")
        known[experiment.name] = experiment
    if not names:
        return list(known.values())
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown experiment {', '.join(map(repr, unknown))}; choose from: {', '.join(known)} "
            "(see `normpen list`)"
        )
    return [experiment for name, experiment in known.items() if name in names]
