r"""Regularisation paths: solutions for a decreasing grid of :math:`\lambda`, warm-started.

``path(X, y, datafit, penalty, lams)`` solves :math:`\min F + P_\lambda` for
every :math:`\lambda` of the grid, from the largest down, each solve starting
from the previous solution (warm start), so that the working sets, the Gram
cache of the quadratic datafit and the intercept carry over. Without a grid
it uses the geometric one from :math:`\lambda_{\max}` (the smallest strength
that zeroes every penalized coefficient, computed from the gradient at zero
with the intercept fitted) down to ``eps`` times it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from normpen.linear._validation import check_count, check_flag, decreasing_lams
from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.problem import Problem
from normpen.linear.solvers.cd import solve as cd_solve
from normpen.linear.solvers.fista import solve as fista_solve
from normpen.penalties.base import Penalty

__all__ = ["Path", "SolverDivergedError", "path", "lambda_max", "lambda_grid"]


@dataclass(frozen=True)
class Path:
    r"""Solutions along a grid of strengths (``L`` of them), in the order of ``lams``.

    Attributes
    ----------
    lams : ndarray of shape (L,)
        Strengths, decreasing.
    coefs : ndarray of shape (L, p) or (L, p, m)
        Coefficients at every strength.
    intercepts : ndarray of shape (L,) or (L, m)
        Intercepts (zeros without one).
    dual_gaps : ndarray of shape (L,)
        Duality gap reached at every strength (absolute).
    gap_scale : float
        Objective at :math:`W = 0`; ``dual_gaps / gap_scale`` are the relative gaps.
    objectives : ndarray of shape (L,)
        Primal objective at every strength.
    n_iters : ndarray of shape (L,)
        Outer iterations spent at every strength.
    converged : ndarray of bool, shape (L,)
        Whether each solve met the tolerance.
    lambda_max : float
        :math:`\lambda_{\max}` of the data (``inf`` for a penalty that never zeroes everything).
    """

    lams: np.ndarray
    coefs: np.ndarray
    intercepts: np.ndarray
    dual_gaps: np.ndarray
    gap_scale: float
    objectives: np.ndarray
    n_iters: np.ndarray
    converged: np.ndarray
    lambda_max: float

    def plot(self, ax=None):
        """Coefficient paths against :math:`\\lambda/\\lambda_{\\max}` (log scale); returns the Figure."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot()
        fig = ax.figure
        scale = self.lambda_max if math.isfinite(self.lambda_max) and self.lambda_max > 0 else 1.0
        x = self.lams / scale
        ax.plot(x, self.coefs.reshape(len(self.lams), -1), linewidth=1)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(r"$\lambda / \lambda_{\max}$" if scale != 1.0 else r"$\lambda$")
        ax.set_ylabel("coefficient")
        ax.set_title(f"regularisation path ({len(self.lams)} strengths)")
        return fig


def lambda_max(X, y, datafit, penalty, *, sample_weight=None, fit_intercept=True, positive=False):
    r""":math:`\lambda_{\max}`, the smallest strength of ``penalty`` that zeroes every penalized coefficient.

    It is :math:`\lambda\,\max_g t_g(-\nabla F(0))` with the block dual norms
    of :class:`~normpen.linear.blocks.BlockPenalty` (for the lasso,
    :math:`\|X^\top(y - \bar y)\|_\infty / n`, scikit-learn's ``alpha_max``);
    for other penalties it is ``penalty.lambda_max`` of the gradient at zero.
    """
    _check_penalty(penalty)
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    return _lambda_max(problem, penalty, check_flag(positive, "positive"))


def _check_penalty(penalty):
    if not isinstance(penalty, (Penalty, BlockPenalty)):
        raise TypeError(
            "penalty must be a normpen penalty object such as normpen.L1(1.0) or normpen.ElasticNet(1.0, "
            f"0.5) (its strength is replaced along the path), got {penalty!r}"
        )


def _lambda_max(problem, penalty, positive):
    try:
        unit = as_block_penalty(_unit(penalty), problem.coef_shape, positive)
    except TypeError:
        grad0 = problem.gradient_at_zero()
        return float(penalty.with_lam(1.0).lambda_max(grad0.reshape(problem.coef_shape)))
    _, grad = problem.full_gradient(_null_state(problem, unit))
    return unit.zero_scale(-grad)


