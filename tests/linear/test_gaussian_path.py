"""The covariance solver (``path(..., solver="covariance")``, :mod:`normpen.linear.solvers.gaussian_path`).

Its certificate is :meth:`Problem.duality_gap`'s, so the checks are those of any certified solver:

- the gap it reports is the gap :meth:`Problem.certify` recomputes on the coefficients it returns, up to
  the rounding of the two computations (the same sums in another order);
- every strength's gap is at most its threshold, :math:`\\max(\\text{tol}\\,P_0, 64\\epsilon|P|)`;
- against another solution with a certified gap :math:`G_2` (coordinate descent's, or scikit-learn's
  coefficients certified by :meth:`Problem.certify`), :math:`|P_1 - P_2| \\le G_1 + G_2` plus the rounding
  of two objectives, :math:`64\\epsilon(|P_1| + |P_2|)` (both lie in :math:`[P^\\star, P^\\star + G_i]`).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import enet_path, lasso_path

from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.datafits import Quadratic
from normpen.linear.path import _Setup, lambda_max, path
from normpen.linear.problem import Problem
from normpen.linear.solvers import gaussian_path
from normpen.linear.solvers.gaussian_path import PathSolver
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

EPS = np.finfo(np.float64).eps


def _regression(n, p, seed, fit_intercept=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + (3.0 if fit_intercept else 0.0)
    X[:, 1::2] += 0.6 * X[:, ::2][:, : X[:, 1::2].shape[1]]  # correlated pairs
    w = np.zeros(p)
    w[: min(5, p)] = [2.0, -1.5, 1.0, 0.5, -0.5][: min(5, p)]
    return X, X @ w + 0.5 * rng.standard_normal(n) + (4.0 if fit_intercept else 0.0)


def _groups(p, rng, covered=1.0):
    """Consecutive groups of 1 to 5 features over a random ``covered`` share of them (the rest in no group:
    unpenalized coordinates), with weights in [0.5, 2]."""
    order = rng.permutation(p)[: max(1, int(round(covered * p)))]
    cuts = np.cumsum(rng.integers(1, 6, size=p))
    groups = [g for g in np.split(order, cuts[cuts < order.size]) if g.size]
    return GroupLasso(1.0, groups, weights=rng.uniform(0.5, 2.0, len(groups)))


def _penalty(kind, p, rng=None):
    if kind == "group":
        return _groups(p, rng)
    if kind == "l1":
        return L1(1.0)
    if kind == "enet":
        return ElasticNet(1.0, 0.5)
    weights = rng.uniform(0.5, 2.0, p)
    weights[rng.choice(p, size=min(2, p - 1), replace=False)] = 0.0  # unpenalized coordinates (not all)
    return L1(1.0, weights=weights)


def _gap_rounding(X, y, a, coef, intercept, block):
    r"""A first-order bound on how far two float64 evaluations of the gap at ``coef`` can differ.

    Each sums the same terms in another order; recursive summation of ``k`` terms errs by at most ``k eps``
    times the sum of their magnitudes. The predictor :math:`z = Xw + b` errs by
    :math:`\delta z = (p + 1)\epsilon(|X||w| + |b|)`, the gradient :math:`X^\top G` (:math:`G = a(z - y)`) by
    :math:`\delta g = n\epsilon|X|^\top|G| + |X|^\top(a\,\delta z)`, and the dual scale
    :math:`\kappa = \max_b \|g_b\|/w_b` over the blocks (a coordinate's L1 weight, a group's group weight) by
    :math:`\max_b \|\delta g_b\| / w_b` (the norm is 1-Lipschitz), which moves the dual objective by at
    most :math:`(\sum a|uy| + \sum a u^2)\,\delta\kappa` (the ridge's conjugate by
    :math:`\sum_b (\|g_b\| - w_b)_+\|\delta g_b\| / \mu`). The projection onto unpenalized columns'
    constraints adds a correction of the size of their gradient, whose rounding is that of :math:`\delta g`.
    """
    n, p = X.shape
    u = X @ coef + intercept - y
    G = a * u
    dz = (p + 1) * EPS * (np.abs(X) @ np.abs(coef) + abs(intercept))
    dg = n * EPS * (np.abs(X).T @ np.abs(G)) + np.abs(X).T @ (a * dz)
    grad = block.block_norms((X.T @ G)[:, None])
    dg = block.block_norms(dg[:, None])
    weights = block.block_max(block.l1[:, 0]) + block.group_weights
    dual_terms = float(a @ np.abs(u * y)) + float(a @ (u * u))
    objective = float(a @ (u * u)) / 2 + block.value(coef)
    bound = (n + p) * EPS * (abs(objective) + dual_terms) + float(a @ ((2 * np.abs(u) + np.abs(y)) * dz))
    if block.ridge > 0:
        bound += float(np.maximum(np.abs(grad) - weights, 0) @ dg) / block.ridge
    else:
        penalized = weights > 0
        bound += dual_terms * float(np.max(dg[penalized] / weights[penalized], initial=0.0))
        bound += dual_terms * float(np.max(dg[~penalized], initial=0.0)) / weights[penalized].min()
    return 2 * bound


def _check_certificates(X, y, penalty, result, tol, sample_weight=None, fit_intercept=True, positive=False):
    """Reported gap = recomputed gap (to rounding), and every gap at most its threshold."""
    problem = Problem(X, y, Quadratic(), sample_weight, fit_intercept)
    p0 = problem.objective_at_zero()
    p = X.shape[1]
    for lam, coef, intercept, gap, objective in zip(
        result.lams, result.coefs, result.intercepts, result.dual_gaps, result.objectives, strict=True
    ):
        block = as_block_penalty(penalty.with_lam(lam), (p,), positive)
        report = problem.certify(block, coef, intercept if fit_intercept else None)
        rounding = _gap_rounding(X, y, problem.weights, coef, intercept, block)
        assert abs(report.gap - gap) <= rounding
        assert abs(report.primal - objective) <= rounding
        assert gap <= max(tol * p0, 64 * EPS * abs(objective))


def _agree(one, two, gaps_one, gaps_two):
    """|P_1 - P_2| <= G_1 + G_2 + 64 eps (|P_1| + |P_2|) at every strength (module docstring)."""
    bound = np.maximum(gaps_one, 0) + np.maximum(gaps_two, 0) + 64 * EPS * (np.abs(one) + np.abs(two))
    assert np.all(np.abs(one - two) <= bound)


@pytest.mark.parametrize("kind", ["l1", "enet", "weighted", "group"])
@pytest.mark.parametrize("shape", [(80, 30), (40, 120)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_agrees_with_coordinate_descent_within_both_certificates(kind, shape, fit_intercept):
    X, y = _regression(*shape, seed=1, fit_intercept=fit_intercept)
    penalty = _penalty(kind, shape[1], np.random.default_rng(2))
    for tol in (1e-3, 1e-8):
        ours = path(
            X, y, Quadratic(), penalty, n_lams=20, fit_intercept=fit_intercept, tol=tol, solver="covariance"
        )
        cd = path(X, y, Quadratic(), penalty, n_lams=20, fit_intercept=fit_intercept, tol=tol, solver="cd")
        assert ours.converged.all()
        _check_certificates(X, y, penalty, ours, tol, fit_intercept=fit_intercept)
        _agree(ours.objectives, cd.objectives, ours.dual_gaps, cd.dual_gaps)


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_agrees_with_scikit_learn_paths_within_both_certificates(l1_ratio):
    X, y = _regression(60, 150, seed=3, fit_intercept=False)
    penalty = L1(1.0) if l1_ratio == 1 else ElasticNet(1.0, l1_ratio)
    ours = path(X, y, Quadratic(), penalty, n_lams=15, fit_intercept=False, tol=1e-8, solver="covariance")
    if l1_ratio == 1:
        _, coefs, _ = lasso_path(X, y, alphas=ours.lams, tol=1e-10, max_iter=100_000)
    else:
        _, coefs, _ = enet_path(X, y, l1_ratio=l1_ratio, alphas=ours.lams, tol=1e-10, max_iter=100_000)
    problem = Problem(X, y, Quadratic(), None, False)
    reports = [
        problem.certify(as_block_penalty(penalty.with_lam(lam), (150,)), coef)
        for lam, coef in zip(ours.lams, coefs.T, strict=True)
    ]
    theirs = np.array([r.primal for r in reports])
    _agree(ours.objectives, theirs, ours.dual_gaps, np.array([r.gap for r in reports]))
    _check_certificates(X, y, penalty, ours, 1e-8, fit_intercept=False)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 60),
    p=st.integers(1, 90),
    kind=st.sampled_from(["l1", "enet", "weighted", "group"]),
    fit_intercept=st.booleans(),
    positive=st.booleans(),
    weighted_samples=st.booleans(),
    tol=st.sampled_from([1e-2, 1e-4, 1e-9]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_is_certified_and_agrees_with_coordinate_descent(
    n, p, kind, fit_intercept, positive, weighted_samples, tol, seed
):
    # Unpenalized coordinates under positivity go to coordinate descent (their one-sided dual constraint:
    # tests/linear/test_positive_free_certificate.py), so this solver does not take them
    assume(not (positive and kind == "weighted"))
    rng = np.random.default_rng(seed)
    X, y = _regression(n, p, seed, fit_intercept)
    penalty = _penalty(kind, p, rng)
    sample_weight = rng.uniform(0.0, 2.0, n) if weighted_samples else None
    if sample_weight is not None:
        sample_weight[0] = 1.0  # a positive sum
    options = dict(sample_weight=sample_weight, fit_intercept=fit_intercept, positive=positive)
    top = lambda_max(X, y, Quadratic(), penalty, **options)
    assume(0 < top < np.inf)  # (0: a positive fit of data whose loss only negative weights lower)
    options["lams"] = top * np.geomspace(1, 1e-2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tol below what float64 certifies warns (checked below)
        ours = path(X, y, Quadratic(), penalty, tol=tol, solver="covariance", **options)
        cd = path(X, y, Quadratic(), penalty, tol=tol, solver="cd", **options)
    assert ours.converged.all()
    if positive:
        assert np.all(ours.coefs >= 0)
    _check_certificates(X, y, penalty, ours, tol, sample_weight, fit_intercept, positive)
    _agree(ours.objectives, cd.objectives, ours.dual_gaps, cd.dual_gaps)


def test_auto_takes_it_for_least_squares_on_dense_float64_data_only():
    X, y = _regression(30, 10, seed=4)
    setup = _Setup(Problem(X, y, Quadratic()), L1(1.0), False)
    from normpen.linear.path import _choose_solver

    assert _choose_solver("auto", setup).name == "covariance"
    for other in (X.astype(np.float32), __import__("scipy.sparse").sparse.csc_matrix(X)):
        assert _choose_solver("auto", _Setup(Problem(other, y, Quadratic()), L1(1.0), False)).name == "cd"


def test_options_of_coordinate_descent_alone_go_to_it():
    X, y = _regression(40, 20, seed=5)
    with_cd = path(X, y, Quadratic(), L1(1.0), n_lams=5, anderson=0, tol=1e-8)
    cd = path(X, y, Quadratic(), L1(1.0), n_lams=5, anderson=0, tol=1e-8, solver="cd")
    np.testing.assert_array_equal(with_cd.coefs, cd.coefs)  # the same solver, the same arithmetic


def _solver_along(X, y, penalty, sample_weight=None):
    problem = Problem(X, y, Quadratic(), sample_weight)
    setup = _Setup(problem, penalty, False)
    return problem, setup, PathSolver(problem, setup.unit)


def _gram_budget(patch, n_samples, coordinates):
    """Cut the kernel's Gram budget (``patch``, a monkeypatch) to ``coordinates`` working-set coordinates
    of ``n_samples`` samples, at every tolerance (:func:`gaussian_path.gram_limit`)."""
    patch.setattr(gaussian_path, "_GRAM_COLUMN", 1)
    patch.setattr(gaussian_path, "_GRAM_ENTRIES", n_samples * coordinates + coordinates**2)


def test_a_warm_start_takes_fewer_epochs_than_a_cold_one_to_the_same_solution():
    X, y = _regression(100, 30, seed=6)
    problem, setup, solve = _solver_along(X, y, L1(1.0))
    state = setup.start()
    solve(problem, 0.05, state, tol=1e-10)
    warm = solve(problem, 0.045, state, tol=1e-10)
    cold = solve(problem, 0.045, setup.start(), tol=1e-10)  # another state: a fresh start from W = 0
    # both within 1e-10 P0 of the optimum: the objectives agree to the gaps (module docstring)
    _agree(np.array([warm.objective]), np.array([cold.objective]), warm.dual_gap, cold.dual_gap)
    assert warm.n_epochs < cold.n_epochs


@pytest.mark.parametrize("kind", ["l1", "group"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_checks_bound_the_gradient_away_from_the_dual_ball_and_certify_as_the_exact_one(kind, fit_intercept):
    """Between full gradients a check forms the gradient only of the blocks whose bound may reach the dual
    ball's boundary: fewer full gradients than strengths, and every reported gap is still the one
    :meth:`Problem.certify` recomputes from the whole exact gradient (to the rounding of the two sums)."""
    X, y = _regression(100, 400, seed=11, fit_intercept=fit_intercept)
    penalty = _penalty(kind, 400, np.random.default_rng(11))
    problem = Problem(X, y, Quadratic(), fit_intercept=fit_intercept)
    setup = _Setup(problem, penalty, False)
    solve = PathSolver(problem, setup.unit)
    state = setup.start()
    lams = lambda_max(X, y, Quadratic(), penalty, fit_intercept=fit_intercept) * np.geomspace(1, 0.05, 20)
    gradients = 0
    for lam in lams:
        solution = solve(problem, float(lam), state, tol=1e-3)
        gradients += solve.kernel.n_gradients
        assert solution.converged
        block = setup.unit.scaled(float(lam))
        report = problem.certify(block, solution.coef, solution.intercept if fit_intercept else None)
        rounding = _gap_rounding(X, y, problem.weights, solution.coef, solution.intercept, block)
        assert abs(report.gap - solution.dual_gap) <= rounding
    assert gradients < lams.size


@pytest.mark.parametrize("gram", [True, False])
def test_on_one_face_a_strength_starts_on_the_line_through_the_last_two_solutions(monkeypatch, gram):
    """While no sign changes the lasso's solution is affine in lambda, so from a path's third strength on the
    kernel starts on the next solution (the line through the last two, to rounding): fewer epochs than the
    second strength, which starts at the previous solution; with the Gram matrix and from the residual
    (its budget cut to 3 coordinates). Every strength is certified and agrees with cd's."""
    if not gram:
        _gram_budget(monkeypatch, 100, 3)
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((100, 12))
    X = Z + 0.8 * Z[:, [0]]  # correlated columns: coordinate descent needs several epochs from a stale start
    y = X[:, :6] @ np.array([3.0, -2.0, 2.5, -1.5, 2.0, 1.0]) + 0.1 * rng.standard_normal(100)
    lams = lambda_max(X, y, Quadratic(), L1(1.0)) * np.geomspace(0.05, 0.02, 8)
    cd = path(X, y, Quadratic(), L1(1.0), lams=lams, tol=1e-12, solver="cd")
    assert np.all(np.sign(cd.coefs) == np.sign(cd.coefs[0]))  # one face along the whole path
    problem, setup, solve = _solver_along(X, y, L1(1.0))
    state = setup.start()
    epochs = []
    for lam, objective, gap in zip(lams, cd.objectives, cd.dual_gaps, strict=True):
        solution = solve(problem, float(lam), state, tol=1e-10)
        assert solve.kernel.gram == gram and solution.converged
        _agree(np.array([solution.objective]), np.array([objective]), solution.dual_gap, gap)
        epochs.append(solution.n_epochs)
    assert max(epochs[2:]) < epochs[1]


