"""The compiled epochs (normpen.linear.solvers._sweeps) against the penalty's prox and the model's gradient.

Each test replays one epoch in Python with :meth:`BlockPenalty.prox` (numpy, written independently of the
kernel) block by block, recomputing the model gradient :math:`g + Q(B - W)` from scratch before every
block, and compares the kernel's iterate and its in-place gradient with that replay.

Tolerance, derived: both sides compute the same real numbers with different rounding orders. A gradient
entry is a sum of at most ``k + 1`` products (``g`` and one per moved row), so its rounding error is at most
``(k + 1) u S`` with ``u`` the unit roundoff and ``S`` the sum of the magnitudes of its terms (the standard
bound for recursive summation, Higham, Accuracy and Stability, 2002, eq. 4.4, with the product's own
rounding). An update is 1-Lipschitz in its input ``B_g - grad_g / L_g`` (soft and group thresholding are
proximal maps, the ridge factor is at most 1), so it carries ``S / L_g`` times that bound, plus a few
roundings of its own of the iterate's magnitude; errors of earlier blocks enter later gradients through
``Q``, which at most multiplies them by ``1 + max_g ||Q||_1 / L_g`` per block (``_tolerance``).
"""

from __future__ import annotations

import numpy as np
import pytest
from sweep_models import centred_model

from normpen._array import soft_threshold
from normpen.linear.blocks import BlockPenalty
from normpen.linear.solvers._sweeps import (
    epoch_blocks,
    epoch_coordinates,
    epoch_residual,
    epoch_residual_blocks,
    epoch_rows,
)

EPS = np.finfo(np.float64).eps


def _model(rng, k, m, stacked):
    """A random positive definite model: Q ``(m|1, k, k)``, its base point W and gradient there g."""
    stack = []
    for _ in range(m if stacked else 1):
        A = rng.standard_normal((2 * k, k))
        stack.append(A.T @ A / (2 * k) + 0.05 * np.eye(k))
    return np.array(stack), rng.standard_normal((k, m)), rng.standard_normal((k, m))


def _gradient(Q, g, W, B):
    """:math:`g_c + Q_c(B_c - W_c)` per output, from scratch."""
    D = B - W
    return g + (np.einsum("ij,jc->ic", Q[0], D) if Q.shape[0] == 1 else np.einsum("cij,jc->ic", Q, D))


def _lipschitz(Q, pen):
    """Per-block Lipschitz constants: the largest eigenvalue of the block's principal submatrices."""
    starts, sizes = pen.block_starts, pen.block_sizes
    return np.array(
        [
            max(np.linalg.eigvalsh(q[s : s + n, s : s + n])[-1] for q in Q)
            for s, n in zip(starts, sizes, strict=True)
        ]
    )


def _replay(Q, g, W, B, pen, L):
    """One epoch in Python: block by block, :meth:`BlockPenalty.prox` at step 1/L_g of the fresh gradient."""
    B = B.copy()
    steps = pen._per_row(1.0 / L)[:, None]
    for start, size in zip(pen.block_starts, pen.block_sizes, strict=True):
        rows = slice(start, start + size)
        grad = _gradient(Q, g, W, B)
        B[rows] = pen.prox(B - steps * grad, 1.0 / L)[rows]
    return B, _gradient(Q, g, W, B)


def _tolerance(Q, g, W, B_new, L):
    """The bound of the module docstring, for every entry of the iterate and of the gradient."""
    k = Q.shape[1]
    u = EPS / 2
    magnitude = (
        np.abs(g) + np.einsum("cij,jc->ic", np.abs(Q), np.abs(B_new - W))
        if Q.shape[0] > 1
        else (np.abs(g) + np.abs(Q[0]) @ np.abs(B_new - W))
    )
    growth = (1.0 + np.abs(Q).sum(axis=2).max() / L.min()) ** k
    grad_tol = 2 * (k + 1) * u * magnitude.max() * growth
    coef_tol = grad_tol / L.min() + 8 * u * np.abs(B_new).max()
    return coef_tol, grad_tol


