"""Coordinate descent against scikit-learn, scipy and the optimality conditions.

Tolerances: a certified gap g bounds ||w - w*|| by sqrt(2 g / mu) (strong convexity); on the regression design
mu = 0.088 (the smallest eigenvalue of Xc^T Xc / n) and P0 = 3.8, so 6.6e-5 at g = 1e-10 P0 and 6.6e-6 at
1e-12 P0. CD's support polish lands far inside that (measured <= 1e-13 against scikit-learn's CD); a tolerance
below the certificate says so and gives the measured distance.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from sklearn import linear_model
from sklearn.exceptions import ConvergenceWarning

from normpen._array import soft_threshold
from normpen.linear import path
from normpen.linear.datafits import Hinge, Logistic, Multinomial, MultitaskQuadratic, Quadratic, SquaredHinge
from normpen.linear.solvers import cd
from normpen.linear.solvers._sweeps import epoch_coordinates
from normpen.linear.solvers.cd import coordinate_descent
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.sparse_group_lasso import SparseGroupLasso


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    n, p = 60, 30
    X = rng.standard_normal((n, p)) + 0.5
    w = np.zeros(p)
    w[:4] = [2.0, -1.5, 1.0, 0.5]
    y = X @ w + 0.3 * rng.standard_normal(n) + 1.0
    lam_max = np.max(np.abs((X - X.mean(0)).T @ (y - y.mean()))) / n
    return X, y, lam_max


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(1)
    n, p = 80, 12
    X = rng.standard_normal((n, p))
    score = X[:, 0] - 2 * X[:, 1] + 0.5 * rng.standard_normal(n) + 0.3
    return X, np.where(score > 0, 1.0, -1.0)


def _lasso_objective(X, y, coef, intercept, lam, sample_weight=None):
    s = np.ones(len(y)) if sample_weight is None else sample_weight
    return 0.5 * np.sum(s * (y - X @ coef - intercept) ** 2) / s.sum() + lam * np.abs(coef).sum()


@pytest.mark.parametrize("kind", ["dense", "csc", "csr", "float32"])
@pytest.mark.parametrize("fraction", [0.5, 0.05])
def test_lasso_matches_scikit_learn(regression, kind, fraction):
    X, y, lam_max = regression
    lam = fraction * lam_max
    reference = linear_model.Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(X, y)
    design = {"dense": X, "csc": sp.csc_matrix(X), "csr": sp.csr_matrix(X), "float32": X.astype(np.float32)}[
        kind
    ]
    if kind == "float32":  # 1e-10 is below what float32 objectives certify (64 eps32 ~ 8e-6): a warning
        with pytest.warns(UserWarning, match="below the relative duality gap float32 can certify"):
            ours = coordinate_descent(design, y, Quadratic(), L1(lam), tol=1e-10)
    else:
        ours = coordinate_descent(design, y, Quadratic(), L1(lam), tol=1e-10)
    expected = _lasso_objective(X, y, reference.coef_, reference.intercept_, lam)
    reached = _lasso_objective(X, y, ours.coef.astype(float), ours.intercept, lam)
    # float64: P(w) - P* <= the gap 1e-10 P0, 4e-10 of P* >= 1; float32 certifies 64 eps32 P0 ~ 8e-6 P0 at
    # worst, measured 2.8e-7 P0 and objectives within 1.1e-13; 1e-5 is that measured floor's room, not a bound
    rel = 1e-5 if kind == "float32" else 1e-9
    assert reached == pytest.approx(expected, rel=rel)
    assert ours.coef.dtype == (np.float32 if kind == "float32" else np.float64)
    # below the certificate (module docstring; float32's gap gives 4.9e-3): measured 1e-13 and 2.5e-7
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-3 if kind == "float32" else 1e-6)


def test_lasso_with_sample_weights_and_no_intercept_matches_scikit_learn(regression):
    X, y, lam_max = regression
    s = np.random.default_rng(2).uniform(0.2, 3, len(y))
    lam = 0.1 * lam_max
    for fit_intercept in (True, False):
        reference = linear_model.Lasso(alpha=lam, tol=1e-12, max_iter=100_000, fit_intercept=fit_intercept)
        reference.fit(X, y, sample_weight=s)
        ours = coordinate_descent(
            X, y, Quadratic(), L1(lam), sample_weight=s, fit_intercept=fit_intercept, tol=1e-10
        )
        # below the certificate 6.6e-5 (module docstring): the support polish makes both exact
        np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-6)
        assert ours.intercept == pytest.approx(reference.intercept_, abs=1e-6)


def test_sample_weights_equal_repeated_samples(regression):
    X, y, lam_max = regression
    counts = np.random.default_rng(3).integers(0, 3, len(y))
    weighted = coordinate_descent(X, y, Quadratic(), L1(0.1 * lam_max), sample_weight=counts, tol=1e-12)
    repeated = coordinate_descent(
        np.repeat(X, counts, 0), np.repeat(y, counts), Quadratic(), L1(0.1 * lam_max), tol=1e-12
    )
    # two solves at gap 1e-12 P0: the certificate allows 1.3e-5; both end in the exact support polish
    np.testing.assert_allclose(weighted.coef, repeated.coef, atol=1e-9)


@pytest.mark.parametrize("l1_ratio", [0.2, 0.7])
def test_elastic_net_matches_scikit_learn(regression, l1_ratio):
    X, y, lam_max = regression
    lam = 0.2 * lam_max
    reference = linear_model.ElasticNet(alpha=lam, l1_ratio=l1_ratio, tol=1e-12, max_iter=100_000).fit(X, y)
    ours = coordinate_descent(X, y, Quadratic(), ElasticNet(lam, l1_ratio), tol=1e-10)
    # the elastic net's ridge part raises mu; still below the certificate, measured as exact (module
    # docstring)
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-7)
    assert ours.intercept == pytest.approx(reference.intercept_, abs=1e-7)


def test_positive_lasso_matches_scikit_learn(regression):
    X, y, lam_max = regression
    y = y - 3 * X[:, 5]
    reference = linear_model.Lasso(alpha=0.05 * lam_max, positive=True, tol=1e-12, max_iter=100_000).fit(X, y)
    ours = coordinate_descent(X, y, Quadratic(), L1(0.05 * lam_max), positive=True, tol=1e-10)
    assert np.all(ours.coef >= 0)
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-7)  # as above: below the certificate


def test_multitask_group_lasso_matches_scikit_learn(regression):
    X, _, _ = regression
    rng = np.random.default_rng(4)
    Y = X[:, :3] @ rng.standard_normal((3, 4)) + 0.2 * rng.standard_normal((len(X), 4))
    reference = linear_model.MultiTaskLasso(alpha=0.1, tol=1e-12, max_iter=100_000).fit(X, Y)
    ours = coordinate_descent(
        X, Y, MultitaskQuadratic(), GroupLasso(0.1, "rows", weights=np.ones(X.shape[1])), tol=1e-10
    )
    # below the certificate (module docstring): both CDs end on the exact row support
    np.testing.assert_allclose(ours.coef, reference.coef_.T, atol=1e-6)
    np.testing.assert_allclose(ours.intercept, reference.intercept_, atol=1e-6)


def _logistic_objective(X, y, coef, intercept, penalty):
    return np.mean(np.logaddexp(0, -y * (X @ coef + intercept))) + float(penalty.value(coef))


@pytest.mark.parametrize("penalty", [L1(0.02), L2(0.05), ElasticNet(0.03, 0.5)], ids=["l1", "l2", "en"])
def test_logistic_matches_scikit_learn(classification, penalty):
    X, y = classification
    n = len(y)
    if isinstance(penalty, L2):
        reference = linear_model.LogisticRegression(C=1 / (n * penalty.lam), tol=1e-12, max_iter=10_000)
    else:
        ratio = 1.0 if isinstance(penalty, L1) else penalty.l1_ratio
        reference = linear_model.LogisticRegression(
            C=1 / (n * penalty.lam), l1_ratio=ratio, solver="saga", tol=1e-12, max_iter=100_000
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(X, y)
    ours = coordinate_descent(X, y, Logistic(), penalty, tol=1e-10)
    expected = _logistic_objective(X, y, reference.coef_.ravel(), reference.intercept_[0], penalty)
    reached = _logistic_objective(X, y, ours.coef, ours.intercept, penalty)
    # ours <= P* + gap <= reference + 1e-10 P0 (P0 = log 2), plus the objective's rounding (80 eps ~ 2e-14)
    assert reached <= expected + 1e-10 * ours.gap_scale + 1e-13
    # saga's own accuracy is not certified: measured within 6e-12 of ours
    assert reached == pytest.approx(expected, rel=1e-6)


def test_multinomial_matches_scikit_learn(classification):
    X, _ = classification
    rng = np.random.default_rng(5)
    labels = np.argmax(X[:, :3] + 0.7 * rng.standard_normal((len(X), 3)), axis=1)
    lam = 0.02
    reference = linear_model.LogisticRegression(C=1 / (len(X) * lam), tol=1e-12, max_iter=10_000).fit(
        X, labels
    )
    ours = coordinate_descent(X, labels, Multinomial(), L2(lam), tol=1e-12)

    def objective(W, b):
        Z = X @ W + b
        return np.mean(np.log(np.exp(Z).sum(1)) - Z[np.arange(len(X)), labels]) + 0.5 * lam * np.sum(W**2)

    # ours <= P* + 1e-12 P0 (P0 = log 3) plus rounding (80 eps): 1.1e-12 + 2e-14 (measured 5.3e-13)
    assert objective(ours.coef, ours.intercept) <= objective(reference.coef_.T, reference.intercept_) + 2e-12
    # mu >= lam = 0.02 off the softmax's shift: ours within sqrt(2 * 1.1e-12 / 0.02) = 1.05e-5; lbfgs stops on
    # ftol 64 eps, ~sqrt(2 * 64 eps / 0.02) ~ 1.2e-6 (measured 2.2e-6, which a picked 1e-5 left 4.6x room)
    np.testing.assert_allclose(ours.coef, reference.coef_.T, atol=2e-5)
    np.testing.assert_allclose(ours.intercept, reference.intercept_ - reference.intercept_.mean(), atol=2e-5)
    assert np.sum(ours.intercept) == pytest.approx(0, abs=1e-14)  # 3 terms <= 1: a few ulp (measured 1.1e-16)


def test_squared_hinge_l1_minimises_its_objective(classification):
    """Checked against scipy on the smooth reformulation w = u - v, u, v >= 0 (bound-constrained L-BFGS)."""
    X, y = classification
    lam = 0.02
    ours = coordinate_descent(X, y, SquaredHinge(), L1(lam), tol=1e-12)
    p = X.shape[1]

    def objective(theta):
        w, b = theta[:p] - theta[p : 2 * p], theta[-1]
        slack = np.maximum(0, 1 - y * (X @ w + b))
        value = np.mean(slack**2) + lam * theta[: 2 * p].sum()
        grad_z = -2 * y * slack / len(y)
        gw = X.T @ grad_z
        return value, np.concatenate([gw + lam, -gw + lam, [grad_z.sum()]])

    bounds = [(0, None)] * (2 * p) + [(None, None)]
    reference = minimize(
        objective,
        np.zeros(2 * p + 1),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 50_000},
    )
    reached = objective(
        np.concatenate([np.maximum(ours.coef, 0), np.maximum(-ours.coef, 0), [ours.intercept]])
    )[0]
    # ours <= P* + 1e-12 P0 (P0 = 1), L-BFGS-B's value >= P*; 1e-9 adds its objective's rounding with room
    assert reached <= reference.fun + 1e-9


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_sparse_group_lasso_satisfies_its_kkt_conditions(regression, rho):
    r"""Stationarity per group, to the accuracy the duality gap (or its rounding floor) certifies.

    With :math:`\mu` and :math:`s` the extreme eigenvalues of the centred
    :math:`X^\top X/n`, a gap :math:`\epsilon` bounds the gradient error by
    :math:`\sqrt{2s\epsilon}` and the coefficient error by
    :math:`r = \sqrt{2\epsilon/\mu}` (strong convexity), hence the direction
    :math:`w_g/\|w_g\|` error by :math:`2r/(\|w_g\| - r)`.
    """
    X, y, lam_max = regression
    groups = [np.arange(i, i + 5) for i in range(0, 30, 5)]
    lam, beta = 0.1 * lam_max, 0.1 * lam_max * (1 - rho) * np.sqrt(5)
    ours = coordinate_descent(X, y, Quadratic(), SparseGroupLasso(lam, groups, rho), tol=1e-12)
    residual = y - X @ ours.coef - ours.intercept
    gradient = -(X.T @ residual) / len(y)
    centred = X - X.mean(axis=0)
    eigenvalues = np.linalg.eigvalsh(centred.T @ centred / len(y))
    gap = max(ours.dual_gap, 64 * np.finfo(float).eps * ours.objective)  # the certificate's rounding floor
    gradient_error = np.sqrt(2 * eigenvalues[-1] * gap)
    coef_error = np.sqrt(2 * gap / eigenvalues[0])
    assert abs(residual.mean()) < 1e-12  # the intercept is exact: n eps |r| ~ 1.3e-14
    for g in groups:
        w, grad = ours.coef[g], gradient[g]
        excess = np.sign(-grad) * np.maximum(np.abs(grad) - lam * rho, 0)
        if np.all(w == 0):
            assert np.linalg.norm(excess) <= beta + np.sqrt(5) * gradient_error
        else:
            # -grad = lam*rho*s + beta*w/||w||, s in the subdifferential of |.|
            l1_part = -grad - beta * w / np.linalg.norm(w)
            atol = gradient_error + beta * 2 * coef_error / (np.linalg.norm(w) - coef_error)
            nonzero = w != 0
            np.testing.assert_allclose(l1_part[nonzero], lam * rho * np.sign(w[nonzero]), rtol=0, atol=atol)
            assert np.all(np.abs(l1_part[~nonzero]) <= lam * rho + atol)


def test_lasso_kkt_and_gap_at_exit(regression):
    X, y, lam_max = regression
    lam = 0.05 * lam_max
    tol = 1e-6
    ours = coordinate_descent(X, y, Quadratic(), L1(lam), tol=tol)
    assert ours.converged and ours.dual_gap <= tol * ours.gap_scale
    residual = y - X @ ours.coef - ours.intercept
    correlation = X.T @ residual / len(y)
    support = ours.coef != 0
    # the tolerance on the relative gap bounds how far the conditions can be from exact
    slack = np.sqrt(2 * ours.dual_gap * np.max(np.sum((X - X.mean(0)) ** 2, 0) / len(y)))
    assert np.all(np.abs(correlation[~support]) <= lam + slack)
    # + 1e-12: the rounding of X^T r / n, n eps max|x| |r| ~ 1e-13
    np.testing.assert_allclose(correlation[support], lam * np.sign(ours.coef[support]), atol=slack + 1e-12)
    assert ours.gap_scale == pytest.approx(0.5 * np.var(y), rel=1e-13)  # 60-term sums: 60 eps


def test_weighted_lasso_leaves_zero_weight_features_unpenalized(regression):
    X, y, lam_max = regression
    weights = np.ones(X.shape[1])
    weights[[7, 8]] = 0
    ours = coordinate_descent(X, y, Quadratic(), L1(2 * lam_max, weights=weights), tol=1e-12)
    residual = y - X @ ours.coef - ours.intercept
    # each CD sweep minimises exactly along an unpenalized coordinate; the certificate alone bounds n times
    # the gradient by n sqrt(2 s gap) = 2.8e-4 (s = 2.87)
    np.testing.assert_allclose(X[:, [7, 8]].T @ residual, 0, atol=1e-9)
    assert np.all(ours.coef[np.flatnonzero(weights)] == 0)
    assert ours.dual_gap <= 1e-12 * ours.gap_scale


@pytest.mark.parametrize("options", [dict(screening=False), dict(anderson=0), dict(ws_start=1000)])
def test_options_change_the_route_not_the_solution(regression, options):
    X, y, lam_max = regression
    base = coordinate_descent(X, y, Quadratic(), L1(0.02 * lam_max), tol=1e-12)
    other = coordinate_descent(X, y, Quadratic(), L1(0.02 * lam_max), tol=1e-12, **options)
    # the certificate allows 1.3e-5 (module docstring); every route ends in the exact support polish
    np.testing.assert_allclose(other.coef, base.coef, atol=1e-9)


def test_warm_start_is_used(regression):
    X, y, lam_max = regression
    cold = coordinate_descent(X, y, Quadratic(), L1(0.05 * lam_max), tol=1e-10)
    warm = coordinate_descent(
        X, y, Quadratic(), L1(0.05 * lam_max), tol=1e-10, coef_init=cold.coef, intercept_init=cold.intercept
    )
    assert warm.n_iter == 0
    np.testing.assert_array_equal(warm.coef, cold.coef)  # no iteration: the start is returned as it was


def test_warm_start_leaves_coef_init_unchanged(regression):
    X, y, lam_max = regression
    start = np.full(X.shape[1], 0.1)
    coordinate_descent(X, y, Quadratic(), L1(0.05 * lam_max), coef_init=start)
    np.testing.assert_array_equal(start, np.full(X.shape[1], 0.1))


@pytest.mark.parametrize("kind", ["group lasso", "multinomial"])
def test_single_precision_updates_keep_the_certificate(regression, classification, monkeypatch, kind):
    """Wide working sets update the gradient from a float32 copy of Q: same solution, same certified gap."""
    if kind == "group lasso":
        X, y, lam_max = regression
        args = (X, y, Quadratic(), GroupLasso(0.1 * lam_max, [np.arange(i, i + 5) for i in range(0, 30, 5)]))
    else:
        X, _ = classification
        labels = np.argmax(X[:, :3] + 0.7 * np.random.default_rng(5).standard_normal((len(X), 3)), axis=1)
        # blocks of two features (six coefficients): the per-output Gram model, whose sweeps read Q
        args = (X, labels, Multinomial(), GroupLasso(0.03, [np.arange(i, i + 6) for i in range(0, 36, 6)]))
    double = coordinate_descent(*args, tol=1e-10)
    monkeypatch.setattr(cd, "_SINGLE_PRECISION_WIDTH", 1)
    single = coordinate_descent(*args, tol=1e-10)
    assert single.converged and single.dual_gap <= 1e-10 * single.gap_scale
    # both certified at 1e-10 P0: sqrt(2e-10 * 3.8 / 0.088) = 9.3e-5 each (the multinomial's P0 and mu give
    # less); measured 7.4e-6 for the group lasso, which a picked 1e-5 left 1.4x room
    np.testing.assert_allclose(single.coef, double.coef, atol=2e-4)


def test_convergence_warning_carries_the_gap(regression):
    X, y, lam_max = regression
    with pytest.warns(ConvergenceWarning, match=r"duality gap \d\.\d+e[-+]\d+ > tol"):
        result = coordinate_descent(X, y, Quadratic(), L1(1e-4 * lam_max), tol=1e-15, max_iter=1)
    assert not result.converged and result.dual_gap > 0


@pytest.mark.parametrize(
    ("X", "y", "datafit", "message"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), np.array([1.0, 2.0]), Quadratic(), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), np.array([1.0, 2.0]), Quadratic(), "infinity"),
        (np.eye(2), np.array([1.0, np.nan]), Quadratic(), "NaN"),
        (np.eye(2), np.array([0.0, 1.0]), Logistic(), "-1, \\+1"),
        (np.eye(2), np.array([-1.0, 1.0]), Hinge(), "differentiable"),
        (np.eye(3), np.array([-1.0, 1.0]), Quadratic(), "inconsistent numbers of samples"),
    ],
)
def test_bad_input_is_refused(X, y, datafit, message):
    with pytest.raises(ValueError, match=message):
        coordinate_descent(X, y, datafit, L1(0.1))


def test_groups_that_do_not_fit_x_are_refused(regression):
    X, y, _ = regression
    with pytest.raises(ValueError, match="do not fit X"):
        coordinate_descent(X, y, Quadratic(), GroupLasso(0.1, [np.arange(25, 35)]))


def test_newton_steps_reuse_the_curvature_while_it_stays_put(classification, monkeypatch):
    """Logistic Newton steps keep their working set's Gram matrix: fewer Grams, same certificate."""
    X, y = classification
    grams = []
    weighted_gram = cd.Problem.weighted_gram
    monkeypatch.setattr(
        cd.Problem, "weighted_gram", lambda *a, **k: grams.append(1) or weighted_gram(*a, **k)
    )
    reused = coordinate_descent(X, y, Logistic(), L1(0.01), tol=1e-10)
    reused_grams = len(grams)
    monkeypatch.setattr(cd, "_CURVATURE_DRIFT", 0.0)  # any change of the curvature rebuilds the model
    grams.clear()
    rebuilt = coordinate_descent(X, y, Logistic(), L1(0.01), tol=1e-10)
    assert reused.converged and rebuilt.converged
    assert reused_grams < len(grams)
    # both within their gaps of the optimum P*, so of each other; plus the objectives' rounding (64 eps |P|)
    bound = max(reused.dual_gap, rebuilt.dual_gap) + 64 * np.finfo(np.float64).eps * abs(rebuilt.objective)
    assert abs(reused.objective - rebuilt.objective) <= bound


