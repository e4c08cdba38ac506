"""The trunk-heads experiment: the closed-form population risk, the balance identity, wrong ingredients."""

from __future__ import annotations

import math

import pytest
import torch

from normpen.experiments import trunk_heads as th

SEED = th.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return th.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = th.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.figures["balance"].get_axes()) == 4


def _sampled_features(U, x):
    """(max(Ux, 0), x, 1) for each row of x."""
    return torch.cat([torch.relu(x @ U.T), x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def test_relu_gram_equals_the_second_moments_of_sampled_features(rng):
    U = torch.from_numpy(rng.standard_normal((5, 3)))
    x = torch.from_numpy(rng.standard_normal((400_000, 3)))
    z = _sampled_features(U, x)
    sampled = z.T @ z / x.shape[0]
    # standard error of each sampled moment, from the fourth moments
    se = torch.sqrt(((z[:, :, None] * z[:, None, :]) ** 2).mean(0) / x.shape[0])
    assert torch.all(torch.abs(th.relu_gram(U) - sampled) <= 5 * se + 1e-12)


@pytest.mark.parametrize(
    "angle, kernel", [(0.0, 0.5), (math.pi / 2, 1 / (2 * math.pi)), (math.pi, 0.0), (math.pi / 3, None)]
)
def test_relu_gram_on_unit_vectors_is_the_arc_cosine_kernel(angle, kernel):
    U = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]], dtype=torch.float64)
    if kernel is None:
        kernel = (math.sin(angle) + (math.pi - angle) * math.cos(angle)) / (2 * math.pi)
    gram = th.relu_gram(U)
    assert gram[0, 1].item() == pytest.approx(kernel, abs=1e-7 if angle == 0 else 1e-15)
    assert gram[0, 0].item() == 0.5 and gram[0, 4].item() == pytest.approx(1 / math.sqrt(2 * math.pi))
    torch.testing.assert_close(gram[:2, 2:4], U / 2)


def test_population_loss_matches_a_large_sample_and_finite_differences(rng):
    teacher = th.draw_teacher(3)
    params = th.init_network(5, 4)
    x = torch.from_numpy(rng.standard_normal((300_000, teacher.shared.shape[1])))
    y = torch.relu(x @ teacher.shared.T) @ teacher.heads + x @ teacher.specific
    f = torch.relu(x @ params.trunk.T) @ params.heads + params.head_bias
    per_sample = 0.5 * ((f - y) ** 2).sum(dim=1)
    penalty = 0.5 * 0.1 * (params.trunk**2).sum() + 0.5 * 0.2 * (params.heads**2).sum()
    exact = th.population_loss(params, teacher, 0.1, 0.2)
    se = per_sample.std() / math.sqrt(x.shape[0])
    assert abs(exact - (per_sample.mean() + penalty)) <= 5 * se

    vector = torch.as_tensor(params.flat()).requires_grad_(True)
    (grad,) = torch.autograd.grad(th.population_loss(params.from_flat(vector), teacher, 0.1, 0.2), vector)
    direction = torch.from_numpy(rng.standard_normal(vector.numel()))
    h = 1e-6
    values = [
        th.population_loss(params.from_flat(vector.detach() + s * h * direction), teacher, 0.1, 0.2)
        for s in (1, -1)
    ]
    assert float((values[0] - values[1]) / (2 * h)) == pytest.approx(float(grad @ direction), rel=1e-7)


def test_the_imbalance_of_each_unit_is_the_scaling_component_of_the_gradient_anywhere(rng):
    """λ_s‖w_j‖² − λ_tΣv_tj² = ⟨∇_{w_j}J, w_j⟩ − ⟨∇_{v_j}J, v_j⟩ at any point: the risk is scale invariant."""
    teacher = th.draw_teacher(1)
    params = th.init_network(6, 2)
    trunk = params.trunk.clone().requires_grad_(True)
    heads = params.heads.clone().requires_grad_(True)
    loss = th.population_loss(th.TrunkHeads(trunk, heads, params.head_bias), teacher, 0.03, 0.07)
    g_trunk, g_heads = torch.autograd.grad(loss, (trunk, heads))
    scaling = (g_trunk * trunk).sum(dim=1) - (g_heads * heads).sum(dim=1)
    imbalance = 0.03 * (trunk**2).sum(dim=1) - 0.07 * (heads**2).sum(dim=1)
    torch.testing.assert_close(scaling, imbalance.detach(), rtol=1e-10, atol=1e-13)


