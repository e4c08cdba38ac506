"""BlockPenalty against the penalty objects, numerical minimisation and the definitions of its dual parts.

Tolerances: two float64 evaluations of the same formula on 7 entries of size <= 8 (another order of the sums,
a square root) differ by a few eps times the magnitude, <= 1e-14 relative or absolute (measured <= 3.2e-15
over 200-3000 draws); a result checked against scipy's Powell allows the rounding of an objective of size
<= 30 on 7 terms (7 * 30 * eps ~ 5e-14) with 20x room, 1e-12 (measured shortfalls <= 1.1e-14).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.datafits import Quadratic
from normpen.linear.path import lambda_max
from normpen.linear.problem import Problem
from normpen.linear.solvers.cd import coordinate_descent
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

GROUPS = [np.array([0, 1, 2]), np.array([5, 3]), np.array([6])]  # feature 4 is in no group

PENALTIES = {
    "l1": L1(0.7),
    "weighted_l1": L1(0.7, weights=np.array([0.0, 1, 2, 0.5, 1, 3, 1])),
    "elastic_net": ElasticNet(0.7, 0.3),
    "l2": L2(0.7),
    "group_lasso": GroupLasso(0.7, GROUPS),
    "weighted_group_lasso": GroupLasso(0.7, GROUPS, weights=[1.0, 0.0, 2.0]),
    "sparse_group_lasso": SparseGroupLasso(0.7, GROUPS, 0.4),
}


@pytest.mark.parametrize("name", PENALTIES)
def test_value_matches_the_penalty_object(name):
    penalty = PENALTIES[name]
    block = as_block_penalty(penalty, (7,))
    x = np.random.default_rng(0).standard_normal(7)
    # 7 terms in another order (measured <= 5.8e-16)
    assert block.value(x) == pytest.approx(float(penalty.value(x)), rel=1e-14)


@pytest.mark.parametrize("name", [n for n in PENALTIES if n != "sparse_group_lasso"])
@pytest.mark.parametrize("step", [0.1, 1.0, 3.0])
def test_prox_matches_the_penalty_object(name, step):
    penalty = PENALTIES[name]
    block = as_block_penalty(penalty, (7,))
    x = np.random.default_rng(1).standard_normal(7) * 2
    # a few eps * |x| <= 8 (measured <= 1.3e-15)
    np.testing.assert_allclose(block.prox(x, step)[:, 0], penalty.prox(x, step), atol=1e-14)


@given(seed=st.integers(0, 2**31 - 1), step=st.floats(0.05, 3), rho=st.floats(0, 1), positive=st.booleans())
@settings(max_examples=25, deadline=None)
def test_sparse_group_prox_minimises_its_objective(seed, step, rho, positive):
    """The composed prox beats every point scipy finds for 1/2||z - x||^2 + s P(z) (+ positivity)."""
    x = np.random.default_rng(seed).standard_normal(7) * 2
    block = as_block_penalty(SparseGroupLasso(0.7, GROUPS, rho), (7,), positive=positive)
    z = block.prox(x, step)[:, 0]

    def objective(v):
        v = np.maximum(v, 0) if positive else v
        return 0.5 * np.sum((v - x) ** 2) + step * block.value(v)

    best = min(
        (
            minimize(objective, start, method="Powell", options={"xtol": 1e-10, "ftol": 1e-14})
            for start in (x, z)
        ),
        key=lambda r: r.fun,
    )
    assert objective(z) <= best.fun + 1e-12  # rounding of the objective (module docstring; measured <= 7e-15)
    if positive:
        assert np.all(z >= 0)


@given(seed=st.integers(0, 2**31 - 1), rho=st.floats(0.05, 0.95))
@settings(max_examples=25, deadline=None)
def test_block_dual_norm_puts_the_block_on_the_dual_sphere(seed, rho):
    r""":math:`t_g` solves :math:`\|S_{t\alpha}(V_g)\| = t\beta_g`: V/t is on the dual ball's boundary."""
    V = np.random.default_rng(seed).standard_normal((7, 1))
    block = as_block_penalty(SparseGroupLasso(1.0, GROUPS, rho), (7,))
    t = block.block_dual_norms(V)
    for g in range(block.n_blocks):
        rows = block.block_rows(g)
        excess = np.maximum(np.abs(V[rows]) - t[g] * block.l1[rows], 0)
        # exact root: rounding only (measured <= 3.2e-15)
        assert np.linalg.norm(excess) == pytest.approx(t[g] * block.group_weights[g], abs=1e-14)


