r"""Block coordinate descent with working sets, Anderson acceleration and gap-safe screening.

Solves

.. math::

    \min_{W, b}\; \sum_i a_i\,\ell(y_i, x_i^\top W + b) + P(W)

for a smooth datafit (quadratic, logistic, multinomial, squared hinge,
multitask quadratic) and a block-separable penalty
(:class:`~normpen.linear.blocks.BlockPenalty`: L1, weighted L1, elastic net,
L2, group and sparse-group lasso, multitask group lasso on the rows of
:math:`W`), with positivity as an option.

**What it needs from a penalty**: a per-block prox and the block dual norm
(for the duality gap, :math:`\lambda_{\max}` and screening), which
:func:`~normpen.linear.blocks.as_block_penalty` builds from the penalty object.
**What it needs from a datafit**: ``raw_gradient``, ``second_derivative``,
``conjugate``, ``fit_intercept`` and a finite ``curvature`` (so not the hinge).

Algorithm (in the spirit of celer and skglm, written with numpy only, so
there is no compilation on the first fit):

1. *Outer loop.* Refit the intercept exactly, compute the full gradient
   :math:`X^\top G` once, the duality gap (:mod:`normpen.linear.problem`), and
   stop when it is below ``tol`` times the objective at :math:`W = 0`.
2. *Gap-safe screening* (Ndiaye et al., 2017). The dual is
   :math:`1/c`-strongly concave, so :math:`\|X_g^\top A(u - u^\star)\| \le
   \sqrt{2\,\text{gap}\,L_g}` with :math:`L_g = c\|A^{1/2}X_g\|^2`; blocks whose
   whole ball satisfies the zero condition are set to zero for good.
3. *Working set.* The nonzero and unpenalized blocks plus the blocks that
   violate the optimality conditions most (prox-gradient residual), up to
   twice the number of nonzero blocks (at least ``ws_start``).
4. *Subproblem.* On the working set the datafit is replaced by its
   quadratic model, :math:`\tfrac12 \Delta^\top Q \Delta + g^\top\Delta` with
   :math:`Q = X_{ws}^\top H X_{ws}` (:math:`H = A` for least squares, whose
   model is exact and whose Gram matrix is cached across the path;
   :math:`H = A\,\ell''(z)` per output otherwise, a proximal Newton step). The
   intercept is eliminated exactly by the Schur complement of :math:`Q`. The
   model is minimised by cyclic (block) coordinate descent on :math:`Q`:
   each update costs one axpy of length :math:`|ws|` and never touches
   :math:`X`. Every ``anderson + 1`` epochs the last iterates are
   extrapolated in the metric of :math:`Q` (Bertrand and Massias, 2021), the
   extrapolation is kept when it lowers the model objective, and the model
   gradient is recomputed from :math:`Q` at the point kept, so that rounding
   never accumulates (working sets wider than ``_SINGLE_PRECISION_WIDTH``
   stream a float32 copy of :math:`Q` in the updates, and recompute the
   gradient in float64 before trusting a stop test). The working set is
   solved until its own duality gap is below 0.6 times the outer target.
   Non-quadratic datafits then take an Armijo line search on the true
   objective and repeat Newton steps until that holds, keeping the model's
   Gram matrices while full steps are taken and the curvature barely moves.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.linalg.blas import daxpy
from sklearn.exceptions import ConvergenceWarning

from normpen.linear._validation import check_count, check_tol
from normpen.linear.blocks import as_block_penalty
from normpen.linear.problem import Problem, Solution

__all__ = ["coordinate_descent", "solve"]

_MAX_NEWTON = 25
_INNER_GAP_FRACTION = 0.6
_NEWTON_RESIDUAL_FRACTION = 0.1
#: Relative change of the curvature weights (weighted L1) above which a Newton model is rebuilt.
_CURVATURE_DRIFT = 0.1
_POLISH_MAX_SUPPORT = 100
#: Epochs between exact recomputations of the model gradient when Anderson extrapolation is off.
_REFRESH_EPOCHS = 10
#: Working sets at least this wide (in coordinates) stream a float32 copy of ``Q`` in block updates.
_SINGLE_PRECISION_WIDTH = 1024


def coordinate_descent(
    X,
    y,
    datafit,
    penalty,
    *,
    sample_weight=None,
    fit_intercept=True,
    positive=False,
    coef_init=None,
    intercept_init=None,
    tol=1e-4,
    max_iter=100,
    max_epochs=10_000,
    ws_start=10,
    anderson=5,
    screening=True,
):
    r"""Minimise :math:`F(W, b) + P(W)` by working-set block coordinate descent.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
        Design (float32 or float64 kept; dense or sparse).
    y : array-like
        Target in the datafit's form (:meth:`Datafit.encode_target`).
    datafit : Datafit
        A differentiable datafit.
    penalty : L1, ElasticNet, L2, GroupLasso, SparseGroupLasso or BlockPenalty
        The penalty, with its strength.
    sample_weight : array-like of shape (n,), optional
        Sample weights (normalised to sum to 1 inside the datafit).
    fit_intercept : bool, default True
        Fit an unpenalized intercept.
    positive : bool, default False
        Constrain the coefficients to be nonnegative.
    coef_init, intercept_init : array-like, optional
        Warm start.
    tol : float, default 1e-4
        Stop when the duality gap is at most ``tol`` times the objective at
        :math:`W = 0` (with the intercept fitted).
    max_iter : int, default 100
        Maximum number of outer (working-set) iterations.
    max_epochs : int, default 10000
        Maximum total number of coordinate descent epochs.
    ws_start : int, default 10
        Smallest working-set size, in blocks.
    anderson : int, default 5
        Anderson extrapolation memory (0 disables it).
    screening : bool, default True
        Apply gap-safe screening.

    Returns
    -------
    Solution
        Coefficients, intercept, ``dual_gap``, ``n_iter`` and more. A
        ``ConvergenceWarning`` carrying the gap reached is emitted when
        ``tol`` is not met.
    """
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    state = problem.state(coef_init, intercept_init)
    return solve(
        problem,
        as_block_penalty(penalty, problem.coef_shape, positive),
        state,
        tol=tol,
        max_iter=max_iter,
        max_epochs=max_epochs,
        ws_start=ws_start,
        anderson=anderson,
        screening=screening,
    )


def solve(
    problem,
    penalty,
    state,
    *,
    tol=1e-4,
    max_iter=100,
    max_epochs=10_000,
    ws_start=10,
    anderson=5,
    screening=True,
    warn=True,
):
    """Coordinate descent on a :class:`~normpen.linear.problem.Problem` from ``state`` (updated in place).

    ``penalty`` is a :class:`~normpen.linear.blocks.BlockPenalty`. The
    keyword arguments are those of :func:`coordinate_descent`; ``warn=False``
    leaves the convergence warning to the caller (the path emits one for all
    its :math:`\\lambda`).
    """
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    max_epochs = check_count(max_epochs, "max_epochs")
    ws_start = check_count(ws_start, "ws_start")
    anderson = check_count(anderson, "anderson", minimum=0)
    curvature = problem.datafit.curvature
    if curvature is None:
        raise ValueError(
            f"coordinate descent needs a differentiable datafit, got {type(problem.datafit).__name__}; "
            "solve the hinge loss with normpen.linear.solvers.svm"
        )
    lipschitz = problem.block_lipschitz(penalty)
    unscreened = np.ones(penalty.n_blocks, dtype=bool)
    epochs = 0
    for it in range(max_iter + 1):
        problem.refit_intercept(state)
        G, grad = problem.full_gradient(state)
        report = problem.duality_gap(state.z, penalty, state.W, grad)
        threshold = problem.gap_threshold(tol, report)
        if _stops(problem, penalty, state, grad, lipschitz, report, tol, threshold):
            break
        if it == max_iter or epochs >= max_epochs:
            break
        if screening:
            radius = np.sqrt(2 * max(report.gap, 0.0) * lipschitz)
            newly = penalty.certified_zero(-grad, radius) & unscreened
            unscreened &= ~newly
            if _zero_blocks(problem, state, penalty, newly):
                problem.refit_intercept(state)
                G, grad = problem.full_gradient(state)
        violation = penalty.kkt_violation(state.W, grad, lipschitz)
        working = _working_set(penalty, state.W, violation, unscreened, ws_start)
        epochs += _solve_working_set(
            problem,
            state,
            penalty,
            working,
            grad,
            G,
            _INNER_GAP_FRACTION * threshold,
            max_epochs - epochs,
            anderson,
        )
    converged = report.gap <= threshold
    if warn and not converged:
        warnings.warn(
            f"coordinate descent did not converge: duality gap {report.gap:.3e} > tol * P0 = "
            f"{threshold:.3e} after {it} iterations ({epochs} epochs); increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    if warn:
        problem.warn_if_uncertifiable(tol, report.primal, report.gap)
    return Solution(
        coef=problem.as_coef(state.W),
        intercept=problem.as_intercept(state.b),
        dual_gap=float(report.gap),
        gap_scale=problem.objective_at_zero(),
        objective=float(report.primal),
        n_iter=it,
        n_epochs=epochs,
        converged=converged,
    )


def _stops(problem, penalty, state, grad, lipschitz, report, tol, threshold):
    r"""Whether the point is optimal to the accuracy asked for.

    The duality gap must reach ``threshold``. When ``tol`` asks for more than
    the gap can certify (:meth:`Problem.certifiable_tol`) the objective no
    longer tells points apart, but the optimality conditions still do: then
    every block's prox-gradient residual must also be at the gradient's
    rounding level. (Just below :math:`\lambda_{\max}` the zero solution has a
    gap of :math:`\epsilon P_0` while its active coordinate is far from zero.)
    """
    if report.gap > threshold:
        return False
    if tol >= problem.certifiable_tol(report.primal):
        return True
    residual = penalty.kkt_violation(state.W, grad, lipschitz)
    return float(np.max(residual, initial=0.0)) <= problem.gradient_rounding(grad)


def _zero_blocks(problem, state, penalty, blocks):
    """Set the given blocks of ``state.W`` to zero; True if that changed anything."""
    if not blocks.any():
        return False
    rows = penalty.row_order[np.isin(penalty.block_of_row[penalty.row_order], np.flatnonzero(blocks))]
    rows = rows[np.any(state.W[rows] != 0, axis=1)]
    if not rows.size:
        return False
    Z = problem.product(problem.columns(rows), state.W[rows])
    state.z = state.z - (Z[:, 0] if state.z.ndim == 1 else Z)
    state.W[rows] = 0
    state.gradient = None
    return True


def _working_set(penalty, W, violation, unscreened, ws_start):
    """Blocks to optimise: nonzero and unpenalized ones, then the worst violators, sorted."""
    nonzero = penalty.block_max(np.max(np.abs(W), axis=1)) > 0
    keep = (nonzero | ~penalty.penalized) & unscreened
    size = max(ws_start, 2 * int(np.count_nonzero(nonzero)))
    candidates = np.flatnonzero(unscreened & ~keep & (violation > 0))
    extra = size - int(np.count_nonzero(keep))
    if extra < candidates.size:
        candidates = candidates[np.argpartition(-violation[candidates], max(extra, 1) - 1)[: max(extra, 1)]]
    return np.sort(np.concatenate([np.flatnonzero(keep), candidates]))


def _solve_working_set(problem, state, penalty, working, grad, G, gap_target, max_epochs, anderson):
    """Solve the problem restricted to the working set to the duality gap ``gap_target``; returns the epochs.

    Least squares: one exact model solve, stopped on the working set's gap
    computed from Gram quantities. Other datafits: proximal Newton steps
    (each model solved until its optimality residual drops tenfold, then an
    Armijo line search), until the working set's gap reaches the target. A
    Newton step keeps the previous step's curvature (its Gram matrices, the
    cost of a model) while that step was taken in full and the curvature
    weights have moved by at most :data:`_CURVATURE_DRIFT`
    (:meth:`_QuadraticModel.drifted`): the gradient is recomputed exactly at
    every step, so only the rate of convergence depends on the curvature. (A
    shortened step says the model misjudges the curvature: with a kept float32
    model a multinomial path then stalled at a gap of 4e-9 on steps of
    :math:`t \approx 10^{-8}`.)
    """
    pen_ws, rows = penalty.restrict(working)
    X_ws = problem.columns(rows)
    quadratic = problem.exact_model
    g_ws, g_b = grad[rows], G.sum(axis=0)
    epochs = 0
    model, t = None, 1.0
    for newton in range(_MAX_NEWTON):
        if newton:
            problem.refit_intercept(state)
            G = problem.raw_gradient(state.z)
            g_ws = np.asarray(X_ws.T @ G.astype(X_ws.dtype), dtype=np.float64).reshape(-1, problem.n_outputs)
            g_b = G.sum(axis=0)
            if problem.duality_gap(state.z, pen_ws, state.W[rows], g_ws, rows).gap <= gap_target:
                break
        W_ws = state.W[rows]
        if model is None or t < 1 or model.drifted(problem, state.z):
            model = _QuadraticModel(problem, rows, state.z, quadratic)
        g_model = g_ws - model.q.T * (g_b / model.hsum) if problem.fit_intercept else g_ws
        if quadratic:
            stop = _LeastSquaresGap(problem.loss(state.z), W_ws, g_model, model.Q, pen_ws, gap_target)
        else:
            stop = _ResidualTarget(pen_ws, W_ws, g_model, _NEWTON_RESIDUAL_FRACTION)
        B, used = _minimize_model(model.Q, g_model, W_ws, pen_ws, stop, max_epochs - epochs, anderson)
        epochs += used
        step = B - W_ws
        if not np.any(step):
            break
        db = (
            -(g_b + np.einsum("kc,kc->c", model.q.T, step)) / model.hsum if problem.fit_intercept else 0 * g_b
        )
        dz = problem.natural(problem.product(X_ws, step) + db)
        t = 1.0 if quadratic else _armijo(problem, state, pen_ws, W_ws, step, dz, g_ws, g_b, db)
        if t == 0:
            break
        state.W[rows] = W_ws + t * step
        state.b += t * db
        state.z = state.z + t * dz
        state.gradient = None
        if quadratic or epochs >= max_epochs:
            break
    return epochs


class _LeastSquaresGap:
    r"""Stop test of the least-squares working-set problem: its duality gap, from Gram quantities only.

    With :math:`c = X_{ws}^\top A y` (centred with an intercept), the model
    gradient is :math:`\nabla = QB - c`, so :math:`c = QW_0 - g_0`, and
    :math:`\|y\|_A^2 = 2F_0 + W_0^\top(c - g_0)` from the loss :math:`F_0` at
    :math:`W_0`. Then :math:`F(B) = \tfrac12(\|y\|_A^2 + B^\top(\nabla - c))` and,
    for the residual dual point :math:`u = z - y` scaled by :math:`\kappa`,
    :math:`D = -u^\top Ay/\kappa - \|u\|_A^2/(2\kappa^2)` with
    :math:`-u^\top Ay = \|y\|_A^2 - B^\top c` and :math:`\|u\|_A^2 = 2F(B)` (with a
    ridge part: :math:`\kappa = 1` minus :math:`P^*(-\nabla)`). Unpenalized
    coordinates :math:`f` project :math:`u` as :meth:`Problem.free_projection`
    does, here to :math:`u - X_f Q_{ff}^+\nabla_f`: that adds
    :math:`c_f^\top Q_{ff}^+\nabla_f` to :math:`-u^\top Ay` and removes
    :math:`\nabla_f^\top Q_{ff}^+\nabla_f` from :math:`\|u\|_A^2`. Each test costs
    :math:`O(|ws|)`, never a pass over :math:`X`.
    """

    def __init__(self, loss0, W0, g0, Q, pen, target):
        self.c = Q @ W0 - g0
        self.yy = 2 * loss0 + float(np.sum(W0 * (self.c - g0)))
        self.pen, self.target, self.Q = pen, target, Q
        self.free = pen.free_rows
        self.free_system = np.linalg.pinv(Q[np.ix_(self.free, self.free)]) if self.free.size else None

    def __call__(self, B, grad, L):
        loss = 0.5 * (self.yy + float(np.sum(B * (grad - self.c))))
        fitted = self.yy - float(np.sum(B * self.c))
        squared = 2 * loss
        if self.free.size:
            # project the residual onto the unpenalized columns' constraints (Problem.free_projection)
            coefficients = self.free_system @ grad[self.free]
            fitted += float(np.sum(coefficients * self.c[self.free]))
            squared -= float(np.sum(coefficients * grad[self.free]))
            grad = grad - self.Q[:, self.free] @ coefficients
        if self.pen.ridge > 0:
            dual = fitted - 0.5 * squared - self.pen.conjugate(-grad)
        else:
            kappa = self.pen.dual_scale(-grad)
            dual = fitted / kappa - 0.5 * squared / kappa**2
        return loss + self.pen.value(B) - dual <= self.target


class _ResidualTarget:
    """Stop test of a Newton model: the prox-gradient residual fell by ``fraction`` from its start."""

    def __init__(self, pen, W0, g0, fraction):
        self.pen, self.start, self.fraction = pen, (W0, g0), fraction
        self.target = None

    def __call__(self, B, grad, L):
        if self.target is None:
            self.target = self.fraction * float(np.max(self.pen.kkt_violation(*self.start, L), initial=0.0))
        return float(np.max(self.pen.kkt_violation(B, grad, L), initial=0.0)) <= self.target


class _QuadraticModel:
    r"""Curvature of the datafit on the working set: :math:`Q_c`, :math:`q_c = X^\top h_c`, :math:`\sum h_c`.

    For least squares :math:`h = a` (all outputs share one ``Q`` from the
    Gram cache); otherwise :math:`h_c = a\,\ell''_c(z)` and ``Q`` has one
    slice per output. With an intercept, ``Q`` is the Schur complement
    :math:`X^\top H X - q q^\top / \sum h`.
    """

    def __init__(self, problem, rows, z, quadratic):
        if quadratic:
            self.Q = problem.weighted_gram(rows, problem.weights)
            self.q = np.tile(problem.means()[rows], (problem.n_outputs, 1))
            self.hsum = np.ones(problem.n_outputs)
            self.h = None
            return
        h = _curvature_weights(problem, z)
        self.hsum = np.maximum(h.sum(axis=0), np.finfo(np.float64).tiny)
        X_ws = problem.columns(rows)
        self.q = np.asarray((X_ws.T @ h.astype(X_ws.dtype)).T, dtype=np.float64).reshape(h.shape[1], -1)
        grams = [problem.weighted_gram(rows, h[:, c], self.hsum[c]) for c in range(h.shape[1])]
        self.Q = grams[0] if len(grams) == 1 else np.stack(grams)
        self.h = h

    def drifted(self, problem, z):
        r"""Whether the curvature weights at ``z`` moved from the model's by over :data:`_CURVATURE_DRIFT`.

        The change is measured as :math:`\sum_{i,c} |h_{ic}(z) - h_{ic}| / \sum_{i,c} h_{ic}`, an
        :math:`O(nm)` test against the :math:`O(n|ws|^2 m)` of new Gram matrices. Least squares never
        drifts (its model is exact).
        """
        if self.h is None:
            return False
        h = _curvature_weights(problem, z)
        return float(np.sum(np.abs(h - self.h))) > _CURVATURE_DRIFT * float(np.sum(self.h))


def _curvature_weights(problem, z):
    r"""The model's curvature weights :math:`h_{ic} = a_i\,\ell''_c(z_i)`, an ``(n, m)`` array."""
    return problem.matrix(problem.datafit.second_derivative(problem.y, z)) * problem.weights[:, None]


