r"""The anchored L2 penalty :math:`\tfrac{\lambda}{2}\sum_i F_i (x_i - a_i)^2`: L2-SP and EWC."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from normpen._array import (
    asarray_like,
    check_array,
    cumulative_l2_norm,
    l2_norm,
    max_or_zero,
    namespace,
)
from normpen.penalties.base import Penalty

__all__ = ["Anchored"]

#: Newton steps of the ellipsoid projection. From the lower bound it starts at,
#: the iteration reached machine precision within 10 steps on every one of
#: 1500 adversarial Fisher diagonals (spans of up to 40 decades, with zeros,
#: radii down to 1e-15 of the distance); 16 leaves a margin.
_NEWTON_STEPS = 16


@dataclass(frozen=True, eq=False)
class Anchored(Penalty):
    r"""Anchored L2 :math:`P(x) = \tfrac{\lambda}{2}\sum_i F_i (x_i - a_i)^2`.

    With ``fisher=None`` (:math:`F = 1`) this is L2-SP, weight decay towards the
    pre-trained weights :math:`a` instead of towards 0 (Li et al. 2018); with the
    diagonal of the Fisher information of an earlier task it is elastic weight
    consolidation (EWC, Kirkpatrick et al. 2017).

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`.
    anchor : numpy array or torch tensor
        The point :math:`a` the penalty pulls towards, of the shape of the
        parameter it is applied to. Array-likes are converted with
        ``numpy.asarray``.
    fisher : numpy array or torch tensor, optional
        Nonnegative, finite weights :math:`F` of the anchor's shape (a Fisher
        diagonal); ``None`` means all ones. :math:`F_i = 0` leaves
        coordinate :math:`i` free.

    Notes
    -----
    ``anchor`` and ``fisher`` are stored as snapshots of what was given (a
    copy, detached from autograd for a tensor, on its device and in its dtype),
    so training the parameter they came from does not move them. Each call
    brings them to the input's kind, dtype and device, so keep them on the
    parameter's device to avoid a transfer per call.

    - gradient: :math:`\lambda F (x - a)`.
    - prox: :math:`a + (x - a) / (1 + s\lambda F)`.
    - ``norm(x)`` is :math:`\sqrt{\sum_i F_i (x_i - a_i)^2}`, the
      :math:`F`-weighted distance **to the anchor** (so the value is
      :math:`\tfrac{\lambda}{2}` norm²); it is centred at :math:`a`, not at 0.
      ``project(x, r)`` is the exact Euclidean projection onto the ellipsoid
      :math:`\{z : \sum_i F_i (z_i - a_i)^2 \le r^2\}`:
      :math:`z = a + (x - a)/(1 + \mu F)` with :math:`\mu \ge 0` the root of
      :math:`\sum_i F_i (x_i - a_i)^2 / (1 + \mu F_i)^2 = r^2`
      (see :func:`_ellipsoid_multiplier`).
    - ``dual_norm(x)`` is the dual of the weighted norm
      :math:`\|v\|_F = \sqrt{\sum_i F_i v_i^2}`, namely
      :math:`\sqrt{\sum_i x_i^2 / F_i}` (infinite if :math:`x_i \ne 0` where
      :math:`F_i = 0`); ``project_dual`` projects onto its ellipsoid, setting the
      coordinates with :math:`F_i = 0` to 0.
    - ``is_norm`` is False and the penalty is smooth: ``lambda_max`` is infinite
      unless the gradient at zero vanishes.
    """

    anchor: Any
    fisher: Any = None

    is_norm: ClassVar[bool] = False
    smooth: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        anchor = _snapshot(self.anchor, "anchor")
        fisher = None if self.fisher is None else _snapshot(self.fisher, "fisher")
        if fisher is not None:
            if tuple(fisher.shape) != tuple(anchor.shape):
                raise ValueError(
                    f"fisher has shape {tuple(fisher.shape)} but anchor has shape "
                    f"{tuple(anchor.shape)}; give one Fisher value per entry of anchor"
                )
            if bool(namespace(fisher).any(fisher < 0)):
                raise ValueError("fisher must be >= 0 everywhere; clip negative estimates to 0")
        object.__setattr__(self, "anchor", anchor)
        object.__setattr__(self, "fisher", fisher)

    def _check_shape(self, x, name):
        if tuple(x.shape) != tuple(self.anchor.shape):
            raise ValueError(
                f"anchor has shape {tuple(self.anchor.shape)} but {name} has shape "
                f"{tuple(x.shape)}; the anchor must be a snapshot of this very parameter"
            )

    def _anchor_like(self, x):
        """The anchor as an array of ``x``'s kind, dtype and device."""
        return asarray_like(self.anchor, x)

    def _fisher_like(self, x):
        """The Fisher weights as an array of ``x``'s kind, dtype and device (ones without Fisher)."""
        if self.fisher is None:
            return namespace(x).ones_like(x)
        return asarray_like(self.fisher, x)

    def _norm(self, x):
        xp = namespace(x)
        return l2_norm(xp.sqrt(self._fisher_like(x)) * (x - self._anchor_like(x)))

    def _value(self, x):
        return (math.sqrt(self.lam / 2) * self._norm(x)) ** 2

    def _grad(self, x):
        return self.lam * self._fisher_like(x) * (x - self._anchor_like(x))

    def _prox(self, x, step):
        return self._toward_anchor(x, step * self.lam * self._fisher_like(x))

    def _project(self, x, radius):
        fisher = self._fisher_like(x)
        mu = _ellipsoid_multiplier(x - self._anchor_like(x), fisher, radius)
        return self._toward_anchor(x, mu * fisher)

    def _toward_anchor(self, x, t):
        r""":math:`a + (x - a)/(1 + t)` elementwise, exactly ``x`` where :math:`t = 0`.

        Written from the anchor's side so that a far point pulled close to the
        anchor keeps its digits (:math:`x - (x - a)\,t/(1+t)` would cancel).
        """
        xp = namespace(x)
        anchor = self._anchor_like(x)
        return xp.where(t > 0, anchor + (x - anchor) / (1 + t), x)

    def _dual_norm(self, x):
        xp = namespace(x)
        fisher = self._fisher_like(x)
        free = fisher > 0
        scaled = xp.where(free, x / xp.sqrt(xp.where(free, fisher, 1)), 0)
        unbounded = xp.any((~free) & (x != 0))
        norm = l2_norm(scaled)
        return xp.where(unbounded, xp.inf, norm)

    def _project_dual(self, x, radius):
        xp = namespace(x)
        fisher = self._fisher_like(x)
        free = fisher > 0
        tiny = xp.finfo(x.dtype).smallest_normal
        inverse = xp.where(free, 1 / xp.clip(fisher, tiny, None), 0)
        bounded = xp.where(free, x, 0)
        return bounded / (1 + _ellipsoid_multiplier(bounded, inverse, radius) * inverse)


def _snapshot(value, name):
    """A validated copy of ``anchor`` or ``fisher``: its kind, dtype and device, detached from autograd."""
    if not array_api_compat.is_array_api_obj(value):
        value = np.asarray(value, dtype=np.float64)
    check_array(value, name)
    if array_api_compat.is_torch_array(value):
        return value.detach().clone()
    return np.array(value, copy=True)


def _ellipsoid_multiplier(v, w, radius):
    r"""The multiplier of the Euclidean projection of ``v`` onto :math:`\{z : \sum_i w_i z_i^2 \le r^2\}`.

    ``w`` is finite and nonnegative. The KKT conditions give the projection
    :math:`v / (1 + \mu w)` with :math:`\mu \ge 0` the root of
    :math:`\|y(\mu)\| = r`, :math:`y_i(\mu) = \sqrt{w_i} v_i / (1 + \mu w_i)`,
    and :math:`\mu = 0` inside. As in trust-region subproblems,
    :math:`g(\mu) = 1/\|y(\mu)\| - 1/r` is concave and increasing on
    :math:`\mu \ge 0`, so Newton's method started left of the root climbs to it
    monotonically and never overshoots; its step is

    .. math:: \mu \leftarrow \mu + \frac{\|y\|/r - 1}{\sum_i y_i^2 \frac{w_i}{1 + \mu w_i} / \|y\|^2},

    with both sums taken over :math:`y / \max_i |y_i|` so that they neither
    overflow nor underflow.

    The start is the best of the lower bounds
    :math:`\mu \ge (\|y_S(0)\|/r - 1)/\max_{i \in S} w_i` over the sets
    :math:`S` of the :math:`k` smallest weights (a sort and a cumulative sum);
    from there :data:`_NEWTON_STEPS` fixed steps reach machine precision
    without a host synchronisation, and every iterate is clipped at the start
    as a safeguard against rounding. The multiplier does not change when
    :math:`v` and :math:`r` are divided by the same number, so ``v`` is first
    brought to entries of magnitude at most 1: entries of ``v`` up to 1e300 do
    not overflow, and only the ratio :math:`\sqrt{w_i}|v_i|/r` must stay below
    about 1e300. Returns a 0-d array, exactly 0 inside.
    """
    xp = namespace(v)
    if math.prod(v.shape) == 0:
        return xp.zeros((), dtype=v.dtype, device=array_api_compat.device(v))
    scale = xp.clip(max_or_zero(xp.abs(v)), 1, None)
    radius = radius / scale
    y0 = xp.sqrt(w) * (v / scale)
    flat_w = xp.reshape(w, (-1,))
    order = xp.argsort(flat_w)
    sorted_w = xp.take(flat_w, order)
    prefix = cumulative_l2_norm(xp.take(xp.reshape(y0, (-1,)), order))
    weighted = sorted_w > 0
    bounds = xp.where(weighted, (prefix / radius - 1) / xp.where(weighted, sorted_w, 1), 0)
    start = xp.clip(max_or_zero(bounds), 0, None)
    mu = start
    for _ in range(_NEWTON_STEPS):
        shrink = 1 + mu * w
        y = y0 / shrink
        peak = max_or_zero(xp.abs(y))
        squares = (y / xp.where(peak > 0, peak, 1)) ** 2
        total = xp.sum(squares)
        norm = peak * xp.sqrt(total)
        slope = xp.sum(squares * (w / shrink)) / xp.where(total > 0, total, 1)
        step = (norm / radius - 1) / xp.where(slope > 0, slope, 1)
        mu = xp.maximum(mu + step, start)
    return mu
