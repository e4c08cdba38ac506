r"""The (weighted) L1 penalty :math:`\lambda \sum_i \omega_i |x_i|`: the lasso, and the adaptive lasso."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from normpen._array import as_float64_array, max_or_zero, namespace, scaled_threshold, soft_threshold
from normpen.penalties.base import BlockForm, Penalty

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
            w = as_float64_array(self.weights, "weights")
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

    def block_form(self, shape=None):
        """The :class:`BlockForm`: L1 part :math:`\\lambda` with the weights :math:`\\omega`."""
        return BlockForm(l1=self.lam, l1_weights=self.weights)

    def _norm(self, x):
        xp = namespace(x)
        return xp.sum(self._weights_like(x) * xp.abs(x))

    def _value(self, x):
        return self.lam * self._norm(x)

    def _grad(self, x):
        xp = namespace(x)
        return self.lam * self._weights_like(x) * xp.sign(x)

    def _prox(self, x, step):
        if self.weights is None:
            return soft_threshold(x, step * self.lam)
        return soft_threshold(x, scaled_threshold(step * self.lam, self._weights_like(x)))

    def _dual_norm(self, x):
        xp = namespace(x)
        w = self._weights_like(x)
        unbounded = xp.where(x != 0, xp.full_like(x, math.inf), xp.zeros_like(x))
        ratio = xp.where(w > 0, xp.abs(x) / xp.where(w > 0, w, 1), unbounded)
        return max_or_zero(ratio)

    def _project_dual(self, x, radius):
        xp = namespace(x)
        bound = scaled_threshold(radius, self._weights_like(x))
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

    :math:`b_g = w_g\max(\theta - d_g, 0)` for :math:`w_g > 0`, with the gaps
    :math:`d_g = t_1 - t_g` of the breakpoints :math:`t_g = a_g / w_g` below the largest one
    and the threshold's distance :math:`\theta` below it from :func:`_l1_threshold`: this is
    :math:`\max(a_g - \tau w_g, 0)` with :math:`\tau = t_1 - \theta`, but neither the
    threshold nor the differences are formed next to :math:`t_1`, so a radius far below the
    rounding step of :math:`\max_g a_g` still gives a point on the sphere (``[1, 0.5]`` at
    radius 1e-17 gives ``[1e-17, 0]``, not zeros). A point already inside (:math:`\tau \le 0`)
    comes back unchanged. For a point outside, the answer lies on the sphere
    :math:`\sum_g w_g b_g = r`, and the entries with :math:`w_g > 0` are rescaled onto it:
    :math:`\theta - d_g` carries a rounding error of order :math:`\varepsilon\theta`, which
    for a point far outside would otherwise leave the result off the ball by that much.
    Entries with :math:`w_g = 0` are never changed.
    """
    xp = namespace(a)
    weighted = w > 0
    breakpoints = xp.where(weighted, a / xp.where(weighted, w, 1), -1)
    top, theta = _l1_threshold(breakpoints, w, radius)
    b = w * xp.clip(theta - (top - breakpoints), 0, None)
    total = xp.sum(w * b)
    onto_sphere = (b / xp.where(total > 0, total, 1)) * radius  # b / total <= 1 / w: no overflow
    return xp.where((theta < top) & weighted, onto_sphere, a)


def _l1_threshold(t, w, radius):
    r"""The largest breakpoint :math:`t_1` and the threshold's distance :math:`\theta = t_1 - \tau` below it.

    ``t`` holds the breakpoints :math:`a_i / w_i` (-1 where :math:`w_i = 0`; such
    coordinates never bind). :math:`\tau \ge 0` is the root of
    :math:`\sum_i w_i \max(a_i - \tau w_i, 0) = r`. With the breakpoints sorted in
    decreasing order, their gaps :math:`d_i = t_1 - t_i \ge 0` and the first :math:`k`
    coordinates active, :math:`\sum_{i \le k} w_i^2 (\theta - d_i) = r` gives

    .. math:: \theta_k = \frac{r + \sum_{i \le k} w_i^2 d_i}{\sum_{i \le k} w_i^2},

    a sum of nonnegative terms (nothing cancels, however small :math:`r` is against
    :math:`t_1`); the answer is :math:`\theta_k` for the largest :math:`k` with
    :math:`d_k < \theta_k` (:math:`t_k > \tau_k`). A point inside the ball gives
    :math:`\theta \ge t_1` (:math:`\tau \le 0`), so no branch on values is needed.
    """
    xp = namespace(t)
    order = xp.argsort(t, descending=True)
    t, w = xp.take(t, order), xp.take(w, order)
    top = t[0]
    gaps = top - t
    sq = xp.cumulative_sum(w * w)
    theta = (xp.cumulative_sum(w * w * gaps) + radius) / xp.where(sq > 0, sq, 1)
    valid = (gaps < theta) & (t >= 0)
    k = xp.clip(xp.sum(xp.astype(valid, xp.int64)) - 1, 0, None)
    return top, theta[k]
