"""The physics-discovery experiment: its pieces against their definitions, wrong ingredients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import PolynomialFeatures

from normpen.experiments import physics_discovery as pd

SEED = pd.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return pd.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figures(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"trajectories", "coefficients"}


def test_library_is_scikit_learns_polynomial_features(rng):
    states = rng.standard_normal((7, 3))
    library = pd.CandidateLibrary()
    # products of at most three float64 factors, computed in another order: a few ε (2.2e-16) relative
    np.testing.assert_allclose(library(states), PolynomialFeatures(3).fit_transform(states), rtol=1e-14)
    assert library.names[0] == "1" and len(library.names) == 20


def test_true_coefficients_reproduce_the_lorenz_field(rng):
    states = 10 * rng.standard_normal((11, 3))
    library = pd.CandidateLibrary()
    field = np.array([pd.lorenz(0.0, s) for s in states])
    # 7 nonzero float64 terms up to ~1e3 (x·z with |x|, |z| ≲ 30) against the field's own arithmetic:
    # ε·1e3 ≈ 2e-13 absolute near a zero of the field, a few ε relative elsewhere
    np.testing.assert_allclose(
        library(states) @ pd.true_coefficients(library).T, field, rtol=1e-13, atol=1e-12
    )
    assert np.count_nonzero(pd.true_coefficients(library)) == 7


def test_central_derivative_is_exact_for_quartics():
    dt = 0.01
    t = np.arange(0, 1, dt)
    states = np.column_stack([t**4 - 2 * t**3, 3 * t**2 + t, np.full_like(t, 5.0)])
    expected = np.column_stack([4 * t**3 - 6 * t**2, 6 * t + 1, np.zeros_like(t)])[2:-2]
    # the stencil is exact on quartics; rounding: ε·max|state| (≈ 2) · Σ|stencil| (3) / dt ≈ 1.3e-13
    np.testing.assert_allclose(pd.central_derivative(states, dt), expected, atol=1e-11)


def test_an_exactly_zero_ols_coefficient_gets_a_finite_weight_like_a_rounding_level_one():
    ols = np.array([2.0, -0.5, 0.0, 1e-300])
    floor = 2.0 * np.finfo(np.float64).eps  # ε times the largest |coefficient|
    np.testing.assert_array_equal(pd.adaptive_weight_floor(ols), [2.0, 0.5, floor, floor])


def test_discover_recovers_the_equations_from_exact_derivatives():
    _, states = pd.simulate(pd.lorenz, np.array([1.0, 1.0, 20.0]), 3.0)
    library = pd.CandidateLibrary()
    theta = library(states)
    field = np.array([pd.lorenz(0.0, s) for s in states])
    for k in range(3):
        xi, _, index = pd.discover(theta, field[:, k], 30)
        assert index is not None
        # exact derivatives: least squares on the support to cond(θ_S)·ε ≈ 1e-10 of the coefficients (≤ 28)
        np.testing.assert_allclose(xi, pd.true_coefficients(library)[k], atol=1e-8)


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = pd.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

DERIVATIVE = "estimated derivatives: max error / max |ẋ| (4th-order differences)"
SUPPORT = "discovered terms wrong or missing (3 equations, 60 candidates)"
COEF = "max |ξ − ξ_true| / max |ξ_true| over every candidate"
TRAJECTORY = "re-simulated trajectory: max |Δstate| / attractor size over t ≤ 5"


def _forward_difference(states, dt):
    """First-order differences, O(Δt) accurate, aligned with the interior samples."""
    return (states[3:-1] - states[2:-2]) / dt


def _perturbed_discover(theta, derivative, n_lams, original=pd.discover):
    xi, lasso_path, index = original(theta, derivative, n_lams)
    return xi * (1 + 1e-3), lasso_path, index


WRONG = {
    "first-order differences": (
        lambda mp: mp.setattr(pd, "central_derivative", _forward_difference),
        {DERIVATIVE, COEF},
    ),
    "acceptance residual τ = 0.1 (too loose)": (
        lambda mp: mp.setattr(pd, "_TAU", 0.1),
        {SUPPORT, COEF, TRAJECTORY},
    ),
    "coefficients off by 0.1%": (
        lambda mp: mp.setattr(pd, "discover", _perturbed_discover),
        {COEF, TRAJECTORY},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = pd.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