def _run_blocks(Q, grad, B, pen, L, model=None):
    """The kernel's epoch from ``B`` with its gradient ``grad``, ``Q`` as given: ``(B, grad, moves)``.

    The blocks' eigen-decompositions are taken from the float64 ``model`` (``Q`` by default), as the
    solver takes them from its float64 ``Q`` when the sweep reads a float32 copy.
    """
    from normpen.linear.solvers.cd import _block_eigen, _block_steps

    B, grad = B.copy(), grad.copy()
    work = np.empty((2, int(pen.block_sizes.max()), B.shape[1]))
    constants = _block_steps(pen, L, _block_eigen(Q if model is None else model, pen))
    moves = epoch_blocks(Q, grad, B, constants, pen.positive, work)
    return B, grad, moves


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "case",
    [
        "lasso",
        "elastic net",
        "sparse-group",
        "positive",
        "positive group",
        "sparse-group multi-output",
        "sparse-group stacked",
    ],
)
def test_a_block_epoch_is_the_prox_of_each_block_in_turn(seed, case):
    """Blocks with an L1 part or positivity (not minimised exactly, unlike group-lasso ones) take the prox."""
    rng = np.random.default_rng(seed)
    k, m = 12, (3 if case.endswith(("multi-output", "stacked")) else 1)
    Q, g, W = _model(rng, k, m, stacked=case.endswith("stacked"))
    l1 = np.full((k, m), 0.3)
    if case in ("lasso", "elastic net", "positive"):
        pen = BlockPenalty.separable(
            l1, ridge=0.2 if case == "elastic net" else 0.0, positive=case == "positive"
        )
    else:
        blocks = [np.arange(i, min(i + 4, k)) for i in range(0, k, 4)]
        l1 = np.zeros((k, m)) if case == "positive group" else l1
        weights = 0.5 * np.sqrt([len(b) for b in blocks])
        pen = BlockPenalty.from_blocks(l1, blocks, weights, ridge=0.1, positive=case == "positive group")
    L = _lipschitz(Q, pen)
    B = W + 0.5 * rng.standard_normal((k, m))
    if case.startswith("positive"):
        B = np.abs(B)
    want_B, want_grad = _replay(Q, g, W, B, pen, L)
    got_B, got_grad, moves = _run_blocks(Q, _gradient(Q, g, W, B), B, pen, L)
    coef_tol, grad_tol = _tolerance(Q, g, W, want_B, L)
    np.testing.assert_allclose(got_B, want_B, rtol=0, atol=coef_tol)
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=grad_tol)
    assert moves == sum(
        np.any(want_B[s : s + n] != B[s : s + n])
        for s, n in zip(pen.block_starts, pen.block_sizes, strict=True)
    )


def test_a_float32_model_is_read_as_rounded_and_computed_in_float64():
    """Reading Q in float32 is exactly the float64 epoch on Q rounded to float32 (float64 arithmetic)."""
    rng = np.random.default_rng(7)
    Q, g, W = _model(rng, 20, 1, stacked=False)
    blocks = [np.arange(i, i + 5) for i in range(0, 20, 5)]
    pen = BlockPenalty.from_blocks(np.zeros((20, 1)), blocks, np.full(4, 0.4))
    L = _lipschitz(Q, pen)
    B = rng.standard_normal((20, 1))
    single = Q.astype(np.float32)
    rounded = single.astype(np.float64)
    grad = _gradient(rounded, g, W, B)
    got = _run_blocks(single, grad, B, pen, L, model=Q)
    want = _run_blocks(rounded, grad, B, pen, L, model=Q)
    # the same float64 operations in the same order on the same inputs: bit-identical
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _block_minimiser(A, c, beta, ridge):
    r"""The minimiser of :math:`\sum_c \tfrac12 b_c^\top(A_c + \mu)b_c - c_c^\top b_c + \beta\|b\|_F` (Brent).

    Written independently of the kernel (no eigen-decomposition): :math:`b = 0` when
    :math:`\|c\|_F \le \beta`, else :math:`b_c(\rho) = (A_c + \mu + \beta/\rho)^{-1}c_c` with
    :math:`\|b(\rho)\|_F = \rho`, found by ``brentq`` on :math:`\|b(\rho)\|_F/\rho - 1` (decreasing
    from :math:`\|c\|_F/\beta - 1 > 0` at :math:`0^+` to :math:`-1` at infinity) to a relative
    :math:`4\epsilon`.
    """
    from scipy.optimize import brentq

    if np.linalg.norm(c) <= beta:
        return np.zeros_like(c)
    eye = np.eye(c.shape[0])

    def point(rho):
        return np.stack(
            [np.linalg.solve(A[i] + (ridge + beta / rho) * eye, c[:, i]) for i in range(c.shape[1])], 1
        )

    # ||c|| / (beta + rho ||A + mu||) <= ||b(rho)|| / rho <= ||c|| / (beta + rho lambda_min): a bracket
    excess = np.linalg.norm(c) - beta
    low = 0.5 * excess / max(np.linalg.eigvalsh(a)[-1] + ridge for a in A)
    high = 2 * excess / min(np.linalg.eigvalsh(a)[0] + ridge for a in A)
    rho = brentq(lambda r: np.linalg.norm(point(r)) / r - 1, low, high, xtol=1e-300, rtol=4 * EPS)
    return point(rho)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("case", ["one output", "ridge", "multi-output", "stacked", "rows, stacked"])
