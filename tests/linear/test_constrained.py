"""Constrained form: seed 004's closed form, the penalized twin at the multiplier, KKT, the shadow price."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LogisticRegression

from normpen.linear.datafits import Hinge, Logistic, MultitaskQuadratic, Quadratic
from normpen.linear.solvers.constrained import constrained
from normpen.linear.solvers.fista import fista
from normpen.penalties import L1, L2, ElasticNet, GroupLasso, MaxNorm, Nuclear


def seed_problem(target):
    """Seed 004's L = 1/2 (t1 - y1)^2 + 1/2 (t2 - y2)^2 as our quadratic 1/(2n)||y' - X t||^2 with n = 2."""
    return np.sqrt(2) * np.eye(2), np.sqrt(2) * np.asarray(target, dtype=float)


def regression(n=60, p=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + 1.0
    return X, X @ rng.normal(size=p) + rng.normal(size=n) + 2.0, rng.uniform(0.5, 2.0, size=n)


def assert_kkt(result, tol=1e-7):
    for name, value in result.kkt.items():
        assert value <= tol, name


def test_seed_two_parameter_example_closed_form():
    """theta* = y sqrt(C)/||y|| and the seed's multiplier lambda* = (||y||/sqrt(C) - 1)/2 when ||y||^2 > C."""
    target, C = np.array([3.0, 4.0]), 4.0
    X, y = seed_problem(target)
    result = constrained(X, y, Quadratic(), L2(1.0), np.sqrt(C), fit_intercept=False, tol=1e-12)
    # a projection onto the 2-D ball, exact up to a few eps times |coef| <= 2 (measured 0, gap 0)
    np.testing.assert_allclose(result.coef, target * np.sqrt(C) / 5.0, atol=1e-13)
    assert result.squared_multiplier == pytest.approx((5.0 / 2.0 - 1) / 2, abs=1e-13)
    assert result.multiplier == pytest.approx(2 * np.sqrt(C) * result.squared_multiplier, rel=1e-14)
    # the seed's Lagrangian L + lambda*||theta||^2 is the L2 penalty object with lam = 2 lambda*
    assert isinstance(result.twin, L2)
    assert result.twin.lam == pytest.approx(2 * result.squared_multiplier, rel=1e-14)
    assert_kkt(result, 1e-12)


def test_seed_example_inactive_budget_has_zero_multiplier():
    X, y = seed_problem([0.3, -0.4])
    result = constrained(X, y, Quadratic(), L2(1.0), 1.0, fit_intercept=False, tol=1e-12)
    # exact up to a few eps (measured 2e-15)
    np.testing.assert_allclose(result.coef, [0.3, -0.4], atol=1e-13)
    assert result.multiplier == pytest.approx(0.0, abs=1e-13)
    assert result.twin.lam == pytest.approx(0.0, abs=1e-13)


@given(
    target=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2),
    budget=st.floats(1e-3, 1e4),
)
def test_seed_example_closed_form_everywhere(target, budget):
    target = np.asarray(target)
    X, y = seed_problem(target)
    result = constrained(X, y, Quadratic(), L2(1.0), np.sqrt(budget), fit_intercept=False, tol=1e-12)
    norm = np.linalg.norm(target)
    expected = target * min(1.0, np.sqrt(budget) / norm) if norm > 0 else target
    # a projection: a few eps times max(1, norm) (measured <= 5e-15 over 624 draws, edge cases included)
    np.testing.assert_allclose(result.coef, expected, atol=1e-13 * max(1.0, norm))
    expected_lambda = max(norm / np.sqrt(budget) - 1, 0) / 2
    # norm / sqrt(budget) - 1 cancels its digits near the sphere: a few eps times max(1, norm) / sqrt(budget)
    # absolute (measured <= 2.5e-15 times that plus lambda over the same draws)
    slack = 1e-13 * max(1.0, norm) / np.sqrt(budget)
    assert result.squared_multiplier == pytest.approx(expected_lambda, rel=1e-13, abs=slack)


