"""L2-specific tests: closed forms, scipy references, the squared-norm conventions, extreme magnitudes.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``SCIPY``), named at each site. Beyond them:
L-BFGS-B with ``gtol=1e-13`` is within 1e-13, so ``atol=1e-9``; Nelder-Mead on the smoothed norm
``sqrt(||z||^2 + 1e-30)`` stops at ``xatol=1e-12`` on the simplex, and the smoothing moves the
minimiser by at most 1e-15, so the ``SCIPY`` tier holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

from normpen._array import project_l2_ball
from normpen.penalties.l2 import L2
from penalties.cases import (
    ARRAY_KINDS,
    CERTIFICATE,
    CHAIN,
    SAME_FORMULA,
    SCIPY,
    SUM_OF_TERMS,
    assert_methods_agree,
    every_method,
)


def test_closed_forms(rng):
    x = rng.standard_normal((3, 4))
    pen = L2(0.7)
    np.testing.assert_allclose(pen.value(x), 0.35 * np.sum(x**2), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.grad(x), 0.7 * x, rtol=SAME_FORMULA)
    np.testing.assert_allclose(pen.prox(x, 0.3), x / 1.21, rtol=SAME_FORMULA)
    np.testing.assert_allclose(pen.norm(x), np.linalg.norm(x), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.dual_norm(x), np.linalg.norm(x), rtol=SUM_OF_TERMS)
    radius = 0.5 * np.linalg.norm(x)
    np.testing.assert_allclose(pen.project(x, radius), 0.5 * x, rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.project_dual(x, radius), 0.5 * x, rtol=SUM_OF_TERMS)


def test_prox_matches_numerical_minimisation(rng):
    x, step, pen = rng.standard_normal(5), 0.8, L2(1.3)

    def objective(z):
        return 0.5 * np.sum((z - x) ** 2) + step * float(pen.value(z)), z - x + step * pen.grad(z)

    ref = minimize(objective, np.zeros_like(x), jac=True, method="L-BFGS-B", options={"gtol": 1e-13})
    np.testing.assert_allclose(pen.prox(x, step), ref.x, atol=1e-9)


@pytest.mark.parametrize("method", ["project", "project_dual"])
def test_projection_matches_slsqp(rng, method):
    x, radius = 3 * rng.standard_normal(5), 1.5
    ref = minimize(
        lambda z: np.sum((z - x) ** 2),
        np.zeros_like(x),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: radius**2 - np.sum(z**2)}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    np.testing.assert_allclose(getattr(L2(0.1), method)(x, radius), ref.x, atol=SCIPY)


def test_moreau_identity_of_the_norm(rng):
    """x - project_dual(x, t) is the prox of t*||.||_2 (block soft thresholding), from scipy."""
    x, t = rng.standard_normal(4), 0.9
    ref = minimize(
        lambda z: 0.5 * np.sum((z - x) ** 2) + t * np.sqrt(np.sum(z**2) + 1e-30),
        x,
        method="Nelder-Mead",
        options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000},
    )
    np.testing.assert_allclose(x - L2(1.0).project_dual(x, t), ref.x, atol=SCIPY)


def test_gradient_step_is_weight_decay(rng):
    x, lr, lam = rng.standard_normal(6), 0.1, 0.05
    np.testing.assert_allclose(x - lr * L2(lam).grad(x), (1 - lr * lam) * x, rtol=SAME_FORMULA)


def test_ridge_lambda_max_is_infinite_unless_gradient_vanishes(rng):
    pen = L2(1.0)
    assert pen.lambda_max(rng.standard_normal(3)) == math.inf
    assert pen.lambda_max(np.zeros(3)) == 0.0


def test_inside_points_are_unchanged(rng):
    x = rng.standard_normal(7)
    radius = 1.01 * np.linalg.norm(x)
    assert np.array_equal(L2(0.1).project(x, radius), x)
    assert np.array_equal(L2(0.1).project_dual(x, radius), x)
    assert np.array_equal(L2(0.1).prox(x, 0.0), x)


def test_zero_radius_dual_projection_is_zero(rng):
    x = rng.standard_normal(3)
    assert np.array_equal(L2(0.1).project_dual(x, 0.0), np.zeros(3))
    assert np.array_equal(L2(0.1).project_dual(np.zeros(3), 0.0), np.zeros(3))


def test_rowwise_ball_projection(rng):
    """project_l2_ball with an axis projects every slice onto its own ball."""
    x = rng.standard_normal((4, 3))
    x[1] *= 1e-3
    rows = project_l2_ball(x, 0.5, axis=1)
    for row, ref in zip(rows, x, strict=True):
        np.testing.assert_allclose(row, L2(1.0).project(ref, 0.5), rtol=SUM_OF_TERMS)
    assert np.array_equal(rows[1], x[1])


@given(
    x=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-1, 1).filter(lambda v: abs(v) > 1e-3)),
    exponent=st.integers(-300, 300),
)
def test_extreme_magnitudes(x, exponent):
    """Norm, projection and value stay exact for entries from 1e-300 to 1e300 (squares would not)."""
    scale = 10.0**exponent
    big = x * scale
    exact = math.hypot(*x) * scale
    np.testing.assert_allclose(L2(1.0).norm(big), exact, rtol=CHAIN)
    radius = 0.5 * exact
    np.testing.assert_allclose(L2(1.0).project(big, radius), 0.5 * big, rtol=CHAIN)
    value = L2(10.0**-exponent).value(big)
    np.testing.assert_allclose(value, 0.5 * 10.0**exponent * math.hypot(*x) ** 2, rtol=CERTIFICATE)


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
def test_numpy_and_torch_agree(rng, kind):
    x, pen = rng.standard_normal((2, 3)), L2(0.4)
    assert_methods_agree(pen, x, kind, every_method(0.5, 0.7), rtol=kind.rtol)


def test_gradient_flows_through_value():
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    L2(0.3).value(x).backward()
    torch.testing.assert_close(x.grad, 0.3 * x.detach())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L2(-1.0), "lam must be >= 0"),
        (lambda: L2(float("nan")), "lam must be finite"),
        (lambda: L2("0.1"), "lam must be a real number"),
        (lambda: L2(0.1).prox(np.ones(2), -0.5), "step must be >= 0"),
        (lambda: L2(0.1).project(np.ones(2), 0.0), "radius must be > 0"),
        (lambda: L2(0.1).value(np.array([1.0, np.inf])), "x contains NaN"),
        (lambda: L2(0.1).value(np.array([1, 2])), "x must have a real floating dtype"),
    ],
)
def test_bad_input_names_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