def _armijo(problem, state, pen_ws, W_ws, step, dz, g_ws, g_b, db, sigma=1e-4, max_halvings=30):
    """Largest :math:`t = 2^{-k}` with sufficient decrease of the true objective; 0 if none."""
    start = problem.loss(state.z) + pen_ws.value(W_ws)
    decrease = float(np.sum(g_ws * step) + np.sum(g_b * db)) + pen_ws.value(W_ws + step) - pen_ws.value(W_ws)
    t = 1.0
    for _ in range(max_halvings):
        value = problem.loss(state.z + t * dz) + pen_ws.value(W_ws + t * step)
        if value <= start + sigma * t * min(decrease, 0.0):
            return t
        t *= 0.5
    return 0.0


def _block_lipschitz_of_model(Q, pen):
    """Per-block curvature of the model: diagonal entries, or the top eigenvalue of each diagonal block."""
    diag = np.diagonal(Q, axis1=-2, axis2=-1)
    diag = diag if diag.ndim == 1 else diag.max(axis=0)
    if pen.singletons:
        L = diag[pen.row_order]
    else:
        stack = Q if Q.ndim == 3 else Q[None]
        L = np.array(
            [
                max(float(np.linalg.eigvalsh(S[np.ix_(rows, rows)])[-1]) for S in stack)
                if rows.size > 1
                else diag[rows[0]]
                for rows in map(pen.block_rows, range(pen.n_blocks))
            ]
        )
    return np.where(L > 0, L, 1.0)


