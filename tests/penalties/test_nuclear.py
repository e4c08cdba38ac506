"""Nuclear: singular value thresholding and the nuclear ball against numpy.linalg, scipy and certificates.

The certificates below characterise a prox and a ball projection exactly
through the norm and its dual computed by ``numpy.linalg.norm``, so they are
independent of normpen's SVD code; :mod:`test_spectral` uses them too.

Tolerances: the tiers of :mod:`cases`, named at each site: ``SUM_OF_TERMS`` on singular values of one
backward-stable SVD (within ``max(m, n) eps sigma_max``, entries up to 10 of matrices up to 6 x 6:
1.3e-14), ``CHAIN`` where a result is recomposed and decomposed again, ``CERTIFICATE`` on gradients
(singular vectors are as accurate as eps over the gap to the next singular value, which the random
matrices keep above 1e-2) and ``FINITE_DIFFERENCE_SVD``. Float32 kinds get
``10 * kind.rtol``: the float32 SVD's error is ``max(m, n) eps32 sigma_max``, about 10 times
the per-operation budget. The GPU comparison allows ``1e-10``: cuSOLVER's float64 SVD differs
from LAPACK's by reordering, within 1e-12 on singular values and a gap-conditioned 1e-10 on
the recomposed matrices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import brentq, minimize

from normpen.penalties.nuclear import Nuclear
from penalties.cases import (
    ARRAY_KINDS,
    CERTIFICATE,
    CHAIN,
    FINITE_DIFFERENCE_SVD,
    SUM_OF_TERMS,
    assert_methods_agree,
)

SHAPES = [(3, 3), (4, 2), (2, 5)]


def spectral_norm(z):
    return np.linalg.norm(z, 2)


def nuclear_norm(z):
    return np.linalg.norm(z, "nuc")


def singular_values(z):
    return np.linalg.svd(z, compute_uv=False)


def assert_prox_certificate(x, z, threshold, norm, dual_norm):
    """``z = prox_{t norm}(x)`` iff ``G = (x - z)/t`` is a subgradient of the norm at ``z``.

    For a norm that is: ``dual_norm(G) <= 1`` and ``<G, z> = norm(z)``.
    """
    g = (x - z) / threshold
    assert dual_norm(g) <= 1 + CERTIFICATE
    assert np.sum(g * z) == pytest.approx(norm(z), rel=CERTIFICATE, abs=CERTIFICATE)


def assert_ball_projection(x, z, radius, norm, dual_norm):
    """``z`` is the Euclidean projection of ``x`` onto ``{norm <= radius}``.

    Inside points come back unchanged; for outside points ``z`` is on the
    sphere and ``x - z`` lies in the normal cone there: ``<x - z, z> = radius * dual_norm(x - z)``.
    """
    if norm(x) <= radius:
        np.testing.assert_array_equal(z, x)
        return
    assert norm(z) == pytest.approx(radius, rel=CERTIFICATE)
    assert np.sum((x - z) * z) == pytest.approx(radius * dual_norm(x - z), rel=1e-10)


def l1_ball_threshold(s, radius):
    """The tau >= 0 with sum(max(s - tau, 0)) = radius, by root finding (0 when s is inside the ball)."""
    if s.sum() <= radius:
        return 0.0
    return brentq(lambda tau: np.maximum(s - tau, 0).sum() - radius, 0.0, s.max(), xtol=1e-15, rtol=1e-15)


# ---- prox: singular value thresholding ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_prox_is_singular_value_thresholding_with_exact_low_rank(shape, rng):
    x = rng.normal(size=shape)
    s = singular_values(x)
    step = 1.0
    pen = Nuclear(float(np.mean(s[:2])))  # threshold between the first two singular values
    z = pen.prox(x, step)
    assert np.linalg.matrix_rank(z) == 1
    u, _, vh = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(z, (s[0] - pen.lam) * np.outer(u[:, 0], vh[0]), atol=SUM_OF_TERMS)
    assert_prox_certificate(x, z, step * pen.lam, nuclear_norm, spectral_norm)


@pytest.mark.parametrize("shape", SHAPES)
def test_prox_keeps_the_singular_values_above_the_threshold(shape, rng):
    x = rng.normal(size=shape)
    z = Nuclear(0.3).prox(x, 0.5)
    s = singular_values(x)
    np.testing.assert_allclose(singular_values(z), np.maximum(s - 0.15, 0), atol=SUM_OF_TERMS)
    assert np.linalg.matrix_rank(z) == np.sum(s > 0.15)
    assert_prox_certificate(x, z, 0.15, nuclear_norm, spectral_norm)


def test_prox_of_a_low_rank_matrix_stays_low_rank(rng):
    x = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 5))
    z = Nuclear(0.1).prox(x, 1.0)
    assert np.linalg.matrix_rank(z) == 2
    assert np.all(Nuclear(1.0).prox(x, nuclear_norm(x)) == 0)  # a threshold above sigma_max gives exact 0


# ---- projections ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fraction", [0.3, 0.8, 1.5])
def test_projection_onto_the_nuclear_ball(shape, fraction, rng):
    x = rng.normal(size=shape)
    radius = fraction * nuclear_norm(x)
    z = Nuclear(1.0).project(x, radius)
    assert_ball_projection(x, z, radius, nuclear_norm, spectral_norm)
    s = singular_values(x)
    np.testing.assert_allclose(
        singular_values(z), np.maximum(s - l1_ball_threshold(s, radius), 0), atol=CHAIN
    )


def test_projected_singular_values_match_scipy_slsqp(rng):
    # Von Neumann: the projection keeps U, V and projects sigma onto {p >= 0, sum p <= r}; SLSQP solves that.
    x = rng.normal(size=(3, 4))
    s = singular_values(x)
    radius = 0.6 * s.sum()
    result = minimize(
        lambda p: 0.5 * np.sum((p - s) ** 2),
        s / 2,
        jac=lambda p: p - s,
        method="SLSQP",
        bounds=[(0, None)] * s.size,
        options={"ftol": 1e-15},
        constraints=[{"type": "ineq", "fun": lambda p: radius - p.sum(), "jac": lambda p: -np.ones_like(p)}],
    )
    # SLSQP's quadratic model starts at the identity, this objective's Hessian, so its QP step solves the
    # problem up to rounding (measured at most 1.4e-14 over 200 seeds); ours is a recomposed SVD: CHAIN
    np.testing.assert_allclose(singular_values(Nuclear(1.0).project(x, radius)), result.x, atol=CHAIN)


@pytest.mark.parametrize("shape", SHAPES)
def test_project_dual_clips_the_singular_values(shape, rng):
    x = rng.normal(size=shape)
    s = singular_values(x)
    radius = float(np.mean(s[:2]))
    z = Nuclear(1.0).project_dual(x, radius)
    np.testing.assert_allclose(singular_values(z), np.minimum(s, radius), atol=SUM_OF_TERMS)
    assert_ball_projection(x, z, radius, spectral_norm, nuclear_norm)
    np.testing.assert_array_equal(Nuclear(1.0).project_dual(x, s[0] * 1.01), x)


def test_moreau_identity_ties_prox_and_project_dual(rng):
    x = rng.normal(size=(4, 3))
    pen = Nuclear(0.4)
    np.testing.assert_allclose(pen.prox(x, 0.7), x - pen.project_dual(x, 0.7 * 0.4), atol=SUM_OF_TERMS)


# ---- norms, gradient, lambda_max ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_norm_and_dual_norm_match_numpy_linalg(shape, rng):
    x = rng.normal(size=shape)
    pen = Nuclear(0.3)
    assert pen.norm(x) == pytest.approx(nuclear_norm(x), rel=SUM_OF_TERMS)
    assert pen.value(x) == pytest.approx(0.3 * nuclear_norm(x), rel=SUM_OF_TERMS)
    assert pen.dual_norm(x) == pytest.approx(spectral_norm(x), rel=SUM_OF_TERMS)


def test_grad_matches_finite_differences_at_full_rank(rng):
    x = rng.normal(size=(4, 3))
    pen = Nuclear(0.7)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = (pen.value(x + e) - pen.value(x - e)) / (2 * eps)
    np.testing.assert_allclose(pen.grad(x), numeric, atol=FINITE_DIFFERENCE_SVD)


def test_grad_at_low_rank_is_the_minimum_norm_subgradient(rng):
    # At rank r the subdifferential is {U_r V_r^T + W : U_r^T W = 0, W V_r = 0, ||W||_2 <= 1}; W = 0 is least.
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(2, 4))
    x = a @ b
    u, _, vh = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(Nuclear(0.5).grad(x), 0.5 * u[:, :2] @ vh[:2], atol=CERTIFICATE)
    assert_prox_certificate(x, x - 0.5 * Nuclear(1.0).grad(x), 0.5, nuclear_norm, spectral_norm)
    np.testing.assert_array_equal(Nuclear(0.5).grad(np.zeros((3, 2))), 0.0)


def test_lambda_max_is_where_zero_becomes_optimal(rng):
    y = rng.normal(size=(4, 3))
    pen = Nuclear(1.0)
    lam_max = pen.lambda_max(-y)
    assert lam_max == pytest.approx(spectral_norm(y), rel=SUM_OF_TERMS)
    assert np.all(pen.with_lam(lam_max * (1 + CERTIFICATE)).prox(y, 1.0) == 0)  # exact zeros past it
    assert np.any(pen.with_lam(0.99 * lam_max).prox(y, 1.0) != 0)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), ()])
def test_non_matrix_input_raises_naming_the_input(shape):
    with pytest.raises(ValueError, match="Nuclear needs a matrix: x must be 2-D"):
        Nuclear(0.1).prox(np.ones(shape), 1.0)


# ---- array kinds and magnitudes ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
def test_numpy_and_torch_float32_and_float64_agree(kind, rng):
    x64 = rng.normal(size=(4, 3))
    pen = Nuclear(0.5)
    calls = (
        ("value", ()),
        ("dual_norm", ()),
        ("grad", ()),
        ("prox", (1.0,)),
        ("project", (1.0,)),
        ("project_dual", (0.8,)),
    )
    assert_methods_agree(pen, x64, kind, calls, rtol=kind.rtol * 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device(rng):
    x64 = rng.normal(size=(64, 32))
    x = torch.as_tensor(x64, device="cuda")
    pen = Nuclear(0.5)
    for method, args in (("grad", ()), ("prox", (1.0,)), ("project", (5.0,)), ("project_dual", (1.0,))):
        out = getattr(pen, method)(x, *args)
        assert out.device == x.device
        np.testing.assert_allclose(out.cpu().numpy(), getattr(pen, method)(x64, *args), atol=1e-10)


def assert_scales_with_the_input(pen, x, exponent):
    """Scaling ``x`` by 2^k (exact) scales the norms, the prox (with its step) and the projections (with
    their radius) by 2^k and leaves the gradient unchanged: nothing overflows or underflows on the way."""
    c = 2.0**exponent
    y = x * c
    atol = CERTIFICATE * max(1.0, np.abs(x).max())
    assert pen.norm(y) == pytest.approx(pen.norm(x) * c, rel=CHAIN)
    assert pen.dual_norm(y) == pytest.approx(pen.dual_norm(x) * c, rel=CHAIN)
    np.testing.assert_allclose(pen.grad(y), pen.grad(x), atol=CERTIFICATE)
    for method, arg in (("prox", 0.8), ("project", 1.0), ("project_dual", 0.3)):
        np.testing.assert_allclose(
            getattr(pen, method)(y, arg * c) / c, getattr(pen, method)(x, arg), atol=atol
        )


#: Small matrices with entries 0 or of magnitude 1e-3..10, to be scaled by 2^k.
small_matrices = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    elements=st.one_of(st.just(0.0), st.floats(1e-3, 10), st.floats(-10, -1e-3)),
)


@given(x=small_matrices, exponent=st.integers(-990, 990))
def test_operations_scale_with_the_input_from_1e_minus_300_to_1e300(x, exponent):
    assert_scales_with_the_input(Nuclear(0.5), x, exponent)
