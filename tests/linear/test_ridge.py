"""Closed-form ridge path against scikit-learn, lstsq, brute-force leave-one-out and the hat matrix.

Tolerances: two float64 routes to the same closed form differ by ~cond * n * eps: cond(Xc^T V Xc + lam) <= 4.3
on make_data's problems and n <= 40 give ~4e-14 relative, ~1e-13 absolute at magnitudes <= 3, so rtol=1e-12,
atol=1e-13 (measured <= 9e-14 relative, <= 2.4e-15 absolute); float32 the same with eps32: rtol=atol=1e-4.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import Ridge, RidgeCV

from normpen.linear.solvers.ridge import ridge, ridge_path

LAMS = np.array([1e-3, 1e-2, 0.1, 1.0, 10.0])


def make_data(n=40, p=6, k=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + rng.normal(size=p)  # off-centre columns exercise the intercept
    coef = rng.normal(size=(p,) if k is None else (p, k))
    y = X @ coef + 0.5 * rng.normal(size=(n,) if k is None else (n, k)) + 3.0
    return X, y, rng.uniform(0.2, 2.0, size=n)


def augmented_lstsq(X, y, lam, v, fit_intercept=True):
    """Ridge as one least-squares problem: [sqrt(v)[X 1]; sqrt(lam)[I 0]] [w; b] = [sqrt(v) y; 0]."""
    n, p = X.shape
    M = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    q = M.shape[1]
    penalty_rows = np.sqrt(lam) * np.eye(p, q)
    A = np.vstack([np.sqrt(v)[:, None] * M, penalty_rows])
    Y = y.reshape(n, -1)
    b = np.vstack([np.sqrt(v)[:, None] * Y, np.zeros((p, Y.shape[1]))])
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    return sol[:p], (sol[p] if fit_intercept else np.zeros(Y.shape[1]))


def normal_equations(X, y, lam, v):
    """Ridge from (Xc^T V Xc + lam I) w = Xc^T V yc, well conditioned when lam is large (lstsq is not)."""
    x_mean, y_mean = v @ X, v @ y
    Xc = X - x_mean
    coef = np.linalg.solve(Xc.T @ (v[:, None] * Xc) + lam * np.eye(X.shape[1]), Xc.T @ (v * (y - y_mean)))
    return coef, y_mean - x_mean @ coef


def test_matches_sklearn_ridge_with_alpha_map_and_weights():
    X, y, s = make_data()
    path = ridge_path(X, y, LAMS, sample_weight=s)
    for lam, coef, intercept in zip(LAMS, path.coefs, path.intercepts, strict=True):
        ref = Ridge(alpha=lam * s.sum()).fit(X, y, sample_weight=s)
        np.testing.assert_allclose(coef, ref.coef_, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-12, atol=1e-13)


def test_unweighted_map_is_alpha_over_n():
    X, y, _ = make_data()
    solution = ridge(X, y, 0.25)
    coef, intercept = solution.coef, solution.intercept
    ref = Ridge(alpha=0.25 * X.shape[0]).fit(X, y)
    np.testing.assert_allclose(coef, ref.coef_, rtol=1e-12, atol=1e-13)
    assert intercept == pytest.approx(ref.intercept_, rel=1e-12, abs=1e-13)
    assert isinstance(intercept, float)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_multi_output_matches_augmented_lstsq(fit_intercept):
    X, y, s = make_data(k=3)
    v = s / s.sum()
    path = ridge_path(X, y, LAMS, sample_weight=s, fit_intercept=fit_intercept)
    assert path.coefs.shape == (len(LAMS), X.shape[1], 3)
    assert path.intercepts.shape == (len(LAMS), 3)
    for lam, coef, intercept in zip(LAMS, path.coefs, path.intercepts, strict=True):
        ref_coef, ref_intercept = augmented_lstsq(X, y, lam, v, fit_intercept)
        np.testing.assert_allclose(coef, ref_coef, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(intercept, ref_intercept, rtol=1e-12, atol=1e-13)


def test_leave_one_out_equals_brute_force_refits_with_weights():
    """Deleting sample i's term keeps sklearn's alpha = lam * sum(s) fixed; refit with sklearn."""
    X, y, s = make_data(n=15, p=4)
    path = ridge_path(X, y, LAMS, sample_weight=s)
    v = s / s.sum()
    for lam, loo_mse in zip(LAMS, path.loo_mse, strict=True):
        loo_sq = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            ref = Ridge(alpha=lam * s.sum()).fit(X[keep], y[keep], sample_weight=s[keep])
            loo_sq[i] = (y[i] - ref.predict(X[i : i + 1])[0]) ** 2
        assert loo_mse == pytest.approx(v @ loo_sq, rel=1e-12)  # module docstring (measured 2.4e-15)


def test_leave_one_out_matches_sklearn_ridgecv():
    X, y, _ = make_data(n=30, p=5, k=2)
    n = X.shape[0]
    path = ridge_path(X, y, LAMS)
    ref = RidgeCV(alphas=LAMS * n, store_cv_results=True).fit(X, y)
    # cv_results_ has shape (n, k, n_alphas): squared LOO errors
    np.testing.assert_allclose(path.loo_mse, ref.cv_results_.mean(axis=0).T, rtol=1e-12)  # measured 8e-15
    assert path.lams[path.best_index()] * n == pytest.approx(ref.alpha_, rel=1e-15)  # the same grid point


def test_gcv_and_dof_match_explicit_hat_matrix():
    X, y, s = make_data(n=20, p=5)
    v = s / s.sum()
    path = ridge_path(X, y, LAMS, sample_weight=s)
    n, p = X.shape
    M = np.hstack([np.ones((n, 1)), X])
    for lam, gcv, dof, loo in zip(LAMS, path.gcv, path.dof, path.loo_mse, strict=True):
        penalty = lam * np.diag([0.0] + [1.0] * p)
        hat = M @ np.linalg.solve(M.T @ (v[:, None] * M) + penalty, M.T * v)  # y -> fitted values
        residual = y - hat @ y
        # GCV and LOO divide by (1 - h) >= 0.7 here: the module docstring's 1e-12 (measured <= 9e-15)
        assert dof == pytest.approx(np.trace(hat), rel=1e-12)
        assert gcv == pytest.approx((v @ residual**2) / (1 - np.trace(hat) / n) ** 2, rel=1e-12)
        assert loo == pytest.approx(v @ (residual / (1 - np.diag(hat))) ** 2, rel=1e-12)


@pytest.mark.parametrize("shape", [(40, 6), (8, 20)], ids=["tall", "wide"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_route_matches_dense(shape, fit_intercept):
    rng = np.random.default_rng(3)
    X = sp.random(*shape, density=0.4, random_state=4, format="csr") + 0
    X.data += 1.0
    y = rng.normal(size=shape[0])
    s = rng.uniform(0.5, 2, size=shape[0])
    dense = ridge_path(X.toarray(), y, LAMS, sample_weight=s, fit_intercept=fit_intercept)
    sparse = ridge_path(X.tocsc(), y, LAMS, sample_weight=s, fit_intercept=fit_intercept)
    for name in ("coefs", "intercepts", "loo_mse", "gcv", "dof"):
        # the wide design's LOO divides by 1 - h_ii, small at lam = 1e-3 with p > n: measured 1.4e-12 there,
        # <= 5e-14 elsewhere; 1e-10 leaves 70x
        np.testing.assert_allclose(getattr(sparse, name), getattr(dense, name), rtol=1e-10, atol=1e-13)


def test_float32_stays_float32_and_agrees():
    X, y, s = make_data()
    p64 = ridge_path(X, y, LAMS, sample_weight=s)
    p32 = ridge_path(X.astype(np.float32), y.astype(np.float32), LAMS, sample_weight=s)
    for name in ("coefs", "intercepts", "loo_mse", "gcv"):
        assert getattr(p32, name).dtype == np.float32
        # eps32 * cond 4.3 * n 40 ~ 2e-5 relative, ~6e-5 absolute at magnitudes <= 3 (measured <= 7.5e-6,
        # 4.5e-7)
        np.testing.assert_allclose(getattr(p32, name), getattr(p64, name), rtol=1e-4, atol=1e-4)


def test_lambda_zero_is_minimum_norm_least_squares_and_interpolation_has_no_loo():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(6, 10)), rng.normal(size=6)
    path = ridge_path(X, y, [0.0, 1.0], fit_intercept=False)
    np.testing.assert_allclose(path.coefs[0], np.linalg.pinv(X) @ y, atol=1e-13)  # cond(X) 5.7: ~10 eps
    assert np.isinf(path.loo_mse[0]) and np.isinf(path.gcv[0])
    assert np.isfinite(path.loo_mse[1]) and np.isfinite(path.gcv[1])


def test_zero_weight_sample_is_ignored_by_fit_and_errors():
    X, y, s = make_data(n=25)
    s[3] = 0.0
    y_moved = y.copy()
    y_moved[3] += 100.0
    a = ridge_path(X, y, LAMS, sample_weight=s)
    b = ridge_path(X, y_moved, LAMS, sample_weight=s)
    keep = np.arange(25) != 3
    c = ridge_path(X[keep], y[keep], LAMS, sample_weight=s[keep])
    # a zero weight times y is exactly zero (measured bit-equal); dropping the row reorders sums (docstring)
    np.testing.assert_allclose(a.coefs, b.coefs, atol=1e-12)
    np.testing.assert_allclose(a.loo_mse, b.loo_mse, rtol=1e-12)
    np.testing.assert_allclose(a.coefs, c.coefs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a.loo_mse, c.loo_mse, rtol=1e-12)


def test_best_index_per_target_and_criteria():
    X, y, _ = make_data(k=2)
    path = ridge_path(X, y, np.geomspace(1e-4, 1e2, 20))
    assert path.best_index("gcv") == np.argmin(path.gcv.mean(axis=1))
    np.testing.assert_array_equal(path.best_index(per_target=True), np.argmin(path.loo_mse, axis=0))
    with pytest.raises(ValueError, match="criterion"):
        path.best_index("aic")


@given(
    n=st.integers(2, 12),
    p=st.integers(1, 12),
    lam=st.floats(1e-6, 1e4),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes_and_scales_against_normal_equations(n, p, lam, scale, seed):
    rng = np.random.default_rng(seed)
    X, y = scale * rng.normal(size=(n, p)), rng.normal(size=n)
    s = rng.uniform(0.1, 1, size=n)
    lam_scaled = lam * scale**2  # keeps the problem equally conditioned at every scale
    solution = ridge(X, y, lam_scaled, sample_weight=s)
    coef, intercept = solution.coef, solution.intercept
    ref_coef, ref_intercept = normal_equations(X, y, lam_scaled, s / s.sum())
    # the reference's normal equations run at cond <= (||Xc||^2 + lam) / lam: up to ~1e8 at lam = 1e-6 with
    # ||Xc||^2 <= ~1e2 (scale-free by lam_scaled), so ~cond * eps ~ 2e-8 relative; 1e-6 leaves 50x
    np.testing.assert_allclose(coef * scale, ref_coef * scale, rtol=1e-6, atol=1e-8)
    assert intercept == pytest.approx(ref_intercept, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lams": [-1.0]}, "lams"),
        ({"lams": [np.nan]}, "lams"),
        ({"lams": []}, "lams"),
        ({"sample_weight": np.ones(3)}, "sample_weight"),
        ({"sample_weight": -np.ones(40)}, "sample_weight"),
        ({"sample_weight": np.zeros(40)}, "sample_weight"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, match):
    X, y, _ = make_data()
    args = {"lams": LAMS} | kwargs
    with pytest.raises(ValueError, match=match):
        ridge_path(X, y, args.pop("lams"), **args)


def test_single_lambda_is_validated_by_its_own_name():
    X, y, _ = make_data()
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ridge(X, y, -0.1)


def test_bad_data_raise():
    X, y, _ = make_data()
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ridge_path(X_nan, y, LAMS)
    with pytest.raises(ValueError, match="inconsistent"):
        ridge_path(X, y[:-1], LAMS)
    y_inf = y.copy()
    y_inf[0] = np.inf
    with pytest.raises(ValueError, match="y"):
        ridge_path(X, y_inf, LAMS)
