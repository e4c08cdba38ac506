r"""Regularisation paths: solutions for a decreasing grid of :math:`\lambda`, and the registry of solvers.

``path(X, y, datafit, penalty, lams)`` solves :math:`\min F + P_\lambda` for
every :math:`\lambda` of the grid, from the largest down, each solve starting
from the previous solution (warm start), so that the working sets, the Gram
cache of the quadratic datafit and the intercept carry over. Without a grid
it uses the geometric one from :math:`\lambda_{\max}` (the smallest strength
that zeroes every penalized coefficient, computed from the gradient at zero
with the intercept fitted) down to ``eps`` times it.

Which solver runs is read from :data:`SOLVERS`: each entry says which
datafits and which penalties it takes, the penalties judged by what they
declare (their block-separable form, ``prox``, ``sign_invariant``), never
by their class. ``solver="auto"`` takes the first entry, in the order of
:data:`SOLVERS`, that takes the problem (and is not marked ``auto=False``).
Every solver returns :class:`~normpen.linear.problem.Solution` objects, and
the :class:`~normpen.linear.problem.Path` is built from them. Torch tensors
go to the solvers marked ``tensors=True`` (FISTA), on their device.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from normpen.linear._validation import check_count, check_flag, check_tol, decreasing_lams
from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.linear.datafits.hinge import Hinge
from normpen.linear.datafits.quadratic import Quadratic
from normpen.linear.datafits.squared_hinge import SquaredHinge
from normpen.linear.problem import Path, Problem, host_array
from normpen.linear.solvers import cd
from normpen.penalties.base import Penalty

__all__ = [
    "Path",
    "SOLVERS",
    "SolverEntry",
    "SolverDivergedError",
    "path",
    "lambda_max",
    "lambda_grid",
    "solvers_for",
]

_EPS64 = float(np.finfo(np.float64).eps)


class _Setup:
    """One problem and one penalty, with what every solver and :math:`\\lambda_{\\max}` share, built once.

    ``unit`` is the penalty's :class:`~normpen.linear.blocks.BlockPenalty` at
    strength 1 (``None`` when it has no block-separable form): the groups are
    parsed here and nowhere else. ``null_state`` (the solution at every
    :math:`\\lambda \\ge \\lambda_{\\max}`) is computed on first use.
    """

    def __init__(self, problem, penalty, positive):
        self.problem, self.penalty, self.positive = problem, penalty, positive
        try:
            self.unit = as_block_penalty(_unit(penalty), problem.coef_shape, positive)
        except TypeError:
            self.unit = None

    @cached_property
    def null_state(self):
        """The state of :func:`_null_state` (the zero state for a penalty without a block form)."""
        if self.unit is None:
            return self.problem.zero_state()
        return _null_state(self.problem, self.unit)

    def start(self, init=None):
        """Where a path starts: ``init = (coef, intercept)`` when given; else the null state when
        :meth:`lambda_max` has computed it already, else :math:`W = 0` (a given grid then never fits the
        unpenalized columns separately: its first solve does). Tensor data start at :math:`W = 0` on
        their device (FISTA fits the unpenalized columns with the others)."""
        problem = self.problem
        if not problem.tensor:
            if init is not None:
                return problem.state(*init)
            computed = self.__dict__.get("null_state")  # cached_property's value
            return problem.zero_state() if computed is None else computed.copy()
        state = problem.zero_state()
        if init is not None:
            coef, intercept = init
            state.W = coef
            state.b = state.b if intercept is None else intercept
        return state

    def restart(self):
        """A fresh null state, where a diverged solve restarts (:math:`W = 0` for tensor data)."""
        return self.problem.zero_state() if self.problem.tensor else self.null_state.copy()

    def lambda_max(self):
        r""":math:`\lambda_{\max}` (``inf`` for a penalty that never zeroes everything).

        For tensor data the gradient at zero is computed on their device and
        only its :math:`p \times m` entries come to the host, for the dual norm.
        """
        problem = self.problem
        if self.unit is None:
            grad0 = host_array(problem.gradient_at_zero())
            return float(self.penalty.with_lam(1.0).lambda_max(grad0.reshape(problem.coef_shape)))
        if not np.any(self.unit.penalized):
            return math.inf
        if not problem.tensor:
            _, grad = problem.full_gradient(self.null_state)
        elif self.unit.free_rows.size:
            raise ValueError(
                "lambda_max of torch tensors is computed with every coefficient penalized; this penalty "
                "leaves some unpenalized (zero weights): give the strengths with lams=, or pass "
                "X.cpu().numpy() and y.cpu().numpy()"
            )
        else:
            grad = host_array(problem.gradient_at_zero()).astype(np.float64)
        return self.unit.zero_scale(-grad)

    @property
    def pure_ridge(self):
        r"""The penalty is :math:`\tfrac\lambda2\|W\|^2` alone (a ridge part and no L1 or group term)."""
        return self.unit is not None and self.unit.ridge > 0 and not np.any(self.unit.penalized)


@dataclass(frozen=True)
class SolverEntry:
    """A solver as :func:`path` sees it.

    Attributes
    ----------
    name : str
        The ``solver=`` value.
    takes : str
        What it solves, in words (error messages and docs).
    datafit_ok : callable
        ``datafit -> bool``.
    penalty_ok : callable
        ``_Setup -> bool``, reading the penalty's declarations (its block form,
        ``prox``, ``sign_invariant``) and ``positive``.
    solve_grid : callable
        ``(setup, lams, options) -> Path``, built from one Solution per strength
        of the decreasing ``lams``, warm-started as the solver can; ``options``
        holds ``tol``, ``max_iter``, ``progress``, ``init`` and the solver's own.
    auto : bool
        Whether ``solver="auto"`` may pick it.
    tensors : bool
        Whether it runs on torch tensors (on their device); ``solver="auto"``
        picks among these for tensor data, and the others refuse it.
    """

    name: str
    takes: str
    datafit_ok: Callable
    penalty_ok: Callable
    solve_grid: Callable
    auto: bool = True
    tensors: bool = False


def _differentiable(datafit):
    return datafit.curvature is not None


def _has_prox(setup):
    """FISTA's needs: ``prox``, ``value``, ``with_lam``; with ``positive``, invariance under sign flips."""
    penalty = setup.penalty
    has_prox = all(callable(getattr(penalty, name, None)) for name in ("prox", "value", "with_lam"))
    return has_prox and (not setup.positive or bool(getattr(penalty, "sign_invariant", False)))


