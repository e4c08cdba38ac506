"""The experiments ``normpen report`` runs, in report order.

Adding an experiment: one module in :mod:`normpen.experiments` defining an
``EXPERIMENT`` (see :mod:`normpen.experiments.base`), plus one line in
:data:`EXPERIMENTS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from normpen.experiments import (
    adam_l2_vs_adamw,
    consistency_l2,
    constrained_penalized,
    continual_learning,
    coupled_decoupled,
    diagnosing_fit,
    elastic_net_grouping,
    gan_spectral,
    group_lasso_features,
    hard_margin,
    implicit_bias,
    l1_proximal,
    lr_wd_scaling,
    normalized_embeddings,
    path_norm_invariance,
    path_norm_simplicity,
    pathway_selection,
    physics_discovery,
    prudent_investor,
    sparsity_dialogue,
    spectral_certification,
    stabilized_inversion,
    trunk_heads,
)
from normpen.experiments.base import Experiment

__all__ = ["EXPERIMENTS", "select"]

EXPERIMENTS: tuple[Experiment, ...] = (
    sparsity_dialogue.EXPERIMENT,  # 000 The Dialogue with Sparsity (issue 2)
    diagnosing_fit.EXPERIMENT,  # 1
    constrained_penalized.EXPERIMENT,  # 2
    hard_margin.EXPERIMENT,  # 3
    implicit_bias.EXPERIMENT,  # 4
    coupled_decoupled.EXPERIMENT,  # 5
    adam_l2_vs_adamw.EXPERIMENT,  # 6
    l1_proximal.EXPERIMENT,  # 7
    elastic_net_grouping.EXPERIMENT,  # 8
    group_lasso_features.EXPERIMENT,  # 9
    spectral_certification.EXPERIMENT,  # 10
    path_norm_invariance.EXPERIMENT,  # 11
    path_norm_simplicity.EXPERIMENT,  # 11b (issue 12 item 7)
    lr_wd_scaling.EXPERIMENT,  # 12
    trunk_heads.EXPERIMENT,  # 13
    normalized_embeddings.EXPERIMENT,  # 14
    consistency_l2.EXPERIMENT,  # 15
    prudent_investor.EXPERIMENT,  # 16
    stabilized_inversion.EXPERIMENT,  # 17
    continual_learning.EXPERIMENT,  # 18
    physics_discovery.EXPERIMENT,  # 19
    pathway_selection.EXPERIMENT,  # 20
    gan_spectral.EXPERIMENT,  # 21
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
