"""Coordinate descent on wide sparse working sets, where the model's Gram matrix is left implicit (issue 15).

A working set whose :math:`k^2` Gram entries cost more than a few passes over its nonzeros is swept with the
residual (``cd._ResidualSweep`` over a ``cd._ImplicitGram``). These tests check that the path is taken and
that it lands on the independent solutions (scikit-learn's coordinate descent, and normpen's own Gram path)
within bounds derived from the certified duality gaps:

- objectives: each solution's objective is within its absolute gap :math:`G` of the optimum, so two
  solutions' objectives differ by at most :math:`\\max(G_1, G_2)`;
- predictions, least squares: the loss :math:`\\frac1{2n}\\|y - z\\|^2` is :math:`1/n`-strongly convex in
  :math:`z = Xw + b` and the penalty convex, so :math:`P(w) - P^* \\ge \\frac1{2n}\\|z - z^*\\|^2` and
  :math:`\\|z_1 - z_2\\|/\\sqrt n \\le \\sqrt{2G_1} + \\sqrt{2G_2}`.

The gaps are computed for every solution by normpen's certificate (``Problem.certify``), whatever the solver
reports, plus the rounding of the objectives they are differences of (``Problem.objective_rounding``).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import linear_model

from normpen.linear import path
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Logistic, Quadratic
from normpen.linear.problem import Problem
from normpen.linear.solvers import cd
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.l1 import L1


@pytest.fixture(scope="module")
def sparse_wide():
    """200 x 4000, 2% nonzero (4 a column), 40 true coefficients: working sets of hundreds of columns."""
    n, p = 200, 4000
    X = sp.random(n, p, density=0.02, format="csc", random_state=0)
    rng = np.random.default_rng(0)
    w = np.zeros(p)
    w[:40] = rng.standard_normal(40)
    y = X @ w + 0.05 * rng.standard_normal(n)
    return X, y


@pytest.fixture
def residual_sweeps(monkeypatch):
    """Counts the residual sweeps started, to check the implicit path was taken."""
    started = []
    original = cd._ResidualSweep.__init__

    def counting(self, *args, **kwargs):
        started.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cd._ResidualSweep, "__init__", counting)
    return started


def certified_gap(X, y, datafit, penalty, coef, intercept, fit_intercept):
    """Objective and absolute duality gap (normpen's certificate) of a solution, plus the rounding."""
    problem = Problem(X, y, datafit, fit_intercept=fit_intercept)
    report = problem.certify(as_block_penalty(penalty, problem.coef_shape), coef, intercept)
    return report.primal, max(report.gap, 0.0) + problem.objective_rounding(report.primal)


def sklearn_model(penalty_name, lam, fit_intercept, positive):
    # scikit-learn's objective 1/(2n)|y - Xw - b|^2 + alpha (r|w|_1 + (1-r)/2 |w|^2) is ours with alpha = lam
    options = dict(alpha=lam, fit_intercept=fit_intercept, positive=positive, tol=1e-10, max_iter=100_000)
    if penalty_name == "l1":
        return linear_model.Lasso(**options)
    return linear_model.ElasticNet(l1_ratio=0.5, **options)


@pytest.mark.parametrize("penalty_name", ["l1", "elastic net"])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("positive", [False, True])
def test_implicit_path_matches_scikit_learn(
    sparse_wide, residual_sweeps, penalty_name, fit_intercept, positive
):
    X, y = sparse_wide
    n = X.shape[0]
    penalty = L1(1.0) if penalty_name == "l1" else ElasticNet(1.0, 0.5)
    result = path(
        X,
        y,
        Quadratic(),
        penalty,
        n_lams=8,
        eps=1e-2,
        fit_intercept=fit_intercept,
        positive=positive,
        tol=1e-10,
    )
    assert residual_sweeps, "the working sets were not swept with Q left implicit"
    for lam, coef, intercept in zip(result.lams, result.coefs, result.intercepts, strict=True):
        reference = sklearn_model(penalty_name, lam, fit_intercept, positive).fit(X, y)
        ours_penalty = L1(lam) if penalty_name == "l1" else ElasticNet(lam, 0.5)
        ours, gap = certified_gap(X, y, Quadratic(), ours_penalty, coef, intercept, fit_intercept)
        theirs, their_gap = certified_gap(
            X, y, Quadratic(), ours_penalty, reference.coef_, reference.intercept_, fit_intercept
        )
        assert abs(ours - theirs) <= max(gap, their_gap)
        z, z_ref = X @ coef + intercept, X @ reference.coef_ + reference.intercept_
        bound = np.sqrt(2 * gap) + np.sqrt(2 * their_gap)
        assert np.linalg.norm(z - z_ref) / np.sqrt(n) <= bound


@pytest.mark.parametrize("datafit", [Quadratic(), Logistic()], ids=["quadratic", "logistic"])
def test_implicit_and_formed_models_agree(sparse_wide, residual_sweeps, monkeypatch, datafit):
    X, y = sparse_wide
    target = y if isinstance(datafit, Quadratic) else np.where(y > np.median(y), 1.0, -1.0)
    options = dict(n_lams=8, eps=1e-2 if isinstance(datafit, Quadratic) else 5e-2, tol=1e-10)
    implicit = path(X, target, datafit, L1(1.0), **options)
    assert residual_sweeps, "the working sets were not swept with Q left implicit"
    monkeypatch.setattr(cd, "_implicit_is_cheaper", lambda X_ws: False)
    formed = path(X, target, datafit, L1(1.0), **options)
    for lam, a, b, c, d in zip(
        implicit.lams, implicit.coefs, implicit.intercepts, formed.coefs, formed.intercepts, strict=True
    ):
        one, gap_one = certified_gap(X, target, datafit, L1(lam), a, b, True)
        two, gap_two = certified_gap(X, target, datafit, L1(lam), c, d, True)
        assert abs(one - two) <= max(gap_one, gap_two)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_implicit_gram_is_the_formed_one(sparse_wide, fit_intercept):
    X, _ = sparse_wide
    n = X.shape[0]
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(X.shape[1], 300, replace=False))
    h = rng.uniform(0.5, 1.5, n) / n
    problem = Problem(X, np.zeros(n), Quadratic(), fit_intercept=fit_intercept)
    formed = problem.weighted_gram(rows, h, cached=False)
    X_ws = X[:, rows]
    q = np.asarray(X_ws.T @ h).ravel() if fit_intercept else None
    implicit = cd._ImplicitGram.of(X_ws, h, q, float(h.sum()))
    # Every entry is a sum of at most n + 1 float64 products (an entry of |X|^T H |X| plus |q_i q_j| / sum h),
    # within gamma(n + 1) of the exact value times the same sum of magnitudes (gamma(m) = m eps / (1 - m eps),
    # Higham's bound), and those sums are at most the row sums r of magnitude_row_sums. A product with V or a
    # sum over a row adds k = |rows| terms: gamma(n + k + 1) r max|V|. Two computations of one quantity
    # differ by at most twice the bound.
    eps = np.finfo(np.float64).eps

    def gamma(terms):
        return terms * eps / (1 - terms * eps)

    k = rows.size
    sums = implicit.magnitude_row_sums()
    assert np.all(np.abs(formed).sum(axis=1) <= sums * (1 + 2 * gamma(n + k + 1)))
    entries = 2 * gamma(n + 1) * sums
    assert np.all(np.abs(implicit.formed() - formed).max(axis=1) <= entries)
    assert np.all(np.abs(implicit.diagonal() - np.diagonal(formed)) <= entries)
    V = rng.standard_normal((k, 2))
    assert np.all(
        np.abs(implicit @ V - formed @ V).max(axis=1) <= 2 * gamma(n + k + 1) * sums * np.abs(V).max()
    )
    part = rng.choice(k, 40, replace=False)
    shifted = implicit.principal(part, 0.25).formed()
    expected = formed[np.ix_(part, part)] + 0.25 * np.eye(part.size)
    assert np.all(np.abs(shifted - expected).max(axis=1) <= entries[part])