def test_a_group_lasso_block_moves_to_its_exact_minimiser(seed, case):
    r"""Each group-lasso block moves to the model's exact minimiser over it, the others where they are then.

    The replay takes the kernel's blocks before ``g`` and the starting blocks from ``g`` on (the
    point the cyclic kernel updates block ``g`` at), the model gradient there from scratch, and
    minimises over block ``g`` by :func:`_block_minimiser`.

    Tolerance, derived: the block minimiser :math:`b(c)` is :math:`1/\lambda_{\min}`-Lipschitz in its
    linear term :math:`c` (the resolvent of the :math:`\lambda_{\min}`-strongly monotone
    :math:`A + \mu + \beta\partial\|\cdot\|`, :math:`\lambda_{\min}` the least eigenvalue of the
    block's :math:`A + \mu` over the outputs). The kernel's :math:`c` differs from the replay's by
    the in-place gradient's rounding, at most :math:`(k + 1)uS` (module docstring; no growth factor,
    since the replay starts each block from the kernel's own iterate), and both solves are
    backward stable: each is the exact minimiser for data :math:`(A, c, \beta)` perturbed by a
    relative :math:`\gamma = 16(|g|m + 2)u` (``eigh``'s and ``solve``'s backward errors, the
    eigenbasis products, the root to a relative :math:`4\epsilon`, to which :math:`b` is at most as
    sensitive, :math:`\partial\log\hat b/\partial\log\rho \le 1`), moving it by at most
    :math:`\gamma(\|A + \mu\|\|b\| + \|c\| + \beta)/\lambda_{\min}` each.
    """
    rng = np.random.default_rng(seed)
    k = 12
    m = 1 if case in ("one output", "ridge") else 3
    Q, g, W = _model(rng, k, m, stacked="stacked" in case)
    ridge = 0.2 if case == "ridge" else 0.0
    size = 1 if case.startswith("rows") else 4
    blocks = [np.arange(i, i + size) for i in range(0, k, size)]
    weights = rng.uniform(0.2, 2.0, len(blocks)) * np.sqrt(size)
    weights[:2] = 100.0, 0.01  # far above and below their linear terms: block 0 goes to 0, block 1 not
    pen = BlockPenalty.from_blocks(np.zeros((k, m)), blocks, weights, ridge=ridge)
    L = _lipschitz(Q, pen)
    B = W + 0.5 * rng.standard_normal((k, m))
    got_B, got_grad, moves = _run_blocks(Q, _gradient(Q, g, W, B), B, pen, L)
    u = EPS / 2
    stack = Q if Q.shape[0] == m else np.repeat(Q, m, axis=0)
    for block, rows in enumerate(blocks):
        state = np.where(np.arange(k)[:, None] < rows[0], got_B, B)
        grad = _gradient(Q, g, W, state)
        A = stack[:, rows[:, None], rows]
        c = np.einsum("crs,sc->rc", A, state[rows]) - grad[rows]
        want = _block_minimiser(A, c, weights[block], ridge)
        least = min(np.linalg.eigvalsh(a)[0] for a in A) + ridge
        top = max(np.linalg.eigvalsh(a)[-1] for a in A) + ridge
        # the sums behind the gradient at block g: the starting one and the axpys of the blocks before
        magnitude = np.abs(g) + np.einsum("cij,jc->ic", np.abs(stack), 2 * np.abs(B - W) + np.abs(got_B - W))
        gamma = 16 * (size * m + 2) * u
        solve = gamma * (top * np.linalg.norm(want) + np.linalg.norm(c) + weights[block])
        # the starting gradient's, the in-place updates' and the replay's roundings, over |g| m entries
        tol = (3 * (k + 1) * u * magnitude[rows].max() * np.sqrt(size * m) + 2 * solve) / least
        np.testing.assert_allclose(got_B[rows], want, rtol=0, atol=tol)
    # the in-place gradient against a fresh one at the kernel's own iterate: (k + 1) u S, no growth
    magnitude = np.abs(g) + np.einsum("cij,jc->ic", np.abs(stack), 2 * np.abs(B - W) + np.abs(got_B - W))
    np.testing.assert_allclose(
        got_grad, _gradient(Q, g, W, got_B), rtol=0, atol=2 * (k + 1) * u * magnitude.max()
    )
    assert moves == sum(np.any(got_B[rows] != B[rows]) for rows in blocks)
    assert not np.any(got_B[blocks[0]]) and np.any(got_B[blocks[1]])  # both branches taken