def _minimize_model(Q, g0, W0, pen, stop, max_epochs, anderson):
    r"""Minimise :math:`\tfrac12\sum_c (B_c - W0_c)^\top Q_c (B_c - W0_c) + g_0^\top(B - W_0) + P(B)`.

    Cyclic block coordinate descent on the model; stops when
    ``stop(B, grad, L)`` holds after an epoch (``grad`` the model gradient,
    ``L`` the block curvatures). Every cycle of ``anderson + 1`` epochs
    (:data:`_REFRESH_EPOCHS` without Anderson) the iterate is extrapolated
    (:class:`_Anderson`), kept if it lowers the model, and the sweep's
    gradient rebuilt at the point kept (:meth:`_BlockSweep.rebase`): the
    per-coordinate updates accumulate rounding, and an extrapolation's weights
    can be large enough that combining the stored gradients would lose every
    significant digit (on near-duplicate columns that stalled the gap near
    :math:`10^{-6}`). A sweep whose gradient is approximate (float32 updates
    on a wide working set) has it recomputed exactly before its stop test is
    believed. Returns the minimiser and the number of epochs.
    """
    L = _block_lipschitz_of_model(Q, pen)
    sweep = _CoordinateSweep(Q, g0, W0, pen, L) if _scalar(Q, pen, W0) else _BlockSweep(Q, g0, W0, pen, L)
    accelerator = _Anderson(anderson, W0.size) if anderson else None
    cycle = anderson + 1 if anderson else _REFRESH_EPOCHS
    epoch = 0
    while epoch < max_epochs:
        epoch += 1
        B, grad = sweep.epoch()
        if accelerator is not None:
            accelerator.push(B, grad)
        if epoch % cycle == 0:
            B, grad = _extrapolated(sweep, g0, W0, pen, B, grad, accelerator)
        if stop(B, grad, L) and (not sweep.approximate or stop(B, sweep.exact(), L)):
            break
    return sweep.finish(), epoch


