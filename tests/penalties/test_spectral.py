"""Spectral: the operator norm, its prox and balls against numpy.linalg, root finding and certificates.

Tolerances: the tiers of :mod:`cases`, named at each site, as in :mod:`test_nuclear` (the same SVD,
certificates, kinds and finite differences).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import ortho_group

from normpen.penalties.spectral import Spectral
from penalties.cases import (
    ARRAY_KINDS,
    CERTIFICATE,
    CHAIN,
    FINITE_DIFFERENCE_SVD,
    SUM_OF_TERMS,
    assert_methods_agree,
)
from penalties.test_nuclear import (
    SHAPES,
    assert_ball_projection,
    assert_prox_certificate,
    assert_scales_with_the_input,
    l1_ball_threshold,
    nuclear_norm,
    singular_values,
    small_matrices,
    spectral_norm,
)


@pytest.mark.parametrize("shape", SHAPES)
def test_norm_and_dual_norm_match_numpy_linalg(shape, rng):
    x = rng.normal(size=shape)
    pen = Spectral(0.3)
    assert pen.norm(x) == pytest.approx(spectral_norm(x), rel=SUM_OF_TERMS)
    assert pen.value(x) == pytest.approx(0.3 * spectral_norm(x), rel=SUM_OF_TERMS)
    assert pen.dual_norm(x) == pytest.approx(nuclear_norm(x), rel=SUM_OF_TERMS)


# ---- prox ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strength", [0.2, 1.0, 2.5])
def test_prox_clips_the_top_singular_values(shape, strength, rng):
    # prox_{t sigma_max}(X) = U diag(min(sigma, tau)) V^T with sum(max(sigma - tau, 0)) = t (Moreau).
    x = rng.normal(size=shape)
    z = Spectral(strength).prox(x, 1.0)
    s = singular_values(x)
    tau = l1_ball_threshold(s, strength)
    u, _, vh = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(z, u @ np.diag(np.minimum(s, tau)) @ vh, atol=CHAIN)
    assert_prox_certificate(x, z, strength, spectral_norm, nuclear_norm)


def test_prox_is_zero_inside_the_dual_ball_and_identity_at_step_zero(rng):
    x = rng.normal(size=(3, 4))
    pen = Spectral(1.0)
    assert np.all(pen.prox(x, nuclear_norm(x) * 1.001) == 0)
    np.testing.assert_array_equal(pen.prox(x, 0.0), x)


# ---- projections ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_projection_clips_the_singular_values(shape, rng):
    x = rng.normal(size=shape)
    s = singular_values(x)
    radius = float(np.mean(s[:2]))
    z = Spectral(1.0).project(x, radius)
    np.testing.assert_allclose(singular_values(z), np.minimum(s, radius), atol=SUM_OF_TERMS)
    assert_ball_projection(x, z, radius, spectral_norm, nuclear_norm)
    assert_ball_projection(x, Spectral(1.0).project(x, s[0] * 1.01), s[0] * 1.01, spectral_norm, nuclear_norm)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fraction", [0.3, 0.8, 1.5])
def test_project_dual_is_the_nuclear_ball_projection(shape, fraction, rng):
    x = rng.normal(size=shape)
    radius = fraction * nuclear_norm(x)
    z = Spectral(1.0).project_dual(x, radius)
    assert_ball_projection(x, z, radius, nuclear_norm, spectral_norm)
    s = singular_values(x)
    np.testing.assert_allclose(
        singular_values(z), np.maximum(s - l1_ball_threshold(s, radius), 0), atol=CHAIN
    )


def test_projection_beats_random_feasible_points(rng):
    x = rng.normal(size=(3, 3)) * 2
    z = Spectral(1.0).project(x, 1.0)
    for y in rng.normal(size=(300, 3, 3)):
        y /= max(1.0, spectral_norm(y))  # feasible
        assert np.sum((z - x) ** 2) <= np.sum((y - x) ** 2)


# ---- gradient, lambda_max, validation -------------------------------------------------------------------


def test_grad_is_the_top_singular_pair_and_matches_finite_differences(rng):
    x = rng.normal(size=(4, 3))
    pen = Spectral(0.7)
    u, _, vh = np.linalg.svd(x)
    np.testing.assert_allclose(pen.grad(x), 0.7 * np.outer(u[:, 0], vh[0]), atol=SUM_OF_TERMS)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = (pen.value(x + e) - pen.value(x - e)) / (2 * eps)
    np.testing.assert_allclose(pen.grad(x), numeric, atol=FINITE_DIFFERENCE_SVD)


def test_grad_with_a_repeated_top_singular_value_is_the_minimum_norm_subgradient():
    # sigma = (3, 3, 1): the subdifferential is {U_2 S V_2^T : S >= 0, tr S = 1}; S = I/2 has the least norm.
    left, right = ortho_group.rvs(4, random_state=1), ortho_group.rvs(3, random_state=2)
    x = left[:, :3] @ np.diag([3.0, 3.0, 1.0]) @ right.T
    g = Spectral(0.6).grad(x)
    np.testing.assert_allclose(g, 0.6 * left[:, :2] @ right[:, :2].T / 2, atol=SUM_OF_TERMS)
    assert np.linalg.norm(g) == pytest.approx(0.6 / np.sqrt(2))
    assert_prox_certificate(x, x - g, 0.6, spectral_norm, nuclear_norm)  # a subgradient: <G, X> = sigma_max
    np.testing.assert_array_equal(Spectral(0.6).grad(np.zeros((2, 3))), 0.0)


def test_lambda_max_is_where_zero_becomes_optimal(rng):
    y = rng.normal(size=(4, 3))
    pen = Spectral(1.0)
    lam_max = pen.lambda_max(-y)
    assert lam_max == pytest.approx(nuclear_norm(y), rel=SUM_OF_TERMS)
    assert np.all(pen.with_lam(lam_max * (1 + CERTIFICATE)).prox(y, 1.0) == 0)  # exact zeros past it
    assert np.any(pen.with_lam(0.99 * lam_max).prox(y, 1.0) != 0)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), ()])
def test_non_matrix_input_raises_naming_the_input(shape):
    with pytest.raises(ValueError, match="Spectral needs a matrix: x must be 2-D"):
        Spectral(0.1).value(np.ones(shape))


# ---- array kinds and magnitudes ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
def test_numpy_and_torch_float32_and_float64_agree(kind, rng):
    x64 = rng.normal(size=(3, 5))
    pen = Spectral(0.5)
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
    pen = Spectral(0.5)
    for method, args in (("grad", ()), ("prox", (1.0,)), ("project", (2.0,)), ("project_dual", (10.0,))):
        out = getattr(pen, method)(x, *args)
        assert out.device == x.device
        np.testing.assert_allclose(out.cpu().numpy(), getattr(pen, method)(x64, *args), atol=1e-10)


@given(x=small_matrices, exponent=st.integers(-990, 990))
def test_operations_scale_with_the_input_from_1e_minus_300_to_1e300(x, exponent):
    assert_scales_with_the_input(Spectral(0.5), x, exponent)
