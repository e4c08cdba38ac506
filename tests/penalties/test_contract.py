"""The Penalty contract, checked on every penalty of the registry (``cases.py``), on numpy arrays and
torch tensors, in float64 and float32.

Every check compares a method with something the method did not compute itself:

- ``prox`` with a minimisation of :math:`\\tfrac12\\|z-x\\|^2 + s P(z)` by scipy.optimize (adaptive
  Nelder-Mead restarted until it stops improving; SLSQP on the constraint for an indicator);
- ``prox``, ``project_dual`` and the dual norm with the Moreau identity (norms);
- ``project`` and ``project_dual`` with random feasible points, local perturbations and SLSQP;
- ``grad`` with central finite differences and torch autograd of ``value``;
- ``dual_norm`` with Hölder's inequality, its equality case at a gradient, and the maximum of
  :math:`\\langle u, z\\rangle` over the unit ball approached by projecting :math:`t z`;
- ``lambda_max`` with a proximal-gradient solve of a least-squares problem at and just below it;
- every method with the float64 numpy result (agreement across kinds) and with itself at
  rescaled inputs (extreme magnitudes, hypothesis).

The scipy-based checks are themselves tested: ``test_prox_check_detects_a_wrong_prox`` and
``test_projection_checks_detect_a_wrong_projection`` hand them a slightly wrong answer and require
them to fail.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
import zlib

import array_api_compat
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

import normpen.penalties
from normpen.penalties.base import Penalty
from penalties.cases import ANY, ARRAY_KINDS, CASES, MATRIX, SHAPES, shapes, to_numpy

#: The proximal steps the contract tests use, one per shape of ``SHAPES``.
STEPS = (0.7, 1.9)
#: The tiny shapes and the step of the checks against scipy.optimize, which minimises over every entry.
TINY = {ANY: (2, 2), MATRIX: (3, 2)}
TINY_STEP = 1.3
#: The two balls of a penalty: (measure, projection onto its sublevel set).
BALLS = {"primal": ("norm", "project"), "dual": ("dual_norm", "project_dual")}
#: Every method of the contract; ``prox`` takes a step, the projections a radius.
METHODS = ("value", "grad", "prox", "norm", "project", "dual_norm", "project_dual", "lambda_max")
SCALAR_METHODS = ("value", "norm", "dual_norm")

CASE_INPUTS = [
    pytest.param(case, shape, step, id=f"{case}-{'x'.join(map(str, shape))}")
    for case in CASES
    for shape, step in zip(SHAPES[case.kind], STEPS, strict=True)
]
CASE_SHAPES = [pytest.param(*param.values[:2], id=param.id) for param in CASE_INPUTS]
KINDS = pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
TORCH_KINDS = pytest.mark.parametrize("kind", [k for k in ARRAY_KINDS if k.backend == "torch"], ids=str)
ALL_CASES = pytest.mark.parametrize("case", CASES, ids=str)


# ---- inputs -----------------------------------------------------------------------------------


def build(case, shape):
    """The penalty of ``case`` for ``shape`` and a standard normal input, fixed by case and shape alone.

    The input is rounded to float32, so every array kind sees the same numbers and all of them
    share one float64 reference.
    """
    rng = np.random.default_rng(zlib.crc32(f"{case.name}-{shape}".encode()))
    pen = case.make(shape, rng)
    return pen, rng.standard_normal(shape).astype(np.float32).astype(np.float64)


def run(pen, method, kind, x, *args):
    """``pen.<method>(x, *args)`` with ``x`` given as ``kind``; the result as a float64 numpy array."""
    return to_numpy(getattr(pen, method)(kind.asarray(x), *args))


def measure(pen, method):
    """``pen.<method>`` (a scalar method) on a float64 numpy array, as a Python float.

    It calls the unchecked kernel (``_norm`` for ``norm``): the tests only pass it finite float64
    arrays of the right shape, and the scipy minimisations and bisections evaluate it thousands of
    times. The validated methods are what every test checks.
    """
    kernel = getattr(pen, f"_{method}")
    return lambda z: float(kernel(np.asarray(z, dtype=np.float64)))


def outside_radius(value):
    """A radius that puts a point of this size outside the ball: half the size, or 1 if it is 0 or inf."""
    return 0.5 * value if 0 < value < math.inf else 1.0


def assert_close(actual, expected, rtol, scale=None):
    """``actual == expected`` to ``rtol`` relative to ``scale`` (default: the largest finite ``expected``)."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    if scale is None:
        finite = expected[np.isfinite(expected)]
        scale = float(np.max(np.abs(finite), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=False)


# ---- the registry -----------------------------------------------------------------------------


def penalty_classes():
    """Every concrete Penalty subclass defined in a module of ``normpen.penalties``."""
    found = set()
    for info in pkgutil.iter_modules(normpen.penalties.__path__):
        module = importlib.import_module(f"normpen.penalties.{info.name}")
        found.update(
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Penalty) and not inspect.isabstract(cls) and cls.__module__ == module.__name__
        )
    return found


