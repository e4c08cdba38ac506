r"""Accelerated proximal gradient (FISTA) with adaptive restart, for any penalty with a prox.

Solves :math:`\min_{W,b} F(XW + b) + P(W)` with the iteration of Beck and
Teboulle (2009),

.. math::

    x_{k+1} = \operatorname{prox}_{P/L}\big(v_k - \nabla F(v_k)/L\big),\quad
    t_{k+1} = \tfrac12\big(1 + \sqrt{1 + 4t_k^2}\big),\quad
    v_{k+1} = x_{k+1} + \tfrac{t_k - 1}{t_{k+1}}(x_{k+1} - x_k),

the intercept taking plain gradient steps inside the same iteration, and the
gradient restart of O'Donoghue and Candès (2015): the momentum is dropped
whenever :math:`\langle v_k - x_{k+1}, x_{k+1} - x_k\rangle > 0`, which
restores linear convergence on strongly convex problems. The step is
:math:`1/L` with :math:`L = c\,\|A^{1/2}[X, 1]\|_2^2` from the power method.

**What it needs from a penalty**: ``prox`` and ``value`` (the kernels
``_prox``/``_value`` of a :class:`~normpen.penalties.base.Penalty`, so that no
check runs per iteration). For the duality gap it also uses the block dual
norm (L1, elastic net, L2, group and sparse-group lasso, through
:func:`~normpen.linear.blocks.as_block_penalty`) or ``dual_norm`` of any other
norm penalty (spectral, nuclear). A penalty with neither (e.g. anchored L2)
gets no certificate: the solve then stops when an iteration moves the point
by less than ``tol`` relative to its norm, and ``dual_gap`` is ``nan``.

**Positivity** (``positive=True``) adds the indicator of :math:`W \ge 0` to
the penalty. For a convex :math:`P` invariant under flipping the sign of one
coordinate (``sign_invariant``: L1 weighted or not, L2, elastic net, group and
sparse-group lasso, max-norm),

.. math:: \operatorname{prox}_{sP + \iota_{\ge 0}}(x) = \operatorname{prox}_{sP}(x_+),
          \qquad x_+ = \max(x, 0).

*Proof.* Write :math:`x = x_+ - x_-` with :math:`x_\pm \ge 0`,
:math:`\langle x_+, x_-\rangle = 0`. For :math:`z \ge 0`,
:math:`\tfrac12\|z - x\|^2 = \tfrac12\|z - x_+\|^2 + \langle z, x_-\rangle + \tfrac12\|x_-\|^2`.
Let :math:`z^* = \operatorname{prox}_{sP}(x_+)`, the unique minimiser of
:math:`\tfrac12\|z - x_+\|^2 + sP(z)` over all :math:`z`. Flipping the sign
of :math:`z_i` leaves :math:`P` unchanged and does not increase
:math:`(z_i - x_{+,i})^2` when the new sign is that of :math:`x_{+,i} \ge 0`,
strictly decreasing it when :math:`x_{+,i} > 0`; where :math:`x_{+,i} = 0`
the flip maps the objective onto itself, so uniqueness gives :math:`z^*_i = 0`.
Hence :math:`z^* \ge 0` and :math:`\langle z^*, x_-\rangle = 0` (it vanishes where
:math:`x_- > 0`), so for every :math:`z \ge 0` the objective is at least
:math:`\tfrac12\|z - x_+\|^2 + sP(z) + \tfrac12\|x_-\|^2 \ge` its value at
:math:`z^*`. :math:`\square` Other penalties (spectral, nuclear, anchored L2:
a sign flip of one entry changes them) are refused with an error. The duality
gap then uses the block dual norm on the positive part, as coordinate descent
does.

Written once against the array API: ``X`` and ``y`` may be numpy arrays
(``X`` also scipy.sparse) or torch tensors on any device; the iterations
never leave the device, and the certificate, every ``check_every``
iterations, moves only the :math:`p \times m` gradient to the host.
"""

from __future__ import annotations

import math
import warnings

import array_api_compat
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from normpen._array import namespace
from normpen.linear._validation import check_count, check_tol
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits.base import squared_spectral_norm
from normpen.linear.problem import (
    GapReport,
    Problem,
    Solution,
    dual_objective,
    free_constraints,
    host_array,
    penalty_dual_terms,
    project_free,
)
from normpen.penalties.base import Penalty

__all__ = ["fista", "solve"]


