"""Regularisation paths against independent solves, scikit-learn's grid and the lambda_max threshold."""

import matplotlib

matplotlib.use("Agg")

import dataclasses
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lasso_path

from normpen.experiments.elastic_net_grouping import make_problem, standardized
from normpen.linear.datafits import Hinge, Logistic, MultitaskQuadratic, Quadratic
from normpen.linear.path import SolverDivergedError, lambda_grid, lambda_max, path
from normpen.linear.solvers.cd import coordinate_descent
from normpen.linear.solvers.cd import solve as cd_solve
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
        # measured: both end in the support polish, which solves the support's equations exactly up to
        # cond (20) * n (60) * eps ~ 3e-13 (measured 4.4e-16); the gap alone would allow
        # 2 sqrt(2e-12 P0 / mu) = 1.3e-5 (P0 = 2.5, mu = 0.11)
        np.testing.assert_allclose(coef, alone.coef, atol=1e-9)
        assert intercept == pytest.approx(alone.intercept, abs=1e-9)
    assert np.all(result.converged)
    assert np.all(result.dual_gaps <= 1e-12 * result.gap_scale)


def test_default_grid_starts_at_lambda_max_and_matches_scikit_learn(data):
    X, y = data
    result = path(X, y, Quadratic(), L1(1.0), n_lams=10, eps=1e-3)
    alphas, _, _ = lasso_path(X - X.mean(0), y - y.mean(), alphas=10, eps=1e-3)
    # lambda_max (60-term sums, ~60 eps) and a geometric grid of exp/log in two libraries: measured <= 3.3e-16
    np.testing.assert_allclose(result.lams, alphas, rtol=1e-13)
    assert result.lambda_max == pytest.approx(alphas[0], rel=1e-13)
    assert np.all(result.coefs[0] == 0)
    assert np.any(result.coefs[1] != 0)
    np.testing.assert_allclose(result.lams[1:] / result.lams[:-1], 1e-3 ** (1 / 9), rtol=1e-13)


def test_lambda_max_is_the_same_for_dense_and_sparse_designs(data):
    X, y = data
    dense = lambda_max(X, y, Quadratic(), L1(1.0))
    # 60-term sums in another order: 60 eps ~ 1.3e-14 relative (measured <= 2.2e-16)
    assert lambda_max(sp.csr_matrix(X), y, Quadratic(), L1(1.0)) == pytest.approx(dense, rel=1e-13)
    assert dense == pytest.approx(np.max(np.abs((X - X.mean(0)).T @ (y - y.mean()))) / 60, rel=1e-13)


def test_logistic_lambda_max_zeroes_the_path_start(data):
    X, y = data
    labels = np.where(y > np.median(y), 1.0, -1.0)
    result = path(X, labels, Logistic(), L1(1.0), n_lams=5, eps=0.1, tol=1e-10)
    assert np.all(result.coefs[0] == 0)
    # the intercept at lambda_max is the log-odds of the (balanced) classes
    # Newton stops at a gradient <= 10 eps, i.e. |b| <= 10 eps / curvature 0.25 ~ 1e-14 (measured 0)
    assert result.intercepts[0] == pytest.approx(0.0, abs=1e-13)
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
    # gaps <= 1e-9 P0 (P0 = 26, mu = 0.11): the certificate allows 2 * 6.8e-4; measured 1.3e-8
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
    with pytest.warns(
        ConvergenceWarning, match=r"\d+ of 5 strengths did not reach tol.*increase max_iter "
    ) as record:
        # coordinate descent's outer rounds (the covariance solver solves these strengths exactly in one)
        result = path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-3, tol=1e-15, max_iter=1, solver="cd")
    assert len([w for w in record if issubclass(w.category, ConvergenceWarning)]) == 1
    assert not np.all(result.converged)


