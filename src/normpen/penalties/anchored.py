r"""The anchored L2 penalty :math:`\tfrac{\lambda}{2}\sum_i F_i (x_i - a_i)^2`: L2-SP and EWC."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from normpen._array import (
    as_float64_array,
    asarray_like,
    check_array,
    cumulative_l2_norm,
    l2_norm,
    max_or_zero,
    namespace,
    scaled_threshold,
)
from normpen.penalties.base import BlockForm, Penalty

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
      (see :func:`_project_ellipsoid`).
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

    def block_form(self, shape=None):
        """The :class:`BlockForm`: ridge :math:`\\lambda` towards the anchor, with the Fisher weights."""
        return BlockForm(ridge=self.lam, anchor=self.anchor, fisher=self.fisher)

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
        return self._toward_anchor(x, scaled_threshold(step * self.lam, self._fisher_like(x)))

    def _project(self, x, radius):
        xp = namespace(x)
        anchor = self._anchor_like(x)
        offset = x - anchor
        projected = _project_ellipsoid(offset, self._fisher_like(x), radius)
        return xp.where(projected == offset, x, anchor + projected)

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
        return _project_ellipsoid(xp.where(free, x, 0), inverse, radius)


def _snapshot(value, name):
    """A validated copy of ``anchor`` or ``fisher``: its kind, dtype and device, detached from autograd."""
    if not array_api_compat.is_array_api_obj(value):
        value = as_float64_array(value, name)
    check_array(value, name)
    if array_api_compat.is_torch_array(value):
        return value.detach().clone()
    return np.array(value, copy=True)


def _project_ellipsoid(v, w, radius):
    r"""The Euclidean projection of ``v`` onto :math:`\{z : \sum_i w_i z_i^2 \le r^2\}`, ``w`` finite, >= 0.

    The KKT conditions give :math:`v / (1 + \mu w)` with :math:`\mu \ge 0` the root of
    :math:`\|y / (1 + \mu w)\| = r`, :math:`y_i = \sqrt{w_i} v_i`, and ``v`` itself inside.
    With :math:`s = \max_i |y_i|`, :math:`\hat y = y / s`, :math:`\hat r = r / s` and
    :math:`\nu = \mu\hat r`, the equation reads :math:`\|\hat y / (\hat r + \nu w)\| = 1` and the
    projection :math:`(v / s) / (\hat r + \nu w) \cdot r`. For a point outside,
    :math:`\hat r < \|\hat y\| \le \sqrt n` and :math:`\nu` is of the order of
    :math:`\|\hat y\| / w`, so neither overflows, however far below :math:`\|y\|` the radius
    is (:math:`\mu \approx \|y\| / r` itself would pass 1e308); the coordinates with
    :math:`w_i = 0` are never changed. As in trust-region subproblems,
    :math:`g(\nu) = 1/\|u(\nu)\| - 1` with :math:`u = \hat y / (\hat r + \nu w)` is concave and
    increasing, so Newton's method started left of the root climbs to it monotonically; its step is

    .. math:: \nu \leftarrow \nu + \frac{(\|u\| - 1)\,\|u\|^2}{\sum_i u_i^2 w_i / (\hat r + \nu w_i)},

    with the sums taken over :math:`u / \max_i |u_i|`. The start is the best of the lower
    bounds :math:`\nu \ge (\|\hat y_S\| - \hat r)/\max_{i \in S} w_i` over the sets :math:`S` of
    the :math:`k` smallest weights (a sort and a cumulative sum); from there
    :data:`_NEWTON_STEPS` fixed steps reach machine precision without a host
    synchronisation, and every iterate is clipped at the start as a safeguard against rounding.
    """
    xp = namespace(v)
    if math.prod(v.shape) == 0:
        return v
    weighted = w > 0
    y = xp.sqrt(w) * xp.where(weighted, v, 0)
    peak = max_or_zero(xp.abs(y))
    # a scale below 2^-40 r means a point inside (for fewer than 2^80 entries): raising it to that
    # keeps r / scale finite without moving the point out
    scale = xp.clip(xp.where(peak > 0, peak, 1), radius * 2.0**-40, None)
    radius_hat = radius / scale
    y_hat = y / scale
    flat_w = xp.reshape(w, (-1,))
    order = xp.argsort(flat_w)
    sorted_w = xp.take(flat_w, order)
    prefix = cumulative_l2_norm(xp.take(xp.reshape(y_hat, (-1,)), order))
    bounds = xp.where(sorted_w > 0, (prefix - radius_hat) / xp.where(sorted_w > 0, sorted_w, 1), 0)
    start = xp.clip(max_or_zero(bounds), 0, None)
    nu = start
    for _ in range(_NEWTON_STEPS):
        shrink = xp.where(weighted, radius_hat + nu * w, 1)  # 1 on free coordinates, where y_hat is 0
        u = y_hat / shrink
        top = max_or_zero(xp.abs(u))
        squares = (u / xp.where(top > 0, top, 1)) ** 2
        total = xp.sum(squares)
        norm = top * xp.sqrt(total)
        slope = xp.sum(squares * (w / shrink)) / xp.where(total > 0, total, 1)
        nu = xp.maximum(nu + (norm - 1) / xp.where(slope > 0, slope, 1), start)
    projected = xp.where(weighted, v, 0) / scale / xp.where(weighted, radius_hat + nu * w, 1) * radius
    return xp.where(weighted & (start > 0), projected, v)