def test_registry_covers_every_penalty():
    registered = {type(case.make(SHAPES[case.kind][0], np.random.default_rng(0))) for case in CASES}
    missing = {cls.__name__ for cls in penalty_classes() - registered}
    assert not missing, f"add a line to tests/penalties/cases.py for {sorted(missing)}"


@ALL_CASES
def test_registry_kind_matches_matrix_only(case):
    pen = case.make(SHAPES[case.kind][0], np.random.default_rng(0))
    assert not pen.matrix_only or case.kind == MATRIX
    assert case.kind in (ANY, MATRIX)


# ---- scipy references ----------------------------------------------------------------------------


def nelder_mead_minimum(objective, starts, max_rounds=8):
    """Smallest value of ``objective`` scipy's adaptive Nelder-Mead reaches from ``starts``.

    Each run restarts from its own result (a fresh simplex) until a round gains less than 1e-12
    relative, which unsticks the simplex at the kinks of a nonsmooth objective.
    """
    best = math.inf
    options = {"xatol": 1e-8, "fatol": 1e-14, "adaptive": True, "maxfev": 20_000}
    for z in starts:
        value = objective(z)
        for _ in range(max_rounds):
            result = minimize(objective, z, method="Nelder-Mead", options=options)
            gain = value - result.fun
            if gain > 0:
                z, value = result.x, result.fun
            if not gain > 1e-12 * abs(value):
                break
        best = min(best, value)
    return best


def pull_inside(measure_of, radius, inside, z, iterations=30):
    """The point of the segment from ``inside`` to ``z`` farthest along it with ``measure_of <= radius``.

    Bisection on the segment; the ball is convex, so the feasible part of the segment is an
    interval starting at ``inside`` (itself assumed feasible).
    """
    if measure_of(z) <= radius:
        return z
    low, high = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if measure_of(inside + mid * (z - inside)) <= radius else (low, mid)
    return inside + low * (z - inside)


def slsqp_distance(measure_of, radius, x, inside, starts):
    r"""Smallest :math:`\tfrac12\|z - x\|^2` SLSQP finds over :math:`\{z : \text{measure}(z) \le r\}`.

    Every SLSQP result is first pulled into the ball along the segment to the feasible point
    ``inside``, so a result that violates the constraint by rounding cannot beat the truth. An
    infinite measure (a seminorm's dual off its subspace) is capped, for finite differences.
    """
    cap = 1e3 * (radius + measure_of(x) if math.isfinite(measure_of(x)) else radius)
    best = math.inf
    for start in starts:
        result = minimize(
            lambda z: 0.5 * float(np.sum((z - x.ravel()) ** 2)),
            start.ravel(),
            jac=lambda z: z - x.ravel(),
            method="SLSQP",
            constraints={"type": "ineq", "fun": lambda z: radius - min(measure_of(z.reshape(x.shape)), cap)},
            options={"ftol": 1e-15, "maxiter": 100},
        )
        z = pull_inside(measure_of, radius, inside, result.x.reshape(x.shape))
        best = min(best, 0.5 * float(np.sum((z - x) ** 2)))
    return best


def indicator_radius(pen, x, iterations=60):
    """For a penalty whose value is the indicator of a ball of its own norm, that ball's radius.

    Bisection along the ray through ``x`` for where the value turns infinite.
    """
    value, norm = measure(pen, "value"), measure(pen, "norm")
    low, high = 0.0, 1.0
    while math.isfinite(value(high * x)):
        low, high = high, 2 * high
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if math.isfinite(value(mid * x)) else (low, mid)
    return norm(low * x)


