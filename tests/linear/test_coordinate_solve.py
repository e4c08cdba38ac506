"""The compiled working-set solve (normpen.linear.solvers._coordinate_solve) against an independent minimiser.

The model is a least-squares problem on a small design, :math:`m(b) = \\frac1{2n}\\|y - Xb\\|^2 + P(b)`,
given to the solve as ``cd`` does (:math:`Q = X^\\top X/n`, the gradient :math:`g_0 = Q w_0 - X^\\top y/n`
at a start :math:`w_0`, :class:`cd._LeastSquaresGap`'s stop data). The reference minimiser is proximal
gradient in numpy (:func:`_reference`), written from the penalty's formula, not from the kernel. The
same solve on an implicit ``Q`` (``cd._ResidualSweep`` over ``cd._ImplicitGram``, the route of wide
sparse working sets) is held to the same bounds.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from normpen.linear.blocks import BlockPenalty
from normpen.linear.solvers import cd
from normpen.linear.solvers._coordinate_solve import RESIDUAL, FaceFactor, minimize_coordinates

EPS = np.finfo(np.float64).eps


def _design(rng, n=60, k=12):
    X = rng.standard_normal((n, k))
    X[:, 1] = 0.9 * X[:, 0] + 0.1 * X[:, 1]  # a correlated pair, so coordinate descent needs many epochs
    y = X[:, :4] @ np.array([1.0, -0.8, 0.6, 0.3]) + 0.3 * rng.standard_normal(n)
    return X, y


def _model(X, y, W0):
    n = X.shape[0]
    Q = X.T @ X / n
    c = X.T @ y / n
    return Q, Q @ W0 - c, 0.5 * float(np.sum((y - X @ W0) ** 2)) / n


def _solve(
    Q, g0, W0, alpha, ridge, positive, stop, anderson=5, max_epochs=10_000, direct=cd._DIRECT_GRAM_FACE
):
    return minimize_coordinates(
        Q, g0, W0, alpha, ridge, positive, stop, anderson, max_epochs, 16 * g0.size * EPS,
        cd._REFRESH_EPOCHS, cd._SETTLED_SIGNS, direct, cd._FACE_ITERATIONS,
        cd._FACE_REDUCTION, cd._POLISH_MAX_SUPPORT, cd._FACE_COST,
    )  # fmt: skip


def _objective(X, y, b, alpha, ridge):
    return 0.5 * float(np.sum((y - X @ b) ** 2)) / X.shape[0] + float(alpha @ np.abs(b)) + 0.5 * ridge * b @ b


def _reference(Q, c, alpha, ridge, positive, iterations=20_000):
    """Proximal gradient on :math:`\\frac12 b^\\top Qb - c^\\top b + P(b)` at step
    :math:`1/\\lambda_{\\max}(Q)`: linear convergence at rate :math:`1 - \\lambda_{\\min}/\\lambda_{\\max}`
    (condition ~200 here, so 20,000 steps reach float64's rounding)."""
    step = 1.0 / np.linalg.eigvalsh(Q)[-1]
    b = np.zeros(c.size)
    for _ in range(iterations):
        z = b - step * (Q @ b - c)
        shrunk = (
            np.maximum(z - step * alpha, 0)
            if positive
            else np.sign(z) * np.maximum(np.abs(z) - step * alpha, 0)
        )
        b = shrunk / (1 + step * ridge)
    return b


CASES = {
    "lasso": (np.full(12, 0.05), 0.0, False),
    "weighted with unpenalized": (np.r_[0.0, 0.0, np.linspace(0.01, 0.1, 10)], 0.0, False),
    "elastic net": (np.full(12, 0.03), 0.04, False),
    "positive": (np.full(12, 0.02), 0.0, True),
}


def _implicit(X, W0, g0):
    """The model's ``Q`` left implicit over sparse columns (:math:`h = 1/n`, no intercept), as the operator
    :func:`minimize_coordinates` drives, and the ``Q`` its stop test reads."""
    n = X.shape[0]
    Q = cd._ImplicitGram.of(sp.csc_matrix(X), np.full(n, 1.0 / n), None, 1.0)
    return cd._ResidualSweep(Q, g0[:, None], W0[:, None]), Q


# faces solved directly (dpstrf), or all by conjugate gradients (direct = 0: the route of faces over
# cd._DIRECT_GRAM_FACE coordinates); Q formed or implicit
@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("direct", [cd._DIRECT_GRAM_FACE, 0])
@pytest.mark.parametrize("anderson", [0, 5])
@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_the_gap_stop_leaves_a_point_within_its_target_of_the_optimum(case, warm, anderson, direct, implicit):
    alpha, ridge, positive = CASES[case]
    rng = np.random.default_rng(0)
    X, y = _design(rng)
    k = X.shape[1]
    W0 = np.abs(rng.standard_normal(k)) * 0.1 if warm else np.zeros(k)
    Q, g0, loss0 = _model(X, y, W0)
    P0 = 0.5 * float(y @ y) / X.shape[0]
    target = 1e-10 * P0
    pen = BlockPenalty.separable(alpha[:, None], ridge, positive)
    operator, model = _implicit(X, W0, g0) if implicit else (Q, Q)
    stop = cd._LeastSquaresGap(loss0, W0[:, None], g0[:, None], model, pen, target).compiled()
    b, epochs = _solve(operator, g0, W0, alpha, ridge, positive, stop, anderson, direct=direct)
    assert 0 < epochs < 10_000
    reference = _reference(Q, X.T @ y / X.shape[0], alpha, ridge, positive)
    # the objective of the point left is within the gap target of the optimum; both objectives are sums of
    # n + k terms of at most P0 each, computed to (n + k) eps P0 (Higham's recursive-summation bound), twice
    slack = 2 * (X.shape[0] + k) * EPS * P0
    excess = _objective(X, y, b, alpha, ridge) - _objective(X, y, reference, alpha, ridge)
    assert -slack <= excess <= target + slack
    # and the point itself: the model is lambda_min-strongly convex (Q positive definite, n > k), so
    # lambda_min / 2 ||b - b*||^2 <= m(b) - m* <= target + slack
    lam_min = np.linalg.eigvalsh(Q)[0]
    assert np.linalg.norm(b - reference) <= np.sqrt(2 * (target + slack) / lam_min)
    if positive:
        assert np.all(b >= 0)


def test_the_residual_stop_reduces_the_prox_gradient_residual_by_its_fraction():
    rng = np.random.default_rng(1)
    X, y = _design(rng)
    k = X.shape[1]
    alpha = np.full(k, 0.05)
    W0 = np.zeros(k)
    Q, g0, _ = _model(X, y, W0)
    pen = BlockPenalty.separable(alpha[:, None])
    L = np.diagonal(Q).copy()
    b, epochs = _solve(Q, g0, W0, alpha, 0.0, False, (RESIDUAL, 0.1))
    start = np.max(pen.kkt_violation(W0[:, None], g0[:, None], L))
    end = np.max(pen.kkt_violation(b[:, None], (g0 + Q @ (b - W0))[:, None], L))
    # the stop test's residual and the penalty's are the same formula in a different order of the same
    # few operations on gradients of k + 1 terms: (k + 1) eps times the gradient's scale apart
    assert end <= 0.1 * start + (k + 1) * EPS * np.max(np.abs(g0)) * np.max(L) / np.min(L)
    assert 0 < epochs


def test_face_steps_converge_on_an_ill_conditioned_rank_deficient_design():
    """Standardised powers t, ..., t^12 of one variable (condition ~1e8) and the sum of the first two
    columns (Q singular, face Hessians rank deficient): the gap must reach its target, the face factor
    following the null space instead of solving it."""
    rng = np.random.default_rng(2)
    n = 80
    t = rng.uniform(-1, 1, n)
    X = np.column_stack([t**p for p in range(1, 13)])
    X = (X - X.mean(0)) / X.std(0)
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    y = np.sin(3 * t) + 0.05 * rng.standard_normal(n)
    y -= y.mean()
    k = X.shape[1]
    alpha = np.full(k, 1e-5)
    W0 = np.zeros(k)
    Q, g0, loss0 = _model(X, y, W0)
    P0 = 0.5 * float(y @ y) / n
    target = 1e-9 * P0
    pen = BlockPenalty.separable(alpha[:, None])
    stop = cd._LeastSquaresGap(loss0, W0[:, None], g0[:, None], Q, pen, target).compiled()
    b, epochs = _solve(Q, g0, W0, alpha, 0.0, False, stop, max_epochs=3_000)
    # a count, not a time: measured 406 epochs with face steps and 5,910 without (settled_fraction -1);
    # 3,000 separates the two
    assert epochs < 3_000
    # the stop test's gap, recomputed independently from X and y: the lasso dual point r / kappa, with
    # r = y - Xb and kappa = max(1, ||X^T r / n||_inf / alpha). Each of the two objectives is a sum of n + k
    # terms bounded by P0 + |b|^T |Q| |b| / 2, the scale of the fit's and the residual's squares (Higham's
    # recursive-summation bound: (n + k) eps times that, each)
    r = y - X @ b
    kappa = max(1.0, np.max(np.abs(X.T @ r / n)) / alpha[0])
    dual = float(r @ y) / (n * kappa) - 0.5 * float(r @ r) / (n * kappa**2)
    scale = P0 + 0.5 * np.abs(b) @ np.abs(Q) @ np.abs(b)
    assert _objective(X, y, b, alpha, 0.0) - dual <= target + 2 * (n + k) * EPS * scale


def test_the_polish_refuses_a_singular_hessian():
    """Columns a, b and a + b on the support, Q_SS singular but for one ulp; LAPACK's plain solve takes a
    step of ~1e14 along (1, 1, -1) that keeps the signs. With no epoch the solve is its closing polish,
    which must leave the start as it was."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 40))
    X = np.column_stack([a, b, a + b])
    Q = X.T @ X / 40
    Q[2, 2] = np.nextafter(Q[2, 2], np.inf)
    W0 = np.array([0.5, 0.25, -0.125])
    grad = np.array([-0.3, -0.2, 0.1])
    alpha = np.full(3, 0.1)
    step = np.linalg.solve(Q, -(grad + alpha * np.sign(W0)))
    # what a plain solve takes: a step of ~1e14 along the null space (1, 1, -1) that keeps the signs
    assert np.max(np.abs(step)) > 1e6 and np.array_equal(np.sign(W0 + step), np.sign(W0))
    out, epochs = _solve(Q, grad, W0, alpha, 0.0, False, (RESIDUAL, 0.0), max_epochs=0)
    assert epochs == 0
    np.testing.assert_array_equal(out, W0)


def test_a_rank_deficient_face_factor_is_updated_when_coordinates_leave():
    """A face holding an exact linear dependence (a column that is the sum of two others) factors to rank
    s - 1; when two coordinates outside the dependence leave, the factor is updated (its coordinate past
    the rank stays past it) and solves the new face as the least-norm solution on the range of H,
    ``pinv(H) r`` for r in that range. When one coordinate of the dependence leaves, the face has full
    rank again, by an update or afresh. Tolerance, as for the full-rank update below, with the condition
    number on the range (largest over smallest nonzero eigenvalue)."""
    rng = np.random.default_rng(5)
    n, k = 300, 90
    X = rng.standard_normal((n, k))
    old = np.sort(rng.choice(k, 60, replace=False))
    pair = old[[3, 30]]
    Xs = np.column_stack([X, X[:, pair[0]] + X[:, pair[1]]])
    Q = Xs.T @ Xs / n
    cutoff = 16 * n * EPS
    face = np.r_[old, k]
    previous = FaceFactor(Q, face, 0.0, cutoff)
    assert not previous.solution(np.ones(face.size), np.zeros(face.size))[1]  # rank deficient
    for leaving, updated in ([old[[10, 50]], True], [pair[:1], None]):
        new = np.setdiff1d(face, leaving)
        factor = FaceFactor(Q, new, 0.0, cutoff, previous)
        if updated is not None:
            assert factor.from_update == updated
        H = Q[np.ix_(new, new)]
        values, vectors = np.linalg.eigh(H)
        nonzero = values > cutoff * values[-1]
        target = vectors[:, nonzero] @ rng.standard_normal(int(nonzero.sum()))  # in the range of H
        step, full_rank = factor.solution(target, np.zeros(new.size))
        assert full_rank == bool(nonzero.all())
        exact = np.linalg.pinv(H, rtol=cutoff) @ target
        condition = values[-1] / values[nonzero][0]
        assert np.linalg.norm(step - exact) <= 10 * new.size * EPS * condition * np.linalg.norm(exact)


def test_an_updated_face_factor_solves_the_new_face():
    """A face that lost two coordinates and gained three since the last one factored: the factor is
    updated (Givens rotations, appended rows) and solves the new face's system as a fresh solve does.
    Tolerance, derived: a backward-stable Cholesky solve (updates by orthogonal rotations and forward
    substitution are backward stable too) has relative error at most about s eps kappa(H) (Higham,
    2002, Thm. 10.4, with a constant of a few); 10 s eps kappa(H) bounds it."""
    rng = np.random.default_rng(4)
    n, k = 300, 90
    X = rng.standard_normal((n, k))
    Q = X.T @ X / n
    old = np.sort(rng.choice(k, 60, replace=False))
    outside = np.setdiff1d(np.arange(k), old)
    new = np.sort(np.r_[np.delete(old, [5, 40]), rng.choice(outside, 3, replace=False)])
    target = rng.standard_normal(new.size)
    cutoff = 16 * n * EPS
    face = FaceFactor(Q, new, 0.0, cutoff, FaceFactor(Q, old, 0.0, cutoff))
    step, full_rank = face.solution(target, np.zeros(new.size))
    assert face.from_update and full_rank
    H = Q[np.ix_(new, new)]
    exact = np.linalg.solve(H, target)
    assert np.linalg.norm(step - exact) <= 10 * new.size * EPS * np.linalg.cond(H) * np.linalg.norm(exact)
    # a coordinate that enters as the sum of two on the face makes it singular: the update refuses
    # (its pivot is below the cutoff) and the fresh pivoted factorisation finds the rank deficiency
    Xs = np.column_stack([X, X[:, new[0]] + X[:, new[1]]])
    Qs = Xs.T @ Xs / n
    singular = np.r_[new, k]
    face = FaceFactor(Qs, singular, 0.0, cutoff, FaceFactor(Qs, new, 0.0, cutoff))
    _, full_rank = face.solution(rng.standard_normal(singular.size), np.zeros(singular.size))
    assert not face.from_update and not full_rank
