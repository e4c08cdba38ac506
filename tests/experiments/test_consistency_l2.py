"""The consistency experiment: its formulas against independent computations, wrong ingredients failing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline
from sklearn.linear_model import Ridge

from normpen.analysis import consistency as ca
from normpen.experiments import consistency_l2 as cl

SEED = cl.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return cl.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = cl.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.figures["consistency"].get_axes()) == 3


def test_generalized_ridge_with_a_multiple_of_the_identity_is_scikit_learn_ridge(rng):
    X = rng.standard_normal((25, 4))
    y = X @ rng.standard_normal(4) + rng.standard_normal(25) + 3.0
    w = cl.generalized_ridge(X, y, 0.3 * np.eye(4))
    # two direct float64 solves of a well-conditioned 4x4 system: a few ε·cond ≈ 1e-14
    np.testing.assert_allclose(w, Ridge(alpha=25 * 0.3).fit(X, y).coef_, atol=1e-12)


def test_the_semi_supervised_fit_solves_the_generalized_ridge_of_its_draws(rng):
    X = rng.standard_normal((20, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(20)
    unlabeled = rng.standard_normal((15, 3))
    noise = 0.4 * rng.standard_normal((15 * 3, 3))
    w = cl.semi_supervised_linear_fit(X, y, unlabeled, noise, 2.0)
    expected = cl.generalized_ridge(X, y, 2.0 * ca.sampled_noise_moment(noise))
    # L-BFGS stops when the objective (a mean of N terms) stalls: accurate to √(ε√N), below cl._ROUNDOFF
    np.testing.assert_allclose(w, expected, rtol=cl._ROUNDOFF, atol=1e-10)


def test_the_perturbation_bound_holds_for_random_moments(rng):
    X = rng.standard_normal((30, 5))
    y = rng.standard_normal(30)
    for _ in range(20):
        noise = 0.5 * rng.standard_normal((int(rng.integers(5, 200)), 5))
        moment = ca.sampled_noise_moment(noise)
        w = cl.generalized_ridge(X, y, 1.5 * moment)
        ridge = cl.generalized_ridge(X, y, 1.5 * 0.25 * np.eye(5))
        # a theorem; the factor covers the float64 rounding of the two solves and the norms (~100ε)
        assert np.linalg.norm(w - ridge) <= cl.perturbation_bound(X, w, 1.5, moment, 0.5) * (1 + 1e-12)


def test_the_smoothest_roughness_is_that_of_the_broken_line_and_below_a_spline(rng):
    x = np.sort(rng.uniform(-1, 1, 7))
    y = rng.standard_normal(7)
    grid = np.linspace(x[0], x[-1], 200_001)
    broken = np.gradient(np.interp(grid, x, y), grid)
    r_min = cl.smoothest_roughness(x, y)
    # the trapezoid rule on the broken line's derivative errs only in the grid cells holding a knot:
    # 5 cells of 1e-5 out of a length ≈ 2, a relative error ≲ 1e-4
    assert np.trapezoid(broken**2, grid) == pytest.approx(r_min, rel=1e-3)
    spline = CubicSpline(x, y)
    assert np.trapezoid(spline(grid, 1) ** 2, grid) >= r_min


def test_the_checks_pass_for_another_seed():
    result = cl.run(quick=True, seed=2)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

MC = "linear: max |Monte Carlo − σ²‖W‖²| / standard error over σ"
EXACT = "linear: max ‖w_consistency − w_generalised ridge(μŜ)‖ / ‖w‖ over M"
BOUND = "linear: max ‖w_consistency − w_ridge(λ = μσ²)‖ / perturbation bound over M"
SLOPE = f"linear: slope of log ‖w_generalised ridge(μŜ) − w_ridge‖ against log M ({cl.N_TABLES} tables)"
STOP = f"network: max relative fall of J over the last {cl.NET_CHUNK} L-BFGS iterations (stopping test)"
RATIO = "network: ∫f'² of consistency only / ∫f'² of consistency + L2"
SMOOTH = "network, consistency + L2: ∫f'² / R_min (the smoothest interpolant's)"
BETWEEN = "network, consistency only: mean f'² between unlabeled points / at them"
FIT = "network: max labeled mean squared error of the two fits"


def _averaged_over_outputs(model, unlabeled, perturb, n_draws=1, *, stop_gradient=False):
    """The squared difference averaged over the outputs instead of summed."""
    total = ca.consistency_loss(model, unlabeled, perturb, n_draws, stop_gradient=stop_gradient)
    return total / model(unlabeled[:1]).shape[-1]


def _lam_with_sigma_not_squared(mu, sigma):
    return mu * sigma


def _fit_stopped_early(X, y, unlabeled, noise, consistency_weight):
    """Five gradient steps from zero on the same objective instead of a converged fit."""
    X, y, U, E = (torch.as_tensor(a) for a in (X, y, unlabeled, noise))
    model = torch.nn.Linear(X.shape[1], 1).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        datafit = 0.5 * ((y - model(X)[:, 0]) ** 2).mean()
        consistency = ca.consistency_loss(model, U, lambda u: u + E, E.shape[0] // U.shape[0])
        (datafit + 0.5 * consistency_weight * consistency).backward()
        optimizer.step()
    return model.weight.detach()[0].numpy().copy()


WRONG = {
    "consistency averaged over outputs": [("consistency_loss", _averaged_over_outputs)],
    "ridge λ = μσ": [("equivalent_ridge_lam", _lam_with_sigma_not_squared)],
    "a linear fit that stopped early": [("semi_supervised_linear_fit", _fit_stopped_early)],
    "no weight decay in the second network": [("NET_LAM", 0.0)],
    # noise wider than the gaps between the 30 unlabeled points asks for flatness everywhere
    "consistency noise σ = 0.3": [("NET_SIGMA", 0.3)],
    "far too much weight decay": [("NET_LAM", 1.0)],
    "a network fit cut off after 200 iterations": [("NET_MAX_ITER", 200)],
}
MUST_FAIL = {
    "consistency averaged over outputs": {MC},
    "ridge λ = μσ": {BOUND, SLOPE},
    "a linear fit that stopped early": {EXACT},
    "no weight decay in the second network": {SMOOTH, RATIO},
    "consistency noise σ = 0.3": {BETWEEN},
    "far too much weight decay": {FIT},
    "a network fit cut off after 200 iterations": {STOP},
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    for attribute, value in WRONG[scenario]:
        monkeypatch.setattr(cl, attribute, value)
    failed = {c.name for c in cl.run(quick=True, seed=SEED).checks if not c.passed}
    assert MUST_FAIL[scenario] <= failed, (
        f"{scenario}: expected {MUST_FAIL[scenario] - failed} among the failures"
    )


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    assert set().union(*MUST_FAIL.values()) == {c.name for c in quick_result.checks}