def test_block_dual_norm_closed_forms():
    V = np.random.default_rng(3).standard_normal((7, 1))
    lasso = as_block_penalty(L1(2.0), (7,))
    # one division each: <= 1 ulp
    np.testing.assert_allclose(lasso.block_dual_norms(V), np.abs(V[:, 0]) / 2, rtol=1e-15)
    group = as_block_penalty(GroupLasso(1.0, GROUPS), (7,))
    t = group.block_dual_norms(V)
    # a 3-term norm and a division
    assert t[0] == pytest.approx(np.linalg.norm(V[[0, 1, 2]]) / np.sqrt(3), rel=1e-14)
    assert np.isinf(t[-1])  # feature 4 is unpenalized and nonzero
    assert group.dual_scale(V) == pytest.approx(max(1.0, t[group.penalized].max()), rel=1e-14)


def test_elastic_net_conjugate_is_the_closed_form():
    lam, rho = 0.8, 0.3
    V = np.random.default_rng(4).standard_normal((7, 1)) * 2
    block = as_block_penalty(ElasticNet(lam, rho), (7,))
    expected = np.sum(np.maximum(np.abs(V) - lam * rho, 0) ** 2) / (2 * lam * (1 - rho))
    assert block.conjugate(V) == pytest.approx(expected, rel=1e-14)  # 7 terms in another order


def test_positive_elastic_net_conjugate_is_the_one_sided_closed_form():
    """With positivity only the positive part of V is thresholded: sup over w >= 0 of <v, w> - P(w)."""
    lam, rho = 0.8, 0.3
    V = np.random.default_rng(4).standard_normal((7, 1)) * 2
    block = as_block_penalty(ElasticNet(lam, rho), (7,), positive=True)
    expected = np.sum(np.maximum(V - lam * rho, 0) ** 2) / (2 * lam * (1 - rho))
    assert block.conjugate(V) == pytest.approx(expected, rel=1e-14)  # as the closed form above


def test_conjugate_matches_a_numerical_supremum():
    """P*(v) = sup_w <v, w> - P(w) for the sparse-group lasso plus a ridge part."""
    base = as_block_penalty(SparseGroupLasso(0.6, GROUPS, 0.5), (7,))
    block = BlockPenalty(base.l1, base.row_order, base.block_starts, base.group_weights, 0.9)
    v = np.random.default_rng(5).standard_normal(7) * 2
    result = minimize(
        lambda w: block.value(w) - v @ w, np.zeros(7), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14}
    )
    # Powell's rounding (module docstring); the ridge 0.9 makes its xtol=1e-10 cost 0.45 * 1e-20
    assert block.conjugate(v[:, None]) == pytest.approx(-result.fun, abs=1e-12)


