r"""Covariance (block) coordinate descent for least-squares paths.

The case glmnet's and adelie's "covariance" methods serve: the Quadratic datafit on a dense
float64 design, one output, and a penalty whose block form
(:class:`~normpen.linear.blocks.BlockPenalty`) has blocks of one coordinate (an L1 weight, a group
weight or none) or groups with a group weight and no L1 weight: the lasso, weighted lasso, elastic
net, unpenalized coordinates, the group lasso and group elastic net, with ``positive=`` and sample
weights, with or without an intercept (eliminated by centring the Gram matrix). The sparse-group lasso
(a group with an L1 weight too) and groups without a group weight go to coordinate descent. One
compiled call solves a strength (:class:`~normpen.linear.solvers._gaussian_path.GaussianPath`, whose
docstring gives the algorithm: strong-rule working sets of blocks, block coordinate descent on their
Gram matrix cached along the path (a group's exact minimiser from its Gram block's eigen-decomposition,
as adelie's), at each check the gradient formed only where a bound from the last full gradient does not
keep it inside the dual ball (about a third fewer passes over ``X`` on issue 15's lasso paths), the
certificate of :meth:`~normpen.linear.problem.Problem.duality_gap` and the stop
rule of :mod:`~normpen.linear.solvers.cd`), where coordinate descent's outer loop spends about
twenty numpy calls a round; every strength is solved before its first check, so none is returned at
its warm start.

:func:`takes` says which problems it solves; :class:`PathSolver` solves them one strength at a time
for :func:`normpen.linear.path.path`'s warm-started loop.
"""

from __future__ import annotations

import numpy as np

from normpen.linear._validation import check_count, check_tol
from normpen.linear.datafits.quadratic import Quadratic
from normpen.linear.problem import GapReport, free_constraints
from normpen.linear.solvers import cd
from normpen.linear.solvers._gaussian_path import GaussianPath

__all__ = ["PathSolver", "takes"]

#: The most floats the working set's columns and Gram matrix may take (``n |ws| + |ws|^2``: 1 GiB).
_GRAM_ENTRIES = 2**27
#: Multiply-adds of a new column's Gram entries (:math:`n|ws|`) below which the Gram matrix is kept.
_GRAM_COLUMN = 2**19
#: Tolerances from which a wide working set leaves the Gram matrix (:func:`gram_limit`).
_LOOSE = 1e-4
#: Epochs under which a path's strength converged without the model solve's acceleration (half the plain
#: sweeps before it, :data:`~normpen.linear.solvers._gaussian_path._SWEEP_EPOCHS`): the next strength's wide
#: working set leaves the Gram matrix at any tol, its new columns (:math:`n|ws|` multiply-adds each) buying
#: nothing the residual's epochs (:math:`2n` a visit) do not. On the elastic net (b), 1000 x 5000, the late
#: strengths took 5 to 13 epochs and the residual form throughout was 13-25% faster at tol 1e-6 to 3.8e-5;
#: on the lasso (a) they took 12 to 32 (17-19 where the working set passed 524 coordinates) and the Gram
#: matrix was 10-20% faster. With this rule (one thread, three interleaved runs, best of 5, 2026-12-07):
#: (b) at 1e-6 164 / 205 / 185 -> 160 / 188 / 148 ms, 3.8e-5 171 / 171 / 171 -> 168 / 157 / 126, 1e-5
#: 180 / 170 / 168 -> 189 / 167 / 150; (a) the same iterates.
_FEW_EPOCHS = 10


