r"""``warm_start``: a refit starts from the previous ``coef_``/``intercept_``, reaches the same minimiser
within the certificate, and needs fewer outer iterations at a nearby strength.

Certificates used (issue 15): a solution with duality gap :math:`G` has :math:`P(w) - P^\star \le G`;
where the objective is :math:`\mu`-strongly convex in :math:`w` (the intercept minimised out) this gives
:math:`\|w - w^\star\| \le \sqrt{2G/\mu}`, so two solutions differ by at most the sum of their radii.
A gap is known only to the rounding of :math:`P - D`, which the solvers take as :math:`64\,\varepsilon P`
(the floor of ``Problem.certifiable_tol``), so each gap is counted as ``max(G, 0) + 64 eps P0``.
"""

import numpy as np
import pytest

from normpen.linear import ElasticNet, Lasso, LogisticRegression

EPS = np.finfo(np.float64).eps


def _radius(gap, p0, mu):
    """:math:`\\sqrt{2G/\\mu}` with the gap's rounding added (module docstring)."""
    return np.sqrt(2 * (max(gap, 0.0) + 64 * EPS * p0) / mu)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 30))
    w = np.zeros(30)
    w[:5] = [2.0, -1.0, 1.0, 0.5, -0.5]
    return X, X @ w + 0.5 * rng.standard_normal(100)


@pytest.mark.parametrize(("cls", "options"), [(Lasso, {}), (ElasticNet, {"l1_ratio": 0.7})])
def test_a_warm_refit_at_a_nearby_strength_reaches_the_same_solution_in_fewer_iterations(
    regression, cls, options
):
    X, y = regression
    model = cls(0.05, tol=1e-10, warm_start=True, **options).fit(X, y)
    warm = model.set_params(lam=0.045).fit(X, y)
    cold = cls(0.045, tol=1e-10, **options).fit(X, y)
    # the least squares with the intercept minimised out is mu-strongly convex, mu the smallest eigenvalue of
    # the centred Gram matrix / n (the elastic net's ridge part only adds to it); P0 = var(y) / 2
    Xc = X - X.mean(axis=0)
    mu = np.linalg.eigvalsh(Xc.T @ Xc / len(y))[0]
    p0 = np.var(y) / 2
    bound = _radius(warm.dual_gap_, p0, mu) + _radius(cold.dual_gap_, p0, mu)
    assert np.linalg.norm(warm.coef_ - cold.coef_) <= bound  # bound 1.3e-6 (measured 3e-16)
    assert abs(warm.intercept_ - cold.intercept_) <= bound * np.linalg.norm(X.mean(axis=0))
    # least squares goes to the covariance solver (path's solver="auto"), whose strong-rule working set is
    # right from either start: one round each (its warm start saves epochs: test_gaussian_path.py); under
    # coordinate descent warm took 1-2 outer iterations, cold 3-4 (this seed and four others)
    assert warm.n_iter_ <= cold.n_iter_


def test_warm_multinomial_logistic_reaches_the_same_solution(regression):
    X, y = regression
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    model = LogisticRegression(0.02, tol=1e-10, warm_start=True).fit(X, labels)
    warm = model.set_params(lam=0.018).fit(X, labels)
    cold = LogisticRegression(0.018, tol=1e-10).fit(X, labels)
    # lam/2 ||W||^2 makes the objective lam-strongly convex in W; P0 <= log 3 (the uniform prediction)
    bound = _radius(warm.dual_gap_, np.log(3), 0.018) + _radius(cold.dual_gap_, np.log(3), 0.018)
    assert np.linalg.norm(warm.coef_ - cold.coef_) <= bound  # bound 2.7e-5 (measured 5.3e-6)


def test_warm_l1_logistic_reaches_the_optimum_within_both_gaps_in_fewer_iterations(regression):
    X, y = regression
    labels = y > np.median(y)
    model = LogisticRegression(0.02, penalty="l1", tol=1e-10, warm_start=True).fit(X, labels)
    warm = model.set_params(lam=0.018).fit(X, labels)
    cold = LogisticRegression(0.018, penalty="l1", tol=1e-10).fit(X, labels)

    def objective(fitted):
        margins = np.where(labels, 1.0, -1.0) * fitted.decision_function(X)
        return np.mean(np.logaddexp(0, -margins)) + 0.018 * np.abs(fitted.coef_).sum()

    # not strongly convex: both objectives lie within their gaps of P*, so they differ by at most the sum
    # (plus the rounding of two sums of 100 terms of order one, 200 eps)
    slack = max(warm.dual_gap_, 0) + max(cold.dual_gap_, 0) + 2 * 64 * EPS * np.log(2) + 200 * EPS
    assert abs(objective(warm) - objective(cold)) <= slack
    assert warm.n_iter_ < cold.n_iter_  # measured 1 against 3


def test_warm_start_off_refits_from_scratch_and_a_mismatched_warm_start_is_refused(regression):
    X, y = regression
    fresh = Lasso(0.045, tol=1e-10).fit(X, y)
    refit = Lasso(0.05, tol=1e-10).fit(X, y).set_params(lam=0.045).fit(X, y)
    np.testing.assert_array_equal(refit.coef_, fresh.coef_)  # the same operations from the same start
    model = Lasso(0.05, warm_start=True).fit(X, y)
    before = model.coef_.copy()
    with pytest.raises(ValueError, match="warm_start=True starts from the previous fit .30 features.*10"):
        model.fit(X[:, :10], y)
    np.testing.assert_array_equal(model.coef_, before)
    assert model.n_features_in_ == 30
