"""The L-BFGS solver of the smooth problems (a differentiable datafit with the L2 penalty alone).

Checked against independent things: the duality gap computed the general way
(:meth:`Problem.duality_gap`) for its gap identity, coordinate descent (another
algorithm) through the certificates both return, scikit-learn's
``LogisticRegression``, and the registry's choice.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from normpen.linear import LogisticRegression, path
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Logistic, Multinomial, Quadratic
from normpen.linear.path import solvers_for
from normpen.linear.problem import Problem
from normpen.linear.solvers import lbfgs
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.l2 import L2

EPS = np.finfo(np.float64).eps


def _data(datafit, n=80, p=30, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if sparse:
        X = sp.csc_matrix(X * (rng.random((n, p)) < 0.3))
    score = np.asarray(X[:, :3] @ np.array([1.0, -2.0, 0.5])).ravel() + 0.5 * rng.standard_normal(n)
    if isinstance(datafit, Quadratic):
        return X, score
    if isinstance(datafit, Multinomial):
        return X, np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return X, np.where(score > 0, 1.0, -1.0)


DATAFITS = {"quadratic": Quadratic(), "logistic": Logistic(), "multinomial": Multinomial()}


@pytest.mark.parametrize("name", sorted(DATAFITS))
@pytest.mark.parametrize("weighted", [False, True])
def test_gap_is_the_gradient_norm_over_twice_the_ridge(name, weighted):
    """At a point with its intercept refitted, the general gap equals ||grad_W f||^2 / (2 mu).

    Both sides are computed from float64 sums of O(n p) terms; the general gap is a difference
    of the primal and dual objectives, each rounded to a few eps of its size, so the two agree
    to 64 eps (|P| + |D|) (the floor Problem.certifiable_tol uses), far below the gap here.
    """
    datafit = DATAFITS[name]
    X, y = _data(datafit)
    weights = np.random.default_rng(1).uniform(0.2, 2.0, X.shape[0]) if weighted else None
    problem = Problem(X, y, datafit, weights, fit_intercept=True)
    mu = 0.05
    penalty = as_block_penalty(L2(mu), problem.coef_shape)
    W = np.random.default_rng(2).standard_normal((problem.n_features, problem.n_outputs)) * 0.3
    state = problem.state(W.reshape(problem.coef_shape))
    problem.refit_intercept(state)
    G, grad = problem.full_gradient(state)
    report = problem.duality_gap(state.z, penalty, state.W, grad)
    identity = float(np.sum((grad + mu * state.W) ** 2)) / (2 * mu)
    assert report.gap > 1e-3  # far from the optimum: the comparison below is not of two roundings
    assert abs(report.gap - identity) <= 64 * EPS * (abs(report.primal) + abs(report.dual))


@pytest.mark.parametrize("name", sorted(DATAFITS))
@pytest.mark.parametrize(
    ("sparse", "weighted", "intercept"), [(False, True, True), (True, False, True), (True, True, False)]
)
def test_agrees_with_coordinate_descent_within_the_certified_radius(name, sparse, weighted, intercept):
    """Both certify gaps G_i; mu-strong convexity puts each within sqrt(2 G_i / mu) of the optimum."""
    datafit = DATAFITS[name]
    X, y = _data(datafit, sparse=sparse)
    weights = np.random.default_rng(3).uniform(0.2, 2.0, X.shape[0]) if weighted else None
    lams = [0.3, 0.03, 0.003]
    fits = {
        solver: path(
            X,
            y,
            datafit,
            L2(1.0),
            lams,
            sample_weight=weights,
            fit_intercept=intercept,
            solver=solver,
            tol=1e-10,
        )
        for solver in ("lbfgs", "cd")
    }
    one, two = fits["lbfgs"], fits["cd"]
    assert one.converged.all() and two.converged.all()
    for k, lam in enumerate(lams):
        radius = np.sqrt(2 * max(one.dual_gaps[k], 0.0) / lam) + np.sqrt(2 * max(two.dual_gaps[k], 0.0) / lam)
        radius += 64 * EPS * np.abs(two.coefs[k]).max()  # the coefficients' own rounding
        assert np.linalg.norm(one.coefs[k] - two.coefs[k]) <= radius
        assert one.dual_gaps[k] <= 1e-10 * one.gap_scale


def test_matches_scikit_learn_logistic_regression():
    """scikit-learn's C = 1 / (n lam); its lbfgs run to a gradient of 1e-12 sits at the optimum to ~1e-12,
    ours within sqrt(2 G / lam) of it (G its certified gap at tol 1e-12)."""
    X, y = _data(Logistic(), n=150, p=40, seed=4)
    lam = 0.01
    ours = LogisticRegression(lam, tol=1e-12).fit(X, y)
    theirs = SkLogisticRegression(C=1 / (X.shape[0] * lam), tol=1e-12, max_iter=10_000).fit(X, y)
    radius = np.sqrt(2 * ours.dual_gap_ / lam) + 1e-9  # scikit-learn's own stopping error, measured ~1e-11
    assert np.linalg.norm(ours.coef_ - theirs.coef_) <= radius
    assert abs(ours.intercept_[0] - theirs.intercept_[0]) <= 10 * radius


def test_auto_picks_lbfgs_for_the_l2_penalty_alone():
    assert solvers_for(Logistic(), L2(1.0), (5,))[0] == "lbfgs"
    assert "lbfgs" not in solvers_for(Logistic(), ElasticNet(1.0, 0.5), (5,))
    assert "lbfgs" not in solvers_for(Logistic(), L2(1.0), (5,), positive=True)


def test_too_few_rounds_warn_and_say_not_converged(monkeypatch):
    """One round of two iterations cannot reach a relative gap of 1e-8 from zero on this problem."""
    monkeypatch.setattr(lbfgs, "_ROUND_ITERATIONS", 2)
    X, y = _data(Logistic(), n=200, p=60, seed=5)
    problem = Problem(X, y, Logistic())
    penalty = as_block_penalty(L2(1e-3), problem.coef_shape)
    with pytest.warns(ConvergenceWarning, match="L-BFGS did not converge"):
        solution = lbfgs.solve(problem, penalty, problem.state(), tol=1e-8, max_iter=1)
    assert not solution.converged
    assert solution.n_iter == 1 and solution.n_epochs <= 2
    assert solution.dual_gap > 1e-8 * solution.gap_scale


def test_a_stalled_round_is_finished_by_coordinate_descent(monkeypatch):
    """A round that runs out before its trigger hands the point to coordinate descent, which certifies it."""
    monkeypatch.setattr(lbfgs, "_ROUND_ITERATIONS", 2)
    X, y = _data(Logistic(), n=200, p=60, seed=5)
    problem = Problem(X, y, Logistic())
    penalty = as_block_penalty(L2(1e-3), problem.coef_shape)
    solution = lbfgs.solve(problem, penalty, problem.state(), tol=1e-8)
    assert solution.converged and solution.dual_gap <= 1e-8 * solution.gap_scale
    assert solution.n_iter >= 2  # one L-BFGS round, then coordinate descent's


@pytest.mark.parametrize("lam", [1e-2, 1e-5, 1e-8])
def test_badly_scaled_features_converge_and_agree_with_coordinate_descent(lam):
    """Columns scaled from 1 to 1e4 (unscaled L-BFGS stalled there); tiny strengths finish in coordinate
    descent. Both certify gaps G_i; lam-strong convexity bounds their distance by sum sqrt(2 G_i / lam)."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 40)) * np.logspace(0, 4, 40) + 5.0
    y = np.where(X[:, :3].sum(axis=1) + rng.standard_normal(300) > 15, 1.0, -1.0)
    fits = {s: path(X, y, Logistic(), L2(1.0), [lam], solver=s, tol=1e-8) for s in ("lbfgs", "cd")}
    one, two = fits["lbfgs"], fits["cd"]
    assert one.converged[0] and two.converged[0]
    radius = np.sqrt(2 * max(one.dual_gaps[0], 0.0) / lam) + np.sqrt(2 * max(two.dual_gaps[0], 0.0) / lam)
    radius += 64 * EPS * np.abs(two.coefs[0]).max()
    assert np.linalg.norm(one.coefs[0] - two.coefs[0]) <= radius


def test_refuses_a_penalty_that_is_not_the_ridge_alone():
    X, y = _data(Logistic())
    problem = Problem(X, y, Logistic())
    with pytest.raises(ValueError, match="L2 penalty alone"):
        lbfgs.solve(problem, as_block_penalty(ElasticNet(0.1, 0.5), problem.coef_shape), problem.state())


def test_float32_design_reaches_its_certifiable_accuracy():
    """A float32 X certifies down to 64 eps32 |P| / P0 (Problem.certifiable_tol); asked 1e-5, it gets it."""
    X, y = _data(Logistic(), n=120, p=30, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = path(X.astype(np.float32), y, Logistic(), L2(1.0), [0.01], solver="lbfgs", tol=1e-5)
    assert result.converged[0] and result.coefs[0].dtype == np.float32