def _null_state(problem, block):
    r"""The point where every penalized block is zero and the unpenalized ones are optimal.

    It is the solution at every :math:`\lambda \ge \lambda_{\max}`, so
    :math:`\lambda_{\max}` is read from its gradient. Without unpenalized
    coefficients it is :math:`W = 0` with the intercept fitted; otherwise the
    unpenalized columns are fitted first (coordinate descent without penalty
    on those columns alone).
    """
    state = problem.zero_state()
    free = block.free_rows
    if not free.size:
        return state
    sub = Problem(problem.X[:, free], problem.y, problem.datafit, problem.weights, problem.fit_intercept)
    unpenalized = BlockPenalty.separable(
        np.zeros((free.size, problem.n_outputs)), block.ridge, block.positive
    )
    fitted = cd_solve(sub, unpenalized, sub.zero_state(), tol=1e-12, max_iter=100, warn=False)
    W = np.zeros((problem.n_features, problem.n_outputs))
    W[free] = np.asarray(fitted.coef, dtype=np.float64).reshape(free.size, problem.n_outputs)
    return problem.state(W.reshape(problem.coef_shape), fitted.intercept)


def _unit(penalty):
    """The penalty at strength 1 (BlockPenalty objects carry absolute weights and are kept as they are)."""
    return penalty if isinstance(penalty, BlockPenalty) else penalty.with_lam(1.0)


def lambda_grid(lam_max, n_lams=100, eps=1e-3):
    r"""Geometric grid of ``n_lams`` strengths from ``lam_max`` down to ``eps * lam_max``."""
    n_lams = check_count(n_lams, "n_lams")
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), the ratio lambda_min / lambda_max; got {eps!r}")
    if not (math.isfinite(lam_max) and lam_max > 0):
        raise ValueError(
            f"lambda_max is {lam_max}: this penalty never zeroes the solution (or the data are constant), "
            "so give the grid explicitly with lams="
        )
    return lam_max * np.geomspace(1.0, eps, n_lams)


def path(
    X,
    y,
    datafit,
    penalty,
    lams=None,
    *,
    n_lams=100,
    eps=1e-3,
    sample_weight=None,
    fit_intercept=True,
    positive=False,
    solver="auto",
    tol=1e-4,
    max_iter=100,
    progress=False,
    init=None,
    **solver_options,
):
    r"""Warm-started solutions of :math:`\min_{W,b} F(W, b) + P_\lambda(W)` along a grid of :math:`\lambda`.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like
        Target in the datafit's form.
    datafit : Datafit
    penalty : penalty object
        Its structure (weights, groups, ``l1_ratio``) is kept and its strength
        replaced by each :math:`\lambda` (``penalty.with_lam``).
    lams : array-like, optional
        Strengths; sorted decreasing. Default: :func:`lambda_grid` of
        ``n_lams`` values from :math:`\lambda_{\max}` to ``eps`` times it.
    sample_weight, fit_intercept, positive
        As for :func:`~normpen.linear.solvers.cd.coordinate_descent`.
    solver : {"auto", "cd", "fista"}
        ``"auto"`` takes coordinate descent for the penalties it supports and
        FISTA for the others.
    tol, max_iter
        Per-:math:`\lambda` tolerance on the relative duality gap and iteration cap.
    progress : bool
        Show a rich progress bar.
    init : tuple, optional
        ``(coef, intercept)`` to start the first strength from (an estimator's
        ``warm_start``) instead of the point where the penalized coefficients
        are zero; a start that diverges is retried from that point.
    **solver_options
        Passed to the solver (``ws_start``, ``anderson``, ``screening``,
        ``max_epochs`` for coordinate descent).

    Returns
    -------
    Path
        One ``ConvergenceWarning`` lists the strengths that missed ``tol``.
    """
    _check_penalty(penalty)
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    use_cd = _choose_solver(solver, penalty, problem, check_flag(positive, "positive"))
    lam_max = _lambda_max(problem, penalty, positive)
    lams = lambda_grid(lam_max, n_lams, eps) if lams is None else decreasing_lams(lams)
    if use_cd:
        # the structure is built once (groups parsed once) and scaled to each strength
        unit = as_block_penalty(_unit(penalty), problem.coef_shape, positive)
        null_state = _null_state(problem, unit)
        solve, at_strength, options = cd_solve, unit.scaled, solver_options
    else:
        null_state = problem.zero_state()
        solve, at_strength, options = fista_solve, penalty.with_lam, {**solver_options, "positive": positive}
    options = {**options, "tol": tol, "max_iter": max_iter, "warn": False}
    state = null_state.copy() if init is None else problem.state(*init)
    results = []
    with _progress(progress, len(lams)) as advance:
        for lam in lams.tolist():
            sol, state = _solve_or_restart(solve, problem, at_strength, lam, state, null_state, options)
            results.append(sol)
            advance()
    worst = max(results, key=lambda s: problem.certifiable_tol(s.objective))
    problem.warn_if_uncertifiable(tol, worst.objective, max(s.dual_gap for s in results))
    missed = [float(lam) for lam, sol in zip(lams, results, strict=True) if not sol.converged]
    if missed:
        warnings.warn(
            f"{len(missed)} of {len(lams)} strengths did not reach tol={tol} (largest relative gap "
            f"{max(s.dual_gap / s.gap_scale for s in results):.2e}); increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return Path(
        lams=lams,
        coefs=np.stack([s.coef for s in results]),
        intercepts=np.array([s.intercept for s in results]),
        dual_gaps=np.array([s.dual_gap for s in results]),
        gap_scale=problem.objective_at_zero(),
        objectives=np.array([s.objective for s in results]),
        n_iters=np.array([s.n_iter for s in results]),
        converged=np.array([s.converged for s in results]),
        lambda_max=lam_max,
    )