def is_indicator(pen, x):
    """Whether the value is infinite far out: then it is a constraint, the indicator of a ball of ``norm``."""
    return not math.isfinite(measure(pen, "value")(1e6 * x))


# ---- 1. prox against scipy.optimize ------------------------------------------------------------


def prox_objective(pen, x, step):
    """:math:`z \\mapsto \\tfrac12\\|z-x\\|^2 + \\text{step}\\cdot P(z)` on float64 arrays of any shape."""
    value = measure(pen, "value")

    def objective(z):
        z = np.reshape(z, x.shape)
        return 0.5 * float(np.sum((z - x) ** 2)) + step * value(z)

    return objective


@functools.cache
def reference_prox_objective(case, shape, step):
    """The smallest prox objective scipy finds for the input of ``build(case, shape)``.

    Adaptive Nelder-Mead on the objective; for a constraint (``is_indicator``) the objective is
    the distance on the ball, minimised by SLSQP.
    """
    pen, x = build(case, shape)
    if is_indicator(pen, x):
        radius = indicator_radius(pen, x)
        norm = measure(pen, "norm")
        inside = x * (0.5 * radius / norm(x))
        return slsqp_distance(norm, radius, x, inside, starts=(x, np.zeros_like(x)))
    return nelder_mead_minimum(prox_objective(pen, x, step), starts=(x.ravel(), np.zeros(x.size)))


def assert_prox_optimal(case, shape, step, z, rtol):
    """The prox objective at ``z`` (an array of any kind) is no worse than scipy's minimum, to ``rtol``.

    The penalty is evaluated in ``z``'s own kind and dtype, where a constraint's rounding slack is
    the one of that dtype.
    """
    pen, x = build(case, shape)
    reference = reference_prox_objective(case, shape, step)
    attained = 0.5 * float(np.sum((to_numpy(z) - x) ** 2)) + step * float(pen.value(z))
    assert attained <= reference + rtol * abs(reference), (attained, reference)


@ALL_CASES
@KINDS
def test_prox_minimises_its_objective(case, kind):
    shape = TINY[case.kind]
    pen, x = build(case, shape)
    assert_prox_optimal(case, shape, TINY_STEP, pen.prox(kind.asarray(x), TINY_STEP), max(1e-8, kind.rtol))


@ALL_CASES
def test_prox_check_detects_a_wrong_prox(case):
    shape = TINY[case.kind]
    pen, x = build(case, shape)
    z = pen.prox(x, TINY_STEP)
    wrong = 0.99 * z if is_indicator(pen, x) else z + 1e-2 * (x - z)  # a constraint's: feasible, not nearest
    with pytest.raises(AssertionError):
        assert_prox_optimal(case, shape, TINY_STEP, wrong, 1e-8)


# ---- 2. Moreau identity ------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "shape", "step"), CASE_INPUTS)
@KINDS
def test_moreau_identity(case, shape, step, kind):
    pen, x = build(case, shape)
    if not pen.is_norm:
        pytest.skip("prox = x - project_dual holds when the value is lam times a norm (is_norm)")
    prox = run(pen, "prox", kind, x, step)
    assert_close(prox, x - run(pen, "project_dual", kind, x, step * pen.lam), kind.rtol, np.max(np.abs(x)))


def sign_flip_defect(pen, x, step):
    """The largest change of ``value`` and of ``prox`` (up to the flip) when one coordinate flips sign."""
    value, prox = float(pen.value(x)), pen.prox(x, step)
    worst = 0.0
    for index in np.ndindex(x.shape):
        flip = np.ones_like(x)
        flip[index] = -1.0
        worst = max(
            worst,
            abs(float(pen.value(flip * x)) - value),
            float(np.max(np.abs(pen.prox(flip * x, step) - flip * prox))),
        )
    return worst


