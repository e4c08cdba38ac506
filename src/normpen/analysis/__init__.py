"""Measurements and regularisers built on norms: operator norms, Lipschitz bounds, certified radii,
path norms.

- :mod:`~normpen.analysis.operator_norm`: spectral norms of Linear/Conv operators (certified bound,
  persistent power iteration, exact);
- :mod:`~normpen.analysis.lipschitz`: certified Lipschitz bounds of networks;
- :mod:`~normpen.analysis.certify`: certified L2 radii and accuracy, PGD attack;
- :mod:`~normpen.analysis.pathnorm`: path norms and rebalancing of ReLU networks;
- :mod:`~normpen.analysis.spectral_penalty`: spectral penalty and spectral-ball constraint for training.
"""

from normpen.analysis.certify import (
    AttackResult,
    certified_accuracy,
    certified_radius,
    empirical_radius,
    pgd_attack,
)
from normpen.analysis.lipschitz import GELU_LIPSCHITZ, LayerFactor, LipschitzBound, Residual, lipschitz_bound
from normpen.analysis.operator_norm import (
    LayerOperator,
    PowerIteration,
    gram_iteration_bound,
    layer_input_shapes,
    operator_norm_bound,
    operator_norm_estimate,
    operator_norm_exact,
)
from normpen.analysis.pathnorm import PathNormPenalty, path_norm, rebalance
from normpen.analysis.spectral_penalty import SpectralConstraint, SpectralPenalty

__all__ = [
    "AttackResult",
    "GELU_LIPSCHITZ",
    "LayerFactor",
    "LayerOperator",
    "LipschitzBound",
    "PathNormPenalty",
    "PowerIteration",
    "Residual",
    "SpectralConstraint",
    "SpectralPenalty",
    "certified_accuracy",
    "certified_radius",
    "empirical_radius",
    "gram_iteration_bound",
    "layer_input_shapes",
    "lipschitz_bound",
    "operator_norm_bound",
    "operator_norm_estimate",
    "operator_norm_exact",
    "path_norm",
    "pgd_attack",
    "rebalance",
]