def test_l2_twin_is_the_ridge_closed_form_with_weights_and_intercept():
    X, y, s = regression()
    result = constrained(X, y, Quadratic(), L2(1.0), 0.8, sample_weight=s, tol=1e-12)
    a = s / s.sum()
    Xc, yc = X - a @ X, y - a @ y
    lam = result.twin.lam
    ridge = np.linalg.solve(Xc.T @ (a[:, None] * Xc) + lam * np.eye(X.shape[1]), Xc.T @ (a * yc))
    # the multiplier is known to O(sqrt(gap)): gap <= 1e-12 P0 (P0 = 4.6) bounds stationarity by sqrt(2 L gap)
    # = 4.1e-6 (L = 1.86), the multiplier by that / ||w|| = 5.2e-6, and ridge at lam moves w by <= 5.2e-6
    # ||w|| / (mu + lam) = 1.2e-6 (mu = 0.56), plus sqrt(2 gap / mu) = 4e-6 for the solve itself; the
    # intercept moves by |mean x| = 2.8 times that (measured 1.8e-7 and 8.1e-7: a picked 1e-6 had 1.2x room)
    np.testing.assert_allclose(result.coef, ridge, atol=1e-5)
    assert result.intercept == pytest.approx(a @ y - a @ X @ ridge, abs=2e-5)
    assert np.linalg.norm(result.coef) == pytest.approx(0.8, rel=1e-14)  # on the sphere up to rounding
    assert_kkt(result, 1e-5)  # stationarity is in gradient units: <= 4.1e-6 (measured 8.7e-7)


def test_l1_twin_is_sklearn_lasso_at_the_multiplier():
    X, y, _ = regression()
    result = constrained(X, y, Quadratic(), L1(1.0), 1.5, tol=1e-12)
    ref = Lasso(alpha=result.multiplier, tol=1e-14, max_iter=100_000).fit(X, y)
    # the bound of the L2 test, with both CDs on the exact support: measured 8.6e-14 and 1.1e-13
    np.testing.assert_allclose(result.coef, ref.coef_, atol=1e-7)
    assert result.intercept == pytest.approx(ref.intercept_, abs=1e-7)
    assert np.sum(np.abs(result.coef)) == pytest.approx(1.5, rel=1e-14)  # 8 terms on the ball's surface
    assert np.any(result.coef == 0)  # the L1 ball's projection gives exact zeros
    assert_kkt(result, 1e-6)  # sqrt(2 L gap) ~ 4e-6 at worst (measured 1.4e-13)


def test_logistic_l2_twin_is_sklearn_logistic_regression():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 5))
    y = np.where(X @ rng.normal(size=5) + 0.5 + rng.normal(size=80) > 0, 1.0, -1.0)
    result = constrained(X, y, Logistic(), L2(1.0), 0.7, tol=1e-12, max_iter=50_000)
    C = 1 / (len(y) * result.twin.lam)  # sklearn sums the losses: lam = 1 / (n C)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    # gap <= 1e-12 log 2 and the datafit's curvature (~0.1) give sqrt(2 gap / mu) ~ 4e-6, and the multiplier's
    # error moves the twin by about as much (the L2 test's bound); measured 6.5e-7, which a picked 1e-6 left
    # 1.5x
    np.testing.assert_allclose(result.coef, ref.coef_.ravel(), atol=1e-5)
    assert result.intercept == pytest.approx(ref.intercept_[0], abs=1e-5)


@pytest.mark.parametrize(
    ("penalty", "radius"),
    [(L2(1.0), 0.8), (L1(1.0), 1.5), (GroupLasso(1.0, groups=[np.arange(3), np.arange(3, 8)]), 1.2)],
    ids=["l2", "l1", "group"],
)
def test_shadow_price_is_minus_the_multiplier(penalty, radius):
    """dL*/dr = -mu and dL*/dC = -mu / (2r) with C = r^2, by central differences."""
    X, y, s = regression(seed=1)
    h = 1e-4

    def solve(r):
        return constrained(X, y, Quadratic(), penalty, r, sample_weight=s, tol=1e-13, max_iter=50_000)

    def optimum(r):
        return solve(r).objective

    result = solve(radius)
    slope = (optimum(radius + h) - optimum(radius - h)) / (2 * h)
    # each optimum is certified to 1e-13 P0 (P0 <= 10): 1e-12 / h = 1e-8 on a slope >= 1; the truncation
    # h^2 |L'''| / 6 ~ 2e-9 and the rounding eps |L| / h ~ 1e-11 are smaller (measured <= 5.3e-9)
    assert slope == pytest.approx(-result.multiplier, rel=1e-7)
    C = radius**2
    slope_C = (optimum(np.sqrt(C + h)) - optimum(np.sqrt(C - h))) / (2 * h)
    assert slope_C == pytest.approx(-result.squared_multiplier, rel=1e-7)


