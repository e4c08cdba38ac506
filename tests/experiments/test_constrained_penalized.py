"""The constrained-penalized experiment: closed forms against scipy, checks against wrong solvers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from normpen.experiments import constrained_penalized as cp
from normpen.linear import estimators
from normpen.linear.solvers import constrained as constrained_solver
from normpen.penalties.l2 import L2

SEED = cp.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return cp.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figure(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"lagrangian"}
    assert len(quick_result.figures["lagrangian"].get_axes()) == 4


@settings(max_examples=15, deadline=None)
@given(
    y=st.lists(st.floats(-5, 5).filter(lambda v: abs(v) > 0.1), min_size=2, max_size=2),
    fraction=st.floats(0.05, 3.0),
)
def test_closed_form_is_the_constrained_minimum_found_by_slsqp(y, fraction):
    y = np.array(y)
    C = fraction * float(y @ y)
    theta, lam, loss = cp.toy_closed_form(y, C)
    found = minimize(
        lambda t: 0.5 * np.sum((t - y) ** 2),
        np.zeros(2),
        jac=lambda t: t - y,
        constraints=[{"type": "ineq", "fun": lambda t: C - t @ t, "jac": lambda t: -2 * t}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    # SLSQP at ftol 1e-14 on a 2-D problem: its iterate sits up to ~1e-8 outside the ball, and an error δ in
    # the objective moves θ by about √δ near a constrained optimum: 1e-6 covers both.
    np.testing.assert_allclose(theta, found.x, atol=1e-6)
    assert loss == pytest.approx(found.fun, rel=1e-6, abs=1e-9)  # SLSQP may sit 1e-8 outside the ball
    # the multiplier makes the Lagrangian stationary and vanishes exactly when the budget is slack
    # The closed form in float64: residuals are a few ε times |y| ≤ 5.
    assert cp.kkt_residual(theta - y, theta, lam, C) < 1e-12
    assert (lam > 0) == (C < y @ y)


def test_kkt_residual_sees_each_violated_condition():
    y, C = np.array([2.0, -1.0]), 1.0
    theta, lam, _ = cp.toy_closed_form(y, C)
    # Closed form on y = (2, −1), C = 1: every quantity is O(1), the residual a few ε at most.
    assert cp.kkt_residual(theta - y, theta, lam, C) < 1e-15
    assert cp.kkt_residual(theta - y, theta, 2 * lam, C) > 0.1  # stationarity
    assert cp.kkt_residual(1.5 * theta - y, 1.5 * theta, lam, C) > 0.1  # primal feasibility
    assert cp.kkt_residual(y - y, y, -0.5, C) > 0.1  # dual feasibility
    inside = 0.5 * theta
    assert cp.kkt_residual(np.zeros(2), inside, 0.3, C) > 0.1  # complementary slackness


def test_secular_multiplier_gives_the_penalized_solution_of_norm_squared_c(rng):
    X = rng.standard_normal((40, 5))
    X -= X.mean(axis=0)
    y = X @ rng.standard_normal(5) + rng.standard_normal(40)
    y -= y.mean()
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    for fraction in (0.1, 0.6):
        C = fraction * float(ols @ ols)
        lam = cp.secular_multiplier(X, y, C)
        theta = np.linalg.solve(X.T @ X / 40 + 2 * lam * np.eye(5), X.T @ y / 40)
        # θ scaled onto the sphere of radius √C: two roundings per coordinate.
        assert theta @ theta == pytest.approx(C, rel=1e-12)
    assert cp.secular_multiplier(X, y, 2 * float(ols @ ols)) == 0.0


def test_central_difference_matches_the_closed_form_slope():
    y = np.array([1.2, 2.5])
    X, target = np.sqrt(2) * np.eye(2), np.sqrt(2) * y
    for C in (0.3, 2.0, 10.0):
        _, lam, _ = cp.toy_closed_form(y, C)
        # Central difference of step h on L*(C), smooth in C: truncation O(h²L''') plus rounding ε·L*/h;
        # at the step the module uses both are below 1e-9.
        assert cp.central_difference(X, target, C, fit_intercept=False) == pytest.approx(-lam, abs=1e-8)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = cp.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

THETA = "text: max ‖θ_C − y√C/‖y‖‖ over the budgets"
LAM = "text: max |λ* − ½(‖y‖/√C − 1)₊| / (1 + λ*)"
LOSS = "text: max |L* − ½(‖y‖ − √C)₊²|"
KKT = "text: max KKT residual of (θ_C, λ*), from the data"
FD = "text: max |dL*/dC (central difference) + λ*| / (1 + λ*)"
PENALIZED = "text: max ‖argmin L + λ*‖θ‖² − θ_C‖ (FISTA, L2(2λ*))"
INACTIVE = "text: max |λ*| over budgets C ≥ ‖y‖² (inactive)"
BINDING = "text: max |‖θ_C‖²/C − 1| over budgets C < ‖y‖² (binding)"
SECULAR = "diabetes: max |λ* − secular root| / secular root"
DIABETES_FD = "diabetes: max |dL*/dC (central difference) + λ*| / λ*"
RIDGE = "diabetes: max ‖Ridge(2λ*) − θ_C‖/‖θ_C‖"

_ORIGINAL = constrained_solver.constrained


def _solver(change=None, radius=None):
    """The library's solver with its result changed, or called with another radius."""

    def solver(X, y, datafit, penalty, r, **kwargs):
        result = _ORIGINAL(X, y, datafit, penalty, r if radius is None else radius(r), **kwargs)
        return result if change is None else dataclasses.replace(result, **change(result))

    return solver


