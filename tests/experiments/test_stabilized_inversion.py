"""The stabilized-inversion experiment: closed forms against independent computations, wrong ingredients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from normpen.experiments import stabilized_inversion as si
from normpen.linear.solvers import ridge as ridge_module

SEED = si.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return si.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = si.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.figures["inversion"].get_axes()) == 2


def test_the_fits_are_scikit_learn_ridge_with_alpha_m_lambda():
    r = si.resample_fits(si._Size(40, 5, 3), SEED)
    for k in (3, 10, 20):
        reference = Ridge(alpha=40 * si.LAMS[k], fit_intercept=False).fit(r.X, r.targets).coef_.T
        # two float64 ridge solves of a design with cond(XᵀX) ≲ 1e4: cond·ε ≈ 2e-12 relative
        np.testing.assert_allclose(r.estimates[k], reference, rtol=1e-9, atol=1e-12)


def test_closed_forms_agree_with_matrix_computations(rng):
    X = rng.standard_normal((30, 6)) @ np.diag([1, 2, 3, 0.1, 5, 0.5])
    s = np.linalg.svd(X, compute_uv=False)
    # cond(XᵀX) ≈ 2.5e3: an SVD-based cond and an eigenvalue product agree to ~cond·ε ≈ 6e-13
    for lam in (0.0, 1e-3, 0.7, 50.0):
        assert si.condition_number(s, 30, lam) == pytest.approx(
            np.linalg.cond(si.normal_matrix(X, lam)), rel=1e-10
        )
        trace = np.trace(si.ridge_covariance(X, lam, 0.3))
        assert si.total_variance(s, 30, lam, 0.3) == pytest.approx(trace, rel=1e-10)
    # the same sum of six terms in another order: a few ε
    assert si.total_variance(s, 30, 0.0, 2.0) == pytest.approx(4.0 * np.sum(1 / s**2), rel=1e-12)


def test_the_covariance_formula_matches_a_brute_force_sample(rng):
    X = rng.standard_normal((20, 3))
    noise = rng.standard_normal((20, 200_000))
    estimates = np.linalg.solve(si.normal_matrix(X, 0.2), X.T @ noise / 20)
    C = si.ridge_covariance(X, 0.2, 1.0)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / noise.shape[1])  # of a Wishart entry
    assert np.all(np.abs(np.cov(estimates) - C) <= 5 * se)


def test_the_checks_pass_for_another_seed():
    result = si.run(quick=True, seed=4)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

COND = "max relative error of cond(XᵀX/m + λI) vs (s²_max/m + λ)/(s²_min/m + λ)"
COND_RISES = "λ steps where cond(XᵀX/m + λI) rises"
VARIANCE = "max |sample − closed-form total variance| / standard error over λ"
VARIANCE_RISES = "λ steps where the sample total variance rises"


def _unscaled_normal_matrix(X, lam):
    """XᵀX + λI: the 1/m forgotten."""
    return X.T @ X + lam * np.eye(X.shape[1])


def _shifted_down_normal_matrix(X, lam):
    """XᵀX/m − λI: the penalty with the wrong sign."""
    return X.T @ X / X.shape[0] - lam * np.eye(X.shape[1])


def _half_lambda_ridge(X, Y, lams, **kwargs):
    return ridge_module.ridge_path(X, Y, np.asarray(lams) / 2, **kwargs)


def _reversed_ridge(X, Y, lams, **kwargs):
    """A path returned in the reverse order of the λ asked for."""
    path = ridge_module.ridge_path(X, Y, lams, **kwargs)
    return type("Path", (), {"coefs": path.coefs[::-1]})


def _one_noise_vector(X, Y, lams, **kwargs):
    """Every resample with the same noise: no variance left to measure."""
    return ridge_module.ridge_path(X, np.repeat(Y[:, :1], Y.shape[1], axis=1), lams, **kwargs)


WRONG = {
    "1/m forgotten": ("normal_matrix", _unscaled_normal_matrix, {COND}),
    "penalty with the wrong sign": ("normal_matrix", _shifted_down_normal_matrix, {COND, COND_RISES}),
    "ridge at λ/2": ("ridge_path", _half_lambda_ridge, {VARIANCE}),
    "path in reverse order": ("ridge_path", _reversed_ridge, {VARIANCE, VARIANCE_RISES}),
    "one noise vector for all resamples": ("ridge_path", _one_noise_vector, {VARIANCE}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    attribute, replacement, must_fail = WRONG[scenario]
    monkeypatch.setattr(si, attribute, replacement)
    failed = {c.name for c in si.run(quick=True, seed=SEED).checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for *_, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
