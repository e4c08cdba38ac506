"""Every mode on every optimizer against the hand-written update, and the semantics of seed 004.

The references use only the penalties' validated public API (``grad``,
``prox``, ``project``) and plain tensor arithmetic, never normpen.torch.

Tolerances: bit equality (``exact=True``, ``torch.equal``) only where decoupled L2 is compared with
AdamW, SGDW or a hand-written decay: the decay is the same correctly rounded multiply by the same double
``1 - lr * lam`` and the optimizer's update is the same code, so both sides round identically. Elsewhere
float64 trainings of a few dozen steps by different operations: a few eps relative per step (norms of
at most 27 entries), measured at most 2.4e-13 relative and 1.9e-16 absolute, so ``rtol=1e-12,
atol=1e-14``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch_cases import OPTIMIZERS, assert_same, conv_batches, conv_net, mse_step, named, twin

from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.spectral import Spectral
from normpen.torch import STATE_KEY, Regularizer, Rule

WEIGHTS = ["conv.weight", "fc.weight", "head.weight"]

#: (mode, penalty, radius): every mode with the penalties it is meant for.
MODE_CASES = {
    "coupled-L2": ("coupled", L2(0.1), None),
    "coupled-group-cols": ("coupled", GroupLasso(0.05, "cols"), None),
    "decoupled-L2": ("decoupled", L2(0.1), None),
    "decoupled-elastic-net": ("decoupled", ElasticNet(0.05, 0.5), None),
    "proximal-L1": ("proximal", L1(0.05), None),
    "proximal-group-rows": ("proximal", GroupLasso(0.2, "rows"), None),
    "proximal-elastic-net": ("proximal", ElasticNet(0.05, 0.7), None),
    "proximal-nuclear": ("proximal", Nuclear(0.2), None),
    "constrained-L2-ball": ("constrained", L2(1.0), 0.5),
    "constrained-max-norm": ("constrained", MaxNorm(1.0), 0.3),
    "constrained-spectral": ("constrained", Spectral(1.0), 0.4),
}


def _as_input(penalty, p):
    return p.reshape(p.shape[0], -1) if penalty.matrix_only and p.ndim > 2 else p


def reference_step(model, optimizer, batch, mode, penalty, radius):
    """The update written by hand: the penalty's gradient, prox or projection around a plain step."""
    x, y = batch
    optimizer.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    params = named(model, WEIGHTS)
    lr = optimizer.param_groups[0]["lr"]
    with torch.no_grad():
        for p in params:
            if mode == "coupled":
                p.grad += penalty.grad(_as_input(penalty, p)).reshape(p.shape)
            elif mode == "decoupled":
                p -= lr * penalty.grad(_as_input(penalty, p)).reshape(p.shape)
    optimizer.step()
    with torch.no_grad():
        for p in params:
            if mode == "proximal":
                p.copy_(penalty.prox(_as_input(penalty, p), lr).reshape(p.shape))
            elif mode == "constrained":
                p.copy_(penalty.project(_as_input(penalty, p), radius).reshape(p.shape))


@pytest.mark.parametrize("case", sorted(MODE_CASES))
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_every_mode_on_every_optimizer_matches_the_hand_written_update(opt_name, case):
    mode, penalty, radius = MODE_CASES[case]
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(penalty, mode=mode, radius=radius))
    assert reg.names(reg.rules[0]) == WEIGHTS
    optimizer = reg.wrap(OPTIMIZERS[opt_name](model.parameters()))
    ref_optimizer = OPTIMIZERS[opt_name](reference.parameters())
    for batch in conv_batches(4):
        mse_step(model, optimizer, batch, reg.penalty)
        reference_step(reference, ref_optimizer, batch, mode, penalty, radius)
    assert_same(model, reference, rtol=1e-12, atol=1e-14)  # the module's float64 tier (was 1e-9 / 1e-11)


def _two_group_adamw(model, lr, weight_decay, foreach):
    decay = [p for n, p in model.named_parameters() if n in WEIGHTS]
    rest = [p for n, p in model.named_parameters() if n not in WEIGHTS]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        foreach=foreach,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_decoupled_l2_on_adam_is_adamw_bit_for_bit_under_a_schedule(foreach):
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(0.05), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.0, foreach=foreach))
    adamw = _two_group_adamw(reference, 1e-2, 0.05, foreach)
    schedule = lambda step: 1.0 / (1 + 0.05 * step) * (0.5 if step % 7 == 0 else 1.0)  # noqa: E731
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (adam, adamw)]
    for batch in conv_batches(100, n=4):
        mse_step(model, adam, batch)
        mse_step(reference, adamw, batch)
        for scheduler in schedulers:
            scheduler.step()
        assert_same(model, reference, exact=True)
    assert adam.param_groups[0]["lr"] != 1e-2