def _sphere_solver(X, y, datafit, penalty, r, **kwargs):
    """Projects onto the sphere ‖θ‖ = r: the budget always binds (only meaningful for the text's problem)."""
    result = _ORIGINAL(X, y, datafit, penalty, r, **kwargs)
    coef = np.asarray(result.coef) * r / np.linalg.norm(result.coef)
    gradient = np.asarray(X).T @ (np.asarray(X) @ coef - y) / np.asarray(X).shape[0]
    mu = -float(gradient @ coef) / r
    return dataclasses.replace(result, coef=coef, multiplier=mu, squared_multiplier=mu / (2 * r))


class _RidgeAtLambda(estimators.Ridge):
    """Ridge with half the strength it is given: the L + λ‖θ‖² vs λ/2‖θ‖² confusion."""

    def fit(self, X, y, sample_weight=None):
        self.lam = self.lam / 2
        return super().fit(X, y, sample_weight)


WRONG = {
    "μ of ‖θ‖ ≤ r reported as the λ of ‖θ‖² ≤ C": (
        lambda mp: mp.setattr(
            constrained_solver, "constrained", _solver(lambda r: {"squared_multiplier": r.multiplier})
        ),
        {LAM, KKT, FD, PENALIZED, SECULAR, DIABETES_FD, RIDGE},
    ),
    "budget C used as the radius (instead of √C)": (
        lambda mp: mp.setattr(constrained_solver, "constrained", _solver(radius=lambda r: r * r)),
        {THETA, LAM, LOSS, BINDING},
    ),
    "objective reported 1% high": (
        lambda mp: mp.setattr(
            constrained_solver, "constrained", _solver(lambda r: {"objective": 1.01 * r.objective})
        ),
        {LOSS, FD, DIABETES_FD},
    ),
    "projection onto the sphere (the budget always binds)": (
        lambda mp: mp.setattr(cp, "solve_budget", _sphere_budget),
        {THETA, LAM, KKT, INACTIVE},
    ),
    "L2 prox with λ instead of λ/2 (penalty λ‖θ‖² read as λ/2‖θ‖²)": (
        lambda mp: mp.setattr(L2, "_prox", lambda self, x, step: x / (1 + 2 * step * self.lam)),
        {PENALIZED},
    ),
    "Ridge at λ* instead of 2λ*": (lambda mp: mp.setattr(estimators, "Ridge", _RidgeAtLambda), {RIDGE}),
}


def _sphere_budget(X, y, C, fit_intercept):
    return _sphere_solver(
        X, y, cp.Quadratic(), L2(1.0), np.sqrt(C), fit_intercept=fit_intercept, tol=1e-14, max_iter=100_000
    )


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = cp.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