@pytest.mark.parametrize("positive", [False, True])
def test_the_compiled_epochs_threshold_as_the_array_formula(positive):
    """One coordinate epoch from 0 with Q = I and gradient -z moves each b_j to S_1(z_j): normpen._array's
    soft_threshold, on the extreme values too."""
    z = np.array(
        [-1e300, -3.0, -1.0 - 2.2e-16, -1.0, -0.5, -1e-300, 0.0, 0.5, 1.0, 1.0 + 2.2e-16, 3.0, 1e300]
    )
    Q, ones = np.eye(z.size), np.ones(z.size)
    b, grad = np.zeros(z.size), -z
    epoch_coordinates(Q, grad, b, ones, ones, ones, positive)
    # b - grad * 1 = z exactly, then the same operations: z - t, z + t (the array's -(|z| - t), whose
    # negation is exact) or 0, times 1: bit equal
    np.testing.assert_array_equal(b, soft_threshold(z, 1.0, positive))


_WHOLE_HESSIAN = Multinomial.hessian_factors


def _diagonal_hessian(self, y, z, weights):
    """The multinomial's Hessian without its cross-class terms: cd falls back to its per-output Gram model."""
    D, V = _WHOLE_HESSIAN(self, y, z, weights)
    return D - V * V, None


@pytest.mark.parametrize(
    "variant", ["dense", "sparse", "no intercept", "positive", "weights", "elastic net", "row groups"]
)
def test_multinomial_coupled_model_agrees_with_the_per_output_model(classification, monkeypatch, variant):
    """The whole-Hessian Newton model (rows, faces, intercept inside) and the per-output Gram model, which
    shares no code with it past the outer loop, reach the same objective within their certificates."""
    X, _ = classification
    rng = np.random.default_rng(5)
    labels = np.argmax(X[:, :3] + 0.7 * rng.standard_normal((len(X), 3)), axis=1)
    penalty = {"elastic net": ElasticNet(0.02, 0.5), "row groups": GroupLasso(0.02, "rows")}.get(
        variant, L1(0.01)
    )
    options = {
        "sparse": {},
        "no intercept": {"fit_intercept": False},
        "positive": {"positive": True},
        "weights": {"sample_weight": rng.integers(0, 4, len(X)).astype(float)},
    }.get(variant, {})
    design = sp.csc_matrix(np.where(np.abs(X) > 0.5, X, 0.0)) if variant == "sparse" else X
    coupled = coordinate_descent(design, labels, Multinomial(), penalty, tol=1e-10, **options)
    monkeypatch.setattr(Multinomial, "hessian_factors", _diagonal_hessian)
    diagonal = coordinate_descent(design, labels, Multinomial(), penalty, tol=1e-10, **options)
    assert coupled.converged and coupled.dual_gap <= 1e-10 * coupled.gap_scale
    assert diagonal.converged
    # each within its gap of P*, so of each other; plus the objectives' rounding (64 eps |P|, P ~ 1)
    bound = coupled.dual_gap + diagonal.dual_gap + 64 * np.finfo(np.float64).eps * abs(coupled.objective)
    assert abs(coupled.objective - diagonal.objective) <= bound
    if variant == "positive":
        assert np.all(coupled.coef >= 0)


