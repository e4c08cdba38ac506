r"""The compiled epoch of the SVMs' dual coordinate descent (normpen.linear.solvers._dual_sweeps).

The reference is a Python replay of the documented update on the centred design (the docstrings of
``_dual_sweeps`` and ``svm._DualCoordinateDescent``), written from the formulas, not from the kernel:
for sample ``i``, with :math:`s = y^\top\alpha`, :math:`w = u - s c` and :math:`b' = \beta + \rho s`,
the gradient :math:`G_i = y_i((x_i - c)^\top w + b') - 1 + D_{ii}\alpha_i`, the shrinking rule, and
the clipped Newton step :math:`\alpha_i \leftarrow \min(\max(\alpha_i - G_i/\bar Q_{ii}, 0), U_i)`
with :math:`u \mathrel{+}= (\alpha_i^{new} - \alpha_i) y_i x_i`. The tests check (1) every step of an
epoch: the kernel run on that one sample from the replay's state against the replay's step, and
(2) that the kernel's epoch is its one-sample steps in turn, bit for bit (the same float64 operations
in the same order: the loop carries nothing but alpha, u, s, u^T c and the extreme projected
gradients). Together: one compiled epoch is the documented update in turn, to rounding.

Tolerance of (1), derived (``_step_tolerance``). From the same state, both sides compute the same real
numbers by different formulas (the kernel from ``x_i^T u``, the precomputed ``shift_i`` and ``x_i^T c``
and the running ``u^T c``; the replay from ``x_i - c`` and ``w``). To first order in the unit roundoff
``u`` (the dropped terms are ``(n + p) u`` times smaller):

- a gradient is a sum of at most ``3p + 10`` rounded operations on each side (the dot's ``p`` products
  and sums, the ``p`` differences ``x_i - c`` and ``2p`` roundings of ``w``, the ``p + 2`` of the
  inputs ``shift_i`` and ``x_i^T c`` and of ``u^T c``, and a few scalar ones), every partial sum
  bounded by ``M_i = sum_j (|x_ij| + |c_j|)(|u_j| + |s||c_j|) + |s|(||c||^2 + rho + |x_i|.|c|)
  + |beta| + rho|s| + 1 + D_ii alpha_i`` (Higham, Accuracy and Stability, 2002, eqs. 3.5 and 4.4): the
  two gradients differ by at most ``dG = 2(3p + 10) u M_i``, and so do the projected gradients;
- the step is 1-Lipschitz in ``alpha_i - G_i/Q_ii`` (clipping to a box) and its product and
  difference round by ``2u(alpha_i + |G_i|/Q_ii)`` on each side: ``dalpha = dG/Q_ii + 4u(...)``,
  and the step ``(new - alpha_i) y_i`` adds ``2u|step|``;
- the axpy on ``u`` rounds by ``2u(|step x_ij| + |u_j|)`` per entry on each side, the kernel's running
  ``s`` and ``u^T c`` by one or two roundings of their new values and ``x_i^T c`` by ``p u |x_i|.|c|``,
  the replay's ``y^T alpha`` and ``u^T c`` by ``n u sum(alpha)`` and ``p u |u|.|c|``.

The kept indices and the ``1e-14`` move threshold are discontinuous in ``G_i``: a shrinking decision
within ``dG`` of its threshold is asserted not to occur (the test's premise, for these seeds), and
within ``dG`` of the move threshold the step either side may take or skip is at most
``(1e-14 + 2 dG)/Q_ii``, which is added to ``dalpha``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from normpen.linear.solvers import _dual_sweeps, svm
from normpen.linear.solvers._dual_sweeps import epoch_dense, epoch_sparse
from normpen.linear.solvers.svm import _DualCoordinateDescent, linear_svm

U = np.finfo(np.float64).eps / 2  # unit roundoff
SECOND_ORDER = 1.01  # the first-order bound times 1 + O((n + p) u): 1.01 is far above that factor
MOVE = 1e-14  # the kernel moves a variable when its projected gradient exceeds this (module docstring)


def _design(rng, n, p, kind):
    """Off-centre data (the centring has work to do), dense or CSR with half the entries empty
    (one kept per row: a zero row's step is infinite without an intercept)."""
    X = rng.standard_normal((n, p)) + 1.5
    if kind == "dense":
        return X
    empty = rng.random((n, p)) < 0.5
    empty[np.arange(n), np.arange(n) % p] = False
    X[empty] = 0.0
    return sp.csr_matrix(X)


def _coordinate_descent(seed, kind, loss, fit_intercept):
    """A ``_DualCoordinateDescent`` started from alphas at 0, at U_i (hinge) and inside."""
    rng = np.random.default_rng(seed)
    n, p = 30, 7
    X = _design(rng, n, p, kind)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    y[:2] = 1.0, -1.0
    a = rng.uniform(0.5, 1.5, n)
    a /= a.sum()
    lam = 0.05
    scale = a / lam if loss == "hinge" else np.full(n, 2.0 / (lam * n))  # U_i, or a typical alpha_i
    alpha = scale * rng.uniform(0.0, 1.0, n)
    alpha[rng.random(n) < 0.3] = 0.0
    if loss == "hinge":  # the squared hinge has no upper bound
        at_upper = rng.random(n) < 0.3
        alpha[at_upper] = scale[at_upper]
    return _DualCoordinateDescent(X, y, a, lam, loss, fit_intercept, alpha)


def _replay_step(cd, X, i, alpha, u, above, below):
    """The documented update of sample ``i`` on copies: ``(kept, pg, G, alpha, u)``."""
    y, c = cd.y, cd.c
    s = float(y @ alpha)
    w = u - s * c
    grad = y[i] * ((X[i] - c) @ w + cd.center + cd.rho * s) - 1.0 + cd.extra_diag[i] * alpha[i]
    at_lower, at_upper = alpha[i] == 0.0, alpha[i] == cd.upper[i]
    if at_lower and grad > above or at_upper and grad < below:
        return False, None, grad, alpha, u
    pg = min(grad, 0.0) if at_lower else max(grad, 0.0) if at_upper else grad
    alpha = alpha.copy()
    if abs(pg) > MOVE:
        new = float(np.clip(alpha[i] - grad * cd.inv_q_diag[i], 0.0, cd.upper[i]))
        u = u + (new - alpha[i]) * y[i] * X[i]
        alpha[i] = new
    return True, pg, grad, alpha, u


def _step_tolerance(cd, X, i, alpha, u, grad, new_alpha, new_u):
    """The module docstring's first-order bounds for one step: on G (and PG), alpha_i, u, s, u^T c."""
    n, p = X.shape
    x, c, q = np.abs(X[i]), np.abs(cd.c), cd.inv_q_diag[i]
    s = abs(float(cd.y @ alpha))
    magnitude = (
        float((x + c) @ (np.abs(u) + s * c))
        + s * (float(c @ c) + cd.rho + float(x @ c))
        + abs(cd.center)
        + cd.rho * s
        + 1.0
        + cd.extra_diag[i] * alpha[i]
    )
    d_grad = 2 * (3 * p + 10) * U * magnitude
    d_alpha = q * d_grad + 4 * U * (alpha[i] + abs(grad) * q)
    if abs(abs(min(grad, 0.0) if alpha[i] == 0 else grad) - MOVE) <= d_grad:  # the move is unsure
        d_alpha += q * (MOVE + 2 * d_grad)
    step = abs(new_alpha[i] - alpha[i])
    d_step = d_alpha + 2 * U * step
    axpy = 4 * U * (step * x + np.abs(new_u))
    xc = float(x @ c)
    return {
        "pg": d_grad,
        "alpha": d_alpha,
        "u": x * d_step + axpy,
        "s": d_step + U * abs(float(cd.y @ new_alpha)) + n * U * float(new_alpha.sum()),
        "uc": xc * d_step
        + step * p * U * xc
        + 2 * U * (step * xc + abs(float(new_u @ cd.c)))
        + float(c @ axpy)
        + p * U * float(np.abs(new_u) @ c),
    }


def _kernel(cd, order, alpha, u, above, below):
    """The compiled epoch over ``order`` from copies of ``(alpha, u)``: its returns, then alpha and u."""
    alpha, u = alpha.copy(), u.copy()
    s, uc = float(cd.y @ alpha), float(u @ cd.c)
    return (*cd._epoch(cd._samples, alpha, u, order, s, uc, cd.center, above, below), alpha, u)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shrinking", [False, True])
def test_each_step_of_an_epoch_is_the_documented_update(seed, kind, loss, fit_intercept, shrinking):
    cd = _coordinate_descent(seed, kind, loss, fit_intercept)
    X = cd.X.toarray() if sp.issparse(cd.X) else cd.X
    order = np.random.default_rng(seed + 10).permutation(X.shape[0])
    above, below = (0.05, -0.05) if shrinking else (np.inf, -np.inf)
    alpha, u, skipped = cd.alpha.copy(), cd.u.copy(), 0
    for i in order:
        kept, pg, grad, new_alpha, new_u = _replay_step(cd, X, i, alpha, u, above, below)
        tol = {
            k: SECOND_ORDER * v
            for k, v in _step_tolerance(cd, X, i, alpha, u, grad, new_alpha, new_u).items()
        }
        for threshold, bound in ((above, 0.0), (below, cd.upper[i])):
            if alpha[i] == bound and np.isfinite(threshold):
                assert abs(grad - threshold) > tol["pg"], (
                    "a shrinking decision within rounding: change the seed"
                )
        pg_max, pg_min, got_kept, s, uc, got_alpha, got_u = _kernel(cd, np.array([i]), alpha, u, above, below)
        if not kept:
            skipped += 1
            assert got_kept.size == 0 and (pg_max, pg_min) == (-np.inf, np.inf)
        else:
            np.testing.assert_array_equal(got_kept, [i])
            assert abs(pg_max - pg) <= tol["pg"] and pg_min == pg_max
        np.testing.assert_array_less(np.abs(got_alpha - new_alpha), tol["alpha"] + np.finfo(float).tiny)
        np.testing.assert_array_less(np.abs(got_u - new_u), tol["u"] + np.finfo(float).tiny)
        assert abs(s - float(cd.y @ new_alpha)) <= tol["s"]
        assert abs(uc - float(new_u @ cd.c)) <= tol["uc"]
        alpha, u = new_alpha, new_u
    if not shrinking:
        assert skipped == 0
    elif loss == "hinge":  # the hinge cases shrink at both bounds; the squared hinge's only at 0, rarely here
        assert skipped > 0
    assert np.any(alpha != cd.alpha)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
def test_an_epoch_is_its_steps_in_turn(kind, loss):
    """The kernel's epoch equals its one-sample epochs chained, bit for bit (the loop carries only the
    state it returns, as float64; the same operations in the same order), and its in-place updates
    are those of :meth:`_DualCoordinateDescent.epoch`."""
    cd = _coordinate_descent(4, kind, loss, True)
    order = np.random.default_rng(5).permutation(cd.X.shape[0])
    above, below = 0.3, -0.3
    whole = _kernel(cd, order, cd.alpha, cd.u, above, below)
    alpha, u, s, uc = cd.alpha.copy(), cd.u.copy(), cd.y_alpha, cd.uc
    pg_max, pg_min, kept = -np.inf, np.inf, []
    for i in order:
        top, bottom, moved, s, uc = cd._epoch(
            cd._samples, alpha, u, np.array([i]), s, uc, cd.center, above, below
        )
        pg_max, pg_min, kept = max(pg_max, top), min(pg_min, bottom), kept + list(moved)
    np.testing.assert_array_equal(whole[2], kept)
    assert whole[0:2] == (pg_max, pg_min)
    np.testing.assert_array_equal(whole[5], alpha)
    np.testing.assert_array_equal(whole[6], u)
    # the method updates the state in place: the same numbers as the chained steps
    before_s, before_uc = cd.y_alpha, cd.uc
    method = cd.epoch(order, above, below)
    np.testing.assert_array_equal(method[2], kept)
    np.testing.assert_array_equal(cd.alpha, alpha)
    np.testing.assert_array_equal(cd.u, u)
    assert (cd.y_alpha, cd.uc) == (s, uc) and (before_s, before_uc) != (s, uc)


def test_sparse_rows_with_64_bit_indices_are_the_same_epoch():
    """int32 and int64 CSR indices run the same float64 operations in the same order: bit-identical."""
    cd = _coordinate_descent(0, "sparse", "hinge", True)
    order = np.random.default_rng(1).permutation(cd.X.shape[0])
    runs = []
    for dtype in (np.int32, np.int64):
        alpha, u = cd.alpha.copy(), cd.u.copy()
        indices, indptr = cd.X.indices.astype(dtype), cd.X.indptr.astype(dtype)
        out = epoch_sparse(
            cd.X.data, indices, indptr, cd._samples, alpha, u, order, cd.y_alpha, cd.uc, cd.center, 0.5, -0.5
        )
        runs.append((alpha, u, *out))
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)


