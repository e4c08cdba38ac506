r"""Squared hinge datafit :math:`F(w, b) = \sum_i a_i \max(0, 1 - y_i(x_i^\top w + b))^2`, labels -1/+1."""

from __future__ import annotations

from normpen._array import namespace
from normpen.linear.datafits.base import MarginDatafit

__all__ = ["SquaredHinge"]


class SquaredHinge(MarginDatafit):
    r"""Squared hinge loss of the margin, :math:`\varphi(t) = \max(0, 1 - t)^2`.

    Differentiable with a Lipschitz gradient, so coordinate descent, FISTA
    and the SVM dual solver all take it. With unit weights and
    :math:`\tfrac\lambda2\|w\|^2` this is scikit-learn's
    ``LinearSVC(loss="squared_hinge", C=1/(n*lam))`` divided by :math:`nC`.

    Notes
    -----
    - :math:`\varphi'(t) = -2\max(0, 1 - t)`, :math:`\varphi''(t) = 2\cdot[t < 1]`
      (``curvature = 2``);
    - conjugate :math:`\varphi^*(s) = s + s^2/4` for :math:`s \le 0`, ``inf`` for :math:`s > 0`.
    """

    curvature = 2.0

    def phi(self, t):
        xp = namespace(t)
        slack = xp.clip(1 - t, 0, None)
        return slack * slack

    def phi_derivative(self, t):
        xp = namespace(t)
        return -2 * xp.clip(1 - t, 0, None)

    def phi_second_derivative(self, t):
        xp = namespace(t)
        return xp.where(t < 1, xp.full_like(t, 2.0), 0.0)

    def phi_conjugate(self, s):
        xp = namespace(s)
        tol = 4 * xp.finfo(s.dtype).eps
        return xp.where(s <= tol, s + 0.25 * s * s, xp.inf)