def test_multinomial_sample_weights_equal_repeated_samples():
    """scikit-learn's check (15 samples, 30 features, integer weights, shuffled): weighting a sample and
    repeating it are the same fit. Up to the pseudo-inverses' cutoff of the constant-shift null direction
    they were not (a rounding eigenvalue kept amplified rounding into coefficients 5e-5 apart)."""
    rng = np.random.RandomState(42)
    X, labels, weights = rng.rand(15, 30), rng.randint(0, 3, size=15), rng.randint(0, 5, size=15)
    order = np.random.default_rng(0).permutation(15)
    repeated = coordinate_descent(
        X.repeat(weights, axis=0), labels.repeat(weights), Multinomial(), L1(0.01), tol=1e-4
    )
    weighted = coordinate_descent(
        X[order], labels[order], Multinomial(), L1(0.01), tol=1e-4, sample_weight=weights[order]
    )
    # the same decisions on sums of <= 45 terms in another order (45 eps ~ 1e-14 relative), carried
    # through face solves of condition <= 3e3 on coefficients <= 6 over a few Newton steps: ~2e-10;
    # measured 2e-14 here, 1.8e-11 on scikit-learn's shuffle
    np.testing.assert_allclose(weighted.coef, repeated.coef, rtol=0, atol=1e-9)
    np.testing.assert_allclose(weighted.intercept, repeated.intercept, rtol=0, atol=1e-9)