@pytest.mark.parametrize("solver", ["cd", "covariance"])
def test_the_warning_names_max_epochs_when_the_epochs_ran_out_within_the_rounds(data, solver):
    X, y = data
    with pytest.warns(ConvergenceWarning, match=r"did not reach tol.*increase max_epochs") as record:
        # two epochs a strength leave the later strengths of these 60 x 20 data short of 1e-12 (measured:
        # relative gaps 1e-3..2e-2 after one round)
        result = path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-3, tol=1e-12, max_epochs=2, solver=solver)
    assert len([w for w in record if issubclass(w.category, ConvergenceWarning)]) == 1
    assert np.all(result.n_iters[~result.converged] < 100)  # the default max_iter was not the limit


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
            # the support's normal equations at cond ~ 1 / 2e-5: ~5e4 * n eps ~ 1e-9 relative (measured
            # 3.4e-11)
            np.testing.assert_allclose(coef[support], closed_form, rtol=1e-7, atol=1e-9)
            residual = y - X @ coef - intercept
            # exact on the polished support up to 60-term rounding (measured 1.1e-15 relative)
            assert np.all(np.abs(X.T @ residual) / n <= lam * (1 + 1e-8))


COLLINEAR_ONEHOT = Path(__file__).parent / "data" / "collinear_onehot.npz"
path_module = importlib.import_module("normpen.linear.path")  # the package re-exports path() over it


def test_lasso_path_on_collinear_one_hot_columns_converges_to_bounded_coefficients():
    # Two one-hot encoded factors with every level kept: their columns sum to the same constant, so the
    # design has a null space inside the penalized columns. One reported run returned coefficients of
    # 1.97e13 (gap 7.5e10): the support polish solved a singular Hessian. Any lasso solution has
    # lam * ||w||_1 <= P0, which bounds every coefficient.
    data = np.load(COLLINEAR_ONEHOT)
    X, y, lams = data["X"], data["y"], data["lams"]
    result = path(X, y, Quadratic(), L1(1.0), lams=lams)
    assert np.all(result.dual_gaps <= 1e-4 * result.gap_scale)
    assert np.all(np.abs(result.coefs).sum(axis=1) <= result.gap_scale / result.lams)


def test_a_solve_that_diverges_is_restarted_cold_and_then_refused(monkeypatch, data):
    X, y = data
    # cd.solve is the solver patched below: solver="cd" (auto would take the covariance solver)
    good = path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-2, tol=1e-10, solver="cd")
    calls = []

    def diverging_once(problem, penalty, state, **options):
        sol = cd_solve(problem, penalty, state, **options)
        calls.append(state)
        if len(calls) == 3:  # the third strength's warm-started solve blows up
            return dataclasses.replace(sol, coef=sol.coef + 1e13, objective=1e13)
        return sol

    monkeypatch.setattr(path_module.cd, "solve", diverging_once)
    recovered = path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-2, tol=1e-10, solver="cd")
    assert len(calls) == 6  # one extra solve, from the null state
    # a cold start and a warm one both end in the support polish (exact up to ~3e-13, as in
    # test_path_equals_independent_solves); the gap alone would allow 1.3e-4
    np.testing.assert_allclose(recovered.coefs, good.coefs, atol=1e-8)

    def always_diverging(problem, penalty, state, **options):
        sol = cd_solve(problem, penalty, state, **options)
        return dataclasses.replace(sol, objective=float("nan"))

    monkeypatch.setattr(path_module.cd, "solve", always_diverging)
    with pytest.raises(SolverDivergedError, match="diverged at lam=.*collinear"):
        path(X, y, Quadratic(), L1(1.0), n_lams=5, eps=1e-2, solver="cd")