@pytest.mark.parametrize("name", ["l1", "weighted_l1", "elastic_net", "group_lasso", "sparse_group_lasso"])
def test_lambda_max_is_the_exact_threshold_of_the_zero_solution(name):
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((40, 7)), rng.standard_normal(40)
    penalty = PENALTIES[name]
    unit = as_block_penalty(penalty.with_lam(1.0), (7,))
    lam_max = lambda_max(X, y, Quadratic(), penalty)
    penalized = unit.penalized[unit.block_of_row]
    # X^T y (40 terms) rounds by 40 eps ~ 1e-14 relative: 1e-9 above lam_max is zero on every machine; 1e-3
    # below, the zero point's gap ~ (1e-3 lam_max)^2 / (2L) is far above tol=1e-12, so CD must leave it
    above = coordinate_descent(X, y, Quadratic(), penalty.with_lam(lam_max * (1 + 1e-9)), tol=1e-12)
    below = coordinate_descent(X, y, Quadratic(), penalty.with_lam(lam_max * (1 - 1e-3)), tol=1e-12)
    assert np.all(above.coef[penalized] == 0)
    assert np.any(below.coef[penalized] != 0)


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None)
def test_gap_safe_screening_never_discards_a_nonzero_block(seed):
    """Blocks certified zero from a rough point (its dual point and gap) are zero at the exact optimum."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((30, 7)), rng.standard_normal(30)
    penalty = SparseGroupLasso(0.1, GROUPS, 0.5)
    block = as_block_penalty(penalty, (7,))
    # tol=1e-13: ||w - w*|| <= sqrt(2 gap / mu) ~ 1e-6 moves a block's correlation by ~1e-6, far inside the
    # screening margin that 0.05 noise leaves, so the zeros of this point are those of w*
    exact = coordinate_descent(X, y, Quadratic(), penalty, tol=1e-13, screening=False).coef
    rough = exact + 0.05 * rng.standard_normal(7)
    problem = Problem(X, y, Quadratic())
    state = problem.state(rough)
    problem.refit_intercept(state)
    _, grad = problem.full_gradient(state)
    gap = problem.duality_gap(state.z, block, state.W, grad).gap
    lipschitz = problem.block_lipschitz(block)
    certified = block.certified_zero(-grad, np.sqrt(2 * gap * lipschitz))
    for g in np.flatnonzero(certified):
        assert np.all(exact[block.block_rows(g)] == 0)


def _screening_cases(m):
    """Block penalties on (7, m) coefficients, each with an unpenalized block (row 4)."""
    blocks = [np.array([0, 1, 2]), np.array([5, 3]), np.array([6]), np.array([4])]
    l1 = np.full((7, m), 0.3)
    l1[4] = 0.0
    weighted = l1 * np.arange(1, 8)[:, None]
    return {
        "weighted_l1": BlockPenalty.separable(weighted),
        "elastic_net": BlockPenalty.separable(l1, ridge=0.2),
        "group_lasso": BlockPenalty.from_blocks(np.zeros((7, m)), blocks, [0.7, 0.0, 1.4, 0.0]),
        "sparse_group_lasso": BlockPenalty.from_blocks(l1, blocks, [0.5, 0.4, 0.3, 0.0]),
    }


@pytest.mark.parametrize("name", ["weighted_l1", "elastic_net", "group_lasso", "sparse_group_lasso"])
@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("positive", [False, True])
def test_certified_zero_is_the_ball_test_of_its_definition(name, outputs, positive):
    r"""Block :math:`g` is certified iff it is penalized and, with :math:`D = A - \alpha`
    (:math:`A = |V|`, or :math:`V_+` with positivity), :math:`\|D_+\|_F + r_g < \beta_g` outside the box
    (some :math:`D > 0`), :math:`\max D + r_g < \beta_g` inside it: per block, from the docstring's formula.

    Exact booleans: both sides add the same two float64 numbers (a block's norm may round differently, by
    an ulp); only a draw within a few ulps of a threshold could differ, which 200 continuous draws of
    7 x m entries do not come near (none seen).
    """
    rng = np.random.default_rng(5)
    penalty = _screening_cases(outputs)[name]
    block = BlockPenalty(
        penalty.l1, penalty.row_order, penalty.block_starts, penalty.group_weights, penalty.ridge, positive
    )
    for _ in range(200):
        V = rng.standard_normal((7, outputs))
        radius = rng.uniform(0, 1, block.n_blocks)
        A = np.maximum(V, 0) if positive else np.abs(V)
        expected = np.zeros(block.n_blocks, dtype=bool)
        for g in range(block.n_blocks):
            D = A[block.block_rows(g)] - block.l1[block.block_rows(g)]
            distance = D.max() if D.max() <= 0 else np.sqrt(np.sum(np.maximum(D, 0) ** 2))
            expected[g] = block.penalized[g] and distance + radius[g] < block.group_weights[g]
        np.testing.assert_array_equal(block.certified_zero(V, radius), expected)


def test_unpenalized_singletons_have_infinite_dual_norm_where_their_gradient_is_nonzero():
    V = np.array([[0.0], [1.5], [-2.0], [0.0], [3.0], [-1.0], [0.5]])
    block = as_block_penalty(PENALTIES["weighted_l1"], (7,))  # weights 0, 1, 2, 0.5, 1, 3, 1; lam 0.7
    t = block.block_dual_norms(V)
    assert t[0] == 0  # unpenalized and zero: no constraint violated
    # one division each: <= 1 ulp
    np.testing.assert_allclose(t[1:], np.abs(V[1:, 0]) / (0.7 * block.l1[1:, 0] / 0.7), rtol=1e-15)
    V[0] = 0.1
    assert np.isinf(block.block_dual_norms(V)[0])
    assert block.dual_scale(V) == pytest.approx(3.0 / 0.7, rel=1e-15)  # the largest over penalized blocks


def test_groups_that_do_not_fit_the_coefficients_are_refused():
    with pytest.raises(ValueError, match="do not fit X"):
        as_block_penalty(GroupLasso(1.0, [np.array([0, 9])]), (5,))
    with pytest.raises(ValueError, match="whole rows"):
        as_block_penalty(GroupLasso(1.0, [np.array([0, 1, 2])]), (3, 2))
    with pytest.raises(ValueError, match="rows"):
        as_block_penalty(GroupLasso(1.0, "cols"), (3, 2))
    with pytest.raises(ValueError, match="one weight per coefficient"):
        as_block_penalty(L1(1.0, weights=np.ones(4)), (5,))
    with pytest.raises(TypeError, match="fista"):
        as_block_penalty(object(), (5,))


def test_rows_groups_of_a_matrix_are_the_multitask_group_lasso():
    W = np.random.default_rng(7).standard_normal((4, 3))
    block = as_block_penalty(GroupLasso(0.5, "rows"), (4, 3))
    assert block.value(W) == pytest.approx(float(GroupLasso(0.5, "rows").value(W)), rel=1e-14)
    # a few eps * |W| <= 4
    np.testing.assert_allclose(block.prox(W, 0.7), GroupLasso(0.5, "rows").prox(W, 0.7), atol=1e-14)