def test_face_steps_follow_a_flat_direction_instead_of_cycling(monkeypatch):
    """A feature with all five outputs on the face makes the face's Hessian singular along the constant
    shift while the L1 slope along it (an odd number of signs) is not 0. Taken by least squares alone, the
    face step ignored that direction and the sweeps undid it: on this fair-like table one Newton model
    cycled for 48 sweeps (the command line's 6,366-row fit: 318). Followed to its first zero, no model
    needs more than 3 here."""
    rng = np.random.default_rng(3)
    n = 300
    X = np.column_stack(
        [
            rng.choice([17.5, 22, 27, 32, 37, 42], n),
            rng.gamma(2, 4.5, n),
            rng.poisson(2, n),
            rng.integers(1, 5, n),
            rng.choice([9, 12, 14, 16, 17, 20], n),
            rng.integers(1, 7, n),
            rng.integers(1, 7, n),
            np.where(rng.random(n) < 0.3, rng.exponential(1.5, n), 0),
        ]
    ).astype(float)
    score = -0.08 * X[:, 1] + 0.25 * X[:, 3] - 0.6 * X[:, 7] + rng.gumbel(size=n)
    labels = np.searchsorted(np.quantile(score, [0.05, 0.1, 0.3, 0.6]), score)
    sweeps = []
    minimize = cd._CoupledModel.minimize
    monkeypatch.setattr(
        cd._CoupledModel, "minimize", lambda *a: (lambda r: sweeps.append(r[2]) or r)(minimize(*a))
    )
    result = path(X, labels, Multinomial(), L1(1.0), n_lams=30, eps=1e-3, tol=1e-4)
    assert np.all(result.converged)
    # a count, not a time: measured 3 with the flat step, 48 without; 10 separates the two
    assert max(sweeps) <= 10


def test_face_steps_converge_on_an_ill_conditioned_collinear_design(monkeypatch):
    """Issue 15 (g1): scikit-learn's diabetes with degree-3 polynomial features, standardised (442 x 285,
    rank 274, condition ~1e11 on the rest). Coordinate descent alone ended its path at a relative gap of
    1.3e-2 after 10,000 epochs at each of the last strengths; with face steps every strength is certified."""
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(PolynomialFeatures(3, include_bias=False).fit_transform(X))
    epochs = []
    solve = cd.solve
    monkeypatch.setattr(
        cd, "solve", lambda *a, **k: (lambda s: epochs.append(s.n_epochs) or s)(solve(*a, **k))
    )
    result = path(X, y - y.mean(), Quadratic(), L1(1.0), n_lams=100, eps=1e-3, fit_intercept=False, tol=1e-6)
    assert np.all(result.converged)
    assert np.all(result.dual_gaps <= 1e-6 * result.gap_scale)
    # a count, not a time: the path took 99,025 epochs without face steps (the last four strengths at the
    # 10,000 cap) and measured 3,144 with them (at most a few hundred per strength); 20,000 separates them
    assert sum(epochs) <= 20_000
