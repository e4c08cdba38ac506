r"""L-BFGS for the smooth problems: a differentiable datafit with the ridge penalty alone.

With :math:`P(W) = \tfrac\mu2\|W\|^2` and no other term, the objective

.. math:: f(W, b) = F(XW + b) + \tfrac\mu2\|W\|^2

is smooth and :math:`\mu`-strongly convex in :math:`W`, and no coefficient is
ever zero. Coordinate descent's Newton models then cover every feature: each
model is the Gram matrix :math:`X^\top D X` of all :math:`p` columns with new
curvature weights :math:`D`, :math:`np^2` multiply-adds (0.07 s of the 0.075 s
of a logistic fit on a 200 x 1000 design, against scikit-learn's 0.004 s with
L-BFGS). Here each iteration costs one product with :math:`X` and one with
:math:`X^\top` (scipy's L-BFGS-B, no bounds).

**Certificate.** With the dual point :math:`u = \nabla F(z)` at :math:`z = XW + b`
and the intercept optimal (:math:`\sum_i u_i = 0`), the Fenchel-Young equality
:math:`F(z) + F^*(u) = \langle u, z\rangle = \langle X^\top u, W\rangle` makes the
duality gap

.. math:: P(W) - D(u) = \langle X^\top u, W\rangle + \tfrac\mu2\|W\|^2
          + \tfrac1{2\mu}\|X^\top u\|^2 = \tfrac1{2\mu}\|\nabla_W f\|^2 ,

known from the gradient that L-BFGS computes anyway. It decides when a round
of iterations stops (:data:`_TRIGGER` of the target, the intercept not yet
refitted); the gap reported is then computed as every other solver's
(:meth:`~normpen.linear.problem.Problem.duality_gap`, intercept refitted), and
a round that falls short of the target is followed by another with a trigger
:data:`_TIGHTER` times smaller. ``max_iter`` bounds the rounds, each of at most
:data:`_ROUND_ITERATIONS` iterations.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from normpen.linear._validation import check_count, check_tol

__all__ = ["solve"]

#: A round stops when :math:`\|\nabla_W f\|^2/(2\mu)` is below this fraction of the gap to reach:
#: the refitted intercept then changes the gap little, and the certificate almost always holds.
_TRIGGER = 0.5
#: The trigger of each further round, relative to the last.
_TIGHTER = 0.1
#: The most L-BFGS iterations of one round.
_ROUND_ITERATIONS = 1000


class _SmoothObjective:
    r""":math:`f(W, b)` and its gradient on a flat vector ``[W.ravel(), b]`` (``b`` only with an intercept).

    The last evaluation is kept (:attr:`last`): L-BFGS hands its callback the
    point it evaluated last, whose gradient the stopping rule reads.
    """

    def __init__(self, problem, ridge):
        self.problem, self.ridge = problem, ridge
        self.shape = (problem.n_features, problem.n_outputs)
        self.last = None

    def pack(self, W, b):
        return np.concatenate([W.ravel(), b]) if self.problem.fit_intercept else W.ravel().copy()

    def unpack(self, x):
        size = self.shape[0] * self.shape[1]
        W = x[:size].reshape(self.shape)
        b = x[size:] if self.problem.fit_intercept else np.zeros(self.shape[1])
        return W, b

    def __call__(self, x):
        problem = self.problem
        W, b = self.unpack(x)
        z = problem.natural(problem.product(problem.X, W) + b)
        G = problem.raw_gradient(z)
        grad_W = problem.gradient(G) + self.ridge * W
        value = problem.loss(z) + 0.5 * self.ridge * float(np.sum(W * W))
        grad = np.concatenate([grad_W.ravel(), G.sum(axis=0)]) if problem.fit_intercept else grad_W.ravel()
        self.last = (x.copy(), grad_W)
        return value, grad

    def gap_estimate(self, x):
        r""":math:`\|\nabla_W f\|^2/(2\mu)` at ``x`` if it was the last point evaluated, else ``inf``."""
        if self.last is None or not np.array_equal(self.last[0], x):
            return np.inf
        return float(np.sum(self.last[1] ** 2)) / (2 * self.ridge)


def solve(problem, penalty, state, *, tol=1e-4, max_iter=100, memory=10, warn=True):
    r"""L-BFGS on a :class:`~normpen.linear.problem.Problem` from ``state`` (updated in place).

    Parameters
    ----------
    problem : Problem
        A differentiable datafit on numpy or scipy.sparse data.
    penalty : BlockPenalty
        The ridge penalty alone (``penalty.ridge`` :math:`= \mu > 0`, no L1 or
        group term, no positivity): what :func:`normpen.linear.path` sends here.
    state : State
        The start; left at the solution.
    tol : float, default 1e-4
        Relative duality gap to reach (gap :math:`\le` ``tol`` times :math:`P_0`).
    max_iter : int, default 100
        Most rounds (each up to :data:`_ROUND_ITERATIONS` L-BFGS iterations, then a certificate).
    memory : int, default 10
        Correction pairs L-BFGS keeps.
    warn : bool, default True
        Emit a ``ConvergenceWarning`` when ``tol`` is not met.

    Returns
    -------
    Solution
        ``n_iter`` the rounds, ``n_epochs`` the L-BFGS iterations.
    """
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    memory = check_count(memory, "memory")
    if not penalty.ridge > 0 or np.any(penalty.penalized) or penalty.positive:
        raise ValueError("the L-BFGS solver takes the L2 penalty alone with lam > 0 and positive=False")
    objective = _SmoothObjective(problem, penalty.ridge)
    problem.refit_intercept(state)
    report = _certificate(problem, penalty, state)
    threshold = problem.gap_threshold(tol, report)
    trigger, rounds, iterations = _TRIGGER * threshold, 0, 0
    while report.gap > threshold and rounds < max_iter:
        rounds += 1
        start = objective.pack(state.W, state.b)
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            callback=_stop_below(objective, trigger),
            options={"maxiter": _ROUND_ITERATIONS, "maxcor": memory, "ftol": 0.0, "gtol": 0.0},
        )
        iterations += int(result.nit)
        W, b = objective.unpack(result.x)
        state.W, state.b = W.copy(), b.copy()
        state.z, state.gradient = problem.predictor(state.W, state.b), None
        problem.refit_intercept(state)
        report = _certificate(problem, penalty, state)
        threshold = problem.gap_threshold(tol, report)
        if np.array_equal(result.x, start):  # no step lowered f: rounding, further rounds repeat this one
            break
        trigger *= _TIGHTER
    return problem.solution(
        state,
        report,
        threshold,
        tol=tol,
        n_iter=rounds,
        n_epochs=iterations,
        solver="L-BFGS",
        work=f"{rounds} rounds ({iterations} iterations)",
        warn=warn,
    )


def _certificate(problem, penalty, state):
    """The :class:`~normpen.linear.problem.GapReport` at ``state`` (its intercept already refitted)."""
    _, grad = problem.full_gradient(state)
    return problem.duality_gap(state.z, penalty, state.W, grad)


def _stop_below(objective, trigger):
    """An L-BFGS callback that ends the round once the gap estimate is at most ``trigger``."""

    def callback(intermediate_result):
        if objective.gap_estimate(intermediate_result.x) <= trigger:
            raise StopIteration

    return callback