def _cd_grid(setup, lams, options):
    solutions = _warm_started(setup, cd.PathSolver(setup.unit), float, lams, options)
    return Path.from_solutions(lams, solutions)


def _covariance_takes(setup):
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers import gaussian_path

    return gaussian_path.takes(setup.problem, setup.unit)


def _covariance_grid(setup, lams, options):
    """Covariance coordinate descent (:mod:`~normpen.linear.solvers.gaussian_path`); options of ``"cd"``
    alone (``ws_start``, ``anderson``, ``screening``), and wide grouped designs at tight tolerances
    (:func:`~normpen.linear.solvers.gaussian_path.hands_to_cd`), send the path to :func:`_cd_grid`."""
    from normpen.linear.solvers import gaussian_path

    cd_only = set(options) - {"tol", "max_iter", "max_epochs", "progress", "init"}
    if cd_only or gaussian_path.hands_to_cd(setup.problem, setup.unit, check_tol(options["tol"])):
        return _cd_grid(setup, lams, options)
    solve = gaussian_path.PathSolver(setup.problem, setup.unit)
    solutions = _warm_started(setup, solve, float, lams, options)
    return Path.from_solutions(lams, solutions)


def _lbfgs_grid(setup, lams, options):
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers import lbfgs

    solutions = _warm_started(setup, lbfgs.solve, setup.unit.scaled, lams, options)
    return Path.from_solutions(lams, solutions)