def test_decoupled_l2_on_sgd_is_sgdw_written_by_hand():
    lr, lam, momentum = 0.05, 0.1, 0.9
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(lam), mode="decoupled"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum))
    buffers = {}
    for batch in conv_batches(30):
        mse_step(model, sgd, batch)
        x, y = batch
        reference.zero_grad()
        ((reference(x) - y) ** 2).mean().backward()
        with torch.no_grad():
            for name, p in reference.named_parameters():
                if name in WEIGHTS:
                    p.mul_(1 - lr * lam)
                if name in buffers:
                    buffers[name].mul_(momentum).add_(p.grad)
                else:
                    buffers[name] = p.grad.clone()
                p.add_(buffers[name], alpha=-lr)
    assert_same(model, reference, exact=True)


def test_coupled_l2_on_sgd_with_momentum_is_sgd_weight_decay():
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(0.1), mode="coupled", candidates="all"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    ref_sgd = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
    for batch in conv_batches(30):
        mse_step(model, sgd, batch, reg.penalty)
        mse_step(reference, ref_sgd, batch)
    assert_same(model, reference, rtol=1e-12, atol=1e-14)  # SGD's fused add vs autograd's: the tier


def _train(mode, momentum, steps=30):
    model = conv_net()
    reg = Regularizer(model, Rule(L2(0.5), mode=mode))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum))
    for batch in conv_batches(steps):
        mse_step(model, sgd, batch, reg.penalty)
    return model


def test_decoupled_and_coupled_agree_without_momentum_and_differ_with_it():
    # Seed 004: scheme A (penalty in the loss) and scheme B (decoupled decay) coincide iff beta = 0.
    assert_same(_train("coupled", 0.0), _train("decoupled", 0.0), rtol=1e-12, atol=1e-14)
    a, b = _train("coupled", 0.9), _train("decoupled", 0.9)
    gap = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert gap > 1e-3  # measured 0.67: momentum changes the result, not the rounding (1e-14)