@pytest.mark.parametrize(("case", "shape", "step"), CASE_INPUTS)
def test_sign_invariance_flag_is_true_exactly_when_sign_flips_commute(case, shape, step):
    """``sign_invariant`` (FISTA's positivity relies on it) against every single-coordinate sign flip."""
    pen, x = build(case, shape)
    scale = max(1.0, float(pen.value(x)), float(np.max(np.abs(x))))
    defect = sign_flip_defect(pen, x, step)
    if pen.sign_invariant:
        # a flip is exact, so both sides run the same float64 operations on |x| up to sign-dependent
        # summation order: the CERTIFICATE tier of cases.py, relative to the scale of value and x
        assert defect <= 1e-12 * scale
    else:
        assert defect > 1e-6 * scale


# ---- 3. projections ----------------------------------------------------------------------------

BALL_PARAMS = pytest.mark.parametrize("ball", BALLS, ids=str)


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
@BALL_PARAMS
def test_projection_keeps_points_of_the_ball(case, shape, kind, ball):
    measure_name, project = BALLS[ball]
    pen, x = build(case, shape)
    size = measure(pen, measure_name)(x)
    if math.isfinite(size):  # an interior point
        assert_close(run(pen, project, kind, x, 1.5 * size), x, kind.rtol)
    radius = outside_radius(size)
    boundary = run(pen, project, kind, x, radius)
    assert_close(run(pen, project, kind, boundary, radius), boundary, kind.rtol, np.max(np.abs(x)))


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
@BALL_PARAMS
def test_projection_lands_on_the_boundary(case, shape, kind, ball):
    measure_name, project = BALLS[ball]
    pen, x = build(case, shape)
    measure_of = measure(pen, measure_name)
    size = measure_of(x)
    radius = outside_radius(size)
    projected = measure_of(run(pen, project, kind, x, radius))
    if math.isfinite(size):
        assert projected == pytest.approx(radius, rel=max(kind.rtol, 8 * np.finfo(np.float64).eps))
    else:  # an infinite measure (a seminorm's dual): the ball may be reached inside its boundary
        assert projected <= radius * (1 + kind.rtol)


def projection_setting(case, shape, ball):
    """The penalty, input, measure, radius and float64 numpy projection of one projection check."""
    measure_name, project = BALLS[ball]
    pen, x = build(case, shape)
    measure_of = measure(pen, measure_name)
    radius = outside_radius(measure_of(x))
    return pen, x, measure_of, radius, to_numpy(getattr(pen, project)(x, radius))


@functools.cache
def feasible_points(case, shape, ball, seed=0):
    """Points of the ball, near and far from the float64 projection ``p`` of ``x``.

    Far: standard normal draws and their projections (the ball may be flat, as a seminorm's dual
    ball is, so draws alone would miss its directions). Near: ``p`` moved 1e-2 and 1e-4 of the way
    towards each far point, and by 1e-2 and 1e-4 of ``|x|`` along random directions. Every point is
    pulled into the ball along the segment to ``p``, so feasibility never rests on rounding.
    """
    pen, x, measure_of, radius, center = projection_setting(case, shape, ball)
    project = getattr(pen, BALLS[ball][1])
    rng = np.random.default_rng(seed)
    draws = np.linalg.norm(x) * rng.standard_normal((12, *shape))
    far = [*draws[:6], *(to_numpy(project(d, radius)) for d in draws[6:])]
    near = [center + t * (q - center) for q in far for t in (1e-2, 1e-4)]
    near += [center + t * d for d in draws[:6] for t in (1e-2, 1e-4)]
    return [pull_inside(measure_of, radius, center, q) for q in far + near]


@functools.cache
def slsqp_reference(case, ball):
    """SLSQP's smallest half squared distance from ``x`` to the ball, on the tiny input of ``case``."""
    pen, x, measure_of, radius, center = projection_setting(case, TINY[case.kind], ball)
    return slsqp_distance(measure_of, radius, x, center, starts=(x, center))


def assert_no_closer_feasible_point(case, shape, ball, z, rtol):
    """``z`` is at least as close to ``x`` as every point of :func:`feasible_points`."""
    _, x, *_ = projection_setting(case, shape, ball)
    nearest = min(np.linalg.norm(q - x) for q in feasible_points(case, shape, ball))
    assert np.linalg.norm(to_numpy(z) - x) <= nearest * (1 + rtol)


