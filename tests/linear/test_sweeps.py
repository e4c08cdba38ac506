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

from normpen.linear.blocks import BlockPenalty
from normpen.linear.solvers._sweeps import epoch_blocks, epoch_coordinates

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


def _run_blocks(Q, grad, B, pen, L):
    """The kernel's epoch from ``B`` with its gradient ``grad``, ``Q`` as given: ``(B, grad, moves)``."""
    from normpen.linear.solvers.cd import _block_steps

    B, grad = B.copy(), grad.copy()
    work = np.empty((int(pen.block_sizes.max()), B.shape[1]))
    moves = epoch_blocks(Q, grad, B, *_block_steps(pen, L), pen.positive, work)
    return B, grad, moves


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "case",
    ["lasso", "elastic net", "group lasso", "sparse-group", "positive", "multi-output", "stacked"],
)
def test_a_block_epoch_is_the_prox_of_each_block_in_turn(seed, case):
    rng = np.random.default_rng(seed)
    k, m = 12, (3 if case in ("multi-output", "stacked") else 1)
    Q, g, W = _model(rng, k, m, stacked=case == "stacked")
    l1 = np.full((k, m), 0.3)
    if case in ("lasso", "elastic net", "positive"):
        pen = BlockPenalty.separable(
            l1, ridge=0.2 if case == "elastic net" else 0.0, positive=case == "positive"
        )
    else:
        blocks = [np.arange(i, min(i + 4, k)) for i in range(0, k, 4)]
        l1 = l1 if case == "sparse-group" else np.zeros((k, m))
        pen = BlockPenalty.from_blocks(l1, blocks, 0.5 * np.sqrt([len(b) for b in blocks]), ridge=0.1)
    L = _lipschitz(Q, pen)
    B = W + 0.5 * rng.standard_normal((k, m))
    if case == "positive":
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
    got = _run_blocks(single, grad, B, pen, L)
    want = _run_blocks(rounded, grad, B, pen, L)
    # the same float64 operations in the same order on the same inputs: bit-identical
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


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
