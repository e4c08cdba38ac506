r"""Quadratic datafit :math:`F(w, b) = \tfrac12 \sum_i a_i (y_i - x_i^\top w - b)^2` (least squares)."""

from __future__ import annotations

from normpen._array import namespace
from normpen.linear.datafits.base import Datafit, float_target, row_sum

__all__ = ["Quadratic"]


class Quadratic(Datafit):
    r"""Least squares, :math:`\ell(y, z) = \tfrac12 (y - z)^2`.

    With unit sample weights :math:`F = \frac{1}{2n}\|y - Xw - b\|^2`, the
    scaling of scikit-learn's ``Lasso`` and ``ElasticNet``: our ``Lasso(lam)``
    is scikit-learn's ``Lasso(alpha=lam)``. With sample weights :math:`s`,
    :math:`F = \sum_i s_i (y_i - z_i)^2 / (2\sum_i s_i)`, which is also
    scikit-learn's (it rescales the weights to sum to :math:`n`).

    Notes
    -----
    - derivative :math:`z - y`, second derivative 1 (``curvature = 1``);
    - conjugate :math:`\ell^*(u) = u y + u^2/2`, finite everywhere;
    - the dual candidate is the residual, :math:`u = z - y`.
    """

    curvature = 1.0

    def encode_target(self, y):
        return float_target(y, 1, type(self).__name__)

    def loss(self, y, z):
        r = z - y
        return 0.5 * row_sum(r * r)

    def derivative(self, y, z):
        return z - y

    def second_derivative(self, y, z):
        return z * 0 + 1

    def conjugate(self, y, u):
        return row_sum(u * y + 0.5 * u * u)

    def fit_intercept(self, y, z, weights, max_iter=50):
        r"""Closed form: the weighted mean residual :math:`\sum_i a_i (y_i - z_i)`."""
        xp = namespace(z)
        residual = y - z
        return (
            xp.sum(weights * residual)
            if z.ndim == 1
            else xp.sum(xp.reshape(weights, (-1, 1)) * residual, axis=0)
        )
