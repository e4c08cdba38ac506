"""Every driver of optimizer.step gives the same update, and a step that raises changes nothing.

Drivers: ``opt.step(closure)`` (Adam, LBFGS), gradient accumulation, AMP's
``GradScaler`` (a skipped step skips the regularizer too). Failures: the
closure raises, the optimizer would raise (``betas="bad"``), a second param
group has a bad learning rate; in each mode the parameters, the optimizer
state and the regularizer state stay bit-identical.

Bit equality is the right comparison here: a refused step must change nothing, and the AdamW (or
hand-decayed LBFGS) twins run the same decay multiply by the same double and the same update code.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch_cases import assert_same, conv_batches, conv_net

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.torch import Regularizer, Rule


def _mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _closure(model, optimizer, batch, extra=None):
    def closure():
        optimizer.zero_grad()
        loss = _mse(model, batch)
        if extra is not None:
            loss = loss + extra()
        loss.backward()
        return loss

    return closure


def test_step_with_a_closure_is_adamw_bit_for_bit():
    batches = conv_batches(12)
    plain, regularized = conv_net(0), conv_net(0)
    adamw = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1)
    reg = Regularizer(regularized, Rule(L2(0.1), mode="decoupled", candidates="all"))
    adam = reg.wrap(torch.optim.Adam(regularized.parameters(), lr=1e-2))
    for batch in batches:
        adamw.step(_closure(plain, adamw, batch))
        adam.step(_closure(regularized, adam, batch))
    assert_same(regularized, plain, exact=True)


def test_lbfgs_decays_once_right_after_its_first_closure_call():
    batches = conv_batches(3)
    plain, regularized = conv_net(0), conv_net(0)
    lr, lam = 0.5, 0.2
    lbfgs = torch.optim.LBFGS(plain.parameters(), lr=lr, max_iter=3)
    reg = Regularizer(regularized, Rule(L2(lam), mode="decoupled"))
    wrapped = reg.wrap(torch.optim.LBFGS(regularized.parameters(), lr=lr, max_iter=3))
    weights = reg.names(reg.rules[0])
    for batch in batches:
        inner = _closure(plain, lbfgs, batch)
        calls = []

        def decay_after_first_call(inner=inner, calls=calls):
            loss = inner()
            if not calls:
                with torch.no_grad():
                    for name, p in plain.named_parameters():
                        if name in weights:
                            p.mul_(1 - lr * lam)
            calls.append(loss)
            return loss

        lbfgs.step(decay_after_first_call)
        wrapped.step(_closure(regularized, wrapped, batch))
        assert len(calls) > 1  # the line search evaluated the closure again: decayed only once
    assert_same(regularized, plain, exact=True)


def test_coupled_and_lagrangian_rules_inside_a_closure_neither_warn_nor_fail():
    model = conv_net(0)
    lagrangian = Rule(GroupLasso(1.0, "rows"), mode="lagrangian", budget=0.1, dual_lr=0.5, select="fc.weight")
    reg = Regularizer(model, [Rule(L2(0.01), mode="coupled", select="conv.weight"), lagrangian])
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in conv_batches(3):
            adam.step(_closure(model, adam, batch, reg.penalty))
    assert lagrangian.multiplier.item() > 0  # three dual steps on a violated budget


def test_gradient_accumulation_is_adamw_bit_for_bit():
    batches = conv_batches(8)
    plain, regularized = conv_net(0), conv_net(0)
    adamw = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1)
    reg = Regularizer(regularized, Rule(L2(0.1), mode="decoupled", candidates="all"))
    adam = reg.wrap(torch.optim.Adam(regularized.parameters(), lr=1e-2))
    for model, optimizer in ((plain, adamw), (regularized, adam)):
        for first, second in zip(batches[::2], batches[1::2], strict=True):
            optimizer.zero_grad()
            for batch in (first, second):
                (_mse(model, batch) / 2).backward()
            optimizer.step()
    assert_same(regularized, plain, exact=True)


def test_a_step_grad_scaler_skips_skips_the_decay_and_the_prox_too():
    model = conv_net(0, torch.float32)
    lagrangian = Rule(L2(1.0), mode="lagrangian", budget=0.0, dual_lr=0.5, select="head.weight")
    rules = [
        Rule(L2(0.1), mode="decoupled", select="conv.weight"),
        Rule(L1(0.01), mode="proximal", select="fc.weight"),
        lagrangian,
    ]
    reg = Regularizer(model, rules)
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    batch = conv_batches(1, dtype=torch.float32)[0]
    before = copy.deepcopy(model.state_dict())
    adam.zero_grad()
    scaler.scale(_mse(model, batch) + reg.penalty()).backward()
    model.fc.weight.grad[0, 0] = float("inf")  # an overflow: the scaler skips this step
    scaler.step(adam)
    scaler.update()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert lagrangian.multiplier.item() == 0.0
    assert scaler.get_scale() == 2.0**9  # it did see the overflow

    adam.zero_grad()
    scaler.scale(_mse(model, batch) + reg.penalty()).backward()
    scaler.step(adam)
    assert not torch.equal(model.conv.weight, before["conv.weight"])
    assert lagrangian.multiplier.item() > 0


# ---- a failed step changes nothing ------------------------------------------------------------------

MODE_RULES = {
    "coupled": lambda: Rule(L2(0.1), mode="coupled"),
    "decoupled": lambda: Rule(L2(0.1), mode="decoupled"),
    "proximal": lambda: Rule(GroupLasso(0.05, "rows"), mode="proximal"),
    "constrained": lambda: Rule(MaxNorm(0.5), mode="constrained", radius=0.3),
    "lagrangian": lambda: Rule(L2(1.0), mode="lagrangian", budget=0.1, dual_lr=0.5),
}


class Boom(Exception):
    pass


def _break_betas(optimizer):
    optimizer.param_groups[0]["betas"] = "bad"


def _break_second_lr(optimizer):
    optimizer.param_groups[1]["lr"] = "0.1"


def _break_second_lr_value(optimizer):
    optimizer.param_groups[1]["lr"] = float("nan")


FAILURES = {
    "closure_raises": None,
    "betas_bad": (_break_betas, TypeError, "betas='bad'"),
    "second_group_lr_str": (_break_second_lr, TypeError, "param group 1 .* lr='0.1'"),
    "second_group_lr_nan": (_break_second_lr_value, ValueError, "param group 1 has lr=nan"),
}


def _snapshot(model, optimizer, reg):
    return copy.deepcopy((model.state_dict(), optimizer.state_dict(), reg.state_dict()))


def _assert_equal_trees(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_trees(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_trees(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("mode", list(MODE_RULES))
def test_a_failed_step_leaves_parameters_optimizer_and_regularizer_bit_identical(mode, failure):
    model = conv_net(0)
    reg = Regularizer(model, MODE_RULES[mode]())
    groups = [{"params": [model.conv.weight, model.fc.weight]}, {"params": list(model.head.parameters())}]
    groups[0]["params"] += [model.conv.bias, model.fc.bias, *model.norm.parameters()]
    adam = reg.wrap(torch.optim.Adam(groups, lr=1e-2))
    batches = conv_batches(3)
    for batch in batches[:2]:
        adam.step(_closure(model, adam, batch, reg.penalty))
    before = _snapshot(model, adam, reg)

    if FAILURES[failure] is None:
        inner = _closure(model, adam, batches[2], reg.penalty)

        def closure():
            inner()
            raise Boom("the closure fails after its backward pass")

        with pytest.raises(Boom):
            adam.step(closure)
    else:
        breaks, error, match = FAILURES[failure]
        saved_groups = copy.deepcopy(
            [{k: v for k, v in g.items() if k != "params"} for g in adam.param_groups]
        )
        breaks(adam)
        with pytest.raises(error, match=match):
            adam.step(_closure(model, adam, batches[2], reg.penalty))
        for group, saved in zip(adam.param_groups, saved_groups, strict=True):
            group.update(saved)
    _assert_equal_trees(_snapshot(model, adam, reg), before)
    adam.step(_closure(model, adam, batches[2], reg.penalty))  # and the next step works as usual


def test_a_bad_hyperparameter_of_another_optimizer_kind_is_caught_too():
    model = nn.Linear(3, 2)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    sgd.param_groups[0]["nesterov"] = "yes"
    model(torch.ones(1, 3)).sum().backward()
    weight = model.weight.detach().clone()
    with pytest.raises(TypeError, match="nesterov='yes'"):
        sgd.step()
    assert torch.equal(model.weight, weight)


def test_a_hyperparameter_changed_in_place_after_checked_steps_is_caught():
    # the check skips values it found valid and that cannot change in place; a list can
    model = nn.Linear(3, 2)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=0.1))
    adam.param_groups[0]["betas"] = [0.9, 0.999]
    for _ in range(2):
        model(torch.ones(1, 3)).sum().backward()
        adam.step()
    adam.param_groups[0]["betas"][1] = "bad"
    weight = model.weight.detach().clone()
    with pytest.raises(TypeError, match="betas=\\[0.9, 'bad'\\]"):
        adam.step()
    assert torch.equal(model.weight, weight)
    adam.param_groups[0]["betas"][1] = 0.999
    adam.defaults["maximize"] = 1.0  # the defaults changed: every value checked against them again
    with pytest.raises(TypeError, match="maximize=False, not of the kind of its default 1.0"):
        adam.step()
    assert torch.equal(model.weight, weight)