def _fista_grid(setup, lams, options):
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers import fista

    options = {**options, "positive": setup.positive}
    solutions = _warm_started(setup, fista.solve, setup.penalty.with_lam, lams, options)
    return Path.from_solutions(lams, [_on_host(solution) for solution in solutions])


def _on_host(solution):
    """``solution`` with numpy coefficients and intercept (those of FISTA on tensors are on their device)."""
    return dataclasses.replace(
        solution, coef=host_array(solution.coef), intercept=host_array(solution.intercept)
    )


def _svm_grid(setup, lams, options):
    r"""One :func:`~normpen.linear.solvers.svm.solve` per strength, each from the previous :math:`\alpha`.

    In liblinear's scale :math:`\alpha \le a_i/\lambda`, so the previous solution
    is carried over as :math:`\alpha\,\lambda_{\text{prev}}/\lambda`.
    """
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers import svm

    options = {key: value for key, value in options.items() if key not in ("progress", "init")}
    solutions, previous = [], None
    for lam in lams.tolist():
        init = None if previous is None else previous[0].dual_coef * previous[1] / lam
        solution = svm.solve(setup.problem, lam, dual_init=init, warn=False, **options)
        solutions.append(solution)
        previous = (solution, lam)
    return Path.from_solutions(lams, solutions)


def _ridge_grid(setup, lams, options):
    """The closed form at every strength: a :class:`~normpen.linear.solvers.ridge.RidgePath`."""
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers import ridge

    return ridge.solve_path(setup.problem, lams)


#: The solvers :func:`path` knows, in the order ``solver="auto"`` tries them.
SOLVERS = {
    entry.name: entry
    for entry in (
        SolverEntry(
            "lbfgs",
            "differentiable datafits with the L2 penalty alone, without positive=True (numpy or scipy.sparse "
            "data; quasi-Newton steps on the whole smooth objective)",
            _differentiable,
            lambda setup: setup.pure_ridge and not setup.positive,
            _lbfgs_grid,
        ),
        SolverEntry(
            "covariance",
            "the Quadratic datafit with one output and a penalty of single coordinates (L1, weighted L1, "
            "elastic net, unpenalized coordinates), or groups without an L1 part (group lasso) while the "
            "features fit its Gram budget, on a dense float64 numpy design (covariance block coordinate "
            "descent: each strength one compiled call)",
            lambda datafit: isinstance(datafit, Quadratic),
            _covariance_takes,
            _covariance_grid,
        ),
        SolverEntry(
            "cd",
            "differentiable datafits with a block-separable penalty (L1, elastic net, L2, group and "
            "sparse-group lasso)",
            _differentiable,
            lambda setup: setup.unit is not None,
            _cd_grid,
        ),
        SolverEntry(
            "fista",
            "differentiable datafits with any penalty that has a prox (with positive=True: one unchanged "
            "by sign flips)",
            _differentiable,
            _has_prox,
            _fista_grid,
            tensors=True,
        ),
        SolverEntry(
            "svm",
            "the Hinge and SquaredHinge datafits with the L2 penalty alone, without positive=True",
            lambda datafit: isinstance(datafit, Hinge | SquaredHinge),
            lambda setup: setup.pure_ridge and not setup.positive,
            _svm_grid,
        ),
        SolverEntry(
            "ridge",
            "the Quadratic and MultitaskQuadratic datafits with the L2 penalty alone, without "
            "positive=True (closed form from one SVD: chosen by name only, its cost does not fall "
            "with sparsity)",
            lambda datafit: isinstance(datafit, Quadratic),
            lambda setup: setup.pure_ridge and not setup.positive,
            _ridge_grid,
            auto=False,
        ),
    )
}


def solvers_for(datafit, penalty, coef_shape, positive=False):
    """The names of the solvers of :data:`SOLVERS` that take this datafit and penalty."""
    setup = _Setup(_ShapeOnly(datafit, coef_shape), penalty, positive)
    return [entry.name for entry in SOLVERS.values() if entry.datafit_ok(datafit) and entry.penalty_ok(setup)]


