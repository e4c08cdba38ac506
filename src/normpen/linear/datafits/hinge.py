r"""Hinge datafit :math:`F(w, b) = \sum_i a_i \max(0, 1 - y_i(x_i^\top w + b))`, :math:`y \in \{-1, 1\}`."""

from __future__ import annotations

from normpen._array import namespace
from normpen.linear.datafits.base import MarginDatafit

__all__ = ["Hinge"]


class Hinge(MarginDatafit):
    r"""Hinge loss of the margin, :math:`\varphi(t) = \max(0, 1 - t)` (the soft-margin SVM).

    Not differentiable (``curvature = None``): coordinate descent and FISTA
    refuse it; the dual coordinate descent of ``normpen.linear.solvers.svm``
    solves it. With unit weights and the L2 penalty :math:`\tfrac\lambda2\|w\|^2`
    the objective is scikit-learn's ``LinearSVC(loss="hinge", C=1/(n*lam))``
    divided by :math:`n C`.

    Notes
    -----
    - subgradient :math:`\varphi'(t) = -1` for :math:`t < 1`, else 0;
      ``second_derivative`` is 0 almost everywhere;
    - conjugate :math:`\varphi^*(s) = s` on :math:`s \in [-1, 0]`, ``inf`` elsewhere
      (so the dual of the SVM is the box-constrained QP :math:`0 \le -u_i y_i \le 1`).
    """

    curvature = None

    def phi(self, t):
        xp = namespace(t)
        return xp.clip(1 - t, 0, None)

    def phi_derivative(self, t):
        xp = namespace(t)
        return xp.where(t < 1, xp.full_like(t, -1.0), 0.0)

    def phi_second_derivative(self, t):
        return t * 0

    def phi_conjugate(self, s):
        xp = namespace(s)
        tol = 4 * xp.finfo(s.dtype).eps
        inside = (s >= -1 - tol) & (s <= tol)
        return xp.where(inside, xp.clip(s, -1, 0), xp.inf)
