"""The spectral penalty and the spectral-ball constraint: values and gradients against exact spectral
norms, projections against the SVD, persistence, and use inside normpen.torch training rules."""

import copy
import io

import pytest
import torch
from analysis_helpers import make_mlp, train
from torch import nn

from normpen.analysis.operator_norm import layer_input_shapes, operator_norm_bound, operator_norm_exact
from normpen.analysis.spectral_penalty import SpectralConstraint, SpectralPenalty


def _exact_norms(model, input_shape):
    shapes = layer_input_shapes(model, input_shape)
    return {
        name: float(operator_norm_exact(m, shapes[name]))
        for name, m in model.named_modules()
        if name in shapes
    }


def _cnn64():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    ).double()


def test_penalty_value_is_lam_times_the_sum_of_operator_norms_at_convergence():
    model = _cnn64()
    penalty = SpectralPenalty(model, 0.7, (1, 6, 6), n_iter=400)
    exact = _exact_norms(model, (1, 6, 6))
    assert set(exact) == {"0", "2", "5"}
    value = penalty(model).item()
    assert value <= 0.7 * sum(exact.values()) * (1 + 1e-12)  # a Rayleigh quotient: below, up to rounding
    # seeded float64 power iteration, so deterministic up to rounding; its error shrinks like (s2/s1)^(2k),
    # slowest for layer 0 (s2/s1 = 0.997): measured 2.6e-5 there at k = 400 (1.1e-5 for the sum), 4x room
    assert value == pytest.approx(0.7 * sum(exact.values()), rel=1e-4)
    estimates = penalty.estimates()
    for name, norm in exact.items():
        assert estimates[name].item() == pytest.approx(norm, rel=1e-4)


def test_penalty_gradient_is_lam_u_v_transpose_the_gradient_of_the_exact_norms():
    model = _cnn64()
    penalty = SpectralPenalty(model, 0.5, (1, 6, 6), n_iter=600)
    penalty(model).backward()
    linear = model[5]
    weight = linear.weight.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(0.5 * torch.linalg.matrix_norm(weight, ord=2), weight)
    # 600 steps leave (s2/s1)^600 < 1e-37 of the singular vectors' error (s2/s1 = 0.78 and 0.87 for these
    # layers): what remains is float64 rounding, ~ eps / (1 - s2/s1) ~ 1e-15 in the SVD reference; the
    # 1e-6 and 1e-5 below are loose upper bounds on that, not tuned
    torch.testing.assert_close(linear.weight.grad, expected, rtol=1e-6, atol=1e-9)
    it = penalty.iterations["5"]
    torch.testing.assert_close(linear.weight.grad, 0.5 * torch.outer(it.u[0], it.v[0]))
    conv = model[2]
    kernel = conv.weight.detach().clone().requires_grad_(True)
    basis = torch.eye(3 * 6 * 6, dtype=torch.float64).reshape(-1, 3, 6, 6)
    matrix = nn.functional.conv2d(basis, kernel, None, 2).reshape(basis.shape[0], -1)
    (expected,) = torch.autograd.grad(0.5 * torch.linalg.matrix_norm(matrix, ord=2), kernel)
    torch.testing.assert_close(conv.weight.grad, expected, rtol=1e-5, atol=1e-8)
    assert linear.bias.grad is None


def test_one_iteration_per_call_tracks_the_norms_as_calls_repeat():
    model = _cnn64()
    penalty = SpectralPenalty(model, 1.0, (1, 6, 6), n_iter=1)
    exact = sum(_exact_norms(model, (1, 6, 6)).values())
    values = [penalty(model).item() for _ in range(150)]
    assert all(v <= exact * (1 + 1e-12) for v in values)
    assert values[-1] > values[0]
    # 150 steps of the same iteration: measured 2.0e-4 (layer 0's s2/s1 = 0.997 again), 5x room
    assert values[-1] == pytest.approx(exact, rel=1e-3)


