"""normpen: parameter norm penalties as objects.

The public API: the penalty objects (value, grad, prox, projection, dual norm,
lambda_max). Training rules live in :mod:`normpen.torch`, penalized linear
models in :mod:`normpen.linear`, measurements in :mod:`normpen.analysis`,
embedded data in :mod:`normpen.datasets`.
"""

from normpen.penalties import (
    L1,
    L2,
    Anchored,
    ElasticNet,
    GroupLasso,
    MaxNorm,
    Nuclear,
    Penalty,
    SparseGroupLasso,
    Spectral,
)

__all__ = [
    "Penalty",
    "L2",
    "L1",
    "ElasticNet",
    "GroupLasso",
    "SparseGroupLasso",
    "Spectral",
    "Nuclear",
    "Anchored",
    "MaxNorm",
]
__version__ = "0.1.0"
