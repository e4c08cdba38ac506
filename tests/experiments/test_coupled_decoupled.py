"""The coupled-decoupled experiment: the schemes against torch and ridge, checks against wrong updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from normpen.experiments import coupled_decoupled as cd
from normpen.torch import Regularizer
from normpen.torch.kernels import L2Kernel

SEED = cd.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return cd.EXPERIMENT.run(quick=True)


@pytest.fixture(scope="module")
def problem():
    return cd._problem(True, SEED)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 2 + 2 * len(cd.BETAS) + (len(cd.BETAS) - 1) + 2


def test_figure_draws_one_gap_curve_per_beta_and_the_closed_form(quick_result):
    left, right = quick_result.figures["gap"].get_axes()
    assert left.get_yscale() == "log"
    assert len([line for line in left.get_lines() if line.get_linestyle() == "-"]) == len(cd.BETAS)
    np.testing.assert_allclose(right.get_lines()[1].get_xdata(), cd.BETAS)


def test_fixed_point_is_scikit_learn_ridge(problem):
    X, y = problem.X, problem.y
    for strength in (0.05, 1.0):
        ridge = Ridge(alpha=strength * X.shape[0], fit_intercept=False).fit(X, y)
        # Two direct solves of a well-conditioned ridge system (cond < 1e3): rounding ≈ cond·ε ≈ 1e-13.
        np.testing.assert_allclose(cd.fixed_point(X, y, strength), ridge.coef_, rtol=1e-10)


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_scheme_a_is_torch_sgd_with_momentum_and_weight_decay(problem, beta):
    """torch.optim.SGD(weight_decay=λ) adds λθ to the gradient before the momentum: Scheme A."""
    X, y = torch.from_numpy(problem.X), torch.from_numpy(problem.y)
    theta = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=cd.LR, momentum=beta, weight_decay=cd.LAM)
    path = []
    for _ in range(40):
        optimizer.zero_grad()
        (0.5 * (X @ theta - y).square().mean()).backward()
        optimizer.step()
        path.append(theta.detach().clone().numpy())
    np.testing.assert_allclose(cd.scheme_a(problem.X, problem.y, cd.LAM, beta, cd.LR, 40), path, rtol=1e-12)


def test_scheme_b_is_decay_then_plain_momentum_step(problem):
    """θ ← (1 − ηγ)θ, then torch's SGD step with momentum on the data gradient taken before the decay."""
    X, y = torch.from_numpy(problem.X), torch.from_numpy(problem.y)
    theta = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=cd.LR, momentum=0.8)
    path = []
    for _ in range(40):
        optimizer.zero_grad()
        (0.5 * (X @ theta - y).square().mean()).backward()
        with torch.no_grad():
            theta.mul_(1 - cd.LR * 0.6)
        optimizer.step()
        path.append(theta.detach().clone().numpy())
    np.testing.assert_allclose(cd.scheme_b(problem.X, problem.y, 0.6, 0.8, cd.LR, 40), path, rtol=1e-12)


@given(
    beta=st.floats(0.0, 0.95),
    gamma=st.floats(1e-3, 10.0),
    lr=st.floats(1e-3, 0.5),
)
def test_scheme_b_stands_still_at_its_closed_form_fixed_point(problem, beta, gamma, lr):
    """From θ* = (H + (1−β)γI)⁻¹b with the velocity ∇L(θ*)/(1−β), one step of Scheme B changes nothing."""
    X, y = problem.X, problem.y
    theta = cd.fixed_point(X, y, (1 - beta) * gamma)
    gradient = cd._gradient(X, y, theta)
    velocity = beta * gradient / (1 - beta) + gradient
    step = (1 - lr * gamma) * theta - lr * velocity
    # A fixed point reproduced to rounding: the step subtracts lr·velocity from (1 − lr·γ)θ, terms up to
    # 1/(1 − β) ≤ 1e3 times θ, so the cancellation loses up to 1e3·ε relative.
    np.testing.assert_allclose(step, theta, atol=1e-10 * max(1.0, np.abs(theta).max()))
    # β·g/(1−β) + g against g/(1−β): two roundings of the same quantity.
    np.testing.assert_allclose(velocity, gradient / (1 - beta), rtol=1e-12, atol=1e-14)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = cd.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong updates must fail the checks ---------------------------------------------------


def _double_decay(self, tensors, slots, step):
    """Decoupled decay by (1 − 2ηλ): the wrong factor."""
    torch._foreach_mul_(tensors, 1 - 2 * step * self.penalty.lam)


def _dampened_sgd(groups, lr):
    """SGD whose momentum dampens the gradient by (1 − β): velocities are averages, not sums."""
    for group in groups:
        group["dampening"] = group["momentum"]
    return torch.optim.SGD(groups, lr=lr)


_PENALTY = Regularizer.penalty


def _doubled_coupled_term(self):
    """The coupled terms added twice to the loss: Scheme A with 2λ."""
    return 2 * _PENALTY(self)


_A_FIXED = {f"β = {b:g}: relative distance of A from (H + λI)⁻¹b" for b in cd.BETAS}
_B_FIXED = {f"β = {b:g}: relative distance of B from (H + (1−β)γI)⁻¹b" for b in cd.BETAS[1:]}
_GAPS = {f"β = {b:g}: ‖θ_A − θ_B‖ at the end vs closed form" for b in cd.BETAS[1:]}
_WRITTEN = "normpen runs vs the schemes written out: max relative deviation"
_IDENTICAL = "β = 0, γ = λ: max relative |θ_A − θ_B| over all steps"
_GROWTH = "smallest increase of ‖θ_A − θ_B‖ / ‖θ_A*‖ from one β to the next"
_CORRECTED = f"β = {cd.BETAS[-1]:g}, γ = λ/(1−β): relative distance of B from (H + λI)⁻¹b"

WRONG_UPDATES = {
    "decoupled decay doubled": (
        lambda mp: mp.setattr(L2Kernel, "decay_", _double_decay),
        {_WRITTEN, _IDENTICAL, _CORRECTED, "β = 0: relative distance of B from (H + (1−β)γI)⁻¹b"}
        | _B_FIXED
        | _GAPS,
    ),
    "dampened momentum": (
        lambda mp: mp.setattr(cd, "_sgd", _dampened_sgd),
        {_WRITTEN, _GROWTH, _CORRECTED} | _B_FIXED | _GAPS,
    ),
    "coupled gradient doubled": (
        lambda mp: mp.setattr(Regularizer, "penalty", _doubled_coupled_term),
        {_WRITTEN, _IDENTICAL} | _A_FIXED,
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_UPDATES))
def test_a_wrong_update_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_UPDATES[scenario]
    patch(monkeypatch)
    result = cd.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_update(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_UPDATES.values()))
    assert targeted == {c.name for c in quick_result.checks}
