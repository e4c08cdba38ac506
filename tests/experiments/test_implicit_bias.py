"""The implicit-bias experiment: its pieces against definitions, its checks against wrong ingredients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import approx_fprime

from normpen.datasets import planted_max_margin
from normpen.experiments import implicit_bias as ib
from normpen.linear.solvers import svm
from normpen.penalties.l2 import L2

SEED = ib.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return ib.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figures(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"trajectory", "rates", "intercept"}
    assert len(quick_result.figures["rates"].get_axes()) == 2


def _loss(Z, theta):
    return float(np.mean(np.logaddexp(0.0, -Z @ theta)))


def test_one_gradient_descent_step_follows_the_finite_difference_gradient(rng):
    Z = rng.standard_normal((9, 3))
    theta1 = ib.gradient_descent(Z, 0.7, 1, [1])[0]
    expected = -0.7 * approx_fprime(np.zeros(3), lambda w: _loss(Z, w), 1e-7)
    # Forward differences of step 1e-7 on an O(1) loss: truncation ~1e-7·L'' and rounding ~ε/1e-7 ≈ 1e-9.
    np.testing.assert_allclose(theta1, expected, atol=1e-6)
    # the second step starts from the first, and a penalty adds its gradient
    penalty = L2(0.3)
    two = ib.gradient_descent(Z, 0.7, 2, [1, 2], penalty)
    objective = lambda w: _loss(Z, w) + 0.15 * w @ w  # noqa: E731
    expected2 = two[0] - 0.7 * approx_fprime(two[0], objective, 1e-7)
    np.testing.assert_allclose(two[1], expected2, atol=1e-6)


def test_logistic_weights_are_minus_the_loss_derivative():
    m = np.linspace(-30, 30, 13)
    numeric = -(np.logaddexp(0, -(m + 1e-6)) - np.logaddexp(0, -(m - 1e-6))) / 2e-6
    # Central differences of step 1e-6: truncation h²·ℓ'''/6 ≈ 1e-13, rounding ε/h ≈ 1e-10 relative.
    np.testing.assert_allclose(ib.logistic_weights(m), numeric, rtol=1e-6, atol=1e-12)


def test_smoothness_bounds_the_curvature_of_the_loss(rng):
    Z = rng.standard_normal((12, 2))
    beta = ib.smoothness(Z)
    for _ in range(20):
        theta = rng.standard_normal(2)
        s = 1 / (1 + np.exp(-Z @ theta))
        hessian = (Z * (s * (1 - s))[:, None]).T @ Z / Z.shape[0]
        # Both sides are eigenvalues of float64 matrices of O(1) entries: ε-level rounding.
        assert np.linalg.eigvalsh(hessian).max() <= beta * (1 + 1e-12)
    # the bound is attained at theta = 0, where every sigma' equals 1/4
    np.testing.assert_allclose(np.linalg.eigvalsh(Z.T @ Z / 4 / Z.shape[0]).max(), beta)


@pytest.mark.parametrize("n_features", [1, 2, 3, 5])
def test_planted_data_have_the_planted_max_margin_solution(n_features):
    problem = planted_max_margin(14, n_features, margin=0.4, excess=0.7, seed=3)
    w_planted = problem.direction / 0.4
    hard = svm.hard_margin_svm(problem.X, problem.y, fit_intercept=False)
    # The exact active-set solver solves a 2×2 or 3×3 system: rounding ~ε·cond, far below 1e-10.
    np.testing.assert_allclose(hard.coef, w_planted, atol=1e-10)
    margins = ib.margin_vectors(problem) @ w_planted
    assert hard.support.size == n_features
    # Margins of the support vectors from the same solve: a few ε.
    np.testing.assert_allclose(margins[hard.support], 1.0, atol=1e-12)
    rest = np.setdiff1d(np.arange(14), hard.support)
    assert margins[rest].min() >= 1.7 - 1e-12
    assert abs(problem.y.sum()) == 0 and problem.gap == pytest.approx(0.8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 2, "n_features": 2}, "n_samples"),
        ({"margin": 0.0}, "margin"),
        ({"excess": -1.0}, "excess"),
        ({"spread": float("inf")}, "spread"),
    ],
)
def test_planted_max_margin_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        planted_max_margin(**kwargs)


def test_soudry_offset_solves_its_defining_equations():
    problem = ib.make_problem(True, SEED)
    Z = ib.margin_vectors(problem)
    hard = svm.hard_margin_svm(problem.X, problem.y, fit_intercept=False)
    offset = ib.soudry_offset(Z, hard.support, hard.dual_coef, 0.9)
    n = Z.shape[0]
    np.testing.assert_allclose(0.9 / n * np.exp(-Z[hard.support] @ offset), hard.dual_coef[hard.support])


def test_angle_is_accurate_for_nearly_parallel_vectors():
    a = np.array([1.0, 0.0])
    # atan2 of the cross and dot parts keeps ~ε/1e-9 ≈ 2e-7 relative accuracy at an angle of 1e-9.
    assert ib.angle(a, np.array([np.cos(1e-9), np.sin(1e-9)])) == pytest.approx(1e-9, rel=1e-6)
    assert ib.angle(a, -a) == pytest.approx(np.pi)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = ib.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

SOLVER = "hard-margin solver: ‖ŵ − u/γ‖ / ‖u/γ‖ (planted)"
SLOPE = "GD: d‖θ_t‖/d log t over the last decade vs ‖ŵ‖"
ASYMPTOTE = "GD: ‖θ_T − (ŵ log T + w̃)‖ / ‖θ_T‖"
ANGLE = "GD: angle(θ_T, ŵ) vs angle(ŵ log T + w̃, ŵ) (rad)"
PENALIZED = "L2: ‖θ‖ where GD stops vs LogisticRegression(λ)"
GRADIENT = "L2: gradient norm of L + λ/2‖θ‖² where GD stops"
DIFFERS = "L2: largest angle(θ_λ, ŵ) over λ ∈ {1e-3, 1e-2, 1e-1} (rad)"
CLOSED_FORM = "intercept: SVM on (x, 1) through the origin vs closed form (½, −½), relative"
MIDPOINT = "intercept: boundary of the SVM with a free intercept vs the midpoint (x₋ + x₊)/2"
NEARER = (
    "intercept: GD with an unpenalised bias, angle to the SVM on (x, 1) / angle to the SVM with intercept"
)
DECADE = (
    "intercept: GD with an unpenalised bias, angle to the SVM on (x, 1) at T over at T/10 vs log(T/10)/log T"
)


def _solver_returning(transform):
    """A hard-margin solver whose coefficients are ``transform(coef, X, y)``."""
    original = svm.hard_margin_svm

    def solver(X, y, **kwargs):
        result = original(X, y, **kwargs)
        return dataclasses.replace(result, coef=transform(result.coef, X, y))

    return solver


def _rotated(coef, X, y, radians=0.05):
    """Two-dimensional coefficients rotated; others (the one-dimensional intercept data) left alone."""
    if coef.shape != (2,):
        return coef
    c, s = np.cos(radians), np.sin(radians)
    return np.array([[c, -s], [s, c]]) @ coef


_INTERCEPT_PROBLEM = ib.intercept_problem


def _centred_intercept_problem(seed):
    """The intercept data moved so that the closest pair sits symmetrically about the origin."""
    X, y = _INTERCEPT_PROBLEM(seed)
    return X - 0.5 * (X[y < 0].max() + X[y > 0].min()), y


class _MaxMarginLogisticRegression(ib.estimators.LogisticRegression):
    """A 'penalized' fit that returns the max-margin direction, scaled to the true minimiser's norm."""

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight)
        w = svm.hard_margin_svm(X, y, fit_intercept=False).coef
        self.coef_ = (w * np.linalg.norm(self.coef_) / np.linalg.norm(w))[None, :]
        return self


