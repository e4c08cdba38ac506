"""The prudent-investor experiment: estimates, the independent KKT route, wrong ingredients failing."""

from __future__ import annotations

import numpy as np
import pytest

from normpen.analysis import portfolio
from normpen.datasets import factor_market
from normpen.experiments import prudent_investor as pi

SEED = pi.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return pi.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = pi.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.figures["portfolio"].get_axes()) == 4


def test_the_market_windows_have_the_stated_moments():
    market = factor_market(5, 4000, 2, seed=3)
    for returns in market.returns:
        mean, cov = pi.estimate(returns)
        # 4 standard errors of a mean of 4000 returns
        np.testing.assert_allclose(mean, market.mean, atol=4 * np.sqrt(np.diag(market.cov) / 4000).max())
        # a covariance entry's sd is ≈ σ²√(2/4000) = 2.2 % of the largest entry: 0.1 is 4.5 sd
        np.testing.assert_allclose(cov, market.cov, atol=0.1 * np.abs(market.cov).max())
    assert np.all(np.linalg.eigvalsh(market.cov) > 0)


def test_the_kkt_route_agrees_with_the_closed_form(rng):
    returns = factor_market(8, 30, 1, seed=int(rng.integers(1000))).returns[0]
    mean, cov = pi.estimate(returns)
    for lam in (0.0, 1e-3, 1.0):
        expected = portfolio.regularized_portfolio(cov, mean, risk_aversion=pi.RISK_AVERSION, lam=lam)
        # two float64 solves of the same system; 30 periods for 8 assets: cond ≲ 1e3, error ≲ cond·ε ≈ 2e-13
        np.testing.assert_allclose(pi.kkt_portfolio(cov, mean, lam), expected, rtol=1e-9, atol=1e-12)


def test_the_checks_pass_for_another_seed():
    result = pi.run(quick=True, seed=9)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

KKT = "max ‖w_closed form − w_KKT system‖∞ / ‖w‖∞ over the λ grid (first window)"
FALLS = "(window, λ step) pairs where 1/Σwᵢ² falls as λ grows"
LIMIT = "mean 1/Σwᵢ² at the largest λ / N"
COND = "max relative error of cond(γΣ̂ + λI) vs (γe_max + λ)/(γe_min + λ)"
VARIANCE = "out-of-sample variance, plug-in − ridge (c = 1): paired z over windows"
UTILITY = "out-of-sample certainty equivalent, ridge (c = 1) − plug-in: paired z over windows"


def _budget_dropped(cov, mean=None, *, risk_aversion=1.0, lam=0.0):
    """The unconstrained maximiser (γΣ + λI)⁻¹μ: no budget constraint."""
    return np.linalg.solve(risk_aversion * cov + lam * np.eye(cov.shape[0]), mean)


def _penalty_pushes_outwards(cov, mean=None, *, risk_aversion=1.0, lam=0.0):
    """A penalty with the wrong sign where it stays well posed: it rewards concentration."""
    shift = min(lam, 0.5 * risk_aversion * np.linalg.eigvalsh(cov)[0])
    return (
        _ORIGINAL(cov, mean, risk_aversion=risk_aversion, lam=0.0)
        if shift == 0
        else _ORIGINAL(cov - shift / risk_aversion * np.eye(cov.shape[0]), mean, risk_aversion=risk_aversion)
    )


def _eigenvalues_of_the_wrong_matrix(returns):
    sweep = _ORIGINAL_SWEEP(returns)
    return pi.Sweep(sweep.lams, sweep.weights, np.linalg.eigvalsh(np.cov(returns, rowvar=False, ddof=0)))


def _penalty_ignored(cov, mean=None, *, risk_aversion=1.0, lam=0.0):
    return _ORIGINAL(cov, mean, risk_aversion=risk_aversion, lam=0.0)


_ORIGINAL = portfolio.regularized_portfolio
_ORIGINAL_SWEEP = pi.sweep_window

WRONG = {
    "budget constraint dropped": ("regularized_portfolio", _budget_dropped, {KKT, LIMIT}),
    "penalty with the wrong sign": ("regularized_portfolio", _penalty_pushes_outwards, {KKT, FALLS, LIMIT}),
    "eigenvalues of the biased covariance": ("sweep_window", _eigenvalues_of_the_wrong_matrix, {COND}),
    "penalty ignored": ("regularized_portfolio", _penalty_ignored, {KKT, LIMIT, VARIANCE, UTILITY}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    attribute, replacement, must_fail = WRONG[scenario]
    monkeypatch.setattr(pi, attribute, replacement)
    failed = {c.name for c in pi.run(quick=True, seed=SEED).checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for *_, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}


def test_the_market_generator_is_seeded_and_validates_its_arguments():
    a, b = factor_market(4, 10, 2, seed=1), factor_market(4, 10, 2, seed=1)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert a.returns.shape == (2, 10, 4)
    with pytest.raises(ValueError, match="n_assets must be >= 1"):
        factor_market(0, 10)
    with pytest.raises(TypeError, match="n_periods must be an int"):
        factor_market(4, 10.5)
