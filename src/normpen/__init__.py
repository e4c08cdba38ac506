"""normpen: parameter norm penalties as objects.

The public API: the penalty objects (value, grad, prox, projection, dual norm,
lambda_max). Training rules live in :mod:`normpen.torch`, penalized linear
models in :mod:`normpen.linear`, measurements in :mod:`normpen.analysis`.
"""

from normpen.penalties import L1, Penalty

__all__ = ["Penalty", "L1"]
__version__ = "0.1.0"
