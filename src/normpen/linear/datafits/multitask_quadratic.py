r"""Multitask quadratic datafit :math:`F(W, b) = \tfrac12 \sum_i a_i \|y_i - W^\top x_i - b\|^2`."""

from __future__ import annotations

from normpen.linear.datafits.base import float_target
from normpen.linear.datafits.quadratic import Quadratic

__all__ = ["MultitaskQuadratic"]


class MultitaskQuadratic(Quadratic):
    r"""Least squares on :math:`m` targets at once: ``y`` has shape ``(n, m)``, ``W`` shape ``(p, m)``.

    :math:`F = \frac{1}{2n}\|Y - XW - 1b^\top\|_F^2` with unit weights, the
    scaling of scikit-learn's ``MultiTaskLasso``. Paired with the group
    penalty on the rows of ``W`` (``GroupLasso(lam, groups="rows")``) it selects
    the same features for every task. Kernels are those of :class:`Quadratic`
    summed over the outputs.
    """

    multi_output = True

    def encode_target(self, y):
        return float_target(y, 2, type(self).__name__)