def _hinge_weights(margins):
    """The hinge loss's -ℓ'(m) = 1{m < 1}: no exponential tail, so gradient descent stops."""
    return (margins < 1).astype(float)


WRONG = {
    "max-margin direction off by 0.05 rad": (
        lambda mp: mp.setattr(svm, "hard_margin_svm", _solver_returning(_rotated)),
        {SOLVER, ASYMPTOTE, ANGLE},
    ),
    "max-margin solution 30% too long": (
        lambda mp: mp.setattr(svm, "hard_margin_svm", _solver_returning(lambda c, X, y: 1.3 * c)),
        {SOLVER, SLOPE, ASYMPTOTE, CLOSED_FORM, MIDPOINT},
    ),
    "intercept data centred at the origin (both SVMs agree)": (
        lambda mp: mp.setattr(ib, "intercept_problem", _centred_intercept_problem),
        {CLOSED_FORM, NEARER},
    ),
    "a 'penalized' minimiser along the max-margin direction": (
        lambda mp: mp.setattr(ib.estimators, "LogisticRegression", _MaxMarginLogisticRegression),
        {DIFFERS},
    ),
    "hinge loss instead of logistic (no exponential tail)": (
        lambda mp: mp.setattr(ib, "logistic_weights", _hinge_weights),
        {SLOPE, ASYMPTOTE, ANGLE, DECADE},
    ),
    "L2 gradient twice too large": (
        lambda mp: mp.setattr(L2, "_grad", lambda self, x: 2 * self.lam * x),
        {PENALIZED, GRADIENT},
    ),
    "too few penalized steps": (lambda mp: mp.setattr(ib, "_PENALIZED_STEPS", 40), {PENALIZED, GRADIENT}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = ib.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_the_intercept_data_have_both_svms_in_closed_form():
    X, y = ib.intercept_problem(SEED)
    assert X[y < 0].max() == -1.0 and X[y > 0].min() >= 10.0
    z = y * (0.5 * X[:, 0] - 0.5)
    # Only the negative at −1 is active for (½, −½); every other point clears the margin by ≥ 3.5.
    assert np.sum(np.isclose(z, 1.0, rtol=0, atol=1e-15)) == 1 and np.sort(z)[1] >= 1.0


def test_the_verdict_narrows_the_claim_to_the_svm_on_x_and_1(quick_result):
    verdict = ib.EXPERIMENT.verdict
    assert verdict.status == "narrowed"
    assert {CLOSED_FORM, MIDPOINT, NEARER} == set(verdict.evidence)


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