def test_a_restarted_state_is_solved_from_its_own_coefficients():
    """The path's restart hands the solver a fresh state mid-path: it starts from that state's point."""
    X, y = _regression(50, 40, seed=7)
    lams = np.geomspace(0.5, 0.01, 6)
    problem, setup, solve = _solver_along(X, y, L1(1.0))
    state = setup.start()
    for lam in lams[:4]:
        solve(problem, float(lam), state, tol=1e-9)
    fresh = setup.restart()
    restarted = solve(problem, float(lams[4]), fresh, tol=1e-9)
    assert restarted.converged
    report = problem.certify(setup.unit.scaled(float(lams[4])), restarted.coef, restarted.intercept)
    assert report.gap <= 1e-9 * problem.objective_at_zero() + 64 * EPS * abs(report.primal)
    np.testing.assert_array_equal(fresh.W[:, 0], restarted.coef)


def test_no_strength_is_returned_at_its_warm_start():
    """Every strength gets coordinate descent before its first check (at a loose tol too)."""
    X, y = _regression(80, 40, seed=8)
    result = path(X, y, Quadratic(), L1(1.0), n_lams=10, tol=1e-2, solver="covariance")
    assert np.all(result.n_iters >= 1)
    assert not np.any(np.all(np.diff(result.coefs, axis=0) == 0, axis=1)[1:])  # each strength moved


