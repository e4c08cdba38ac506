"""Checkpoints resume bit for bit; state loads are all-or-nothing; reports; the lr-decay rules."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch_cases import assert_same, conv_batches, conv_net, mse_step

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule, l2_sp, rescale_weight_decay
from normpen.torch.regularizer import STATE_KEY, _fingerprint


def _setup(seed, dtype=torch.float64):
    model = conv_net(seed, dtype)
    rules = [
        Rule(L2(0.05), mode="decoupled"),
        Rule(L1(1e-3), mode="proximal", select="conv.weight"),
        Rule(GroupLasso(0.5, "rows"), mode="lagrangian", budget=0.5, dual_lr=0.2),
        l2_sp(model, 0.1, mode="coupled", select="fc.weight"),
    ]
    reg = Regularizer(model, rules)
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=3, gamma=0.5)
    return model, reg, adam, scheduler


def _train(model, reg, adam, scheduler, batches):
    for batch in batches:
        mse_step(model, adam, batch, reg.penalty)
        scheduler.step()


def _round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # data only: no pickle of code


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one():
    batches = conv_batches(10)
    straight = _setup(seed=0)
    _train(*straight, batches)

    first = _setup(seed=0)
    _train(*first, batches[:5])
    model, reg, adam, scheduler = first
    checkpoint = _round_trip(
        {
            "model": model.state_dict(),
            "optimizer": adam.state_dict(),
            "scheduler": scheduler.state_dict(),
            "regularizer": reg.state_dict(),
        }
    )

    resumed = _setup(seed=7)  # a fresh process: other weights, so other L2-SP anchors until loaded
    model, reg, adam, scheduler = resumed
    model.load_state_dict(checkpoint["model"])
    adam.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    reg.load_state_dict(checkpoint["regularizer"])
    _train(*resumed, batches[5:])

    assert_same(resumed[0], straight[0], exact=True)
    assert torch.equal(resumed[1].rules[2].multiplier, straight[1].rules[2].multiplier)
    assert resumed[1].rules[2].multiplier.item() > 0


def test_low_precision_residuals_are_part_of_the_state():
    def setup():
        torch.manual_seed(0)
        model = nn.Linear(8, 8).to(torch.bfloat16)
        reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
        return model, reg, reg.wrap(torch.optim.SGD(model.parameters(), lr=1e-3))

    def steps(model, sgd, count):
        for _ in range(count):
            sgd.zero_grad()
            (0 * model(torch.ones(1, 8, dtype=torch.bfloat16))).sum().backward()
            sgd.step()

    straight, _, straight_sgd = setup()
    steps(straight, straight_sgd, 60)
    model, reg, sgd = setup()
    steps(model, sgd, 30)
    saved = _round_trip({"model": model.state_dict(), "reg": reg.state_dict()})
    model, reg, sgd = setup()
    model.load_state_dict(saved["model"])
    reg.load_state_dict(saved["reg"])
    steps(model, sgd, 30)
    assert torch.equal(model.weight, straight.weight)
    assert not torch.equal(model.weight, setup()[0].weight)  # the decay did act


def test_a_bad_state_changes_nothing():
    model, reg, adam, scheduler = _setup(seed=0)
    _train(model, reg, adam, scheduler, conv_batches(2))
    good = reg.state_dict()
    multiplier = reg.rules[2].multiplier.clone()

    bad = dict(good, multipliers={"2": torch.tensor(9.0, dtype=torch.float64)})
    bad["anchors"] = {"3": {"fc.weight": torch.zeros(2, 2)}}  # wrong shape: found after the multiplier
    with pytest.raises(ValueError, match="rule 3's anchors of 'fc.weight' in the state has shape"):
        reg.load_state_dict(bad)
    assert torch.equal(reg.rules[2].multiplier, multiplier)
    for value, error in [
        (torch.full((3,), 9.0), "shape"),
        (torch.tensor(float("nan")), "not finite"),
        (torch.tensor(-1.0), "negative"),
        (9.0, "must be a tensor"),
    ]:
        with pytest.raises((ValueError, TypeError), match=error):  # issue 13 item 6: checked before applied
            reg.load_state_dict(dict(good, multipliers={"2": value}))
        assert torch.equal(reg.rules[2].multiplier, multiplier)

    with pytest.raises(ValueError, match="not a Regularizer state dict"):
        reg.load_state_dict({"multipliers": {}})
    other = Regularizer(conv_net(), Rule(L2(0.05), mode="decoupled"))
    with pytest.raises(ValueError, match="the state has 4 rules, this regularizer has 1"):
        other.load_state_dict(good)
    swapped = dict(good, rules=[dict(good["rules"][0], mode="coupled")] + good["rules"][1:])
    with pytest.raises(ValueError, match="rule 0 differs"):
        reg.load_state_dict(swapped)
    reg.load_state_dict(good)


def test_the_report_measures_every_tensor():
    model = conv_net()
    with torch.no_grad():
        model.fc.weight[1] = 0.0
        model.fc.weight[:, 4] = 0.0
    rules = [
        Rule(GroupLasso(0.5, "rows"), mode="proximal", select="fc.weight"),
        Rule(L2(0.5), mode="lagrangian", budget=3.0, dual_lr=0.1, multiplier_init=0.25),
    ]
    reg = Regularizer(model, rules)
    report = reg.report()
    group, lagrangian = report.rules
    (fc,) = group.tensors
    w = model.fc.weight.detach()
    assert fc.name == "fc.weight" and fc.shape == (6, 27) and fc.lam == 0.5
    assert (fc.zero_rows, fc.rows, fc.zero_cols, fc.cols) == (1, 6, 1, 27)
    assert fc.zero_fraction == pytest.approx((w == 0).sum().item() / w.numel(), rel=1e-15)  # one division
    # float64: 6 row norms of 27 entries, summed and scaled, in another order: (27 + 6 + 2) eps = 8e-15
    assert fc.norm == pytest.approx(math.sqrt(27) * w.norm(dim=1).sum().item(), rel=1e-13)
    assert fc.value == pytest.approx(0.5 * fc.norm, rel=1e-15)  # one multiplication by lam
    assert lagrangian.multiplier == 0.25 and lagrangian.budget == 3.0
    expected = sum(
        0.25 * p.detach().pow(2).sum().item() for p in (model.conv.weight, model.fc.weight, model.head.weight)
    )
    # float64 sums of squares of 54 + 162 + 12 entries in another order: ~228 eps = 5e-14
    assert lagrangian.value == pytest.approx(expected, rel=1e-13)
    text = str(report)
    assert "fc.weight" in text and "1/6" in text and "zero rows" in text
    json.dumps(report.to_dict())


def test_the_report_plots_a_figure(tmp_path):
    reg = Regularizer(conv_net(), Rule(L1(0.1), mode="proximal"))
    fig = reg.report().plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    fig.savefig(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_rescale_weight_decay_keeps_lr_times_lambda():
    assert rescale_weight_decay(0.1, 1e-3, 2e-3) == pytest.approx(0.05, rel=1e-15)  # a product and a quotient
    lam = rescale_weight_decay(5e-4, 0.1, 0.4)
    assert 1 - 0.4 * lam == pytest.approx(1 - 0.1 * 5e-4, rel=1e-15)  # same shrink factor per step
    with pytest.raises(ValueError, match="lr_to must be > 0"):
        rescale_weight_decay(0.1, 1e-3, 0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        rescale_weight_decay(-0.1, 1e-3, 1e-3)


def test_the_step_follows_the_lr_of_an_optimizer_state_loaded_after_wrapping():
    """``optimizer.load_state_dict`` replaces the param-group dicts; the hooks read the new lr."""
    model = nn.Linear(4, 3, bias=False).double()
    reg = Regularizer(model, Rule(L1(0.5), mode="proximal"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    state = sgd.state_dict()
    state["param_groups"][0]["lr"] = 0.01
    sgd.load_state_dict(state)
    before = model.weight.detach().clone()
    model.weight.grad = torch.zeros_like(model.weight)
    sgd.step()
    expected = torch.sign(before) * torch.clamp(before.abs() - 0.01 * 0.5, min=0)
    assert torch.equal(model.weight.detach(), expected)


def test_the_optimizer_checkpoint_alone_resumes_bit_identical():
    batches = conv_batches(10)
    straight = _setup(seed=0)
    _train(*straight, batches)

    first = _setup(seed=0)
    _train(*first, batches[:5])
    model, reg, adam, scheduler = first
    checkpoint = _round_trip(
        {"model": model.state_dict(), "optimizer": adam.state_dict(), "scheduler": scheduler.state_dict()}
    )
    # fc.weight's L2-SP anchor (rule 3) beside its exp_avg; the multiplier and the rules' fingerprint in
    # the state of the first regularized parameter (conv.weight), no longer in the first param group
    states = checkpoint["optimizer"]["state"]
    names = [n for n, _ in model.named_parameters()]
    assert set(states[names.index("fc.weight")]) == {"step", "exp_avg", "exp_avg_sq", "normpen.anchor.3"}
    assert set(states[names.index("conv.weight")]) == {
        "step",
        "exp_avg",
        "exp_avg_sq",
        "normpen.rules",
        "normpen.multiplier.2",
    }
    assert not checkpoint["optimizer"]["param_groups"][0][STATE_KEY]["multipliers"]

    resumed = _setup(seed=7)  # no reg.load_state_dict: the optimizer carries the multiplier and anchors
    model, reg, adam, scheduler = resumed
    model.load_state_dict(checkpoint["model"])
    adam.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _train(*resumed, batches[5:])
    assert_same(resumed[0], straight[0], exact=True)
    assert torch.equal(resumed[1].rules[2].multiplier, straight[1].rules[2].multiplier)


def test_the_optimizer_checkpoint_alone_carries_the_residuals_of_a_bfloat16_model():
    def setup(seed):
        model = conv_net(seed, torch.bfloat16)
        rules = [Rule(L2(0.05), mode="decoupled"), Rule(L1(1e-3), mode="proximal", select="conv.weight")]
        reg = Regularizer(model, rules)
        return model, reg, reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))

    def train(model, reg, adam, batches):
        for batch in batches:
            mse_step(model, adam, batch, reg.penalty)

    def resume(checkpoint):
        model, reg, adam = setup(seed=7)  # other weights and zero residuals until loaded
        model.load_state_dict(checkpoint["model"])
        adam.load_state_dict(checkpoint["optimizer"])
        train(model, reg, adam, batches[5:])
        return model

    batches = conv_batches(10, dtype=torch.bfloat16)
    straight = setup(seed=0)
    train(*straight, batches)
    first = setup(seed=0)
    train(*first, batches[:5])
    model, _, adam = first
    checkpoint = _round_trip({"model": model.state_dict(), "optimizer": adam.state_dict()})
    names = [n for n, _ in model.named_parameters()]
    states = checkpoint["optimizer"]["state"]
    residuals = {names[i]: s["normpen.residual"] for i, s in states.items() if "normpen.residual" in s}
    assert set(residuals) == {"conv.weight", "fc.weight", "head.weight"}  # each in its parameter's state
    assert not checkpoint["optimizer"]["param_groups"][0][STATE_KEY]["residuals"]
    assert all(r.dtype == torch.float32 and r.abs().max() > 0 for r in residuals.values())

    # the same bfloat16 operations on the same values, float32 residuals included
    assert_same(resume(checkpoint), straight[0], exact=True)
    for residual in residuals.values():
        residual.zero_()
    without = resume(checkpoint)  # the residuals matter: resumed without them, the run ends elsewhere
    assert not all(
        torch.equal(p, q) for p, q in zip(without.parameters(), straight[0].parameters(), strict=True)
    )


def test_a_residual_of_another_shape_in_an_optimizer_checkpoint_loads_nothing():
    model = nn.Linear(8, 4).to(torch.bfloat16)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=1e-3))
    checkpoint = sgd.state_dict()
    checkpoint["state"][0]["normpen.residual"] = torch.ones(8, 4)  # the transpose
    checkpoint["param_groups"][0]["lr"] = 0.5
    with pytest.raises(
        ValueError, match=r"residual 'weight' in the state has shape \(8, 4\), expected \(4, 8\)"
    ):
        sgd.load_state_dict(checkpoint)
    assert sgd.param_groups[0]["lr"] == 1e-3
    assert not reg.state_dict()["residuals"]["weight"].any()


def test_a_damaged_regularizer_state_in_an_optimizer_checkpoint_loads_nothing():
    model, reg, adam, scheduler = _setup(seed=0)
    _train(model, reg, adam, scheduler, conv_batches(2))
    checkpoint = adam.state_dict()
    conv = [n for n, _ in model.named_parameters()].index("conv.weight")  # the entries' carrier
    checkpoint["state"][conv]["normpen.multiplier.2"] = torch.tensor(float("nan"), dtype=torch.float64)
    fresh_model, fresh_reg, fresh_adam, _ = _setup(seed=3)
    before = (fresh_adam.state_dict(), fresh_reg.rules[2].multiplier.clone())
    with pytest.raises(ValueError, match="multiplier in the state is not finite"):
        fresh_adam.load_state_dict(checkpoint)
    assert not fresh_adam.state  # Adam's own state: nothing loaded
    _assert_equal_dicts(fresh_adam.state_dict(), before[0])
    assert torch.equal(fresh_reg.rules[2].multiplier, before[1])


def _assert_equal_dicts(a, b, where="state"):
    """Equal nested dicts and lists, tensors bit-equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_dicts(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_dicts(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _is_entry(key):
    return key.startswith("normpen.")


def _live_entries(adam):
    return {id(p): {k: v for k, v in s.items() if _is_entry(k)} for p, s in adam.state.items()}


def _references(model, reg):
    """What each parameter's live optimizer state holds of the regularizer's in ``_setup``: its own
    tensors (the multiplier and the L2-SP anchor themselves, not copies) and the rules' fingerprint."""
    conv, fc = model.get_parameter("conv.weight"), model.get_parameter("fc.weight")
    fingerprint = _fingerprint(reg.state_dict()["rules"])
    return {
        id(conv): {"normpen.rules": fingerprint, "normpen.multiplier.2": reg.rules[2].multiplier},
        id(fc): {"normpen.anchor.3": reg.rules[3].penalty["fc.weight"].anchor},
    }


def _assert_references(adam, expected):
    live = _live_entries(adam)
    assert {p: set(e) for p, e in live.items() if e} == {p: set(e) for p, e in expected.items()}
    for p, entries in expected.items():
        for key, value in entries.items():
            assert live[p][key] is value if isinstance(value, torch.Tensor) else live[p][key] == value


def test_the_live_optimizer_state_holds_references_once_it_is_not_empty_and_a_loaded_dict_is_left_as_is():
    # before the first step Adam's state is empty and Adam starts it when it is (len(state) == 0): no
    # entry before; after the step and after a load (which replaces the live states) the regularizer's
    # own tensors, so that DCP's flattened load finds their keys; a state dict holds copies
    model, reg, adam, scheduler = _setup(seed=0)
    checkpoint = adam.state_dict()
    assert any(_is_entry(k) for s in checkpoint["state"].values() for k in s)  # the L2-SP anchor
    assert not adam.state
    _train(model, reg, adam, scheduler, conv_batches(1))  # Adam starts its state as if unwrapped
    _assert_references(adam, _references(model, reg))
    saved = adam.state_dict()
    conv = [n for n, _ in model.named_parameters()].index("conv.weight")
    assert saved["state"][conv]["normpen.multiplier.2"] is not reg.rules[2].multiplier  # a copy
    kept = _round_trip(saved)
    adam.load_state_dict(saved)
    _assert_equal_dicts(saved, kept)  # the pre hook took the entries out of copies
    _assert_references(adam, _references(model, reg))  # the anchor loaded is a new tensor: referenced
    fresh_model, fresh_reg, fresh_adam, _ = _setup(seed=3)
    fresh_adam.load_state_dict(checkpoint)  # a checkpoint of no step: Adam's lazy start is kept
    assert not fresh_adam.state
    _train(fresh_model, fresh_reg, fresh_adam, scheduler, conv_batches(1))
    _assert_references(fresh_adam, _references(fresh_model, fresh_reg))
    fresh_reg.unwrap(fresh_adam)  # steps as if never wrapped
    assert not any(_live_entries(fresh_adam).values())


def test_a_checkpoint_with_all_the_state_in_the_first_param_group_loads():
    # the layout before the parameters' tensors moved to their states: reg.state_dict() whole in the
    # first param group, nothing in the parameters' states
    batches = conv_batches(10)
    straight = _setup(seed=0)
    _train(*straight, batches)
    first = _setup(seed=0)
    _train(*first, batches[:5])
    model, reg, adam, scheduler = first
    optimizer = adam.state_dict()
    optimizer["state"] = {
        k: {e: v for e, v in s.items() if not _is_entry(e)} for k, s in optimizer["state"].items()
    }
    optimizer["param_groups"][0][STATE_KEY] = reg.state_dict()
    checkpoint = _round_trip(
        {"model": model.state_dict(), "optimizer": optimizer, "scheduler": scheduler.state_dict()}
    )
    resumed = _setup(seed=7)
    model, reg, adam, scheduler = resumed
    model.load_state_dict(checkpoint["model"])
    adam.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _train(*resumed, batches[5:])
    assert_same(resumed[0], straight[0], exact=True)
    assert torch.equal(resumed[1].rules[2].multiplier, straight[1].rules[2].multiplier)


def test_a_misplaced_regularizer_entry_in_an_optimizer_checkpoint_loads_nothing():
    model, reg, adam, scheduler = _setup(seed=0)
    _train(model, reg, adam, scheduler, conv_batches(2))
    good = adam.state_dict()
    names = [n for n, _ in model.named_parameters()]
    fc_weight, fc_bias = names.index("fc.weight"), names.index("fc.bias")
    anchor = good["state"][fc_weight]["normpen.anchor.3"]

    def damaged(change):
        checkpoint = _round_trip(good)
        change(checkpoint)
        return checkpoint

    conv_weight = names.index("conv.weight")
    bias_anchor = damaged(lambda c: c["state"][fc_bias].update({"normpen.anchor.3": anchor}))
    unknown = damaged(lambda c: c["state"][fc_weight].update({"normpen.momentum": anchor}))
    no_multiplier = damaged(lambda c: c["state"][conv_weight].pop("normpen.multiplier.2"))
    other_rules = damaged(lambda c: c["state"][conv_weight].update({"normpen.rules": 12345}))
    fresh_model, fresh_reg, fresh_adam, _ = _setup(seed=3)
    before = (fresh_adam.state_dict(), fresh_reg.state_dict())
    for checkpoint, error in [
        (bias_anchor, r"parameter \d+ has the regularizer's entries \['normpen.anchor.3'\], but this "),
        (unknown, r"entries \['normpen.momentum'\], but this regularizer keeps \['normpen.anchor.3'\]"),
        (no_multiplier, r"own entries \['normpen.rules'\], not \['normpen.multiplier.2', 'normpen.rules'\]"),
        (other_rules, "entries of other rules .* fingerprint 12345"),
    ]:
        with pytest.raises(ValueError, match=error):
            fresh_adam.load_state_dict(checkpoint)
        assert not fresh_adam.state
        _assert_equal_dicts(fresh_adam.state_dict(), before[0])
        _assert_equal_dicts(fresh_reg.state_dict(), before[1])


def test_two_wrapped_optimizers_each_carry_the_whole_state():
    # each optimizer's state dict holds its parameters' tensors in their states and the other
    # optimizer's under STATE_KEY: either checkpoint alone restores every anchor, and both together agree
    def setup(seed):
        model = conv_net(seed)
        rules = [l2_sp(model, 0.1, mode="decoupled", select="*.weight"), Rule(L1(1e-3), mode="proximal")]
        reg = Regularizer(model, rules)
        conv = reg.wrap(torch.optim.Adam(model.conv.parameters(), lr=1e-2))
        rest = [p for n, p in model.named_parameters() if not n.startswith("conv.")]
        return model, reg, conv, reg.wrap(torch.optim.SGD(rest, lr=1e-2))

    def train(model, conv, rest, batches):
        for batch in batches:
            rest.zero_grad()
            mse_step(model, conv, batch)  # zeroes conv's gradients, steps conv
            rest.step()

    batches = conv_batches(6)
    straight = setup(seed=0)
    train(straight[0], *straight[2:], batches)
    model, _, conv, rest = first = setup(seed=0)
    train(model, conv, rest, batches[:3])
    checkpoint = _round_trip(
        {"model": model.state_dict(), "conv": conv.state_dict(), "rest": rest.state_dict()}
    )
    in_conv = checkpoint["conv"]["param_groups"][0][STATE_KEY]["anchors"]["0"]
    assert "conv.weight" not in in_conv and "fc.weight" in in_conv  # the other optimizer's, by name
    for loads in (["conv"], ["rest"], ["conv", "rest"]):
        model, reg, conv, rest = setup(seed=7)  # other weights, other anchors
        model.load_state_dict(checkpoint["model"])
        for key in loads:
            {"conv": conv, "rest": rest}[key].load_state_dict(checkpoint[key])
        _assert_equal_dicts(reg.state_dict()["anchors"], first[1].state_dict()["anchors"])
    train(model, conv, rest, batches[3:])
    assert_same(model, straight[0], exact=True)


def _stripping_entries(optimizer):
    """A step post hook, after the regularizer's, that takes its entries out of the live states again."""

    def strip(optimizer, args, kwargs):
        for state in optimizer.state.values():
            for key in [k for k in state if _is_entry(k)]:
                del state[key]

    optimizer.register_step_post_hook(strip)
    return optimizer


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=True),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0, foreach=True),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True),
        lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True),
    ],
    ids=["adam", "adam_foreach", "adamw_foreach", "adam_fused", "sgd_momentum"],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_the_live_entries_leave_the_optimizers_steps_bit_for_bit_as_they_were(make, dtype):
    # the same regularizer and optimizer twice; in the second a hook takes the regularizer's entries
    # out of the live states after every step, so its optimizer never sees them: every step computes the
    # same operations on the same values, so any difference would be the entries' doing (bit-equal)
    def run(strip):
        model = conv_net(0, dtype)
        rules = [
            Rule(L2(0.05), mode="decoupled"),  # residuals of every bfloat16 weight
            Rule(GroupLasso(0.5, "rows"), mode="lagrangian", budget=0.5, dual_lr=0.2),  # a multiplier
            l2_sp(model, 0.1, mode="proximal", select="fc.weight"),  # an anchor
        ]
        reg = Regularizer(model, rules)
        optimizer = reg.wrap(make(model.parameters()))
        optimizer = _stripping_entries(optimizer) if strip else optimizer
        for batch in conv_batches(4, dtype=dtype):
            mse_step(model, optimizer, batch, reg.penalty)
        return model, optimizer

    with_entries, without = run(strip=False), run(strip=True)
    held = {k for s in with_entries[1].state.values() for k in s if _is_entry(k)}
    expected = {"normpen.rules", "normpen.multiplier.1", "normpen.anchor.2"}
    assert held == expected | ({"normpen.residual"} if dtype == torch.bfloat16 else set())
    assert not any(_is_entry(k) for s in without[1].state.values() for k in s)
    assert_same(with_entries[0], without[0], exact=True)
    for p, q in zip(with_entries[0].parameters(), without[0].parameters(), strict=True):
        _assert_equal_dicts(_without_entries(with_entries[1].state[p]), without[1].state[q])


def _without_entries(state):
    return {k: v for k, v in state.items() if not _is_entry(k)}
