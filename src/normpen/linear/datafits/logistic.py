r"""Binary logistic datafit :math:`F(w, b) = \sum_i a_i \log(1 + e^{-y_i(x_i^\top w + b)})`, labels -1/+1."""

from __future__ import annotations

from normpen._array import namespace
from normpen.linear.datafits.base import MarginDatafit, xlogx

__all__ = ["Logistic"]


class Logistic(MarginDatafit):
    r"""Logistic loss of the margin, :math:`\varphi(t) = \log(1 + e^{-t})`.

    With unit weights :math:`F = \frac1n \sum_i \log(1 + e^{-y_i z_i})`. Our
    ``LogisticRegression(penalty=L1(lam))`` is scikit-learn's
    ``LogisticRegression(l1_ratio=1, C=1/(n*lam))`` (scikit-learn sums the
    losses instead of averaging them).

    Notes
    -----
    - :math:`\varphi'(t) = -\sigma(-t)`, :math:`\varphi''(t) = \sigma(t)\sigma(-t) \le 1/4`
      (``curvature = 1/4``), with :math:`\sigma(t) = 1/(1+e^{-t})` computed as
      :math:`e^{-\log(1+e^{-t})}` so that nothing overflows;
    - conjugate :math:`\varphi^*(s) = (-s)\log(-s) + (1+s)\log(1+s)` on
      :math:`s \in [-1, 0]` (the negative binary entropy), ``inf`` elsewhere.
    """

    curvature = 0.25

    def phi(self, t):
        xp = namespace(t)
        return xp.logaddexp(xp.zeros_like(t), -t)

    def phi_derivative(self, t):
        xp = namespace(t)
        return -xp.exp(-xp.logaddexp(xp.zeros_like(t), t))

    def phi_second_derivative(self, t):
        xp = namespace(t)
        zero = xp.zeros_like(t)
        return xp.exp(-xp.logaddexp(zero, t) - xp.logaddexp(zero, -t))

    def phi_conjugate(self, s):
        xp = namespace(s)
        tol = 4 * xp.finfo(s.dtype).eps
        inside = (s >= -1 - tol) & (s <= tol)
        q = xp.clip(-s, 0, 1)
        return xp.where(inside, xlogx(q) + xlogx(1 - q), xp.full_like(s, xp.inf))