def test_the_group_lasso_meets_its_optimality_conditions_group_by_group():
    """At tol 1e-12 each group satisfies its own KKT conditions (checked on the coefficients, independently of
    the certificate): a zero group :math:`\\|\\nabla_g F\\| \\le \\lambda v_g`, a nonzero one
    :math:`\\nabla_g F + \\lambda v_g\\beta_g/\\|\\beta_g\\| = 0`. The gap bounds the distance to the optimum,
    :math:`\\tfrac12\\|\\beta - \\beta^\\star\\|_Q^2 \\le G`, so the gradient is off by at most
    :math:`\\|Q^{1/2}\\|\\sqrt{2G}`; the direction of a nonzero group moves by that over its norm. Both are
    bounded by :math:`10^{-4}\\lambda v_g` here (the gap is ~1e-12 P0, the smallest nonzero group norm ~1e-2,
    measured over the strengths)."""
    X, y = _regression(120, 40, seed=11, fit_intercept=True)
    penalty = _groups(40, np.random.default_rng(12))
    result = path(X, y, Quadratic(), penalty, n_lams=8, tol=1e-12, solver="covariance")
    block = as_block_penalty(penalty, (40,))
    Xc = X - X.mean(axis=0)
    for lam, coef in zip(result.lams, result.coefs, strict=True):
        grad = Xc.T @ (Xc @ coef - (y - y.mean())) / X.shape[0]
        bound = 1e-4 * lam
        for g in range(block.n_blocks):
            rows, v = block.block_rows(g), block.group_weights[g]
            if v == 0:  # a coordinate in no group: unpenalized, its gradient is zero
                assert abs(grad[rows]).max() <= bound
                continue
            norm = np.linalg.norm(coef[rows])
            if norm == 0:
                assert np.linalg.norm(grad[rows]) <= lam * v * (1 + 1e-4)
            else:
                assert np.linalg.norm(grad[rows] + lam * v * coef[rows] / norm) <= bound * v


