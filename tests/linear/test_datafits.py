"""Datafits against finite differences, numerical conjugates and closed forms."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from normpen.linear.datafits import Hinge, Logistic, Multinomial, MultitaskQuadratic, Quadratic, SquaredHinge
from normpen.linear.datafits.base import normalize_weights

SMOOTH = [Quadratic(), Logistic(), SquaredHinge(), Multinomial(), MultitaskQuadratic()]
ALL = [*SMOOTH, Hinge()]


def _problem(datafit, n, rng):
    """Encoded target and a random linear predictor of the datafit's shape."""
    if isinstance(datafit, Multinomial):
        y = datafit.encode_target(rng.integers(0, 3, n))
    elif isinstance(datafit, MultitaskQuadratic):
        y = datafit.encode_target(rng.standard_normal((n, 2)))
    elif isinstance(datafit, Quadratic):
        y = datafit.encode_target(rng.standard_normal(n))
    else:
        y = datafit.encode_target(np.where(rng.random(n) < 0.5, -1.0, 1.0))
    z = rng.standard_normal(y.shape) * 2
    return y, z


def _name(datafit):
    return type(datafit).__name__


@pytest.mark.parametrize("datafit", SMOOTH, ids=_name)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None)
def test_raw_gradient_matches_central_differences(datafit, n, seed):
    rng = np.random.default_rng(seed)
    y, z = _problem(datafit, n, rng)
    weights = normalize_weights(rng.uniform(0, 2, n) + (np.arange(n) == 0), n, z)
    grad = datafit.raw_gradient(y, z, weights)
    h = 1e-6
    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[index] = h
        numeric[index] = (datafit.value(y, z + step, weights) - datafit.value(y, z - step, weights)) / (2 * h)
    # truncation h^2 |F'''| / 6 <= 1e-13; rounding n eps |F| / h <= 12 * 2.2e-16 * 72 / 2e-6 ~ 1e-7 for losses
    # <= 72 (|z| <= 8, |y| <= 4); measured <= 2.3e-9 over 20 seeds
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


@pytest.mark.parametrize("datafit", SMOOTH, ids=_name)
def test_second_derivative_matches_differences_and_respects_curvature(datafit):
    rng = np.random.default_rng(0)
    y, z = _problem(datafit, 40, rng)
    h = 1e-6
    numeric = (datafit.derivative(y, z + h) - datafit.derivative(y, z - h)) / (2 * h)
    second = datafit.second_derivative(y, z)
    if isinstance(datafit, Multinomial):
        # shifting every class moves nothing: compare the diagonal by one-class shifts
        numeric = np.stack(
            [
                (
                    datafit.derivative(y, z + h * np.eye(3)[k])[:, k]
                    - datafit.derivative(y, z - h * np.eye(3)[k])[:, k]
                )
                / (2 * h)
                for k in range(3)
            ],
            axis=1,
        )
    # the differences straddle the squared hinge's kink only where |yz - 1| < h
    kink = np.abs(y * z - 1) < 2 * h if isinstance(datafit, SquaredHinge) else np.zeros(z.shape, dtype=bool)
    # rounding 2 ulp(|l'| <= 18) / 2h ~ 4e-9, truncation h^2 |l''''| / 6 ~ 1e-14; measured <= 6.1e-10 over 20
    # seeds
    np.testing.assert_allclose(second[~kink], numeric[~kink], atol=1e-8)
    assert np.all(second <= datafit.curvature + 1e-14)  # a few ulp of a curvature <= 2


@pytest.mark.parametrize("datafit", ALL, ids=_name)
def test_fenchel_young_equality_at_the_derivative(datafit):
    rng = np.random.default_rng(1)
    y, z = _problem(datafit, 30, rng)
    u = datafit.derivative(y, z)
    inner = np.sum(u * z, axis=-1) if z.ndim == 2 else u * z
    # three terms of size <= 42: 4 * 42 * eps ~ 4e-14 (measured <= 3.6e-15)
    np.testing.assert_allclose(datafit.loss(y, z) + datafit.conjugate(y, u), inner, atol=1e-13)


@pytest.mark.parametrize("datafit", [Logistic(), SquaredHinge(), Hinge(), Quadratic()], ids=_name)
@pytest.mark.parametrize("label", [-1.0, 1.0])
@pytest.mark.parametrize("u", [-0.9, -0.5, -0.05, 0.0])
def test_conjugate_matches_a_numerical_supremum(datafit, label, u):
    """:math:`\\ell^*(v) = \\sup_z vz - \\ell(z)` by bounded scalar minimisation; v = u*y is in the domain."""
    y = np.array([label])
    v = u * label

    def negative(z):
        return -(v * z - float(datafit.loss(y, np.array([z]))[0]))

    result = minimize_scalar(negative, bounds=(-60, 60), method="bounded", options={"xatol": 1e-12})
    # bounded Brent stops within sqrt(eps) |z| + xatol / 3 ~ 1.5e-8 of the maximiser (|z| <= 1 at the hinges'
    # kink), costing <= |slope| <= 1 times that in value; smooth maxima cost its square (measured <= 1.5e-9)
    assert datafit.conjugate(y, np.array([v]))[0] == pytest.approx(-result.fun, abs=1e-7)


