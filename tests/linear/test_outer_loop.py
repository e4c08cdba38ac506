"""Coordinate descent's outer loop: the working set kept along a least-squares path (issue 15)."""

import numpy as np
import pytest

from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.datafits import Logistic, MultitaskQuadratic, Quadratic
from normpen.linear.path import path
from normpen.linear.problem import Problem
from normpen.linear.solvers.cd import _working_set
from normpen.penalties.l1 import L1


def _lasso(p):
    return BlockPenalty.separable(np.full((p, 1), 0.5))


def test_working_set_adds_the_previous_blocks_that_are_not_screened():
    penalty = _lasso(20)
    W = np.zeros((20, 1))
    W[[2, 7, 11]] = 1.0  # 3 nonzero blocks: a working set of 6
    violation = np.zeros(20)
    violation[[4, 5, 15, 16]] = [3.0, 2.0, 1.0, 0.5]  # the 3 worst join the 3 nonzero
    unscreened = np.ones(20, dtype=bool)
    unscreened[9] = False
    plain = _working_set(penalty, W, violation, unscreened, 2)
    np.testing.assert_array_equal(plain, [2, 4, 5, 7, 11, 15])
    kept = _working_set(penalty, W, violation, unscreened, 2, previous=np.array([0, 9, 16]))
    np.testing.assert_array_equal(kept, [0, 2, 4, 5, 7, 11, 15, 16])  # 9 is screened: it stays out


def test_working_set_drops_a_previous_set_that_would_more_than_double_it():
    penalty = _lasso(40)
    W = np.zeros((40, 1))
    W[[2, 7]] = 1.0  # a working set of 4, at most 8 with the previous blocks
    violation = np.zeros(40)
    violation[[4, 5]] = 1.0
    unscreened = np.ones(40, dtype=bool)
    plain = _working_set(penalty, W, violation, unscreened, 2)
    within = _working_set(penalty, W, violation, unscreened, 2, previous=np.arange(20, 24))
    np.testing.assert_array_equal(within, np.union1d(plain, np.arange(20, 24)))
    beyond = _working_set(penalty, W, violation, unscreened, 2, previous=np.arange(20, 25))
    np.testing.assert_array_equal(beyond, plain)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_a_path_that_keeps_its_working_sets_meets_tol_by_the_exact_gap(fit_intercept):
    """Every strength's exact gap, recomputed from scratch at the returned coefficients, is at most tol
    times the objective at zero, and the reported gap is that gap.

    The reported and recomputed gaps come from the same formulas on the same point in float64 (one in
    the working set's order of operations): sums of 80 terms of size <= 10, within 1e-12 (measured
    <= 2e-15); the tolerance check allows the same rounding.
    """
    rng = np.random.default_rng(3)
    X = np.asfortranarray(rng.standard_normal((80, 300)))
    y = X[:, :8] @ rng.standard_normal(8) + 0.5 * rng.standard_normal(80)
    weights = rng.uniform(0.5, 2.0, 80)
    tol = 1e-3
    result = path(
        X,
        y,
        Quadratic(),
        L1(1.0),
        n_lams=30,
        eps=1e-2,
        tol=tol,
        sample_weight=weights,
        fit_intercept=fit_intercept,
    )
    problem = Problem(X, y, Quadratic(), weights, fit_intercept)
    unit = as_block_penalty(L1(1.0), problem.coef_shape)
    for lam, coef, intercept, gap in zip(
        result.lams, result.coefs, result.intercepts, result.dual_gaps, strict=True
    ):
        exact = problem.certify(unit.scaled(lam), coef, intercept if fit_intercept else None).gap
        assert gap == pytest.approx(exact, abs=1e-12)
        assert exact <= tol * result.gap_scale + 1e-12


@pytest.mark.parametrize("outputs", [1, 3])
def test_refitting_the_intercept_keeps_a_least_squares_gradient_equal_to_a_fresh_one(outputs):
    """Least squares: the gradient cached before the intercept's refit, moved by the shift, is the
    gradient formed afresh at the refitted point; no pass over X is needed (issue 15 item 3).

    G = A(z - y) and X^T G are affine in the intercept. The two sides differ by the rounding of the
    sums X^T G over n = 60 samples, each within n eps |X|^T |G| of the exact value (the sums' error
    bound), the update's own product and addition within 2 eps |x_bar| |shift| more: the bound used is
    2 n eps |X|^T (|G_before| + a |shift|).
    """
    rng = np.random.default_rng(5)
    X = np.asfortranarray(rng.standard_normal((60, 25)))
    y = rng.standard_normal((60, outputs)) + 4.0  # the intercept at 0 is far from its optimum
    weights = rng.uniform(0.5, 2.0, 60)
    datafit = Quadratic() if outputs == 1 else MultitaskQuadratic()
    problem = Problem(X, y[:, 0] if outputs == 1 else y, datafit, weights, fit_intercept=True)
    W = np.zeros((25, outputs))
    W[[1, 4, 9]] = rng.standard_normal((3, outputs))
    state = problem.state(W.reshape(problem.coef_shape))
    G_before, _ = problem.full_gradient(state)
    b_before = state.b.copy()
    problem.refit_intercept(state)
    shift = state.b - b_before
    assert np.all(np.abs(shift) > 1.0)
    assert state.gradient is not None
    G_kept, grad_kept = state.gradient
    state.gradient = None
    G_fresh, grad_fresh = problem.full_gradient(state)
    a = problem.weights[:, None]
    eps = np.finfo(np.float64).eps
    size = np.abs(G_before) + a * np.abs(shift)
    # a(z - y) + a shift against a((z + shift) - y): two or three roundings of these magnitudes each
    np.testing.assert_array_less(np.abs(G_kept - G_fresh), 4 * eps * size + np.finfo(np.float64).tiny)
    bound = 2 * 60 * eps * (np.abs(X).T @ size)
    assert np.all(np.abs(grad_kept - grad_fresh) <= bound)


def test_refitting_the_intercept_drops_a_logistic_gradient():
    """A logistic G is not affine in the intercept: the refit leaves the gradient to be formed again."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 10))
    y = np.where(rng.standard_normal(50) > -1.0, 1.0, -1.0)
    problem = Problem(X, y, Logistic(), fit_intercept=True)
    state = problem.state()
    problem.full_gradient(state)
    problem.refit_intercept(state)
    assert state.b[0] != 0
    assert state.gradient is None
