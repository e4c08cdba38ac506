"""MaxNorm: the L2,inf constraint on rows or columns, against closed forms and scipy.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``SCIPY``), named at each site. Beyond them:
SLSQP's epigraph form is first scaled into the dual ball (it ends up to 1.2e-8
relative outside, issue 12), and compared to ``atol=1e-4`` (the epigraph variables are not
strongly convex; the distance measured over 10 seeds and both axes is at most 1.2e-5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

from normpen.penalties.max_norm import MaxNorm
from penalties.cases import ARRAY_KINDS, CERTIFICATE, CHAIN, SAME_FORMULA, SUM_OF_TERMS, assert_methods_agree


def as_rows(x, axis):
    """The bounded slices as the rows of a matrix (a transposed copy for columns)."""
    return np.asarray(x) if axis == "rows" else np.asarray(x).T


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_projection_rescales_only_the_slices_above_the_radius(axis, rng):
    x = rng.normal(size=(5, 4)) * rng.uniform(0.2, 2.0, size=(5, 1)) * rng.uniform(0.2, 2.0, size=(1, 4))
    norms = np.linalg.norm(as_rows(x, axis), axis=1)
    radius = float(np.median(norms))
    z = as_rows(MaxNorm(1.0, axis).project(x, radius), axis)
    inside = norms <= radius
    np.testing.assert_array_equal(z[inside], as_rows(x, axis)[inside])  # bit for bit
    expected = as_rows(x, axis)[~inside] * (radius / norms[~inside])[:, None]
    np.testing.assert_allclose(z[~inside], expected, rtol=SAME_FORMULA)
    np.testing.assert_allclose(np.linalg.norm(z[~inside], axis=1), radius, rtol=SAME_FORMULA)


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_prox_is_the_projection_onto_the_c_ball_for_every_step(axis, rng):
    x = rng.normal(size=(3, 6))
    pen = MaxNorm(0.9, axis)
    expected = pen.project(x, 0.9)
    for step in (0.0, 1e-3, 1.0, 1e6):
        np.testing.assert_array_equal(pen.prox(x, step), expected)


def test_value_is_the_indicator_of_the_constraint(rng):
    x = rng.normal(size=(4, 3)) * 3
    pen = MaxNorm(1.0)
    assert pen.value(x) == np.inf
    assert pen.value(pen.prox(x, 1.0)) == 0.0
    assert pen.value(x / (np.linalg.norm(x, axis=1).max() * 1.01)) == 0.0
    assert pen.value(np.zeros((2, 2))) == 0.0


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=st.floats(-1e3, 1e3)),
    c=st.floats(1e-3, 1e3),
    axis=st.sampled_from(["rows", "cols"]),
)
def test_projected_matrices_are_feasible_despite_rounding(kind, x, c, axis):
    pen = MaxNorm(c, axis)
    assert float(pen.value(pen.prox(kind.asarray(x), 1.0))) == 0.0


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_norm_and_dual_norm_are_l2_inf_and_l21(axis, rng):
    x = rng.normal(size=(4, 7))
    pen = MaxNorm(1.0, axis)
    norms = np.linalg.norm(as_rows(x, axis), axis=1)
    assert pen.norm(x) == pytest.approx(norms.max(), rel=SAME_FORMULA)
    assert pen.dual_norm(x) == pytest.approx(norms.sum(), rel=SAME_FORMULA)
    # Hoelder for the pair (L2,inf, L2,1).
    for z in rng.normal(size=(100, 4, 7)):
        assert np.sum(z * x) <= pen.norm(z) * pen.dual_norm(x) * (1 + CERTIFICATE)


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_project_dual_matches_scipy_slsqp_on_the_l21_ball(axis, rng):
    x = rng.normal(size=(3, 2)) * 2
    pen = MaxNorm(1.0, axis)
    radius = 0.5 * pen.dual_norm(x)
    slices = as_rows(np.arange(6).reshape(3, 2), axis)
    flat = x.reshape(-1)

    def objective(v):
        return 0.5 * np.sum((v[:6] - flat) ** 2)

    # Epigraph form: t_g^2 >= ||z_g||^2, t >= 0, sum t <= radius.
    constraints = [
        {
            "type": "ineq",
            "fun": lambda v: np.array([v[6 + i] ** 2 - v[g] @ v[g] for i, g in enumerate(slices)]),
        },
        {"type": "ineq", "fun": lambda v: radius - np.sum(v[6:])},
    ]
    start = np.concatenate([flat, np.linalg.norm(flat[slices], axis=1)]) * 0.5
    bounds = [(None, None)] * 6 + [(0, None)] * len(slices)
    result = minimize(
        objective,
        start,
        constraints=constraints,
        bounds=bounds,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    numeric = result.x[:6].reshape(3, 2)
    numeric = numeric * min(
        1.0, radius / pen.dual_norm(numeric)
    )  # SLSQP ends up to 1.2e-8 outside: scale it in
    ours = pen.project_dual(x, radius)
    assert pen.dual_norm(ours) == pytest.approx(radius, rel=CHAIN)
    # ours is within 8 eps ||x|| of the projection (a few roundings): squared distance within 16 eps ||x||^2
    assert np.sum((ours - x) ** 2) <= np.sum((numeric - x) ** 2) + 16 * np.finfo(float).eps * np.sum(x**2)
    np.testing.assert_allclose(ours, numeric, atol=1e-4)  # SLSQP, measured: see the module docstring


def test_lambda_max_of_a_constraint_is_infinite_unless_the_gradient_vanishes(rng):
    # A constraint has no strength: min_W 1/2||W - Y||^2 s.t. ||W||_{2,inf} <= c is never solved by W = 0
    # when Y != 0, whatever the (unused) lam; with Y = 0 it is, for every lam.
    y = rng.normal(size=(4, 3))
    pen = MaxNorm(1.0)
    assert pen.lambda_max(-y) == math.inf
    assert np.abs(pen.with_lam(1e6).prox(y, 1.0)).max() > 0
    assert pen.lambda_max(np.zeros((4, 3))) == 0.0


def test_dual_norm_of_the_gradient_is_where_the_l2_inf_penalty_zeroes_the_solution(rng):
    # min_W 1/2||W - Y||^2 + lam ||W||_{2,inf}: grad F(0) = -Y, and by Moreau the minimiser is
    # Y - project_dual(Y, lam), zero exactly when lam >= ||Y||_{2,1} = dual_norm(-Y).
    y = rng.normal(size=(4, 3))
    pen = MaxNorm(1.0)
    lam_max = float(pen.dual_norm(-y))
    np.testing.assert_allclose(y - pen.project_dual(y, lam_max), 0.0, atol=SAME_FORMULA)
    assert np.abs(y - pen.project_dual(y, 0.95 * lam_max)).max() > 1e-3


def test_grad_is_zero(rng):
    x = rng.normal(size=(3, 3)) * 10
    np.testing.assert_array_equal(MaxNorm(1.0).grad(x), 0.0)


def test_constructor_arguments_and_lam():
    pen = MaxNorm(2.0, "cols")
    assert (pen.c, pen.axis, pen.lam) == (2.0, "cols", 0.0)
    assert pen.with_lam(0.3).lam == 0.3 and pen.with_lam(0.3).c == 2.0
    with pytest.raises(TypeError):
        MaxNorm(2.0, "cols", 0.1)  # lam is keyword-only: the constraint does not use it


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0.0,), ValueError, "c must be > 0"),
        ((-1.0,), ValueError, "c must be > 0"),
        ((float("nan"),), ValueError, "c must be finite"),
        (("1",), TypeError, "c must be a real number"),
        ((1.0, "diag"), ValueError, "axis must be 'rows' or 'cols'"),
    ],
)
def test_bad_arguments_raise_naming_them(args, error, message):
    with pytest.raises(error, match=message):
        MaxNorm(*args)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_non_matrix_input_raises_naming_the_input(shape):
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        MaxNorm(1.0).project(np.ones(shape), 1.0)
    with pytest.raises(ValueError, match=r"grad0 must be 2-D"):
        MaxNorm(1.0).lambda_max(np.ones(shape))


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_numpy_and_torch_float32_and_float64_agree(kind, axis, rng):
    x64 = rng.normal(size=(4, 5))
    pen = MaxNorm(0.8, axis)
    calls = (
        ("norm", ()),
        ("dual_norm", ()),
        ("grad", ()),
        ("prox", (1.0,)),
        ("project", (0.5,)),
        ("project_dual", (1.5,)),
    )
    assert_methods_agree(pen, x64, kind, calls, rtol=kind.rtol)
    x = kind.asarray(x64)
    assert float(pen.value(x)) == np.inf and float(pen.value(pen.prox(x, 1.0))) == 0.0


@given(
    x=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 4)),
        elements=st.one_of(st.just(0.0), st.floats(1e-3, 10), st.floats(-10, -1e-3)),
    ),
    exponent=st.integers(-990, 990),
)
def test_operations_scale_with_the_input_from_1e_minus_300_to_1e300(x, exponent):
    c = 2.0**exponent
    pen = MaxNorm(c)
    y = x * c
    assert pen.norm(y) == pytest.approx(pen.norm(x) * c, rel=SUM_OF_TERMS)
    assert pen.dual_norm(y) == pytest.approx(pen.dual_norm(x) * c, rel=SUM_OF_TERMS)
    for method, arg in (("project", 0.5), ("project_dual", 0.7)):
        np.testing.assert_allclose(
            getattr(pen, method)(y, arg * c) / c, getattr(pen, method)(x, arg), rtol=CHAIN, atol=1e-300
        )
    assert pen.value(pen.prox(y, 1.0)) == 0.0