def _ridge_groups(p, rng, ridge):
    """A group elastic net as a BlockPenalty (groups of 1 to 4, no L1 weight, a ridge) at strength 1."""
    sizes = rng.integers(1, 5, size=p)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), p) + 1]
    sizes[-1] -= sizes.sum() - p
    sizes = sizes[sizes > 0]
    starts = np.cumsum(sizes) - sizes
    return BlockPenalty(
        np.zeros((p, 1)), rng.permutation(p), starts, rng.uniform(0.5, 2.0, sizes.size), ridge
    )


@pytest.mark.parametrize("positive", [False, True])
def test_a_group_elastic_net_is_certified_and_agrees_with_coordinate_descent(positive):
    """The group elastic net (and with positivity, whose groups take proximal gradient steps) strength by
    strength through the path solver, against cd.solve on the same block penalty."""
    from normpen.linear.solvers import cd

    X, y = _regression(60, 25, seed=13)
    unit = _ridge_groups(25, np.random.default_rng(14), 0.5)
    if positive:
        unit = as_block_penalty(unit, (25,), positive=True)
    problem = Problem(X, y, Quadratic())
    solve = PathSolver(problem, unit)
    setup = _Setup(problem, L1(1.0), positive)
    state = setup.start()
    top = unit.zero_scale(problem.target_products())
    for lam in top * np.geomspace(1, 1e-3, 6):
        ours = solve(problem, float(lam), state, tol=1e-10)
        theirs = cd.solve(problem, unit.scaled(float(lam)), setup.start(), tol=1e-10)
        assert ours.converged
        report = problem.certify(unit.scaled(float(lam)), ours.coef, ours.intercept)
        rounding = _gap_rounding(X, y, problem.weights, ours.coef, ours.intercept, unit.scaled(float(lam)))
        assert abs(report.gap - ours.dual_gap) <= rounding
        _agree(np.array([ours.objective]), np.array([theirs.objective]), ours.dual_gap, theirs.dual_gap)
        if positive:
            assert np.all(ours.coef >= 0)


