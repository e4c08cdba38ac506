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

**Where L-BFGS stalls** (a round whose line search fails or that runs out
before its trigger: with :math:`\mu` tiny the gap is the gradient's square over
:math:`2\mu`, and float64 objectives stop telling points apart long before it is
met: on a 300 x 40 design with columns scaled from 1 to 1e4 and
:math:`\lambda = 10^{-8}` L-BFGS stalled at a gap of 4e-6 against 7e-9 asked),
coordinate descent finishes from the point reached: its Newton models solve
the optimality conditions directly rather than through decreases of the objective.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize

from normpen.linear._validation import check_count, check_tol
from normpen.linear.solvers import cd

__all__ = ["solve"]

#: A round stops when :math:`\|\nabla_W f\|^2/(2\mu)` is below this fraction of the gap to reach:
#: the refitted intercept then changes the gap little, and the certificate almost always holds.
_TRIGGER = 0.5
#: The trigger of each further round, relative to the last.
_TIGHTER = 0.1
#: The most L-BFGS iterations of one round.
_ROUND_ITERATIONS = 1000


class _SmoothObjective:
    r""":math:`f(W, b)` and its gradient in L-BFGS's variables :math:`(V, c)`, a flat ``[V.ravel(), c]``.

    The variables are scaled and centred so that a design's units do not set
    L-BFGS's conditioning: :math:`W = V / s` row by row, with
    :math:`s_j = \sqrt{L_j + \mu}` from the curvature bound of feature :math:`j`
    (:meth:`Problem.block_lipschitz`, the diagonal of the Hessian's bound), and
    :math:`b = c - \bar x^\top W` with the weighted means :math:`\bar x`, so that
    :math:`XW + b = (X - 1\bar x^\top)W + c` and the intercept does not move with
    the features' offsets. (On a 300 x 40 logistic design with columns scaled
    from 1 to 1e4 unscaled L-BFGS did not reach a gap of 1e-8 in 100,000
    iterations.) The last evaluation is kept (:attr:`last`, with
    :math:`\nabla_W f` at fixed :math:`c`): L-BFGS hands its callback the point it
    evaluated last, whose gradient the stopping rule reads.
    """

    def __init__(self, problem, penalty):
        self.problem, self.ridge = problem, penalty.ridge
        self.shape = (problem.n_features, problem.n_outputs)
        curvature = problem.block_lipschitz(penalty)[penalty.block_of_row]
        self.scale = np.sqrt(curvature + self.ridge)[:, None]
        self.means = problem.means()
        self.last = None

    def pack(self, W, b):
        V = W * self.scale
        if not self.problem.fit_intercept:
            return V.ravel()
        return np.concatenate([V.ravel(), b + self.means @ W])

    def unpack(self, x):
        size = self.shape[0] * self.shape[1]
        W = x[:size].reshape(self.shape) / self.scale
        b = x[size:] - self.means @ W if self.problem.fit_intercept else np.zeros(self.shape[1])
        return W, b

    def __call__(self, x):
        problem = self.problem
        W, b = self.unpack(x)
        z = problem.natural(problem.product(problem.X, W) + b)
        G = problem.raw_gradient(z)
        total = G.sum(axis=0)
        grad_W = problem.gradient(G) - np.outer(self.means, total) + self.ridge * W
        value = problem.loss(z) + 0.5 * self.ridge * float(np.sum(W * W))
        grad_V = (grad_W / self.scale).ravel()
        self.last = (x.copy(), grad_W)
        return value, (np.concatenate([grad_V, total]) if problem.fit_intercept else grad_V)

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
        Most rounds (each up to :data:`_ROUND_ITERATIONS` L-BFGS iterations, then a certificate),
        coordinate descent's outer iterations included where it finishes.
    memory : int, default 10
        Correction pairs L-BFGS keeps.
    warn : bool, default True
        Emit a ``ConvergenceWarning`` when ``tol`` is not met.

    Returns
    -------
    Solution
        ``n_iter`` the rounds, ``n_epochs`` the L-BFGS iterations (plus coordinate descent's
        iterations and epochs where it finished).
    """
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    memory = check_count(memory, "memory")
    if not penalty.ridge > 0 or np.any(penalty.penalized) or penalty.positive:
        raise ValueError("the L-BFGS solver takes the L2 penalty alone with lam > 0 and positive=False")
    objective = _SmoothObjective(problem, penalty)
    problem.refit_intercept(state)
    report = _certificate(problem, penalty, state)
    threshold = problem.gap_threshold(tol, report.primal)
    trigger, rounds, iterations = _TRIGGER * threshold, 0, 0
    while report.gap > threshold and rounds < max_iter:
        rounds += 1
        stop = _StopBelow(objective, trigger)
        result = minimize(
            objective,
            objective.pack(state.W, state.b),
            jac=True,
            method="L-BFGS-B",
            callback=stop,
            options={"maxiter": _ROUND_ITERATIONS, "maxcor": memory, "ftol": 0.0, "gtol": 0.0},
        )
        iterations += int(result.nit)
        W, b = objective.unpack(result.x)
        state.W, state.b = W.copy(), b.copy()
        state.z, state.gradient = problem.predictor(state.W, state.b), None
        problem.refit_intercept(state)
        report = _certificate(problem, penalty, state)
        threshold = problem.gap_threshold(tol, report.primal)
        if not stop.reached:  # the line search failed or the round ran out: L-BFGS stalled here
            break
        trigger *= _TIGHTER
    if report.gap > threshold and rounds < max_iter:
        finished = cd.solve(problem, penalty, state, tol=tol, max_iter=max_iter - rounds, warn=warn)
        return dataclasses.replace(
            finished, n_iter=rounds + finished.n_iter, n_epochs=iterations + finished.n_epochs
        )
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


class _StopBelow:
    """L-BFGS's callback: ends the round once the gap estimate is at most ``trigger`` (then ``reached``)."""

    def __init__(self, objective, trigger):
        self.objective, self.trigger, self.reached = objective, trigger, False

    def __call__(self, intermediate_result):
        if self.objective.gap_estimate(intermediate_result.x) <= self.trigger:
            self.reached = True
            raise StopIteration
