r"""The nuclear (trace) norm penalty :math:`\lambda \sum_i \sigma_i(X)`, and the SVD pieces it shares with
:mod:`normpen.penalties.spectral`.

The nuclear and spectral norms are the L1 and L-infinity norms of the singular
values and are dual to each other, so four operators serve both penalties:
singular value thresholding (:func:`_svt`), clipping the singular values
(:func:`_clip_singular_values`), the projection onto the nuclear ball
(:func:`_project_nuclear_ball`, the L1-ball projection of the singular values
shared with :mod:`normpen.penalties.group_lasso`) and the singular values
themselves (:func:`_singular_values`). Every SVD is taken of ``X / max|X|``
and the scale put back on the singular values, so entries from 1e-300 to
1e300 neither overflow nor underflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from normpen._array import max_or_zero, namespace, soft_threshold
from normpen.penalties.base import Penalty
from normpen.penalties.l1 import project_l1_ball

__all__ = ["Nuclear"]


def _unit_scale(x):
    """``max|x|`` as a 0-d array, or 1 for the zero matrix: the scale the SVDs divide out."""
    xp = namespace(x)
    scale = max_or_zero(xp.abs(x))
    return xp.where(scale > 0, scale, 1)


def _svd(x):
    r"""Thin SVD :math:`X = U \operatorname{diag}(\sigma) V^\top`, singular values in decreasing order."""
    xp = namespace(x)
    scale = _unit_scale(x)
    u, s, vh = xp.linalg.svd(x / scale, full_matrices=False)
    return u, s * scale, vh


def _singular_values(x):
    """The singular values of ``x`` in decreasing order (no singular vectors)."""
    xp = namespace(x)
    scale = _unit_scale(x)
    return xp.linalg.svdvals(x / scale) * scale


def _compose(u, s, vh):
    r""":math:`U \operatorname{diag}(s) V^\top`."""
    return namespace(u).matmul(u * s, vh)


def _rank_tolerance(x, s):
    r"""Singular values at or below :math:`\max(m, n)\,\varepsilon\,\sigma_{\max}` are rounding noise.

    The threshold of ``numpy.linalg.matrix_rank``; ``s`` holds the singular values of ``x``.
    """
    xp = namespace(x)
    return max(x.shape) * xp.finfo(x.dtype).eps * max_or_zero(s)


def _svt(x, threshold):
    r"""Singular value thresholding :math:`U \operatorname{diag}(\max(\sigma - t, 0)) V^\top`.

    The prox of :math:`t\|\cdot\|_*`; singular values at or below :math:`t`
    become exact zeros, so the result has exactly that lower rank.
    """
    u, s, vh = _svd(x)
    return _compose(u, soft_threshold(s, threshold), vh)


def _clip_singular_values(x, radius):
    r"""Euclidean projection onto the spectral ball: :math:`U \operatorname{diag}(\min(\sigma, r)) V^\top`.

    A matrix inside the ball (:math:`\sigma_{\max} \le r`) comes back
    unchanged bit for bit; outside, the result is rebuilt from the clipped
    singular values, so its error is of order :math:`\varepsilon r`, however
    far out ``x`` is.
    """
    xp = namespace(x)
    u, s, vh = _svd(x)
    return xp.where(max_or_zero(s) > radius, _compose(u, xp.clip(s, None, radius), vh), x)


def _project_nuclear_ball(x, radius):
    r"""Euclidean projection onto :math:`\{Z : \|Z\|_* \le r\}`.

    The singular values are projected onto the L1 ball (a simplex projection
    of nonnegative values): :math:`U \operatorname{diag}(\max(\sigma - \tau, 0)) V^\top`
    with :math:`\tau \ge 0` the root of :math:`\sum_i \max(\sigma_i - \tau, 0) = r`,
    found by the sort-based search of :mod:`normpen.penalties.l1`; a matrix
    inside the ball is returned unchanged.
    """
    if math.prod(x.shape) == 0:
        return x
    xp = namespace(x)
    u, s, vh = _svd(x)
    projected = project_l1_ball(s, xp.ones_like(s), radius)
    return xp.where(xp.sum(s) > radius, _compose(u, projected, vh), x)


@dataclass(frozen=True, eq=False)
class Nuclear(Penalty):
    r"""Nuclear (trace) norm penalty :math:`P(X) = \lambda \|X\|_* = \lambda \sum_i \sigma_i(X)`.

    The convex surrogate of rank: its prox returns matrices of exactly lower
    rank. ``X`` must be a matrix; reshape a conv kernel with
    ``w.reshape(w.shape[0], -1)``.

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`.

    Notes
    -----
    With the thin SVD :math:`X = U \operatorname{diag}(\sigma) V^\top`:

    - prox: singular value thresholding
      :math:`U \operatorname{diag}(\max(\sigma - s\lambda, 0)) V^\top`
      (exactly rank :math:`\#\{\sigma_i > s\lambda\}`).
    - grad: :math:`\lambda U_r V_r^\top` over the :math:`r` nonzero singular
      values (those above :math:`\max(m, n)\,\varepsilon\,\sigma_{\max}`).
      The subdifferential is
      :math:`\lambda\{U_r V_r^\top + W : U_r^\top W = 0,\ W V_r = 0,\ \|W\|_2 \le 1\}`,
      so this is the gradient for full rank and the minimum-norm
      subgradient otherwise (0 at :math:`X = 0`).
    - project onto :math:`\{\|Z\|_* \le r\}`: project :math:`\sigma` onto the
      L1 ball, keep :math:`U, V`.
    - dual norm: the spectral norm :math:`\sigma_{\max}`; its ball clips the
      singular values at :math:`r`.
    """

    matrix_only = True

    def _norm(self, x):
        xp = namespace(x)
        return xp.sum(_singular_values(x))

    def _value(self, x):
        return self.lam * self._norm(x)

    def _grad(self, x):
        xp = namespace(x)
        u, s, vh = _svd(x)
        nonzero = xp.astype(s > _rank_tolerance(x, s), x.dtype)
        return self.lam * _compose(u, nonzero, vh)

    def _prox(self, x, step):
        return _svt(x, step * self.lam)

    def _project(self, x, radius):
        return _project_nuclear_ball(x, radius)

    def _dual_norm(self, x):
        return max_or_zero(_singular_values(x))

    def _project_dual(self, x, radius):
        return _clip_singular_values(x, radius)