def test_a_working_set_wider_than_the_gram_budget_reads_its_gradient_from_the_residual(monkeypatch):
    """Past :func:`gaussian_path.gram_limit` the kernel drops the working set's columns and Gram matrix
    (memory :math:`n|ws| + |ws|^2` bounded) and keeps solving from the residual: the same certified path."""
    _gram_budget(monkeypatch, 60, 20)
    assert gaussian_path.gram_limit(60, 1e-3) == 15  # max(1 // 60, 60 // 4) within the 20 the entries allow
    assert gaussian_path.gram_limit(60, 1e-8) == 20  # a tight tol: the entries alone
    X, y = _regression(60, 80, seed=15)
    for penalty in (L1(1.0), _groups(80, np.random.default_rng(16))):
        kernel = _solved_like_cd(X, y, penalty)
        assert not kernel.gram  # the working set outgrew the budget


def _solved_like_cd(X, y, penalty):
    """A path of 10 strengths to 1e-2 of lambda_max at tol 1e-8, strength by strength, each certified and
    agreeing with cd's; returns the solver's kernel as the path left it."""
    kernel, lams, solutions = _solved_path(X, y, penalty)
    _agree_with_cd(X, y, penalty, lams, solutions)
    return kernel


def _solved_path(X, y, penalty):
    """``(kernel, lams, solutions)`` of the solver along 10 strengths to 1e-2 of lambda_max at tol 1e-8."""
    problem, setup, solve = _solver_along(X, y, penalty)
    state = setup.start()
    lams = lambda_max(X, y, Quadratic(), penalty) * np.geomspace(1, 1e-2, 10)
    return solve.kernel, lams, [solve(problem, float(lam), state, tol=1e-8) for lam in lams]


