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
**What it needs from a datafit**: ``raw_gradient``, ``hessian_factors``,
``conjugate``, ``fit_intercept`` and a finite ``curvature`` (so not the hinge).

Algorithm (in the spirit of celer and skglm): numpy and scipy for the outer
loops, compiled kernels for the epochs of steps 4 and 5 (the Cython module
``_sweeps``, built when normpen is installed, so nothing compiles on a first
fit):

1. *Outer loop.* Refit the intercept exactly, compute the full gradient
   :math:`X^\top G` once, the duality gap (:mod:`normpen.linear.problem`), and
   stop when it is below ``tol`` times the objective at :math:`W = 0`. Along a
   least-squares path (:class:`PathSolver`) a warm start's first round skips
   the test: its working set is solved first, so no strength is returned at its
   warm start.
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
   :math:`X`; an epoch is one call of ``_sweeps.epoch_blocks`` (any blocks),
   and with blocks of one coordinate and one output the whole model solve
   below (epochs, extrapolation, face steps, stop tests, polish) is one call
   of ``_coordinate_solve.minimize_coordinates``.
   A working set whose :math:`|ws|^2` Gram entries cost more than a
   few passes over its nonzeros (wide and sparse, :func:`_implicit_is_cheaper`)
   leaves :math:`Q` implicit and its sweep keeps the residual instead
   (:class:`_ResidualSweep`, the same iterates and the same compiled solve).
   Every ``anderson + 1`` epochs the last iterates are
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
5. *Coupled outputs.* Where the datafit's Hessian couples the outputs (the
   multinomial's :math:`\operatorname{diag}(p) - pp^\top`) and every block is
   one row, the Newton model keeps that whole Hessian instead
   (:class:`_CoupledModel`): row sweeps with residual updates (``_sweeps.epoch_rows``), the intercept
   inside the model, and steps on the face of the signs found.
