r"""The constrained (Ivanov) form :math:`\min L(w, b)` s.t. :math:`\Omega(w) \le r`, with its multiplier.

:math:`L` is a differentiable datafit of :mod:`normpen.linear.datafits`
(quadratic, logistic, multinomial, multitask quadratic, squared hinge) and
:math:`\Omega` the ``norm`` of a penalty object whose ball is centred at 0:
every norm penalty (``is_norm``: L1, weighted L1, GroupLasso, Nuclear,
Spectral) and every penalty :math:`\tfrac{\lambda}{2}\Omega^2` of a norm
(``norm_squared``: :class:`~normpen.penalties.l2.L2`, whose ``norm`` is
:math:`\|w\|_2`). ``penalty.project(w, r)`` is the exact projection onto the
ball; the intercept :math:`b` is free.

Solver: accelerated projected gradient (FISTA with the projection as its
prox), step :math:`1/L_\nabla` from the datafit's Lipschitz bound, with the
gradient-based adaptive restart of O'Donoghue and Candès (2015).

Certificate. With the intercept refitted (:math:`\partial_b L = 0`) and
:math:`g = \nabla_w L(w, b)`, convexity gives, for the feasible :math:`w`,

.. math::

    L(w, b) - L^\star \;\le\; \max_{\Omega(s) \le r} \langle g, w - s\rangle
    = \langle g, w\rangle + r\,\Omega^*(-g) ,

the Frank-Wolfe (duality) gap. The solve stops when it is at most ``tol``
times :math:`\min_b L(0, b)`, and warns with the gap reached otherwise.

Multiplier. The KKT conditions of the constraint :math:`\Omega(w) - r \le 0`
are :math:`-\nabla_w L \in \mu\,\partial\Omega(w)`, :math:`\mu \ge 0`,
:math:`\mu(\Omega(w) - r) = 0`. For a norm, every :math:`s \in \partial\Omega(w)`
has :math:`\Omega^*(s) \le 1`, with equality when :math:`w \ne 0`, so

.. math:: \mu^\star = \Omega^*(-\nabla_w L(w^\star)) ,

which is 0 when the constraint is inactive (the gradient vanishes inside the
ball). It is the shadow price of the budget: :math:`dL^\star/dr = -\mu^\star`.

Penalized twin: the same :math:`w^\star` minimises :math:`L + \lambda_{\text{twin}}\psi(w)`,
:math:`\psi` the penalty's value at :math:`\lambda = 1`:

- for a norm penalty (value :math:`\lambda\Omega`), :math:`\lambda_{\text{twin}} = \mu^\star`:
  ``penalty.with_lam(mu)``;
- for L2 (value :math:`\tfrac\lambda2\|w\|^2`, norm :math:`\|w\|_2`),
  :math:`\nabla\tfrac12\|w\|^2 = \|w\|\,\partial\|w\|`, so
  :math:`\lambda_{\text{twin}} = \mu^\star / r`: ``L2(mu / r)``.

Seed 004 writes the L2 constraint as :math:`\|\theta\|^2 \le C` with the
Lagrangian :math:`L + \lambda(\|\theta\|^2 - C)`: that is ``radius = sqrt(C)``,
and its multiplier is :math:`\lambda^\star = \mu^\star/(2r)` (``squared_multiplier``),
the multiplier of :math:`\Omega(w)^2 \le r^2` for any norm, with
:math:`dL^\star/dC = -\lambda^\star`; its penalized twin
:math:`L + \lambda^\star\|\theta\|^2` is ``L2(2 * lambda_star)``, the same as above.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from normpen._array import check_positive
from normpen.linear._validation import check_count, check_tol
from normpen.linear.problem import Problem, Solution, State
from normpen.penalties.base import Penalty

__all__ = ["ConstrainedResult", "constrained"]


#: :func:`constrained` returns a :class:`~normpen.linear.problem.Solution`; the name of its
#: earlier, separate result type is kept for code that imports it.
ConstrainedResult = Solution


def _check_penalty(penalty):
    if not isinstance(penalty, Penalty):
        raise TypeError(f"penalty must be a normpen penalty object, got {type(penalty).__name__}")
    if not (penalty.is_norm or penalty.norm_squared):
        raise TypeError(
            f"the constrained form needs a ball of a norm centred at 0; {type(penalty).__name__}.norm is not "
            "one. Use a norm penalty (L1, GroupLasso, Nuclear, Spectral) or L2"
        )


def constrained(
    X,
    y,
    datafit,
    penalty,
    radius,
    *,
    sample_weight=None,
    fit_intercept=True,
    coef_init=None,
    tol=1e-6,
    max_iter=10_000,
    check_every=10,
):
    r"""Minimise the datafit subject to ``penalty.norm(w) <= radius`` (see the module docstring).

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like
        Target in the datafit's form (labels in {-1, +1} for the logistic).
    datafit : Datafit
        A differentiable datafit (``curvature`` not None).
    penalty : Penalty
        A norm penalty or :class:`~normpen.penalties.l2.L2`; its ``lam`` is ignored.
    radius : float
        The budget :math:`r > 0`; seed 004's :math:`\|\theta\|^2 \le C` is ``radius = sqrt(C)`` with L2.
    sample_weight : array-like of shape (n,), optional
    fit_intercept : bool
        Fit an unconstrained intercept.
    coef_init : array-like, optional
        Starting coefficients (projected onto the ball first).
    tol : float
        Stop when the Frank-Wolfe gap is at most ``tol`` times :math:`\min_b L(0, b)`.
    max_iter : int
    check_every : int
        Iterations between two gap evaluations.

    Returns
    -------
    Solution
        ``coef`` :math:`w^\star` (dtype of ``X``) and ``intercept`` :math:`b^\star`;
        ``objective`` :math:`L(w^\star, b^\star)`; ``dual_gap``, the Frank-Wolfe gap
        :math:`\langle g, w\rangle + r\,\Omega^*(-g) \ge L - L^\star`, and ``gap_scale``
        :math:`\min_b L(0, b)`; ``n_iter`` projected-gradient iterations; ``converged``
        (``dual_gap <= tol * gap_scale``); and the fields of the constrained form:
        ``radius`` :math:`r`; ``multiplier`` :math:`\mu^\star = \Omega^*(-\nabla_w L)`, the
        multiplier of :math:`\Omega(w) \le r` and minus the shadow price :math:`dL^\star/dr`;
        ``squared_multiplier`` :math:`\mu^\star / (2r)`, the multiplier of
        :math:`\Omega(w)^2 \le r^2` (seed 004's :math:`\lambda^\star` for
        :math:`\|\theta\|^2 \le C = r^2`); ``twin``, the penalty whose penalized problem
        :math:`\min L + P` has the same solution (``penalty.with_lam(mu)`` for a norm,
        ``L2(mu / r)`` for L2); ``kkt``, the KKT residuals: ``stationarity``, the
        prox-gradient residual :math:`\|w - \operatorname{prox}_{P/L_\nabla}(w - g/L_\nabla)\|\,L_\nabla`
        of the twin (0 iff :math:`w` minimises :math:`L + P`, gradient units),
        ``primal_infeasibility`` :math:`(\Omega(w) - r)_+ / r`, ``complementary_slackness``
        :math:`\mu\,|\Omega(w) - r|` (objective units), ``dual_infeasibility``
        :math:`(-\mu)_+`, 0 by construction of :math:`\mu`.

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        If ``max_iter`` iterations end with the gap above the target; the message gives the gap.
    """
    _check_penalty(penalty)
    if datafit.curvature is None:
        raise ValueError(
            f"{type(datafit).__name__} is not differentiable; the constrained form needs a smooth datafit "
            "(use SquaredHinge instead of Hinge)"
        )
    radius = check_positive(radius, "radius")
    tol, max_iter = check_tol(tol), check_count(max_iter, "max_iter")
    check_every = check_count(check_every, "check_every")
    problem = Problem(X, y, datafit, sample_weight, fit_intercept)
    step = 1 / datafit.lipschitz(problem.X, sample_weight, fit_intercept)
    target = tol * problem.objective_at_zero()
    state = problem.state() if coef_init is None else _projected_start(problem, penalty, coef_init, radius)
    problem.refit_intercept(state)
    state, gap, n_iter = _accelerated_projected_gradient(
        problem, penalty, radius, state, step, target, max_iter, check_every
    )
    if gap > target:
        warnings.warn(
            f"constrained stopped after {n_iter} iterations with duality gap {gap:.3e} > tol * L(0) = "
            f"{target:.3e}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return _result(problem, penalty, radius, state, step, gap, n_iter, tol)


def _projected_start(problem, penalty, coef_init, radius):
    W = problem.as_matrix(coef_init)
    W = _project(problem, penalty, W, radius)
    return State(W, np.zeros(problem.n_outputs), problem.predictor(W, np.zeros(problem.n_outputs)))


def _project(problem, penalty, W, radius):
    """Project the ``(p, m)`` matrix ``W`` onto the ball, in the penalty's coefficient shape."""
    projected = penalty.project(W.reshape(problem.coef_shape), radius)
    return np.asarray(projected, dtype=np.float64).reshape(W.shape)


