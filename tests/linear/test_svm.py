"""Linear SVMs: dual CD against liblinear, libsvm and scipy; the hard margin against SVC and geometry."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from normpen.linear.solvers.svm import NotSeparableError, hard_margin_svm, linear_svm


@pytest.fixture(scope="module")
def centred():
    """200 samples and 10 standardised features of the bundled breast-cancer data."""
    X, y = load_breast_cancer(return_X_y=True)
    rows = np.random.default_rng(0).choice(len(y), 200, replace=False)
    return StandardScaler().fit_transform(X)[rows][:, :10], np.where(y[rows] == 1, 1.0, -1.0)


@pytest.fixture(scope="module")
def cancer(centred):
    """The same, shifted off-centre: the intercept has work to do."""
    X, y = centred
    return X + 2.0, y


def primal(X, y, w, b, lam, loss, sample_weight=None):
    a = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    slack = np.clip(1 - y * (X @ w + b), 0, None)
    return 0.5 * lam * w @ w + a @ (slack if loss == "hinge" else slack**2) / a.sum()


def assert_solves(result, X, y, lam, loss, reference_w, reference_b, sample_weight=None):
    """Same objective as the reference up to our certified gap, and w within the strong-convexity bound."""
    ours = primal(X, y, result.coef, result.intercept, lam, loss, sample_weight)
    ref = primal(X, y, reference_w, reference_b, lam, loss, sample_weight)
    assert ours == pytest.approx(result.objective, rel=1e-12)
    assert result.dual_gap >= -1e-12
    assert ours - ref <= result.dual_gap + 1e-12  # ref >= P*, ours - P* <= gap
    assert ref - ours <= 1e-6  # the reference is accurate too
    ref_suboptimality = ref - ours + result.dual_gap  # >= P(ref) - P*
    # P is lam-strongly convex in w: lam/2 ||w - w*||^2 <= P(w) - P*
    radius = np.sqrt(2 * result.dual_gap / lam) + np.sqrt(2 * max(ref_suboptimality, 0) / lam)
    assert np.linalg.norm(result.coef - reference_w) <= radius + 1e-9


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("lam", [1e-1, 1e-2])
def test_no_intercept_matches_liblinear_with_c_map(centred, loss, lam):
    X, y = centred
    n = len(y)
    result = linear_svm(X, y, lam, loss=loss, fit_intercept=False, tol=1e-7, random_state=0, max_iter=5000)
    C = 1 / (n * lam)
    ref = LinearSVC(C=C, loss=loss, fit_intercept=False, tol=1e-12, max_iter=200_000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
    assert result.intercept == 0.0
    assert_solves(result, X, y, lam, loss, ref.coef_.ravel(), 0.0)


@pytest.mark.parametrize("lam", [1e-1, 1e-2])
def test_hinge_with_unpenalized_intercept_matches_libsvm(cancer, lam):
    X, y = cancer
    s = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    result = linear_svm(X, y, lam, sample_weight=s, tol=1e-7, random_state=0, max_iter=3000)
    ref = SVC(kernel="linear", C=1 / (lam * s.sum()), tol=1e-10).fit(X, y, sample_weight=s)
    assert_solves(result, X, y, lam, "hinge", ref.coef_.ravel(), ref.intercept_[0], s)


def test_squared_hinge_with_intercept_matches_lbfgs_on_the_primal(cancer):
    X, y = cancer
    lam = 1e-2
    result = linear_svm(X, y, lam, loss="squared_hinge", tol=1e-8, random_state=0)

    def fun(z):
        w, b = z[:-1], z[-1]
        slack = np.clip(1 - y * (X @ w + b), 0, None)
        g = -2 * y * slack / len(y)
        return 0.5 * lam * w @ w + np.mean(slack**2), np.append(lam * w + X.T @ g, g.sum())

    ref = minimize(fun, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B", options={"gtol": 1e-12})
    assert_solves(result, X, y, lam, "squared_hinge", ref.x[:-1], ref.x[-1])
    assert result.intercept == pytest.approx(ref.x[-1], rel=1e-3)  # b is pinned by the loss curvature only


def test_integer_weights_equal_duplicated_samples(cancer):
    X, y = cancer
    counts = np.random.default_rng(2).integers(1, 4, size=len(y))
    weighted = linear_svm(X, y, 0.05, sample_weight=counts, tol=1e-10, random_state=0)
    repeated = linear_svm(np.repeat(X, counts, axis=0), np.repeat(y, counts), 0.05, tol=1e-10, random_state=0)
    assert weighted.objective == pytest.approx(repeated.objective, rel=1e-7)
    np.testing.assert_allclose(weighted.coef, repeated.coef, atol=1e-3)


def test_zero_weight_samples_are_ignored(cancer):
    X, y = cancer
    s = np.ones(len(y))
    s[:20] = 0
    flipped = y.copy()
    flipped[:20] *= -1
    a = linear_svm(X, y, 0.05, sample_weight=s, tol=1e-10, random_state=0)
    b = linear_svm(X, flipped, 0.05, sample_weight=s, tol=1e-10, random_state=0)
    c = linear_svm(X[20:], y[20:], 0.05, tol=1e-10, random_state=0)
    assert a.objective == pytest.approx(c.objective, rel=1e-8)
    assert b.objective == pytest.approx(c.objective, rel=1e-8)
    np.testing.assert_array_equal(a.dual_coef[:20], 0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_equals_dense_and_float32_keeps_dtype(cancer, fit_intercept):
    X, y = cancer
    X = np.where(np.abs(X - 2) > 1, X, 0.0)  # make it worth storing sparse
    dense = linear_svm(X, y, 0.05, fit_intercept=fit_intercept, tol=1e-10, random_state=0)
    sparse = linear_svm(sp.csr_matrix(X), y, 0.05, fit_intercept=fit_intercept, tol=1e-10, random_state=0)
    single = linear_svm(X.astype(np.float32), y, 0.05, fit_intercept=fit_intercept, tol=1e-6, random_state=0)
    assert sparse.objective == pytest.approx(dense.objective, rel=1e-8)
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-3)
    assert single.coef.dtype == np.float32 and dense.coef.dtype == np.float64
    assert single.objective == pytest.approx(dense.objective, rel=1e-4)


def test_dual_coefficients_rebuild_w_and_stay_in_the_box(cancer):
    X, y = cancer
    lam = 0.05
    result = linear_svm(X, y, lam, tol=1e-10, random_state=0)
    alpha = result.dual_coef
    assert np.all(alpha >= 0) and np.all(alpha <= 1 / (len(y) * lam) * (1 + 1e-12))
    assert abs(alpha @ y) <= 1e-6 * alpha.sum()
    np.testing.assert_allclose(X.T @ (alpha * y), result.coef, atol=1e-6)


def test_gap_stopping_respects_tol_and_warm_start_is_cheap(cancer):
    X, y = cancer
    loose = linear_svm(X, y, 0.01, tol=1e-2, random_state=0)
    tight = linear_svm(X, y, 0.01, tol=1e-8, random_state=0)
    p0 = 2 * min((y > 0).mean(), (y < 0).mean())  # hinge at w = 0 with the best constant intercept
    assert loose.dual_gap <= 1e-2 * p0 and tight.dual_gap <= 1e-8 * p0
    assert tight.gap_scale == pytest.approx(p0) and tight.converged
    assert loose.n_iter < tight.n_iter
    warm = linear_svm(X, y, 0.01, tol=1e-8, random_state=0, dual_init=tight.dual_coef)
    assert warm.n_iter < tight.n_iter / 2
    assert warm.objective == pytest.approx(tight.objective, rel=1e-7)


def test_unconverged_solve_warns_with_the_gap(cancer):
    X, y = cancer
    with pytest.warns(ConvergenceWarning, match="duality gap"):
        result = linear_svm(X, y, 1e-4, tol=1e-12, max_iter=3, random_state=0)
    assert result.n_iter == 3 and result.dual_gap > 1e-12 * result.gap_scale and not result.converged


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lam": 0.0}, ValueError, "lam"),
        ({"loss": "log"}, ValueError, "loss"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"dual_init": np.ones(3)}, ValueError, "dual_init"),
        ({"sample_weight": np.ones(3)}, ValueError, "sample_weight"),
    ],
)
def test_bad_arguments_raise_naming_them(cancer, kwargs, error, match):
    X, y = cancer
    args = {"lam": 0.1} | kwargs
    with pytest.raises(error, match=match):
        linear_svm(X, y, args.pop("lam"), **args)


def test_bad_labels_raise(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="-1, \\+1"):
        linear_svm(X, (y > 0).astype(float), 0.1)
    with pytest.raises(ValueError, match="both classes"):
        linear_svm(X, np.ones(len(y)), 0.1)
    with pytest.raises(ValueError, match="both classes"):
        linear_svm(X, y, 0.1, sample_weight=(y > 0).astype(float))


# ---- hard margin -------------------------------------------------------------------------------


def separable(n, p, seed, gap=0.3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    direction = rng.normal(size=p)
    score = X @ direction + 0.5
    keep = np.abs(score) > gap
    return X[keep], np.where(score[keep] > 0, 1.0, -1.0)


def test_hard_margin_one_dimension_closed_form():
    X = np.array([[-2.0], [-1.0], [3.0], [5.0]])
    y = np.array([-1.0, -1.0, 1.0, 1.0])
    result = hard_margin_svm(X, y)
    # the closest pair is -1 and 3: w = 2 / (3 - (-1)), boundary at their midpoint 1
    assert result.coef[0] == pytest.approx(0.5, abs=1e-12)
    assert result.intercept == pytest.approx(-0.5, abs=1e-12)
    assert result.margin == pytest.approx(2.0, abs=1e-12)
    np.testing.assert_array_equal(result.support, [1, 2])
    # alpha_2 = alpha_3 (sum alpha_i y_i = 0) and w = alpha_2 * 1 + alpha_3 * 3 = 0.5
    np.testing.assert_allclose(result.dual_coef, [0, 0.125, 0.125, 0], atol=1e-12)


@pytest.mark.parametrize(("n", "p"), [(60, 2), (80, 6), (25, 60)])
def test_hard_margin_matches_svc_with_huge_c(n, p):
    X, y = separable(n, p, seed=n + p)
    result = hard_margin_svm(X, y)
    ref = SVC(kernel="linear", C=1e10, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(result.coef, ref.coef_.ravel(), rtol=1e-5, atol=1e-6)
    assert result.intercept == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert result.margin == pytest.approx(1 / np.linalg.norm(ref.coef_), rel=1e-6)
    for name, value in result.kkt.items():
        assert value <= 1e-9, name
    assert abs(result.dual_gap) <= 1e-9 * result.coef @ result.coef
    margins = y * (X @ result.coef + result.intercept)
    assert margins.min() >= 1 - 1e-10
    np.testing.assert_allclose(margins[result.support], 1, atol=1e-10)


def test_hard_margin_without_intercept_and_sparse():
    X, y = separable(50, 4, seed=7)
    X = np.hstack([X, np.ones((len(y), 1))])  # a constant feature plays the (penalized) intercept
    dense = hard_margin_svm(X, y, fit_intercept=False)
    sparse = hard_margin_svm(sp.csr_matrix(X), y, fit_intercept=False)
    ref = SVC(kernel="linear", C=1e10, tol=1e-10).fit(X, y)  # libsvm always has an intercept: compare margins
    assert dense.intercept == 0.0
    assert dense.margin <= 1 / np.linalg.norm(ref.coef_) + 1e-9  # penalizing the offset can only shrink it
    assert np.min(y * (X @ dense.coef)) >= 1 - 1e-10
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-10)


def test_iris_setosa_versus_versicolor_is_separable_versicolor_versus_virginica_is_not():
    X, y = load_iris(return_X_y=True)
    first = y < 2
    result = hard_margin_svm(X[first], np.where(y[first] == 0, -1.0, 1.0))
    assert result.margin > 0 and result.kkt["primal_infeasibility"] <= 1e-10
    last = y > 0
    with pytest.raises(NotSeparableError, match="soft-margin") as info:
        hard_margin_svm(X[last], np.where(y[last] == 1, -1.0, 1.0))
    assert isinstance(info.value, ValueError)


def test_separable_only_with_an_offset_raises_without_intercept():
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([-1.0, -1.0, 1.0, 1.0])
    assert hard_margin_svm(X, y).margin == pytest.approx(0.5)
    with pytest.raises(NotSeparableError):
        hard_margin_svm(X, y, fit_intercept=False)


def test_duplicate_point_with_both_labels_is_not_separable():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(NotSeparableError):
        hard_margin_svm(X, np.array([1.0, -1.0, -1.0]))


@given(seed=st.integers(0, 2**16), n=st.integers(4, 30), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_hard_margin_beats_every_direction_in_the_plane(seed, n, scale):
    """In 2-D the best margin along direction u is (min_+ u.x - max_- u.x) / 2; ours is their maximum."""
    X, y = separable(n, 2, seed, gap=0.2)
    if len(np.unique(y)) < 2:
        return
    X = scale * X
    result = hard_margin_svm(X, y)
    step = 2 * np.pi / 20_000
    angles = np.arange(20_000) * step
    projected = X @ np.stack([np.cos(angles), np.sin(angles)])
    best = (projected[y > 0].min(axis=0) - projected[y < 0].max(axis=0)) / 2
    # the margin along u(theta) is R-Lipschitz in theta, R the largest norm of a sample
    lipschitz = np.linalg.norm(X, axis=1).max()
    assert result.margin >= best.max() * (1 - 1e-9)
    assert result.margin <= best.max() + lipschitz * step / 2 + 1e-12 * lipschitz
    for name, value in result.kkt.items():
        assert value <= 1e-8, name


def test_hard_margin_iteration_cap_is_validated_and_reported():
    X, y = separable(60, 3, seed=11)
    with pytest.raises(ValueError, match="max_iter"):
        hard_margin_svm(X, y, max_iter=0)
    with pytest.raises(RuntimeError, match="active-set iterations"):
        hard_margin_svm(X, y, max_iter=1)