def test_a_tolerance_below_what_float64_certifies_warns_and_still_finds_the_active_variable():
    # Just below lambda_max the zero solution's gap is ~1e-14 P0, under the rounding of the objectives, so the
    # gap cannot tell it from the optimum; the optimality conditions can. One active variable j with an
    # intercept: w_j = (|c_j| - lam) / q_jj, c = X_c^T (y - ybar) / n, q_jj = ||x_j - xbar_j||^2 / n. The
    # difference |c_j| - lam = 1e-7 lam_max cancels 7 digits of c_j (known to ~n eps = 1e-13), so w_j is
    # known to ~1e-6 relative: rtol 1e-5.
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    lam = lambda_max(X, y, Quadratic(), L1(1.0)) * (1 - 1e-7)
    Xc = X - X.mean(axis=0)
    c = Xc.T @ (y - y.mean()) / len(y)
    j = int(np.argmax(np.abs(c)))
    expected = np.sign(c[j]) * (abs(c[j]) - lam) / (Xc[:, j] @ Xc[:, j] / len(y))
    with pytest.warns(UserWarning, match=r"tol=1.0e-16 is below the relative duality gap float64 can"):
        result = path(X, y, Quadratic(), L1(1.0), lams=[lam], tol=1e-16)
    coef = result.coefs[0]
    assert np.flatnonzero(coef).tolist() == [j]
    np.testing.assert_allclose(coef[j], expected, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a certifiable tolerance does not warn
        path(X, y, Quadratic(), L1(1.0), lams=[lam], tol=1e-4)


def test_anderson_extrapolation_along_the_null_space_of_one_hot_columns_is_refused():
    # 58 rows: a numeric column and four one-hot columns of one factor (they sum to the intercept's column, so
    # the centred Gram is singular; its computed null space is indefinite at the rounding level). Anderson's
    # point drifted along it to 1.7e14, each step "lowering" the model by less than the model's own rounding;
    # every fit of LassoCV's refit strength then diverged. Bound: lam ||w||_1 <= P0.
    data = np.load(Path(__file__).parent / "data" / "imputed_onehot.npz")
    X, y = data["X"], data["y"]
    lam = 0.00468315407
    result = path(X, y, Quadratic(), L1(1.0), lams=[lam], tol=1e-4)
    assert result.dual_gaps[0] <= 1e-4 * result.gap_scale
    assert np.abs(result.coefs[0]).sum() <= result.gap_scale / lam


def test_a_given_grid_builds_the_penalty_once_and_skips_lambda_max(monkeypatch, data):
    """Issue 15: a single fit built the block penalty three times, fitted the unpenalized columns
    twice at tol 1e-12 and computed lambda_max with lams given. Now: one build, no separate fit
    of the unpenalized columns (the solve does it) and no lambda_max; the default grid needs
    lambda_max, hence one fit of the null state, shared with the path's start."""
    X, y = data
    groups = [np.arange(0, 3), np.arange(3, 6)]  # the other columns are unpenalized
    builds, null_fits = [], []
    real_build, real_null = path_module.as_block_penalty, path_module._null_state
    monkeypatch.setattr(
        path_module, "as_block_penalty", lambda *a, **k: builds.append(1) or real_build(*a, **k)
    )
    monkeypatch.setattr(path_module, "_null_state", lambda *a: null_fits.append(1) or real_null(*a))
    given = path(X, y, Quadratic(), GroupLasso(1.0, groups), [0.05], tol=1e-10)
    assert (len(builds), len(null_fits)) == (1, 0) and np.isnan(given.lambda_max)
    builds.clear()
    default = path(X, y, Quadratic(), GroupLasso(1.0, groups), n_lams=3, tol=1e-10)
    assert (len(builds), len(null_fits)) == (1, 1) and np.isfinite(default.lambda_max)
    # the start does not change the answer: both lie within their certified gaps of the optimum,
    # up to the rounding of two objectives (the certificate's floor, 64 eps |P| each)
    again = path(X, y, Quadratic(), GroupLasso(1.0, groups), [default.lams[-1]], tol=1e-10)
    rounding = 64 * np.finfo(np.float64).eps * (again.objectives[0] + default.objectives[-1])
    gaps = again.dual_gaps[0] + default.dual_gaps[-1]
    assert abs(again.objectives[0] - default.objectives[-1]) <= gaps + rounding