class WithIdle(nn.Module):
    """A model with a layer whose data gradient is exactly zero (its output is multiplied by 0)."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 1)
        self.idle = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.idle.weight.copy_(torch.tensor([[0.01, 1.0, 100.0]]))

    def forward(self, x):
        return self.used(x) + 0.0 * self.idle(x)


def _idle_ratios(mode, steps=50, lr=1e-2, lam=0.1):
    torch.manual_seed(0)
    model = WithIdle().double()
    reg = Regularizer(model, Rule(L2(lam), mode=mode, select="idle.*"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=lr))
    start = model.idle.weight.detach().clone()
    expected = start.clone()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    for _ in range(steps):
        mse_step(model, adam, (x, y), reg.penalty)
        expected.mul_(1 - lr * lam)
    return model.idle.weight.detach() / start, expected / start, model.idle.weight.detach(), expected


def test_zero_gradient_parameter_shrinks_by_exactly_one_minus_lr_lam_per_step_when_decoupled():
    _, _, weight, expected = _idle_ratios("decoupled")
    assert torch.equal(weight, expected)  # (1 - lr*lam)^t, bit for bit, for every magnitude


def test_adam_with_coupled_l2_shrinks_by_a_magnitude_dependent_factor():
    ratios, _, _, _ = _idle_ratios("coupled")
    # Adam normalises the penalty gradient: each entry moves ~lr per step whatever its size, so
    # the small entry is wiped out while the large one barely moves.
    small, middle, large = ratios[0].tolist()
    assert small < 0.5 and large > 0.99 and small < middle < large


def test_proximal_l1_is_the_closed_form_soft_threshold_after_each_step():
    lr, lam = 0.1, 0.05
    model = conv_net()
    reference = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    reg = Regularizer(model, Rule(L1(lam), mode="proximal"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=lr))
    for batch in conv_batches(20):
        probe = twin(model)  # the data gradient at the current point, from a separate copy
        x, y = batch
        ((probe(x) - y) ** 2).mean().backward()
        for name, p in probe.named_parameters():
            z = reference[name] - lr * p.grad.numpy()
            reference[name] = np.sign(z) * np.maximum(np.abs(z) - lr * lam, 0) if name in WEIGHTS else z
        mse_step(model, sgd, batch)
        for name, p in model.named_parameters():
            # numpy's soft thresholding against the kernel's: the same subtraction, but SGD's fused update
            # and numpy's two-op update differ by a rounding per step: the tier (atol: 4 eps of order one)
            np.testing.assert_allclose(p.detach().numpy(), reference[name], rtol=1e-12, atol=1e-15)
    zeros = sum(int((p == 0).sum()) for p in named(model, WEIGHTS))
    assert zeros > 20  # exact zeros, not small numbers


def test_group_prox_zeroes_whole_rows():
    model = conv_net()
    reg = Regularizer(model, Rule(GroupLasso(0.5, "rows"), mode="proximal", select="fc.weight"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    for batch in conv_batches(25):
        mse_step(model, adam, batch)
    w = model.fc.weight.detach()
    zero_rows = (w == 0).all(dim=1)
    assert 0 < int(zero_rows.sum()) < w.shape[0]
    assert not (w[~zero_rows] == 0).any()  # zeros come only as whole rows
    assert reg.report().rules[0].tensors[0].zero_rows == int(zero_rows.sum())


def test_proximal_nuclear_gives_exact_low_rank():
    model = conv_net()
    reg = Regularizer(model, Rule(Nuclear(0.5), mode="proximal", select="fc.weight"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    for batch in conv_batches(15):
        mse_step(model, sgd, batch)
    s = torch.linalg.svdvals(model.fc.weight.detach())
    rank = int((s > s[0] * 1e-12).sum())
    assert rank < min(model.fc.weight.shape)


def test_constrained_max_norm_keeps_every_filter_in_the_ball():
    model = conv_net()
    reg = Regularizer(model, Rule(MaxNorm(1.0), mode="constrained", radius=0.2))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))
    for batch in conv_batches(10):
        mse_step(model, adam, batch)
        for p in named(model, WEIGHTS):
            norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            assert norms.max() <= 0.2 * (1 + 1e-12)
            assert torch.isclose(norms.max(), torch.tensor(0.2, dtype=norms.dtype))


def test_max_norm_in_proximal_mode_projects_onto_its_own_radius():
    model = conv_net()
    reg = Regularizer(model, Rule(MaxNorm(0.25), mode="proximal", select="fc.weight"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))
    for batch in conv_batches(5):
        mse_step(model, adam, batch)
    assert model.fc.weight.detach().norm(dim=1).max() <= 0.25 * (1 + 1e-12)


@pytest.mark.parametrize("schedule", ["follow", "fixed"])
def test_decay_follows_the_schedule_or_stays_fixed(schedule):
    lr, lam = 0.1, 0.2
    torch.manual_seed(0)
    model = WithIdle().double()
    reg = Regularizer(model, Rule(L2(lam), mode="decoupled", select="idle.*", schedule=schedule))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=lr))
    scheduler = torch.optim.lr_scheduler.StepLR(sgd, step_size=2, gamma=0.5)
    expected = model.idle.weight.detach().clone()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    for _ in range(6):
        current = sgd.param_groups[0]["lr"]
        expected.mul_(1 - (current if schedule == "follow" else lr) * lam)
        mse_step(model, sgd, (x, y))
        scheduler.step()
    assert torch.equal(model.idle.weight.detach(), expected)


def test_fixed_schedule_uses_the_base_lr_of_a_scheduler_attached_before_wrapping():
    model = WithIdle().double()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.LinearLR(sgd, start_factor=0.1)  # lr is 0.01 now, initial_lr 0.1
    reg = Regularizer(model, Rule(L2(0.2), mode="decoupled", select="idle.*", schedule="fixed"))
    reg.wrap(sgd)
    expected = model.idle.weight.detach() * (1 - 0.1 * 0.2)
    mse_step(model, sgd, (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)))
    assert torch.equal(model.idle.weight.detach(), expected)


def test_a_tensor_learning_rate_works_without_host_values():
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, [Rule(L2(0.05), mode="decoupled"), Rule(L1(0.01), mode="proximal")])
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-2, dtype=torch.float64)))
    ref_adam = torch.optim.Adam(reference.parameters(), lr=1e-2)
    ref_reg = Regularizer(reference, [Rule(L2(0.05), mode="decoupled"), Rule(L1(0.01), mode="proximal")])
    ref_reg.wrap(ref_adam)
    for batch in conv_batches(5):
        mse_step(model, adam, batch)
        mse_step(reference, ref_adam, batch)
    assert_same(model, reference, rtol=1e-12, atol=1e-14)


def test_parameters_without_gradient_are_skipped_like_adamw_does():
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    adamw = _two_group_adamw(reference, 1e-2, 0.1, foreach=False)
    for batch in conv_batches(5):
        for m, o in ((model, adam), (reference, adamw)):
            x, y = batch
            o.zero_grad(set_to_none=True)
            ((m(x) - y) ** 2).mean().backward()
            m.conv.weight.grad = None  # frozen for this step: neither AdamW nor normpen touches it
            o.step()
    assert_same(model, reference, exact=True)


def test_a_parameter_outside_every_optimizer_fails_the_first_step_before_any_change():
    model = conv_net()
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam([p for n, p in model.named_parameters() if n != "head.weight"], lr=0.1))
    before = twin(model)
    x, y = conv_batches(1)[0]
    ((model(x) - y) ** 2).mean().backward()
    with pytest.raises(ValueError, match="head.weight"):
        adam.step()
    assert_same(model, before, exact=True)
    assert not adam.state  # the optimizer did not step either


def test_two_optimizers_each_handle_their_parameters():
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimizers = [
        reg.wrap(torch.optim.Adam(body, lr=1e-2)),
        reg.wrap(torch.optim.SGD(model.head.parameters(), lr=0.1)),
    ]
    decayed = [reference.conv.weight, reference.fc.weight]
    rest = [reference.conv.bias, reference.fc.bias, reference.norm.weight, reference.norm.bias]
    adamw = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-2
    )
    sgd = torch.optim.SGD(reference.head.parameters(), lr=0.1)
    for x, y in conv_batches(5):
        for o in optimizers:
            o.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        for o in optimizers:
            o.step()
        reference.zero_grad()
        ((reference(x) - y) ** 2).mean().backward()
        adamw.step()
        with torch.no_grad():
            reference.head.weight.mul_(1 - 0.1 * 0.1)  # SGDW by hand
        sgd.step()
    assert_same(model, reference, exact=True)


def test_a_param_group_added_after_wrapping_is_picked_up():
    model = conv_net()
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled", select="head.weight"))
    sgd = reg.wrap(torch.optim.SGD([p for n, p in model.named_parameters() if n != "head.weight"], lr=0.1))
    sgd.add_param_group({"params": [model.head.weight], "lr": 0.5})
    x, y = conv_batches(1)[0]
    ((model(x) - y) ** 2).mean().backward()
    expected = model.head.weight.detach() * (1 - 0.5 * 0.1) - 0.5 * model.head.weight.grad
    sgd.step()
    # the fused p (1 - lr lam) - lr g against two separate roundings: ~3 eps of terms of order one
    torch.testing.assert_close(model.head.weight.detach(), expected, rtol=1e-14, atol=1e-15)


def test_unwrap_restores_the_plain_optimizer_and_the_state_dict_is_untouched():
    model = conv_net()
    reference = twin(model)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    ref_adam = torch.optim.Adam(reference.parameters(), lr=1e-2)
    groups = adam.state_dict()["param_groups"]
    assert STATE_KEY in groups[0]  # the regularizer's state rides in the first group, nothing else differs
    plain = ref_adam.state_dict()["param_groups"]
    assert [{k: v for k, v in g.items() if k != STATE_KEY} for g in groups] == plain
    reg.unwrap(adam)
    for batch in conv_batches(3):
        mse_step(model, adam, batch)
        mse_step(reference, ref_adam, batch)
    assert_same(model, reference, exact=True)
    with pytest.raises(ValueError, match="not wrapped"):
        reg.unwrap(adam)


def test_double_decay_is_warned_and_a_missing_penalty_call_too():
    model = conv_net()
    reg = Regularizer(model, Rule(L2(0.1), mode="coupled"))
    with pytest.warns(UserWarning, match="decayed twice"):
        adam = reg.wrap(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01))
    with pytest.warns(UserWarning, match=r"without reg.penalty\(\)"):
        mse_step(model, adam, conv_batches(1)[0])


def test_wrap_rejects_non_optimizers_and_double_wrapping():
    model = conv_net()
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        reg.wrap(object())
    adam = reg.wrap(torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="already wrapped"):
        reg.wrap(adam)


def test_coupled_penalty_is_the_sum_of_the_penalty_values_and_its_gradient_is_the_penalty_gradient():
    model = conv_net()
    pen = GroupLasso(0.3, "rows")
    with torch.no_grad():
        model.fc.weight[2] = 0.0  # a zero group: the norm is not differentiable there
    reg = Regularizer(model, Rule(pen, mode="coupled"))
    value = reg.penalty()
    expected = sum(pen.value(p.detach()) for p in named(model, WEIGHTS))
    # group norms of at most 27 entries summed in another order: ~(27 + 6) eps = 7e-15
    assert math.isclose(value.item(), expected.item(), rel_tol=1e-13)
    value.backward()
    for p in named(model, WEIGHTS):
        torch.testing.assert_close(p.grad, pen.grad(p.detach()), rtol=1e-13, atol=0)
    assert torch.equal(model.fc.weight.grad[2], torch.zeros(27, dtype=torch.float64))  # no NaN
    assert model.fc.bias.grad is None and model.norm.weight.grad is None
