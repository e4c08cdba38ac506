"""Regularisation paths against independent solves, scikit-learn's grid and the lambda_max threshold."""

import matplotlib

matplotlib.use("Agg")

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lasso_path

from normpen.experiments.elastic_net_grouping import make_problem, standardized
from normpen.linear.datafits import Hinge, Logistic, MultitaskQuadratic, Quadratic
from normpen.linear.path import lambda_grid, lambda_max, path
from normpen.linear.solvers.cd import coordinate_descent
from normpen.linear.solvers.fista import fista
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.nuclear import Nuclear


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 20))
    y = X[:, :4] @ np.array([2.0, -1.0, 1.0, 0.5]) + 0.3 * rng.standard_normal(60) + 2.0
    return X, y


def test_path_equals_independent_solves(data):
    X, y = data
    result = path(X, y, Quadratic(), L1(1.0), n_lams=12, eps=1e-2, tol=1e-12)
    for lam, coef, intercept in zip(result.lams, result.coefs, result.intercepts, strict=True):
        alone = coordinate_descent(X, y, Quadratic(), L1(lam), tol=1e-12)
        np.testing.assert_allclose(coef, alone.coef, atol=1e-9)
        assert intercept == pytest.approx(alone.intercept, abs=1e-9)
    assert np.all(result.converged)
    assert np.all(result.dual_gaps <= 1e-12 * result.gap_scale)


def test_default_grid_starts_at_lambda_max_and_matches_scikit_learn(data):
    X, y = data
    result = path(X, y, Quadratic(), L1(1.0), n_lams=10, eps=1e-3)
    alphas, _, _ = lasso_path(X - X.mean(0), y - y.mean(), alphas=10, eps=1e-3)
    np.testing.assert_allclose(result.lams, alphas, rtol=1e-12)
    assert result.lambda_max == pytest.approx(alphas[0])
    assert np.all(result.coefs[0] == 0)
    assert np.any(result.coefs[1] != 0)
    np.testing.assert_allclose(result.lams[1:] / result.lams[:-1], 1e-3 ** (1 / 9))


def test_lambda_max_is_the_same_for_dense_and_sparse_designs(data):
    X, y = data
    dense = lambda_max(X, y, Quadratic(), L1(1.0))
    assert lambda_max(sp.csr_matrix(X), y, Quadratic(), L1(1.0)) == pytest.approx(dense, rel=1e-12)
    assert dense == pytest.approx(np.max(np.abs((X - X.mean(0)).T @ (y - y.mean()))) / 60)


def test_logistic_lambda_max_zeroes_the_path_start(data):
    X, y = data
    labels = np.where(y > np.median(y), 1.0, -1.0)
    result = path(X, labels, Logistic(), L1(1.0), n_lams=5, eps=0.1, tol=1e-10)
    assert np.all(result.coefs[0] == 0)
    # the intercept at lambda_max is the log-odds of the (balanced) classes
    assert result.intercepts[0] == pytest.approx(0.0, abs=1e-10)
    assert np.count_nonzero(result.coefs[-1]) > 0


def test_given_strengths_are_sorted_decreasing(data):
    X, y = data
    result = path(X, y, Quadratic(), L1(1.0), lams=[0.01, 0.5, 0.1], tol=1e-10)
    np.testing.assert_array_equal(result.lams, [0.5, 0.1, 0.01])


def test_auto_solver_falls_back_to_fista_for_the_nuclear_norm(data):
    X, _ = data
    rng = np.random.default_rng(1)
    Y = X @ rng.standard_normal((20, 3)) + rng.standard_normal((60, 3))
    result = path(X, Y, MultitaskQuadratic(), Nuclear(1.0), lams=[2.0, 0.5], tol=1e-9, max_iter=20_000)
    alone = fista(X, Y, MultitaskQuadratic(), Nuclear(0.5), tol=1e-9, max_iter=20_000)
    np.testing.assert_allclose(result.coefs[-1], alone.coef, atol=1e-4)
    assert result.coefs.shape == (2, 20, 3)


