"""The sparsity-dialogue experiment: paths against independent solvers, checks against wrong proxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso, Ridge

from normpen.experiments import sparsity_dialogue as sd
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2

SEED = sd.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return sd.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = sd.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.checks) == 12


def test_figures_show_three_log_scaled_path_panels_with_thresholds(quick_result):
    problem = sd.make_problem(True, SEED)
    paths = quick_result.figures["paths"]
    axes = paths.get_axes()
    assert len(axes) == 6
    assert all(ax.get_xscale() == "log" for ax in axes)
    p, n_groups = problem.X.shape[1], len(problem.groups)
    # every panel draws one line per coefficient, the zero line, and one line per closed-form threshold
    expected_lines = [p + 1, p + 1 + p, p + 1 + n_groups] * 2
    assert [len(ax.get_lines()) for ax in axes] == expected_lines
    l1_marks = sorted(line.get_xdata()[0] for line in axes[1].get_lines() if line.get_linestyle() == ":")
    np.testing.assert_allclose(l1_marks, np.sort(np.abs(sd.least_squares(problem))))
    assert len(quick_result.figures["sparsity"].get_axes()) == 1


def test_the_problem_is_an_orthogonal_design_whose_least_squares_solution_is_xty_over_n():
    problem = sd.make_problem(True, SEED)
    n = problem.X.shape[0]
    # Entries of XᵀX are sums of n ≤ 400 products of O(1) numbers: rounding ≈ nε·n ≈ 4e-11 at most.
    np.testing.assert_allclose(problem.X.T @ problem.X, n * np.eye(problem.X.shape[1]), atol=1e-10)
    lstsq = np.linalg.lstsq(problem.X, problem.y, rcond=None)[0]
    # Two float64 solves of a well-conditioned (orthogonal) system of O(1) coefficients: a few ε·√n.
    np.testing.assert_allclose(sd.least_squares(problem), lstsq, atol=1e-12)


@pytest.mark.parametrize("lam", [0.003, 0.05, 0.4, 1.5])
def test_l1_and_l2_paths_equal_scikit_learn_fits_of_the_penalized_problem(lam):
    problem = sd.make_problem(True, SEED)
    n = problem.X.shape[0]
    w_hat = sd.least_squares(problem)
    lasso = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(problem.X, problem.y)
    # Coordinate descent stops on a duality gap of 1e-12·‖y‖²/2n; on an orthogonal design its distance to the
    # optimum is at most √(2·gap) ≈ 1e-6·‖y‖/√n; its usual accuracy is far better, and 1e-8 allows 100 times
    # the rounding of the closed form while catching any wrong threshold (which moves a coefficient by λ).
    np.testing.assert_allclose(sd.prox_path(L1(1.0), w_hat, np.array([lam]))[0], lasso.coef_, atol=1e-8)
    # scikit-learn's Ridge(alpha=a) minimises ||y - Xw||^2 + a||w||^2, i.e. our L2(lam = a / n)
    ridge = Ridge(alpha=lam * n, fit_intercept=False).fit(problem.X, problem.y)
    # Ridge by a direct solve: two float64 closed forms of O(1) coefficients, rounding ≈ nε ≈ 1e-13.
    np.testing.assert_allclose(sd.prox_path(L2(1.0), w_hat, np.array([lam]))[0], ridge.coef_, atol=1e-10)


def test_group_path_equals_group_soft_thresholding_written_out():
    problem = sd.make_problem(True, SEED)
    w_hat = sd.least_squares(problem)
    lams = np.geomspace(1e-3, 5.0, 17)
    path = sd.prox_path(GroupLasso(1.0, list(problem.groups)), w_hat, lams)
    for row, lam in zip(path, lams, strict=True):
        for g in problem.groups:
            factor = max(1.0 - lam * np.sqrt(g.size) / np.linalg.norm(w_hat[g]), 0.0)
            # The same soft-thresholding formula evaluated twice (one norm of ≤ 6 terms): a few ε.
            np.testing.assert_allclose(row[g], factor * w_hat[g], atol=1e-12)


@given(
    sets=st.lists(
        st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=12, unique=True), min_size=1, max_size=2
    ),
    n_points=st.integers(2, 50),
)
def test_lambda_grid_straddles_every_threshold_and_separates_neighbours(sets, n_points):
    sets = [np.sort(s) for s in sets]
    assume(all(np.all(np.diff(s) > 1e-8 * s[1:]) for s in sets))
    lams, delta = sd.lambda_grid(sets, n_points)
    assert np.all(np.diff(lams) > 0) and 0 < delta <= 1e-3
    for thresholds in sets:
        for t in thresholds:
            assert np.any((lams < t) & (lams >= t * (1 - 2 * delta)))
            assert np.any((lams > t) & (lams <= t * (1 + 2 * delta)))
        # between two neighbouring grid points lies at most one threshold of the set
        crossed = (thresholds[None, :] > lams[:-1, None]) & (thresholds[None, :] <= lams[1:, None])
        assert crossed.sum(axis=1).max(initial=0) <= 1


@pytest.mark.parametrize(
    "sets, match", [([np.array([0.0, 1.0])], "positive"), ([np.array([1.0, 1.0 + 1e-12])], "within 1e-8")]
)
def test_lambda_grid_refuses_thresholds_it_cannot_straddle(sets, match):
    with pytest.raises(ValueError, match=match):
        sd.lambda_grid(sets, 10)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = sd.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong proxes must fail the checks ------------------------------------------------


def _problem_groups():
    return sd.make_problem(True, SEED).groups


def _doubled_step(cls):
    """The right prox with twice the step: every threshold doubled."""
    original = cls._prox
    return lambda self, x, step: original(self, x, 2 * step)


def _soft_threshold_everything(self, x, step):
    """Elementwise soft thresholding: an L1 prox where an L2 or a group prox belongs."""
    return np.sign(x) * np.maximum(np.abs(x) - step * self.lam, 0.0)


def _all_at_once(self, x, step):
    """Keeps x untouched until the smallest |x_i|, then zeroes everything in one step."""
    return x * float(step * self.lam < np.min(np.abs(x)))


def _reversed_order(groups):
    """Zeroes group g once lam >= t_min * t_max / t_g: the largest groups leave first."""

    def prox(self, x, step):
        t = np.array([np.linalg.norm(x[g]) / np.sqrt(len(g)) for g in groups])
        z = x.copy()
        for g, t_g in zip(groups, t, strict=True):
            if step * self.lam >= t.min() * t.max() / t_g:
                z[g] = 0.0
        return z

    return prox


def _singletons():
    return [np.array([i]) for i in range(sum(len(g) for g in _problem_groups()))]


WRONG_PROXES = {
    "L2 with a doubled step": (
        L2,
        lambda: _doubled_step(L2),
        {"L2: max relative error of w vs ŵ/(1+λ)", "L2: max KKT violation on (X, y)"},
    ),
    "L2 that thresholds": (L2, lambda: _soft_threshold_everything, {"L2: exact zeros over the λ grid"}),
    "L1 with a doubled step": (
        L1,
        lambda: _doubled_step(L1),
        {"L1: max |#zero coordinates − #{i : λ ≥ |ŵᵢ|}| over the λ grid", "L1: max KKT violation on (X, y)"},
    ),
    "L1 all at once": (L1, lambda: _all_at_once, {"L1: most coordinates zeroed in one λ step"}),
    "L1 reversed": (
        L1,
        lambda: _reversed_order(_singletons()),
        {"L1: coordinates zeroed out of threshold order"},
    ),
    "group lasso with a doubled step": (
        GroupLasso,
        lambda: _doubled_step(GroupLasso),
        {
            "group lasso: max |#zero groups − #{g : λ ≥ ‖ŵ_g‖/√|g|}| over the λ grid",
            "group lasso: max KKT violation on (X, y)",
        },
    ),
    "group lasso elementwise": (
        GroupLasso,
        lambda: _soft_threshold_everything,
        {"group lasso: (λ, group) pairs with a group partly zero"},
    ),
    "group lasso all at once": (
        GroupLasso,
        lambda: _all_at_once,
        {"group lasso: most groups zeroed in one λ step"},
    ),
    "group lasso reversed": (
        GroupLasso,
        lambda: _reversed_order(_problem_groups()),
        {"group lasso: groups zeroed out of threshold order"},
    ),
}


def _failed_checks_with(monkeypatch, cls, make_prox):
    monkeypatch.setattr(cls, "_prox", make_prox())
    result = sd.run(quick=True, seed=SEED)
    return {c.name for c in result.checks if not c.passed}


@pytest.mark.parametrize("scenario", sorted(WRONG_PROXES))
def test_a_wrong_prox_fails_its_checks(monkeypatch, scenario):
    cls, make_prox, must_fail = WRONG_PROXES[scenario]
    failed = _failed_checks_with(monkeypatch, cls, make_prox)
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"
    assert all(name.startswith(("L2", "L1", "group lasso")) for name in failed)
    penalty_label = {L2: "L2:", L1: "L1:", GroupLasso: "group lasso:"}[cls]
    assert all(name.startswith(penalty_label) for name in failed), "a wrong prox fails only its own penalty"


def test_every_check_is_failed_by_some_wrong_prox(quick_result):
    targeted = set().union(*(must_fail for _, _, must_fail in WRONG_PROXES.values()))
    assert targeted == {c.name for c in quick_result.checks}
