r"""The squared L2 penalty :math:`\tfrac{\lambda}{2}\|x\|_2^2`: ridge regression and weight decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from normpen._array import l2_norm, project_l2_ball
from normpen.penalties.base import BlockForm, Penalty

__all__ = ["L2"]


@dataclass(frozen=True, eq=False)
class L2(Penalty):
    r"""Squared L2 penalty :math:`P(x) = \tfrac{\lambda}{2}\|x\|_2^2` (ridge, Tikhonov, weight decay).

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`. With the averaged quadratic datafit
        :math:`\tfrac{1}{2n}\|y - Xw\|^2`, scikit-learn's ``Ridge(alpha=a)`` is
        ``L2(lam=a / n)``.

    Notes
    -----
    - gradient: :math:`\lambda x`; one gradient step of size :math:`\eta` is the
      weight decay :math:`x \leftarrow (1 - \eta\lambda)x`.
    - prox: :math:`x / (1 + s\lambda)`, a uniform shrinkage that never produces zeros.
    - ``norm`` is :math:`\|x\|_2` itself, not the penalty's
      :math:`\tfrac12\|x\|_2^2`: ``project(x, r)`` is the projection onto the
      Euclidean ball :math:`x\min(1, r/\|x\|_2)` (the constrained, Ivanov form
      of ridge), and ``dual_norm`` is :math:`\|x\|_2` again (the ball is self-dual).
    - ``is_norm`` is False because the value is :math:`\tfrac{\lambda}{2}` times
      the *squared* norm; the penalty is smooth, so ``lambda_max`` is infinite
      unless the gradient at zero vanishes: ridge never zeroes a coefficient.
    - The value is computed as :math:`(\sqrt{\lambda/2}\,\|x\|_2)^2` with the
      scaled norm, so it is finite whenever the true value is.
    """

    sign_invariant: ClassVar[bool] = True

    is_norm: ClassVar[bool] = False
    norm_squared: ClassVar[bool] = True
    smooth: ClassVar[bool] = True

    def block_form(self, shape=None):
        """The ridge :math:`\\mu = \\lambda` alone (see :class:`~normpen.penalties.base.BlockForm`)."""
        return BlockForm(ridge=self.lam)

    def _value(self, x):
        return (math.sqrt(self.lam / 2) * l2_norm(x)) ** 2

    def _grad(self, x):
        return self.lam * x

    def _prox(self, x, step):
        return x / (1 + step * self.lam)

    def _norm(self, x):
        return l2_norm(x)

    def _project(self, x, radius):
        return project_l2_ball(x, radius)

    def _dual_norm(self, x):
        return l2_norm(x)

    def _project_dual(self, x, radius):
        return project_l2_ball(x, radius)