def assert_beats_slsqp(case, ball, z, rtol):
    """``z`` is at least as close to ``x`` as SLSQP's constrained minimiser, on the tiny input."""
    _, x, *_ = projection_setting(case, TINY[case.kind], ball)
    attained = 0.5 * float(np.sum((to_numpy(z) - x) ** 2))
    assert attained <= slsqp_reference(case, ball) * (1 + rtol)


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
@BALL_PARAMS
def test_projection_beats_feasible_points(case, shape, kind, ball):
    pen, x, measure_of, radius, _ = projection_setting(case, shape, ball)
    z = run(pen, BALLS[ball][1], kind, x, radius)
    assert measure_of(z) <= radius * (1 + max(kind.rtol, 8 * np.finfo(np.float64).eps))
    assert_no_closer_feasible_point(case, shape, ball, z, max(1e-10, kind.rtol))


@ALL_CASES
@KINDS
@BALL_PARAMS
def test_projection_beats_slsqp(case, kind, ball):
    pen, x, _, radius, _ = projection_setting(case, TINY[case.kind], ball)
    assert_beats_slsqp(case, ball, run(pen, BALLS[ball][1], kind, x, radius), max(1e-8, kind.rtol))


@ALL_CASES
@BALL_PARAMS
def test_projection_checks_detect_a_wrong_projection(case, ball):
    shape = TINY[case.kind]
    *_, nearest = projection_setting(case, shape, ball)
    farthest = max(feasible_points(case, shape, ball), key=lambda q: np.linalg.norm(q - nearest))
    if np.array_equal(farthest, nearest):
        pytest.skip("this ball is the single point the projection returns: no wrong feasible answer exists")
    wrong = nearest + 0.1 * (farthest - nearest)  # feasible (the ball is convex), but not the nearest point
    with pytest.raises(AssertionError):
        assert_no_closer_feasible_point(case, shape, ball, wrong, 1e-10)
    with pytest.raises(AssertionError):
        assert_beats_slsqp(case, ball, wrong, 1e-8)


# ---- 4. gradient --------------------------------------------------------------------------------


def differentiable_point(pen, x):
    """``x`` halved until the value is finite around it (a constraint's interior); ``x`` otherwise."""
    value = measure(pen, "value")
    while not all(math.isfinite(value(s * x)) for s in (0.99, 1.0, 1.01)):
        x = 0.5 * x
    return x


