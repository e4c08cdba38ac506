r"""The (weighted) L1 penalty :math:`\lambda \sum_i \omega_i |x_i|`: the lasso, and the adaptive lasso."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from normpen._array import max_or_zero, namespace, soft_threshold
from normpen.penalties.base import Penalty

__all__ = ["L1", "project_l1_ball"]


@dataclass(frozen=True, eq=False)
class L1(Penalty):
    r"""Weighted L1 penalty :math:`P(x) = \lambda \sum_i \omega_i |x_i|`.

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0` (scikit-learn's ``Lasso(alpha=lam)``).
    weights : array-like, optional
        Nonnegative weights :math:`\omega`, one per entry of ``x`` (same shape);
        ``None`` means all ones. A zero weight leaves that coordinate
        unpenalized (the adaptive lasso uses :math:`\omega_i = 1/|\hat w_i|^\gamma`).

    Notes
    -----
    - prox: soft thresholding, :math:`\operatorname{sign}(x_i)\max(|x_i| - s\lambda\omega_i, 0)`.
    - dual norm: :math:`\max_i |x_i| / \omega_i` (infinite if a coordinate with
      :math:`\omega_i = 0` is nonzero); its ball is the box :math:`|z_i| \le r\omega_i`.
    - projection onto :math:`\{\sum_i \omega_i|z_i| \le r\}`: the sort-based
      :math:`O(n \log n)` method. The solution is
      :math:`z_i = \operatorname{sign}(x_i)\max(|x_i| - \tau\omega_i, 0)` with
      :math:`\tau \ge 0` the root of the piecewise-linear
      :math:`\sum_i \omega_i \max(|x_i| - \tau\omega_i, 0) = r`, found
      exactly from the sorted breakpoints :math:`|x_i|/\omega_i`.
    """

    sign_invariant: ClassVar[bool] = True

    weights: Any = None

    def __post_init__(self):
        super().__post_init__()
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weights must be finite and >= 0; use 0 to leave a coordinate free")
            object.__setattr__(self, "weights", w)

    def _check_shape(self, x, name):
        if self.weights is not None and tuple(x.shape) != self.weights.shape:
            raise ValueError(
                f"weights have shape {self.weights.shape} but {name} has shape "
                f"{tuple(x.shape)}; give one weight per entry of {name}"
            )

    def _weights_like(self, x):
        """The weights as an array of ``x``'s kind, dtype and device (ones when unweighted)."""
        xp = namespace(x)
        if self.weights is None:
            return xp.ones_like(x)
        return xp.asarray(self.weights, dtype=x.dtype, device=array_api_compat.device(x))

    def _norm(self, x):
        xp = namespace(x)
        return xp.sum(self._weights_like(x) * xp.abs(x))

    def _value(self, x):
        return self.lam * self._norm(x)

    def _grad(self, x):
        xp = namespace(x)
        return self.lam * self._weights_like(x) * xp.sign(x)

    def _prox(self, x, step):
        return soft_threshold(x, step * self.lam * self._weights_like(x))

    def _dual_norm(self, x):
        xp = namespace(x)
        w = self._weights_like(x)
        unbounded = xp.where(x != 0, xp.full_like(x, math.inf), xp.zeros_like(x))
        ratio = xp.where(w > 0, xp.abs(x) / xp.where(w > 0, w, 1), unbounded)
        return max_or_zero(ratio)

    def _project_dual(self, x, radius):
        xp = namespace(x)
        bound = radius * self._weights_like(x)
        return xp.clip(x, -bound, bound)

    def _project(self, x, radius):
        if math.prod(x.shape) == 0:
            return x
        xp = namespace(x)
        w = self._weights_like(x)
        magnitudes = project_l1_ball(xp.reshape(xp.abs(x), (-1,)), xp.reshape(w, (-1,)), radius)
        return xp.sign(x) * xp.reshape(magnitudes, x.shape)


def project_l1_ball(a, w, radius):
    r"""Projection of a nonnegative vector onto :math:`\{b : \sum_g w_g b_g \le r\}`.

    :math:`b_g = \max(a_g - \tau w_g, 0)` with the threshold :math:`\tau \ge 0` of
    :func:`_l1_threshold` (0 when ``a`` is already inside, and then ``a``
    comes back unchanged). For a point outside, the answer lies on the sphere
    :math:`\sum_g w_g b_g = r`, and the entries with :math:`w_g > 0` are rescaled onto it: the
    differences :math:`a_g - \tau w_g` carry an absolute rounding error of order
    :math:`\varepsilon \max_g a_g`, which for a point far outside would otherwise leave the
    result off the ball by that much. Entries with :math:`w_g = 0` are never changed.
    """
    xp = namespace(a)
    tau = _l1_threshold(a, w, radius)
    b = soft_threshold(a, tau * w)
    total = xp.sum(w * b)
    onto_sphere = (b / xp.where(total > 0, total, 1)) * radius  # b / total <= 1 / w: no overflow
    return xp.where((tau > 0) & (w > 0), onto_sphere, b)


def _l1_threshold(a, w, radius):
    r"""The :math:`\tau \ge 0` with :math:`\sum_i w_i \max(a_i - \tau w_i, 0) = r`, for :math:`a \ge 0`.

    Breakpoints :math:`t_i = a_i / w_i` sorted in decreasing order; with the
    first :math:`k` coordinates active,
    :math:`\tau_k = (\sum_{i\le k} w_i a_i - r) / \sum_{i \le k} w_i^2`, and
    the answer is :math:`\tau_k` for the largest :math:`k` with
    :math:`t_k > \tau_k`, clipped at 0 (a point inside the ball gives
    :math:`\tau = 0`, so no branch on values is needed). Coordinates with
    :math:`w_i = 0` never bind.
    """
    xp = namespace(a)
    active = w > 0
    t = xp.where(active, a / xp.where(active, w, 1), -1)
    order = xp.argsort(t, descending=True)
    t, a, w = xp.take(t, order), xp.take(a, order), xp.take(w, order)
    sq = xp.cumulative_sum(w * w)
    tau = (xp.cumulative_sum(w * a) - radius) / xp.where(sq > 0, sq, 1)
    valid = (t > tau) & (t >= 0)
    k = xp.clip(xp.sum(xp.astype(valid, xp.int64)) - 1, 0, None)
    return xp.clip(tau[k], 0, None)