def test_a_block_without_curvature_takes_the_prox_gradient_step():
    """A group-lasso block whose Q_gg vanishes has no exact minimiser to find (the model is linear in
    it): the kernel falls back to the proximal gradient step at the curvature it is given, as
    :func:`_replay` computes it (tolerance of the module docstring)."""
    rng = np.random.default_rng(3)
    Q, g, W = _model(rng, 8, 1, stacked=False)
    Q[:, 4:, :] = 0.0
    Q[:, :, 4:] = 0.0
    blocks = [np.arange(0, 4), np.arange(4, 8)]
    pen = BlockPenalty.from_blocks(np.zeros((8, 1)), blocks, np.full(2, 0.1))
    L = np.where(_lipschitz(Q, pen) > 0, _lipschitz(Q, pen), 1.0)  # the solver's curvature for an empty block
    B = W + 0.5 * rng.standard_normal((8, 1))
    grad = _gradient(Q, g, W, B)
    got_B, got_grad, _ = _run_blocks(Q, grad, B, pen, L)
    steps = pen._per_row(1.0 / L)[:, None]
    want = pen.prox(B - steps * grad, 1.0 / L)[4:]  # block 1's gradient does not depend on block 0
    np.testing.assert_allclose(got_B[4:], want, rtol=0, atol=8 * EPS * np.abs(want).max())
    assert np.any(got_B[4:] != B[4:])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_a_coordinate_epoch_minimises_the_model_exactly_along_each_coordinate(seed, ridge):
    """Each move is the exact minimiser along its coordinate: the elastic-net prox at step 1/Q_jj."""
    rng = np.random.default_rng(seed)
    k = 15
    Q, g, W = _model(rng, k, 1, stacked=False)
    alpha = rng.uniform(0.0, 0.5, k)
    pen = BlockPenalty.separable(alpha[:, None], ridge=ridge)
    L = np.diag(Q[0]).copy()  # one coordinate a block: the block's Lipschitz constant is Q_jj
    B = rng.standard_normal((k, 1))
    want_B, want_grad = _replay(Q, g, W, B, pen, L)
    inv_l = 1.0 / L
    b, grad = B[:, 0].copy(), _gradient(Q, g, W, B)[:, 0].copy()
    moves = epoch_coordinates(Q[0], grad, b, alpha * inv_l, inv_l, 1.0 / (1.0 + ridge * inv_l), False)
    coef_tol, grad_tol = _tolerance(Q, g, W, want_B, L)
    np.testing.assert_allclose(b, want_B[:, 0], rtol=0, atol=coef_tol)
    np.testing.assert_allclose(grad, want_grad[:, 0], rtol=0, atol=grad_tol)
    assert moves == np.count_nonzero(want_B[:, 0] != B[:, 0])