def central_differences(f, x, h=1e-5):
    """Gradient of ``f`` at ``x`` by fourth-order central differences, coordinate by coordinate."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h * max(1.0, abs(x[i]))
        grad[i] = (8 * (f(x + e) - f(x - e)) - (f(x + 2 * e) - f(x - 2 * e))) / (12 * e[i])
    return grad


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
def test_grad_matches_finite_differences(case, shape, kind):
    # Random points are away from the kinks of the nonsmooth penalties (zero coordinates, zero
    # groups, repeated or zero singular values) with probability one, so the value is smooth there.
    pen, x = build(case, shape)
    x = differentiable_point(pen, x)
    expected = central_differences(measure(pen, "value"), x)
    assert_close(run(pen, "grad", kind, x), expected, max(1e-7, kind.rtol), scale=max(pen.lam, 1e-3))


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@TORCH_KINDS
def test_value_backpropagates_to_grad(case, shape, kind):
    pen, x = build(case, shape)
    x = kind.asarray(differentiable_point(pen, x)).requires_grad_()
    pen.value(x).backward()
    assert_close(x.grad, pen.grad(x.detach()), 10 * kind.rtol, scale=max(pen.lam, 1e-3))


# ---- 5. dual norm -------------------------------------------------------------------------------

NORMS_ONLY = "the pairing of norm and dual_norm (Hölder) is a property of norms (is_norm)"


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
def test_holder_inequality(case, shape, kind, rng):
    pen, _ = build(case, shape)
    if not pen.is_norm:
        pytest.skip(NORMS_ONLY)
    scales = np.exp(rng.uniform(-3, 3, (40, 2)))
    for sx, sz in scales:
        x, z = (kind.asarray(s * rng.standard_normal(shape)) for s in (sx, sz))
        bound = float(pen.norm(x)) * float(pen.dual_norm(z))
        inner = float(np.vdot(to_numpy(x), to_numpy(z)))
        assert inner <= bound * (1 + kind.rtol) + kind.rtol * sx * sz


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
def test_dual_norm_is_attained_at_the_gradient(case, shape, kind):
    # grad(x) / lam is a subgradient of the norm at x, i.e. a unit dual vector with <x, g> = norm(x).
    pen, x = build(case, shape)
    if not pen.is_norm:
        pytest.skip(NORMS_ONLY)
    g = run(pen, "grad", kind, x) / pen.lam
    # two methods chained (grad, then dual_norm or norm and a p-term inner product), each within kind.rtol
    # of float64; the division by lam and the inner product's rounding add a few eps: 10 rtol covers them
    assert float(pen.dual_norm(kind.asarray(g))) == pytest.approx(1.0, rel=10 * kind.rtol)
    assert float(np.vdot(x, g)) == pytest.approx(run(pen, "norm", kind, x), rel=10 * kind.rtol)


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
def test_dual_norm_is_the_maximum_over_the_unit_ball(case, shape, kind, rng):
    r"""The projection :math:`p` of :math:`tz` on the unit ball nearly maximises :math:`\langle u, z\rangle`.

    With :math:`u^*` a maximiser, optimality of :math:`p` gives
    :math:`\langle u^*, z\rangle - \langle p, z\rangle \le (\|u^*\|^2 - \|p\|^2)/(2t)`, and
    :math:`\langle p, z\rangle \le \Omega^*(z)` by Hölder. With :math:`t = 1/(\sqrt{\varepsilon}\|z\|)`
    the gap and the rounding of the projection of the large :math:`tz` are both of order
    :math:`\sqrt\varepsilon R^2 \|z\|` (:math:`R \le 5` bounds the unit balls of the registry). An
    infinite dual norm (a seminorm) shows as :math:`\langle p, z\rangle` growing linearly in :math:`t`.
    """
    pen, _ = build(case, shape)
    if not pen.is_norm:
        pytest.skip(NORMS_ONLY)
    root_eps = math.sqrt(np.finfo(kind.dtype).eps)
    draws = rng.standard_normal((4, *shape))
    for z in [*draws, *(to_numpy(pen.project_dual(d, 1.0)) for d in draws)]:  # finite dual norms too
        z = to_numpy(kind.asarray(z))
        t = 1 / (root_eps * np.linalg.norm(z))
        support = float(np.vdot(run(pen, "project", kind, t * z, 1.0), z))
        dual = float(pen.dual_norm(kind.asarray(z)))
        if math.isfinite(dual):
            assert support == pytest.approx(dual, abs=25 * root_eps * np.linalg.norm(z))
        else:  # the increments of <p, z> over t, 10t, 100t grow tenfold: unbounded
            far, farther = (float(np.vdot(run(pen, "project", kind, f * t * z, 1.0), z)) for f in (10, 100))
            assert farther - far >= 5 * (far - support) > 0


# ---- 6. lambda_max -------------------------------------------------------------------------------


def regression(shape, rng, n=20):
    """A least-squares problem :math:`\\tfrac{1}{2n}\\|Y - XW\\|_F^2` with ``W = w.reshape(len, -1)``."""
    rows = shape[0] if len(shape) else 1
    X = rng.standard_normal((n, rows))
    W = rng.standard_normal((rows, math.prod(shape) // rows))
    return X, X @ W + 0.1 * rng.standard_normal((n, W.shape[1]))


def proximal_gradient(pen, X, Y, shape, iterations=30):
    """ISTA on :math:`\\tfrac{1}{2n}\\|Y - XW\\|_F^2 + P(w)` from ``w = 0``, in ``X``'s array kind."""
    xp = array_api_compat.array_namespace(X)
    n = X.shape[0]
    step = n / float(np.linalg.norm(to_numpy(X), 2) ** 2)
    w = xp.zeros(shape, dtype=X.dtype)
    for _ in range(iterations):
        residual = X @ xp.reshape(w, (X.shape[1], -1)) - Y
        w = pen.prox(w - step * xp.reshape(X.T @ residual / n, shape), step)
    return w


def objective(pen, X, Y, w):
    """:math:`\\tfrac{1}{2n}\\|Y - XW\\|_F^2 + P(w)` in float64."""
    X, Y, w = to_numpy(X), to_numpy(Y), to_numpy(w)
    fit = np.sum((Y - X @ w.reshape(X.shape[1], -1)) ** 2) / (2 * X.shape[0])
    return fit + float(pen.value(w))