def test_rescaling_keeps_the_outputs_and_maps_the_penalized_loss(rng):
    teacher = th.draw_teacher(2)
    params = th.init_network(4, 3)
    x = torch.from_numpy(rng.standard_normal((50, teacher.shared.shape[1])))
    moved = th.rescaled(params, 9.0)

    def outputs(p):
        return torch.relu(x @ p.trunk.T) @ p.heads + p.head_bias

    # the same products computed with factors 3 and 1/3 in float64: a few ε relative
    torch.testing.assert_close(outputs(moved), outputs(params), rtol=1e-13, atol=1e-14)
    expected = th.population_loss(params, teacher, 0.1, 0.2)
    # J_{9λ_s, λ_t/9} at the rescaled point equals J_{λ_s, λ_t}: float64 sums of O(1) terms
    assert float(th.population_loss(moved, teacher, 0.9, 0.2 / 9)) == pytest.approx(
        float(expected), rel=1e-13
    )


def test_single_task_keeps_only_the_features_its_head_reads():
    unrelated = th.transfer_teachers(0)["unrelated"]
    alone = th.single_task(unrelated, 1)
    assert alone.shared.shape[0] == th._FEATURES_PER_TASK and alone.heads.shape[1] == 1
    torch.testing.assert_close(alone.shared, unrelated.shared[2:4], rtol=0, atol=0)


def test_the_checks_pass_for_another_seed():
    result = th.run(quick=True, seed=5)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

RATIO = "max |(‖W_s‖² / Σ‖v_t‖²) / (λ_t/λ_s) − 1| over the ratios"
UNITS = "max per-unit |λ_s‖w_j‖² − λ_t Σ_t v_tj²| / total penalty"
STATIONARY = "max ‖∇J‖‖θ‖ / total penalty at the fits (stationarity; bounds the imbalance)"
GROWS = "steps down in λ_s where ‖W_s‖² does not grow"
_SPLIT = f"λ_t/λ_s = {th._SPLIT_FACTOR**2:g} at the λ_s·λ_t of λ_t/λ_s = 1"
SPLIT_STATIONARY = f"{_SPLIT}: ‖∇J‖‖θ‖ / penalty at the rescaled ratio-1 fit (a stationary point)"
SPLIT_RISK = f"{_SPLIT}: risk at the rescaled fit / risk at the ratio-1 fit (the same function)"
_TRANSFER = "risk of one shared trunk / summed risk of one network per task"
NEGATIVE = f"unrelated tasks: {_TRANSFER} (negative transfer)"
POSITIVE = f"related tasks: {_TRANSFER} (no negative transfer)"


def _swapped_strengths(original):
    """The trunk gets λ_t and the heads λ_s: the penalties' bookkeeping done wrong."""
    return lambda params, teacher, trunk_lam, head_lam: original(params, teacher, head_lam, trunk_lam)


def _leaky_units(original):
    """Units max(w·x, 0) + x₁/2: a term that does not scale with w, so the units are not homogeneous."""

    def gram(U):
        g = original(U)
        n_units = U.shape[0]
        leak = torch.eye(g.shape[0], dtype=g.dtype)
        leak[:n_units, n_units] = 0.5  # z_j' = z_j + x_1 / 2 (row n_units of z is x_1)
        return leak @ g @ leak.T

    return gram


def _twenty_gradient_steps(start, teacher, trunk_lam, head_lam, polish=True):
    """An optimizer stopped long before convergence."""
    x = torch.as_tensor(start.flat()).requires_grad_(True)
    for _ in range(20):
        (g,) = torch.autograd.grad(th.population_loss(start.from_flat(x), teacher, trunk_lam, head_lam), x)
        x = (x - 0.05 * g).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(th.population_loss(start.from_flat(x), teacher, trunk_lam, head_lam), x)
    return th.Fit(start.from_flat(x.detach()), trunk_lam, head_lam, float(g.norm()))


def _one_kind_of_tasks(kind):
    """Both teachers of the transfer checks of one kind."""
    return lambda original: lambda seed: dict.fromkeys(("related", "unrelated"), original(seed)[kind])


WRONG = {
    "strengths swapped": ("population_loss", _swapped_strengths, {RATIO, GROWS, SPLIT_STATIONARY}),
    "units not positively homogeneous": ("relu_gram", _leaky_units, {RATIO, UNITS, SPLIT_RISK}),
    "the unrelated tasks related": ("transfer_teachers", _one_kind_of_tasks("related"), {NEGATIVE}),
    "the related tasks unrelated": ("transfer_teachers", _one_kind_of_tasks("unrelated"), {POSITIVE}),
    "optimizer stopped early": ("fit", lambda original: _twenty_gradient_steps, {RATIO, UNITS, STATIONARY}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    attribute, wrap, must_fail = WRONG[scenario]
    monkeypatch.setattr(th, attribute, wrap(getattr(th, attribute)))
    failed = {c.name for c in th.run(quick=True, seed=SEED).checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