def test_names_select_layers_and_mlp_needs_no_input_shape():
    model = make_mlp(0).double()
    penalty = SpectralPenalty(model, 1.0, names=["2"], n_iter=300)
    assert list(penalty.iterations) == ["2"]
    expected = float(torch.linalg.matrix_norm(model[2].weight.detach(), ord=2))
    # s2/s1 = 0.84: 300 steps leave (0.84)^600 ~ 1e-45, so only float64 rounding remains (measured 2e-16)
    assert penalty(model).item() == pytest.approx(expected, rel=1e-6)


def test_training_with_the_penalty_lowers_the_lipschitz_bound(digits):
    X, y, _, _ = digits
    plain = train(make_mlp(3), X[:500], y[:500], epochs=60, seed=3)
    model = make_mlp(3)
    penalized = train(model, X[:500], y[:500], epochs=60, seed=3, penalty=SpectralPenalty(model, 0.05))
    product = [
        operator_norm_bound(m[0]).item() * operator_norm_bound(m[2]).item() for m in (plain, penalized)
    ]
    assert product[1] < 0.8 * product[0]


def test_state_dict_round_trip_and_checks():
    model = _cnn64()
    penalty = SpectralPenalty(model, 1.0, (1, 6, 6), n_iter=5)
    penalty(model)
    state = penalty.state_dict()
    fresh = SpectralPenalty(model, 1.0, (1, 6, 6), n_iter=0, seed=7)
    fresh.load_state_dict(state)
    for name in state:
        torch.testing.assert_close(fresh.iterations[name].u, penalty.iterations[name].u)
    broken = {name: dict(s) for name, s in state.items()}
    broken["5"] = {"u": torch.zeros(1, 7), "v": state["5"]["v"]}
    before = fresh.state_dict()
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict(broken)
    for name in state:  # nothing half-loaded
        torch.testing.assert_close(fresh.iterations[name].u, before[name]["u"])
    with pytest.raises(ValueError, match="expected"):
        fresh.load_state_dict({"0": state["0"]})


def test_rescale_constraint_with_certified_bound_puts_every_layer_in_the_ball():
    model = _cnn64()
    for layer in (model[0], model[2], model[5]):
        with torch.no_grad():
            layer.weight.mul_(3.0)
    constraint = SpectralConstraint(model, 0.8, (1, 6, 6), certified=True)
    constraint.project_(model)
    for name, norm in _exact_norms(model, (1, 6, 6)).items():
        assert norm <= 0.8
        assert norm >= 0.8 * 0.9, name  # rescaled to the ball's surface up to the bound's slack
    inside = copy.deepcopy(model)
    constraint.project_(model)  # already inside: unchanged
    for a, b in zip(inside.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_rescale_constraint_with_power_iteration_reaches_the_ball():
    model = _cnn64()
    constraint = SpectralConstraint(model, 0.5, (1, 6, 6), n_iter=400)
    constraint.project_(model)
    for norm in _exact_norms(model, (1, 6, 6)).values():
        assert norm <= 0.5 * (1 + 1e-4)  # the estimate is a lower bound: the ball is reached from outside


def test_clip_constraint_is_the_svd_projection_when_one_singular_value_is_too_large():
    torch.manual_seed(1)
    u, _, vh = torch.linalg.svd(torch.randn(5, 4, dtype=torch.float64), full_matrices=False)
    layer = nn.Linear(4, 5).double()
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)) @ vh)
    model = nn.Sequential(layer)
    SpectralConstraint(model, 1.5, mode="clip", n_iter=200).project_(model)
    expected = u @ torch.diag(torch.tensor([1.5, 1.0, 0.5, 0.2], dtype=torch.float64)) @ vh
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=1e-10)