def test_group_lasso_twin_agrees_with_fista_and_zeroes_groups():
    X, y, _ = regression(p=9, seed=2)
    groups = [np.arange(3), np.arange(3, 6), np.arange(6, 9)]
    result = constrained(X, y, Quadratic(), GroupLasso(1.0, groups=groups), 0.6, tol=1e-12)
    twin = fista(X, y, Quadratic(), result.twin, tol=1e-12, max_iter=100_000)
    # the L2 test's bound (~5e-6) with FISTA's at 1e-12 P0 below it: measured 3.9e-9 and KKT 1.5e-8
    np.testing.assert_allclose(result.coef, twin.coef, atol=1e-6)
    assert_kkt(result, 1e-6)


def test_nuclear_ball_multitask_agrees_with_fista_twin():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6))
    Y = X @ (rng.normal(size=(6, 1)) @ rng.normal(size=(1, 3))) + 0.3 * rng.normal(size=(50, 3))
    result = constrained(X, Y, MultitaskQuadratic(), Nuclear(1.0), 1.0, tol=1e-12)
    assert result.coef.shape == (6, 3) and result.intercept.shape == (3,)
    # on the nuclear sphere up to the SVD's rounding: ~10 eps (measured 0)
    assert np.linalg.svd(result.coef, compute_uv=False).sum() == pytest.approx(1.0, rel=1e-13)
    twin = fista(X, Y, MultitaskQuadratic(), result.twin, tol=1e-12, max_iter=100_000)
    # as the group test: below the ~5e-6 bound, measured 1.7e-8 and KKT 2.1e-9
    np.testing.assert_allclose(result.coef, twin.coef, atol=1e-6)
    assert_kkt(result, 1e-6)


def test_inactive_constraint_gives_the_unconstrained_fit():
    X, y, _ = regression()
    # the certificate r * ||grad||_inf scales with the radius: 1e-10 relative is near rounding here
    result = constrained(X, y, Quadratic(), L1(1.0), 1e3, tol=1e-10)
    design = np.hstack([X, np.ones((len(y), 1))])
    ols = np.linalg.lstsq(design, y, rcond=None)[0]
    # certified to 1e-10 P0 with mu = 0.5: sqrt(2e-10 * 5 / 0.5) = 4.5e-5 at worst; measured 1.3e-13, 8.9e-14
    # and 8.8e-11
    np.testing.assert_allclose(result.coef, ols[:-1], atol=1e-6)
    assert result.multiplier <= 1e-6 and result.kkt["complementary_slackness"] <= 1e-6


def test_sparse_design_and_warm_start():
    X, y, _ = regression()
    X[np.abs(X - 1) < 0.7] = 0.0
    dense = constrained(X, y, Quadratic(), L1(1.0), 1.5, tol=1e-10)
    sparse = constrained(sp.csr_matrix(X), y, Quadratic(), L1(1.0), 1.5, tol=1e-10)
    # the same iterations on the same numbers, rounding only (measured 1.1e-16)
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-7)
    warm = constrained(X, y, Quadratic(), L1(1.0), 1.5, tol=1e-10, coef_init=dense.coef)
    assert warm.n_iter == 0 < dense.n_iter  # the warm start is certified before any step
    np.testing.assert_array_equal(warm.coef, dense.coef)  # no step: the start is returned as it was


def test_unconverged_solve_warns_with_the_gap():
    X, y, _ = regression()
    with pytest.warns(ConvergenceWarning, match="duality gap"):
        result = constrained(X, y, Quadratic(), L1(1.0), 1.5, tol=1e-14, max_iter=3, check_every=1)
    assert result.n_iter == 3 and not result.converged and result.dual_gap > 1e-14 * result.gap_scale


@pytest.mark.parametrize(
    ("datafit", "penalty", "radius", "error", "match"),
    [
        (Hinge(), L2(1.0), 1.0, ValueError, "differentiable"),
        (Quadratic(), ElasticNet(1.0), 1.0, TypeError, "norm"),
        (Quadratic(), MaxNorm(1.0), 1.0, TypeError, "norm"),
        (Quadratic(), "l1", 1.0, TypeError, "penalty"),
        (Quadratic(), L1(1.0), 0.0, ValueError, "radius"),
    ],
)
def test_bad_arguments_raise_naming_them(datafit, penalty, radius, error, match):
    X, y, _ = regression()
    if isinstance(datafit, Hinge):
        y = np.sign(y - y.mean())
    with pytest.raises(error, match=match):
        constrained(X, y, datafit, penalty, radius)