@pytest.mark.parametrize("datafit", [Logistic(), SquaredHinge(), Hinge()], ids=_name)
def test_conjugate_is_infinite_off_its_domain(datafit):
    y = np.array([1.0, -1.0])
    assert np.all(np.isinf(datafit.conjugate(y, np.array([0.5, -0.5]))))


def test_multinomial_conjugate_domain_is_the_shifted_simplex():
    Y = Multinomial().encode_target(np.array([0, 2]))
    inside = np.array([[-0.5, 0.25, 0.25], [0.2, 0.3, -0.5]])
    outside = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, -0.4]])
    assert np.all(np.isfinite(Multinomial().conjugate(Y, inside)))
    assert np.all(np.isinf(Multinomial().conjugate(Y, outside)))


@pytest.mark.parametrize("datafit", SMOOTH, ids=_name)
def test_fit_intercept_zeroes_the_intercept_gradient(datafit):
    rng = np.random.default_rng(2)
    y, z = _problem(datafit, 50, rng)
    weights = normalize_weights(rng.uniform(0.1, 1, 50), 50, z)
    shift = datafit.fit_intercept(y, z, weights)
    shifted = z + shift
    gradient = datafit.raw_gradient(y, shifted, weights).sum(axis=0)
    # Newton stops at 10 eps max(1, |shift|), or one full step after the decrement falls below 4 eps |F|
    # (gradient ~ sqrt(4 eps |F| H) ~ 1e-7), which squares it to ~1e-14; measured <= 7.6e-17
    np.testing.assert_allclose(gradient, 0, atol=1e-12)
    assert datafit.value(y, shifted, weights) <= datafit.value(y, z, weights)


def test_quadratic_intercept_is_the_weighted_mean_residual():
    rng = np.random.default_rng(3)
    y, z, s = rng.standard_normal(20), rng.standard_normal(20), rng.uniform(0, 1, 20)
    weights = normalize_weights(s, 20, z)
    # 20 terms <= 3 in another order: 20 * 3 * eps ~ 1.3e-14
    assert Quadratic().fit_intercept(y, z, weights) == pytest.approx(np.average(y - z, weights=s), abs=1e-13)


@pytest.mark.parametrize("datafit", [Quadratic(), Logistic(), SquaredHinge()], ids=_name)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_lipschitz_bounds_the_exact_curvature(datafit, fit_intercept):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 6)) + 1.0
    s = rng.uniform(0.2, 1, 30)
    a = s / s.sum()
    design = np.column_stack([X, np.ones(30)]) if fit_intercept else X
    exact = datafit.curvature * np.linalg.eigvalsh(design.T @ (a[:, None] * design))[-1]
    bound = datafit.lipschitz(X, s, fit_intercept)
    # the power method's Rayleigh quotient is <= the top eigenvalue, then inflated by exactly 1%; eigvalsh
    # rounds by ~30 eps ~ 7e-15 relative
    assert exact <= bound <= 1.01 * exact * (1 + 1e-12)


def test_objective_and_gradient_helpers_match_their_definitions():
    rng = np.random.default_rng(5)
    X, w = rng.standard_normal((25, 4)), rng.standard_normal(4)
    y = np.where(rng.random(25) < 0.5, -1.0, 1.0)
    b = 0.3
    z = X @ w + b
    # 25 positive terms in another order (25 eps); gradients: 25 terms <= 3 / 25 each, 25 * 0.12 * eps ~ 7e-16
    assert Logistic().objective(X, y, w, b) == pytest.approx(np.mean(np.logaddexp(0, -y * z)), rel=1e-14)
    grad_w, grad_b = Logistic().gradient(X, y, w, b)
    residual = -y / (1 + np.exp(y * z)) / 25
    np.testing.assert_allclose(grad_w, X.T @ residual, rtol=0, atol=1e-15)
    assert grad_b == pytest.approx(residual.sum(), abs=1e-15)


@pytest.mark.parametrize("datafit", SMOOTH, ids=_name)
def test_torch_and_numpy_agree(datafit):
    rng = np.random.default_rng(6)
    y, z = _problem(datafit, 15, rng)
    weights = normalize_weights(None, 15, z)
    yt, zt = torch.tensor(y), torch.tensor(z)
    wt = normalize_weights(None, 15, zt)
    # the same float64 formulas on 15 samples; torch's exp/log may differ from numpy's by an ulp or two:
    # ~15 eps ~ 3e-15 relative (measured 0 or 1 ulp), zeros to 1e-15 absolute
    assert float(datafit.value(yt, zt, wt)) == pytest.approx(float(datafit.value(y, z, weights)), rel=1e-13)
    np.testing.assert_allclose(
        datafit.raw_gradient(yt, zt, wt).numpy(), datafit.raw_gradient(y, z, weights), rtol=1e-13, atol=1e-15
    )
    np.testing.assert_allclose(
        datafit.conjugate(yt, zt * 0).numpy(), datafit.conjugate(y, z * 0), rtol=1e-13, atol=1e-15
    )


