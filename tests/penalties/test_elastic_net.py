"""ElasticNet-specific tests: closed forms, scipy and scikit-learn references, the L1 and L2 limits.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``SCIPY``), named at each site. Beyond them:
the split-variable prox reference, L-BFGS-B with ``gtol=1e-13`` on a problem of 2n variables whose
curvature is at least 1/2, is within 2e-13; ``1e-7`` leaves room for the bound constraints'
projected gradient. The projection against brentq's root (``rtol=1e-15`` on
:math:`\\mu`) agrees to ``1e-9 (1 + max|x|)``: the derivative of the projection in
:math:`\\mu` is at most ``max|x|`` times a factor 10 for these strengths, and brentq's stopping
test gives :math:`\\mu` to 1e-15 relative plus its ``xtol``; on the sphere the relative
``1e-9`` is that error over a radius of at least 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import brentq, minimize
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet as SklearnElasticNet

from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.l1 import L1
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

RATIOS = (0.0, 0.3, 0.8, 1.0)


def omega(z, rho):
    """The elastic-net regulariser written out: rho ||z||_1 + (1 - rho)/2 ||z||^2."""
    return rho * np.sum(np.abs(z)) + (1 - rho) / 2 * np.sum(z**2)


def split_objective(x, rho, t):
    """``0.5||z - x||^2 + t * omega(z)`` with ``z = p - q``, ``p, q >= 0``: smooth, for L-BFGS-B."""
    n = x.size

    def fun(pq):
        z = pq[:n] - pq[n:]
        residual = z - x + t * (1 - rho) * z
        value = 0.5 * np.sum((z - x) ** 2) + t * (rho * np.sum(pq) + (1 - rho) / 2 * np.sum(z**2))
        return value, np.concatenate([residual + t * rho, -residual + t * rho])

    return fun


def reference_projection(x, rho, radius):
    """Projection from its KKT form: prox of mu*omega, mu found by brentq on omega(prox) = radius."""

    def prox(mu):
        return np.sign(x) * np.maximum(np.abs(x) - mu * rho, 0) / (1 + mu * (1 - rho))

    if omega(x, rho) <= radius:
        return x
    high = 1.0
    while omega(prox(high), rho) > radius:
        high *= 2
    mu = brentq(lambda m: omega(prox(m), rho) - radius, 0, high, xtol=1e-300, rtol=1e-15, maxiter=500)
    return prox(mu)


@pytest.mark.parametrize("rho", RATIOS)
def test_closed_forms(rng, rho):
    x = rng.standard_normal((2, 5))
    x[0, 0] = 0.0
    pen, lam = ElasticNet(0.6, l1_ratio=rho), 0.6
    np.testing.assert_allclose(pen.value(x), lam * omega(x, rho), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.norm(x), omega(x, rho), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.grad(x), lam * (rho * np.sign(x) + (1 - rho) * x), rtol=SAME_FORMULA)
    assert pen.grad(x)[0, 0] == 0.0
    step = 0.7
    expected = np.sign(x) * np.maximum(np.abs(x) - step * lam * rho, 0) / (1 + step * lam * (1 - rho))
    np.testing.assert_allclose(pen.prox(x, step), expected, rtol=SAME_FORMULA)
    np.testing.assert_allclose(pen.project_dual(x, 0.9), np.clip(x, -0.9 * rho, 0.9 * rho), rtol=SAME_FORMULA)
    dual = np.max(np.abs(x)) / rho if rho > 0 else math.inf
    assert pen.dual_norm(x) == pytest.approx(dual, rel=SAME_FORMULA)
    assert pen.lambda_max(x) == pytest.approx(dual, rel=SAME_FORMULA)
    assert pen.lambda_max(np.zeros_like(x)) == 0.0


@pytest.mark.parametrize("rho", RATIOS)
def test_prox_matches_numerical_minimisation(rng, rho):
    x, pen, step = 2 * rng.standard_normal(6), ElasticNet(0.9, l1_ratio=rho), 0.8
    fun = split_objective(x, rho, step * pen.lam)
    start = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)])
    ref = minimize(
        fun,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * (2 * x.size),
        options={"gtol": 1e-13, "ftol": 1e-16},
    )
    np.testing.assert_allclose(pen.prox(x, step), ref.x[: x.size] - ref.x[x.size :], atol=1e-7)


@pytest.mark.parametrize("rho", RATIOS)
def test_projection_matches_slsqp(rng, rho):
    x, radius, n = 2 * rng.standard_normal(5), 0.8, 5

    def constraint(pq):
        z = pq[:n] - pq[n:]
        return radius - rho * np.sum(pq) - (1 - rho) / 2 * np.sum(z**2)

    ref = minimize(
        lambda pq: np.sum((pq[:n] - pq[n:] - x) ** 2),
        np.zeros(2 * n),
        method="SLSQP",
        bounds=[(0, None)] * (2 * n),
        constraints=[{"type": "ineq", "fun": constraint}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    np.testing.assert_allclose(
        ElasticNet(0.5, l1_ratio=rho).project(x, radius), ref.x[:n] - ref.x[n:], atol=SCIPY
    )


@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=5), elements=st.floats(-10, 10)),
    rho=st.floats(0, 1),
    shrink=st.floats(0.01, 1.5),
)
def test_projection_matches_kkt_bisection(x, rho, shrink):
    """The sort-based multiplier against brentq, for every shape, mix and radius (inside ones too)."""
    radius = max(shrink * omega(x, rho), 1e-3)
    z = ElasticNet(1.0, l1_ratio=rho).project(x, radius)
    np.testing.assert_allclose(z, reference_projection(x, rho, radius), atol=1e-9 * (1 + np.abs(x).max()))
    if omega(x, rho) > radius * (1 + CERTIFICATE):
        assert omega(z, rho) == pytest.approx(radius, rel=1e-9, abs=CERTIFICATE)
    elif omega(x, rho) < radius * (1 - 1e-12):
        assert np.array_equal(z, x)


@given(
    x=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(0.1, 1) | st.floats(-1, -0.1)),
    exponent=st.integers(-300, 300),
    rho=st.floats(0, 0.99),
)
def test_projection_at_extreme_magnitudes(x, exponent, rho):
    """Entries from 1e-300 to 1e300 land on the boundary of the unit set (or stay, when inside)."""
    big = x * 10.0**exponent
    z = ElasticNet(1.0, l1_ratio=rho).project(big, 1.0)
    assert np.all(np.isfinite(z))
    if exponent <= -1:  # entries <= 0.1: inside
        assert np.array_equal(z, big)
    elif exponent >= 2:  # entries >= 10: outside
        assert omega(z, rho) == pytest.approx(1.0, rel=1e-9)
        assert np.all(np.sign(z) * np.sign(big) >= 0)


@given(
    x=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(0.1, 1) | st.floats(-1, -0.1)),
    exponent=st.integers(-300, 300),
)
def test_value_at_extreme_magnitudes(x, exponent):
    """lam * (1/2)||x||^2 is finite and exact where it is finite, though ||x||^2 alone is not."""
    big = x * 10.0**exponent
    value = ElasticNet(10.0**-exponent, l1_ratio=0.0).value(big)
    np.testing.assert_allclose(value, 0.5 * 10.0**exponent * math.hypot(*x) ** 2, rtol=CERTIFICATE, atol=0)


def test_l1_ratio_one_is_the_lasso(rng):
    x, grad0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    en, l1 = ElasticNet(0.4, l1_ratio=1.0), L1(0.4)
    for method, args in every_method(0.6, 1.1, 0.3):
        np.testing.assert_allclose(
            getattr(en, method)(x, *args),
            getattr(l1, method)(x, *args),
            rtol=SUM_OF_TERMS,
            atol=SAME_FORMULA,
            err_msg=method,
        )
    assert en.lambda_max(grad0) == pytest.approx(l1.lambda_max(grad0), rel=SAME_FORMULA)


def test_l1_ratio_zero_is_ridge(rng):
    x, grad0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    en, l2 = ElasticNet(0.4, l1_ratio=0.0), L2(0.4)
    for method, args in [("value", ()), ("grad", ()), ("prox", (0.6,))]:
        np.testing.assert_allclose(
            getattr(en, method)(x, *args), getattr(l2, method)(x, *args), rtol=SUM_OF_TERMS, err_msg=method
        )
    assert en.lambda_max(grad0) == l2.lambda_max(grad0) == math.inf
    np.testing.assert_allclose(en.norm(x), 0.5 * l2.norm(x) ** 2, rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(en.project(x, 0.2), l2.project(x, math.sqrt(0.4)), rtol=CHAIN)


@pytest.mark.parametrize("rho", [0.2, 0.7, 1.0])
def test_lambda_max_is_where_scikit_learn_zeroes_every_coefficient(rho):
    data = load_diabetes()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target - data.target.mean()
    grad0 = -X.T @ y / len(y)
    lam_max = ElasticNet(1.0, l1_ratio=rho).lambda_max(grad0)

    def sklearn_coef(alpha):
        model = SklearnElasticNet(alpha=alpha, l1_ratio=rho, fit_intercept=False, tol=1e-10, max_iter=10000)
        return model.fit(X, y).coef_

    assert np.all(sklearn_coef(lam_max * (1 + 1e-9)) == 0)
    assert np.count_nonzero(sklearn_coef(lam_max * 0.98)) >= 1


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
def test_numpy_and_torch_agree(rng, kind):
    x, pen = rng.standard_normal((2, 4)), ElasticNet(0.4, l1_ratio=0.6)
    assert_methods_agree(pen, x, kind, every_method(0.5, 0.7), rtol=kind.rtol)


def test_empty_input():
    pen = ElasticNet(0.4)
    empty = np.zeros((0, 3))
    assert pen.value(empty) == 0.0
    assert pen.project(empty, 1.0).shape == (0, 3)
    assert pen.dual_norm(empty) == 0.0


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: ElasticNet(0.1, l1_ratio=-0.1), ValueError, "l1_ratio must lie in"),
        (lambda: ElasticNet(0.1, l1_ratio=1.5), ValueError, "l1_ratio must lie in"),
        (lambda: ElasticNet(0.1, l1_ratio=float("nan")), ValueError, "l1_ratio must be finite"),
        (lambda: ElasticNet(0.1, l1_ratio="half"), TypeError, "l1_ratio must be a real number"),
        (lambda: ElasticNet(-0.1), ValueError, "lam must be >= 0"),
        (lambda: ElasticNet(0.1).project(np.ones(2), -1.0), ValueError, "radius must be > 0"),
    ],
)
def test_bad_input_names_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()
