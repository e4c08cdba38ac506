"""Set-up work of a path done once or vectorised (issue 15 item 3): the same results as the direct forms.

- :func:`normpen.linear.blocks._row_blocks` checks and converts every group on their concatenation;
  the blocks are those of a loop over the groups (``np.unique(g // m)``, free rows after).
- :func:`normpen.penalties.group_lasso._parse_groups` checks the index ranges by one reduction per
  dtype; a bad group is still named, and mixed signed/unsigned groups are not turned into floats.
- :meth:`Problem.target_products` is the least-squares stop test's :math:`c = QW - X^\\top G` at a fitted
  intercept (:class:`normpen.linear.solvers.cd._LeastSquaresGap` takes it instead of forming :math:`QW`).
"""

import numpy as np
import pytest

from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.datafits import Quadratic
from normpen.linear.problem import Problem
from normpen.linear.solvers import cd
from normpen.penalties import GroupLasso, SparseGroupLasso


def _loop_blocks(groups, p, m):
    """The blocks of the former per-group loop: each group's rows sorted, then the free rows alone."""
    blocks = [np.unique(np.asarray(g) // m) for g in groups]
    covered = np.zeros(p, dtype=bool)
    for rows in blocks:
        covered[rows] = True
    return blocks + [np.array([j]) for j in np.flatnonzero(~covered)]


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_row_blocks_are_the_per_group_loops(m, seed):
    rng = np.random.default_rng(seed)
    p = 40
    rows = rng.permutation(p)[: rng.integers(10, p + 1)]  # some rows in no group
    cuts = np.sort(rng.choice(np.arange(1, rows.size), size=rng.integers(1, 6), replace=False))
    groups = [
        rng.permutation((part[:, None] * m + np.arange(m)).ravel())  # whole rows, in any order
        for part in np.split(rows, cuts)
    ]
    penalty = GroupLasso(0.3, groups) if seed % 2 else SparseGroupLasso(0.3, groups, l1_ratio=0.4)
    shape = (p,) if m == 1 else (p, m)
    got = as_block_penalty(penalty, shape)
    blocks = _loop_blocks(groups, p, m)
    want = BlockPenalty.from_blocks(
        got.l1,
        blocks,
        np.concatenate([got.group_weights[: len(groups)], np.zeros(len(blocks) - len(groups))]),
    )
    np.testing.assert_array_equal(got.row_order, want.row_order)
    np.testing.assert_array_equal(got.block_starts, want.block_starts)
    # the weights: the penalty's strength times sqrt(|g|) (the same product both ways), 0 for free rows
    np.testing.assert_array_equal(got.group_weights, want.group_weights)
    assert np.all(got.group_weights[: len(groups)] > 0) and not np.any(got.group_weights[len(groups) :])


@pytest.mark.parametrize(
    ("groups", "shape", "message"),
    [
        ([[0, 1], [2, 7]], (3, 2), r"groups\[1\] contains index 7 but there are only 6 coefficients"),
        ([[0, 1], [2]], (3, 2), r"groups\[1\] splits a feature's outputs"),
        ([[0, 1, 2], [3, 4, 5]], (3, 2), r"groups\[0\] splits a feature's outputs"),
        ([[0], [1, 2], [9]], (5,), r"groups\[2\] contains index 9 but there are only 5 coefficients"),
    ],
)
def test_row_blocks_name_the_first_bad_group(groups, shape, message):
    with pytest.raises(ValueError, match=message):
        as_block_penalty(GroupLasso(1.0, groups), shape)


def test_group_ranges_are_checked_per_dtype_and_name_the_group():
    mixed = [
        np.array([0, 1], dtype=np.int8),
        np.array([2**40], dtype=np.uint64),
        np.array([3], dtype=np.int64),
    ]
    parsed = GroupLasso(1.0, mixed).groups
    assert [g.dtype for g in parsed] == [np.int64] * 3
    assert [g.tolist() for g in parsed] == [[0, 1], [2**40], [3]]  # no float conversion on the way
    with pytest.raises(ValueError, match=r"groups\[2\] contains the negative index -4"):
        GroupLasso(1.0, [np.array([0], dtype=np.uint8), [1, 2], np.array([3, -4], dtype=np.int16), [-1]])
    with pytest.raises(ValueError, match=r"groups\[1\] contains the index 9223372036854775808"):
        GroupLasso(1.0, [[0], np.array([5, 2**63], dtype=np.uint64), [-1]])


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_target_products_are_the_stop_tests_c(fit_intercept):
    rng = np.random.default_rng(0)
    n, p = 30, 12
    X = rng.standard_normal((n, p)) + 0.5
    y = rng.standard_normal(n) + 2.0
    problem = Problem(X, y, Quadratic(), sample_weight=rng.uniform(0.5, 2.0, n), fit_intercept=fit_intercept)
    state = problem.state()
    rows = np.array([1, 4, 5, 9])
    state.W[rows, 0] = rng.standard_normal(rows.size)
    state.z = problem.predictor(state.W, state.b)
    problem.refit_intercept(state)
    G, grad = problem.full_gradient(state)
    Q = problem.weighted_gram(rows, problem.weights)
    direct = Q @ state.W[rows] - grad[rows]
    # both sides are sums of n products a_i x_ij (y_i, z_i, b) formed in float64 and moved by a few
    # roundings each: the difference is within a small multiple of n eps times the sum of the magnitudes
    magnitudes = problem.weights * (np.abs(y) + np.abs(state.z) + np.abs(state.b[0]))
    scale = np.abs(X[:, rows]).T @ magnitudes + np.abs(Q) @ np.abs(state.W[rows, 0])
    tol = 4 * n * np.finfo(np.float64).eps * scale[:, None]
    assert np.all(np.abs(problem.target_products()[rows] - direct) <= tol)
    # the stop test takes it as given, and forms the same c itself without it
    pen = as_block_penalty(GroupLasso(0.05, [[0, 1], [2, 3]]), (rows.size,))
    built = [
        cd._LeastSquaresGap(problem.loss(state.z), state.W[rows], grad[rows], Q, pen, 0.0, c).c
        for c in (None, problem.target_products()[rows])
    ]
    assert np.all(np.abs(built[0] - built[1]) <= tol)


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("m", [1, 2])
def test_group_lasso_shortcuts_are_the_general_formulas(positive, m):
    """Without L1 weights the block dual norms, screening test, value and prox skip the L1 terms, and
    blocks listing the rows in order skip the gather: the same operations on the same numbers
    otherwise, so the results are equal (forced through the general code by the two flags)."""
    rng = np.random.default_rng(1)
    p = 12
    blocks = [np.arange(0, 3), np.arange(3, 7), np.arange(7, 9)] + [np.array([j]) for j in range(9, p)]
    weights = np.concatenate([[0.7, 0.0, 1.3], np.zeros(p - 9)])  # a zero-weight group, free rows
    fast = BlockPenalty.from_blocks(np.zeros((p, m)), blocks, weights, positive=positive)
    general = BlockPenalty.from_blocks(np.zeros((p, m)), blocks, weights, positive=positive)
    general.__dict__.update(_l1_part=True, _ordered=False)
    assert not fast._l1_part and fast._ordered
    V = rng.standard_normal((p, m))
    V[7:9] = 0.0  # a zero block: t = 0
    W = rng.standard_normal((p, m)) * (rng.uniform(size=(p, 1)) > 0.3)
    radius = rng.uniform(0.0, 0.5, len(blocks))
    L = rng.uniform(0.5, 2.0, len(blocks))
    np.testing.assert_array_equal(fast.block_dual_norms(V), general.block_dual_norms(V))
    np.testing.assert_array_equal(fast.certified_zero(V, radius), general.certified_zero(V, radius))
    np.testing.assert_array_equal(fast.block_max(V[:, 0]), general.block_max(V[:, 0]))
    if not positive:
        assert fast.value(W) == general.value(W)
    np.testing.assert_array_equal(fast.prox(W, 0.4), general.prox(W, 0.4))
    np.testing.assert_array_equal(fast.kkt_violation(W, V, L), general.kkt_violation(W, V, L))
    sub, rows = fast.restrict(np.array([2, 0, 4]))
    assert sub._ordered and not sub._l1_part
    np.testing.assert_array_equal(sub.block_dual_norms(V[rows]), fast.block_dual_norms(V)[[2, 0, 4]])


@pytest.mark.parametrize("equal", [True, False])
def test_gram_blocks_with_equal_weights_scale_the_products(equal):
    from normpen.linear.problem import gram_blocks

    rng = np.random.default_rng(2)
    n, p = 50, 30
    X = np.asfortranarray(rng.standard_normal((n, p)))
    h = np.full(n, 1.0 / n) if equal else rng.uniform(0.5, 1.5, n) / n
    rows = rng.permutation(p).reshape(-1, 3)
    got = gram_blocks(X, h, rows)
    cols = X[:, rows]  # (n, blocks, 3)
    want = np.einsum("nbi,n,nbj->bij", cols, h, cols)
    # sums of n products h_i x_ij x_ik, either order of the products: within n eps of the sums of magnitudes
    bound = n * np.finfo(np.float64).eps * np.einsum("nbi,n,nbj->bij", np.abs(cols), h, np.abs(cols))
    assert np.all(np.abs(got - want) <= bound)


def test_block_lipschitz_of_groups_reads_no_column_norms():
    """Blocks of several rows take the top eigenvalue of their centred Gram block; the centred square
    norms (a pass over X) are formed only for blocks of one row."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 9))
    problem = Problem(X, rng.standard_normal(40), Quadratic())
    pen = as_block_penalty(GroupLasso(1.0, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]), (9,))
    L = problem.block_lipschitz(pen)
    assert problem._square_norms is None
    Xc = X - X.mean(axis=0)
    want = [np.linalg.eigvalsh(Xc[:, g].T @ Xc[:, g] / 40)[-1] for g in ([0, 1, 2], [3, 4, 5], [6, 7, 8])]
    # eigenvalues of 3 x 3 sums of 40 products: within 40 eps of the block's norm, a few roundings more
    np.testing.assert_allclose(L, want, rtol=64 * 40 * np.finfo(np.float64).eps)
    mixed = as_block_penalty(GroupLasso(1.0, [[0, 1, 2], [3, 4, 5]]), (9,))  # rows 6-8 alone
    L = problem.block_lipschitz(mixed)
    np.testing.assert_allclose(L[2:], (Xc[:, 6:] ** 2).mean(axis=0), rtol=64 * 40 * np.finfo(np.float64).eps)


def test_structure_key_is_kept_and_shared_by_scaled_copies():
    pen = as_block_penalty(GroupLasso(1.0, [[0, 1], [2, 3, 4]]), (6,))
    key = pen.structure_key
    assert pen.scaled(0.5).structure_key is key  # the same object: its hash is computed once
    assert pen.scaled(0.0).structure_key == key  # a rebuilt penalty forms an equal one
    assert pen.restrict(np.array([1]))[0].structure_key != key
