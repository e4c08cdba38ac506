"""SparseGroupLasso against scipy.optimize, a 50-digit reference, and its two limits L1 and GroupLasso.

The registry line in ``cases.py`` runs the whole contract suite on it; these tests add what is
specific to the mix: free coordinates and zero-weight groups, l1_ratio near 0 and 1, nearly equal
entries in the dual-norm root.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``SCIPY``), named at each site. Beyond them:
Nelder-Mead's best value is the reference for the prox objective, which ours must not exceed by
more than ``CERTIFICATE`` relative (the objective is a sum of 12 terms). The
projection's norm is on the sphere to ``4e-16`` (it is rescaled onto it: two roundings); the
search's slope against a central difference with ``h = 1e-6 mu``: truncation and rounding are
both below 1e-9 of the slope's scale, so ``rel=1e-6, abs=1e-9``.
"""

import math

import mpmath
import numpy as np
import pytest
from scipy.optimize import minimize

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.sparse_group_lasso import SparseGroupLasso
from penalties.cases import CERTIFICATE, CHAIN, SUM_OF_TERMS

#: Coordinate 4 is in no group (L1 part only); the second group has weight 0 (L1 part only).
GROUPS = [np.array([0, 1, 2]), np.array([5, 3]), np.array([6])]
WEIGHTS = [1.5, 0.0, 1.0]
METHODS = {
    "value": (),
    "grad": (),
    "prox": (0.8,),
    "norm": (),
    "project": (0.6,),
    "dual_norm": (),
    "project_dual": (0.4,),
    "lambda_max": (),
}


def _x(seed, size=7):
    return 2 * np.random.default_rng(seed).standard_normal(size)


@pytest.mark.parametrize(("l1_ratio", "seed"), [(0.1, 0), (0.5, 1), (0.9, 2)])
def test_prox_is_the_minimiser_scipy_finds(l1_ratio, seed):
    """No point scipy's Nelder-Mead reaches (from x, 0 and near the prox) has a lower prox objective."""
    pen = SparseGroupLasso(0.7, GROUPS, l1_ratio, WEIGHTS)
    x, step = _x(seed), 1.3
    prox = pen.prox(x, step)

    def objective(z):
        return 0.5 * np.sum((z - x) ** 2) + step * float(pen._value(z))  # the kernel: thousands of calls

    options = {"xatol": 1e-10, "fatol": 1e-14, "adaptive": True, "maxfev": 20_000}
    best = min(
        minimize(objective, start, method="Nelder-Mead", options=options).fun
        for start in (x, np.zeros_like(x), prox + 0.05)
    )
    assert objective(prox) <= best + CERTIFICATE * abs(best)