def test_the_kernels_refuse_arrays_they_cannot_read_in_place():
    """A non-contiguous Q or a gradient of another dtype is refused, not copied (its update would be lost)."""
    Q = np.eye(4)
    grad, b, ones = np.zeros(4), np.zeros(4), np.ones(4)
    with pytest.raises(ValueError, match="contiguous"):
        epoch_coordinates(np.asfortranarray(Q)[:, ::2], grad, b, ones, ones, ones, False)
    with pytest.raises(ValueError, match="dtype"):
        epoch_coordinates(Q, grad.astype(np.float32), b, ones, ones, ones, False)


def test_the_compiled_module_is_built_from_the_current_source():
    """An editable install does not rebuild the extension when the .pyx changes (docs/testing.md)."""
    from pathlib import Path

    from normpen.linear.solvers import _sweeps

    source = Path(_sweeps.__file__).with_name("_sweeps.pyx")
    if not source.exists():  # an installed wheel ships the compiled module only
        pytest.skip("no source next to the compiled module")
    assert Path(_sweeps.__file__).stat().st_mtime >= source.stat().st_mtime, (
        "the compiled _sweeps is older than _sweeps.pyx: rebuild it with `bash scripts/setup.sh`"
    )


def _coupled_model(rng, n, k, m):
    """A multinomial-like Hessian H_i = diag(D_i) - V_i V_i^T (p_i a probability vector), a design, and
    the rows' Hessian blocks sum_i x_ij^2 H_i computed from the whole Hessians."""
    P = rng.dirichlet(np.ones(m), size=n)
    D, V = P, P  # a_i = 1: H_i = diag(p_i) - p_i p_i^T
    X = rng.standard_normal((n, k))
    H = np.array([np.diag(d) - np.outer(v, v) for d, v in zip(D, V, strict=True)])
    blocks = np.einsum("ij,icd->jcd", X**2, H)
    return X, D, V, H, blocks


def _replay_rows(X, H, blocks, g, W, B, l1, group, L, ridge):
    """One pass over the rows in Python, every gradient from scratch: g_j + sum_i x_ij H_i (B - W)^T x_i."""
    B = B.copy()
    for j in range(B.shape[0]):
        E = X @ (B - W)
        grad = g[j] + np.einsum("i,icd,id->c", X[:, j], H, E)
        if group[j] > 0:
            step = 1.0 / L[j]
            z = soft_threshold(B[j] - step * grad, step * l1[j], False)
            norm = np.linalg.norm(z)
            B[j] = z * max(norm - step * group[j], 0.0) / norm / (1 + step * ridge) if norm > 0 else 0.0
            continue
        if not np.any(B[j]) and np.all(np.abs(grad) <= l1[j]):
            continue
        for c in range(B.shape[1]):
            q = blocks[j, c, c]
            new = soft_threshold(q * B[j, c] - grad[c], l1[j, c], False) / (q + ridge)
            grad = grad + blocks[j, c] * (new - B[j, c])
            B[j, c] = new
    return B


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("grouped", [False, True])
def test_a_row_epoch_of_a_coupled_model_is_the_documented_update(seed, sparse, grouped):
    """epoch_rows against a replay that recomputes each row's gradient from the whole Hessians.

    Tolerance: as for the block epochs (module docstring), a row's gradient is a sum over the n samples
    and m outputs of products whose magnitudes add up to S = sum_i |x_ij| ||H_i||_1 |e_i|_max + |g_j|;
    its rounding is at most (n m + 1) u S per entry on each side. A row's update is 1-Lipschitz in
    grad / curvature, and an earlier row's error reaches a later gradient through at most
    ||H||-weighted sums, a factor (1 + max_j ||blocks_j||_1 / min curvature) per row.
    """
    import scipy.sparse as sp

    from normpen.linear.solvers.cd import _ColumnReader

    rng = np.random.default_rng(seed)
    n, k, m = 30, 6, 3
    X, D, V, H, blocks = _coupled_model(rng, n, k, m)
    if sparse:
        X[rng.random(X.shape) < 0.5] = 0.0
        blocks = np.einsum("ij,icd->jcd", X**2, H)
    W, B, g = (rng.standard_normal((k, m)) for _ in range(3))
    l1 = np.full((k, m), 0.05)
    group = np.where(np.arange(k) % 2 == 0, 0.1, 0.0) if grouped else np.zeros(k)
    L = np.maximum(np.linalg.eigvalsh(blocks)[:, -1], 1e-12)
    ridge = 0.01
    want = _replay_rows(X, H, blocks, g, W, B, l1, group, L, ridge)

    columns = _ColumnReader(sp.csc_matrix(X) if sparse else X)
    R = np.ascontiguousarray(np.einsum("icd,id->ci", H, X @ (B - W)))  # H_i e_i, outputs first
    got = B.copy()
    moves = epoch_rows(
        g, R, got, columns.rows, columns.indptr, columns.indices, np.ascontiguousarray(D.T),
        np.ascontiguousarray(V.T), blocks, l1, group, L, ridge, False, np.empty(n + 3 * m),
    )  # fmt: skip
    u = EPS / 2
    E = np.abs(X) @ (np.abs(want - W) + np.abs(B - W))
    S = np.abs(g).max() + np.max(np.abs(X).T @ (np.abs(H).sum(axis=(1, 2)) * E.max(axis=1)))
    curvature = min(blocks[:, c, c].min() for c in range(m))
    growth = (1.0 + np.abs(blocks).sum(axis=2).max() / curvature) ** k
    tol = 2 * (n * m + 1) * u * S * growth / curvature + 8 * u * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    assert moves == np.count_nonzero(np.any(got != B, axis=1))
    # R followed the steps: H_i (B_new - W)^T x_i. Each of its entries moved by k row steps x_ij H_i s_j:
    # the iterate's error (tol) times k max|x| max ||H_i||_1, plus each side's rounding of the k + 1 terms
    want_R = np.einsum("icd,id->ci", H, X @ (got - W))
    H_norm = np.abs(H).sum(axis=2).max()
    R_terms = np.abs(np.einsum("icd,id->ci", np.abs(H), np.abs(X) @ (np.abs(got - W) + np.abs(B - W))))
    R_tol = k * np.abs(X).max() * H_norm * tol + 2 * (k + m + 1) * u * R_terms.max()
    np.testing.assert_allclose(R, want_R, rtol=0, atol=R_tol)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("centred", [False, True])
