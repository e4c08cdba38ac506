"""Cross-validated estimators against a brute-force K-fold loop of independent fits."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from sklearn.model_selection import KFold, LeaveOneOut, StratifiedKFold

from normpen.linear.estimators import (
    ElasticNet,
    ElasticNetCV,
    GroupLasso,
    GroupLassoCV,
    Lasso,
    LassoCV,
    LinearSVC,
    LinearSVCCV,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeCV,
)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((45, 10))
    y = X[:, :3] @ np.array([1.5, -1.0, 0.7]) + 0.8 * rng.standard_normal(45) + 1.0
    return X, y


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 6))
    score = X[:, 0] - X[:, 1] + 0.8 * rng.standard_normal(60)
    return X, np.where(score > 0, "yes", "no")


def _brute_force(make, X, y, folds, lams, error):
    """Held-out errors of independent fits, one per (fold, strength), and the two selected strengths."""
    errors = np.array(
        [
            [error(make(lam).fit(X[train], y[train]), X[test], y[test]) for lam in lams]
            for train, test in folds
        ]
    )
    mean = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1) / np.sqrt(len(folds))
    best = int(np.argmin(mean))
    one_se = int(np.flatnonzero(mean <= mean[best] + se[best]).min())
    return errors, lams[best], lams[one_se]


def _mse(model, X, y):
    return np.mean((model.predict(X) - y) ** 2)


def _log_loss(model, X, y):
    proba = model.predict_proba(X)
    return -np.mean(np.log(proba[np.arange(len(y)), np.searchsorted(model.classes_, y)]))


def _misclassification(model, X, y):
    return np.mean(model.predict(X) != y)


@pytest.mark.parametrize(
    ("cv_model", "make"),
    [
        (LassoCV(n_lams=8, eps=1e-2, tol=1e-10), lambda lam: Lasso(lam, tol=1e-10)),
        (
            ElasticNetCV(l1_ratio=0.3, n_lams=8, eps=1e-2, tol=1e-10),
            lambda lam: ElasticNet(lam, l1_ratio=0.3, tol=1e-10),
        ),
        (
            GroupLassoCV(groups=[np.arange(5), np.arange(5, 10)], n_lams=6, eps=1e-2, tol=1e-10),
            lambda lam: GroupLasso(lam, groups=[np.arange(5), np.arange(5, 10)], tol=1e-10),
        ),
    ],
    ids=["lasso", "elastic_net", "group_lasso"],
)
def test_regression_cv_matches_a_brute_force_loop(regression, cv_model, make):
    X, y = regression
    folds = list(KFold(4).split(X))
    cv_model.set_params(cv=folds).fit(X, y)
    errors, lam_min, lam_1se = _brute_force(make, X, y, folds, cv_model.lams_, _mse)
    # both fits certified to a gap of 1e-10 P0 (P0 <= 2.6): ||w - w*|| <= sqrt(2 gap / mu) <= 4.6e-5 on every
    # fold (mu >= 0.24, a fold's smallest eigenvalue of X^T X / n), moving a held-out MSE by <= 3.1e-4 of
    # itself; the selected strengths are certified too: the means differ by >= 0.28% and the 1se rule's margin
    # is >= 0.2% (measured: <= 6.5e-8, 1e-15 where CD lands on the exact active set)
    np.testing.assert_allclose(cv_model.cv_errors_, errors, rtol=5e-4)
    assert cv_model.lam_min_ == lam_min and cv_model.lam_1se_ == lam_1se
    assert cv_model.lam_1se_ >= cv_model.lam_min_
    refit = make(lam_min).fit(X, y)
    # 2 sqrt(2e-10 P0 / mu) ~ 8e-5 on all 45
    np.testing.assert_allclose(cv_model.coef_, refit.coef_, atol=1e-4)


def test_one_standard_error_selection_refits_there(regression):
    X, y = regression
    model = LassoCV(n_lams=8, eps=1e-2, cv=4, selection="1se", tol=1e-10).fit(X, y)
    assert model.lam_ == model.lam_1se_
    # both within sqrt(2e-10 P0 / mu) ~ 4e-5 of w* (the bound of the test above)
    np.testing.assert_allclose(model.coef_, Lasso(model.lam_1se_, tol=1e-10).fit(X, y).coef_, atol=1e-4)


def test_logistic_cv_matches_a_brute_force_loop(classification):
    X, y = classification
    folds = list(StratifiedKFold(3).split(X, y))
    model = LogisticRegressionCV(penalty="l1", n_lams=6, eps=0.05, cv=folds, tol=1e-10).fit(X, y)
    errors, lam_min, lam_1se = _brute_force(
        lambda lam: LogisticRegression(lam, penalty="l1", tol=1e-10), X, y, folds, model.lams_, _log_loss
    )
    # certificate: gap 1e-10 log 2 and mu >= the smallest eigenvalue of [X, 1]^T diag(s(1 - s)) [X, 1] / n at
    # each fit give ||w - w*|| <= r; a held-out log loss (slope <= 1 in z) moves by <= mean ||(x, 1)|| 2r <=
    # 9.8e-4 of itself (measured 3.4e-7, which a picked 1e-6 left 3x room); selection margins are >= 1.7%
    np.testing.assert_allclose(model.cv_errors_, errors, rtol=1e-3)
    assert (model.lam_min_, model.lam_1se_) == (lam_min, lam_1se)


def test_svm_cv_matches_a_brute_force_loop(classification):
    X, y = classification
    folds = list(StratifiedKFold(3).split(X, y))
    model = LinearSVCCV(lams=[1.0, 0.1, 0.01], cv=folds, tol=1e-8, random_state=0).fit(X, y)
    errors, lam_min, _ = _brute_force(
        lambda lam: LinearSVC(lam, tol=1e-8, random_state=0), X, y, folds, model.lams_, _misclassification
    )
    # counts of misclassified points, compared exactly: measured, the nearest held-out point is 1.4e-4 (in
    # units of ||(w, 1)||) from a boundary, while the two fits agree to rounding (the same solver, seed and
    # data)
    np.testing.assert_array_equal(model.cv_errors_, errors)
    assert model.lam_min_ == lam_min


def test_ridge_cv_leave_one_out_matches_refitting_without_each_sample(regression):
    X, y = regression
    lams = np.array([1.0, 0.1, 0.01])
    model = RidgeCV(lams=lams).fit(X, y)
    n = len(y)
    # the exact leave-one-out of ridge_path keeps the averaged objective's weight on the other samples,
    # which is scikit-learn's Ridge(alpha) refitted on n - 1 samples: lam * n / (n - 1) in our scale
    errors, lam_min, _ = _brute_force(
        lambda lam: Ridge(lam * n / (n - 1)), X, y, list(LeaveOneOut().split(X)), lams, _mse
    )
    # two direct solves at cond(X^T X / n + lam) <= 10: ~cond * 45 eps ~ 1e-13 (measured 1.5e-15)
    np.testing.assert_allclose(model.cv_mean_, errors.mean(axis=0), rtol=1e-12)
    assert model.lam_ == lam_min


def test_parallel_folds_give_the_same_answer(regression):
    X, y = regression
    serial = LassoCV(n_lams=6, cv=3).fit(X, y)
    parallel = LassoCV(n_lams=6, cv=3, n_jobs=2).fit(X, y)
    # the same float64 operations in worker processes; only a BLAS reduction's order may differ (45 eps ~
    # 1e-14)
    np.testing.assert_allclose(parallel.cv_errors_, serial.cv_errors_, rtol=1e-12)
    assert parallel.lam_ == serial.lam_


def test_cv_plot_and_bad_selection(regression):
    X, y = regression
    fig = LassoCV(n_lams=5, cv=3).fit(X, y).plot()
    assert fig.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="selection"):
        LassoCV(selection="best").fit(X, y)


def test_on_fold_reports_every_fold_in_order_and_changes_nothing():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    y = X[:, 0] + 0.1 * rng.standard_normal(40)
    calls = []

    def record(done, total):
        calls.append((done, total))

    with_callback = LassoCV(cv=KFold(5), n_lams=6).fit(X, y, on_fold=record)
    assert calls == [(k, 5) for k in range(1, 6)]
    plain = LassoCV(cv=KFold(5), n_lams=6).fit(X, y)
    np.testing.assert_array_equal(with_callback.coef_, plain.coef_)  # the same operations in the same process
    calls.clear()
    RidgeCV(cv=KFold(3), n_lams=4).fit(X, y, on_fold=record)
    assert calls == [(1, 3), (2, 3), (3, 3)]