def _group_support(x, alpha, beta):
    r"""The largest :math:`\langle |x|, z\rangle` with :math:`\alpha\sum z + \beta\|z\|_2 \le 1`, by SLSQP.

    By symmetry the maximiser of :math:`\langle x, z\rangle` has the signs of :math:`x`, so the
    search over :math:`z \ge 0` loses nothing, and there the constraint is smooth away from 0.
    """
    a = np.abs(x)
    best = -math.inf
    for seed in range(3):
        start = np.random.default_rng(seed).uniform(0.1, 1.0, a.size)
        start /= alpha * start.sum() + beta * np.linalg.norm(start)
        result = minimize(
            lambda z: -a @ z,
            0.5 * start,
            jac=lambda z: -a,
            bounds=[(0, None)] * a.size,
            constraints={"type": "ineq", "fun": lambda z: 1 - alpha * z.sum() - beta * np.linalg.norm(z)},
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        z = result.x
        best = max(best, float(a @ z) / max(1.0, alpha * z.sum() + beta * np.linalg.norm(z)))
    return best


@pytest.mark.parametrize("l1_ratio", [0.05, 0.5, 0.95])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dual_norm_is_the_support_function_of_the_unit_ball(l1_ratio, seed):
    r"""The unit ball of a sum of norms of disjoint blocks is the convex hull of the blocks' unit balls,
    so the largest :math:`\langle x, z\rangle` is the largest over the groups (the free coordinate is one
    with weight 0)."""
    pen = SparseGroupLasso(1.0, GROUPS, l1_ratio, WEIGHTS)
    x = _x(seed)
    blocks = [*zip(GROUPS, WEIGHTS, strict=True), (np.array([4]), 0.0)]
    brute = max(_group_support(x[g], l1_ratio, (1 - l1_ratio) * w) for g, w in blocks)
    # SLSQP stops when its linear objective (of order one) moves by ftol = 1e-15; measured within 6.2e-15
    # relative over 40 seeds and these 3 ratios: the CERTIFICATE tier
    assert brute == pytest.approx(float(pen.dual_norm(x)), rel=CERTIFICATE)


def _reference_root(a, alpha, beta):
    r"""The smallest :math:`t` with :math:`\|(a - \alpha t)_+\| \le \beta t`, by 50-digit bisection."""
    a = [mpmath.mpf(float(v)) for v in np.abs(a)]
    with mpmath.workdps(50):
        low, high = mpmath.mpf(0), 2 * max(a) / alpha
        for _ in range(250):
            middle = (low + high) / 2
            inside = mpmath.sqrt(sum(max(v - alpha * middle, 0) ** 2 for v in a)) <= beta * middle
            low, high = (low, middle) if inside else (middle, high)
        return float(high)


@pytest.mark.parametrize("l1_ratio", [0.3, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("spread", [1.0, 1e-9, 0.0])
def test_dual_norm_root_is_exact_to_two_ulps(l1_ratio, spread):
    """Nearly equal entries (spread 1e-9) and ties (0) are where sums of squares cancel."""
    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 8):
        a = 3.0 + spread * rng.standard_normal(size)
        pen = SparseGroupLasso(1.0, [np.arange(size)], l1_ratio)
        expected = _reference_root(a, l1_ratio, (1 - l1_ratio) * math.sqrt(size))
        assert float(pen.dual_norm(a)) == pytest.approx(expected, rel=2 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("groups", [GROUPS, "rows", "cols"], ids=["index", "rows", "cols"])
def test_l1_ratio_one_is_the_lasso(groups):
    pen, lasso = SparseGroupLasso(0.7, groups, 1.0), L1(0.7)
    x = _x(4, 12).reshape(3, 4)
    for method, args in METHODS.items():
        np.testing.assert_allclose(
            getattr(pen, method)(x, *args),
            getattr(lasso, method)(x, *args),
            rtol=CERTIFICATE,
            atol=SUM_OF_TERMS,
        )


@pytest.mark.parametrize("groups", [GROUPS, "rows", "cols"], ids=["index", "rows", "cols"])
def test_l1_ratio_zero_is_the_group_lasso(groups):
    weights = None if groups is GROUPS else [0.5, 1.0, 2.0]
    x = _x(5, 9).reshape(3, 3)
    pen, group = SparseGroupLasso(0.7, groups, 0.0, weights), GroupLasso(0.7, groups, weights)
    for method, args in METHODS.items():
        np.testing.assert_allclose(
            getattr(pen, method)(x, *args),
            getattr(group, method)(x, *args),
            rtol=CERTIFICATE,
            atol=SUM_OF_TERMS,
        )


def test_projection_is_the_prox_at_its_multiplier():
    """KKT: the projection onto the ball is prox of mu * Omega with Omega(prox) = r; mu from the result."""
    pen = SparseGroupLasso(1.0, GROUPS, 0.4, WEIGHTS)
    x = _x(6)
    radius = 0.3 * float(pen.norm(x))
    z = pen.project(x, radius)
    assert float(pen.norm(z)) == pytest.approx(radius, rel=4e-16)
    mu = float(pen.dual_norm(x - z))  # x - z = mu * (a unit dual vector) at the optimum
    np.testing.assert_allclose(z, pen.prox(x, mu), atol=CHAIN)
    assert float(np.vdot(x - z, z)) == pytest.approx(mu * radius, rel=CERTIFICATE)  # complementary slackness


@pytest.mark.parametrize("l1_ratio", [0.2, 0.8, 1.0])
def test_projection_multiplier_search_has_the_value_and_slope_it_claims(l1_ratio):
    """The Newton search's f(mu) = Omega(prox_{mu Omega}(x)) - r and f'(mu), by central differences."""
    pen, x, radius = SparseGroupLasso(1.0, GROUPS, l1_ratio, WEIGHTS), _x(8), 0.5
    for mu in np.linspace(0.05, 1.2, 7) * float(pen.dual_norm(x)):
        value, slope = pen._excess_and_slope(x, mu, radius)
        assert value == pytest.approx(float(pen.norm(pen.prox(x, mu))) - radius, abs=CHAIN)
        h = 1e-6 * mu
        above, below = (pen._excess_and_slope(x, mu + d, radius)[0] for d in (h, -h))
        assert slope == pytest.approx((above - below) / (2 * h), rel=1e-6, abs=1e-9)


def test_with_lam_shares_the_validated_groups():
    pen = SparseGroupLasso(0.7, GROUPS, 0.4, WEIGHTS)
    twin = pen.with_lam(0.2)
    assert twin.lam == 0.2 and twin._group is pen._group and pen.lam == 0.7
    assert "SparseGroupLasso(lam=0.2, groups=<3 index arrays>, l1_ratio=0.4" in repr(twin)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"l1_ratio": 1.5}, ValueError, "l1_ratio must lie in"),
        ({"groups": [np.array([0, 1]), np.array([1])]}, ValueError, "must not overlap"),
        ({"weights": [1.0, -1.0, 1.0]}, ValueError, "weights must be finite and >= 0"),
    ],
)
def test_bad_parameters_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        SparseGroupLasso(**{"lam": 0.5, "groups": GROUPS, **kwargs})


def test_groups_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="contains index 6"):
        SparseGroupLasso(0.5, GROUPS).prox(np.zeros(5), 1.0)