def test_clear_errors():
    cnn = _cnn64()
    with pytest.raises(ValueError, match="input_shape is required"):
        SpectralPenalty(cnn, 1.0)
    with pytest.raises(ValueError, match="no Linear/Conv layer named"):
        SpectralPenalty(cnn, 1.0, (1, 6, 6), names=["7"])
    with pytest.raises(ValueError, match="lam must be >= 0"):
        SpectralPenalty(cnn, -1.0, (1, 6, 6))
    with pytest.raises(ValueError, match="another model"):
        SpectralPenalty(cnn, 1.0, (1, 6, 6))(_cnn64())
    with pytest.raises(ValueError, match="no Linear, Conv1d or Conv2d"):
        SpectralPenalty(nn.Sequential(nn.ReLU()), 1.0)
    with pytest.raises(ValueError, match="mode='rescale'"):
        SpectralConstraint(cnn, 1.0, (1, 6, 6), mode="clip")
    with pytest.raises(ValueError, match="certified=True needs"):
        SpectralConstraint(make_mlp(0), 1.0, mode="clip", certified=True)
    with pytest.raises(ValueError, match="radius must be > 0"):
        SpectralConstraint(cnn, 0.0, (1, 6, 6))
    with pytest.raises(ValueError, match="n_iter"):
        SpectralPenalty(cnn, 1.0, (1, 6, 6), n_iter=-1)
    with pytest.raises(TypeError, match=r"\['0'\]"):
        SpectralPenalty(cnn, 1.0, (1, 6, 6), names="0")


def test_unreached_conv_is_an_error():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv1d(1, 1, 3)
            self.unused = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match=r"\['unused'\] are not used"):
        SpectralPenalty(TwoBranches(), 1.0, (1, 8))


# ---- with normpen.torch's Regularizer ------------------------------------------------------------


def test_spectral_and_path_norm_penalties_as_coupled_rules_of_the_regularizer():
    from normpen.analysis.pathnorm import PathNormPenalty, path_norm
    from normpen.torch import Regularizer, Rule

    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 10)
    ).double()
    spectral = SpectralPenalty(model, 0.1, (1, 8, 8), n_iter=300)
    path = PathNormPenalty(0.01, input_shape=(1, 8, 8))
    reg = Regularizer(model, [Rule(spectral, mode="coupled"), Rule(path, mode="coupled")])
    opt = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.01))
    value = reg.penalty()
    exact = sum(_exact_norms(model, (1, 8, 8)).values())
    assert value.item() == pytest.approx(0.1 * exact + 0.01 * path_norm(model, 2, (1, 8, 8)).item(), rel=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    value.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _step(model, opt, x, reg=None):
    """One optimizer step on a quadratic loss, plus ``reg.penalty()`` when given."""
    opt.zero_grad()
    loss = model(x).pow(2).sum()
    (loss if reg is None else loss + reg.penalty()).backward()
    opt.step()


def test_spectral_ball_rule_keeps_every_layer_in_the_ball_after_every_step():
    from normpen.torch import Regularizer, Rule

    model = _cnn64()
    shapes = layer_input_shapes(model, (1, 6, 6))
    ball = SpectralConstraint(model, 0.5, (1, 6, 6), certified=True)
    reg = Regularizer(model, Rule(ball, mode="constrained"))
    opt = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.5))
    x = torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        _step(model, opt, x)
        for name in ("0", "2", "5"):
            layer = dict(model.named_modules())[name]
            assert operator_norm_bound(layer, shapes.get(name)).item() <= 0.5 * (1 + 1e-12), name
    assert reg.report().rules[0].value <= 0.5 * (1 + 1e-12)


def test_power_iteration_rule_keeps_every_linear_layer_in_the_ball_after_every_step():
    from normpen.torch import Regularizer, Rule

    model = make_mlp(0).double()
    reg = Regularizer(model, Rule(SpectralConstraint(model, 0.5, n_iter=50), mode="constrained"))
    opt = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.5))
    x = torch.randn(16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        _step(model, opt, x)
        for layer in (model[0], model[2]):
            assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) <= 0.5 * (1 + 1e-6)