def _gradient(problem, W, b):
    """``(grad_W, grad_b, z)`` of the datafit at ``(W, b)``."""
    z = problem.predictor(W, b)
    G = problem.raw_gradient(z)
    return problem.gradient(G), G.sum(axis=0), z


def _frank_wolfe_gap(problem, penalty, radius, state):
    r"""Refit the intercept of ``state`` in place, then :math:`\langle g, w\rangle + r\,\Omega^*(-g)`."""
    problem.refit_intercept(state)
    grad_W, _, _ = _gradient(problem, state.W, state.b)
    dual = float(penalty.dual_norm(-grad_W.reshape(problem.coef_shape)))
    return float(np.sum(grad_W * state.W)) + radius * dual


def _accelerated_projected_gradient(problem, penalty, radius, state, step, target, max_iter, check_every):
    """FISTA with the projection as prox and adaptive restart; returns ``(certified state, gap, iterations)``.

    The start (a warm start may already be optimal) and then every
    ``check_every`` iterations a copy of the iterate gets its intercept
    refitted and its Frank-Wolfe gap computed; the iterate itself (and its
    momentum) is left alone.
    """
    W, b = state.W, state.b
    V_W, V_b, t = W, b, 1.0
    certified = State(W.copy(), b.copy(), state.z)
    gap = _frank_wolfe_gap(problem, penalty, radius, certified)
    if gap <= target:
        return certified, gap, 0
    for n_iter in range(1, max_iter + 1):
        grad_W, grad_b, _ = _gradient(problem, V_W, V_b)
        W_new = _project(problem, penalty, V_W - step * grad_W, radius)
        b_new = V_b - step * grad_b if problem.fit_intercept else V_b
        # restart when the step goes against the momentum direction
        if np.sum((V_W - W_new) * (W_new - W)) + np.sum((V_b - b_new) * (b_new - b)) > 0:
            t = 1.0
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_new
        V_W, V_b = W_new + momentum * (W_new - W), b_new + momentum * (b_new - b)
        W, b, t = W_new, b_new, t_new
        if n_iter % check_every == 0 or n_iter == max_iter:
            candidate = State(W.copy(), b.copy(), problem.predictor(W, b))
            candidate_gap = _frank_wolfe_gap(problem, penalty, radius, candidate)
            if candidate_gap < gap:
                gap, certified = candidate_gap, candidate
            if gap <= target:
                return certified, gap, n_iter
    return certified, gap, max_iter