def fista(
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
    max_iter=10_000,
    check_every=10,
):
    r"""Minimise :math:`F(W, b) + P(W)` (subject to :math:`W \ge 0` with ``positive``) by FISTA with restart.

    Parameters
    ----------
    X : array-like, scipy.sparse matrix or torch tensor of shape (n, p)
    y : array-like or torch tensor
        Target in the datafit's form (:meth:`Datafit.encode_target`).
    datafit : Datafit
        A differentiable datafit.
    penalty : object with ``prox`` and ``value``
        Any normpen penalty.
    sample_weight : array-like, optional
    fit_intercept : bool, default True
    positive : bool, default False
        Constrain the coefficients to be nonnegative (penalties invariant under
        sign flips only; see the module docstring).
    coef_init, intercept_init : optional
        Warm start (arrays of the same kind as ``X``).
    tol : float, default 1e-4
        Stop when the duality gap is at most ``tol`` times the objective at
        :math:`W = 0`.
    max_iter : int, default 10000
    check_every : int, default 10
        Iterations between two duality-gap evaluations.

    Returns
    -------
    Solution
        Coefficients and intercept of the kind of ``X`` (numpy for
        scipy.sparse), the gap reached and the iteration count.
    """
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    if problem.tensor:
        W = _zeros(X, problem.coef_shape) if coef_init is None else coef_init
        b = (
            _zeros(X, problem.coef_shape[1:])
            if intercept_init is None or not fit_intercept
            else intercept_init
        )
        return _run(problem, penalty, W, b, tol, max_iter, check_every, warn=True, positive=positive)
    return solve(
        problem,
        penalty,
        problem.state(coef_init, intercept_init),
        tol=tol,
        max_iter=max_iter,
        check_every=check_every,
        positive=positive,
    )


def solve(problem, penalty, state, *, tol=1e-4, max_iter=10_000, check_every=10, warn=True, positive=False):
    """FISTA on a :class:`~normpen.linear.problem.Problem` from ``state`` (updated in place).

    For numpy and scipy.sparse data the state is float64 numpy; for tensor data
    its ``W`` and ``b`` are taken as tensors (or host arrays) and left as tensors
    on ``X``'s device in ``X``'s dtype, so that a path's warm starts never leave
    the device.
    """
    W, b = _start(problem, state)
    solution = _run(problem, penalty, W, b, tol, max_iter, check_every, warn, positive)
    _moved_to(problem, state, solution)
    return solution


def _start(problem, state):
    """``(W, b)`` of ``state`` as ``X``: ``W`` of ``coef_shape``, ``b`` of ``(m,)`` or ``()``."""
    if problem.tensor:
        xp, device = namespace(problem.X), array_api_compat.device(problem.X)
        W = xp.reshape(xp.asarray(state.W, dtype=problem.X.dtype, device=device), problem.coef_shape)
        b = xp.reshape(xp.asarray(state.b, dtype=problem.X.dtype, device=device), (problem.n_outputs,))
        if not problem.fit_intercept:
            b = b * 0
        return W, (b if problem.datafit.multi_output else b[0])
    dtype = problem.X.dtype
    W = state.W.reshape(problem.coef_shape).astype(dtype)
    return W, (state.b.astype(dtype) if problem.datafit.multi_output else np.asarray(state.b[0], dtype=dtype))


def _moved_to(problem, state, solution):
    """Put ``state`` at ``solution`` (tensors on the device for tensor data, float64 numpy otherwise)."""
    if problem.tensor:
        xp, device = namespace(problem.X), array_api_compat.device(problem.X)
        state.W = xp.reshape(solution.coef, (problem.n_features, problem.n_outputs))
        b = xp.asarray(solution.intercept, dtype=problem.X.dtype, device=device)
        state.b = xp.reshape(b, (problem.n_outputs,))
        state.z = problem.natural(problem.X @ state.W + state.b)
    else:
        state.W = np.asarray(solution.coef, dtype=np.float64).reshape(state.W.shape)
        state.b = np.atleast_1d(np.asarray(solution.intercept, dtype=np.float64)).copy()
        state.z = problem.predictor(state.W, state.b)
    state.gradient = None


def _zeros(X, shape):
    """Zeros of ``shape`` of the kind, dtype and device of the tensor ``X``."""
    return namespace(X).zeros(shape, dtype=X.dtype, device=array_api_compat.device(X))


def _kernels(penalty, positive):
    """``(prox, value)``, the unchecked kernels of a Penalty; with ``positive``, prox of the positive part."""
    if isinstance(penalty, Penalty):
        prox, value = penalty._prox, penalty._value
    else:
        prox, value = penalty.prox, penalty.value
    if not positive:
        return prox, value
    if not getattr(penalty, "sign_invariant", False):
        raise TypeError(
            "positive=True needs a penalty unchanged by flipping the sign of a coordinate "
            "(sign_invariant: L1, L2, ElasticNet, GroupLasso, SparseGroupLasso, MaxNorm), whose prox "
            f"with W >= 0 is its prox of max(W, 0); {type(penalty).__name__} is not one: drop positive=True"
        )
    return (lambda v, step: prox(namespace(v).clip(v, 0, None), step)), value


