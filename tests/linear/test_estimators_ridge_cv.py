"""RidgeCV's leave-one-out choice of lambda (cv=None) against refitting without each sample in turn."""

import numpy as np
import pytest

from normpen.linear.estimators import RidgeCV

LAMS = np.geomspace(3.0, 1e-3, 12)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 6))
    y = X @ np.array([1.0, -0.5, 0.3, 0.0, 0.0, 0.2]) + 0.5 * rng.standard_normal(15) + 2.0
    return X, y


def _ridge(X, y, lam):
    r"""Closed form of :math:`\frac1{2m}\|y - Xw - b\|^2 + \frac\lambda2\|w\|^2` on ``m`` samples."""
    x_mean, y_mean = X.mean(axis=0), y.mean(axis=0)
    Xc = X - x_mean
    w = np.linalg.solve(Xc.T @ Xc / len(X) + lam * np.eye(X.shape[1]), Xc.T @ (y - y_mean) / len(X))
    return w, y_mean - x_mean @ w


def _leave_one_out_errors(X, y):
    """Squared error on sample i of the fit without it, ``(n, L)`` (averaged over the columns of a 2-D y).

    Deleting sample i's term from the averaged objective keeps the factor 1/n on the others, i.e.
    the (n - 1)-sample problem at lam * n / (n - 1).
    """
    n = len(y)
    errors = np.empty((n, LAMS.size))
    for i in range(n):
        keep = np.arange(n) != i
        for j, lam in enumerate(LAMS):
            w, b = _ridge(X[keep], y[keep], lam * n / (n - 1))
            errors[i, j] = np.mean((y[i] - X[i] @ w - b) ** 2)
    return errors


@pytest.mark.parametrize("two_targets", [False, True], ids=["1-d", "2-d"])
def test_leave_one_out_errors_mean_and_standard_error_match_refitting(problem, two_targets):
    X, y = problem
    y = np.column_stack([y, y**2 / 4]) if two_targets else y
    model = RidgeCV(lams=LAMS, selection="1se").fit(X, y)
    errors = _leave_one_out_errors(X, y)
    mean = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1) / np.sqrt(len(X))
    best = int(np.argmin(mean))
    # a LOO residual r = y_i - x_i w rounds by ~cond * |y| * eps ~ 12 * 5 * eps ~ 1.3e-14 on either side, so
    # r^2 by 2 * 1.3e-14 / |r| relative: 1.3e-11 at the smallest |r| here (2e-3); measured 7.7e-13
    np.testing.assert_allclose(model.cv_errors_, errors, rtol=1e-10)
    # their mean and spread over 15 samples: the large errors dominate, ~15 * cond * eps ~ 4e-14 (measured
    # 3e-15)
    np.testing.assert_allclose(model.cv_mean_, mean, rtol=1e-12)
    np.testing.assert_allclose(model.cv_se_, se, rtol=1e-12)
    assert model.lam_min_ == LAMS[best]
    assert model.lam_1se_ == LAMS[np.flatnonzero(mean <= mean[best] + se[best]).min()]
    assert model.lam_ == model.lam_1se_


def test_one_standard_error_lambda_is_larger_than_the_best(problem):
    """On this problem the rule picks a strictly stronger penalty (it used to return lam_min_)."""
    model = RidgeCV(lams=LAMS).fit(*problem)
    assert model.lam_1se_ > model.lam_min_ and model.lam_ == model.lam_min_


def test_sample_weights_weigh_the_mean_and_its_standard_error(problem):
    r"""Unit weights change nothing; zero weights drop samples from the mean and from :math:`\sum v^2`."""
    X, y = problem
    unweighted = RidgeCV(lams=LAMS).fit(X, y)
    ones = RidgeCV(lams=LAMS).fit(X, y, sample_weight=np.ones(len(y)))
    # unit weights through the weighted formulas: 15-term sums at cond 12, ~4e-14 (measured 0)
    np.testing.assert_allclose(ones.cv_se_, unweighted.cv_se_, rtol=1e-12)
    weights = np.r_[np.zeros(3), np.ones(len(y) - 3)]
    dropped = RidgeCV(lams=LAMS).fit(X, y, sample_weight=weights)
    errors = dropped.cv_errors_[3:]  # the fits never see samples 0-2, so their errors are the 12-sample LOO
    # the same 12 numbers summed in another order: 12 eps relative (measured <= 3.4e-16)
    np.testing.assert_allclose(dropped.cv_mean_, errors.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dropped.cv_se_, errors.std(axis=0, ddof=1) / np.sqrt(12), rtol=1e-12)