def _scalar(Q, pen, W0):
    """One shared curvature matrix, blocks of one row and one output: the coordinate-wise kernel applies."""
    return Q.ndim == 2 and pen.singletons and W0.shape[1] == 1


def _model_gradient(Q, g0, W0, B):
    r"""Model gradient :math:`g_0 + Q_c(B_c - W_{0,c})` per output, from any point ``W0`` and its ``g0``."""
    step = (B - W0).astype(Q.dtype, copy=False)
    return g0 + (Q @ step if Q.ndim == 2 else np.einsum("ckg,gc->kc", Q, step))


def _extrapolated(sweep, g0, W0, pen, B, grad, accelerator):
    """The sweep moved to the Anderson point if it lowers the model beyond rounding, else kept at ``B``.

    On collinear columns :math:`Q` is singular and its computed null space
    slightly indefinite, so an extrapolation far along it can *seem* to lower
    the model by more than it is known to: the decrease must exceed
    :func:`_model_rounding` at the extrapolated point.
    """
    point = accelerator.extrapolate() if accelerator is not None else None
    if point is not None:
        point = point.reshape(B.shape)
        moved = sweep.gradient_at(point)
        value = _model_value(point, moved, W0, g0, pen) + _model_rounding(sweep.Q, g0, W0, pen, point)
        if value < _model_value(B, grad, W0, g0, pen):
            return sweep.rebase(point, moved)
    return sweep.rebase(B, sweep.gradient_at(B))