"""

from __future__ import annotations

import math
from functools import cached_property, partial

import numpy as np
import scipy.sparse as sp

from normpen._array import matrix_axis_sum
from normpen.linear._validation import check_count, check_tol
from normpen.linear.blocks import as_block_penalty
from normpen.linear.problem import Problem, gram_blocks, one_sided_coefficients, one_sided_system
from normpen.linear.solvers._coordinate_solve import GAP, RESIDUAL, FaceFactor, minimize_coordinates
from normpen.linear.solvers._sweeps import (
    BlockSteps,
    epoch_blocks,
    epoch_residual,
    epoch_residual_blocks,
    epoch_rows,
)

__all__ = ["PathSolver", "coordinate_descent", "solve"]

_MAX_NEWTON = 25
_INNER_GAP_FRACTION = 0.6
#: How far below its threshold the line's estimate of a zero block's gradient may be and the block still
#: join the first working set of a strength started on the line (:class:`PathSolver`, Newton datafits). On
#: issue 15's L1 logistic path (c) the estimate was within 0.7-1.3% of :math:`\lambda` of the exact gradient
#: at every coordinate; with no margin up to 7 blocks that violated at the moved start were left out, and
#: 6 of 50 strengths at tol 1.5e-4 took a second round (a new Newton model each); at 2% none did.
_LINE_MARGIN = 0.02
_NEWTON_RESIDUAL_FRACTION = 0.1
#: Relative change of the curvature weights (weighted L1) above which a Newton model is rebuilt. On issue
#: 15's L1 logistic path (c) a late strength's second Newton step finds the curvature moved by 0.10-0.19 from
#: its first (from one strength's model to the next: 1-6%): at 0.1 those steps rebuild the widest models
#: (up to 712 columns, about 8 ms each), at 0.2 they keep them: 47 -> 41 models and 0.22 -> 0.18 s at tol
#: 9.8e-4 (gap 9.0e-4 -> 8.6e-4), the same 50 models at 1e-6; on two logistic paths with near-duplicate
#: columns (200 x 1000, 1000 x 600) the same models at 1e-6 and 1e-10, 48 -> 40 and 52 -> 51 at 9.8e-4.
_CURVATURE_DRIFT = 0.2
_POLISH_MAX_SUPPORT = 100
#: Conjugate-gradient products, and the reduction of the preconditioned residual, of a face step.
_FACE_ITERATIONS = 100
_FACE_REDUCTION = 1e-3
#: Faces of at most this many coordinates (with the intercept's) are solved exactly, larger ones by CG.
_DIRECT_FACE = 200
#: Faces of a Gram model (:class:`_QuadraticModel`) of at most this many coordinates are solved by a
#: pivoted Cholesky factorisation (500: about the cost of an epoch over 1,000 coordinates), larger by CG.
_DIRECT_GRAM_FACE = 500
#: How many times faster a face factorisation's multiply-adds run than an epoch's (LAPACK against a
#: coordinate sweep): the compiled solve takes a face step only where it costs less than the epochs it
#: saves (``_coordinate_solve``'s ``_Solve.pays``). On issue 15's 200 x 1000 elastic net path at tol 1e-6,
#: 1, 3 and 10 took 21.7, 22.2 and 24.7 ms (faces never tried: 20.1), the lasso twin 23.4, 23.0, 22.8 ms.
_FACE_COST = 3.0
#: Halvings of a face step that does not lower the model before it is given up.
_FACE_HALVINGS = 10
#: An epoch that changed the signs of at most this fraction of a working set's coordinates has settled them
#: enough for a face step (``_coordinate_solve``'s ``face_move``).
_SETTLED_SIGNS = 0.01
#: Epochs between exact recomputations of the model gradient when Anderson extrapolation is off.
_REFRESH_EPOCHS = 10
#: The constants :func:`~normpen.linear.solvers._coordinate_solve.minimize_coordinates` takes after its
#: rank cutoff, in its order: coordinate descent's and the covariance solver's compiled model solves read
#: this one tuple.
MODEL_CONSTANTS = (
    _REFRESH_EPOCHS,
    _SETTLED_SIGNS,
    _DIRECT_GRAM_FACE,
    _FACE_ITERATIONS,
    _FACE_REDUCTION,
    _POLISH_MAX_SUPPORT,
    _FACE_COST,
)


def rank_cutoff(n_samples, dtype):
    r"""The relative pivot below which a Gram model's face Hessian counts as singular: :math:`16n\varepsilon`.

    Entries of :math:`X^\top AX` are sums over the ``n_samples`` samples, known to about
    :math:`n\varepsilon` of their scale (:math:`\varepsilon` of the ``dtype`` in which they are formed).
    """
    return 16 * n_samples * float(np.finfo(dtype).eps)


#: Rows of ``Q`` read at a time for the row sums of its magnitudes.
_ROW_CHUNK = 256
#: Working sets at least this wide (in coordinates) stream a float32 copy of ``Q`` in block updates.
_SINGLE_PRECISION_WIDTH = 1024
#: Passes over the nonzero blocks after each pass over every block of an implicit block sweep, and the
#: fraction of the full pass's largest move below which they stop (:class:`_ResidualBlockSweep`).
_ACTIVE_PASSES = 10
_ACTIVE_SETTLED = 0.01
#: Anderson memory of those passes: their iterates are extrapolated after every ``_ACTIVE_MEMORY + 1``.
_ACTIVE_MEMORY = 4
#: Dense least-squares block sweeps leave ``Q`` implicit when its Gram cache lacks more columns than this
#: (:func:`_implicit_blocks_are_cheaper`).
_FORMED_NEW_COLUMNS = 50


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
    problem.require_host_arrays("coordinate_descent")
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
    solve_first=False,
    line=None,
):
    """Coordinate descent on a :class:`~normpen.linear.problem.Problem` from ``state`` (updated in place).

    ``penalty`` is a :class:`~normpen.linear.blocks.BlockPenalty`. The
    keyword arguments are those of :func:`coordinate_descent`; ``warn=False``
    leaves the convergence warning to the caller (the path emits one for all
    its :math:`\\lambda`). With ``solve_first`` (a path's warm start, :class:`PathSolver`) the
    first round skips the stop test: its gap at the start (free there, the gradient being cached)
    only sets the screening radius, and the working set is solved before any check, so the start is
    never returned unchanged. ``line`` (a path's warm start where the datafit's gradient is not affine in
    the coefficients, :class:`PathSolver`) is called when the start failed its first check, with the
    state: it moves the state along the path's line and returns an estimate of :math:`X^\\top G` there
    (``None`` when it did not move). The first round then chooses its working set from that estimate
    and forms the working set's gradient exactly (the full one would cost a pass over ``X``).
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
    whole = None  # the gap a working set of every block certified at the current point
    keeps = problem.exact_model and not problem.sparse  # dense Gram rows cached: see _working_set
    for it in range(max_iter + 1):
        if whole is not None and _certifies(problem, whole, tol):
            report, threshold = whole, problem.gap_threshold(tol, whole.primal)
            break
        problem.refit_intercept(state)
        G, grad = problem.full_gradient(state)
        report = problem.duality_gap(state.z, penalty, state.W, grad)
        threshold = problem.gap_threshold(tol, report.primal)
        checks = it > 0 or not solve_first
        if checks and _stops(problem, penalty, state, grad, lipschitz, report, tol, threshold):
            break
        if it == max_iter or epochs >= max_epochs:
            break
        if screening:
            # the gap is known to the objectives' rounding: below it (a tol that asks for more than it
            # certifies) a radius of 0 screened the active blocks, whose gradient sits at the threshold
            radius = np.sqrt(2 * max(report.gap, problem.objective_rounding(report.primal)) * lipschitz)
            newly = penalty.certified_zero(-grad, radius) & unscreened
            unscreened ^= newly  # (newly lies inside unscreened)
            if _zero_blocks(problem, state, penalty, newly):
                problem.refit_intercept(state)
                G, grad = problem.full_gradient(state)
        estimate = line(state) if it == 0 and line is not None else None
        if estimate is not None:
            _zero_blocks(problem, state, penalty, ~unscreened)  # (the line may leave a screened block)
            problem.refit_intercept(state)
            G, grad = problem.raw_gradient(state.z), estimate * (1 + _LINE_MARGIN)
        violation = penalty.kkt_violation(state.W, grad, lipschitz)
        previous = (
            state.working[1]
            if keeps and state.working and state.working[0] == penalty.structure_key
            else None
        )
        working = _working_set(penalty, state.W, violation, unscreened, ws_start, previous)
        state.working = (penalty.structure_key, working)
        used, last = _solve_working_set(
            problem,
            state,
            penalty,
            working,
            None if estimate is not None else grad,
            G,
            _INNER_GAP_FRACTION * threshold,
            max_epochs - epochs,
            anderson,
        )
        epochs += used
        whole = last if working.size == penalty.n_blocks else None
    return problem.solution(
        state,
        report,
        threshold,
        tol=tol,
        n_iter=it,
        n_epochs=epochs,
        solver="coordinate descent",
        work=f"{it} iterations ({epochs} epochs)",
        warn=warn,
    )


class PathSolver:
    r""":func:`solve` one strength at a time for :func:`normpen.linear.path.path`'s warm-started loop.

    ``unit`` is the penalty's :class:`~normpen.linear.blocks.BlockPenalty` at strength 1. For least
    squares (:attr:`Problem.exact_model <normpen.linear.problem.Problem.exact_model>`), a call with the
    state the last call returned (the previous strength's solution, its gradient cached) solves with
    ``solve_first``: at a loose ``tol`` that start often meets the next strength's tolerance already and
    was returned unchanged, with a suboptimality about as large as its gap. Solving its working set costs
    a round and one gradient at those strengths. Measured on issue 15's workloads (one thread, load
    about 2, interleaved with the base; the largest suboptimality over the path relative to
    :math:`P_0`): (d), the group lasso, at adelie's gap 1.7e-3: a third of the strengths had been
    returned at their start, suboptimality 8.7e-4 -> 5.7e-6 (adelie's 6.1e-6: tol 1.7e-5 was needed
    before, 0.47-0.62 s), 0.19-0.27 -> 0.42-0.44 s (adelie 0.15-0.18 s); (e), the sparse lasso, at
    skglm's gap 3.3e-2: 1.0e-2 -> 1.6e-3 (skglm's 3.1e-3: tol 3.3e-3 was needed before, 1.6-2.0 s),
    0.38-0.41 -> 0.80-0.99 s (skglm 1.61 s); at
    adelie's 5e-3, 1.3e-3 -> 3.3e-4 (adelie's 1.0e-4: tol 5e-4 either way, 2.5-2.6 -> 2.3 s), 0.94-0.99
    -> 1.06-1.17 s (adelie 1.46 s). Other datafits form a new Newton model (the working set's Gram matrix
    with new curvature weights) each round, and check first: on the L1 logistic path (c) at adelie's gap
    9.8e-4 solving first took 0.29-0.38 -> 0.40-0.43 s (adelie 0.31-0.37 s; its 9 extra models were
    the widest, about 7 ms each) and left 4.8e-6 (adelie's 7.5e-7: tol 9.8e-5 was still needed).
    From a least-squares path's third strength on, the start is moved first along the line through the
    last two solutions (:func:`_extrapolate`: exact on a face of fixed signs, no pass over ``X``). On
    (e) at adelie's gap 5e-3 that took the suboptimality from 3.3e-4 to 6.4e-5 (adelie's 1.0e-4) and
    1.05 to 0.69-0.80 s; at 1e-6 2.85 -> 1.77-2.10 s; (d) through ``cd`` at 1.7e-3 422-441 -> 347-371
    ms, at 1e-6 unchanged (754-789 -> 755-778 ms).

    Other datafits check the start first (its gradient is cached: the gap is free) and move along the
    line only once that check failed: their gradient is not affine in the coefficients, so the moved
    gradient is an estimate, from which the first working set is chosen (blocks within
    :data:`_LINE_MARGIN` of their threshold included) while the working set's own gradient is formed
    exactly (:func:`solve`'s ``line``). A strength returned at its warm start is not a point of the line
    (its coefficients are the previous strength's): the line stays through the last two strengths
    solved. On (c), interleaved with the tree before (one thread, best of 5, six rounds): at adelie's
    gap 9.8e-4 202-231 against 225-289 ms (twelve strengths returned at their start against ten, the
    solved ones at suboptimality 7e-9 instead of 1.1e-5); at 1.5e-4, the loosest tolerance at which
    no strength is returned at its start (suboptimality 7e-9), 328-433 against 381-555 ms at the 1e-4
    the tree before needed (3.8e-7); at 1e-6 397-573 against 516-605 ms. The working sets are narrower (the
    support and the few blocks the line brings in, where the last solution's violators were up to 90
    more) and their Newton models take 2 to 4 epochs instead of 14 to 23.
    A call with another state (the path's first strength, a restart, a single fit) solves as
    :func:`solve` alone does.
    """

    def __init__(self, unit):
        self.unit = unit
        self._state = None
        self._solved = []  # the last two strengths' (lam, W, b, z, gradient)

    def __call__(self, problem, lam, state, **options):
        """The :class:`~normpen.linear.problem.Solution` at strength ``lam`` from ``state`` (updated in
        place); ``options`` as for :func:`solve`."""
        warm, self._state = state is self._state, state
        if not warm:
            self._solved = []
        penalty = self.unit.scaled(lam)
        line = None
        if len(self._solved) == 2 and problem.exact_model:
            _extrapolate(problem, penalty, lam, state, *self._solved)
        elif len(self._solved) == 2:
            line = partial(_estimated_move, problem, penalty, lam, self._solved)
        solve_first = warm and problem.exact_model
        solution = solve(problem, penalty, state, solve_first=solve_first, line=line, **options)
        if solution.n_iter or not warm:  # (a warm start returned as it was is not a point of this strength)
            point = (lam, state.W.copy(), state.b.copy(), state.z.copy(), state.gradient)
            self._solved = [*self._solved[-1:], point]
        return solution


def _extrapolate(problem, penalty, lam, state, before, last):
    r"""Move ``state`` (at ``last``'s solution) along the line through the last two solutions of a
    path, to strength ``lam``, where that lowers the objective at ``lam``; True if it moved.

    On a face of fixed signs the lasso's solution is affine in :math:`\lambda`
    (:math:`W_S = (X_S^\top AX_S)^{-1}(X_S^\top Ay - \lambda s)`), and so are
    :math:`z = XW + b` and the cached gradient :math:`X^\top A(z - y)`: the point
    :math:`W_1 + t(W_1 - W_0)` with :math:`t = (\lambda - \lambda_1)/(\lambda_1 - \lambda_0)`
    is the next solution exactly while no sign changes, and costs no pass over
    ``X``. Where the line leaves the face (a block crosses zero, a new one entered
    between the two) the step is only a guess: it is taken when it lowers the
    objective at ``lam`` (a pass over ``z`` and ``W``), else the start stays the last solution. Two equal
    strengths define no line: the start stays. Other datafits' gradients are not affine in the
    coefficients: the cached gradient moved along the line is then an estimate
    (:func:`_estimated_move`).
    """
    (lam0, W0, b0, z0, grad0), (lam1, W1, b1, z1, grad1) = before, last
    if lam1 == lam0:
        return False
    t = (lam - lam1) / (lam1 - lam0)
    W, z = W1 + t * (W1 - W0), z1 + t * (z1 - z0)
    if problem.loss(z) + penalty.value(W) >= problem.loss(z1) + penalty.value(W1):
        return False
    state.W[...] = W
    state.b[...] = b1 + t * (b1 - b0)
    state.z = z
    both = grad0 is not None and grad1 is not None
    state.gradient = tuple(g1 + t * (g1 - g0) for g0, g1 in zip(grad0, grad1, strict=True)) if both else None
    return True


def _estimated_move(problem, penalty, lam, solved, state):
    """:func:`_extrapolate` for a datafit whose gradient is not affine: the state moved along the line and an
    estimate of :math:`X^\\top G` there (the line's), or None where it stays."""
    if not _extrapolate(problem, penalty, lam, state, *solved) or state.gradient is None:
        return None
    estimate, state.gradient = state.gradient[1], None
    return estimate


def _certifies(problem, report, tol):
    """Whether a gap report of the whole problem meets ``tol`` where the gap alone decides (:func:`_stops`).

    A working set of every block ends on the gap of the whole problem at the point it leaves;
    the outer loop then need not compute it again.
    """
    threshold = problem.gap_threshold(tol, report.primal)
    return report.gap <= threshold and tol >= problem.certifiable_tol(report.primal)


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
    rows = penalty.row_order[blocks[penalty.block_of_row[penalty.row_order]]]
    rows = rows[np.any(state.W[rows] != 0, axis=1)]
    if not rows.size:
        return False
    Z = problem.product(problem.columns(rows), state.W[rows])
    state.z = state.z - (Z[:, 0] if state.z.ndim == 1 else Z)
    state.W[rows] = 0
    state.gradient = None
    return True


def _working_set(penalty, W, violation, unscreened, ws_start, previous=None):
    r"""Blocks to optimise: nonzero and unpenalized ones, then the worst violators, sorted.

    The unscreened blocks of ``previous`` (the last working set along a least-squares path on a dense
    design) stay while the union is at most twice the size asked for: the Gram cache keeps only the
    last working set's rows, so a block that left and comes back costs :math:`n|ws|` multiply-adds again,
    where a formed sweep spends one comparison an epoch on a block that stays at zero. On issue 15's
    workload (a) at tolerance 1.2e-3 a third of the Gram columns computed had been computed before
    (437 of 1,302: the working set of twice the support shrinks to the support once solved and grows
    again at the next strength); keeping them, 866 columns and 30 instead of 50 ms of Gram products.
    """
    nonzero = penalty.block_max(np.abs(W[:, 0]) if W.shape[1] == 1 else np.max(np.abs(W), axis=1)) > 0
    keep = (nonzero | ~penalty.penalized) & unscreened
    size = max(ws_start, 2 * int(np.count_nonzero(nonzero)))
    kept = int(np.count_nonzero(keep))
    candidates = violation > 0
    candidates &= keep ^ unscreened  # unscreened and not kept (keep lies inside unscreened)
    candidates = np.flatnonzero(candidates)
    extra = size - kept
    if extra < candidates.size:
        candidates = candidates[np.argpartition(-violation[candidates], max(extra, 1) - 1)[: max(extra, 1)]]
    chosen = keep  # a fresh mask: the blocks, sorted, are its nonzeros (no sort, no set union)
    chosen[candidates] = True
    if previous is not None:
        union = chosen.copy()
        union[previous[unscreened[previous]]] = True
        if np.count_nonzero(union) <= 2 * max(size, kept + candidates.size):  # candidates lie outside keep
            chosen = union
    return np.flatnonzero(chosen)


def _solve_working_set(problem, state, penalty, working, grad, G, gap_target, max_epochs, anderson):
    r"""Solve the problem restricted to the working set to the duality gap ``gap_target``.

    Returns the epochs used and the working set's gap report when it met the
    target at the point left (``None`` otherwise). ``grad`` is :math:`X^\top G` at the start, or
    ``None``: the working set's part is then formed from ``G``.

    Least squares: one exact model solve, stopped on the working set's gap
    computed from Gram quantities. Other datafits: proximal Newton steps
    (each model solved until its optimality residual drops tenfold, then an
    Armijo line search), until the working set's gap reaches the target. The
    model is :class:`_CoupledModel` where the datafit's Hessian couples the
    outputs (:meth:`Datafit.hessian_factors`) and the blocks are single rows,
    :class:`_QuadraticModel` otherwise. A :class:`_QuadraticModel` is kept
    from one Newton step to the next while that step was taken in full and
    the curvature weights have moved by at most :data:`_CURVATURE_DRIFT`
    (:meth:`_QuadraticModel.drifted`): the gradient is recomputed exactly at
    every step, so only the rate of convergence depends on it. (A shortened
    step says the model misjudges the curvature: with a kept float32 model a
    multinomial path then stalled at a gap of 4e-9 on steps of
    :math:`t \approx 10^{-8}`.)

    Models are formed in float32 until one of this working set misjudged the
    curvature, then in float64 for the rest of its solve. A float32 Gram
    knows its entries to about :math:`n\varepsilon_{32}` of their scale, so it
    resolves no curvature below its face cutoff (:attr:`_QuadraticModel.cutoff`,
    :math:`16n\varepsilon_{32}` of the largest): on near-duplicate columns
    (issue 15: 1000 x 600, pairs :math:`x, x + 10^{-3}\xi`, L1 logistic with an
    intercept, tol 1e-10) a face's smallest curvature was :math:`10^{-8}` of
    :math:`0.18`, condition :math:`1.6\cdot 10^7`, far below it. Along such a
    direction the model's curvature is rounding: its steps go arbitrarily far
    along a valley where the objective is flat to its rounding (the Armijo
    test takes them in full, then the working set's gap *rises*: 2.8e-6 ->
    1.4e-5), and its face factor drops the direction, so coordinate descent
    alone is left, converging at about :math:`1 - 1/\kappa` an epoch (9,000
    epochs, the whole solve's budget, for a tenfold fall of the residual; the
    path then stopped at a gap of 1e-2). The evidence of a misjudged curvature
    is a shortened step, a working-set gap that rose after a full step, or a
    float32 solve still short of its target after
    :attr:`_QuadraticModel.resolved_epochs` (:math:`1/\text{cutoff}`) epochs,
    where the solve is stopped: on a face whose condition it resolves
    (:math:`\kappa \le 1/\text{cutoff}`) the face steps finish the solve,
    and on issue 15's workload (c) no float32 solve took over 21 epochs (the
    allowance there is 263). A float64 model resolves curvatures down to
    :math:`16n\varepsilon_{64}`; the same path then reaches 1e-10.
    """
    if penalty.singletons:
        # the rows in the Gram cache's order (Problem.gram_order): new ones first, then those it holds, whose
        # entries it then moves in one slice; the sweep visits the new rows first (on issue 15's 200 x 1000
        # and 1000 x 5000 lasso and elastic-net paths as fast as or faster than with the held rows first).
        # Block sweeps keep the blocks sorted: on the group lasso (d) the cache's moves cost 4 of 450 ms.
        working = working[problem.gram_order(penalty.row_order[penalty.block_starts[working]])]
    pen_ws, rows = penalty.restrict(working)
    X_ws = problem.columns(rows)
    quadratic = problem.exact_model
    g_ws = grad[rows] if grad is not None else problem.columns_gradient(X_ws, G)
    g_b = problem.intercept_gradient(G)
    epochs = 0
    model, t, primal, gap, double = None, 1.0, None, math.inf, False  # double: float64 models from now on
    for newton in range(_MAX_NEWTON):
        if newton:
            problem.refit_intercept(state)
            G = problem.raw_gradient(state.z)
            g_ws = problem.columns_gradient(X_ws, G)
            g_b = problem.intercept_gradient(G)
            report = problem.duality_gap(state.z, pen_ws, state.W[rows], g_ws, rows)
            if report.gap <= gap_target:
                return epochs, report
            double = double or t < 1 or report.gap > gap
            primal, gap = report.primal, report.gap
        W_ws = state.W[rows]
        model = _newton_model(problem, rows, X_ws, pen_ws, state.z, model, t, double)
        g_model = model.reduced(g_ws, g_b)
        if quadratic:
            # solve's working sets hold every nonzero coefficient: X_ws W_ws is X W, and the stop test's
            # X_ws^T A (y - y_bar) is read from the path's start (Problem.target_products), not formed
            whole = np.count_nonzero(W_ws) == np.count_nonzero(state.W)
            c = problem.target_products()[rows] if whole else None
            stop = _LeastSquaresGap(problem.loss(state.z), W_ws, g_model, model.Q, pen_ws, gap_target, c)
        else:
            stop = _ResidualTarget(pen_ws, W_ws, g_model, _NEWTON_RESIDUAL_FRACTION)
        B, db, used = model.minimize(
            g_ws, g_b, W_ws, pen_ws, stop, min(max_epochs - epochs, model.resolved_epochs), anderson
        )
        epochs += used
        double = double or used >= model.resolved_epochs
        step = B - W_ws
        if not step.any():
            break
        dz = problem.natural(problem.product(X_ws, step) + db)
        t = 1.0 if quadratic else _armijo(problem, state, pen_ws, W_ws, step, dz, g_ws, g_b, db, primal)
        if t == 0:
            break
        if t != 1:  # (a full step adds step, db and dz as they are: the same sums without three products)
            step, db, dz = t * step, t * db, t * dz
        state.W[rows] = W_ws + step
        state.b += db
        state.z = state.z + dz
        state.gradient = None
        if quadratic or epochs >= max_epochs:
            break
    return epochs, None


def _newton_model(problem, rows, X_ws, pen, z, previous, t, double):
    """The Newton model at ``z``: the previous one when it may be kept, else a new one of the right kind.

    An exact model (least squares) is its own curvature, the sample weights (:class:`_QuadraticModel`):
    it asks the datafit for no Hessian (about 12 us a strength on issue 15's a200). A model is formed
    anew after a shortened step (``t < 1``, the last model misjudged the curvature) and, with
    ``double`` (a model of this working set misjudged it, :func:`_solve_working_set`), in float64,
    replacing a float32 one; otherwise in float32 (``single`` of :class:`_QuadraticModel`).
    """
    exact = problem.exact_model
    D, V = (None, None) if exact else problem.datafit.hessian_factors(problem.y, z, problem.weights)
    if V is not None and pen.singletons:
        return _CoupledModel(problem, X_ws, D, V)
    if previous is None or t < 1 or (double and previous.single) or previous.drifted(D):
        if pen.singletons:
            implicit = problem.n_outputs == 1 and _implicit_is_cheaper(X_ws)
        else:
            implicit = (
                problem.n_outputs == 1
                and problem.exact_model
                and _implicit_blocks_are_cheaper(X_ws, problem.gram_missing(rows))
            )
        return _QuadraticModel(problem, rows, X_ws, D, problem.exact_model, implicit, single=not double)
    return previous


def _implicit_is_cheaper(X_ws):
    r"""Whether a coordinate sweep over the working set costs less with :math:`Q` left implicit.

    The cost model, in multiply-adds per epoch, for :math:`k` coordinates of which about half
    move (the working set is about twice the support, :func:`_working_set`): with :math:`Q`
    formed (``minimize_coordinates`` reading its rows) each move is an axpy with a row of :math:`Q`,
    :math:`k^2/2`;
    left implicit (:class:`_ResidualSweep`) each coordinate's gradient is a pass over its
    column's nonzeros, each move a second, and the epoch's closing gradient a third,
    :math:`2.5\,\mathrm{nnz}(X_{ws})`, counted twice for the indexed (scattered) reads and
    writes of the residual: :math:`5\,\mathrm{nnz}(X_{ws})`. Forming :math:`Q` (about
    :math:`\sum_i r_i^2` for :math:`r_i` nonzeros in row :math:`i` of a sparse :math:`X_{ws}`,
    :math:`nk^2` for a dense one, partly cached along a path) and its :math:`k^2` entries of
    memory only add to the first side. On issue 15's workload (e), a sparse design with 200
    nonzeros a column, the sides cross at :math:`k \approx 2{,}000`; a dense design goes
    implicit only when :math:`k > 10n`, working sets much wider than the number of samples.
    """
    k = X_ws.shape[1]
    nnz = X_ws.nnz if sp.issparse(X_ws) else X_ws.size
    return 10 * nnz < k * k


def _implicit_blocks_are_cheaper(X_ws, k_new):
    r"""Whether a least-squares block sweep over the working set costs less with :math:`Q` left implicit.

    The cost model, in multiply-adds per working-set solve of :math:`E` epochs over :math:`k`
    coordinates of which :math:`k_{new}` are new to the Gram cache (:meth:`Problem.gram_missing`):
    with :math:`Q` formed (:class:`_BlockSweep`), the cache forms the products of the :math:`k_{new}`
    new columns with all :math:`k`, :math:`nk_{new}k` in one matrix product, and each epoch streams a
    row of :math:`Q` per moved row, up to :math:`k^2`; left implicit (:class:`_ResidualBlockSweep`),
    each epoch makes about :math:`2.5` passes over :math:`X_{ws}` (a block's gradient, its move, the
    closing gradient) and the setup about :math:`|g| + 3` (the diagonal blocks, :math:`HX`, the stop
    test's :math:`QW_0`), :math:`(2.5E + |g| + 3)\,nk`. A matrix product runs about 8 times faster per
    multiply-add than these passes (one thread: 32 against 3-5 GFLOP/s), so for a dense design
    the implicit sweep is cheaper once :math:`k_{new} > 8(2.5E + 8)`, about 100 columns at the
    :math:`E = 2`-6 epochs of a loose tolerance; and once :math:`k^2 > 2nk` whatever
    :math:`k_{new}`, where streaming :math:`Q` costs more than the passes (measured before the
    columns were counted: the same epochs both ways, the implicit sweep faster from
    :math:`k \approx 600` on at :math:`k_{new} \approx k/3`). On issue 15's workload (d) (:math:`n =
    1000`, groups of 5, working sets up to 3,145 coordinates) thresholds of 50 to 400 columns took the
    same time at tolerances 3e-5 and 1e-6, where :math:`E` is 8-30, and 50 to 200 were fastest at
    1.7e-3; once the implicit sweep cycled over the active blocks, read only :math:`X` and kept its
    blocks' eigen data (cheaper passes and setup), 25 to 100 took the same time at all three
    tolerances and 200 up to 1.6 times as long at 3e-5 and 1e-6, so the threshold is 50
    (:data:`_FORMED_NEW_COLUMNS`), amid the flat range. Sparse designs keep the
    :math:`k^2 > 2\,\mathrm{nnz}` rule (forming costs there depend on the rows' nonzeros; not measured).
    """
    k = X_ws.shape[1]
    nnz = X_ws.nnz if sp.issparse(X_ws) else X_ws.size
    return 2 * nnz < k * k or (not sp.issparse(X_ws) and k_new > _FORMED_NEW_COLUMNS)


class _LeastSquaresGap:
    r"""Stop test of the least-squares working-set problem: its duality gap, from Gram quantities only.

    With :math:`c = X_{ws}^\top A y` (centred with an intercept), the model
    gradient is :math:`\nabla = QB - c`, so :math:`c = QW_0 - g_0` (``c`` given: the
    caller's :math:`X_{ws}^\top A(y - \bar y)`, which :math:`QW_0 - g_0` is when every
    nonzero coefficient is in the working set and the intercept is fitted, and
    which saves forming :math:`QW_0`: :math:`|ws|^2` multiply-adds, or two passes
    over :math:`X_{ws}` for an implicit ``Q``), and
    :math:`\|y\|_A^2 = 2F_0 + W_0^\top(c - g_0)` from the loss :math:`F_0` at
    :math:`W_0`. Then :math:`F(B) = \tfrac12(\|y\|_A^2 + B^\top(\nabla - c))` and,
    for the residual dual point :math:`u = z - y` scaled by :math:`\kappa`,
    :math:`D = -u^\top Ay/\kappa - \|u\|_A^2/(2\kappa^2)` with
    :math:`-u^\top Ay = \|y\|_A^2 - B^\top c` and :math:`\|u\|_A^2 = 2F(B)` (with a
    ridge part: :math:`\kappa = 1` minus :math:`P^*(-\nabla)`). Unpenalized
    coordinates :math:`f` project :math:`u` as :meth:`Problem.free_projection`
    does, here to :math:`u - X_f Q_{ff}^+\nabla_f`: that adds
    :math:`c_f^\top Q_{ff}^+\nabla_f` to :math:`-u^\top Ay` and removes
    :math:`\nabla_f^\top Q_{ff}^+\nabla_f` from :math:`\|u\|_A^2`. With ``positive`` their
    constraints are one-sided and the coefficients :math:`c \le 0` minimise
    :math:`\tfrac12 c^\top Q_{ff}c - c^\top\nabla_f` (:func:`~normpen.linear.problem.one_sided_system`),
    a test the compiled solve does not make (:meth:`compiled` is then ``None``). Each test costs
    :math:`O(|ws|)`, never a pass over :math:`X`.
    """

    def __init__(self, loss0, W0, g0, Q, pen, target, c=None):
        self.c = Q @ W0 - g0 if c is None else c
        self.yy = 2 * loss0 + float(np.vdot(W0, self.c - g0))
        self.pen, self.target, self.Q = pen, target, Q
        self.free = pen.free_rows
        free_gram = _formed(_principal(Q, self.free)) if self.free.size else None
        one_sided = self.free.size and pen.positive
        self.free_system = np.linalg.pinv(free_gram) if self.free.size and not one_sided else None
        self.one_sided = one_sided_system(free_gram, self.free.size) if one_sided else None

    def compiled(self):
        """The test as :func:`_coordinate_solve.minimize_coordinates` takes it (one output, singletons).

        The compiled solve repeats :meth:`__call__` for blocks of one coordinate, whose dual norm
        is :math:`|v_j|/\alpha_j`; the block sweeps keep :meth:`__call__`, whose block dual norms
        (group and sparse-group roots, several outputs) and one-sided projections have no compiled form
        (``None``).
        """
        if self.one_sided is not None:
            return None
        free_system = np.zeros(0) if self.free_system is None else self.free_system.astype(np.float64).ravel()
        free = np.ascontiguousarray(self.free, dtype=np.intp)
        return GAP, np.ascontiguousarray(self.c[:, 0]), self.yy, float(self.target), free, free_system

    def __call__(self, B, grad, L):
        loss = 0.5 * (self.yy + float(np.sum(B * (grad - self.c))))
        fitted = self.yy - float(np.sum(B * self.c))
        squared = 2 * loss
        if self.free.size:
            # project the residual onto the unpenalized columns' constraints (Problem.free_projection)
            coefficients = (
                self.free_system @ grad[self.free]
                if self.one_sided is None
                else one_sided_coefficients(self.one_sided, grad[self.free])
            )
            fitted += float(np.sum(coefficients * self.c[self.free]))
            squared -= float(np.sum(coefficients * grad[self.free]))
            grad = grad - _columns_product(self.Q, self.free, coefficients)
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

    def compiled(self):
        """The test as :func:`_coordinate_solve.minimize_coordinates` takes it."""
        return RESIDUAL, self.fraction

    def __call__(self, B, grad, L):
        if self.target is None:
            self.target = self.fraction * float(np.max(self.pen.kkt_violation(*self.start, L), initial=0.0))
        return float(np.max(self.pen.kkt_violation(B, grad, L), initial=0.0)) <= self.target


class _QuadraticModel:
    r"""Curvature of the datafit on the working set: :math:`Q_c`, :math:`q_c = X^\top h_c`, :math:`\sum h_c`.

    For least squares :math:`h = a` (all outputs share one ``Q`` from the
    Gram cache); otherwise :math:`h_c = D_c`, the diagonal of the weighted
    Hessian (:meth:`Datafit.hessian_factors`; for the multinomial with blocks
    of several rows its coupling across outputs is left out), and ``Q`` has
    one slice per output. With an intercept, ``Q`` is the Schur complement
    :math:`X^\top H X - q q^\top / \sum h`, and the intercept's step follows
    from the coefficients' (:meth:`minimize`). With ``implicit`` (one output,
    blocks of one row, :func:`_implicit_is_cheaper`) ``Q`` is an
    :class:`_ImplicitGram` over ``X_ws``, never formed. With ``single`` a
    Newton model of a dense design forms ``Q`` in float32
    (:meth:`Problem.weighted_gram`: half the time, the dominant cost of an
    L1 logistic path; 0.33 -> 0.24 s on issue 15's workload (c)): a model
    is an approximation whose steps the Armijo search and the exact gap
    judge, and entries known to :math:`n\varepsilon_{32}` of their scale
    change neither the epochs nor the Newton steps measured there.
    """

    def __init__(self, problem, rows, X_ws, h, quadratic, implicit=False, single=False):
        self.fit_intercept = problem.fit_intercept
        self.single = single = single and not (quadratic or implicit or problem.sparse)
        self.cutoff = rank_cutoff(problem.n_samples, np.float32 if single else problem.X.dtype)
        # coordinate descent converges at about 1 - 1/kappa an epoch on a face of condition kappa, and face
        # steps finish faces whose curvatures the model resolves: a solve still short after 1/cutoff epochs
        # is held up by curvature below the cutoff (_solve_working_set); float64 models are not cut short
        self.resolved_epochs = math.ceil(1 / self.cutoff) if single else math.inf
        if quadratic:
            # (read only with an intercept: the column means, which are zeros without one)
            self.q = np.tile(problem.means()[rows], (problem.n_outputs, 1)) if self.fit_intercept else None
            self.hsum = np.ones(problem.n_outputs)
            self.h = None
            weights = problem.weights
        else:
            h = np.asarray(h, dtype=np.float64)
            self.hsum = np.maximum(h.sum(axis=0), np.finfo(np.float64).tiny)
            # (a pass over X_ws, made only where it is read: with an intercept)
            self.q = (
                np.asarray((X_ws.T @ h.astype(X_ws.dtype)).T, dtype=np.float64).reshape(h.shape[1], -1)
                if self.fit_intercept
                else None
            )
            self.h = h
            weights = h[:, 0]  # the implicit model's (one output)
        if implicit:
            q = self.q[0] if self.fit_intercept else None
            kept = (problem, rows) if quadratic and not problem.sparse else None  # Problem.centred_blocks
            self.Q = _ImplicitGram.of(
                X_ws, np.asarray(weights, dtype=np.float64), q, float(self.hsum[0]), kept
            )
        elif quadratic:
            self.Q = problem.weighted_gram(rows, problem.weights, columns=X_ws)
        else:
            grams = [
                problem.weighted_gram(
                    rows,
                    h[:, c],
                    self.hsum[c],
                    columns=X_ws,
                    single=single,
                    q=None if self.q is None else self.q[c],
                )
                for c in range(h.shape[1])
            ]
            self.Q = grams[0] if len(grams) == 1 else np.stack(grams)

    def drifted(self, h):
        r"""Whether the curvature weights ``h`` moved from the model's by over :data:`_CURVATURE_DRIFT`.

        The change is measured as :math:`\sum_{i,c} |h_{ic} - h^0_{ic}| / \sum_{i,c} h^0_{ic}`, an
        :math:`O(nm)` test against the :math:`O(n|ws|^2 m)` of new Gram matrices. Least squares never
        drifts (its model is exact).
        """
        if self.h is None:
            return False
        return float(np.sum(np.abs(h - self.h))) > _CURVATURE_DRIFT * float(np.sum(self.h))

    def reduced(self, g_ws, g_b):
        """The coefficients' gradient with the intercept eliminated (Schur complement)."""
        return g_ws - self.q.T * (g_b / self.hsum) if self.fit_intercept else g_ws

    def minimize(self, g_ws, g_b, W_ws, pen, stop, max_epochs, anderson):
        """The model's minimiser from ``W_ws``: coefficients, intercept step and epochs used."""
        B, used = _minimize_model(
            self.Q, self.reduced(g_ws, g_b), W_ws, pen, stop, max_epochs, anderson, self.cutoff
        )
        if not self.fit_intercept:
            return B, 0 * g_b, used
        return B, -(g_b + np.einsum("kc,kc->c", self.q.T, B - W_ws)) / self.hsum, used


class _CoupledModel:
    r"""Newton model with the whole Hessian of a datafit that couples the outputs (the multinomial).

    With :math:`a_i\nabla^2\ell_i = \operatorname{diag}(D_i) - V_iV_i^\top`
    (:meth:`Datafit.hessian_factors`), the model of a step :math:`(\Delta, \delta_b)`
    of the working set's coefficients and of the intercept is
    :math:`g^\top\Delta + g_b^\top\delta_b + \tfrac12\sum_i e_i^\top H_i e_i + P(W + \Delta)`
    with :math:`e_i = \Delta^\top x_i + \delta_b`. It is minimised by cyclic
    coordinate descent over the rows (one feature, all its outputs), keeping the
    residual :math:`R_i = H_i e_i` (``(n, m)``) so that a row's gradient is
    :math:`g_j + X_j^\top R` and a row's step :math:`s` moves :math:`R` by
    :math:`x_j \circ (D s - V(Vs))` (glmnet's "naive" updates: :math:`O(nm)` per
    row and no Gram matrix, whose :math:`m^2` blocks a working set of hundreds
    of rows could not afford). Within a row each output is minimised exactly in
    turn on the row's :math:`m \times m` Hessian block; a row with a group
    weight takes one proximal step in the metric of its block's largest
    eigenvalue. The intercept, a row of ones without penalty, is minimised
    exactly (pseudo-inverse of its Hessian, singular along the constant shift)
    after every sweep, and :math:`R` and the model gradient are then recomputed
    from :math:`(\Delta, \delta_b)` so that no rounding accumulates. The whole
    Hessian is what makes the Newton steps converge fast: with its diagonal
    only (one model per output, the cross terms :math:`-p_cp_d` left out) the
    multinomial path of issue 15 (f) took about 22 Newton steps per working
    set, 25 being the cap.
    """

    #: Formed in float64 (no Gram matrix): its solves are never cut short (a float32 model's may be)
    resolved_epochs = math.inf

    def __init__(self, problem, X_ws, D, V):
        self.fit_intercept = problem.fit_intercept
        self.X = X_ws
        self.D, self.V = np.asarray(D, dtype=np.float64), np.asarray(V, dtype=np.float64)
        # class-major copies: products over (sample, class, class) broadcast along the samples, about
        # 30x faster than along a short trailing axis of classes (1.6 ms against 0.05 ms for 5,093 x 9 x 5)
        self.classes = (np.ascontiguousarray(self.D.T), np.ascontiguousarray(self.V.T))
        n, m = self.D.shape
        self.whole = self.whole_hessian() if (X_ws.shape[1] + 1) * m <= _DIRECT_FACE else None
        blocks, intercept = self._diagonal_blocks()
        self.blocks = blocks
        top = np.linalg.eigvalsh(blocks)[:, -1]
        self.L = np.where(top > 0, top, 1.0)
        self.row_diagonal = np.einsum("jcc->jc", blocks)
        self.intercept_diagonal = np.diagonal(intercept).copy()
        # adding a constant to every output is an exact null direction of these Hessians; its computed
        # eigenvalue is the rounding of a sum over the samples, and keeping it would amplify rounding by
        # up to 1/eps: everything below the rounding level of such a sum counts as 0
        self.cutoff = rank_cutoff(n, np.float64)
        self.intercept_inverse = (
            np.linalg.pinv(intercept, self.cutoff, hermitian=True) if self.fit_intercept else None
        )
        self.columns = _ColumnReader(X_ws)

    def _diagonal_blocks(self):
        r"""Each row's :math:`m \times m` Hessian block :math:`\sum_i x_{ij}^2 H_i` and the intercept's
        :math:`\sum_i H_i`: read from :meth:`whole_hessian` when it is formed, else computed."""
        n, m = self.D.shape
        k = self.X.shape[1]
        if self.whole is not None:
            four = self.whole.reshape(k + 1, m, k + 1, m)
            rows = np.arange(k)
            return four[rows, :, rows, :], four[k, :, k, :]
        X = self.X
        squares = X.multiply(X).T if sp.issparse(X) else (X * X).T
        VT = self.classes[1]
        outer = (VT[:, None, :] * VT[None, :, :]).reshape(m * m, n)
        blocks = -np.asarray(squares @ outer.T, dtype=np.float64).reshape(-1, m, m)
        np.einsum("jcc->jc", blocks)[...] += np.asarray(squares @ self.D, dtype=np.float64)
        return blocks, np.diag(matrix_axis_sum(self.D, 0)) - self.V.T @ self.V

    def hessian(self, rows, classes, intercepts):
        r"""The model's Hessian on the coefficients ``(rows, classes)`` and the first ``intercepts``
        outputs of the intercept, :math:`Q_{ab} = \sum_i x_{ij_a}x_{ij_b}H_i[c_a, c_b]`.

        Read from :meth:`whole_hessian` when the working set is small enough to be solved
        exactly whole (:data:`_DIRECT_FACE`), else formed for the coordinates asked.
        """
        m = self.D.shape[1]
        if self.whole is not None:
            index = np.concatenate([rows * m + classes, self.blocks.shape[0] * m + np.arange(intercepts)])
            return self.whole[np.ix_(index, index)]
        X = self.X[:, rows]
        columns = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
        columns = np.concatenate([columns, np.ones((columns.shape[0], intercepts))], axis=1)
        classes = np.concatenate([classes, np.arange(intercepts)])
        same = classes[:, None] == classes[None, :]
        coupled = columns * self.V[:, classes]
        return np.where(same, columns.T @ (columns * self.D[:, classes]), 0.0) - coupled.T @ coupled

    def whole_hessian(self):
        """The Hessian of every coefficient of the working set and every output of the intercept.

        Its coordinates are the rows' outputs row after row (row-major), then the intercept's.
        """
        X = self.X.toarray() if sp.issparse(self.X) else self.X
        n, m = self.D.shape
        DT, VT = self.classes
        columns = np.concatenate([np.asarray(X, dtype=np.float64).T, np.ones((1, n))])
        coupled = (columns[:, None, :] * VT[None, :, :]).reshape(-1, n)
        whole = -(coupled @ coupled.T)
        for c in range(m):
            whole[c::m, c::m] += (columns * DT[c]) @ columns.T
        return whole

    def reduced(self, g_ws, g_b):
        """The coefficients' gradient (the intercept is a coordinate of this model, optimal at the start)."""
        return g_ws

    def times_hessian(self, E):
        r""":math:`(H_i e_i)_i` for the rows :math:`e_i` of ``E`` (``(n, m)``)."""
        return self.D * E - self.V * ((self.V * E) @ np.ones(E.shape[1]))[:, None]  # faster than einsum

    def settle(self, B, db, start):
        r"""At ``B``: the best intercept step from ``db`` on, :math:`R`, the model's value and gradient.

        ``start`` is ``(W, g, g_b)``, the model's centre and gradients there.
        """
        W, g, g_b = start
        E = np.asarray(self.X @ (B - W).astype(self.X.dtype), dtype=np.float64) + db
        R = self.times_hessian(E)
        if self.fit_intercept:
            shift = -self.intercept_inverse @ (g_b + matrix_axis_sum(R, 0))
            db = db + shift
            E += shift
            R += self.times_hessian(np.broadcast_to(shift, R.shape))
        grad = g + np.asarray(self.X.T @ R.astype(self.X.dtype), dtype=np.float64)
        value = float(np.sum(g * (B - W)) + g_b @ db + 0.5 * np.sum(E * R))
        return db, R, value, grad

    def minimize(self, g_ws, g_b, W_ws, pen, stop, max_epochs, anderson):
        """The model's minimiser from ``W_ws``: coefficients, intercept step and epochs used.

        Each sweep is followed by a step on the face of the signs it found
        (:meth:`face_step`) when the penalty has no group weights: coordinate
        descent alone approaches the minimiser slowly on the ill-conditioned
        Hessian of a wide working set, and the sweeps correct the support the
        face step assumed. (On the multinomial path of issue 15 (f) this took
        the epochs from 641 to 100.) ``anderson`` is not used.
        """
        faces = not np.any(pen.group_weights > 0)
        start = (W_ws, g_ws, g_b)
        B, db, R = W_ws.copy(), np.zeros_like(g_b), np.zeros(self.D.shape)
        rows = _RowState(self, pen)
        epoch = 0
        while epoch < max_epochs:
            epoch += 1
            B = rows.sweep(g_ws, R, B)
            settled = self.settle(B, db, start)
            if stop(B, settled[3], self.L):
                break
            if faces:
                B, settled = self.face_step(B, settled, start, pen)
            db, R, _, grad = settled
            if faces and stop(B, grad, self.L):
                break
        return B, db, epoch

    def face_step(self, B, settled, start, pen):
        r"""A point at least as good as ``B``, towards the model's minimiser on the face of ``B``'s signs.

        On the face (the nonzero coefficients :math:`S` keep their signs
        :math:`\sigma`, the others stay 0) the model is the quadratic
        :math:`\tfrac12 u^\top(Q + \mu I)u + (\nabla + \alpha\sigma + \mu B)^\top u` in
        the step :math:`u` of :math:`S` and of the intercept (the other
        coefficients, and the unpenalized ones, are free), minimised exactly
        (:func:`_solve_face`) on faces of up to :data:`_DIRECT_FACE` coordinates
        and by :func:`_conjugate_gradients` on larger ones. The point
        :math:`B + tu` with the coefficients that changed sign set to 0 (its
        projection onto the face's orthant) is kept for the first
        :math:`t = 1, 1/2, 1/4, \dots` at which it lowers the model (with the
        intercept refitted by :meth:`settle`); after :data:`_FACE_HALVINGS`
        halvings ``B`` is kept. ``settled`` is :meth:`settle` at ``B``; returns
        the point and :meth:`settle` there.
        """
        db, R, value, grad = settled
        sigma = np.sign(B)
        face = (B != 0) | ((pen.l1 == 0) & (not pen.positive))
        rhs = np.where(face, -(grad + pen.l1 * sigma + pen.ridge * B), 0.0)
        rhs_b = -(start[2] + matrix_axis_sum(R, 0)) if self.fit_intercept else np.zeros_like(db)
        small = np.count_nonzero(face) + rhs_b.size <= _DIRECT_FACE
        if small:
            u, u_b = _solve_face(self, face, rhs, rhs_b, pen.ridge, B[face])
        else:
            u, u_b = _conjugate_gradients(self, face, rhs, rhs_b, pen.ridge)
        kinked = (pen.l1 > 0) | pen.positive  # where the penalty is not smooth at 0
        current = value + pen.value(B)
        for halving in range(_FACE_HALVINGS):
            t = 0.5**halving
            moved = B + t * u
            moved[kinked & (np.sign(moved) != sigma)] = 0.0
            candidate = self.settle(moved, db + t * u_b, start)
            if candidate[2] + pen.value(moved) < current:
                return moved, candidate
        return B, settled


def _solve_face(model, face, rhs, rhs_b, ridge, face_values):
    r"""The exact minimiser of the face quadratic of :meth:`_CoupledModel.face_step`: ``(u, u_b)``.

    The face's Hessian (:meth:`_CoupledModel.hessian` on its coefficients and
    the intercept's outputs but the last) is solved by least squares. The
    intercept's last output is held at 0: a constant added to every output
    changes neither the loss nor the step's gradient, whose entries sum to 0.
    An exact solve leaves nothing to a stopping rule, so fits on data equal up
    to rounding (repeated samples against sample weights) stay equal up to
    rounding.
    """
    rows, classes = np.nonzero(face)
    m = rhs.shape[1]
    free = m - 1 if model.fit_intercept else 0
    hessian = model.hessian(rows, classes, free)
    hessian[np.arange(rows.size), np.arange(rows.size)] += ridge
    target = np.concatenate([rhs[face], rhs_b[:free]])
    # where the target has a part the Hessian cannot reach (a flat direction with a nonzero slope:
    # all the outputs of a feature on the face, whose signs do not cancel), the model falls along it
    # without bound on the face: follow it until the first coefficient of the face reaches 0
    solution, _ = _face_solution(hessian, target, face_values, model.cutoff)
    u = np.zeros_like(rhs)
    u[face] = solution[: rows.size]
    u_b = np.append(solution[rows.size :], np.zeros(rhs_b.size - free))
    return u, u_b


def _face_solution(hessian, target, values, cutoff):
    r"""A minimiser of the face quadratic :math:`\tfrac12 u^\top H u - r^\top u`, or a ray where it falls.

    The compiled :class:`~normpen.linear.solvers._coordinate_solve.FaceFactor` of a formed
    ``hessian`` (pivoted Cholesky to the rank ``cutoff``, the null space followed to the first
    zero of the coefficients ``values``) solved for ``target``: returns the step and whether
    :math:`H` had full rank (the step then solves :math:`Hu = r`).
    """
    return _face_factor(hessian, cutoff).solution(target, values)


def _face_factor(hessian, cutoff):
    """The compiled :class:`~normpen.linear.solvers._coordinate_solve.FaceFactor` of a formed ``hessian``."""
    hessian = np.ascontiguousarray(hessian, dtype=np.float64)
    return FaceFactor(hessian, np.arange(hessian.shape[0], dtype=np.intp), 0.0, cutoff)


def _conjugate_gradients(
    model, face, rhs, rhs_b, ridge, max_iter=_FACE_ITERATIONS, reduction=_FACE_REDUCTION
):
    r"""Preconditioned conjugate gradients for :meth:`_CoupledModel.face_step`: returns ``(u, u_b)``.

    Solves :math:`(Q + \mu I)u = r` on the face's coordinates (with the
    intercept's ``u_b``), from 0, until the preconditioned residual fell by
    ``reduction`` or after ``max_iter`` products. The preconditioner inverts
    each row's :math:`m \times m` block on the face (and the intercept's): the
    outputs of one feature are strongly coupled, a constant added to all of them
    changing nothing. The products with :math:`Q` go through :math:`X`
    (two skinny matrix products), never forming it. Stops early where the
    curvature along a direction is not positive.
    """
    m = rhs.shape[1]
    pairs = face[:, :, None] & face[:, None, :]
    blocks = np.where(pairs, model.blocks + ridge * np.eye(m), 0.0) + np.eye(m) * ~face[:, :, None]
    inverse = np.linalg.pinv(blocks, hermitian=True)
    inverse_b = model.intercept_inverse if model.fit_intercept else None
    X = model.X

    def precondition(res, res_b):
        return np.einsum("jcd,jd->jc", inverse, res), (inverse_b @ res_b if model.fit_intercept else res_b)

    u, u_b = np.zeros_like(rhs), np.zeros_like(rhs_b)
    res, res_b = rhs, rhs_b
    z, z_b = precondition(res, res_b)
    d, d_b = z, z_b
    rz = float(np.vdot(res, z) + np.vdot(res_b, z_b))
    target = reduction**2 * rz
    for _ in range(max_iter):
        if not rz > target:
            break
        E = np.asarray(X @ d.astype(X.dtype), dtype=np.float64) + d_b
        R = model.times_hessian(E)
        Ad = np.where(face, np.asarray(X.T @ R.astype(X.dtype), dtype=np.float64) + ridge * d, 0.0)
        Ad_b = matrix_axis_sum(R, 0) if model.fit_intercept else d_b
        curvature = float(np.vdot(d, Ad) + np.vdot(d_b, Ad_b))
        if not curvature > 0:
            break
        step = rz / curvature
        u, u_b = u + step * d, u_b + step * d_b
        res, res_b = res - step * Ad, res_b - step * Ad_b
        z, z_b = precondition(res, res_b)
        previous, rz = rz, float(np.vdot(res, z) + np.vdot(res_b, z_b))
        d, d_b = z + (rz / previous) * d, z_b + (rz / previous) * d_b
    return u, u_b


class _ColumnReader:
    """The columns of a dense or CSC design as the compiled ``epoch_rows`` reads them.

    ``rows`` is the design's transpose ``(k, n)`` with empty ``indptr`` and
    ``indices`` for a dense design; for a sparse one, ``rows`` is the CSC
    data as one row and ``indptr``/``indices`` are its column pointers and
    row indices, all contiguous in the kernel's dtypes.
    """

    def __init__(self, X):
        empty = np.zeros(0, dtype=np.intp)
        if sp.issparse(X):
            X = X.tocsc()
            self.rows = np.asarray(X.data, dtype=np.float64)[None, :]
            self.indptr = np.ascontiguousarray(X.indptr, dtype=np.intp)
            self.indices = np.ascontiguousarray(X.indices, dtype=np.intp)
        else:
            self.rows = np.ascontiguousarray(X.T, dtype=np.float64)
            self.indptr = self.indices = empty


class _RowState:
    """The per-row constants of :meth:`_RowState.sweep`, in the compiled ``epoch_rows``' dtypes."""

    def __init__(self, model, pen):
        self.model = model
        self.l1 = np.ascontiguousarray(pen.l1, dtype=np.float64)
        self.groups = np.ascontiguousarray(pen.group_weights, dtype=np.float64)
        self.ridge, self.positive = float(pen.ridge), bool(pen.positive)
        n, m = model.D.shape
        self.work = np.empty(n + 3 * m)

    def sweep(self, g, R, B):
        r"""One cyclic pass over the rows from ``B`` with the residual ``R`` (``(n, m)``) there; returns the
        new ``B`` (``R`` is not changed).

        Row :math:`j` gets its gradient :math:`g_j + X_j^\top R`; each output :math:`c`
        then moves to :math:`S_{\alpha_{jc}}(Q_{cc}b_c - \nabla_c)/(Q_{cc} + \mu)`
        (:math:`Q` the row's Hessian block, :math:`\nabla` its gradient, updated after
        each move), or, with a group weight, the row takes one proximal gradient
        step of length :math:`1/L_j`. A zero row whose gradient stays inside the
        L1 ball is left alone; otherwise a copy of :math:`R` follows the row's step
        (the compiled ``epoch_rows``).
        """
        model, columns = self.model, self.model.columns
        D, V = model.classes
        R = np.array(R.T, dtype=np.float64, order="C")  # outputs first: each output's samples contiguous
        B = np.array(B, dtype=np.float64, order="C")
        epoch_rows(
            np.ascontiguousarray(g, dtype=np.float64),
            R,
            B,
            columns.rows,
            columns.indptr,
            columns.indices,
            D,
            V,
            np.ascontiguousarray(model.blocks),
            self.l1,
            self.groups,
            model.L,
            self.ridge,
            self.positive,
            self.work,
        )
        return B


def _armijo(problem, state, pen_ws, W_ws, step, dz, g_ws, g_b, db, start=None, sigma=1e-4, max_halvings=30):
    """Largest :math:`t = 2^{-k}` with sufficient decrease of the true objective; 0 if none.

    ``start`` is the objective at the current point when already known. The
    objectives compared are known to :meth:`Problem.objective_rounding`: a step
    whose decrease is below it (the last Newton steps before a tight ``tol``)
    cannot be told from no decrease, so it passes when it is not worse than
    that. (Without this slack a squared-hinge lasso stalled at a gap of
    2e-10 on steps of 1e-9 that halvings could not resolve.)
    """
    start = problem.loss(state.z) + pen_ws.value(W_ws) if start is None else start
    decrease = float(np.sum(g_ws * step) + np.sum(g_b * db)) + pen_ws.value(W_ws + step) - pen_ws.value(W_ws)
    slack = problem.objective_rounding(start)
    t = 1.0
    for _ in range(max_halvings):
        value = problem.loss(state.z + t * dz) + pen_ws.value(W_ws + t * step)
        if value <= start + sigma * t * min(decrease, 0.0) + slack:
            return t
        t *= 0.5
    return 0.0


def _block_lipschitz_of_model(pen, values):
    """Per-block curvature of the model: the largest eigenvalue of each diagonal block over the slices of Q.

    ``values`` are :func:`_block_eigen`'s (a block of one row: its diagonal entry); a block whose
    curvature is 0 gets 1, so that steps stay finite.
    """
    top = pen.block_starts + pen.block_sizes - 1  # eigenvalues ascend within a block
    L = values[:, top].max(axis=0)
    return np.where(L > 0, L, 1.0)


def _minimize_model(Q, g0, W0, pen, stop, max_epochs, anderson, cutoff):
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
    believed. ``Q`` is formed, or an :class:`_ImplicitGram` (swept by
    :class:`_ResidualBlockSweep`). With one output and blocks of one coordinate
    the whole loop, with steps on the face of the signs and a closing polish, is
    the compiled :func:`~normpen.linear.solvers._coordinate_solve.minimize_coordinates`
    (the same rules and constants), on a formed ``Q`` or, through
    :class:`_ResidualSweep`, an implicit one (on issue 15's 200 x 1000 lasso the
    loop in Python made about 1,000 Python-level calls a working set). Returns the
    minimiser and the number of epochs.
    """
    compiled = stop.compiled() if _scalar(Q, pen, W0) else None
    if compiled is not None:
        B, epochs = minimize_coordinates(
            _ResidualSweep(Q, g0, W0) if isinstance(Q, _ImplicitGram) else Q,
            np.ascontiguousarray(g0[:, 0], dtype=np.float64),
            np.ascontiguousarray(W0[:, 0], dtype=np.float64),
            np.ascontiguousarray(pen.l1[:, 0] + pen.group_weights, dtype=np.float64),
            float(pen.ridge),
            pen.positive,
            compiled,
            anderson,
            max_epochs,
            cutoff,
            *MODEL_CONSTANTS,
        )
        return B[:, None], epochs
    eigen = _block_eigen(Q, pen)
    L = _block_lipschitz_of_model(pen, eigen[0])
    sweep = (_ResidualBlockSweep if isinstance(Q, _ImplicitGram) else _BlockSweep)(Q, g0, W0, pen, L, eigen)
    accelerator = _Anderson(anderson, W0.size) if anderson else None
    cycle = anderson + 1 if anderson else _REFRESH_EPOCHS
    epoch = 0
    while epoch < max_epochs:
        epoch += 1
        B, grad = sweep.epoch()
        if accelerator is not None:
            accelerator.push(B, grad)
        if epoch % cycle == 0:
            B, grad = _extrapolated(sweep, pen, B, grad, accelerator)
        if stop(B, grad, L) and (not sweep.approximate or stop(B, sweep.exact(), L)):
            break
    return sweep.B, epoch


def _scalar(Q, pen, W0):
    """One shared curvature matrix, blocks of one row and one output: the coordinate-wise kernel applies."""
    return Q.ndim == 2 and pen.singletons and W0.shape[1] == 1


def _model_gradient(Q, g0, W0, B):
    r"""Model gradient :math:`g_0 + Q_c(B_c - W_{0,c})` per output, from any point ``W0`` and its ``g0``."""
    step = (B - W0).astype(Q.dtype, copy=False)
    return g0 + (Q @ step if Q.ndim == 2 else np.einsum("ckg,gc->kc", Q, step))


def _extrapolated(sweep, pen, B, grad, accelerator):
    """The sweep moved to the Anderson point if it lowers the model beyond rounding, else kept at ``B``."""
    point = accelerator.extrapolate() if accelerator is not None else None
    if point is not None:
        point = point.reshape(B.shape)
        if _lowers_model(sweep, pen, B, grad, point):
            return sweep.rebase(point, sweep.gradient_at(point))
    return sweep.rebase(B, sweep.gradient_at(B))


def _lowers_model(sweep, pen, B, grad, C):
    r"""Whether moving from ``B`` (model gradient ``grad``) to ``C`` lowers the model by more than rounding.

    The model is quadratic, so its change is
    :math:`\langle e, \nabla_B\rangle + \tfrac12 e^\top Qe + P(C) - P(B)` with :math:`e = C - B`,
    computed from the difference (with the float64 :math:`Q`, and the penalty's change from
    :func:`_penalty_change`) so that its rounding scales with :math:`|e|` and not with the
    model's own terms: those made every small but real decrease near convergence look like
    rounding. In float64 the product :math:`e^\top Qe` is known to
    :math:`k\epsilon|e|^\top|Q||e| \le k\epsilon\sum_i r_ie_i^2` (:math:`k` the working-set size,
    :math:`r` the row sums of :math:`|Q|`, :attr:`_Sweep.row_sums`, from
    :math:`2|e_ie_j| \le e_i^2 + e_j^2` and the symmetry of :math:`Q`), the inner product to
    :math:`k\epsilon|e|^\top|\nabla_B|` and the penalty's change to :math:`k\epsilon` times
    its bound: the decrease must exceed :math:`(k + 2)\epsilon` times the sum of these terms
    (:meth:`_Sweep.product_terms` is :math:`k`; :math:`k + n` for an implicit :math:`Q`, whose
    products also sum over the samples). On collinear columns :math:`Q` is singular and its
    computed null space slightly indefinite, so a step far along it can *seem* to lower the model
    by up to the first of them. (With :math:`P(C) - P(B)` taken from the two values, known to
    :math:`k\epsilon(P(B) + P(C))`, a face step along near-duplicate columns that lowered the
    model by 3e-15 where :math:`P \approx 0.09` was refused as rounding, and coordinate descent
    took the solve's whole budget of 10,000 epochs in its place: issue 15.)
    """
    if pen.positive and np.any(C < 0):
        return False
    e = C - B
    penalty, bound = _penalty_change(pen, B, C)
    change = float(np.sum(e * (grad + 0.5 * sweep.product(e)))) + penalty
    size = float(np.sum(np.abs(e) * (np.abs(grad) + sweep.row_sums * np.abs(e)))) + bound
    return change < -(sweep.product_terms() + 2) * float(np.finfo(np.float64).eps) * size


def _penalty_change(pen, B, C):
    r""":math:`P(C) - P(B)` from the differences :math:`e = C - B`, and the sum its rounding scales with.

    The L1 part is :math:`\sum\alpha(|C| - |B|)`, each term within :math:`\epsilon\alpha|e|`
    (:math:`||C| - |B|| \le |e|`); a group's norm changes by
    :math:`\|C_g\| - \|B_g\| = \langle e_g, B_g + C_g\rangle / (\|B_g\| + \|C_g\|)`, within a few
    :math:`|g|\epsilon\|e_g\|` (Cauchy-Schwarz: :math:`|e_g|^\top|B_g + C_g| \le
    \|e_g\|(\|B_g\| + \|C_g\|)`); the ridge's by :math:`\tfrac\mu2\langle e, B + C\rangle`, within
    :math:`\tfrac\mu2|e|^\top(|B| + |C|)` times the terms' count and :math:`\epsilon`. Returns the
    change and :math:`\sum\alpha|e| + \sum_g\beta_g\|e_g\| + \tfrac\mu2|e|^\top(|B| + |C|)`.
    (:meth:`BlockPenalty.value` twice would be known only to :math:`\epsilon(P(B) + P(C))`.)
    """
    e = C - B
    change = float(np.sum(pen.l1 * (np.abs(C) - np.abs(B))))
    bound = float(np.sum(pen.l1 * np.abs(e)))
    if np.any(pen.group_weights > 0):
        sums = pen.block_norms(B) + pen.block_norms(C)
        moved = pen.block_sum(np.einsum("ij,ij->i", e, B + C))
        change += float(pen.group_weights @ np.divide(moved, sums, out=np.zeros_like(sums), where=sums > 0))
        bound += float(pen.group_weights @ pen.block_norms(e))
    if pen.ridge:
        change += 0.5 * pen.ridge * float(np.vdot(e, B + C))
        bound += 0.5 * pen.ridge * float(np.sum(np.abs(e) * (np.abs(B) + np.abs(C))))
    return change, bound


class _Sweep:
    """What the block sweeps share."""

    @cached_property
    def row_sums(self):
        """Row sums of :math:`|Q|`, ``(k, m)`` like the iterates (:func:`_lowers_model`)."""
        Q = self.exact_model[0]
        stack = Q if Q.ndim == 3 else Q[None]
        sums = np.empty(stack.shape[:2])
        for start in range(0, stack.shape[1], _ROW_CHUNK):  # without a second k x k array in memory
            sums[:, start : start + _ROW_CHUNK] = np.abs(stack[:, start : start + _ROW_CHUNK]).sum(axis=2)
        return sums.T

    def product(self, E):
        """:math:`Q_cE_c` per output with the float64 ``Q``."""
        Q = self.exact_model[0]
        return Q @ E if Q.ndim == 2 else np.einsum("ckg,gc->kc", Q, E)

    def product_terms(self):
        """The most terms in one sum of a product with ``Q`` (:func:`_lowers_model`): the working set size."""
        return self.exact_model[0].shape[-1]


class _KeptResidual:
    r"""What the residual sweeps share: :math:`Q` (an :class:`_ImplicitGram`) read through the kept
    weighted residual :math:`v = HX(B - W_0)` and :math:`c = q^\top(B - W_0)`.

    :meth:`_keep_residual` sets up the column reader and the vectors the compiled epochs take,
    :meth:`_rebase_residual` computes :math:`v` and :math:`c` from scratch at a point (so
    rounding does not accumulate across rebases), and :meth:`_gradient` is the whole
    model gradient :math:`g_0 + X^\top v - qc/\sum h` after an epoch (one pass).
    """

    def _keep_residual(self, Q, g0):
        self.transposed = Q.X.T
        self.columns, self.h = _ColumnReader(Q.X), Q.h
        self.q = np.zeros(0) if Q.q is None else np.ascontiguousarray(Q.q, dtype=np.float64)
        self.g0 = np.ascontiguousarray(g0[:, 0], dtype=np.float64)

    @cached_property
    def row_sums(self):
        return self.Q.magnitude_row_sums()[:, None]

    def product_terms(self):
        return self.Q.shape[0] + self.Q.X.shape[0]

    def _rebase_residual(self, B, W0):
        step = B[:, 0] - W0[:, 0]
        if not np.any(step):  # at the start point (every new sweep): no pass over X
            self.residual, self.centre = np.zeros(self.Q.X.shape[0]), 0.0
            return
        self.residual = self.Q.h * np.asarray(self.Q.X @ step, dtype=np.float64)
        self.centre = float(self.Q.q @ step) if self.Q.q is not None else 0.0

    def _gradient(self):
        grad = self.g0 + self.transposed @ self.residual
        if self.Q.q is not None:
            grad -= self.Q.q * (self.centre / self.Q.hsum)
        return grad


class _ResidualSweep(_KeptResidual):
    r"""An implicit ``Q`` (:class:`_ImplicitGram`) as the compiled coordinate solve drives it.

    :func:`~normpen.linear.solvers._coordinate_solve.minimize_coordinates` makes the working-set
    solve (epochs, extrapolation, face steps, stop tests, polish) on a formed ``Q`` or on this
    operator, which keeps the weighted residual :math:`v = HX(B - W_0)` and
    :math:`c = q^\top(B - W_0)`, from which a coordinate's model gradient is
    :math:`g_{0,j} + x_j^\top v - q_jc/\sum h` (one pass over the column's
    nonzeros), and a move :math:`\delta` follows with :math:`v \mathrel{+}= \delta\,Hx_j`
    (a second): the compiled ``epoch_residual``, exactly the updates the rows of
    :math:`Q` would make. After the epoch the whole gradient is recomputed from
    :math:`v` (a third pass), and at every :meth:`rebase` :math:`v` itself from
    :math:`B`, so rounding does not accumulate across rebases. Products, row sums of
    :math:`|Q|` and face Hessians come from the :class:`_ImplicitGram`. One Python call
    an epoch or a face, against passes over a wide working set's columns. The cost
    model is :func:`_implicit_is_cheaper`'s.
    """

    def __init__(self, Q, g0, W0):
        self.Q, self.start = Q, (g0, W0)
        self._keep_residual(Q, g0)
        self.weighted = _ColumnReader(Q.HX)
        self._rebase_residual(W0, W0)
        self.diagonal, self.principal = Q.diagonal, Q.principal
        self.magnitude_row_sums, self.terms = Q.magnitude_row_sums, self.product_terms()

    def product(self, e):
        """:math:`Qe`."""
        return self.Q @ e

    def rebase(self, b, grad):
        """Continue from ``b`` (``(k,)``): :math:`v`, :math:`c` and its gradient (into ``grad``) afresh."""
        B = b[:, None]
        self._rebase_residual(B, self.start[1])
        grad[:] = _model_gradient(self.Q, *self.start, B)[:, 0]

    def epoch(self, b, grad, thresh, inv_l, shrink, positive):
        """One pass of ``epoch_residual`` over ``b`` (in place), then the gradient into ``grad``."""
        columns, weighted = self.columns, self.weighted
        _, self.centre = epoch_residual(
            columns.rows,
            weighted.rows,
            columns.indptr,
            columns.indices,
            self.g0,
            b,
            self.residual,
            self.q,
            self.centre,
            float(self.Q.hsum),
            thresh,
            inv_l,
            shrink,
            positive,
        )
        grad[:] = self._gradient()


class _ImplicitGram:
    r"""A working set's model curvature :math:`Q = X^\top HX - qq^\top/\textstyle\sum h + \mu I`, not formed.

    Kept as the working set's columns :math:`X` (float64, CSC or dense), the curvature weights
    :math:`h \ge 0` (:math:`H = \operatorname{diag}(h)`; :math:`HX` is formed only when asked for,
    :attr:`HX`, by the coordinate sweep's kernel), :math:`q = X^\top h`
    (``None`` without an intercept, then no Schur complement), :math:`\sum h` and
    :math:`\mu` (a face's ridge, 0 for the model itself). A product :math:`QV` costs two
    passes over the nonzeros of :math:`X`, where a formed :math:`Q` costs :math:`k^2` per
    product and :math:`k^2` entries of memory; entries are formed only for a few columns
    at a time (:meth:`principal`, :meth:`formed`). It has what the sweeps, the stop test
    and the face solvers read of a formed ``Q``: ``shape``, ``ndim``, ``dtype``, ``@`` and
    :meth:`diagonal`.
    """

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, X, h, q, hsum, shift=0.0, kept=None):
        self.X, self.h, self.q, self.hsum, self.shift, self.kept = X, h, q, hsum, shift, kept
        self._blocks = None  # the rows and result of the last blocks()
        self.shape = (X.shape[1], X.shape[1])

    @classmethod
    def of(cls, X_ws, h, q, hsum, kept=None):
        """The model of the columns ``X_ws``, curvature weights ``h``, ``q`` (or ``None``) and ``hsum``.

        ``kept`` is ``(problem, rows)`` when ``X_ws`` are the columns ``rows`` of a least-squares
        problem's design: :meth:`blocks` then reads the problem's kept Gram blocks
        (:meth:`Problem.centred_blocks`).
        """
        h = np.ascontiguousarray(h, dtype=np.float64)
        if sp.issparse(X_ws):
            return cls(sp.csc_matrix(X_ws, dtype=np.float64), h, q, hsum, kept=kept)
        return cls(np.asarray(X_ws, dtype=np.float64, order="F"), h, q, hsum, kept=kept)

    @cached_property
    def HX(self):
        """:math:`HX`, formed on first use."""
        if sp.issparse(self.X):
            return sp.csc_matrix(self.X.multiply(self.h[:, None]))
        return self.X * self.h[:, None]

    def __matmul__(self, V):
        V = np.asarray(V, dtype=np.float64)
        XV = np.asarray(self.X @ V, dtype=np.float64)
        out = np.asarray(self.X.T @ ((self.h if XV.ndim == 1 else self.h[:, None]) * XV), dtype=np.float64)
        if self.q is not None:
            out -= np.multiply.outer(self.q, self.q @ V) / self.hsum
        return out + self.shift * V if self.shift else out

    def diagonal(self):
        squares = self.X.multiply(self.X) if sp.issparse(self.X) else self.X * self.X
        diagonal = np.asarray(squares.T @ self.h, dtype=np.float64).ravel()
        if self.q is not None:
            diagonal -= self.q * self.q / self.hsum
        return diagonal + self.shift

    def magnitude_row_sums(self):
        r"""Row sums of :math:`|X|^\top H|X| + |q||q|^\top/\sum h + |\mu|I`, entrywise at least :math:`|Q|`.

        They bound the rounding of a product computed as :meth:`__matmul__` computes it
        (:func:`_lowers_model`).
        """
        magnitudes = abs(self.X)
        sums = np.asarray(magnitudes.T @ (self.h * (magnitudes @ np.ones(self.shape[1]))), dtype=np.float64)
        sums = sums.ravel()
        if self.q is not None:
            sums += np.abs(self.q) * (np.sum(np.abs(self.q)) / self.hsum)
        return sums + abs(self.shift)

    def blocks(self, rows):
        r"""The diagonal blocks :math:`Q_{r_b, r_b}` ``(blocks, size, size)`` of ``rows`` ``(blocks, size)``.

        Read from the problem's kept blocks (``kept``, least squares on a dense design: the same
        at every strength), else formed: batched products :math:`X_{:, r_b}^\top (HX)_{:, r_b}`
        (dense, :func:`~normpen.linear.problem.gram_blocks`; for sparse columns, entry
        :math:`(i, j)` of every block at once as :math:`(X_{:, r_i} \circ X_{:, r_j})^\top h`),
        :math:`n|g|k` multiply-adds for :math:`k` rows in blocks of :math:`|g|`, where forming
        :math:`Q` costs :math:`nk^2`. The last result is kept (the sweep's curvatures and
        eigen-decompositions read the same blocks).
        """
        if self._blocks is not None and np.array_equal(self._blocks[0], rows):
            return self._blocks[1]
        size = rows.shape[1]
        if self.kept is not None:
            problem, columns = self.kept
            out = problem.centred_blocks(columns[rows])
        else:
            if sp.issparse(self.X):
                out = np.empty((rows.shape[0], size, size))
                for i in range(size):
                    for j in range(size):
                        products = self.X[:, rows[:, i]].multiply(self.X[:, rows[:, j]])
                        out[:, i, j] = np.asarray(products.T @ self.h, dtype=np.float64).ravel()
            else:
                out = gram_blocks(self.X, self.h, rows)
            if self.q is not None:
                out -= self.q[rows][:, :, None] * self.q[rows][:, None, :] / self.hsum
        out[:, np.arange(size), np.arange(size)] += self.shift
        self._blocks = (rows.copy(), out)
        return out

    def eigen(self, rows):
        """``eigh`` of :meth:`blocks` ``(values, vectors)``; the problem's kept ones (``kept``), shifted."""
        if self.kept is None:
            return np.linalg.eigh(self.blocks(rows))
        problem, columns = self.kept
        values, vectors = problem.centred_eigen(columns[rows])
        return values + self.shift, vectors

    def principal(self, rows, shift=0.0):
        """The implicit :math:`Q_{rows, rows}`, plus ``shift`` on its diagonal."""
        q = None if self.q is None else self.q[rows]
        return _ImplicitGram(self.X[:, rows], self.h, q, self.hsum, self.shift + shift)

    def formed(self):
        """The entries of :math:`Q`, a C-ordered float64 array (for a few columns: :meth:`principal`)."""
        gram = self.X.T @ self.HX
        gram = np.array(gram.toarray() if sp.issparse(gram) else gram, dtype=np.float64, order="C")
        if self.q is not None:
            gram -= np.multiply.outer(self.q, self.q) / self.hsum
        gram[np.diag_indices(self.shape[0])] += self.shift
        return gram


def _principal(Q, rows, shift=0.0):
    """:math:`Q_{rows, rows}` plus ``shift`` on its diagonal: a formed copy of a formed ``Q``, or implicit."""
    if isinstance(Q, _ImplicitGram):
        return Q.principal(rows, shift)
    block = Q[np.ix_(rows, rows)]
    block[np.diag_indices(rows.size)] += shift
    return block


def _formed(Q):
    """The entries of ``Q`` (formed already, or an :class:`_ImplicitGram`)."""
    return Q.formed() if isinstance(Q, _ImplicitGram) else Q


def _columns_product(Q, columns, v):
    """:math:`Q_{:, columns}v`; for an implicit ``Q`` as :math:`Q` times ``v`` placed in a zero vector."""
    if not isinstance(Q, _ImplicitGram):
        return Q[:, columns] @ v
    full = np.zeros((Q.shape[1], *np.shape(v)[1:]))
    full[columns] = v
    return Q @ full


class _BlockSweep(_Sweep):
    r"""Cyclic block coordinate descent state for the compiled ``epoch_blocks`` (any blocks and outputs).

    Group-lasso blocks (a group weight, no L1 part, no positivity; with or without
    a ridge) move to the model's exact minimiser over the block, from the
    eigen-decompositions of the block's diagonal blocks of ``Q``
    (:func:`_block_eigen`); any other block takes one proximal gradient step at
    its curvature ``L``. The exact step is what adelie takes: on issue 15's
    workload (d) (groups of five AR(1) columns, :math:`\rho = 0.6`, so a block's
    curvature spans a factor of about 10) it needs 2-3 times fewer epochs.

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

    def __init__(self, Q, g0, W0, pen, L, eigen):
        self.approximate = Q.shape[-1] >= _SINGLE_PRECISION_WIDTH
        self.exact_model = (Q, g0, W0)
        self.Q = Q.astype(np.float32) if self.approximate else Q
        self.stack = self.Q if self.Q.ndim == 3 else self.Q[None]  # the kernel's (m | 1, k, k)
        self.positive = pen.positive
        self.blocks = _block_steps(pen, L, eigen)
        self.work = np.empty((2, int(pen.block_sizes.max(initial=1)), W0.shape[1]))
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
        epoch_blocks(self.stack, self.grad, self.B, self.blocks, self.positive, self.work)
        return self.B, self.grad


class _ResidualBlockSweep(_KeptResidual, _BlockSweep):
    r"""The iterates of :class:`_BlockSweep` on an implicit ``Q`` (:class:`_ImplicitGram`), one output.

    As :class:`_ResidualSweep` does for coordinates, the sweep keeps the weighted residual
    :math:`v = HX(B - W_0)` and :math:`c = q^\top(B - W_0)`; the compiled ``epoch_residual_blocks``
    computes a block's gradient :math:`g_{0,g} + X_g^\top v - q_gc/\sum h` on reaching it, takes
    :func:`epoch_blocks`'s step (the exact minimiser from the eigen-decomposition of the block's
    diagonal block :math:`X_g^\top HX_g - q_gq_g^\top/\sum h`, :meth:`_ImplicitGram.blocks`, else the
    proximal gradient step) and adds :math:`HX_g\delta` to :math:`v`. After the epoch the whole gradient
    is recomputed from :math:`v`, and at every :meth:`rebase` :math:`v` itself from :math:`B`. The updates
    read float64 columns, so the gradient is never approximate. The cost model is
    :func:`_implicit_blocks_are_cheaper`'s.

    An epoch cycles as glmnet and adelie do: one pass over every block, then passes over the blocks
    that are nonzero after it (the kernel visits the blocks it is given) until a pass's largest
    :math:`L_g\|\Delta_g\|^2` falls below :data:`_ACTIVE_SETTLED` times the full pass's, at most
    :data:`_ACTIVE_PASSES` of them. Visiting a block costs a pass over its columns here (its
    gradient) even when it stays at 0, so passes over the active blocks cost their share of the
    working set; working sets at loose tolerances are up to 1.5 times wider than the support
    (:func:`_working_set`). On issue 15's workload (d) the widest solves at tolerance 1e-6 took 4-6
    epochs instead of 12-30, in about the same time (their active blocks are 85% of the working set);
    the path's time fell by 10-20% at tolerances 1.7e-3 to 1e-6. (The formed sweep,
    :class:`_BlockSweep`, keeps whole passes: a block that stays at 0 costs it only its step, the
    moves' axpys with the rows of :math:`Q` are the same either way.) The passes over the active
    blocks are extrapolated (:meth:`_cycle`): with the active set fixed they are plain cyclic block
    coordinate descent, whose iterates Anderson's combination accelerates on these ill-conditioned
    blocks (wider than the samples at the path's end); on workload (d) that took the path at
    tolerance 1e-6 from 524 to 372 passes and 0.47 to 0.39 s (interleaved, best of 3), at 3e-5 from
    314 to 268 passes and 0.338 to 0.325 s; memories of 2, 3 and 5 made 364-380 passes at 1e-6.
    """

    def __init__(self, Q, g0, W0, pen, L, eigen):
        self.approximate = False
        self.exact_model = (Q, g0, W0)
        self.Q, self.positive = Q, pen.positive
        self.blocks = _block_steps(pen, L, eigen)
        self.work = np.empty((2, int(pen.block_sizes.max(initial=1)), 1))
        self.pen, self.every = pen, np.arange(pen.block_sizes.size, dtype=np.intp)
        self._keep_residual(Q, g0)
        self.rebase(W0, g0)

    def rebase(self, B, grad):
        self._rebase_residual(B, self.exact_model[2])
        return super().rebase(B, grad)

    def epoch(self):
        """A pass over every block, then passes over the nonzero ones until they settle (class docstring)."""
        settled = _ACTIVE_SETTLED * self._pass(self.every)
        active = np.flatnonzero(self.pen.block_max(np.abs(self.B[:, 0])) > 0).astype(np.intp)
        if active.size < self.every.size:
            self._cycle(active, settled)
        self.grad[:, 0] = self._gradient()
        return self.B, self.grad

    def _cycle(self, active, settled):
        """Passes over the blocks ``active`` until one's largest change is at most ``settled`` (at most
        :data:`_ACTIVE_PASSES`), their rows extrapolated after every :data:`_ACTIVE_MEMORY` + 1 of them.

        The extrapolation is :class:`_Anderson`'s in the Euclidean metric (the iterates stand for their
        own gradients, which the passes do not compute: :math:`M = UU^\top`), the point kept when it
        lowers the model (:meth:`_move_if_lower`).
        """
        starts, sizes = self.pen.block_starts[active], self.pen.block_sizes[active]
        rows = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
        accelerator = _Anderson(_ACTIVE_MEMORY, rows.size)
        for count in range(1, _ACTIVE_PASSES + 1):
            if self._pass(active) <= settled:
                return
            accelerator.push(self.B[rows, 0], self.B[rows, 0])
            if count % (_ACTIVE_MEMORY + 1) == 0:
                point = accelerator.extrapolate()
                if point is not None:
                    self._move_if_lower(rows, point)

    def _move_if_lower(self, rows, point):
        r"""Move the rows ``rows`` of ``B`` to ``point`` if that lowers the model beyond rounding.

        For the step :math:`e` (zero off ``rows``) the model changes by
        :math:`e^\top\nabla + \tfrac12 e^\top Qe + P(B + e) - P(B)` with
        :math:`\nabla = g_0 + X^\top v - qc/\sum h`, so with :math:`Xe` (one product over the
        working set's columns) :math:`e^\top\nabla = e^\top g_0 + v^\top Xe - (q^\top e)c/\sum h` and
        :math:`e^\top Qe = (Xe)^\top H(Xe) - (q^\top e)^2/\sum h`; a move then adds :math:`HXe` to
        :math:`v` and :math:`q^\top e` to :math:`c`, as the kernel's moves do. The decrease must exceed
        :math:`(n + k + 2)\epsilon` times the sum of the terms' magnitudes (each a sum of at most
        :math:`n + k` products; the penalty's change and its bound from :func:`_penalty_change`), as in
        :func:`_lowers_model`. Only the iterates depend on the choice:
        the stop test reads the gradient the epoch recomputes from :math:`v`.
        """
        e = np.zeros(self.B.shape[0])
        e[rows] = point - self.B[rows, 0]
        Xe = np.asarray(self.Q.X @ e, dtype=np.float64)
        He = self.h * Xe
        qe = float(self.q @ e) if self.q.size else 0.0
        C = self.B.copy()
        C[rows, 0] = point
        if self.pen.positive and np.any(C < 0):
            return
        penalty, bound = _penalty_change(self.pen, self.B, C)
        linear = float(e @ self.g0) + float(self.residual @ Xe) - qe * self.centre / self.Q.hsum
        quadratic = float(He @ Xe) - qe * qe / self.Q.hsum
        size = (
            float(np.abs(e) @ np.abs(self.g0))
            + float(np.abs(self.residual) @ np.abs(Xe))
            + abs(qe * self.centre) / self.Q.hsum
            + 0.5 * (float(np.abs(He) @ np.abs(Xe)) + qe * qe / self.Q.hsum)
            + bound
        )
        terms = self.Q.shape[0] + self.Q.X.shape[0] + 2
        if linear + 0.5 * quadratic + penalty < -terms * float(np.finfo(np.float64).eps) * size:
            self.B[rows, 0] = point
            self.residual += He
            self.centre += qe

    def _pass(self, visit):
        """One pass of the compiled kernel over the blocks ``visit``; returns its largest change."""
        columns = self.columns
        _, self.centre, change = epoch_residual_blocks(
            columns.rows,
            columns.indptr,
            columns.indices,
            self.h,
            self.g0,
            self.B,
            self.grad,
            self.residual,
            self.q,
            self.centre,
            float(self.Q.hsum),
            self.blocks,
            self.positive,
            self.work,
            visit,
        )
        return change


def _block_steps(pen, L, eigen):
    r"""The per-block constants of the compiled block sweeps (a :class:`~.._sweeps.BlockSteps`).

    Block starts and sizes, steps :math:`1/L_g`, the L1 thresholds
    :math:`\alpha/L_g` entry by entry (``(k, m)``), the group thresholds
    :math:`\beta_g/L_g` and the ridge factors :math:`1/(1 + \mu/L_g)` of the
    proximal gradient steps; then the group weights :math:`\beta_g` of the
    blocks minimised exactly (group-lasso blocks: a group weight, no L1 part, no
    positivity; 0 for the others), the eigen-decompositions ``eigen`` of the
    diagonal blocks of the float64 ``Q`` (:func:`_block_eigen`; the kernels read
    those of the exact blocks only) and the ridge :math:`\mu`.
    """
    steps = 1.0 / L
    thresh = pen.l1 * np.repeat(steps, pen.block_sizes)[:, None]
    exact = (pen.group_weights > 0) & (pen.block_max(pen.l1.max(axis=1)) == 0) & (not pen.positive)
    return BlockSteps(
        np.ascontiguousarray(pen.block_starts, dtype=np.intp),
        np.ascontiguousarray(pen.block_sizes, dtype=np.intp),
        np.ascontiguousarray(steps, dtype=np.float64),
        np.ascontiguousarray(thresh, dtype=np.float64),
        np.ascontiguousarray(pen.group_weights * steps, dtype=np.float64),
        1.0 / (1.0 + pen.ridge * steps),
        np.where(exact, pen.group_weights, 0.0),
        *eigen,
        float(pen.ridge),
    )


def _block_eigen(Q, pen):
    r"""Eigen-decompositions :math:`Q_{gg,c} = V\mathrm{diag}(d)V^\top` of every block, per slice of Q.

    Returns ``values`` ``(m|1, k)`` (block :math:`g`'s eigenvalues in its rows'
    positions, ascending, clamped at 0: ``Q`` is positive semi-definite, and
    ``eigh`` may return :math:`-O(\epsilon)\|Q_{gg}\|` for a null direction) and
    ``vectors`` ``(m|1, k, width)``, row :math:`r` of the block's eigenvector
    :math:`i` at ``[s, start + r, i]``. A block of one row is its own eigenvector,
    with its diagonal entry (of an implicit ``Q`` one pass over :math:`X`, made
    only when there are such blocks); the others take one batched ``eigh`` per
    block size. A model's sweep computes them once: its curvatures
    (:func:`_block_lipschitz_of_model`) and exact steps (:func:`_block_steps`)
    read the same decompositions (on issue 15's workload (d) they were formed
    twice, 0.2 ms a working set).
    """
    slices = (Q.shape[0] if Q.ndim == 3 else 1, Q.shape[-1])
    width = int(pen.block_sizes.max(initial=1))
    values = np.zeros(slices)
    vectors = np.zeros((*slices, width))
    for size in np.unique(pen.block_sizes):
        rows = pen.block_starts[pen.block_sizes == size, None] + np.arange(size)
        if size == 1:
            diagonal = Q.diagonal()[None] if Q.ndim == 2 else np.diagonal(Q, axis1=1, axis2=2)
            values[:, rows[:, 0]], vectors[:, rows[:, 0], 0] = diagonal[:, rows[:, 0]], 1.0
        else:
            d, V = _diagonal_eigen(Q, rows)
            values[:, rows], vectors[:, rows, :size] = d, V
    return np.maximum(values, 0.0), vectors


def _diagonal_eigen(Q, rows):
    """``eigh`` of :func:`_diagonal_blocks` (an implicit ``Q``'s may be kept: :meth:`_ImplicitGram.eigen`)."""
    if isinstance(Q, _ImplicitGram):
        values, vectors = Q.eigen(rows)
        return values[None], vectors[None]
    return np.linalg.eigh(_diagonal_blocks(Q, rows))


def _diagonal_blocks(Q, rows):
    """Diagonal blocks :math:`Q_{r_b, r_b}` of ``rows`` ``(blocks, size)``, ``(m|1, blocks, size, size)``."""
    if isinstance(Q, _ImplicitGram):
        return Q.blocks(rows)[None]
    stack = Q if Q.ndim == 3 else Q[None]
    return stack[:, rows[:, :, None], rows[:, None, :]]


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
