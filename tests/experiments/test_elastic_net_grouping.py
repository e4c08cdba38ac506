"""The elastic-net grouping experiment: the bound against scikit-learn's paths, wrong penalties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import enet_path

from normpen.datasets import pathway_regression
from normpen.experiments import elastic_net_grouping as eng
from normpen.penalties.elastic_net import ElasticNet

SEED = eng.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return eng.EXPERIMENT.run(quick=True)


def test_quick_run_passes_every_check_and_draws_its_figures(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert set(quick_result.figures) == {"paths", "group-members"}


def test_standardized_columns_have_the_distance_of_their_correlation():
    X, y = eng.standardized(eng.make_problem(True, SEED))
    n = X.shape[0]
    np.testing.assert_allclose(np.sum(X**2, axis=0), n)
    assert abs(y.mean()) < 1e-12  # a centred float64 mean: ~ε·max|y|·√n ≈ 1e-14
    rho = X[:, 0] @ X[:, 1] / n
    assert np.linalg.norm(X[:, 0] - X[:, 1]) == pytest.approx(np.sqrt(2 * n * (1 - rho)))
    assert rho > 0.99


def test_pathway_effects_are_shared_within_a_pathway():
    problem = pathway_regression(30, (4, 4, 4), 2, correlation=0.5, effects="pathway", seed=1)
    for g in problem.active_groups:
        values = problem.coef[problem.groups[g]]
        assert np.all(values == values[0]) and 0.25 <= abs(values[0]) <= 0.75
    with pytest.raises(ValueError, match="effects must be 'gene' or 'pathway'"):
        pathway_regression(30, (4, 4), 1, effects="both")


def test_scikit_learn_elastic_net_path_obeys_the_bound_and_matches_the_library():
    problem = eng.make_problem(True, SEED)
    X, y = eng.standardized(problem)
    n = X.shape[0]
    lams = np.abs(X.T @ y).max() / n / eng._L1_RATIO * np.geomspace(1.0, 0.05, 8)
    alphas, coefs, _ = enet_path(X, y, l1_ratio=eng._L1_RATIO, alphas=lams, tol=1e-12, max_iter=100_000)
    ours = eng.regularization_path(X, y, eng.Quadratic(), ElasticNet(1.0, eng._L1_RATIO), alphas, tol=1e-12)
    # both solved to a duality gap of 1e-12: the coefficients agree to √(2·gap/(λ(1−α))) ≈ 1e-6 at worst
    # along directions only the ridge part makes strongly convex; well inside that on this problem
    np.testing.assert_allclose(ours.coefs, coefs.T, atol=1e-7)
    assert eng.bound_ratio(X, y, coefs.T, alphas, list(problem.groups), eng._L1_RATIO) <= 1.0


def test_the_bound_is_tight_for_two_features_and_violated_by_a_wrong_pair():
    # one active pair of near-duplicates, solved in closed form: stationarity makes the bound an equality
    rng = np.random.default_rng(5)
    n = 50
    z = rng.standard_normal(n)
    X = np.column_stack([z + 0.05 * rng.standard_normal(n), z + 0.05 * rng.standard_normal(n)])
    X -= X.mean(axis=0)
    X /= np.sqrt(np.mean(X**2, axis=0))
    y = X @ np.array([1.0, 1.0]) + 0.1 * rng.standard_normal(n)
    y -= y.mean()
    lam, alpha = 0.1, 0.5
    # both nonzero and positive: (X'X/n + lam(1-alpha) I) w = X'y/n - lam alpha 1
    w = np.linalg.solve(X.T @ X / n + lam * (1 - alpha) * np.eye(2), X.T @ y / n - lam * alpha)
    assert np.all(w > 0)
    r = y - X @ w
    exact = abs((X[:, 0] - X[:, 1]) @ r / n) / (lam * (1 - alpha))
    assert abs(w[0] - w[1]) == pytest.approx(exact)
    assert eng.bound_ratio(X, y, w[None, :], np.array([lam]), [np.array([0, 1])], alpha) <= 1.0
    wrong = w + np.array([0.5, -0.5])
    assert eng.bound_ratio(X, y, wrong[None, :], np.array([lam]), [np.array([0, 1])], alpha) > 1.0


def test_relative_spread_is_scale_free_and_paired_z_is_a_one_sample_z(rng):
    coefs = rng.standard_normal((50, 4)) + 3.0
    spread = eng.relative_spread(coefs)
    # the same float64 arithmetic on values scaled by 10: equal to a few ε
    np.testing.assert_allclose(eng.relative_spread(10 * coefs), spread, rtol=1e-13)
    mean = coefs.mean(axis=0)
    assert spread[0] == pytest.approx(np.sum((coefs[0] - mean) ** 2) / np.sum(mean**2), rel=1e-13)
    d = rng.standard_normal(40) + 0.5
    assert eng.paired_z(d) == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(40)), rel=1e-13)


def test_member_fraction_counts_only_where_the_group_is_active():
    coefs = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 2]], dtype=float)
    assert eng.member_fraction(coefs, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(
        (0.5 + 1 + 0.5) / 3
    )
    assert eng.member_fraction(np.zeros((3, 2)), [np.array([0, 1])]) == 0.0


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = eng.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

EN_BOUND = "elastic net: max |wᵢ − wⱼ| / Zou–Hastie bound over the path (same group)"
LASSO_BOUND = "lasso: max |wᵢ − wⱼ| / the same bound at its residual (same group)"
EN_MEMBERS = "elastic net: fraction of an active group's members nonzero"
LASSO_MEMBERS = "lasso: fraction of an active group's members nonzero"
GAP = "both paths: largest relative duality gap"
STABLE = "bootstrap: paired z of log relative spread, lasso − elastic net"


def _elastic_net_without_ridge(lam, l1_ratio):
    return ElasticNet(lam, 1.0)


def _lasso_with_ridge(lam):
    return ElasticNet(lam, eng._L1_RATIO)


WRONG = {
    "an 'elastic net' without its ridge part": (
        lambda mp: mp.setattr(eng, "ElasticNet", _elastic_net_without_ridge),
        {EN_BOUND, EN_MEMBERS, STABLE},
    ),
    "a 'lasso' with a ridge part": (
        lambda mp: mp.setattr(eng, "L1", _lasso_with_ridge),
        {LASSO_BOUND, LASSO_MEMBERS, STABLE},
    ),
    "paths solved to a loose tolerance": (lambda mp: mp.setattr(eng, "_SOLVER_TOL", 1e-2), {GAP}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    result = eng.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