def test_the_rule_is_bit_identical_to_projecting_in_a_step_post_hook():
    from normpen.torch import Regularizer, Rule

    x = torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    by_hook, by_rule = _cnn64(), _cnn64()
    hooked = SpectralConstraint(by_hook, 0.7, (1, 6, 6))
    adam = torch.optim.Adam(by_hook.parameters(), lr=0.05)
    adam.register_step_post_hook(lambda *_: hooked.project_(by_hook))  # what attach(optimizer) did
    reg = Regularizer(by_rule, Rule(SpectralConstraint(by_rule, 0.7, (1, 6, 6)), mode="constrained"))
    rule_adam = reg.wrap(torch.optim.Adam(by_rule.parameters(), lr=0.05))
    for _ in range(6):
        _step(by_hook, adam, x)
        _step(by_rule, rule_adam, x)
    for a, b in zip(by_hook.parameters(), by_rule.parameters(), strict=True):
        assert torch.equal(a, b)


def _spectral_run(seed):
    from normpen.torch import Regularizer, Rule

    model = _cnn64()
    rules = [
        Rule(SpectralConstraint(model, 0.6, (1, 6, 6), names=["0", "2"], seed=seed), mode="constrained"),
        Rule(SpectralPenalty(model, 0.1, (1, 6, 6), names=["5"], seed=seed), mode="coupled"),
    ]
    reg = Regularizer(model, rules)
    return model, reg, reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))


def _round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_run_resumed_from_the_regularizer_state_ends_bit_identical():
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=g) for _ in range(8)]
    straight = _spectral_run(seed=0)
    for x in batches:
        _step(straight[0], straight[2], x, straight[1])
    model, reg, adam = _spectral_run(seed=0)
    for x in batches[:4]:
        _step(model, adam, x, reg)
    saved = _round_trip({"model": model.state_dict(), "opt": adam.state_dict(), "reg": reg.state_dict()})
    model, reg, adam = _spectral_run(seed=5)  # other starting vectors: only the loaded state makes them equal
    model.load_state_dict(saved["model"])
    adam.load_state_dict(saved["opt"])
    reg.load_state_dict(saved["reg"])
    for x in batches[4:]:
        _step(model, adam, x, reg)
    for a, b in zip(straight[0].parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_reports_do_not_change_the_run():
    x = torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    quiet, logged = _spectral_run(seed=0), _spectral_run(seed=0)
    for _ in range(4):
        _step(quiet[0], quiet[2], x, quiet[1])
        _step(logged[0], logged[2], x, logged[1])
        report = logged[1].report()
    assert report.rules[1].value > 0
    for a, b in zip(quiet[0].parameters(), logged[0].parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_state_that_does_not_fit_changes_nothing():
    model, reg, _ = _spectral_run(seed=0)
    state = reg.state_dict()
    constraint = reg.rules[0].penalty
    before = constraint.state_dict()
    bad = copy.deepcopy(state)
    bad["model_level"]["1"]["5"]["u"] = torch.zeros(1, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        reg.load_state_dict(bad)
    for name, vectors in constraint.state_dict().items():  # the first rule's load was undone
        assert torch.equal(vectors["u"], before[name]["u"])
    missing = copy.deepcopy(state)
    del missing["model_level"]["0"]
    with pytest.raises(ValueError, match="model-level"):
        reg.load_state_dict(missing)


def test_rule_errors_for_model_level_constraints():
    from normpen.torch import Rule

    ball = SpectralConstraint(make_mlp(0), 1.0)
    with pytest.raises(ValueError, match="carries its own radius"):
        Rule(ball, mode="constrained", radius=1.0)
    with pytest.raises(ValueError, match="leave select=None"):
        Rule(ball, mode="constrained", select="0.weight")
    with pytest.raises(TypeError, match="project_"):
        Rule(lambda m: m, mode="constrained")
    with pytest.raises(TypeError, match="callable"):
        Rule(ball, mode="coupled")


def test_a_constraint_built_for_another_model_is_refused_before_any_step():
    from normpen.torch import Regularizer, Rule

    with pytest.raises(ValueError, match="constrained SpectralConstraint.*another model"):
        Regularizer(make_mlp(1), Rule(SpectralConstraint(make_mlp(0), 1.0), mode="constrained"))