def _model_rounding(Q, g0, W0, pen, B):
    r"""Bound on the rounding of :func:`_model_value` at ``B``: :math:`(k + 2)\epsilon` times its terms.

    The model gradient :math:`g_0 + Q d` (:math:`d = B - W_0`) is known to
    :math:`k\epsilon|Q||d|` (:math:`k` the working-set size), so
    :math:`\tfrac12\langle d, \nabla + g_0\rangle` to about :math:`k\epsilon|d|^\top(|Q||d| + 2|g_0|)`,
    and the penalty to a few :math:`\epsilon P(B)` (:math:`\epsilon` of ``Q``'s dtype: float32 on wide
    working sets).
    """
    d = np.abs(B - W0)
    curvature = np.abs(Q) @ d if Q.ndim == 2 else np.einsum("ckg,gc->kc", np.abs(Q), d)
    magnitude = float(np.sum(d * (curvature + 2 * np.abs(g0)))) + pen.value(B)
    return (B.shape[0] + 2) * float(np.finfo(Q.dtype).eps) * magnitude


class _CoordinateSweep:
    """Cyclic coordinate descent state for :func:`_epoch_coordinates` (one output, blocks of one row).

    ``B`` and the per-coordinate constants live in Python lists (fast scalar
    access), the gradient in a contiguous array updated in place. Its
    gradient is rebuilt from scratch at every :meth:`rebase`.
    """

    approximate = False  # updates read the float64 Q

    def __init__(self, Q, g0, W0, pen, L):
        inv_l = 1.0 / L
        # one row per block and one output: the group norm is |w_j|, so beta adds to the L1 weight
        self.thresh = (pen.l1[:, 0] + pen.group_weights) * inv_l
        self.constants = (self.thresh.tolist(), inv_l.tolist(), (1.0 / (1.0 + pen.ridge * inv_l)).tolist())
        self.Q, self.L, self.pen, self.start = np.ascontiguousarray(Q), L, pen, (g0, W0)
        self.rebase(W0, g0)

    def gradient_at(self, B):
        return _model_gradient(self.Q, *self.start, B)

    def rebase(self, B, grad):
        """Continue from ``B`` with its gradient ``grad``; returns both."""
        self.coords = B[:, 0].tolist()
        self.grad = np.array(grad[:, 0], dtype=np.float64)
        return B, grad

    def epoch(self):
        _epoch_coordinates(self.Q, self.grad, self.coords, *self.constants, self.pen.positive)
        return np.array(self.coords)[:, None], self.grad[:, None]

    def finish(self):
        B = np.array(self.coords)[:, None]
        return _polish_support(self.Q, self.grad, B, self.thresh * self.L, self.pen.ridge, self.pen.positive)


