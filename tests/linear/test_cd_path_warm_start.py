"""Coordinate descent along a path (:class:`normpen.linear.solvers.cd.PathSolver`): on least squares no
strength is returned at its warm start, and a single fit from a start that meets its tolerance still is;
a Newton datafit's start moves along the path's line after a failed check.

Below :math:`\\lambda_{\\max}` distinct strengths have distinct optima (on the support the optimality
conditions read :math:`|\\nabla_j F| = \\lambda`), so a strength whose coefficients equal the previous
strength's was returned at its warm start. The solutions are checked against scikit-learn's (the lasso,
the logistic) or the covariance solver's (the group lasso) at a tight tolerance, each certified by
:meth:`~normpen.linear.problem.Problem.certify`: both objectives lie in :math:`[P^\\star, P^\\star + G_i]`,
so :math:`|P_1 - P_2| \\le G_1 + G_2` plus the rounding of two objectives, :math:`64\\epsilon(|P_1| + |P_2|)`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, lasso_path

from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Logistic, Quadratic
from normpen.linear.path import path
from normpen.linear.problem import Problem
from normpen.linear.solvers import cd
from normpen.linear.solvers.cd import _estimated_move
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1

EPS = np.finfo(np.float64).eps


def _sparse_regression(n=200, p=400, seed=1):
    X = sp.random(n, p, density=0.05, format="csc", random_state=seed)
    y = X[:, :10] @ np.ones(10) + 0.05 * np.random.default_rng(seed).standard_normal(n)
    return X, y - y.mean()


def _certified(X, y, datafit, lams, coefs):
    """Objectives and gaps of ``coefs`` (one per strength of the L1 path, no intercept)."""
    problem = Problem(X, y, datafit, None, False)
    blocks = [as_block_penalty(L1(lam), (X.shape[1],)) for lam in lams]
    reports = [problem.certify(block, coef) for block, coef in zip(blocks, coefs, strict=True)]
    return np.array([r.primal for r in reports]), np.array([r.gap for r in reports])


def _agree(one, two, gaps_one, gaps_two):
    """|P_1 - P_2| <= G_1 + G_2 + 64 eps (|P_1| + |P_2|) at every strength (module docstring)."""
    bound = np.maximum(gaps_one, 0) + np.maximum(gaps_two, 0) + 64 * EPS * (np.abs(one) + np.abs(two))
    assert np.all(np.abs(one - two) <= bound)


def _moves_at_every_strength(result):
    """Past the first strength every one was solved (a round at least) and left the previous solution."""
    assert np.all(result.n_iters[1:] >= 1)
    unchanged = np.all(np.diff(result.coefs, axis=0) == 0, axis=1)
    assert not np.any(unchanged)


def test_a_dense_group_lasso_path_at_a_loose_tol_returns_no_strength_at_its_warm_start():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 60))
    y = X[:, :10] @ rng.standard_normal(10) + 0.5 * rng.standard_normal(80)
    penalty = GroupLasso(1.0, [np.arange(i, i + 3) for i in range(0, 60, 3)])
    options = {"n_lams": 30, "eps": 0.05}
    result = path(X, y, Quadratic(), penalty, **options, tol=1e-2, solver="cd")
    assert result.converged.all()
    _moves_at_every_strength(result)
    tight = path(X, y, Quadratic(), penalty, **options, tol=1e-10, solver="covariance")
    _agree(result.objectives, tight.objectives, result.dual_gaps, tight.dual_gaps)


def test_a_sparse_lasso_path_at_a_loose_tol_returns_no_strength_at_its_warm_start():
    X, y = _sparse_regression()
    result = path(X, y, Quadratic(), L1(1.0), n_lams=20, eps=5e-2, fit_intercept=False, tol=1e-2)
    assert result.converged.all()
    _moves_at_every_strength(result)
    _, coefs, _ = lasso_path(X, y, alphas=result.lams, tol=1e-12, max_iter=100_000)
    theirs, gaps = _certified(X, y, Quadratic(), result.lams, coefs.T)
    _agree(result.objectives, theirs, result.dual_gaps, gaps)


def test_a_single_fit_from_a_start_that_meets_tol_returns_it():
    """One strength (an estimator's fit, its ``warm_start``) is checked first, as before: from the solution
    at that strength it takes no round."""
    X, y = _sparse_regression()
    lam = float(path(X, y, Quadratic(), L1(1.0), n_lams=5, fit_intercept=False).lams[3])
    first = path(X, y, Quadratic(), L1(1.0), [lam], fit_intercept=False, tol=1e-8)
    start = (first.coefs[0], None)
    again = path(X, y, Quadratic(), L1(1.0), [lam], fit_intercept=False, tol=1e-8, init=start)
    assert again.n_iters[0] == 0
    np.testing.assert_array_equal(again.coefs[0], first.coefs[0])


def test_a_logistic_path_is_certified_and_agrees_with_scikit_learn():
    """Newton-model datafits check each warm start first (:class:`PathSolver`): certified all the same."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 60))
    y = np.where(X[:, :5] @ np.ones(5) + 0.5 * rng.standard_normal(120) > 0, 1.0, -1.0)
    result = path(X, y, Logistic(), L1(1.0), n_lams=20, eps=0.1, fit_intercept=False, tol=1e-2, solver="cd")
    assert result.converged.all()
    n = X.shape[0]
    with warnings.catch_warnings():
        # liblinear's own criterion may stop it short: the bound uses the gap certified on its coefficients
        warnings.simplefilter("ignore", ConvergenceWarning)
        coefs = [
            LogisticRegression(
                l1_ratio=1.0,
                C=1 / (n * lam),
                fit_intercept=False,
                solver="liblinear",
                tol=1e-10,
                max_iter=10_000,
            )
            .fit(X, y)
            .coef_[0]
            for lam in result.lams
        ]
    theirs, gaps = _certified(X, y, Logistic(), result.lams, coefs)
    _agree(result.objectives, theirs, result.dual_gaps, gaps)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_a_logistic_path_moves_along_its_line_and_agrees_with_cold_fits(monkeypatch, fit_intercept):
    """After a failed check at the warm start a Newton datafit's start moves along the line through the
    last two solutions (its gradient there an estimate, its first working set's formed exactly): the path
    takes such moves, every strength is certified, and each objective agrees with a cold fit of that
    strength alone at tol 1e-10 (module docstring's bound)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 80))
    y = np.where(X[:, :6] @ np.ones(6) + 0.3 + 0.5 * rng.standard_normal(150) > 0, 1.0, -1.0)
    moves = []

    def counted(*args):
        estimate = _estimated_move(*args)
        moves.append(estimate is not None)
        return estimate

    monkeypatch.setattr(cd, "_estimated_move", counted)
    options = {"fit_intercept": fit_intercept, "solver": "cd"}
    result = path(X, y, Logistic(), L1(1.0), n_lams=25, eps=0.05, tol=1e-4, **options)
    assert result.converged.all() and sum(moves) >= 10
    monkeypatch.undo()
    cold = [path(X, y, Logistic(), L1(1.0), [lam], tol=1e-10, **options) for lam in result.lams]
    _agree(
        result.objectives,
        np.array([c.objectives[0] for c in cold]),
        result.dual_gaps,
        np.array([c.dual_gaps[0] for c in cold]),
    )


def test_a_strength_returned_at_its_start_is_not_a_point_of_the_line():
    """The line runs through the last two strengths solved: a warm start returned as it was (here a
    strength repeated, whose start is its solution) holds the previous coefficients at another
    strength, and would double the line's slope."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 30))
    y = np.where(X[:, :4] @ np.ones(4) + 0.5 * rng.standard_normal(60) > 0, 1.0, -1.0)
    problem = Problem(X, y, Logistic(), None, False)
    solver = cd.PathSolver(as_block_penalty(L1(1.0), (30,)))
    lam_max = float(np.max(np.abs(problem.gradient(problem.raw_gradient(np.zeros(60))))))
    state = problem.state()
    lams = lam_max * np.array([0.5, 0.4, 0.4])
    iters = [solver(problem, lam, state, tol=1e-8).n_iter for lam in lams]
    assert iters[0] >= 1 and iters[1] >= 1 and iters[2] == 0
    assert [point[0] for point in solver._solved] == list(lams[:2])
