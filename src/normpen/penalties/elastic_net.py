r"""The elastic net :math:`\lambda(\rho\|x\|_1 + \tfrac{1-\rho}{2}\|x\|_2^2)` (glmnet, scikit-learn)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import array_api_compat

from normpen._array import (
    check_unit_interval,
    cumulative_l2_norm,
    l2_norm,
    max_or_zero,
    namespace,
    soft_threshold,
)
from normpen.penalties.base import Penalty

__all__ = ["ElasticNet"]


@dataclass(frozen=True, eq=False)
class ElasticNet(Penalty):
    r"""Elastic net :math:`P(x) = \lambda(\rho\|x\|_1 + \tfrac{1-\rho}{2}\|x\|_2^2) = \lambda\,\Omega(x)`.

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`: scikit-learn's
        ``ElasticNet(alpha=lam, l1_ratio=l1_ratio)`` and glmnet's ``lambda``.
    l1_ratio : float, default 0.5
        The mix :math:`\rho \in [0, 1]`; 1 is the lasso (:class:`~normpen.penalties.l1.L1`),
        0 is ridge (:class:`~normpen.penalties.l2.L2`).

    Notes
    -----
    - gradient: :math:`\lambda(\rho\operatorname{sign}(x) + (1-\rho)x)`, the
      minimum-norm subgradient (0 in the L1 part at :math:`x_i = 0`).
    - prox: soft thresholding then shrinkage,
      :math:`\operatorname{sign}(x)\max(|x| - s\lambda\rho, 0) / (1 + s\lambda(1-\rho))`.
    - ``norm(x)`` is :math:`\Omega(x)`, which is **not a norm** (it is not
      homogeneous); ``project(x, r)`` is the exact Euclidean projection onto the
      convex set :math:`\{z : \Omega(z) \le r\}`. Its KKT conditions make it
      :math:`\operatorname{prox}_{\mu\Omega}(x)` for the multiplier
      :math:`\mu \ge 0` with :math:`\Omega(\operatorname{prox}_{\mu\Omega}(x)) = r`,
      found exactly from the sorted magnitudes (see :func:`_multiplier`).
    - ``dual_norm(x)`` is :math:`\|x\|_\infty / \rho`, the dual norm of the L1 part
      :math:`\rho\|\cdot\|_1` (infinite for :math:`\rho = 0` unless
      :math:`x = 0`), and ``project_dual`` clips to the box :math:`|z_i| \le r\rho`.
      The quadratic part is flat at 0, so this is what decides whether 0 is optimal:
      ``lambda_max(grad0)`` :math:`= \|\nabla F(0)\|_\infty / \rho`, scikit-learn's
      ``alpha_max`` for ``ElasticNet``, rounded up to the float at which the
      prox threshold :math:`\lambda\rho` reaches the gradient exactly, so that a
      solver started at 0 stays at 0 with ``lam = lambda_max``.
    - ``l1_ratio=1`` agrees with ``L1(lam)`` in every method. ``l1_ratio=0`` has
      the value, gradient and prox of ``L2(lam)``; its ``norm`` is
      :math:`\tfrac12\|x\|^2` where L2's is :math:`\|x\|`, so its ``project(x, r)``
      is ``L2(lam).project(x, sqrt(2 r))``.
    """

    sign_invariant: ClassVar[bool] = True

    l1_ratio: float = 0.5

    is_norm: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "l1_ratio", check_unit_interval(self.l1_ratio, "l1_ratio"))

    def _norm(self, x):
        return _scaled_omega(x, self.l1_ratio, 1.0)

    def _value(self, x):
        return _scaled_omega(x, self.l1_ratio, self.lam)

    def _grad(self, x):
        xp = namespace(x)
        rho = self.l1_ratio
        return self.lam * (rho * xp.sign(x) + (1 - rho) * x)

    def _prox(self, x, step):
        rho = self.l1_ratio
        return _prox_elastic_net(x, step * (self.lam * rho), step * (self.lam * (1 - rho)))

    def _dual_norm(self, x):
        xp = namespace(x)
        largest = max_or_zero(xp.abs(x))
        if self.l1_ratio == 0:
            return xp.where(largest > 0, xp.inf, largest)
        return largest / self.l1_ratio

    def _project_dual(self, x, radius):
        xp = namespace(x)
        bound = radius * self.l1_ratio
        return xp.clip(x, -bound, bound)

    def _lambda_max(self, grad0):
        xp = namespace(grad0)
        rho, largest = self.l1_ratio, float(max_or_zero(xp.abs(grad0)))
        if rho == 0:
            return math.inf if largest > 0 else 0.0
        lam = largest / rho
        while lam * rho < largest:  # round up: at lam the prox threshold lam * rho must reach the gradient
            lam = math.nextafter(lam, math.inf)
        return lam

    def _project(self, x, radius):
        if math.prod(x.shape) == 0:
            return x
        xp = namespace(x)
        rho = self.l1_ratio
        mu = _multiplier(xp.reshape(xp.abs(x), (-1,)), rho, radius)
        return _prox_elastic_net(x, mu * rho, mu * (1 - rho))


def _scaled_omega(x, rho, t):
    r""":math:`t\,\Omega(x) = t\rho\|x\|_1 + (\sqrt{t(1-\rho)/2}\,\|x\|_2)^2`.

    The factor enters before squaring, so the result is finite whenever the
    true one is (even when :math:`\|x\|_2^2` alone is not a float).
    """
    xp = namespace(x)
    return t * rho * xp.sum(xp.abs(x)) + (math.sqrt(t * (1 - rho) / 2) * l2_norm(x)) ** 2


def _prox_elastic_net(x, l1, l2):
    r"""Prox of :math:`\alpha\|\cdot\|_1 + \tfrac{\beta}{2}\|\cdot\|_2^2`, :math:`S_\alpha(x) / (1 + \beta)`.

    ``l1`` (:math:`\alpha`) and ``l2`` (:math:`\beta`) are nonnegative scalars
    (floats or 0-d arrays); :math:`S_\alpha` is soft thresholding. The prox of
    :math:`t\Omega` has :math:`\alpha = t\rho`, :math:`\beta = t(1-\rho)`.
    """
    return soft_threshold(x, l1) / (1 + l2)


def _multiplier(a, rho, radius):
    r"""The :math:`\mu \ge 0` with :math:`\Omega(\operatorname{prox}_{\mu\Omega}(a)) = r`, 0 inside the set.

    ``a`` holds the magnitudes :math:`|x_i|` (1-D, nonnegative). Write
    :math:`c = 1 - \rho` and sort :math:`a` in decreasing order. If the first
    :math:`k` coordinates are the active ones (:math:`a_i > \mu\rho`),
    :math:`\Omega(\operatorname{prox}_{\mu\Omega}(a)) = r` is the quadratic

    .. math:: \tfrac{c}{2}\mu^2 + \mu = D_k / B_k,\qquad
              D_k = \rho S_k + \tfrac{c}{2} L_k^2 - r,\quad B_k = k\rho^2 + 2rc,

    with :math:`S_k = \sum_{i\le k} a_i` and :math:`L_k^2 = \sum_{i \le k} a_i^2`.
    Since :math:`B_k + 2cD_k = N_k^2 := \sum_{i\le k}(\rho + c a_i)^2`, its root is

    .. math:: \mu_k = \frac{2 D_k}{\sqrt{B_k}(\sqrt{B_k} + N_k)}
              = \frac{1}{\sqrt{B_k}}\Big(\frac{2\rho S_k + c L_k\, L_k - 2r}{\sqrt{B_k} + N_k}\Big),

    evaluated term by term so that nothing overflows for entries up to 1e300
    and nothing cancels when :math:`c` is small (:math:`\rho = 1` gives the
    lasso's :math:`(S_k - r)/k`); only :math:`\mu` itself must be a float,
    which fails when :math:`\|x\|_2 / \sqrt{r}` passes 1e308.

    Each summand of :math:`\Omega(\operatorname{prox}_{\mu\Omega}(a))`, kept
    even when :math:`a_i < \mu\rho`, decreases in :math:`\mu`; hence
    :math:`a_k > \rho\mu_k` holds exactly for the :math:`k` up to the true
    active count, and the answer is :math:`\mu_k` at the largest such
    :math:`k`, clipped at 0 (a point inside the set gives
    :math:`\mu \le 0`, so no branch on values is needed).
    """
    xp = namespace(a)
    c = 1 - rho
    a = xp.sort(a, descending=True)
    count = xp.arange(1, a.shape[0] + 1, dtype=a.dtype, device=array_api_compat.device(a))
    root_b = xp.sqrt(count * rho**2 + 2 * radius * c)
    sum_a = xp.cumulative_sum(a)
    norm_a = cumulative_l2_norm(a)
    denom = root_b + cumulative_l2_norm(rho + c * a)
    mu = (2 * rho * (sum_a / denom) + (c * norm_a) * (norm_a / denom) - 2 * radius / denom) / root_b
    active = a > rho * mu
    k = xp.clip(xp.sum(xp.astype(active, xp.int64)) - 1, 0, None)
    return xp.clip(mu[k], 0, None)