@pytest.mark.parametrize(("case", "shape"), CASE_SHAPES)
@KINDS
def test_lambda_max_is_where_zero_becomes_optimal(case, shape, kind, rng):
    """At lambda_max the solution is exactly zero, at 0.99 lambda_max it is not; infinite means never zero.

    "At lambda_max" is at ``lambda_max * (1 + 4 eps)``: exactly at the boundary, whether the prox
    of ``-step * grad0`` is exactly zero is a tie that one rounding of the threshold decides, and
    it leaves entries of 1 ulp in about a third of random problems for L1 with weights, group,
    spectral and nuclear penalties alike. Four ulps above it, every entry must be an exact zero.
    """
    pen, _ = build(case, shape)
    X, Y = (kind.asarray(a) for a in regression(shape, rng))
    grad0 = kind.asarray(np.reshape(-to_numpy(X).T @ to_numpy(Y) / X.shape[0], shape))
    lam_max = pen.lambda_max(grad0)
    assert type(lam_max) is float
    if pen.is_norm:
        assert lam_max == pytest.approx(float(pen.dual_norm(grad0)), rel=kind.rtol)
    if math.isinf(lam_max):
        assert bool((proximal_gradient(pen.with_lam(1e3), X, Y, shape) != 0).any()), "zero at lam=1e3"
        return
    at = pen.with_lam(lam_max * (1 + 4 * np.finfo(kind.dtype).eps))
    assert not bool((proximal_gradient(at, X, Y, shape) != 0).any()), "nonzero solution at lambda_max"
    below = pen.with_lam(0.99 * lam_max)
    w = proximal_gradient(below, X, Y, shape)
    zero = kind.asarray(np.zeros(shape))
    assert objective(below, X, Y, w) < objective(below, X, Y, zero), "0 still optimal below lambda_max"


# ---- 7. array kinds -------------------------------------------------------------------------------


def method_args(pen, x, step):
    """The extra argument of each method for input ``x``: the step, and radii that put ``x`` outside."""
    return {
        "prox": (step,),
        "project": (outside_radius(measure(pen, "norm")(x)),),
        "project_dual": (outside_radius(measure(pen, "dual_norm")(x)),),
    }


@pytest.mark.parametrize(("case", "shape", "step"), CASE_INPUTS)
@KINDS
def test_methods_keep_kind_dtype_shape_device_and_input(case, shape, step, kind):
    pen, x = build(case, shape)
    args = method_args(pen, x, step)
    xk = kind.asarray(x)
    for method in METHODS:
        out = getattr(pen, method)(xk, *args.get(method, ()))
        if method == "lambda_max":
            assert type(out) is float
            continue
        assert kind.holds(out), (method, type(out), out.dtype)
        assert tuple(out.shape) == (() if method in SCALAR_METHODS else shape), method
        if kind.backend == "torch":
            assert out.device == xk.device
    np.testing.assert_array_equal(to_numpy(xk), x.astype(kind.dtype), err_msg="a method changed its input")


@pytest.mark.parametrize(("case", "shape", "step"), CASE_INPUTS)
@pytest.mark.parametrize("kind", ARRAY_KINDS[1:], ids=str)
def test_kinds_agree_with_numpy_float64(case, shape, step, kind):
    pen, x = build(case, shape)
    args = method_args(pen, x, step)
    for method in METHODS:
        expected = run(pen, method, ARRAY_KINDS[0], x, *args.get(method, ()))
        scale = max(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0), np.max(np.abs(x)))
        assert_close(run(pen, method, kind, x, *args.get(method, ())), expected, kind.rtol, scale)


# ---- 8. extreme magnitudes, empty and one-element shapes (hypothesis) --------------------------------

#: Binary exponents of the inputs: 1e-300 to 1e300 in float64, the normal range (with margin) in float32.
EXPONENTS = {"float64": (-1000, 996), "float32": (-120, 120)}


