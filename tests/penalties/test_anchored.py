"""Anchored-specific tests: L2 shifted to the anchor, Fisher weights, the ellipsoid projections, snapshots.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``SCIPY``), named at each site. Beyond them:
L-BFGS-B with ``gtol=1e-13`` stops with a gradient below 1e-13 of a 1-strongly convex objective,
hence within 1e-13 of the minimiser (``atol=1e-8`` is loose). The
hypothesis properties allow ``1e-10``: the ellipsoid root's 16 Newton steps end within a few ulps
of the root, whose condition number grows with the Fisher spread (up to 1e3 in the strategy), so
``1e3 * 40 eps = 9e-12``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import brentq, check_grad, minimize

from normpen.penalties.anchored import Anchored
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
    to_numpy,
)


def reference_ellipsoid_projection(v, w, radius):
    """Projection of ``v`` onto {z : sum w z^2 <= r^2}: v / (1 + mu w), mu found by brentq."""

    def excess(mu):
        return math.sqrt(np.sum(w * (v / (1 + mu * w)) ** 2)) - radius

    if excess(0.0) <= 0:
        return v
    high = 1.0
    while excess(high) > 0:
        high *= 2
    return v / (1 + brentq(excess, 0, high, xtol=1e-300, rtol=1e-15, maxiter=1000) * w)


def fisher_diagonal(rng, shape, decades=6, zeros=0.2):
    """A Fisher-like diagonal: log-uniform over ``decades`` around 1, with a fraction of exact zeros."""
    return 10.0 ** rng.uniform(-decades / 2, decades / 2, shape) * (rng.random(shape) >= zeros)


def test_without_fisher_it_is_l2_shifted_to_the_anchor(rng):
    x, anchor = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    pen, l2 = Anchored(0.7, anchor), L2(0.7)
    d = x - anchor
    np.testing.assert_allclose(pen.value(x), l2.value(d), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.grad(x), l2.grad(d), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.prox(x, 0.4), anchor + l2.prox(d, 0.4), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.norm(x), l2.norm(d), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.project(x, 0.3), anchor + l2.project(d, 0.3), rtol=CHAIN)
    np.testing.assert_allclose(pen.dual_norm(x), l2.dual_norm(x), rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.project_dual(x, 0.3), l2.project_dual(x, 0.3), rtol=CHAIN)


def test_closed_forms_with_fisher(rng):
    x, anchor, fisher = rng.standard_normal(6), rng.standard_normal(6), fisher_diagonal(rng, 6)
    fisher[0] = 0.0
    lam, step = 0.8, 0.6
    pen = Anchored(lam, anchor, fisher)
    d = x - anchor
    np.testing.assert_allclose(pen.value(x), lam / 2 * np.sum(fisher * d**2), rtol=CHAIN)
    np.testing.assert_allclose(pen.grad(x), lam * fisher * d, rtol=SUM_OF_TERMS)
    shrink = step * lam * fisher
    np.testing.assert_allclose(pen.prox(x, step), (x + shrink * anchor) / (1 + shrink), rtol=CHAIN)
    np.testing.assert_allclose(pen.norm(x), np.sqrt(np.sum(fisher * d**2)), rtol=CHAIN)
    free = fisher > 0
    assert pen.dual_norm(x) == math.inf
    x[~free] = 0.0
    np.testing.assert_allclose(pen.dual_norm(x), np.sqrt(np.sum(x[free] ** 2 / fisher[free])), rtol=CHAIN)
    assert pen.lambda_max(x) == math.inf
    assert pen.lambda_max(np.zeros(6)) == 0.0


def test_prox_matches_numerical_minimisation(rng):
    x, anchor, fisher = rng.standard_normal(5), rng.standard_normal(5), fisher_diagonal(rng, 5)
    pen, step = Anchored(1.3, anchor, fisher), 0.7

    def objective(z):
        return 0.5 * np.sum((z - x) ** 2) + step * float(pen.value(z)), z - x + step * pen.grad(z)

    ref = minimize(objective, x, jac=True, method="L-BFGS-B", options={"gtol": 1e-13, "ftol": 1e-16})
    np.testing.assert_allclose(pen.prox(x, step), ref.x, atol=1e-8)


def test_gradient_matches_finite_differences(rng):
    anchor, fisher = rng.standard_normal(4), fisher_diagonal(rng, 4, decades=2)
    pen = Anchored(0.9, anchor, fisher)
    error = check_grad(lambda z: float(pen.value(z)), pen.grad, rng.standard_normal(4))
    # check_grad's forward step sqrt(eps) = 1.5e-8: truncation |f''| h / 2 and rounding eps |f| / h are
    # ~1e-8 * 100 per entry for |f|, |f''| <= 100 (Fisher up to 1e2, entries of order one): 4 entries, < 1e-6
    assert error < 1e-6


def test_projection_matches_slsqp(rng):
    x, anchor, fisher = 3 * rng.standard_normal(5), rng.standard_normal(5), fisher_diagonal(rng, 5, decades=2)
    radius = 0.5
    ref = minimize(
        lambda z: np.sum((z - x) ** 2),
        anchor,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: radius**2 - np.sum(fisher * (z - anchor) ** 2)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    np.testing.assert_allclose(Anchored(0.1, anchor, fisher).project(x, radius), ref.x, atol=SCIPY)


def test_dual_projection_matches_slsqp(rng):
    x, fisher = 3 * rng.standard_normal(5), fisher_diagonal(rng, 5, decades=2, zeros=0.0)
    fisher[1] = 0.0
    free, radius = fisher > 0, 0.5
    ref = minimize(
        lambda z: np.sum((z - x[free]) ** 2),
        np.zeros(free.sum()),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: radius**2 - np.sum(z**2 / fisher[free])}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    z = Anchored(0.1, np.zeros(5), fisher).project_dual(x, radius)
    assert z[1] == 0.0
    np.testing.assert_allclose(z[free], ref.x, atol=SCIPY)


@given(
    shape=hnp.array_shapes(max_dims=3, max_side=4),
    seed=st.integers(0, 2**32 - 1),
    decades=st.floats(0, 40),
    shrink=st.floats(1e-6, 1.5),
)
def test_projections_match_kkt_bisection(shape, seed, decades, shrink):
    """Both ellipsoid projections against brentq, for Fisher diagonals spanning up to 40 decades."""
    rng = np.random.default_rng(seed)
    x, anchor = 10 * rng.standard_normal(shape), rng.standard_normal(shape)
    fisher = fisher_diagonal(rng, shape, decades)
    pen = Anchored(0.5, anchor, fisher)

    distance = math.sqrt(np.sum(fisher * (x - anchor) ** 2))
    radius = max(shrink * distance, 1e-12)
    z = pen.project(x, radius)
    np.testing.assert_allclose(
        z,
        anchor + reference_ellipsoid_projection(x - anchor, fisher, radius),
        rtol=1e-10,
        atol=1e-10 * np.abs(x).max(initial=1),
    )
    if distance > radius * (1 + CERTIFICATE):
        # norm(z) recomputes z - a: its rounding, eps |a| per entry, weighs sqrt(F) in the norm
        recompute = 4 * np.finfo(float).eps * np.sqrt(fisher.max(initial=0)) * np.abs(anchor).max(initial=0)
        assert pen.norm(z) == pytest.approx(radius, rel=1e-10 + recompute / radius)
    elif distance < radius * (1 - 1e-12):
        assert np.array_equal(z, x)

    free = fisher > 0
    bounded = np.where(free, x, 0.0)
    inverse = np.where(free, 1 / np.where(free, fisher, 1), 0.0)
    dual_radius = max(shrink * math.sqrt(np.sum(inverse * bounded**2)), 1e-12)
    np.testing.assert_allclose(
        pen.project_dual(x, dual_radius),
        reference_ellipsoid_projection(bounded, inverse, dual_radius),
        rtol=1e-10,
        atol=1e-10 * np.abs(x).max(initial=1),
    )
    assert pen.dual_norm(pen.project_dual(x, dual_radius)) <= dual_radius * (1 + 1e-10)


def test_dual_norm_is_the_dual_of_the_fisher_norm(rng):
    """<z - a, x> <= norm(z) * dual_norm(x) (Cauchy-Schwarz), with equality at z = a + x / F."""
    anchor, fisher, x = rng.standard_normal(5), fisher_diagonal(rng, 5, zeros=0.0), rng.standard_normal(5)
    pen = Anchored(1.0, anchor, fisher)
    for z in rng.standard_normal((50, 5)):
        assert np.dot(z - anchor, x) <= pen.norm(z) * pen.dual_norm(x) * (1 + CERTIFICATE)
    best = anchor + x / fisher
    np.testing.assert_allclose(np.dot(best - anchor, x), pen.norm(best) * pen.dual_norm(x), rtol=CERTIFICATE)


def test_free_coordinates(rng):
    """Where F = 0 the penalty ignores the coordinate: prox and projection leave it, the dual zeroes it."""
    x, anchor = rng.standard_normal(4), rng.standard_normal(4)
    fisher = np.array([0.0, 1.0, 2.0, 0.0])
    pen = Anchored(1.0, anchor, fisher)
    for z in (pen.prox(x, 3.0), pen.project(x, 1e-3)):
        assert z[0] == x[0] and z[3] == x[3]
    assert pen.grad(x)[0] == 0.0
    z = pen.project_dual(x, 10.0)
    assert z[0] == 0.0 and z[3] == 0.0 and np.array_equal(z[1:3], x[1:3])
    everything_free = Anchored(1.0, anchor, np.zeros(4))
    assert np.array_equal(everything_free.project(x, 1e-3), x)
    assert everything_free.value(x) == 0.0


def test_far_points_keep_their_digits(rng):
    """A point 1e300 away lands on the sphere around the anchor, not on the anchor itself."""
    anchor, fisher = rng.standard_normal(5), fisher_diagonal(rng, 5, decades=4, zeros=0.0)
    direction = rng.standard_normal(5)
    pen = Anchored(1.0, anchor, fisher)
    z = pen.project(anchor + 1e300 * direction, 1.0)
    assert pen.norm(z) == pytest.approx(1.0, rel=CERTIFICATE)
    # z - a = 1e300 u / (1 + mu F) = u / (1e-300 + nu F) with nu = mu / 1e300 found by brentq.
    nu = brentq(
        lambda nu: np.sum(fisher * (direction / (1e-300 + nu * fisher)) ** 2) - 1,
        1e-3,
        1e3,
        xtol=1e-300,
        rtol=1e-15,
    )
    # the ellipsoid root's tier of the module docstring (condition up to the Fisher spread: 1e2 * 40 eps)
    np.testing.assert_allclose(z - anchor, direction / (1e-300 + nu * fisher), rtol=1e-11, atol=SUM_OF_TERMS)
    np.testing.assert_allclose(
        pen.prox(anchor + 1e300 * direction, 1e300) - anchor,
        direction / fisher,
        rtol=1e-11,
        atol=SUM_OF_TERMS,
    )
    faint = Anchored(1.0, np.zeros(5), fisher * 1e-30)
    z = faint.project_dual(1e250 * direction, 1.0)
    assert np.all(np.isfinite(z)) and faint.dual_norm(z) == pytest.approx(1.0, rel=CERTIFICATE)


def test_anchor_is_a_snapshot():
    anchor = np.array([1.0, 2.0])
    pen = Anchored(1.0, anchor)
    anchor[:] = 0.0
    np.testing.assert_array_equal(pen.anchor, [1.0, 2.0])

    weight = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    pen = Anchored(1.0, weight)
    assert not pen.anchor.requires_grad
    with torch.no_grad():
        weight.mul_(3.0)
    x = weight.detach().clone().requires_grad_(True)
    pen.value(x).backward()
    torch.testing.assert_close(x.grad, torch.tensor([2.0, -2.0]))
    # float32: the value goes through a norm and its square, a few roundings of 2^-24 = 6e-8 (measured 6e-8)
    assert pen.with_lam(2.0).value(x.detach()) == pytest.approx(8.0, rel=1e-6)


def test_anchor_of_another_kind_and_dtype(rng):
    """The anchor follows the input: numpy anchor with torch input, float32 tensor anchor with numpy input."""
    x, anchor = rng.standard_normal(3), rng.standard_normal(3)
    expected = Anchored(0.5, anchor).prox(x, 1.0)
    got = Anchored(0.5, anchor).prox(torch.from_numpy(x), 1.0)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=SAME_FORMULA)
    got = Anchored(0.5, torch.tensor(anchor, dtype=torch.float32), fisher=torch.ones(3)).prox(x, 1.0)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    # the float32 anchor is rounded once (2^-24 = 6e-8 relative) and then used in float64
    np.testing.assert_allclose(got, expected, rtol=1e-7)
    assert Anchored(0.5, [0.0, 1.0]).value(np.array([1.0, 1.0])) == pytest.approx(0.25, rel=SAME_FORMULA)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_anchor_on_the_gpu(rng):
    x, anchor, fisher = rng.standard_normal(5), rng.standard_normal(5), fisher_diagonal(rng, 5)
    pen_gpu = Anchored(0.5, torch.tensor(anchor, device="cuda"), torch.tensor(fisher, device="cuda"))
    x_gpu = torch.tensor(x, device="cuda")
    pen = Anchored(0.5, anchor, fisher)
    for method, args in [
        ("value", ()),
        ("grad", ()),
        ("prox", (0.5,)),
        ("project", (0.3,)),
        ("dual_norm", ()),
        ("project_dual", (0.3,)),
    ]:
        got = getattr(pen_gpu, method)(x_gpu, *args)
        assert got.device.type == "cuda", method
        np.testing.assert_allclose(
            to_numpy(got), getattr(pen, method)(x, *args), rtol=CERTIFICATE, err_msg=method
        )
    np.testing.assert_allclose(pen_gpu.project(x, 0.3), pen.project(x, 0.3), rtol=CERTIFICATE)


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
def test_numpy_and_torch_agree(rng, kind):
    x, anchor, fisher = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), fisher_diagonal(rng, (2, 3))
    fisher[0, 0] = 0.0
    x[0, 0] = 0.0
    pen = Anchored(0.4, anchor, fisher)
    assert_methods_agree(pen, x, kind, every_method(0.5, 0.7), rtol=kind.rtol)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Anchored(0.1, np.zeros(2), np.array([1.0, -0.5])), ValueError, "fisher must be >= 0"),
        (lambda: Anchored(0.1, np.zeros(2), np.array([1.0, np.nan])), ValueError, "fisher contains NaN"),
        (lambda: Anchored(0.1, np.zeros(2), np.ones(3)), ValueError, r"fisher has shape \(3,\) but anchor"),
        (lambda: Anchored(0.1, np.array([0.0, np.inf])), ValueError, "anchor contains NaN or infinite"),
        (lambda: Anchored(0.1, np.array([1, 2])), TypeError, "anchor must have a real floating dtype"),
        (lambda: Anchored(-0.1, np.zeros(2)), ValueError, "lam must be >= 0"),
        (lambda: Anchored(0.1, np.zeros(2)).value(np.zeros(3)), ValueError, r"anchor has shape \(2,\) but x"),
        (lambda: Anchored(0.1, np.zeros(2)).lambda_max(np.zeros((2, 1))), ValueError, "but grad0 has shape"),
    ],
)
def test_bad_input_names_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()
