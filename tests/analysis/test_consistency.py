"""Consistency loss: exact on fixed draws, its expectation against Monte Carlo, the ridge equivalence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from normpen.analysis.consistency import (
    consistency_loss,
    equivalent_ridge_lam,
    expected_linear_consistency,
    gaussian_perturbation,
    sampled_noise_moment,
)


def _linear(rng, d=5, k=3):
    model = torch.nn.Linear(d, k).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(rng.standard_normal((k, d))))
        model.bias.copy_(torch.from_numpy(rng.standard_normal(k)))
    return model


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 20), draws=st.integers(1, 5), k=st.integers(1, 4))
def test_on_fixed_draws_the_consistency_of_a_linear_model_is_the_quadratic_form_of_their_moment(
    seed, m, draws, k
):
    rng = np.random.default_rng(seed)
    model = _linear(rng, 4, k)
    unlabeled = torch.from_numpy(rng.standard_normal((m, 4)) * 10)
    noise = torch.from_numpy(rng.standard_normal((m * draws, 4)))
    with torch.no_grad():
        value = consistency_loss(model, unlabeled, lambda u: u + noise, draws)
    W = model.weight.detach().numpy()
    expected = np.trace(W @ sampled_noise_moment(noise.numpy()) @ W.T)
    # the same float64 sum of m * draws nonnegative terms in two orders: at most that many eps, < 1e-12
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_the_expected_consistency_matches_monte_carlo_for_scalar_and_per_feature_noise(rng):
    model = _linear(rng)
    unlabeled = torch.from_numpy(rng.standard_normal((50, 5)))
    generator = torch.Generator().manual_seed(1)
    W = model.weight.detach()
    for std in (0.3, np.array([0.1, 0.5, 1.0, 0.0, 2.0])):
        with torch.no_grad():
            mc = float(consistency_loss(model, unlabeled, gaussian_perturbation(std, generator), 2000))
        exact = float(expected_linear_consistency(W, std))
        # Var ‖Wε‖² = 2 tr((W D W^T)^2) for ε ~ N(0, D)
        D = np.diag(np.broadcast_to(np.asarray(std) ** 2, (5,)))
        M = W.numpy() @ D @ W.numpy().T
        se = math.sqrt(2 * np.trace(M @ M) / (50 * 2000))
        assert abs(mc - exact) <= 4 * se
        assert exact == pytest.approx(np.trace(M), rel=1e-12)  # float64, a handful of nonnegative terms


def test_expected_consistency_keeps_the_kind_and_handles_a_weight_vector(rng):
    w = rng.standard_normal(6)
    assert expected_linear_consistency(w, 0.5) == pytest.approx(0.25 * w @ w, rel=1e-14)
    t = torch.from_numpy(w).float()
    value = expected_linear_consistency(t, 0.5)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float32
    weights = torch.from_numpy(rng.standard_normal((2, 6))).requires_grad_(True)
    (grad,) = torch.autograd.grad(expected_linear_consistency(weights, 0.5), weights)
    torch.testing.assert_close(grad, 2 * 0.25 * weights.detach())


def test_stop_gradient_keeps_the_value_and_blocks_the_clean_branch(rng):
    model = _linear(rng, 3, 1)
    unlabeled = torch.from_numpy(rng.standard_normal((4, 3)))
    noise = torch.from_numpy(rng.standard_normal((8, 3)))
    full = consistency_loss(model, unlabeled, lambda u: u + noise, 2)
    stopped = consistency_loss(model, unlabeled, lambda u: u + noise, 2, stop_gradient=True)
    assert full.item() == pytest.approx(stopped.item(), rel=1e-15)  # the same float64 operations: one ulp
    (g_stop,) = torch.autograd.grad(stopped, model.weight)
    # by hand: d/dW of mean_r (c_r - W(u_r + e_r) - b)^2 with c_r held fixed
    W, b = model.weight.detach(), model.bias.detach()
    u = unlabeled.repeat(2, 1)
    clean = u @ W.T + b
    residual = clean - ((u + noise) @ W.T + b)
    torch.testing.assert_close(g_stop, (-2 * residual * (u + noise)).mean(0, keepdim=True))


def test_with_the_matching_lambda_the_semi_supervised_fit_is_scikit_learn_ridge(rng):
    n, p, mu, sigma = 30, 4, 2.0, 0.7
    X = rng.standard_normal((n, p))
    y = X @ rng.standard_normal(p) + 0.3 * rng.standard_normal(n) + 1.5

    def objective(theta):
        w, b = theta[:p], theta[p]
        consistency = float(expected_linear_consistency(w, sigma))
        return 0.5 * np.mean((y - X @ w - b) ** 2) + 0.5 * mu * consistency

    theta = scipy.optimize.minimize(objective, np.zeros(p + 1), method="BFGS", options={"gtol": 1e-12}).x
    lam = equivalent_ridge_lam(mu, sigma)
    assert lam == pytest.approx(mu * sigma**2)
    ridge = Ridge(alpha=n * lam).fit(X, y)
    # BFGS on finite-difference gradients: gradient error ~ sqrt(eps) ~ 1.5e-8, divided by the Hessian's
    # smallest eigenvalue (~0.5 here: X'X/n ~ I plus mu sigma^2 I) gives theta to ~3e-8; 1e-7 is 3x that
    np.testing.assert_allclose(theta[:p], ridge.coef_, atol=1e-7)
    assert theta[p] == pytest.approx(ridge.intercept_, abs=1e-7)


def test_gaussian_perturbation_is_reproducible_and_has_the_right_variance():
    u = torch.zeros(20000, 3, dtype=torch.float64)
    draws = gaussian_perturbation([0.5, 1.0, 2.0], torch.Generator().manual_seed(3))(u)
    again = gaussian_perturbation([0.5, 1.0, 2.0], torch.Generator().manual_seed(3))(u)
    torch.testing.assert_close(draws, again)
    # a sample std of n = 20000 normal draws has relative standard error 1/sqrt(2n) = 0.005: 3% is 6 sigma
    np.testing.assert_allclose(draws.std(0).numpy(), [0.5, 1.0, 2.0], rtol=0.03)
    assert draws.dtype == torch.float64


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: gaussian_perturbation(-1.0), ValueError, "noise_std"),
        (lambda: gaussian_perturbation([[1.0]]), ValueError, "noise_std"),
        (lambda: gaussian_perturbation([1.0, 2.0])(torch.zeros(3, 3)), ValueError, "2 entries"),
        (
            lambda: consistency_loss(torch.nn.Identity(), np.zeros((2, 2)), lambda u: u),
            TypeError,
            "torch.Tensor",
        ),
        (
            lambda: consistency_loss(torch.nn.Identity(), torch.zeros(2, 2), lambda u: u, 0),
            ValueError,
            "n_draws",
        ),
        (lambda: consistency_loss(torch.nn.Identity(), torch.zeros(0, 2), lambda u: u), ValueError, "empty"),
        (lambda: expected_linear_consistency(np.zeros((2, 2, 2)), 1.0), ValueError, "shape"),
        (lambda: expected_linear_consistency(np.zeros((2, 3)), [1.0, 2.0]), ValueError, "3 input features"),
        (lambda: equivalent_ridge_lam(-1.0, 1.0), ValueError, "consistency_weight"),
        (lambda: sampled_noise_moment(np.zeros(3)), ValueError, "2-D"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(call, error, match):
    with pytest.raises(error, match=match):
        call()