@given(scale=st.floats(1e-3, 700))
@settings(max_examples=30, deadline=None)
def test_logistic_is_finite_and_exact_for_extreme_margins(scale):
    y = np.array([1.0, -1.0, 1.0])
    z = np.array([scale, scale, -scale])
    loss = Logistic().loss(y, z)
    assert np.all(np.isfinite(loss))
    # one exp and one log1p: a few ulp (measured <= 2.1e-16 on 400 scales); abs=1e-300 for the subnormal tail
    assert loss[0] == pytest.approx(np.log1p(np.exp(-scale)), rel=1e-14, abs=1e-300)
    assert loss[1] == pytest.approx(scale + np.log1p(np.exp(-scale)), rel=1e-14)
    assert np.all(np.isfinite(Logistic().derivative(y, z)))


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="needs an extended-precision reference")
def test_logistic_derivatives_keep_their_relative_accuracy():
    # |t| <= 700: beyond about 708 exp(-|t|) leaves float64's normal range and its relative accuracy
    t = np.clip(
        np.random.default_rng(0).standard_normal(2000) * np.repeat([1e-8, 3.0, 30.0, 300.0], 500), -700, 700
    )
    e = np.exp(-np.abs(t).astype(np.longdouble))  # the reference in x87 extended precision, eps 1.1e-19
    sigma_minus = np.where(t >= 0, e, 1) / (1 + e)  # sigma(-t)
    curvature = e / (1 + e) ** 2
    eps = np.finfo(np.float64).eps
    # each value is exp of -|t| (numpy's vectorised exp: within 4 ulp), then one addition and one division
    # (phi') or one addition, one square and one division (phi''), a rounding each: at most 4 + 3 = 7 eps
    # relative, the reference's own error (1e-19) aside; measured 1.0 and 1.8 eps (the former forms,
    # exp(-logaddexp(...)), lose |t| eps: 7.7 and 28 eps here)
    derivative = Logistic().phi_derivative(t)
    second = Logistic().phi_second_derivative(t)
    assert np.max(np.abs(derivative + sigma_minus) / sigma_minus) <= 7 * eps
    assert np.max(np.abs(second - curvature) / curvature) <= 7 * eps


@pytest.mark.parametrize(
    ("datafit", "y", "message"),
    [
        (Logistic(), np.array([0.0, 1.0]), "-1, \\+1"),
        (Hinge(), np.array([[1.0], [-1.0]]), "1-D"),
        (Quadratic(), np.array([1.0, np.nan]), "NaN"),
        (Quadratic(), np.ones((3, 2)), "MultitaskQuadratic"),
        (MultitaskQuadratic(), np.ones(3), "2-D"),
        (Multinomial(), np.array([0.5, 1.0]), "integer class labels"),
        (Multinomial(), np.array([-1, 1]), "0..K-1"),
        (Multinomial(), np.array([[0.5, 0.6]]), "probabilities"),
    ],
)
def test_wrong_targets_are_refused_with_a_fix(datafit, y, message):
    with pytest.raises(ValueError, match=message):
        datafit.encode_target(y)


@pytest.mark.parametrize(
    ("weights", "message"),
    [(np.ones(3), "shape \\(4,\\)"), (np.array([1, -1, 1, 1.0]), ">= 0"), (np.zeros(4), "sums to 0")],
)
def test_bad_sample_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        normalize_weights(weights, 4, np.zeros(1))


def test_hinge_refuses_smooth_solvers_helpers():
    with pytest.raises(ValueError, match="not differentiable"):
        Hinge().lipschitz(np.ones((3, 2)))
    with pytest.raises(ValueError, match="not differentiable"):
        Hinge().fit_intercept(np.ones(2), np.zeros(2), np.full(2, 0.5))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_dual_leaves_out_zero_weight_samples_off_the_domain(kind):
    """``Datafit.dual``: a zero-weight sample adds nothing even where its conjugate is infinite (its
    ``0 * inf`` is masked), a weighted one off the domain makes the dual ``-inf``; on the domain the
    dual is the weighted sum (one sum of three terms: exact to rounding, 1e-15 relative)."""
    hinge = Hinge()
    y = np.array([1.0, 1.0, -1.0])
    u = np.array([0.5, -0.5, 0.25])  # y u = 0.5 is off the hinge conjugate's domain [-1, 0] for sample 0
    as_kind = (lambda a: torch.as_tensor(a)) if kind == "torch" else (lambda a: a)
    conj = np.clip(y * u, -1, 0)
    masked = float(hinge.dual(as_kind(y), as_kind(u), as_kind(np.array([0.0, 0.5, 0.5]))))
    assert masked == pytest.approx(-(0.5 * conj[1] + 0.5 * conj[2]), rel=1e-15)
    assert float(hinge.dual(as_kind(y), as_kind(u), as_kind(np.array([0.2, 0.4, 0.4])))) == -np.inf