@dataclass(frozen=True)
class _ShapeOnly:
    """What :class:`_Setup` reads to judge a penalty, without data."""

    datafit: object
    coef_shape: tuple


def lambda_max(X, y, datafit, penalty, *, sample_weight=None, fit_intercept=True, positive=False):
    r""":math:`\lambda_{\max}`, the smallest strength of ``penalty`` that zeroes every penalized coefficient.

    ``X`` and ``y`` may be torch tensors: the gradient at zero is then computed
    on their device (a penalty with unpenalized coefficients needs numpy data).

    It is :math:`\lambda\,\max_g t_g(-\nabla F(0))` with the block dual norms
    of :class:`~normpen.linear.blocks.BlockPenalty` (for the lasso,
    :math:`\|X^\top(y - \bar y)\|_\infty / n`, scikit-learn's ``alpha_max``);
    for other penalties it is ``penalty.lambda_max`` of the gradient at zero.
    """
    _check_penalty(penalty)
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    return _Setup(problem, penalty, check_flag(positive, "positive")).lambda_max()


def _check_penalty(penalty):
    if not isinstance(penalty, (Penalty, BlockPenalty)):
        raise TypeError(
            "penalty must be a normpen penalty object such as normpen.L1(1.0) or normpen.ElasticNet(1.0, "
            f"0.5) (its strength is replaced along the path), got {penalty!r}"
        )


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
    fitted = cd.solve(sub, unpenalized, sub.zero_state(), tol=1e-12, max_iter=100, warn=False)
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
    X : array-like, scipy.sparse matrix or torch tensor of shape (n, p)
        Torch tensors (any device, float32 or float64) are solved by FISTA on
        their device, the only solver of :data:`SOLVERS` with ``tensors=True``.
    y : array-like or torch tensor
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
    solver : {"auto", "lbfgs", "covariance", "cd", "fista", "svm", "ridge"}
        A name of :data:`SOLVERS`; ``"auto"`` takes the first that takes the
        datafit and penalty: L-BFGS for a differentiable datafit with the L2
        penalty alone, covariance coordinate descent for least squares with
        one output, a penalty of single coordinates (or groups without an L1
        part, when the features fit its Gram budget) and a dense float64 design
        (options of ``"cd"`` alone send it to ``"cd"``), coordinate descent
        for block-separable penalties,
        FISTA for the other penalties with a prox, the SVM solver for the
        hinge losses with L2 (``"ridge"``, the closed form, only by name);
        FISTA for torch tensors, which the others refuse.
    tol, max_iter
        Per-:math:`\lambda` tolerance on the relative duality gap and iteration
        cap (the SVM solver's stopping rule: :func:`~normpen.linear.solvers.svm.linear_svm`;
        the closed-form ridge ignores both).
    progress : bool
        Show a rich progress bar (coordinate descent and FISTA).
    init : tuple, optional
        ``(coef, intercept)`` to start the first strength from (an estimator's
        ``warm_start``) instead of the point where the penalized coefficients
        are zero; a start that diverges is retried from that point (coordinate
        descent and FISTA; for tensor data, tensors or numpy arrays, and an
        intercept of ``None`` keeps the one fitted at zero).
    **solver_options
        Passed to the solver (``ws_start``, ``anderson``, ``screening``,
        ``max_epochs`` for coordinate descent; ``check_every`` for FISTA;
        ``shrinking``, ``random_state`` for the SVM).

    Returns
    -------
    Path
        Numpy arrays, coefficients and intercepts in ``X``'s dtype, also for
        tensor data (a host summary of ``L x p`` numbers: the solves stay on the
        device, their solutions come to the host once each).
        One ``ConvergenceWarning`` lists the strengths that missed ``tol``.
        ``lambda_max`` is ``nan`` when ``lams`` is given (it is then not computed).
    """
    _check_penalty(penalty)
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    setup = _Setup(problem, penalty, check_flag(positive, "positive"))
    entry = _choose_solver(solver, setup)
    if lams is None:
        lam_max = setup.lambda_max()
        lams = lambda_grid(lam_max, n_lams, eps)
    else:
        lam_max, lams = math.nan, decreasing_lams(lams)
    options = {**solver_options, "tol": tol, "max_iter": max_iter, "progress": progress, "init": init}
    result = entry.solve_grid(setup, lams, options)
    missed = ~result.converged
    if missed.any():
        largest = np.max(result.dual_gaps / result.gap_scale)
        warnings.warn(
            f"{np.count_nonzero(missed)} of {len(lams)} strengths did not reach tol={tol} (largest relative "
            f"gap {largest:.2e}); increase {_spent_budget(result, missed, max_iter)} or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return dataclasses.replace(result, lambda_max=lam_max)


def _spent_budget(result, missed, max_iter):
    """The option whose budget the strengths that missed their tolerance used up: ``max_iter`` when one
    ran all its rounds, else ``max_epochs`` (coordinate descent's epochs, spent inside fewer rounds)."""
    if np.any(result.n_iters[missed] >= max_iter):
        return "max_iter"
    return "max_epochs (coordinate descent's epochs in all)"


def _warm_started(setup, solve, at_strength, lams, options):
    """Solutions along ``lams``, each solve starting where the previous one ended (CD, FISTA)."""
    problem = setup.problem
    progress, init = options.pop("progress"), options.pop("init")
    options = {**options, "warn": False}
    state = setup.start(init)
    solutions = []
    with _progress(progress, len(lams)) as advance:
        for lam in lams.tolist():
            sol, state = _solve_or_restart(solve, setup, at_strength, lam, state, options)
            solutions.append(sol)
            advance()
    worst = max(solutions, key=lambda s: problem.certifiable_tol(s.objective))
    problem.warn_if_uncertifiable(options["tol"], worst.objective, max(s.dual_gap for s in solutions))
    return solutions


def _solve_or_restart(solve, setup, at_strength, lam, state, options):
    """The solution at ``lam`` and the state to warm-start the next; a diverged solve restarts from the
    null state, once."""
    problem = setup.problem
    sol = solve(problem, at_strength(lam), state, **options)
    if not _diverged(sol, problem):
        return sol, state
    state = setup.restart()
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
    coef, intercept = host_array(sol.coef), host_array(sol.intercept)
    finite = math.isfinite(sol.objective) and np.isfinite(coef).all() and np.isfinite(intercept).all()
    return not finite or sol.objective > 2 * scale + 64 * _EPS64 * abs(scale)


def _choose_solver(solver, setup):
    """The :class:`SolverEntry` to run; errors name what fits."""
    if isinstance(setup.penalty, BlockPenalty):
        raise TypeError(
            "give path a penalty object with a strength (L1, GroupLasso, ...), not a BlockPenalty"
        )
    if solver != "auto" and solver not in SOLVERS:
        raise ValueError(f"solver must be 'auto' or one of {sorted(SOLVERS)}, got {solver!r}")
    problem = setup.problem
    datafit = problem.datafit
    if solver == "auto":
        wanted = [entry for entry in SOLVERS.values() if entry.auto and entry.tensors >= problem.tensor]
    else:
        wanted = [SOLVERS[solver]]
        if not wanted[0].tensors:
            problem.require_host_arrays(f"path(solver={solver!r})")
    for entry in wanted:
        if entry.datafit_ok(datafit) and entry.penalty_ok(setup):
            return entry
    what = (
        f"{type(datafit).__name__} with {type(setup.penalty).__name__}"
        + (" and positive=True" if setup.positive else "")
        + (" on torch tensors" if problem.tensor else "")
    )
    raise ValueError(
        f"no solver takes {what}: " + "; ".join(f"{entry.name} takes {entry.takes}" for entry in wanted)
    )


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
