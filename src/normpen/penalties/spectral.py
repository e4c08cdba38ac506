r"""The spectral norm penalty :math:`\lambda \sigma_{\max}(X)`, the Lipschitz constant of a linear layer."""

from __future__ import annotations

from dataclasses import dataclass

from normpen._array import max_or_zero, namespace
from normpen.penalties.base import Penalty
from normpen.penalties.nuclear import (
    _clip_singular_values,
    _compose,
    _project_nuclear_ball,
    _rank_tolerance,
    _singular_values,
    _svd,
)

__all__ = ["Spectral"]


@dataclass(frozen=True, eq=False)
class Spectral(Penalty):
    r"""Spectral norm penalty :math:`P(X) = \lambda \|X\|_2 = \lambda \sigma_{\max}(X)`.

    The operator norm of the matrix, the Lipschitz constant of the linear map
    it defines; a product of them over layers bounds a network's Lipschitz
    constant. ``X`` must be a matrix: for a conv kernel reshaped with
    ``w.reshape(w.shape[0], -1)`` this is the norm of the reshaped kernel,
    not of the convolution operator (see :mod:`normpen.analysis.lipschitz`).

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`.

    Notes
    -----
    With the thin SVD :math:`X = U \operatorname{diag}(\sigma) V^\top`:

    - grad: :math:`\lambda u_1 v_1^\top`, the gradient where :math:`\sigma_1`
      is simple. Where :math:`\sigma_1` has multiplicity :math:`k` (equal up
      to :math:`\max(m, n)\,\varepsilon\,\sigma_1`) the subdifferential is
      :math:`\lambda\{U_k S V_k^\top : S \succeq 0,\ \operatorname{tr} S = 1\}`
      and the returned :math:`\lambda U_k V_k^\top / k` is its minimum-norm
      element; 0 at :math:`X = 0`.
    - prox, by Moreau: :math:`X - \Pi_{s\lambda B_*}(X)` with :math:`B_*` the
      unit nuclear ball, i.e. :math:`U \operatorname{diag}(\min(\sigma, \tau)) V^\top`
      with :math:`\tau` the L1-ball threshold of :math:`\sigma` at radius
      :math:`s\lambda`; it is 0 when :math:`\|X\|_* \le s\lambda`.
    - project onto :math:`\{\|Z\|_2 \le r\}`: clip the singular values at :math:`r`.
    - dual norm: the nuclear norm :math:`\sum_i \sigma_i`; its ball is the
      projection of :math:`\sigma` onto the L1 ball.
    """

    matrix_only = True

    def _norm(self, x):
        return max_or_zero(_singular_values(x))

    def _value(self, x):
        return self.lam * self._norm(x)

    def _grad(self, x):
        xp = namespace(x)
        u, s, vh = _svd(x)
        top = (s > 0) & (s >= max_or_zero(s) - _rank_tolerance(x, s))
        count = xp.sum(xp.astype(top, x.dtype))
        return self.lam * _compose(u, xp.astype(top, x.dtype) / xp.clip(count, 1, None), vh)

    def _prox(self, x, step):
        return x - _project_nuclear_ball(x, step * self.lam)

    def _project(self, x, radius):
        return _clip_singular_values(x, radius)

    def _dual_norm(self, x):
        xp = namespace(x)
        return xp.sum(_singular_values(x))

    def _project_dual(self, x, radius):
        return _project_nuclear_ball(x, radius)
