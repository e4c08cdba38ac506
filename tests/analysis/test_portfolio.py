"""The regularised portfolio: closed form against scipy.optimize, its limits, and validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from normpen.analysis.portfolio import effective_number_of_assets, portfolio_variance, regularized_portfolio


def _market(rng, n=6, periods=40):
    returns = 0.01 + 0.05 * rng.standard_normal((periods, n)) @ rng.standard_normal((n, n)) / np.sqrt(n)
    return returns.mean(0), np.cov(returns, rowvar=False)


def _utility(w, cov, mean, gamma, lam):
    return w @ mean - 0.5 * gamma * w @ cov @ w - 0.5 * lam * w @ w


def _scipy_portfolio(cov, mean, gamma, lam):
    """SLSQP on the constrained problem, from equal weights, moved onto the budget plane."""
    n = cov.shape[0]

    def negative(w):
        return -_utility(w, cov, mean, gamma, lam)

    def gradient(w):
        return -(mean - gamma * cov @ w - lam * w)

    budget = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}
    result = scipy.optimize.minimize(
        negative,
        np.full(n, 1 / n),
        jac=gradient,
        constraints=[budget],
        method="SLSQP",
        options={"ftol": 1e-15},
    )
    return result.x + (1.0 - result.x.sum()) / n


def _budget_plane_curvature(cov, gamma, lam):
    """Smallest eigenvalue of ``gamma cov + lam I`` restricted to the plane ``sum(w) = const``."""
    n = cov.shape[0]
    basis = np.linalg.qr(np.c_[np.ones(n), np.eye(n)[:, : n - 1]])[0][:, 1:]
    return np.linalg.eigvalsh(basis.T @ (gamma * cov + lam * np.eye(n)) @ basis)[0]


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), gamma=st.floats(0.5, 20), lam=st.floats(0, 1), n=st.integers(2, 8))
def test_closed_form_equals_scipy_optimize_on_the_constrained_problem(seed, gamma, lam, n):
    rng = np.random.default_rng(seed)
    mean, cov = _market(rng, n)
    w = regularized_portfolio(cov, mean, risk_aversion=gamma, lam=lam)
    # the budget is imposed by a float64 division: rounding of a sum of n <= 8 terms of size |w|
    assert w.sum() == pytest.approx(1.0, abs=1e-12 * max(1.0, np.abs(w).sum()))
    reference = _scipy_portfolio(cov, mean, gamma, lam)
    # SLSQP's answer is only as close as its stopping rule allows (measured up to 2.6e-6 relative over 3000
    # draws, a fixed atol would be luck), so the check is the strong-concavity radius: the utility is
    # mu-strongly concave on the budget plane, so no feasible point beats the maximiser w and any point
    # r is within sqrt(2 (U(w) - U(r)) / mu) of it. mu is measured per draw (down to 7e-8 here).
    # Both utilities round by ~n^2 eps times their terms' magnitudes: 16 n^2 eps covers it.
    magnitude = np.abs(w) @ np.abs(mean) + gamma * np.abs(w) @ np.abs(cov) @ np.abs(w) + lam * w @ w
    rounding = 16 * n**2 * np.finfo(float).eps * max(magnitude, 1.0)
    gap = _utility(w, cov, mean, gamma, lam) - _utility(reference, cov, mean, gamma, lam)
    assert gap >= -rounding
    mu = _budget_plane_curvature(cov, gamma, lam)
    # plus w's own float64 solve error, cond * n eps * |w| with cond <= (gamma |cov| + lam) / mu
    solve_error = (gamma * np.linalg.norm(cov, 2) + lam) / mu * n * np.finfo(float).eps * np.linalg.norm(w)
    assert np.linalg.norm(w - reference) <= np.sqrt(2 * (gap + rounding) / mu) + solve_error


def test_the_kkt_conditions_hold_and_no_feasible_direction_improves(rng):
    mean, cov = _market(rng)
    gamma, lam = 3.0, 0.02
    w = regularized_portfolio(cov, mean, risk_aversion=gamma, lam=lam)
    gradient = mean - gamma * cov @ w - lam * w
    # stationarity on the budget plane: the gradient is a multiple of the all-ones vector
    np.testing.assert_allclose(gradient - gradient.mean(), 0.0, atol=1e-12)  # float64 solve: ~ cond * eps

    def objective(v):
        return v @ mean - 0.5 * gamma * v @ cov @ v - 0.5 * lam * v @ v

    for _ in range(50):
        step = rng.standard_normal(6)
        step -= step.mean()  # stays on the budget plane
        assert objective(w + 1e-3 * step) < objective(w)


def test_without_a_mean_it_is_the_minimum_variance_portfolio(rng):
    _, cov = _market(rng)
    w = regularized_portfolio(cov)
    inverse_ones = np.linalg.solve(cov, np.ones(6))
    # two float64 solves of the same 6x6 system: cond(cov) * eps, cond < 1e4 here
    np.testing.assert_allclose(w, inverse_ones / inverse_ones.sum(), rtol=1e-10)


def test_a_large_penalty_gives_equal_weights_and_the_norm_never_grows(rng):
    mean, cov = _market(rng)
    lams = np.concatenate([[0.0], np.geomspace(1e-6, 1e6, 60)])
    weights = [regularized_portfolio(cov, mean, risk_aversion=2.0, lam=lam) for lam in lams]
    n_eff = np.array([effective_number_of_assets(w) for w in weights])
    assert np.all(np.diff(n_eff) >= -1e-12 * n_eff[1:])  # monotone up to float64 rounding of 1 / sum w^2
    # w = 1/n + (I - 11'/n)(mean - gamma cov w) / lam + O(1/lam^2): < 1e-6 at lam = 1e6 (|mean|, |cov| < 1)
    np.testing.assert_allclose(weights[-1], np.full(6, 1 / 6), atol=1e-6)
    assert n_eff[-1] == pytest.approx(6.0, rel=1e-6)  # n_eff = n - O(n^3 |w - 1/n|^2) at equal weights


def test_a_singular_covariance_needs_a_positive_lambda(rng):
    returns = rng.standard_normal((3, 6))  # 3 periods, 6 assets: rank-deficient covariance
    cov = np.cov(returns, rowvar=False)
    with pytest.raises(ValueError, match="lam > 0"):
        regularized_portfolio(cov, returns.mean(0))
    w = regularized_portfolio(cov, returns.mean(0), lam=0.1)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)  # a float64 sum of 6 weights of size < 10


def test_effective_number_and_variance_of_simple_portfolios():
    # pytest's default rel=1e-6 around values computed with a handful of float64 operations (~1e-16)
    assert effective_number_of_assets(np.full(5, 0.2)) == pytest.approx(5.0)
    assert effective_number_of_assets(np.array([1.0, 0.0, 0.0])) == 1.0
    assert effective_number_of_assets(np.array([1.5, -0.5])) == pytest.approx(1 / 2.5)
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    assert portfolio_variance(np.array([0.5, 0.5]), cov) == pytest.approx(0.25 * (0.04 + 0.09 + 0.02))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: regularized_portfolio(np.ones((2, 3))), "square"),
        (lambda: regularized_portfolio(np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (lambda: regularized_portfolio(np.array([[1.0, np.nan], [np.nan, 1.0]])), "NaN"),
        (lambda: regularized_portfolio(np.eye(2), np.ones(3)), "length 2"),
        (lambda: regularized_portfolio(np.eye(2), risk_aversion=0.0), "risk_aversion"),
        (lambda: regularized_portfolio(np.eye(2), lam=-1.0), "lam"),
        (lambda: regularized_portfolio(-np.eye(2)), "positive definite"),
        (lambda: effective_number_of_assets(np.zeros(3)), "all zero"),
        (lambda: effective_number_of_assets(np.ones((2, 2))), "vector"),
        (lambda: portfolio_variance(np.ones(3), np.eye(2)), "one entry per asset"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call()
