r"""Covariance coordinate descent for least-squares paths with a coordinate-separable penalty.

The case glmnet's and adelie's "covariance" methods serve: the Quadratic datafit on a dense
float64 design, one output, and a penalty whose block form
(:class:`~normpen.linear.blocks.BlockPenalty`) has blocks of one coordinate: the lasso, weighted
lasso, elastic net, unpenalized coordinates, with ``positive=`` and sample weights, with or without
an intercept (eliminated by centring the Gram matrix). One compiled call solves a strength
(:class:`~normpen.linear.solvers._gaussian_path.GaussianPath`, whose docstring gives the algorithm:
strong-rule working sets, coordinate descent on their Gram matrix cached along the path, one full
gradient per check, the certificate of :meth:`~normpen.linear.problem.Problem.duality_gap` and the stop
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


def takes(problem, block):
    """Whether :class:`PathSolver` solves ``problem`` with the block penalty ``block`` (at any strength).

    Least squares with one output, blocks of one coordinate, and (when the problem holds data) a dense
    float64 numpy design. ``problem`` may be shape-only (no ``X``): then the data are not judged.
    """
    X = getattr(problem, "X", None)
    data_ok = X is None or (isinstance(X, np.ndarray) and X.dtype == np.float64)
    return (
        data_ok
        and isinstance(problem.datafit, Quadratic)
        and len(problem.coef_shape) == 1
        and block is not None
        and block.singletons
    )


class PathSolver:
    """Solves one strength at a time from the point the last solve left (a path's warm starts).

    ``unit`` is the penalty's :class:`~normpen.linear.blocks.BlockPenalty` at strength 1. A call with
    a :class:`~normpen.linear.problem.State` other than the one it last returned (a path's start, a
    restart) starts from that state's coefficients; the state is then updated in place.
    """

    def __init__(self, problem, unit):
        self.problem = problem
        rows = unit.row_order[unit.block_starts]  # the row of each block
        weights = np.empty(problem.n_features)
        weights[rows] = unit.group_weights
        weights += unit.l1[:, 0]
        lipschitz = np.empty(problem.n_features)
        lipschitz[rows] = problem.block_lipschitz(unit)
        free = unit.free_rows
        self.kernel = GaussianPath(
            problem.X,
            np.ascontiguousarray(problem.y, dtype=np.float64),
            np.ascontiguousarray(problem.weights, dtype=np.float64),
            np.ascontiguousarray(problem.means(), dtype=np.float64),
            np.ascontiguousarray(problem.target_products()[:, 0]),
            lipschitz,
            weights,
            float(unit.ridge),
            bool(unit.positive),
            problem.fit_intercept,
            free_constraints(problem.X, problem.weights, problem.fit_intercept, free) if free.size else None,
            (
                5,  # Anderson memory: cd.solve's default
                16 * problem.n_samples * problem.eps,  # cd._QuadraticModel's face rank cutoff
                cd._REFRESH_EPOCHS,
                cd._SETTLED_SIGNS,
                cd._DIRECT_GRAM_FACE,
                cd._FACE_ITERATIONS,
                cd._FACE_REDUCTION,
                cd._POLISH_MAX_SUPPORT,
                cd._FACE_COST,
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
        if state is not self._state:
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
            work=f"{kernel.n_iter} iterations ({kernel.n_epochs} epochs)",
            warn=warn,
        )