def test_a_residual_epoch_makes_the_moves_of_the_formed_model(seed, sparse, centred):
    """epoch_residual on (X, HX, q) against epoch_coordinates on the formed Q = X^T H X - q q^T / sum h.

    Tolerance: the same real numbers in another order. Each gradient is a sum of at most n + k + 1
    products whose magnitudes add up to S (g0, |X|^T H |X| |b - w0| and the centring term), so each side
    is within (n + k + 1) u S of it; a move is 1-Lipschitz in grad / Q_jj, and an earlier coordinate's
    error reaches a later gradient through |Q_ij|: a factor (1 + max_i ||Q_i||_1 / min_j Q_jj) per
    coordinate, as in the module docstring.
    """
    import scipy.sparse as sp

    from normpen.linear.solvers.cd import _ColumnReader

    rng = np.random.default_rng(seed)
    n, k = 40, 8
    X = rng.standard_normal((n, k))
    if sparse:
        X[rng.random(X.shape) < 0.6] = 0.0
        X[0] = 1.0  # no empty column
    h = rng.uniform(0.1, 1.0, n)
    q, hsum, Q, absQ = centred_model(X, h, centred)
    w0, b = rng.standard_normal(k), rng.standard_normal(k)
    g0 = rng.standard_normal(k)
    inv_l = 1.0 / np.diag(Q)
    alpha = np.full(k, 0.2)
    constants = (alpha * inv_l, inv_l, 1.0 / (1.0 + 0.1 * inv_l))

    formed_b, formed_grad = b.copy(), g0 + Q @ (b - w0)
    epoch_coordinates(np.ascontiguousarray(Q), formed_grad, formed_b, *constants, False)

    design = sp.csc_matrix(X) if sparse else np.asfortranarray(X)
    weighted = sp.csc_matrix(X * h[:, None]) if sparse else np.asfortranarray(X * h[:, None])
    columns, weighted_columns = _ColumnReader(design), _ColumnReader(weighted)
    residual_b, v = b.copy(), (X * h[:, None]) @ (b - w0)
    centre = float(q @ (b - w0)) if centred else 0.0
    moves, centre = epoch_residual(
        columns.rows, weighted_columns.rows, columns.indptr, columns.indices, g0, residual_b, v, q,
        centre, hsum, *constants, False,
    )  # fmt: skip

    u = EPS / 2
    S = np.abs(g0).max() + (absQ @ (np.abs(b - w0) + np.abs(formed_b - w0))).max()
    growth = (1.0 + absQ.sum(axis=1).max() / np.diag(Q).min()) ** k
    tol = 2 * (n + k + 1) * u * S * growth / np.diag(Q).min() + 8 * u * np.abs(formed_b).max()
    np.testing.assert_allclose(residual_b, formed_b, rtol=0, atol=tol)
    assert moves == np.count_nonzero(formed_b != b)
    # the residual and the centre followed the moves: each entry is k moves' terms, off by the iterate's
    # error (tol) times the column entries, plus each side's rounding of its k + 1 terms
    HX = np.abs(X) * h[:, None]
    moved = np.abs(residual_b - w0) + np.abs(b - w0)
    v_tol = k * HX.max() * tol + 2 * (k + 1) * u * (HX @ moved).max()
    np.testing.assert_allclose(v, (X * h[:, None]) @ (residual_b - w0), rtol=0, atol=v_tol)
    if centred:
        centre_tol = np.abs(q).sum() * tol + 2 * (k + 1) * u * (np.abs(q) @ moved)
        assert centre == pytest.approx(float(q @ (residual_b - w0)), rel=0, abs=centre_tol)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("case", ["group lasso", "centred", "sparse-group"])