def test_the_kernel_refuses_what_it_cannot_read_in_place():
    """A non-contiguous design, a float32 alpha (its update would be lost) or a bad index is refused."""
    cd = _coordinate_descent(0, "dense", "hinge", True)
    order = np.arange(cd.X.shape[0])
    args = (cd.y_alpha, cd.uc, cd.center, np.inf, -np.inf)
    with pytest.raises(ValueError, match="contiguous"):
        epoch_dense(np.asfortranarray(cd.X), cd._samples, cd.alpha, cd.u, order, *args)
    with pytest.raises(ValueError, match="dtype"):
        epoch_dense(cd.X, cd._samples, cd.alpha.astype(np.float32), cd.u, order, *args)
    with pytest.raises(ValueError, match=r"X must be \(len\(alpha\), len\(u\)\)"):
        epoch_dense(cd.X[:-1], cd._samples, cd.alpha, cd.u, order, *args)
    before = cd.alpha.copy()
    with pytest.raises(ValueError, match="order must hold sample indices"):
        epoch_dense(cd.X, cd._samples, cd.alpha, cd.u, np.append(order, len(order)), *args)
    np.testing.assert_array_equal(cd.alpha, before)  # a refused call changes nothing


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_coordinate_descent_agrees_with_the_interior_point(monkeypatch, loss, fit_intercept):
    """The CSR epoch end to end: forced coordinate descent reaches the interior point's certified optimum."""
    rng = np.random.default_rng(3)
    X = _design(rng, 150, 12, "sparse")
    y = np.where(
        np.asarray(X @ rng.standard_normal(12)).ravel() + 0.3 * rng.standard_normal(150) > 1, 1.0, -1.0
    )
    lam = 0.02
    ipm = linear_svm(X, y, lam, loss=loss, fit_intercept=fit_intercept, tol=1e-10)
    monkeypatch.setattr(svm, "_DIRECT_LIMIT", 0)
    cd = linear_svm(
        X, y, lam, loss=loss, fit_intercept=fit_intercept, tol=1e-8, random_state=0, max_iter=50_000
    )
    assert cd.converged and ipm.converged
    # both objectives are within their certified gaps of the optimum, up to the rounding of two
    # objectives (a mean of n terms: n eps P each)
    n, eps = len(y), np.finfo(np.float64).eps
    assert abs(cd.objective - ipm.objective) <= cd.dual_gap + ipm.dual_gap + 2 * n * eps * ipm.objective
    # lam-strong convexity: ||w - w*||^2 <= 2 gap / lam for each, hence the sum of the two radii, plus
    # the rounding of each w = sum_i alpha_i y_i x_i (n terms: n eps || |X|^T alpha ||)
    radius = np.sqrt(2 * cd.dual_gap / lam) + np.sqrt(2 * ipm.dual_gap / lam)
    absX = abs(X).T
    rounding = n * eps * (np.linalg.norm(absX @ cd.dual_coef) + np.linalg.norm(absX @ ipm.dual_coef))
    assert np.linalg.norm(cd.coef - ipm.coef) <= radius + rounding


def test_the_compiled_module_is_built_from_the_current_source():
    """An editable install does not rebuild the extension when the .pyx changes (docs/testing.md)."""
    source = Path(_dual_sweeps.__file__).with_name("_dual_sweeps.pyx")
    if not source.exists():  # an installed wheel ships the compiled module only
        pytest.skip("no source next to the compiled module")
    assert Path(_dual_sweeps.__file__).stat().st_mtime >= source.stat().st_mtime, (
        "the compiled _dual_sweeps is older than _dual_sweeps.pyx: rebuild it with `bash scripts/setup.sh`"
    )
