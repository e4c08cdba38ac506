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
    project_l2_ball,
    soft_threshold,
)
from normpen.penalties.base import BlockForm, Penalty

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

    def block_form(self, shape=None):
        """The :class:`BlockForm`: L1 part :math:`\\lambda\\rho`, ridge :math:`\\lambda(1-\\rho)`."""
        return BlockForm(l1=self.lam * self.l1_ratio, ridge=self.lam * (1 - self.l1_ratio))

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
        if self.l1_ratio == 0:  # ridge: the set is the ball of radius sqrt(2 r)
            return project_l2_ball(x, math.sqrt(2.0) * math.sqrt(radius))
        xp = namespace(x)
        rho, c = self.l1_ratio, 1 - self.l1_ratio
        magnitudes = xp.abs(x)
        top = max_or_zero(magnitudes)
        mu, theta = _multiplier(xp.reshape(magnitudes, (-1,)), rho, radius)
        # the kept part |x_i| - rho mu = theta - (top - |x_i|): theta from its own root while it is
        # below top / 2 (where top - rho mu would cancel), else top - rho mu; the gap top - |x_i| is
        # exact wherever the result is nonzero (Sterbenz: |x_i| > top / 2 there)
        near_top = theta < top / 2
        mu = xp.where(near_top, (top - theta) / rho, mu)
        theta = xp.where(near_top, theta, top - mu * rho)
        kept = xp.clip(theta - (top - magnitudes), 0, None)
        return xp.where(mu > 0, xp.sign(x) * kept / (1 + mu * c), x)


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
    r"""The :math:`\mu \ge 0` with :math:`\Omega(\operatorname{prox}_{\mu\Omega}(a)) = r` (0 inside the set),
    and :math:`\theta = \max_i a_i - \rho\mu`, the soft threshold's distance below the top.

    ``a`` holds the magnitudes :math:`|x_i|` (1-D, nonnegative), :math:`\rho > 0`. Write
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
    (:math:`L_k / (\sqrt{B_k} + N_k) \le 1/c`) and nothing cancels when :math:`c` is small
    (:math:`\rho = 1` gives the lasso's :math:`(S_k - r)/k`); :math:`r/B_k = 1/(k\rho^2/r + 2c)`
    and :math:`\rho^2/B_k` below are formed without a product of :math:`r` with anything.

    The same equation in :math:`\theta` (substitute :math:`\rho\mu = a_1 - \theta`, the gaps
    :math:`d_i = a_1 - a_i` and :math:`P = \rho + c a_1`) has the root

    .. math:: \theta_k = \frac{2\big(P\, r/B_k + (\rho^2/B_k)(E_k - G_k/2)\big)}
                               {1 + (N_k/P)\sqrt{\rho^2/B_k}},\qquad
              E_k = \sum_{i\le k} d_i,\quad G_k = \sum_{i\le k} d_i \frac{c\, d_i}{P},

    where every term is nonnegative (:math:`E_k \ge G_k`): when the radius is far below the
    rounding step of :math:`a_1`, :math:`\theta` keeps its digits where :math:`a_1 - \rho\mu_k`
    would be 0. The active count is the largest :math:`k` with :math:`d_k < \theta_k`
    (:math:`a_k > \rho\mu_k`): each summand of :math:`\Omega(\operatorname{prox}_{\mu\Omega}(a))`,
    kept even when :math:`a_i < \mu\rho`, decreases in :math:`\mu`, so the condition holds
    exactly up to the true count. :math:`\mu` is clipped at 0 (a point inside the set gives
    :math:`\mu \le 0`, so no branch on values is needed).
    """
    xp = namespace(a)
    c = 1 - rho
    a = xp.sort(a, descending=True)
    top = a[0]
    count = xp.arange(1, a.shape[0] + 1, dtype=a.dtype, device=array_api_compat.device(a))
    n_k = cumulative_l2_norm(rho + c * a)
    p = rho + c * top
    gaps = top - a
    spread = xp.cumulative_sum(gaps) - xp.cumulative_sum(gaps * (c * gaps / p)) / 2
    r_over_b = 1 / (count * (rho**2 / radius) + 2 * c)
    rho2_over_b = 1 / (count + 2 * (radius / rho) * (c / rho))
    theta = 2 * (p * r_over_b + rho2_over_b * spread) / (1 + (n_k / p) * xp.sqrt(rho2_over_b))
    k = xp.clip(xp.sum(xp.astype(gaps < theta, xp.int64)) - 1, 0, None)
    # mu only at the active count: 0-d arithmetic
    root_b = xp.sqrt(count[k] * (rho**2 / 2) + radius * c) * math.sqrt(2.0)
    denom = root_b + n_k[k]
    sum_a, norm_a = xp.cumulative_sum(a)[k], cumulative_l2_norm(a)[k]
    mu = (2 * rho * (sum_a / denom) + (c * norm_a) * (norm_a / denom) - 2 * (radius / denom)) / root_b
    return xp.clip(mu, 0, None), theta[k]