def _result(problem, penalty, radius, state, step, gap, n_iter, tol):
    """Multiplier, twin penalty and KKT residuals at the certified point."""
    grad_W, _, z = _gradient(problem, state.W, state.b)
    coef_grad = grad_W.reshape(problem.coef_shape)
    coef = state.W.reshape(problem.coef_shape)
    multiplier = float(penalty.dual_norm(-coef_grad))
    twin = penalty.with_lam(multiplier / radius if penalty.norm_squared else multiplier)
    moved = np.asarray(twin.prox(coef - step * coef_grad, step), dtype=np.float64) - coef
    norm = float(penalty.norm(coef))
    kkt = {
        "stationarity": float(np.linalg.norm(moved)) / step,
        "primal_infeasibility": max(norm - radius, 0.0) / radius,
        "complementary_slackness": multiplier * abs(norm - radius),
        "dual_infeasibility": max(-multiplier, 0.0),
    }
    return Solution(
        coef=problem.as_coef(state.W),
        intercept=problem.as_intercept(state.b),
        objective=problem.loss(z),
        dual_gap=gap,
        gap_scale=problem.objective_at_zero(),
        n_iter=n_iter,
        converged=gap <= tol * problem.objective_at_zero(),
        kkt=kkt,
        radius=radius,
        multiplier=multiplier,
        squared_multiplier=multiplier / (2 * radius),
        twin=twin,
    )
