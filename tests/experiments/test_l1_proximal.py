"""The L1-by-proximal-gradient experiment: the recovery window against scikit-learn, wrong proxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso

from normpen._array import soft_threshold
from normpen.datasets import sparse_regression
from normpen.experiments import l1_proximal as l1p
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2

SEED = l1p.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return l1p.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figures(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"path", "coefficients"}


def _sklearn_lasso(problem, lam):
    return Lasso(alpha=lam, tol=1e-12, max_iter=1_000_000).fit(problem.X, problem.y).coef_


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_window_is_where_scikit_learn_recovers_the_signed_support(seed):
    problem = sparse_regression(60, 90, 4, noise=0.5, seed=seed)
    X, y = l1p.centred(problem)
    support, signs = problem.support, np.sign(problem.coef[problem.support])
    lo, hi = l1p.recovery_window(X, y, support, signs)
    assert hi > lo > 0
    inside = np.sqrt(lo * hi)
    coef = _sklearn_lasso(problem, inside)
    assert l1p.signed_support_errors(coef, problem.coef) == 0
    # scikit-learn's Lasso at tol 1e-12 (relative duality gap) against the closed-form witness: coefficients
    # within √(2·gap/μ) of the optimum (μ the restricted strong convexity on the support); a wrong sign
    # pattern would move them by O(λ) ≫ 1e-8.
    np.testing.assert_allclose(coef, l1p.witness(X, y, support, signs, inside), atol=1e-8)
    for outside in (lo * 0.98, hi * 1.02):
        assert l1p.signed_support_errors(_sklearn_lasso(problem, outside), problem.coef) >= 1


def test_an_impossible_sign_pattern_has_an_empty_window():
    problem = sparse_regression(60, 90, 4, noise=0.1, seed=4)
    X, y = l1p.centred(problem)
    support = problem.support
    lo, hi = l1p.recovery_window(X, y, support, -np.sign(problem.coef[support]))
    assert lo >= hi


def test_a_draw_with_an_empty_window_fails_only_the_checks_that_need_one():
    result = l1p.run(quick=True, seed=130)  # lo = 0.165 > hi: a true coefficient's sign cannot be kept
    failed = {c.name for c in result.checks if not c.passed}
    assert WINDOW in failed
    assert not failed & {MAX_ABOVE, MAX_BELOW, L2_ZEROS, L2_CLOSED, SKLEARN}


def test_signed_support_errors_counts_sign_and_support_mistakes():
    truth = np.array([0.0, 1.5, -2.0, 0.0])
    assert l1p.signed_support_errors(np.array([0.0, 0.3, -0.1, 0.0]), truth) == 0
    assert l1p.signed_support_errors(np.array([1e-12, 0.3, 0.1, 0.0]), truth) == 2


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds_whose_window_is_not_empty(seed):
    # about 1 draw in 100 has no λ recovering the support (the window check then fails, as it should)
    problem = l1p.make_problem(True, seed)
    X, y = l1p.centred(problem)
    lo, hi = l1p.recovery_window(X, y, problem.support, np.sign(problem.coef[problem.support]))
    assume(hi > lo)
    result = l1p.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

WINDOW = "witness: recovery window λ_hi/λ_lo (> 1: some λ recovers the support)"
ZEROS = "L1 at λ*: exact zeros (= p − s)"
SIGNS = "L1 at λ*: signed-support errors"
WITNESS = "L1 at λ*: max |w − witness|"
SKLEARN = "L1 at λ*: max |w − scikit-learn Lasso|"
BELOW = "L1 at λ_lo(1 − δ): signed-support errors"
ABOVE = "L1 at λ_hi(1 + δ): signed-support errors"
MAX_ABOVE = "L1 at λ_max(1 + δ): nonzero coefficients"
MAX_BELOW = "L1 at λ_max(1 − δ): the feature of largest |xⱼᵀ(y − ȳ)| is nonzero"
L2_ZEROS = "L2 at λ*: exact zeros"
L2_CLOSED = "L2 at λ*: ‖w − (XᵀX/n + λI)⁻¹Xᵀy/n‖ vs √(2·tol·P(0)/λ)"


def _scaled_threshold(factor):
    return lambda self, x, step: soft_threshold(x, factor * step * self.lam)


def _correlated_problem(quick, seed, original=l1p.make_problem):
    """The same sizes on an AR(1) design with correlation 0.95: neighbours are nearly interchangeable."""
    size = l1p._SIZES[bool(quick)]
    return sparse_regression(
        size.n_samples, size.n_features, size.n_informative, noise=l1p._NOISE, correlation=0.95, seed=seed
    )


WRONG = {
    "L1 prox that shrinks instead of thresholding": (
        lambda mp: mp.setattr(L1, "_prox", lambda self, x, step: x / (1 + step * self.lam)),
        {ZEROS, SIGNS, WITNESS, SKLEARN, MAX_ABOVE},
    ),
    "L1 threshold doubled": (
        lambda mp: mp.setattr(L1, "_prox", _scaled_threshold(2.0)),
        {WITNESS, SKLEARN, BELOW, MAX_BELOW},
    ),
    "L1 threshold halved": (
        lambda mp: mp.setattr(L1, "_prox", _scaled_threshold(0.5)),
        {WITNESS, SKLEARN, ABOVE, MAX_ABOVE},
    ),
    "strongly correlated design": (lambda mp: mp.setattr(l1p, "make_problem", _correlated_problem), {WINDOW}),
    "L2 prox that soft-thresholds": (lambda mp: mp.setattr(L2, "_prox", _scaled_threshold(1.0)), {L2_ZEROS}),
    "L2 prox with a doubled step": (
        lambda mp: mp.setattr(L2, "_prox", lambda self, x, step: x / (1 + 2 * step * self.lam)),
        {L2_CLOSED},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = l1p.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