def test_a_residual_block_epoch_makes_the_moves_of_the_formed_model(seed, sparse, case):
    r"""epoch_residual_blocks on (X, HX, q) against epoch_blocks on the formed Q = X^T H X - q q^T / sum h.

    Both take the same constants (from the formed Q): the group-lasso blocks their exact minimiser,
    the sparse-group ones (an L1 part) the prox gradient step. Tolerance: the same real numbers in
    another order. Each gradient is a sum of at most n + k + 1 products whose magnitudes add up to S
    (g0, |X|^T H |X| (|b - w0| + |b_new - w0|) and the centring term), so each side is within
    (n + k + 1) u S of it. A block's move is Lipschitz in its gradient with constant 1/lambda_min (the
    exact minimiser: the resolvent of a lambda_min-strongly monotone operator, lambda_min the least
    eigenvalue of the diagonal blocks; the prox step: 1/L_g <= 1/lambda_min); an earlier block's error
    reaches a later gradient through the rows of |Q|, a factor (1 + max_i ||Q_i||_1 / lambda_min) per
    block, as in the module docstring. The exact solves see the same eigen data and linear terms that
    differ by that much; their own rounding, backward stable as in
    test_a_group_lasso_block_moves_to_its_exact_minimiser, adds gamma (||Q_gg|| ||b|| + ||c|| + beta) /
    lambda_min per side with gamma = 16 (|g| + 2) u.
    """
    import scipy.sparse as sp

    from normpen.linear.solvers.cd import _block_eigen, _block_steps, _ColumnReader, _ImplicitGram

    rng = np.random.default_rng(seed)
    n, k, size = 40, 12, 3
    X = rng.standard_normal((n, k))
    if sparse:
        X[rng.random(X.shape) < 0.6] = 0.0
        X[0] = 1.0  # no empty column
    h = rng.uniform(0.1, 1.0, n)
    centred = case == "centred"
    q, hsum, Q, absQ = centred_model(X, h, centred)
    w0, B = rng.standard_normal((k, 1)), rng.standard_normal((k, 1))
    g0 = rng.standard_normal((k, 1))
    blocks = [np.arange(i, i + size) for i in range(0, k, size)]
    weights = rng.uniform(0.2, 2.0, len(blocks))
    weights[:2] = 100.0, 0.01  # far above and below their linear terms: block 0 goes to 0, block 1 not
    l1 = np.full((k, 1), 0.1 if case == "sparse-group" else 0.0)
    pen = BlockPenalty.from_blocks(l1, blocks, weights)
    L = _lipschitz(Q[None], pen)
    constants = _block_steps(pen, L, _block_eigen(Q[None], pen))

    formed_B, formed_grad, formed_moves = _run_blocks(Q[None], g0 + Q @ (B - w0), B, pen, L)

    design = sp.csc_matrix(X) if sparse else np.asfortranarray(X)
    columns = _ColumnReader(design)
    residual_B, grad, v = B.copy(), np.zeros((k, 1)), (X * h[:, None]) @ (B[:, 0] - w0[:, 0])
    centre = float(q @ (B[:, 0] - w0[:, 0])) if centred else 0.0
    work = np.empty((2, size, 1))
    every = np.arange(len(blocks), dtype=np.intp)
    moves, centre, change = epoch_residual_blocks(
        columns.rows, columns.indptr, columns.indices, h, g0[:, 0], residual_B, grad,
        v, q, centre, hsum, constants, pen.positive, work, every,
    )  # fmt: skip

    u = EPS / 2
    moved = np.abs(B - w0) + np.abs(formed_B - w0)
    S = np.abs(g0).max() + (absQ @ moved).max()
    least = min(np.linalg.eigvalsh(Q[rows[:, None], rows])[0] for rows in blocks)
    growth = (1.0 + absQ.sum(axis=1).max() / least) ** len(blocks)
    gamma = 16 * (size + 2) * u
    solve = gamma * (np.abs(Q).sum(axis=1).max() * np.abs(formed_B).max() * size + S * size + weights.max())
    tol = (2 * (n + k + 1) * u * S * np.sqrt(size) + 2 * solve) * growth / least + 8 * u * np.abs(
        formed_B
    ).max()
    np.testing.assert_allclose(residual_B, formed_B, rtol=0, atol=tol)
    assert moves == formed_moves
    if case != "sparse-group":
        assert not np.any(residual_B[blocks[0]]) and np.any(residual_B[blocks[1]])  # both branches taken
    # the residual and the centre followed the moves: each entry is k moves' terms, off by the iterate's
    # error (tol) times the column entries, plus each side's rounding of its k + 1 terms (the kernel adds
    # (delta h_i) x_i per moved row of a sparse block, h_i (X_g delta)_i per dense block: at most k + 2
    # roundings on the way to each entry, k/|g| additions into v and |g| + 1 within a block)
    HX = np.abs(X) * h[:, None]
    step = residual_B[:, 0] - w0[:, 0]
    v_tol = k * HX.max() * tol + 2 * (k + 2) * u * (HX @ moved[:, 0]).max()
    np.testing.assert_allclose(v, (X * h[:, None]) @ step, rtol=0, atol=v_tol)
    if centred:
        centre_tol = np.abs(q).sum() * tol + 2 * (k + 1) * u * (np.abs(q) @ moved[:, 0])
        assert centre == pytest.approx(float(q @ step), rel=0, abs=centre_tol)
    # the implicit model's diagonal blocks against the formed ones: each entry n + 1 products, |Q| bounds them
    implicit = _ImplicitGram.of(design, h, q if centred else None, hsum)
    rows = np.stack(blocks)
    np.testing.assert_allclose(
        implicit.blocks(rows), Q[rows[:, :, None], rows[:, None, :]], rtol=0,
        atol=2 * (n + 2) * u * absQ.max(),
    )  # fmt: skip


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("layout", ["consecutive", "gathered"])
def test_the_implicit_diagonal_blocks_are_the_formed_ones(centred, layout):
    """``_ImplicitGram.blocks`` of consecutive rows (batched views) and of gathered rows against Q.

    Tolerance: each entry is a sum of n products and the centring term, each side within (n + 1) u of
    the entries of |Q|'s magnitude bound (the standard dot-product bound), so they differ by at most
    twice that.
    """
    from normpen.linear.solvers.cd import _ImplicitGram

    rng = np.random.default_rng(3)
    n, k, size = 30, 20, 4
    X = np.asfortranarray(rng.standard_normal((n, k)))
    h = rng.uniform(0.1, 1.0, n)
    q, hsum, Q, absQ = centred_model(X, h, centred)
    if layout == "consecutive":
        rows = np.arange(4, 4 + 3 * size).reshape(3, size)
    else:
        rows = np.stack([np.arange(12, 16), np.arange(0, 4), [5, 9, 2, 17]])
    got = _ImplicitGram.of(X, h, q if centred else None, hsum).blocks(rows)
    np.testing.assert_allclose(
        got, Q[rows[:, :, None], rows[:, None, :]], rtol=0, atol=2 * (n + 2) * EPS / 2 * absQ.max()
    )
