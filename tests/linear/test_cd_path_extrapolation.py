"""The start a least-squares path gives each strength in ``cd``
(:func:`normpen.linear.solvers.cd._extrapolate`): the line through the last two solutions, taken where
it lowers the objective.

On an orthogonal design the lasso's solution is known in closed form,
:math:`w_j = S(c_j, \\lambda)\\,n / d_j^2`
with :math:`c = X^\\top y / n` and :math:`d_j = \\|x_j\\|`, and while no sign changes it is affine in
:math:`\\lambda`: the step from the solutions at :math:`\\lambda_0, \\lambda_1` to :math:`\\lambda_2` lands on
the solution at :math:`\\lambda_2`, and :math:`z = Xw` and the cached gradient with it.
"""

from __future__ import annotations

import numpy as np

from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Quadratic
from normpen.linear.path import path
from normpen.linear.problem import Problem
from normpen.linear.solvers.cd import _extrapolate
from normpen.penalties.l1 import L1

EPS = np.finfo(np.float64).eps
N, P = 60, 8
LAMS = (1.5, 1.2, 1.0)  # all between the three large correlations and the small ones: one face


def _orthogonal_problem(seed=0):
    """Columns ``q_j d_j`` (orthonormal ``q``) and ``y`` with correlations ``c = X^T y / n`` equal to
    ``(3, -2.5, 2, 0.3, -0.2, 0.1, 0.05, -0.01)``, plus noise orthogonal to every column."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    d = rng.uniform(2.0, 5.0, P)
    c = np.array([3.0, -2.5, 2.0, 0.3, -0.2, 0.1, 0.05, -0.01])
    X = q[:, :P] * d
    y = q[:, :P] @ (c * N / d) + q[:, P:] @ rng.standard_normal(N - P)
    return X, y, X.T @ y / N, d


def _solution(c, d, lam):
    return np.sign(c) * np.maximum(np.abs(c) - lam, 0.0) * N / d**2


def _solved_state(problem, W):
    state = problem.state(W)
    problem.full_gradient(state)
    return state


def _point(problem, lam, W):
    state = _solved_state(problem, W)
    return (lam, state.W.copy(), state.b.copy(), state.z.copy(), state.gradient)


def _step_to_third(problem, state, W0, W1):
    """``state`` moved to ``LAMS[2]`` from the points ``W0``, ``W1`` at the first two strengths."""
    lam0, lam1, lam2 = LAMS
    penalty = as_block_penalty(L1(lam2), (P,))
    _extrapolate(problem, penalty, lam2, state, _point(problem, lam0, W0), _point(problem, lam1, W1))


def test_on_one_face_the_step_lands_on_the_next_solution_with_its_predictor_and_gradient():
    X, y, c, d = _orthogonal_problem()
    problem = Problem(X, y, Quadratic(), None, False)
    t = (LAMS[2] - LAMS[1]) / (LAMS[1] - LAMS[0])
    W0, W1, W2 = (_solution(c, d, lam) for lam in LAMS)
    assert np.array_equal(np.sign(W0), np.sign(W2))  # one face: the step is exact in exact arithmetic
    state = _solved_state(problem, W1)
    _step_to_third(problem, state, W0, W1)
    expected = _solved_state(problem, W2)
    # Each w_k carries three roundings of (|c| + lam) n / d^2 (a subtraction, a product, a quotient), the step
    # three more, amplified by its weights 1 + t and t: within 8 eps (1 + 2|t|) of that scale.
    scale = (np.abs(c) + LAMS[0]) * N / d**2
    assert np.all(np.abs(state.W[:, 0] - W2) <= 8 * EPS * (1 + 2 * abs(t)) * scale)
    # z = Xw and X^T A(z - y) are sums of P and N products: each within gamma (P + N + 2) of the sum of the
    # magnitudes (Higham), at the three points, the step's weights 1 + t and t on two of them, its own three
    # roundings once more: within 4 gamma (1 + 2|t|) of the magnitudes at all three.
    gamma = (P + N + 2) * EPS / (1 - (P + N + 2) * EPS)
    z_scale = np.abs(X) @ (np.abs(W0) + np.abs(W1) + np.abs(W2))
    assert np.all(np.abs(state.z - expected.z) <= 4 * gamma * (1 + 2 * abs(t)) * z_scale)
    G, grad = state.gradient
    G_scale = (z_scale + np.abs(y)) / N
    assert np.all(np.abs(G - expected.gradient[0]) <= 4 * gamma * (1 + 2 * abs(t)) * G_scale[:, None])
    grad_scale = np.abs(X).T @ G_scale
    assert np.all(np.abs(grad - expected.gradient[1]) <= 8 * gamma * (1 + 2 * abs(t)) * grad_scale[:, None])


def test_a_step_that_raises_the_objective_leaves_the_start_as_it_was():
    X, y, c, d = _orthogonal_problem()
    problem = Problem(X, y, Quadratic(), None, False)
    W1 = _solution(c, d, LAMS[1])
    off = W1.copy()
    off[P - 1] = 100.0  # a zero coordinate far from zero: the line leaves it at -100 t, far from optimal
    state = _solved_state(problem, W1)
    before = (state.W.copy(), state.b.copy(), state.z.copy(), state.gradient)
    _step_to_third(problem, state, off, W1)
    assert np.array_equal(state.W, before[0]) and np.array_equal(state.b, before[1])
    assert np.array_equal(state.z, before[2]) and state.gradient is before[3]


def _within_the_gaps_of_the_closed_form(lams, result, c, d):
    """Each strength's coefficients within the gap it reports of the closed form: the objective is
    1-strongly convex in the metric of X^T X / n, so ||w - w*||^2_{X^T X / n} <= 2 gap (plus the rounding of
    the two objectives, 64 eps of the datafit's scale)."""
    for lam, coef, gap in zip(lams, result.coefs, result.dual_gaps, strict=True):
        exact = _solution(c, d, lam)
        error = (coef - exact) * d / np.sqrt(N)
        assert np.sum(error**2) <= 2 * max(gap, 0.0) + 64 * EPS * np.sum((exact * d) ** 2) / N


def test_a_path_on_one_face_returns_the_closed_form_solutions():
    """The solver on top of the step: each strength of a path on one face within its gap of the exact one."""
    X, y, c, d = _orthogonal_problem()
    lams = np.linspace(1.5, 1.0, 6)
    result = path(X, y, Quadratic(), L1(1.0), lams, fit_intercept=False, tol=1e-3, solver="cd")
    _within_the_gaps_of_the_closed_form(lams, result, c, d)


def test_repeated_strengths_define_no_line_and_each_is_solved_from_the_last_solution():
    """A grid that repeats a strength (a user's list) has no line through two equal strengths: both solvers
    keep the start and certify every strength, the repeats at the same optimum (within their gaps)."""
    X, y, c, d = _orthogonal_problem()
    lams = [1.5, 1.2, 1.2, 1.2, 1.0]
    for solver in ("cd", "covariance"):
        result = path(X, y, Quadratic(), L1(1.0), lams, fit_intercept=False, tol=1e-8, solver=solver)
        assert result.converged.all()
        _within_the_gaps_of_the_closed_form(lams, result, c, d)
