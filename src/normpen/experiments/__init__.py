"""Experiments: one module per claim of the seed texts, each an :class:`Experiment` listed in ``registry``.

See :mod:`normpen.experiments.base` for the contract and ``docs/report.md``
for how to add an experiment.
"""

from normpen.experiments.base import Check, Experiment, Result

__all__ = ["Check", "Experiment", "Result"]