def gram_limit(n_samples, tol=None, entries=None):
    r"""The widest working set whose columns and Gram matrix are kept: within ``entries`` floats (default
    :data:`_GRAM_ENTRIES`), :math:`|ws|(n + |ws|) \le` ``entries``, and unless ``tol`` is below
    :data:`_LOOSE`, at most :math:`\max(2^{19}/n, n/4)` coordinates; a wider one reads its gradient from
    the residual (plain coordinate descent, without the model solve's acceleration).

    A new coordinate's Gram column costs :math:`n|ws|` multiply-adds (in ``dgemm``), a visit without it
    :math:`2n` (a dot product and an axpy): the Gram form pays off with many visits, always while a
    column costs little (below :math:`2^{19}`, a few tenths of a millisecond) and at tight tolerances,
    whose many epochs its acceleration shortens. Measured (one thread, best of 5, load ~2): workload (a),
    the lasso on 1000 x 5000 (working sets past 524 coordinates at the late strengths), Gram throughout
    / residual past 524: tol 1.2e-3 101.8 / 84.5 ms, 1e-6 133.0 / 151.5 ms; workload (d), groups of 5 on
    1000 x 5000 (working sets of 3,000 coordinates), tol 1.7e-3: Gram throughout ~470 ms (its columns
    30-60 ms a strength), residual past 1000 / 500 / 250 / 100 coordinates 188 / 168 / 166 / 167 ms.
    """
    entries = _GRAM_ENTRIES if entries is None else entries
    within = int((np.sqrt(float(n_samples) ** 2 + 4.0 * entries) - n_samples) / 2)
    if tol is not None and tol < _LOOSE:
        return max(within, 0)
    return max(min(max(_GRAM_COLUMN // max(n_samples, 1), n_samples // 4), within), 0)


def takes(problem, block):
    r"""Whether :class:`PathSolver` solves ``problem`` with the block penalty ``block`` (at any strength).

    Least squares with one output, every block of several coordinates a group weight and no L1 weight
    (:func:`_groups_ok`), and (when the problem holds data) a dense float64 numpy design. ``problem`` may
    be shape-only (no ``X``): then the data are not judged. Unpenalized coordinates under ``positive``
    go to coordinate descent: their dual constraint is one-sided
    (:func:`~normpen.linear.problem.free_constraints`), which the compiled working-set solve's stop test
    (an equality projection) does not know.

    Groups are taken whatever the design's width; :func:`hands_to_cd` sends a path of groups wider than
    the Gram budget to coordinate descent at tight tolerances.
    """
    X = getattr(problem, "X", None)
    data_ok = X is None or (isinstance(X, np.ndarray) and X.dtype == np.float64)
    return (
        data_ok
        and isinstance(problem.datafit, Quadratic)
        and len(problem.coef_shape) == 1
        and block is not None
        and _groups_ok(block)
        and not (block.positive and block.free_rows.size)
    )


def hands_to_cd(problem, block, tol):
    r"""Whether a path that :func:`takes` would take runs faster in coordinate descent: groups whose
    features do not all fit the Gram budget (:math:`p >` :func:`gram_limit`) at ``tol`` below
    :data:`_LOOSE`.

    Past the budget a group lasso working set is solved by plain block coordinate descent on the
    residual (with the Gram matrix, no faster: a group's step has no model solve to accelerate it),
    which coordinate descent's Anderson-accelerated block sweeps beat at tight tolerances; at loose
    ones both take about as long and this solver, solving every strength before its first check, is
    far closer to the optimum. Workload (d), groups of 5 on 1000 x 5000 (working sets of 3,000
    coordinates), one thread, load ~2, 2026-12-07, this solver with bounded checks / coordinate
    descent solving each warm start first: tol 1.7e-3 331-341 / 398-433 ms (largest suboptimality
    4.4e-6 / 5.7e-6, adelie 239 ms at 6.1e-6), 1.7e-4 534-564 / 507-598 (8.6e-8 / 1.2e-6); 1.7e-5
    855 / 606, 1e-6 1207 / 807 (with the Gram matrix 1331 and 1680). Groups that fit the budget stay
    at every tolerance (AR(1) designs, 50 strengths to 1e-2, groups of 5, covariance / cd, tol 1.7e-3
    then 1e-6: 2000 x 250 12.0 / 21.5 and 13.7 / 36.8 ms; 1000 x 500 16.9 / 21.8 and 19.0 / 49.0;
    500 x 1000 28.2 / 26.1 and 59.3 / 74.4; 200 x 1000 15.0 / 17.5 and 64.0 / 67.8).
    """
    wide = not block.singletons and problem.n_features > gram_limit(problem.n_samples)
    return wide and tol < _LOOSE


def _groups_ok(block):
    """Every block of several coordinates has a group weight and no L1 weight (the group lasso's): the
    kernel's dual norm of a group is then its norm over its weight, and its exact step
    :func:`~normpen.linear.solvers._common._exact_block`'s."""
    if block.singletons:
        return True
    grouped = block.block_sizes > 1
    return bool(
        np.all(block.group_weights[grouped] > 0) and not np.any(block.block_max(block.l1[:, 0])[grouped])
    )


class PathSolver:
    """Solves one strength at a time from the point the last solve left (a path's warm starts).

    ``unit`` is the penalty's :class:`~normpen.linear.blocks.BlockPenalty` at strength 1. A call with
    a :class:`~normpen.linear.problem.State` other than the one it last returned (a path's start, a
    restart) starts from that state's coefficients; the state is then updated in place. Its working sets
    keep their Gram matrix up to :func:`gram_limit` at the call's ``tol``, or at a loose one after a
    strength that took fewer than :data:`_FEW_EPOCHS` epochs.
    """

    def __init__(self, problem, unit):
        self.problem = problem
        single = unit.block_sizes == 1
        # a single coordinate's group weight is an L1 weight (|b| v = v |b|); a group keeps its own
        weights = unit.l1[:, 0] + np.where(single, unit.group_weights, 0.0)[unit.block_of_row]
        self.kernel = GaussianPath(
            problem.X,
            np.ascontiguousarray(problem.y, dtype=np.float64),
            np.ascontiguousarray(problem.weights, dtype=np.float64),
            np.ascontiguousarray(problem.means(), dtype=np.float64),
            np.ascontiguousarray(problem.target_products()[:, 0]),
            np.ascontiguousarray(unit.row_order, dtype=np.intp),
            np.append(unit.block_starts, problem.n_features).astype(np.intp),
            weights,
            np.where(single, 0.0, unit.group_weights),
            gram_limit(problem.n_samples),  # (reset at each call)
            lambda: problem.block_lipschitz(unit),
            problem.centred_eigen,
            float(unit.ridge),
            bool(unit.positive),
            problem.fit_intercept,
            free_constraints(problem.X, problem.weights, problem.fit_intercept, unit.free_rows)
            if unit.free_rows.size
            else None,
            (
                5,  # Anderson memory: cd.solve's default
                cd.rank_cutoff(problem.n_samples, np.float64),
                *cd.MODEL_CONSTANTS,
            ),
        )
        self._state = None

    def __call__(self, problem, lam, state, *, tol=1e-4, max_iter=100, max_epochs=10_000, warn=True):
        """The :class:`~normpen.linear.problem.Solution` at strength ``lam`` (``tol``, ``max_iter``,
        ``max_epochs``, ``warn`` as for :func:`normpen.linear.solvers.cd.solve`)."""
        tol = check_tol(tol)
        max_iter = check_count(max_iter, "max_iter")
        max_epochs = check_count(max_epochs, "max_epochs")
        kernel = self.kernel
        warm = state is self._state
        quick = warm and kernel.n_epochs < _FEW_EPOCHS  # the last strength, without acceleration
        kernel.gram_limit = gram_limit(problem.n_samples, None if quick else tol)
        if not warm:
            kernel.start(np.ascontiguousarray(state.W[:, 0]), lam)
            self._state = state
        scale = problem.objective_at_zero()
        gap, threshold = kernel.solve(lam, tol, scale, problem.eps, max_iter, max_epochs)
        z, b = kernel.point()
        state.W[:, 0] = kernel.coef()
        state.b[0] = b
        state.z = z.copy()
        state.gradient = None
        return problem.solution(
            state,
            GapReport(kernel.primal, kernel.dual, gap),
            threshold,
            tol=tol,
            n_iter=kernel.n_iter,
            n_epochs=kernel.n_epochs,
            solver="covariance coordinate descent",
            work=f"{kernel.n_iter} iterations ({kernel.n_epochs} epochs, {kernel.n_gradients} gradients)",
            warn=warn,
        )