def _agree_with_cd(X, y, penalty, lams, solutions):
    """Every solution certified, and agreeing with cd's path at ``lams`` within both certificates."""
    cd = path(X, y, Quadratic(), penalty, lams=lams, tol=1e-8, solver="cd")
    for solution, objective, gap in zip(solutions, cd.objectives, cd.dual_gaps, strict=True):
        assert solution.converged
        _agree(np.array([solution.objective]), np.array([objective]), solution.dual_gap, gap)


@pytest.mark.parametrize("few_epochs, keeps_gram", [(10**9, False), (0, True)])
def test_after_a_strength_that_converged_in_few_epochs_a_wide_working_set_leaves_the_gram_matrix(
    monkeypatch, few_epochs, keeps_gram
):
    """At a tight tol the Gram matrix is kept up to the memory budget, unless the last strength took fewer
    than ``_FEW_EPOCHS`` epochs: then a working set past the loose limit reads its gradient from the
    residual (here every strength counts as quick, or none does). The same certified path either way."""
    monkeypatch.setattr(gaussian_path, "_GRAM_COLUMN", 1)  # loose limit: 60 // 4 = 15 coordinates
    monkeypatch.setattr(gaussian_path, "_FEW_EPOCHS", few_epochs)
    X, y = _regression(60, 80, seed=15)
    kernel = _solved_like_cd(X, y, ElasticNet(1.0, 0.5))
    assert kernel.ws_n > 15  # past the loose limit, within the budget
    assert kernel.gram == keeps_gram


@pytest.mark.parametrize(
    "penalty",
    [
        SparseGroupLasso(1.0, [np.arange(0, 4), np.arange(4, 10)], l1_ratio=0.5),  # groups with an L1 weight
        GroupLasso(1.0, [np.arange(0, 4), np.arange(4, 10)], weights=[1.0, 0.0]),  # an unpenalized group
    ],
)
def test_groups_it_does_not_solve_go_to_coordinate_descent(penalty):
    X, y = _regression(30, 10, seed=17)
    from normpen.linear.path import _choose_solver

    assert _choose_solver("auto", _Setup(Problem(X, y, Quadratic()), penalty, False)).name == "cd"
    assert (
        _choose_solver(
            "auto", _Setup(Problem(X, y, Quadratic()), _groups(10, np.random.default_rng(0)), False)
        ).name
        == "covariance"
    )


