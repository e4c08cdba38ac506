"""The least-squares Gram cache of :class:`Problem` against the Gram matrix formed directly.

Tolerance: an entry of :math:`X_r^\\top A X_r - \\bar x\\bar x^\\top` is a sum of ``n`` products,
and the cache and the direct formula compute it by different BLAS calls (another order of the
sum): each is within :math:`n\\epsilon (|X|^\\top A|X| + |\\bar x||\\bar x|^\\top)` of the exact
entry (the standard bound :math:`\\gamma_n` of a dot product, plus one rounding of the
centring), so they differ by at most twice that, with :math:`\\epsilon` of ``X``'s dtype.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from normpen.linear.datafits import Logistic, Quadratic
from normpen.linear.problem import Problem


def _row_sets(rng, p, start):
    """Working-set-like row sets: sorted sets growing and shrinking, repeats, shuffled, empty, small,
    and sets only growing (every stored row kept, in order: :func:`_moved` reads them without a gather)."""
    rows = np.sort(rng.choice(p, start, replace=False))
    sets = []
    for _ in range(25):
        grown = np.union1d(rows, rng.choice(p, rng.integers(0, 12), replace=False))
        rows = np.sort(rng.choice(grown, max(1, grown.size - rng.integers(0, 5)), replace=False))
        sets += [rows, rows.copy()] if rng.random() < 0.2 else [rows]
    small = np.union1d(rows[:2], rng.choice(p, 3, replace=False))  # most stored rows dropped
    grown = np.union1d(small, rng.choice(p, 4, replace=False))
    return [*sets, rng.permutation(rows), np.zeros(0, dtype=np.int64), rows, small, grown, rows]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# kept rows gathered by index (below _GATHERED_GRAM entries); above it, copied in runs of columns
# (sorted sets) or gathered (the shuffled set: runs of one)
@pytest.mark.parametrize(("p", "start"), [(60, 10), (400, 200), (900, 400)])
def test_cached_gram_matches_direct(sparse, fit_intercept, dtype, p, start):
    rng = np.random.default_rng(0)
    n = 40
    X = rng.standard_normal((n, p)).astype(dtype)
    X = sp.csc_matrix(X * (rng.random((n, p)) < 0.3)) if sparse else np.asfortranarray(X)
    problem = Problem(X, rng.standard_normal(n), Quadratic(), rng.random(n), fit_intercept)
    a = problem.weights
    absolute = abs(X).toarray() if sparse else np.abs(X).astype(np.float64)
    magnitude = absolute.T @ (a[:, None] * absolute) + np.outer(
        np.abs(problem.means()), np.abs(problem.means())
    )
    eps = np.finfo(dtype).eps
    for i, rows in enumerate(_row_sets(rng, p, start)):
        # every third set in the cache's order, as the lasso's working-set solve asks (new rows first)
        if i % 3 == 2:
            rows = rows[problem.gram_order(rows)]
        # every other set hands the cache the columns X_r, as the working-set solve does
        columns = problem.columns(rows) if i % 2 else None
        cached = problem.weighted_gram(rows, a, columns=columns)
        direct = problem.weighted_gram(rows, a, cached=False)
        assert cached.shape == (rows.size, rows.size)
        np.testing.assert_array_less(
            np.abs(cached - direct), 2 * n * eps * magnitude[np.ix_(rows, rows)] + 1e-300
        )


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_gram_order_puts_new_rows_first_and_keeps_the_stored_matrix_whole(monkeypatch, fit_intercept):
    """``gram_order``: the rows not stored in their order, then the stored in the stored order; asked for
    in that order, a superset of the stored rows gets the stored matrix as its bottom-right corner
    (no :func:`_moved`), the same entries as formed directly (tolerance: the module docstring's)."""
    import normpen.linear.problem as problem_module

    rng = np.random.default_rng(2)
    n, p = 30, 12
    X = np.asfortranarray(rng.standard_normal((n, p)))
    problem = Problem(X, rng.standard_normal(n), Quadratic(), rng.random(n), fit_intercept)
    a = problem.weights
    problem.weighted_gram(np.array([5, 2, 9]), a)
    rows = np.array([1, 2, 5, 7, 9])
    order = problem.gram_order(rows)
    np.testing.assert_array_equal(rows[order], [1, 7, 5, 2, 9])
    monkeypatch.setattr(problem_module, "_moved", None)  # the fast path calls no _moved
    cached = problem.weighted_gram(rows[order], a)
    direct = problem.weighted_gram(rows[order], a, cached=False)
    absolute = np.abs(X)[:, rows[order]]
    means = np.abs(problem.means()[rows[order]])
    bound = 2 * n * np.finfo(np.float64).eps * (absolute.T @ (a[:, None] * absolute) + np.outer(means, means))
    np.testing.assert_array_less(np.abs(cached - direct), bound + 1e-300)
    uncached = Problem(X, np.where(rng.random(n) < 0.5, -1.0, 1.0), Logistic(), None, fit_intercept)
    assert uncached.gram_order(rows) == slice(None)  # no cache: the rows' own order


@pytest.mark.parametrize("sparse", [False, True])
def test_gram_missing_counts_the_rows_the_cache_would_compute(sparse):
    """``gram_missing`` is the number of rows not among the last rows asked for (0 for those rows again)."""
    rng = np.random.default_rng(1)
    n, p = 30, 50
    X = rng.standard_normal((n, p))
    X = sp.csc_matrix(X) if sparse else np.asfortranarray(X)
    problem = Problem(X, rng.standard_normal(n), Quadratic(), np.ones(n), False)
    a = problem.weights
    previous = np.zeros(0, dtype=np.int64)
    for rows in _row_sets(rng, p, 10):
        assert problem.gram_missing(rows) == np.setdiff1d(rows, previous).size
        problem.weighted_gram(rows, a)
        assert problem.gram_missing(rows) == 0
        previous = rows
    labels = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    uncached = Problem(X, labels, Logistic(), np.ones(n), False)  # no Gram cache: every row is computed
    assert uncached.gram_missing(previous) == previous.size


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_lipschitz_is_the_top_eigenvalue_of_each_centred_gram_block(sparse, fit_intercept, dtype):
    """Blocks of 1, 2 and 3 scattered rows, against ``eigvalsh`` of each block's Gram formed directly.

    Tolerance: each entry of a block is within ``2 (n + 1) eps |X|^T A |X| + |xbar||xbar|^T`` of the
    float64 one (the dot-product bound in ``X``'s dtype and the centring, as in the test above), and an
    eigenvalue moves by at most the spectral norm of the perturbation (Weyl), below its Frobenius norm.
    """
    from normpen.linear.blocks import BlockPenalty

    rng = np.random.default_rng(2)
    n, p = 30, 40
    X = rng.standard_normal((n, p)).astype(dtype)
    X = sp.csc_matrix(X * (rng.random((n, p)) < 0.4)) if sparse else np.asfortranarray(X)
    problem = Problem(X, rng.standard_normal(n), Quadratic(), rng.random(n), fit_intercept)
    cuts = np.cumsum(rng.choice([1, 2, 3], p))
    blocks = np.split(rng.permutation(p), cuts[cuts < p])  # scattered rows, blocks of 1 to 3
    pen = BlockPenalty.from_blocks(np.zeros((p, 1)), blocks, np.ones(len(blocks)))
    a = problem.weights.astype(np.float64)
    dense = X.toarray() if sparse else X
    dense = dense.astype(np.float64)
    means = dense.T @ a if fit_intercept else np.zeros(p)
    absolute = np.abs(dense)
    magnitude = absolute.T @ (a[:, None] * absolute) + np.outer(np.abs(means), np.abs(means))
    eps = np.finfo(dtype).eps
    got = problem.block_lipschitz(pen)
    for g in range(pen.n_blocks):
        rows = pen.block_rows(g)
        gram = dense[:, rows].T @ (a[:, None] * dense[:, rows]) - np.outer(means[rows], means[rows])
        want = np.linalg.eigvalsh(gram)[-1] * problem.datafit.curvature
        tol = np.linalg.norm(2 * (n + 1) * eps * magnitude[np.ix_(rows, rows)]) * problem.datafit.curvature
        assert got[g] == pytest.approx(want if want > 0 else 1.0, rel=0, abs=tol + 1e-300)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_centred_blocks_match_direct_and_are_kept(sparse, fit_intercept, dtype):
    """``centred_blocks`` of blocks met before, new, reordered, and sharing a first row with other rows.

    Tolerance: the dot-product bound of the first test (dense designs form the blocks in float64,
    sparse ones in ``X``'s dtype: ``eps`` of ``X``'s dtype bounds both). Blocks met before are read
    from the cache: bit for bit what was formed the first time.
    """
    rng = np.random.default_rng(4)
    n, p, size = 30, 24, 3
    X = rng.standard_normal((n, p)).astype(dtype)
    X = sp.csc_matrix(X * (rng.random((n, p)) < 0.5)) if sparse else np.asfortranarray(X)
    problem = Problem(X, rng.standard_normal(n), Quadratic(), rng.random(n), fit_intercept)
    a = problem.weights.astype(np.float64)
    dense = (X.toarray() if sparse else X).astype(np.float64)
    means = dense.T @ a if fit_intercept else np.zeros(p)
    magnitude = np.abs(dense).T @ (a[:, None] * np.abs(dense)) + np.outer(np.abs(means), np.abs(means))
    eps = np.finfo(dtype).eps
    order = rng.permutation(p).reshape(-1, size)
    first = problem.centred_blocks(order[:5])
    again = problem.centred_blocks(order[[4, 1, 6, 7]])  # two kept, two new
    np.testing.assert_array_equal(again[:2], first[[4, 1]])
    other = order[:3].copy()
    other[:, 1:] = other[::-1, 1:]  # the same first rows, other blocks
    for rows in (order, order[[7, 0, 3]], other):
        got = problem.centred_blocks(rows)
        for block, r in zip(got, rows, strict=True):
            want = dense[:, r].T @ (a[:, None] * dense[:, r]) - np.outer(means[r], means[r])
            tol = 2 * (n + 1) * eps * magnitude[np.ix_(r, r)]
            np.testing.assert_array_less(np.abs(block - want), tol + 1e-300)
        # the eigen-decompositions kept with them: of these very blocks, ascending; eigh is backward
        # stable, V diag(d) V^T within a modest multiple of size * eps64 * ||block|| (16 allowed)
        values, vectors = problem.centred_eigen(rows)
        assert np.all(np.diff(values, axis=1) >= 0)
        rebuilt = np.einsum("bij,bj,bkj->bik", vectors, values, vectors)
        scale = np.linalg.norm(got, ord=2, axis=(1, 2))[:, None, None]
        assert np.all(np.abs(rebuilt - got) <= 16 * size * np.finfo(np.float64).eps * scale)
