"""Embedded data: the bundled loaders against scikit-learn, the generators against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.datasets
from hypothesis import given
from hypothesis import strategies as st

from normpen import datasets
from normpen.datasets import (
    gaussian_design,
    grouped_regression,
    load,
    orthogonal_design,
    sparse_regression,
)

# ---- bundled data sets -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_load_matches_scikit_learn_as_float64(name):
    data = load(name)
    X, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    assert data.X.dtype == np.float64 and data.y.dtype == np.float64
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert len(data.feature_names) == X.shape[1]
    assert data.task == datasets.DATASETS[name]
    if data.task == "classification":
        assert len(data.target_names) == len(np.unique(y))
        np.testing.assert_array_equal(np.unique(data.y), np.arange(len(data.target_names)))
    else:
        assert data.target_names == ()


def test_load_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; choose one of \\['breast_cancer'"):
        load("mnist")


# ---- designs ---------------------------------------------------------------------


def test_gaussian_design_has_the_ar1_covariance():
    rho, n = 0.6, 40_000
    X = gaussian_design(n, 5, correlation=rho, seed=1)
    expected = rho ** np.abs(np.subtract.outer(np.arange(5), np.arange(5)))
    # each entry of the sample covariance has standard error below sqrt(2/n) ~ 0.007: 0.03 is 4.2 of them
    # (a fixed seed of numpy's PCG64, the same draw on every machine)
    np.testing.assert_allclose(np.cov(X, rowvar=False), expected, atol=0.03)


def test_gaussian_design_without_correlation_is_standard_normal():
    X = gaussian_design(20_000, 4, seed=2)
    # standard errors sqrt(2/n) = 0.01 (variances; 0.007 off the diagonal) and 1/sqrt(n) = 0.007 (means): 0.05
    # is 5 of the first, 0.03 is 4.2 of the second
    np.testing.assert_allclose(np.cov(X, rowvar=False), np.eye(4), atol=0.05)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=0.03)


@given(n=st.integers(1, 30), p=st.integers(1, 12), rho=st.floats(-0.99, 0.99), seed=st.integers(0, 2**32 - 1))
def test_gaussian_design_shape_dtype_and_seeding(n, p, rho, seed):
    X = gaussian_design(n, p, rho, seed)
    assert X.shape == (n, p) and X.dtype == np.float64 and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, gaussian_design(n, p, rho, seed))
    np.testing.assert_array_equal(X, gaussian_design(n, p, rho, np.random.default_rng(seed)))


@given(p=st.integers(1, 15), extra=st.integers(0, 20), seed=st.integers(0, 1000))
def test_orthogonal_design_has_gram_n_identity(p, extra, seed):
    n = p + extra
    X = orthogonal_design(n, p, seed)
    assert X.shape == (n, p)
    # Householder QR loses orthogonality by ~n p eps <= 35 * 15 * eps ~ 1.2e-13
    np.testing.assert_allclose(X.T @ X / n, np.eye(p), atol=1e-12)


def test_orthogonal_design_least_squares_is_x_transpose_y_over_n():
    problem = sparse_regression(50, 8, 3, noise=1.0, design="orthogonal", seed=3)
    lstsq = np.linalg.lstsq(problem.X, problem.y, rcond=None)[0]
    # orthogonal columns (cond 1): 50-term sums of size <= |y| ~ 5, ~50 eps * 5 ~ 5e-14
    np.testing.assert_allclose(problem.X.T @ problem.y / 50, lstsq, atol=1e-12)


def test_different_seeds_give_different_draws():
    assert not np.array_equal(gaussian_design(5, 3, seed=0), gaussian_design(5, 3, seed=1))
    assert not np.array_equal(orthogonal_design(5, 3, seed=0), orthogonal_design(5, 3, seed=1))


# ---- regression problems -------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=8),
    data=st.data(),
    design=st.sampled_from(["gaussian", "orthogonal"]),
)
def test_grouped_regression_structure(sizes, data, design):
    n_active = data.draw(st.integers(0, len(sizes)))
    n = sum(sizes) + data.draw(st.integers(0, 10))
    problem = grouped_regression(
        n, sizes, n_active, noise=0.0, design=design, seed=data.draw(st.integers(0, 99))
    )
    p = sum(sizes)
    assert problem.X.shape == (n, p) and problem.y.shape == (n,) and problem.coef.shape == (p,)
    assert [g.size for g in problem.groups] == list(sizes)
    np.testing.assert_array_equal(np.concatenate(problem.groups), np.arange(p))
    assert len(problem.active_groups) == n_active
    for g, idx in enumerate(problem.groups):
        magnitudes = np.abs(problem.coef[idx])
        if g in problem.active_groups:
            assert np.all((magnitudes >= 1.0) & (magnitudes <= 3.0))
        else:
            assert np.all(magnitudes == 0)
    np.testing.assert_array_equal(problem.support, np.flatnonzero(problem.coef))
    np.testing.assert_allclose(problem.y, problem.X @ problem.coef, atol=1e-12)  # the same product: rounding


def test_noise_has_the_requested_standard_deviation():
    problem = sparse_regression(20_000, 5, 2, noise=0.7, seed=4)
    residual = problem.y - problem.X @ problem.coef
    # standard errors: 1/sqrt(2n) = 0.005 relative for the sd, 0.7/sqrt(n) = 0.005 for the mean: 6 of each
    assert residual.std() == pytest.approx(0.7, rel=0.03)
    assert residual.mean() == pytest.approx(0.0, abs=0.03)


def test_sparse_regression_has_singleton_groups_and_the_requested_support():
    problem = sparse_regression(40, 10, 4, seed=5)
    assert all(g.size == 1 for g in problem.groups)
    assert problem.support.size == 4
    np.testing.assert_array_equal(problem.active_groups, problem.support)


def test_generators_are_reproducible():
    a = grouped_regression(30, (2, 3), 1, noise=0.3, correlation=0.5, seed=11)
    b = grouped_regression(30, (2, 3), 1, noise=0.3, correlation=0.5, seed=11)
    for field in ("X", "y", "coef"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: gaussian_design(0, 3), ValueError, "n_samples must be >= 1"),
        (lambda: gaussian_design(3, 2.0), TypeError, "n_features must be an int"),
        (lambda: gaussian_design(3, True), TypeError, "n_features must be an int"),
        (lambda: gaussian_design(3, 2, correlation=1.0), ValueError, "strictly between -1 and 1"),
        (lambda: gaussian_design(3, 2, correlation=float("nan")), ValueError, "strictly between"),
        (lambda: orthogonal_design(3, 4), ValueError, "n_samples >= n_features"),
        (lambda: sparse_regression(10, 3, 4), ValueError, "n_informative must be at most n_features"),
        (lambda: sparse_regression(10, 3, 1, noise=-1.0), ValueError, "noise must be >= 0"),
        (lambda: sparse_regression(10, 3, 1, design="lattice"), ValueError, "'gaussian' or 'orthogonal'"),
        (
            lambda: sparse_regression(10, 3, 1, design="orthogonal", correlation=0.3),
            ValueError,
            "correlation=0",
        ),
        (lambda: grouped_regression(10, (), 0), ValueError, "non-empty sequence"),
        (lambda: grouped_regression(10, (2, 0), 1), ValueError, "each group size must be >= 1"),
        (lambda: grouped_regression(10, (2, 2), 3), ValueError, "at most the number of groups"),
        (lambda: grouped_regression(10, "23", 1), ValueError, "non-empty sequence"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