@st.composite
def extreme_inputs(draw, case):
    """A penalty of ``case``, an array kind, an input ``x``, and the power of two ``c`` with ``|x| / c < 1``.

    The entries are mantissas in [-1, 1] times :math:`2^e`, with the exponents spread over a
    drawn window of the dtype's range: all tiny, all huge, or mixed.
    """
    kind = draw(st.sampled_from(ARRAY_KINDS))
    shape = draw(shapes(case.kind))
    pen = case.make(shape, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    low, high = EXPONENTS[kind.dtype]
    bottom = draw(st.integers(low, high))
    top = draw(st.integers(bottom, high))
    mantissa = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1)))
    exponent = draw(hnp.arrays(np.int64, shape, elements=st.integers(bottom, top)))
    x = to_numpy(kind.asarray(np.ldexp(mantissa, exponent)))
    return pen, kind, x, 2.0 ** int(np.frexp(np.max(np.abs(x), initial=0.5))[1])


def homogeneous_methods(pen, kind, unit):
    """The methods that commute with scaling the input by ``c > 0``, by degree (1: ``m(cx) = c m(x)``).

    Always: ``dual_norm``, ``lambda_max`` (degree 1) and ``project_dual`` (equivariant with the
    radius). For a norm penalty every method: ``value``, ``norm`` (1), ``grad`` (0), ``prox`` (with
    the step) and ``project`` (with the radius). A non-norm penalty's ``norm`` counts when it is
    positively homogeneous on ``unit`` (L2's and max-norm's are, elastic net's and anchored's are not).
    """
    methods = {"dual_norm": 1, "lambda_max": 1, "project_dual": 1}
    if pen.is_norm:
        return methods | {"value": 1, "norm": 1, "grad": 0, "prox": 1, "project": 1}
    size = float(pen.norm(kind.asarray(unit)))
    if 0 < size < math.inf and all(
        float(pen.norm(kind.asarray(s * unit))) == pytest.approx(s * size, rel=kind.rtol) for s in (0.5, 2.0)
    ):
        methods |= {"norm": 1, "project": 1}
    return methods


def assert_sane(method, out, x, kind):
    """No NaN; arrays finite, of ``x``'s kind, dtype and shape; scalars >= 0, and 0 on an empty ``x``."""
    result = to_numpy(out)
    assert not np.isnan(result).any(), method
    if method == "lambda_max" or method in SCALAR_METHODS:
        assert result >= 0, method
        assert x.size or result == 0, method
    else:
        assert kind.holds(out) and tuple(out.shape) == x.shape, method
        assert np.isfinite(result).all(), method


@ALL_CASES
@given(data=st.data())
def test_extreme_magnitudes_give_sane_rescaled_results(case, data):
    """No NaN ever; finite arrays; and ``m(x) == c^d m(x / c)`` for the homogeneous methods.

    ``x / c`` has entries of magnitude below 1, where nothing overflows or underflows, so the
    identity compares the extreme input with the same penalty on a harmless one. It is checked
    when ``x / c`` is exact (``c`` is a power of two; entries far below the largest may underflow
    in ``x / c``). A scalar may be infinite only where ``c^d m(x / c)`` nears overflow. Numpy's
    overflow warnings are silenced: the results are what is checked.
    """
    pen, kind, x, c = data.draw(extreme_inputs(case))
    unit = to_numpy(kind.asarray(x / c))
    exact = np.array_equal(unit * c, x) and x.size > 0
    factors = {"prox": 2.0 ** data.draw(st.integers(-3, 3)), "project": 2.0 ** data.draw(st.integers(-3, 3))}
    factors["project_dual"] = factors["project"]
    homogeneous = homogeneous_methods(pen, kind, unit) if exact else {}
    for method in METHODS:
        args = (factors[method],) if method in factors else ()
        with np.errstate(all="ignore"):
            out = getattr(pen, method)(kind.asarray(x), *(c * a for a in args))
        assert_sane(method, out, x, kind)
        if method not in homogeneous:
            continue
        scale = c ** homogeneous[method]
        expected = run(pen, method, kind, unit, *args)
        if method == "lambda_max" or method in SCALAR_METHODS:
            if float(expected) * scale < float(np.finfo(kind.dtype).max) / 8:
                assert float(to_numpy(out)) / scale == pytest.approx(float(expected), rel=kind.rtol), method
        else:
            assert_close(to_numpy(out) / scale, expected, kind.rtol, max(1.0, np.max(np.abs(expected))))
