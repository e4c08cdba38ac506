"""The adam-l2-vs-adamw experiment: dead weights against Adam written out, checks against wrong optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normpen.datasets import load
from normpen.experiments import adam_l2_vs_adamw as aw
from normpen.torch.kernels import L2Kernel

SEED = aw.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return aw.EXPERIMENT.run(quick=True)


@pytest.fixture(scope="module")
def digits():
    data = load("digits")
    return data.X / 16.0, data.y.astype(np.int64)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 9


BELOW = "zero-gradient weights below 1/λ: smallest (Adam + L2 shrink rate) / (AdamW's ηλ) over all steps"
ABOVE = "zero-gradient weights above 1/λ: largest (Adam + L2 shrink rate) / (AdamW's ηλ) over all steps"


def test_the_verdict_refutes_diminished_decay_with_both_sides_measured(quick_result):
    verdict = aw.EXPERIMENT.verdict
    assert verdict.status == "refuted" and set(verdict.evidence) == {BELOW, ABOVE}
    measured = {c.name: c.measured for c in quick_result.checks}
    # First-step ratio of the largest weight below 1/λ is 1/(λ|θ₀| + ε) (the closed form) and the sandwich
    # keeps every later ratio above it; read off a step η = 1e-3 of weights < 10: rounding ≈ 10ε/η ≈ 2e-12.
    start = np.geomspace(*aw.MAGNITUDES, 30)
    largest_small = start[start < 1 / aw.LAM].max()
    assert measured[BELOW] == pytest.approx(1 / (aw.LAM * largest_small + aw.EPS), rel=1e-9)


def test_figure_has_the_trajectories_and_the_step_sizes(quick_result):
    left, right, colorbar = quick_result.figures["dead-weights"].get_axes()
    assert colorbar.get_ylabel().startswith("|θ₀|")
    assert right.get_xscale() == "log" and right.get_yscale() == "log"
    assert len(left.get_lines()) >= 30


def test_the_dead_pixels_of_the_digits_are_0_32_39(digits):
    X, _ = digits
    np.testing.assert_array_equal(aw.dead_features(X), [0, 32, 39])
    np.testing.assert_array_equal(aw.dead_features(np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 1.0]])), [0])


def _adam_on_l2_alone(theta0, n_steps):
    """Adam written out for a weight whose whole gradient is λθ (bias-corrected moments)."""
    beta1, beta2 = aw.BETAS
    theta, m, v = theta0.copy(), np.zeros_like(theta0), np.zeros_like(theta0)
    path = [theta.copy()]
    for t in range(1, n_steps + 1):
        g = aw.LAM * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        theta = theta - aw.LR * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + aw.EPS)
        path.append(theta.copy())
    return np.array(path)


def test_dead_weights_follow_adam_written_out_and_adamw_is_a_geometric_decay(digits):
    X, y = digits
    traj = aw.train(X, y, n_steps=25, seed=SEED)
    coupled, decoupled, reference = traj.dead
    # The same recursion in numpy and in torch (float64), 25 steps: rounding grows to ~25 ε relative.
    np.testing.assert_allclose(coupled, _adam_on_l2_alone(coupled[0], 25), rtol=1e-12)
    expected = decoupled[0][None, :] * (1 - aw.LR * aw.LAM) ** np.arange(26)[:, None]
    # 25 multiplications by (1 − ηλ) against its 25th power: ~25 ε relative.
    np.testing.assert_allclose(decoupled, expected, rtol=1e-12)
    np.testing.assert_array_equal(decoupled, reference)


@given(
    start=st.floats(0.5, 50.0),
    decrements=st.lists(st.floats(0.0, 1e-2), min_size=1, max_size=60),
    betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.9, 0.9)]),
)
def test_adam_step_on_a_shrinking_gradient_lies_in_the_sandwich(start, decrements, betas):
    """The lemma behind the sandwich: for |g| nonincreasing, |g_t|/|g_1| ≤ m̂_t/√v̂_t ≤ 1 whenever β1 ≤ β2."""
    g = start - np.concatenate([[0.0], np.cumsum(decrements)])
    g = g[g > 0]
    beta1, beta2 = betas
    m = v = 0.0
    for t, gt in enumerate(g, start=1):
        m = beta1 * m + (1 - beta1) * gt
        v = beta2 * v + (1 - beta2) * gt * gt
        ratio = (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t))
        # The lemma is exact; 1e-12 absorbs the rounding of the bias-corrected moments over ≤ 60 steps.
        assert gt / g[0] * (1 - 1e-12) <= ratio <= 1 + 1e-12


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = aw.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks -------------------------------------------


def _squared_decay(self, tensors, slots, step):
    """Decoupled decay by (1 − ηλ)²."""
    torch._foreach_mul_(tensors, (1 - step * self.penalty.lam) ** 2)


def _live_pixels(X):
    """Three pixels that do vary: their weights get data gradients."""
    return np.array([18, 19, 20])


WRONG_INGREDIENTS = {
    "live pixels taken for dead": (
        lambda mp: mp.setattr(aw, "dead_features", _live_pixels),
        {"largest |data gradient| of a dead weight"},
    ),
    "decoupled decay squared": (
        lambda mp: mp.setattr(L2Kernel, "decay_", _squared_decay),
        {
            "normpen decoupled L2 on Adam vs torch AdamW: max relative |Δw|",
            "AdamW: max |θ_{t+1}/θ_t − (1 − ηλ)| over dead weights and steps",
        },
    ),
    "RMSprop for Adam": (
        lambda mp: mp.setattr(aw, "_adam", lambda p: torch.optim.RMSprop(p, lr=aw.LR)),
        {
            "Adam + L2: max |first-step factor − (1 − ηλ/(λ|θ₀| + ε))|",
            "Adam + L2: largest |Δθ_t| / η",
            ABOVE,
        },
    ),
    "Adagrad for Adam": (
        lambda mp: mp.setattr(aw, "_adam", lambda p: torch.optim.Adagrad(p, lr=aw.LR)),
        {"Adam + L2: smallest |Δθ_t| / (η|θ_{t−1}|/(|θ₀| + ε/λ))"},
    ),
    "Adam with a large ε": (
        lambda mp: mp.setattr(aw, "_adam", lambda p: torch.optim.Adam(p, lr=aw.LR, eps=1.0)),
        {"Adam + L2: largest / smallest first-step shrink rate (= size ratio)", BELOW},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_INGREDIENTS))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_INGREDIENTS[scenario]
    patch(monkeypatch)
    result = aw.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_INGREDIENTS.values()))
    assert targeted == {c.name for c in quick_result.checks}