class _BlockSweep:
    r"""Cyclic block proximal-gradient state for :func:`_epoch_blocks` (any blocks, any number of outputs).

    On a working set of at least :data:`_SINGLE_PRECISION_WIDTH` coordinates
    ``Q`` no longer fits in cache and each block update streams
    :math:`|g| \times |ws|` entries of it: the sweep then reads a float32
    copy, half the memory traffic, for the updates and for moving to an
    extrapolated point (from the current gradient). The error of each such
    step is relative to the step itself, so it vanishes at convergence, and
    :meth:`exact` recomputes the gradient from the float64 ``Q`` before a stop
    test is believed, so the certificate stays exact. On narrower sets the
    gradient is rebuilt from scratch at every :meth:`rebase`.
    """

    def __init__(self, Q, g0, W0, pen, L):
        self.approximate = Q.shape[-1] >= _SINGLE_PRECISION_WIDTH
        self.exact_model = (Q, g0, W0)
        self.Q = Q.astype(np.float32) if self.approximate else Q
        self.positive = pen.positive
        self.blocks = _block_steps(pen, L)
        self.rebase(W0, g0)

    def gradient_at(self, B):
        if not self.approximate:
            return _model_gradient(*self.exact_model, B)
        return self.grad if B is self.B else _model_gradient(self.Q, self.grad, self.B, B)

    def exact(self):
        """Recompute the gradient from the float64 ``Q``; returns it."""
        self.grad = _model_gradient(*self.exact_model, self.B)
        return self.grad

    def rebase(self, B, grad):
        """Continue from ``B`` with its gradient ``grad``; returns both."""
        self.B, self.grad = B.copy(), np.array(grad, dtype=np.float64)
        return self.B, self.grad

    def epoch(self):
        _epoch_blocks(self.Q, self.grad, self.B, self.blocks, self.positive)
        return self.B, self.grad

    def finish(self):
        return self.B