def test_groups_wider_than_the_gram_budget_run_here_at_loose_tolerances_and_in_cd_at_tight_ones(monkeypatch):
    """Past the budget a group lasso working set is solved on the residual, which cd's accelerated sweeps
    beat at tight tolerances (measured in gaussian_path.hands_to_cd): auto takes the path, and hands it to
    cd below tol 1e-4; single coordinates stay at every tolerance. Either way the path is certified and
    agrees with cd's."""
    from normpen.linear.path import _choose_solver

    path_module = importlib.import_module("normpen.linear.path")  # (normpen.linear.path is also the function)

    X, y = _regression(30, 40, seed=18)
    groups = _groups(40, np.random.default_rng(19))
    monkeypatch.setattr(gaussian_path, "_GRAM_COLUMN", 1)  # gram_limit(30) = 30 // 4 = 7 < 40 features
    assert _choose_solver("auto", _Setup(Problem(X, y, Quadratic()), groups, False)).name == "covariance"
    handed = []
    cd_grid = path_module._cd_grid
    monkeypatch.setattr(path_module, "_cd_grid", lambda *args: handed.append(True) or cd_grid(*args))
    for penalty, tol, to_cd in ((groups, 1e-3, False), (groups, 1e-6, True), (L1(1.0), 1e-6, False)):
        handed.clear()
        ours = path(X, y, Quadratic(), penalty, n_lams=8, tol=tol)
        assert bool(handed) == to_cd
        cd = path(X, y, Quadratic(), penalty, n_lams=8, tol=tol, solver="cd")
        assert ours.converged.all()
        _check_certificates(X, y, penalty, ours, tol)
        _agree(ours.objectives, cd.objectives, ours.dual_gaps, cd.dual_gaps)


@pytest.mark.parametrize("gram", [True, False])
def test_a_path_decomposes_each_group_gram_block_once(monkeypatch, gram):
    """The working set's groups take their eigen-decompositions from the problem's Gram cache, which also
    serves the blocks' :math:`L_g` of the checks' bounds: over a whole path (its working set held with the
    Gram matrix, or read from the residual) ``eigh`` meets each group's block once, and the path is the
    certified one of coordinate descent."""
    if not gram:
        _gram_budget(monkeypatch, 60, 20)
    decomposed = []
    eigh = np.linalg.eigh

    def counting_eigh(a, *args, **kwargs):
        decomposed.append(1 if a.ndim == 2 else a.shape[0])
        return eigh(a, *args, **kwargs)

    X, y = _regression(60, 80, seed=15)
    penalty = GroupLasso(1.0, np.split(np.random.default_rng(17).permutation(80), 20))  # 20 groups of 4
    with monkeypatch.context() as patched:
        patched.setattr(np.linalg, "eigh", counting_eigh)
        kernel, lams, solutions = _solved_path(X, y, penalty)
    assert kernel.gram == gram
    assert kernel.ws_nb > 1
    assert sum(decomposed) == 20
    _agree_with_cd(X, y, penalty, lams, solutions)


