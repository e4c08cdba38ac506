"""The pathway-selection experiment: generator, metrics and solutions checked, wrong penalties fail it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import lasso_path

from normpen.datasets import RegressionProblem, block_design, pathway_regression
from normpen.experiments import pathway_selection as ps
from normpen.penalties.group_lasso import GroupLasso

SEED = ps.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return ps.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figures(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"precision-recall", "selected-genes"}


def test_block_design_has_equicorrelated_independent_blocks():
    X = block_design(40_000, (3, 2), 0.6, seed=3)
    expected = np.block([[np.full((3, 3), 0.6), np.zeros((3, 2))], [np.zeros((2, 3)), np.full((2, 2), 0.6)]])
    np.fill_diagonal(expected, 1.0)
    # a sample correlation of 40 000 rows has sd ≤ 1/√40000 = 0.005: 0.03 is 6 sd
    np.testing.assert_allclose(np.cov(X, rowvar=False), expected, atol=0.03)


@pytest.mark.parametrize("correlation", [-0.1, 1.0])
def test_block_design_refuses_correlations_outside_zero_one(correlation):
    with pytest.raises(ValueError, match="correlation"):
        block_design(10, (2, 2), correlation)


def test_pathway_regression_activates_whole_pathways_with_one_sign():
    problem = pathway_regression(20, (5,) * 8, 3, correlation=0.3, noise=0.0, seed=7)
    assert problem.X.shape == (20, 40) and problem.active_groups.size == 3
    for g, idx in enumerate(problem.groups):
        values = problem.coef[idx]
        if g in problem.active_groups:
            assert np.all(np.abs(values) >= 1) and len(set(np.sign(values))) == 1
        else:
            assert np.all(values == 0)
    np.testing.assert_allclose(problem.y, problem.X @ problem.coef)
    with pytest.raises(ValueError, match="n_active_groups"):
        pathway_regression(20, (5, 5), 3)


def _problem(active, sizes=(2, 2, 2)):
    groups = tuple(np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1]))
    coef = np.zeros(sum(sizes))
    for g in active:
        coef[groups[g]] = 1.0
    return RegressionProblem(
        X=np.eye(sum(sizes)), y=np.zeros(sum(sizes)), coef=coef, groups=groups, noise=0.0
    )


def test_pathway_precision_and_recall_by_hand():
    problem = _problem(active=[0, 2])
    assert ps.pathway_precision_recall(np.array([1.0, 0, 0, 0, 0, 0]), problem) == (1.0, 0.5)
    assert ps.pathway_precision_recall(np.array([1.0, 0, 0, 3, 0, 2]), problem) == (2 / 3, 1.0)
    assert ps.pathway_precision_recall(np.zeros(6), problem) == (1.0, 0.0)
    assert ps.selected_pathways(np.array([0, 0, 0, -1.0, 0, 0]), problem.groups) == {1}


def test_matched_size_index_is_the_first_point_that_holds_enough_genes():
    coefs = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=float)
    assert ps.matched_size_index(coefs, 2) == 2
    assert ps.matched_size_index(coefs, 5) == 3


def test_the_paths_are_the_penalized_solutions():
    problem = ps.make_problems(True, SEED)[0]
    fitted = ps.fit_paths(problem, 12)
    lasso = fitted["lasso"]
    _, sk_coefs, _ = lasso_path(
        problem.X - problem.X.mean(0),
        problem.y - problem.y.mean(),
        alphas=lasso.lams,
        tol=1e-10,
        max_iter=100_000,
    )
    # the library's path is certified to a relative gap of 1e-6 (_SOLVER_TOL): with n ≪ p the lasso is not
    # strongly convex, so coefficients agree only to ~√(gap) ≈ 1e-3
    np.testing.assert_allclose(lasso.coefs, sk_coefs.T, atol=2e-3)
    # group lasso: every point's duality gap, computed here from the data with the residual as dual point
    # (rescaled into the dual ball: ||X_g^T theta|| / n <= lam sqrt|g|), is at most the solver's relative
    # tolerance of P0 = ||y_c||^2 / (2n), plus the rounding of the two objectives (64 eps of each, the floor
    # Problem.certifiable_tol uses). (A KKT check of each group's gradient is no test of a point certified
    # to a gap: without strong convexity (n << p) the gradient of a nonzero group may miss its condition
    # by ~sqrt(gap), however small the gap.)
    group = fitted["group lasso"]
    X, n = problem.X - problem.X.mean(0), problem.X.shape[0]
    y = problem.y - problem.y.mean()
    p0 = y @ y / (2 * n)
    for w, lam in zip(group.coefs, group.lams, strict=True):
        r = y - X @ w
        weights = [lam * np.sqrt(len(idx)) for idx in problem.groups]
        primal = r @ r / (2 * n) + sum(
            c * np.linalg.norm(w[idx]) for c, idx in zip(weights, problem.groups, strict=True)
        )
        scale = max(
            1.0,
            max(
                np.linalg.norm(X[:, idx].T @ r) / (n * c)
                for c, idx in zip(weights, problem.groups, strict=True)
            ),
        )
        theta = r / scale
        dual = (theta @ y - theta @ theta / 2) / n
        rounding = 64 * np.finfo(float).eps * (abs(primal) + abs(dual))
        assert primal - dual <= ps._SOLVER_TOL * p0 + rounding


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = ps.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

GROUP_PRECISION = "group lasso: mean pathway precision at 30 genes"
GROUP_RECALL = "group lasso: mean pathway recall at 30 genes"
LASSO_PRECISION = "lasso: mean pathway precision at 30 genes"
GAP = "both paths: largest relative duality gap"


def _groups_ignored(lam, groups):
    """A 'group lasso' that puts every gene in its own group: the lasso again."""
    return GroupLasso(lam, [np.array([j]) for idx in groups for j in idx])


def _lasso_by_pathway(problem_groups):
    return lambda lam: GroupLasso(lam, problem_groups)


def _group_lasso_as_lasso(monkeypatch):
    original = ps.fit_paths

    def fit_paths(problem, n_lams):
        monkeypatch.setattr(ps, "L1", _lasso_by_pathway(list(problem.groups)))
        return original(problem, n_lams)

    monkeypatch.setattr(ps, "fit_paths", fit_paths)


WRONG = {
    "a 'group lasso' with one gene per group": (
        lambda mp: mp.setattr(ps, "GroupLasso", _groups_ignored),
        {GROUP_PRECISION},
    ),
    "pathway signal buried in noise (σ = 8)": (
        lambda mp: mp.setattr(ps, "_NOISE", 8.0),
        {GROUP_PRECISION, GROUP_RECALL},
    ),
    "a 'lasso' that penalizes whole pathways": (_group_lasso_as_lasso, {LASSO_PRECISION}),
    "paths solved to a loose tolerance": (lambda mp: mp.setattr(ps, "_SOLVER_TOL", 1e-1), {GAP}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = ps.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