def _polish_support(Q, grad, B, alpha, ridge, positive):
    r"""The model's exact minimiser on the support and signs coordinate descent found, when they are right.

    On the support :math:`S` with signs :math:`\sigma` the optimality
    conditions are linear: :math:`(Q_{SS} + \mu I)\delta = -(\nabla_S + \mu B_S + \alpha_S\sigma_S)`.
    The Newton point :math:`B_S + \delta` is kept when it keeps the signs of the
    penalized coordinates and the coordinates off :math:`S` still satisfy
    :math:`|\nabla_j| \le \alpha_j` (one-sided with positivity); then it is the
    exact minimiser, to rounding. Supports above ``_POLISH_MAX_SUPPORT`` are
    left as they are (the solve would cost more than it saves).
    """
    b = B[:, 0]
    support = np.flatnonzero(b)
    if not 0 < support.size <= _POLISH_MAX_SUPPORT:
        return B
    sigma = np.sign(b[support])
    penalized = alpha[support] > 0
    hessian = Q[np.ix_(support, support)] + ridge * np.eye(support.size)
    # Collinear columns on the support make the Hessian singular: the minimiser is then not unique and a
    # solve may return a huge step along the null space (which LAPACK kernel is used decides whether it
    # raises). Its eigenvalues are computed to |S| eps times the largest; below that it counts as singular.
    curvatures = np.linalg.eigvalsh(hessian)
    if not curvatures[0] > support.size * np.finfo(np.float64).eps * curvatures[-1]:
        return B
    delta = np.linalg.solve(hessian, -(grad[support] + ridge * b[support] + alpha[support] * sigma))
    new = b[support] + delta
    if np.any(np.sign(new[penalized]) != sigma[penalized]):
        return B
    moved = grad + Q[:, support] @ delta
    off = np.ones(b.size, dtype=bool)
    off[support] = False
    slack = 1e-9 * (np.max(np.abs(moved), initial=0.0) + np.max(alpha, initial=0.0))
    violation = -moved[off] if positive else np.abs(moved[off])
    if np.any(violation > alpha[off] + slack):
        return B
    polished = np.zeros_like(B)
    polished[support, 0] = new
    return polished


def _model_value(B, grad, W0, g0, pen):
    r"""Model objective :math:`\tfrac12\langle B - W_0, \nabla + g_0\rangle + P(B)` (model gradient)."""
    return 0.5 * float(np.sum((B - W0) * (grad + g0))) + pen.value(B)