def test_without_the_gram_matrix_a_round_settles_after_its_epoch_over_the_nonzero_blocks():
    """Without the Gram matrix, epochs over the nonzero blocks alone follow a full epoch; once their
    decrease meets the target, the check decides (a working-set gap formed from the residual would cost
    the check's own pass over the working set's columns). So a round can end after two epochs, a full
    one and one over the nonzero blocks, where a rule deciding only on full epochs ends after an odd
    number (full, nonzero blocks, full, ...). The path is certified at every strength."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 80))
    y = X[:, :40] @ rng.standard_normal(40) + rng.standard_normal(60)
    penalty = GroupLasso(1.0, np.split(np.arange(80), 20))  # 20 groups of 4
    problem, setup, solve = _solver_along(X, y, penalty)
    state = setup.start()
    rounds = []  # (Gram matrix kept, working-set rounds, epochs) of each strength
    with pytest.MonkeyPatch.context() as patched:
        _gram_budget(patched, 60, 20)
        for lam in lambda_max(X, y, Quadratic(), penalty) * np.geomspace(1, 0.05, 30):
            solution = solve(problem, float(lam), state, tol=1e-3)
            assert solution.converged
            rounds.append((solve.kernel.gram, solution.n_iter, solution.n_epochs))
    assert (False, 1, 2) in rounds


#: The tolerance of :func:`_kept_residual_path`.
KEPT_TOL = 1e-3


def _kept_residual_path(weighted):
    """A path of 30 strengths at :data:`KEPT_TOL` on working sets wider than the Gram budget (a group
    lasso, groups of 4; columns off centre by 3, so the centring's updates are large; unequal sample
    weights or equal ones): ``(problem, penalty, strengths, solutions, kernel readings)``, the readings
    per strength ``(Gram matrix kept, points formed, residual error bound, z, b)``."""
    X, y = _regression(60, 80, seed=17)
    weights = np.random.default_rng(18).uniform(0.2, 3.0, 60) if weighted else None
    penalty = GroupLasso(1.0, np.split(np.arange(80), 20))
    problem, setup, solve = _solver_along(X, y, penalty, weights)
    state = setup.start()
    lams = lambda_max(X, y, Quadratic(), penalty, sample_weight=weights) * np.geomspace(1, 0.05, 30)
    solutions, readings = [], []
    with pytest.MonkeyPatch.context() as patched:
        _gram_budget(patched, 60, 20)
        for lam in lams:
            solutions.append(solve(problem, float(lam), state, tol=KEPT_TOL))
            kernel = solve.kernel
            z, b = kernel.point()
            readings.append((kernel.gram, kernel.n_points, kernel.residual_error, z.copy(), b))
    assert not solve.kernel.gram
    return problem, penalty, lams, solutions, readings


@pytest.mark.parametrize("weighted", [False, True])
def test_without_the_gram_matrix_the_point_read_from_the_kept_residual_is_within_its_bound(weighted):
    r"""Far from the rounding floor a round's point is read from the residual the epochs keep,
    :math:`z = y + G/a`, with no pass over the columns, and the kernel's bound :math:`E` on the kept
    residual's error holds: :math:`\|a^{1/2}(z - z^\star)\| \le E` plus the rounding of
    :math:`z^\star = Xw + b` formed here, :math:`(p + 2)\epsilon(|X||w| + |b|)` an entry (a sum of
    :math:`p + 1` terms), and of the kernel's intercept :math:`\bar y - \bar x^\top w`,
    :math:`(p + 2)\epsilon(|\bar y| + |\bar x|^\top|w|)`. At tol 1e-3 the datafit may be off by
    :math:`10^{-6}P_0` and :math:`E` stays near :math:`10^{-12}\sqrt{P_0}`: after the first strength
    solved without the Gram matrix (whose first round starts from a point formed with it) no strength
    forms a point."""
    problem, _, _, solutions, readings = _kept_residual_path(weighted)
    X, y, a = problem.X, problem.y, problem.weights
    for solution, (_, _, error, z, b) in zip(solutions, readings, strict=True):
        w = solution.coef
        exact = X @ w + b
        rounding = (
            (X.shape[1] + 2)
            * EPS
            * (np.abs(X) @ np.abs(w) + abs(b) + abs(a @ y) + np.abs(problem.means()) @ np.abs(w))
        )
        assert np.sqrt(a @ (z - exact) ** 2) <= error + np.sqrt(a @ rounding**2)
    residual = [points for gram, points, *_ in readings if not gram]
    assert len(residual) >= 2
    assert residual[1:] == [0] * (len(residual) - 1)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_point_read_from_the_kept_residual_is_certified_within_a_thousandth_of_the_tolerance(weighted):
    r"""The datafit read from the kept residual is off by at most :math:`E(R + E/2)`, which the kernel keeps
    below :math:`10^{-3}\,\mathrm{tol}\,P_0` and adds to the gap it reports: the reported gap is at least
    the gap :meth:`Problem.certify` recomputes on the returned coefficients (to the two computations'
    rounding, :func:`_gap_rounding`) and at most that plus twice the allowance (the bound, and the error
    it bounds); every strength meets its threshold."""
    problem, penalty, lams, solutions, _ = _kept_residual_path(weighted)
    X, y, a = problem.X, problem.y, problem.weights
    p0 = problem.objective_at_zero()
    for lam, solution in zip(lams, solutions, strict=True):
        block = as_block_penalty(penalty.with_lam(lam), (X.shape[1],), False)
        report = problem.certify(block, solution.coef, solution.intercept)
        rounding = _gap_rounding(X, y, a, solution.coef, solution.intercept, block)
        assert report.gap <= solution.dual_gap + rounding
        assert solution.dual_gap <= report.gap + rounding + 2 * 1e-3 * KEPT_TOL * p0
        assert solution.converged