def test_group_lasso_path_selects_whole_groups(data):
    X, y = data
    groups = [np.arange(i, i + 4) for i in range(0, 20, 4)]
    result = path(X, y, Quadratic(), GroupLasso(1.0, groups), n_lams=8, eps=1e-2, tol=1e-10)
    for coef in result.coefs:
        for g in groups:
            assert np.all(coef[g] == 0) or np.all(coef[g] != 0)


def test_one_warning_lists_the_strengths_that_missed_tol(data):
    X, y = data
    with pytest.warns(ConvergenceWarning, match=r"\d+ of 5 strengths did not reach tol") as record:
        result = path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-3, tol=1e-15, max_iter=1)
    assert len([w for w in record if issubclass(w.category, ConvergenceWarning)]) == 1
    assert not np.all(result.converged)


def test_plot_draws_one_line_per_coefficient(data):
    X, y = data
    result = path(X, y, Quadratic(), L1(1.0), n_lams=6, progress=True)
    fig = result.plot()
    assert len(fig.axes[0].lines) == 20
    assert fig.axes[0].get_xscale() == "log"


def test_errors_name_the_fix(data):
    X, y = data
    with pytest.raises(ValueError, match="give the grid explicitly"):
        path(X, y, Quadratic(), L2(1.0))
    with pytest.raises(ValueError, match="svm"):
        path(X, np.sign(y - y.mean()), Hinge(), L1(1.0))
    with pytest.raises(ValueError, match="solver must be"):
        path(X, y, Quadratic(), L1(1.0), solver="newton")
    with pytest.raises(ValueError, match="eps"):
        lambda_grid(1.0, 10, eps=2.0)
    with pytest.raises(ValueError, match="lams"):
        path(X, y, Quadratic(), L1(1.0), lams=[-1.0])


def _lasso_on_its_support(X, y, lam, coef):
    r"""Closed form of the lasso given its support :math:`S` and signs :math:`\sigma` (centred data).

    Stationarity on :math:`S` is linear, :math:`X_S^\top(y - X_S w_S)/n = \lambda\sigma_S`, so
    :math:`w_S = (X_S^\top X_S)^{-1}(X_S^\top y - n\lambda\sigma_S)`.
    """
    support = np.flatnonzero(coef)
    Xs = X[:, support]
    return support, np.linalg.solve(Xs.T @ Xs, Xs.T @ y - len(y) * lam * np.sign(coef[support]))


@pytest.mark.parametrize("penalty", [L1(1.0), ElasticNet(1.0, 0.5)], ids=["lasso", "elastic-net"])
def test_path_reaches_tiny_gaps_on_near_duplicate_columns(penalty):
    """Groups of five columns with correlation 0.999 (smallest eigenvalue of XᵀX/n near 2e-5) at tol=1e-12.

    Coordinate descent used to stall there at a relative gap near 7e-6: the
    Anderson extrapolation combined stored gradients with weights large
    enough to lose every digit. Every strength must now be certified at
    1e-12, and the lasso must equal its closed form on the support it found.
    """
    X, y = standardized(make_problem(True, 9999))
    n = X.shape[0]
    lams = np.geomspace(1.0, 0.05, 40) * np.abs(X.T @ y).max() / n / getattr(penalty, "l1_ratio", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = path(X, y, Quadratic(), penalty, lams, tol=1e-12)
    assert np.all(result.dual_gaps <= 1e-12 * result.gap_scale)
    if isinstance(penalty, L1):
        for lam, coef, intercept in zip(result.lams, result.coefs, result.intercepts, strict=True):
            support, closed_form = _lasso_on_its_support(X, y, lam, coef)
            np.testing.assert_allclose(coef[support], closed_form, rtol=1e-7, atol=1e-9)
            residual = y - X @ coef - intercept
            assert np.all(np.abs(X.T @ residual) / n <= lam * (1 + 1e-8))