def _certifier(penalty, problem, weights, positive):
    """A function ``(u, grad) -> (u, kappa, conjugate)`` for the duality gap, or ``None`` when there is none.

    Block-separable penalties go through their :class:`BlockPenalty` (the
    ``p x m`` gradient moves to the host), with the dual point projected onto
    the constraints of unpenalized coefficients (:func:`project_free`); other
    norm penalties use their own ``dual_norm`` on the device.
    """
    coef_shape = problem.coef_shape
    try:
        block = as_block_penalty(penalty, coef_shape, positive)
    except TypeError:
        if getattr(penalty, "is_norm", False) and penalty.lam > 0:
            return lambda u, grad: (u, *penalty_dual_terms(penalty, -grad))
        return None
    free = block.free_rows
    constraints = (
        free_constraints(problem.X, weights, problem.fit_intercept, free, positive) if free.size else None
    )

    def certify(u, grad):
        if constraints is not None:
            u, correction = project_free(constraints, u)
            grad = grad - correction
        return u, *penalty_dual_terms(block, -host_array(grad).astype(np.float64).reshape(block.shape))

    return certify


def _run(problem, penalty, W, b, tol, max_iter, check_every, warn, positive=False):
    """The FISTA loop on arrays of one kind (numpy or torch); returns a :class:`Solution`."""
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    check_every = check_count(check_every, "check_every")
    datafit, X, fit_intercept = problem.datafit, problem.X, problem.fit_intercept
    if datafit.curvature is None:
        raise ValueError(
            f"FISTA needs a differentiable datafit, got {type(datafit).__name__}; "
            "solve the hinge loss with normpen.linear.solvers.svm"
        )
    xp = namespace(W)
    dtype = X.dtype
    y = xp.astype(problem.y, dtype) if problem.y.dtype != dtype else problem.y
    a = xp.astype(problem.weights, dtype) if problem.weights.dtype != dtype else problem.weights
    penalty.value(W)  # validates the penalty against the coefficients' shape once
    prox, value = _kernels(penalty, positive)
    certify = _certifier(penalty, problem, a, positive)
    step = 1.0 / (datafit.curvature * squared_spectral_norm(X, a, fit_intercept))

    def gradient(z):
        G = datafit.raw_gradient(y, z, a)
        return X.T @ G, (xp.sum(G, axis=0) if fit_intercept else 0 * xp.sum(G, axis=0))

    def report(W, b):
        """:class:`GapReport` (gap nan without certificate) and the refitted intercept."""
        z = X @ W + b
        if fit_intercept:
            shift = datafit.fit_intercept(y, z, a)
            b, z = b + shift, z + shift
        primal = float(datafit.value(y, z, a)) + float(value(W))
        if certify is None:
            return GapReport(primal, math.nan, math.nan), b
        grad, _ = gradient(z)
        u, kappa, conjugate = certify(datafit.derivative(y, z), grad)
        dual = dual_objective(datafit, y, u, a, kappa, conjugate)
        return GapReport(primal, dual, primal - dual), b

    x_prev, bx_prev, v, bv, t = W, b, W, b, 1.0
    gap, primal, b_out, moved = math.inf, math.inf, b, math.inf
    for it in range(1, max_iter + 1):
        grad_w, grad_b = gradient(X @ v + bv)
        x = prox(v - step * grad_w, step)
        bx = bv - step * grad_b
        dx, dbx = x - x_prev, bx - bx_prev
        if float(xp.sum((v - x) * dx) + xp.sum((bv - bx) * dbx)) > 0:
            v, bv, t = x, bx, 1.0
        else:
            t_next = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
            v, bv, t = x + ((t - 1) / t_next) * dx, bx + ((t - 1) / t_next) * dbx, t_next
        x_prev, bx_prev = x, bx
        if it % check_every and it != max_iter:
            continue
        gap_report, b_out = report(x, bx)
        primal, gap = gap_report.primal, gap_report.gap
        threshold = problem.gap_threshold(tol, gap_report.primal)
        if certify is None:
            moved = math.sqrt(float(xp.sum(dx * dx) + xp.sum(dbx * dbx)))
            size = math.sqrt(float(xp.sum(x * x) + xp.sum(bx * bx)))
            if moved <= tol * max(size, 1.0):
                break
        elif gap <= threshold:
            break
    converged = gap <= threshold if certify is not None else moved <= tol * max(size, 1.0)
    if warn and not converged:
        reached = (
            f"duality gap {gap:.3e} > tol * P0 = {threshold:.3e}" if certify else f"last move {moved:.3e}"
        )
        warnings.warn(
            f"FISTA did not converge: {reached} after {it} iterations; increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    intercept = datafit.canonical_intercept(b_out) if fit_intercept else b_out * 0
    return Solution(
        coef=x_prev,
        intercept=intercept if datafit.multi_output else float(intercept),
        dual_gap=float(gap),
        gap_scale=problem.objective_at_zero(),
        objective=primal,
        n_iter=it,
        n_epochs=it,
        converged=bool(converged),
    )