def _solve_or_restart(solve, problem, at_strength, lam, state, null_state, options):
    """The solution at ``lam`` and the state to warm-start the next; a diverged solve restarts cold, once."""
    sol = solve(problem, at_strength(lam), state, **options)
    if not _diverged(sol, problem):
        return sol, state
    state = null_state.copy()
    sol = solve(problem, at_strength(lam), state, **options)
    if _diverged(sol, problem):
        raise SolverDivergedError(
            f"the solver diverged at lam={lam:.6g}: objective {sol.objective:.6g} is above the objective at "
            f"zero {problem.objective_at_zero():.6g} even from a cold start; the design is probably "
            "ill-conditioned (collinear columns, extreme scales): drop or merge collinear columns, "
            "standardise X, or raise the smallest strength"
        )
    return sol, state


class SolverDivergedError(ArithmeticError):
    """A solve ended worse than the zero solution (or not finite), even when restarted from it."""


def _diverged(sol, problem):
    r"""True when a solution is not finite or its objective exceeds :math:`P_0 = \min_b F(0, b)`.

    Every penalty vanishes at zero, so the optimum is at most :math:`P_0`; a
    solver may stop above the optimum by its tolerance, :math:`\text{tol}\cdot P_0`
    at most, so an objective above :math:`P_0(1 + \text{tol}) \le 2P_0` means it
    moved away from the optimum, not towards it. The test allows :math:`P_0`
    (all of the tolerance range) plus 64 ulps.
    """
    scale = problem.objective_at_zero()
    finite = all(np.all(np.isfinite(a)) for a in (sol.coef, sol.intercept, sol.objective))
    return not finite or sol.objective > 2 * scale + 64 * np.finfo(np.float64).eps * abs(scale)


def _scaled(penalty, lam):
    if isinstance(penalty, BlockPenalty):
        raise TypeError(
            "give path a penalty object with a strength (L1, GroupLasso, ...), not a BlockPenalty"
        )
    return penalty.with_lam(float(lam))


def _choose_solver(solver, penalty, problem, positive):
    """True for coordinate descent, False for FISTA; errors name what fits."""
    if solver not in ("auto", "cd", "fista"):
        raise ValueError(f"solver must be 'auto', 'cd' or 'fista', got {solver!r}")
    if problem.datafit.curvature is None:
        raise ValueError(
            f"{type(problem.datafit).__name__} is not differentiable: use normpen.linear.solvers.svm "
            "or the SquaredHinge datafit"
        )
    if solver == "fista":
        return False
    try:
        as_block_penalty(_scaled(penalty, 1.0), problem.coef_shape, positive)
    except TypeError:
        if solver == "cd":
            raise
        return False
    return True


class _progress:
    """A rich progress bar over the strengths, or nothing."""

    def __init__(self, show, total):
        self.show, self.total = show, total

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.__enter__()
        task = self._bar.add_task("path", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc):
        if self.show:
            self._bar.__exit__(*exc)
        return False