def _epoch_coordinates(Q, grad, B, thresh, inv_l, shrink, positive):
    r"""One cyclic pass of exact coordinate minimisation for a separable penalty and one output.

    Coordinate :math:`j` moves to
    :math:`S_{\alpha_j/Q_{jj}}(B_j - \nabla_j / Q_{jj}) / (1 + \mu/Q_{jj})` and the
    model gradient follows with one axpy, :math:`\nabla \mathrel{+}= \delta\,Q_j`.
    ``B`` and the per-coordinate constants are Python lists (fast scalar
    access); ``grad`` is updated in place.
    """
    for j in range(len(B)):
        old = B[j]
        z = old - grad[j] * inv_l[j]
        t = thresh[j]
        if z > t:
            new = (z - t) * shrink[j]
        elif z < -t and not positive:
            new = (z + t) * shrink[j]
        else:
            new = 0.0
        if new != old:
            daxpy(Q[j], grad, a=new - old)
            B[j] = new


def _block_steps(pen, L):
    """Per-block constants of :func:`_epoch_blocks`: slice, step, L1 and group thresholds, ridge shrinkage."""
    steps = 1.0 / L
    has_l1 = pen.block_max(pen.l1.max(axis=1)) > 0
    return [
        (
            slice(start, start + size),
            step,
            pen.l1[start : start + size] * step if l1 else None,
            beta * step,
            1.0 / (1.0 + pen.ridge * step),
        )
        for start, size, step, l1, beta in zip(
            pen.block_starts.tolist(),
            pen.block_sizes.tolist(),
            steps.tolist(),
            has_l1.tolist(),
            pen.group_weights.tolist(),
            strict=True,
        )
    ]


def _epoch_blocks(Q, grad, B, blocks, positive):
    r"""One cyclic pass of block proximal gradient steps.

    :math:`B_g \leftarrow \operatorname{prox}_{P_g/L_g}(B_g - \nabla_g/L_g)` for every block in turn.

    The prox is :meth:`BlockPenalty.prox` written out for one block with the
    constants of :func:`_block_steps` (soft thresholding, group soft
    thresholding, ridge shrinkage), which keeps each update to a handful of
    small array operations. ``Q`` is one ``(k, k)`` matrix shared by the
    outputs or a ``(m, k, k)`` stack; ``B`` and ``grad`` (``(k, m)``) are
    updated in place.
    """
    shared = Q.ndim == 2
    for sl, step, thresh, group, shrink in blocks:
        old = B[sl]
        Z = old - step * grad[sl]
        if thresh is not None:
            Z = np.maximum(Z - thresh, 0) if positive else np.sign(Z) * np.maximum(np.abs(Z) - thresh, 0)
        elif positive:
            Z = np.maximum(Z, 0)
        if group > 0:
            norm = math.sqrt(float(np.vdot(Z, Z)))
            Z = Z * (shrink * (1 - group / norm)) if norm > group else Z * 0
        elif shrink != 1:
            Z = Z * shrink
        delta = Z - old
        if delta.any():
            B[sl] = Z
            delta = delta.astype(Q.dtype, copy=False)
            grad += Q[sl].T @ delta if shared else np.einsum("ckg,gc->kc", Q[:, :, sl], delta)


class _Anderson:
    r"""Anderson extrapolation of the last ``memory + 1`` iterates (Bertrand and Massias, 2021).

    With :math:`U` the successive differences of the iterates and :math:`V`
    those of the model gradients (:math:`V = UQ`, the model being quadratic),
    the weights :math:`c = M^{-1}1 / 1^\top M^{-1}1` with
    :math:`M = \operatorname{sym}(UV^\top) = UQU^\top` minimise the norm of the
    extrapolated gradient step :math:`\|\sum_i c_i (B_{i+1} - B_i)\|_Q` (the
    metric of the model, which converges in fewer epochs than the Euclidean
    one on ill-conditioned designs); the point is :math:`\sum_i c_i B_{i+1}`.
    """

    def __init__(self, memory, size):
        self.memory = memory
        self.iterates = np.empty((memory + 1, size))
        self.grads = np.empty((memory + 1, size))
        self.count = 0

    def push(self, B, grad):
        """Record an iterate and its model gradient (the oldest is dropped once the memory is full)."""
        if self.count > self.memory:
            self.iterates[:-1], self.grads[:-1] = self.iterates[1:], self.grads[1:]
            self.count = self.memory
        self.iterates[self.count] = B.ravel()
        self.grads[self.count] = grad.ravel()
        self.count += 1

    def extrapolate(self):
        """The extrapolated point (flat), or None when too few iterates or a singular system; then restart."""
        full, self.count = self.count > self.memory, 0
        if not full:
            return None
        U, V = np.diff(self.iterates, axis=0), np.diff(self.grads, axis=0)
        M = U @ V.T
        try:
            z = np.linalg.solve(M + M.T, np.ones(self.memory))
        except np.linalg.LinAlgError:
            return None
        total = z.sum()
        if not np.all(np.isfinite(z)) or total == 0 or not math.isfinite(total):
            return None
        return (z / total) @ self.iterates[1:]
