"""The optimizer's own update raises, or the closure raises after the decay (not a hyperparameter the
hooks check first, see test_torch_steps.py).

Adam refuses a sparse gradient inside its update, before it writes any
tensor; given ``step(closure)``, after its closure ran. An optimizer that
evaluates the closure twice before its update (as a line search does) meets
a closure that raises at its second evaluation. The regularizer has then run
its pre-step work (the decoupled decay: before the update, where AdamW
applies it) and not its post-step work. In every mode the parameters, the
optimizer state and the regularizer state are bit-identical to a snapshot
taken before the call (the decoupled mode copies the decayed tensors back,
residuals of low-precision weights included), what the closure recorded for
the failed step is forgotten, and the next step works. The undoing step
composes with learning-rate schedulers and ``unwrap``, and runs under
``torch.compile(opt.step)`` (a refused update undone; compiled AdamW bit for
bit otherwise).

Bit equality is the right comparison: a failed step must change nothing, and the decay is undone by
copying back the values it overwrote, not by arithmetic.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_torch_steps import MODE_RULES, _assert_equal_trees, _closure, _snapshot
from torch_cases import conv_batches, conv_net

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule


class Boom(Exception):
    pass


def _sparse_gradient(model):
    """One gradient made sparse: Adam raises in its update, before it writes anything."""
    model.head.weight.grad = model.head.weight.grad.to_sparse()


def _then_sparse(closure, model):
    def sparse_closure():
        loss = closure()
        _sparse_gradient(model)
        return loss

    return sparse_closure


class _ProbingSGD(torch.optim.Optimizer):
    """Plain SGD that evaluates a closure twice before its update, as a line search probes, and raises
    ``Boom`` instead of updating while ``refuse`` is set."""

    refuse = False

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
                closure()
        if self.refuse:
            raise Boom("the update is refused")
        with torch.no_grad():
            for group in self.param_groups:
                torch._foreach_add_(
                    list(group["params"]), [p.grad for p in group["params"]], alpha=-group["lr"]
                )
        return loss


def _trained(mode, optimizer=torch.optim.Adam, dtype=torch.float64):
    """A regularized CNN after two steps (optimizer state, residuals, multipliers), and a third batch."""
    model = conv_net(0, dtype=dtype)
    reg = Regularizer(model, MODE_RULES[mode]())
    opt = reg.wrap(optimizer(model.parameters(), lr=1e-2))
    batches = conv_batches(3, dtype=dtype)
    for batch in batches[:2]:
        opt.step(_closure(model, opt, batch, reg.penalty))
    return model, reg, opt, batches[2]


def _assert_a_refused_update_changes_nothing(model, reg, adam, closure, driver):
    """Adam refuses a sparse gradient in the step ``driver`` makes: the model, the optimizer and the
    regularizer are bit for bit as before the call."""
    before = _snapshot(model, adam, reg)
    with pytest.raises(RuntimeError, match="sparse"):
        if driver == "step()":
            closure()
            _sparse_gradient(model)
            adam.step()
        else:
            adam.step(_then_sparse(closure, model))
    _assert_equal_trees(_snapshot(model, adam, reg), before)


@pytest.mark.parametrize("driver", ["step()", "step(closure)"])
@pytest.mark.parametrize("mode", list(MODE_RULES))
def test_a_failure_inside_the_optimizers_update_changes_nothing(mode, driver):
    model, reg, adam, batch = _trained(mode)
    closure = _closure(model, adam, batch, reg.penalty)
    _assert_a_refused_update_changes_nothing(model, reg, adam, closure, driver)
    adam.step(_closure(model, adam, batch, reg.penalty))  # and the next step works as usual


@pytest.mark.parametrize("mode", list(MODE_RULES))
def test_a_closure_that_raises_after_the_decay_changes_nothing(mode):
    model, reg, sgd, batch = _trained(mode, _ProbingSGD)
    before = _snapshot(model, sgd, reg)
    closure, calls = _closure(model, sgd, batch, reg.penalty), []

    def failing_at_second_evaluation():
        calls.append(1)
        if len(calls) == 2:
            raise Boom("the closure fails at its second evaluation")
        return closure()

    with pytest.raises(Boom):
        sgd.step(failing_at_second_evaluation)
    _assert_equal_trees(_snapshot(model, sgd, reg), before)
    sgd.step(_closure(model, sgd, batch, reg.penalty))


@pytest.mark.parametrize("mode", ["coupled", "lagrangian"])
def test_a_failed_step_forgets_the_penalty_its_closure_computed(mode):
    """The closure's ``reg.penalty()`` belonged to the failed step: a next step without it is refused
    (lagrangian) or warned about (coupled) as if the failed one had not been tried."""
    model, reg, adam, batch = _trained(mode)
    with pytest.raises(RuntimeError, match="sparse"):
        adam.step(_then_sparse(_closure(model, adam, batch, reg.penalty), model))
    _closure(model, adam, batch)()  # gradients of the loss alone
    if mode == "coupled":
        with pytest.warns(UserWarning, match="without reg.penalty"):
            adam.step()
    else:
        with pytest.raises(RuntimeError, match="no constraint value"):
            adam.step()


def test_low_precision_weights_and_their_residuals_are_put_back():
    model, reg, adam, batch = _trained("decoupled", dtype=torch.bfloat16)
    assert any(r.count_nonzero() for r in reg.state_dict()["residuals"].values())  # something to restore
    before = _snapshot(model, adam, reg)
    _closure(model, adam, batch, reg.penalty)()
    _sparse_gradient(model)
    with pytest.raises(RuntimeError, match="sparse"):
        adam.step()
    _assert_equal_trees(_snapshot(model, adam, reg), before)


@pytest.mark.parametrize("scheduler_first", [True, False])
def test_the_undoing_step_composes_with_a_learning_rate_scheduler_and_unwrap(scheduler_first):
    """A scheduler built before ``wrap`` is kept under the undoing step, one built after wraps it; no
    warning about the order of ``step`` calls; ``unwrap`` puts back the step that was there."""
    model = conv_net(0)
    reg = Regularizer(model, MODE_RULES["decoupled"]())
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    if scheduler_first:
        scheduler = torch.optim.lr_scheduler.StepLR(adam, 1, 0.5)
        original = adam.__dict__["step"]
        reg.wrap(adam)
    else:
        reg.wrap(adam)
        scheduler = torch.optim.lr_scheduler.StepLR(adam, 1, 0.5)
    batches = conv_batches(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in batches[:2]:
            adam.step(_closure(model, adam, batch, reg.penalty))
            scheduler.step()
    assert adam.param_groups[0]["lr"] == 1e-2 / 4
    before = _snapshot(model, adam, reg)
    with pytest.raises(RuntimeError, match="sparse"):
        adam.step(_then_sparse(_closure(model, adam, batches[2], reg.penalty), model))
    _assert_equal_trees(_snapshot(model, adam, reg), before)
    reg.unwrap(adam)
    if scheduler_first:
        assert adam.__dict__["step"] is original


def test_a_compiled_step_that_raises_is_undone_too():
    """``torch.compile(opt.step)`` runs the undoing step: the decay before a refused update is undone."""
    model, reg, sgd, batch = _trained("decoupled", _ProbingSGD)
    step = torch.compile(sgd.step, backend="eager")
    _closure(model, sgd, batch, reg.penalty)()
    step()
    before = _snapshot(model, sgd, reg)
    _closure(model, sgd, batch, reg.penalty)()
    sgd.refuse = True
    with pytest.raises(Boom):
        step()
    _assert_equal_trees(_snapshot(model, sgd, reg), before)


def test_a_compiled_step_is_still_adamw_bit_for_bit():
    """``torch.compile`` of the wrapped ``opt.step`` traces the undoing step (no graph break added) and
    gives compiled AdamW's update: the same decay multiply and the same compiled update code."""
    plain, regularized = conv_net(0), conv_net(0)
    adamw = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1)
    reg = Regularizer(regularized, Rule(L2(0.1), mode="decoupled", candidates="all"))
    adam = reg.wrap(torch.optim.Adam(regularized.parameters(), lr=1e-2))
    adamw_step = torch.compile(adamw.step, backend="eager")
    adam_step = torch.compile(adam.step, backend="eager")
    for batch in conv_batches(3):
        _closure(plain, adamw, batch)()
        adamw_step()
        _closure(regularized, adam, batch)()
        adam_step()
    for p, q in zip(plain.parameters(), regularized.parameters(), strict=True):
        assert torch.equal(p, q)


def test_without_atomic_decay_a_refused_update_leaves_one_decay_and_no_buffers():
    """``atomic_decay=False`` keeps no copy: the update Adam refuses leaves the decoupled decay applied
    once, exactly the multiply AdamW would have made (bit equality: the same one float operation,
    ``w * (1 - lr * lam)``), and the optimizer state as it was; the next step works."""
    model = conv_net(0)
    reg = Regularizer(model, MODE_RULES["decoupled"](), atomic_decay=False)
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    batches = conv_batches(3)
    for batch in batches[:2]:
        adam.step(_closure(model, adam, batch, reg.penalty))
    assert all(not action.saved for wrapped in reg._wrapped for action in wrapped.pre)
    before = _snapshot(model, adam, reg)
    taken = {entry["name"] for entry in reg.summary().to_dict()["rules"][0]["taken"]}
    decayed = {name: p.detach() * (1 - 1e-2 * 0.1) for name, p in model.named_parameters() if name in taken}
    _closure(model, adam, batches[2], reg.penalty)()
    _sparse_gradient(model)
    with pytest.raises(RuntimeError, match="sparse"):
        adam.step()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), decayed.get(name, before[0][name]))
    _assert_equal_trees(_snapshot(model, adam, reg)[1], before[1])
    adam.step(_closure(model, adam, batches[2], reg.penalty))


def test_atomic_decay_must_be_a_bool():
    with pytest.raises(TypeError, match="atomic_decay must be True or False"):
        Regularizer(conv_net(0), MODE_RULES["decoupled"](), atomic_decay="yes")


# ---- the decay handed to the optimizer's own decoupled decay ----------------------------------------

#: Optimizers with a decoupled decay of their own (a ``decoupled_weight_decay`` group key), by name.
DECOUPLED_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adam_for_loop": lambda params, **kw: torch.optim.Adam(params, foreach=False, **kw),
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
}


def _decay_groups(model, reg, decay=0.0):
    """Trainer-style param groups: the tensors the rule took (``weight_decay=decay``), then the rest."""
    taken = {entry["name"] for entry in reg.summary().to_dict()["rules"][0]["taken"]}
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n in taken], "weight_decay": decay},
        {"params": [p for n, p in named if n not in taken], "weight_decay": 0.0},
    ]


def _handed(reg):
    """The param groups the regularizer hands to the optimizer's own decay, as indices."""
    (wrapped,) = reg._wrapped
    return [[g is group for g in wrapped.optimizer.param_groups].index(True) for group, _ in wrapped.handed]


@pytest.mark.parametrize("driver", ["step()", "step(closure)"])
@pytest.mark.parametrize("name", list(DECOUPLED_OPTIMIZERS))
def test_a_whole_group_under_decoupled_l2_is_the_optimizers_own_decoupled_decay(name, driver):
    """Trainer-style groups on an optimizer with decoupled decay of its own: the decayed group is handed
    to that decay (no copy kept), and the update is the optimizer's with ``decoupled_weight_decay=True``
    and the group's ``weight_decay = lambda``, bit for bit (the same multiply ``w * (1 - lr * lambda)``
    inside the same update), under a learning-rate schedule; between steps the groups are as built."""
    make = DECOUPLED_OPTIMIZERS[name]
    plain, regularized = conv_net(0), conv_net(0)
    reg = Regularizer(regularized, Rule(L2(0.1), mode="decoupled"))
    opt = reg.wrap(make(_decay_groups(regularized, reg), lr=1e-2))
    decoupled = {} if make is torch.optim.AdamW else {"decoupled_weight_decay": True}  # (AdamW's is fixed)
    reference = make(_decay_groups(plain, reg, decay=0.1), lr=1e-2, **decoupled)
    assert _handed(reg) == [0] and not reg._wrapped[0].pre
    (taken,) = (rule["taken"] for rule in reg.summary().to_dict()["rules"])  # the summary says who decays
    assert {entry["applied_by"] for entry in taken} == {f"{type(opt).__name__}'s weight_decay"}
    assert f"{type(opt).__name__}'s weight_decay" in str(reg.summary())
    schedules = [torch.optim.lr_scheduler.StepLR(o, 1, 0.5) for o in (opt, reference)]
    built = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    for batch in conv_batches(4):
        for model, optimizer in ((plain, reference), (regularized, opt)):
            closure = _closure(model, optimizer, batch)
            if driver == "step()":
                closure()
                optimizer.step()
            else:
                optimizer.step(closure)
        for schedule in schedules:
            schedule.step()
        built[0]["lr"] = built[1]["lr"] = opt.param_groups[0]["lr"]
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == built
    for p, q in zip(plain.parameters(), regularized.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("driver", ["step()", "step(closure)"])
def test_a_refused_update_of_a_handed_group_changes_nothing(driver):
    """Adam refuses a sparse gradient before its decoupled decay: parameters, optimizer state (its
    groups' ``weight_decay`` and ``decoupled_weight_decay`` included) and regularizer state as they were,
    with no copy kept; the next step works."""
    model = conv_net(0)
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    adam = reg.wrap(torch.optim.Adam(_decay_groups(model, reg), lr=1e-2))
    batches = conv_batches(3)
    for batch in batches[:2]:
        adam.step(_closure(model, adam, batch))
    _assert_a_refused_update_changes_nothing(model, reg, adam, _closure(model, adam, batches[2]), driver)
    adam.step(_closure(model, adam, batches[2]))


def test_a_weight_decay_set_on_a_handed_group_takes_the_decay_back():
    """A ``weight_decay`` the user sets on a handed group after ``wrap`` stays theirs: the regularizer
    decays that group itself again, as it does for a group built with that ``weight_decay`` (which
    warns of the double decay), bit for bit."""
    late, early = conv_net(0), conv_net(0)
    reg_late = Regularizer(late, Rule(L2(0.1), mode="decoupled"))
    reg_early = Regularizer(early, Rule(L2(0.1), mode="decoupled"))
    adam_late = reg_late.wrap(torch.optim.Adam(_decay_groups(late, reg_late), lr=1e-2))
    with pytest.warns(UserWarning, match="decayed twice"):
        adam_early = reg_early.wrap(
            torch.optim.Adam(
                _decay_groups(early, reg_early, decay=0.05), lr=1e-2, decoupled_weight_decay=True
            )
        )
    adam_late.param_groups[0]["decoupled_weight_decay"] = True
    adam_late.param_groups[0]["weight_decay"] = 0.05
    for batch in conv_batches(3):
        for model, adam in ((late, adam_late), (early, adam_early)):
            adam.step(_closure(model, adam, batch))
    assert _handed(reg_late) == [] and adam_late.param_groups[0]["weight_decay"] == 0.05
    for p, q in zip(early.parameters(), late.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "case",
    ["one mixed group", "schedule fixed", "no decoupled decay (SGD)", "bfloat16 weights"],
)
def test_what_is_not_handed_to_the_optimizer_keeps_the_regularizers_decay(case):
    """A group mixing decayed and undecayed tensors, a ``fixed`` schedule (its decay is not the group's
    lr times lambda), an optimizer without decoupled decay and low-precision weights (their float32
    residuals) keep the regularizer's own decay, with its copy."""
    dtype = torch.bfloat16 if case == "bfloat16 weights" else torch.float64
    model = conv_net(0, dtype=dtype)
    rule = Rule(L2(0.1), mode="decoupled", schedule="fixed" if case == "schedule fixed" else "follow")
    reg = Regularizer(model, rule)
    optimizer = torch.optim.SGD if case.startswith("no decoupled") else torch.optim.Adam
    params = model.parameters() if case == "one mixed group" else _decay_groups(model, reg)
    opt = reg.wrap(optimizer(params, lr=1e-2))
    opt.step(_closure(model, opt, conv_batches(1, dtype=dtype)[0], reg.penalty))
    # (float64 and bfloat16 weights: their decay copies what it writes, made at the first step)
    assert _handed(reg) == [] and all(a.saved and a.records is None for a in reg._wrapped[0].pre)
    (taken,) = (rule["taken"] for rule in reg.summary().to_dict()["rules"])
    assert {entry["applied_by"] for entry in taken} == {"normpen"}


def test_param_groups_are_each_decoupled_l2_rules_tensors_then_the_rest():
    """``reg.param_groups()``: one group per decoupled L2 rule (its tensors, model order), then every
    other parameter (a proximal rule's tensors included); each rule's group is handed to Adam's own
    decay, and with no other rule the update is AdamW's on those groups, bit for bit."""

    def rules():
        return [
            Rule(L2(0.1), mode="decoupled", select="conv.weight"),
            Rule(L2(0.02), mode="decoupled", select=["fc.weight", "head.weight"]),
        ]

    model = conv_net(0)
    reg = Regularizer(model, [*rules(), Rule(GroupLasso(0.05, "rows"), mode="proximal", select="fc.weight")])
    names = {id(p): n for n, p in model.named_parameters()}
    assert [[names[id(p)] for p in g["params"]] for g in reg.param_groups()] == [
        ["conv.weight"],
        ["fc.weight", "head.weight"],
        ["conv.bias", "fc.bias", "norm.weight", "norm.bias", "head.bias"],
    ]
    reg.wrap(torch.optim.Adam(reg.param_groups(), lr=1e-2))
    assert _handed(reg) == [0, 1]

    plain, regularized = conv_net(0), conv_net(0)
    reg = Regularizer(regularized, rules())
    adam = reg.wrap(torch.optim.Adam(reg.param_groups(), lr=1e-2))
    by_name, names = dict(plain.named_parameters()), {id(p): n for n, p in regularized.named_parameters()}
    adamw = torch.optim.AdamW(
        [
            {"params": [by_name[names[id(p)]] for p in group["params"]], "weight_decay": decay}
            for group, decay in zip(adam.param_groups, (0.1, 0.02, 0.0), strict=True)
        ],
        lr=1e-2,
    )
    for batch in conv_batches(3):
        for net, optimizer in ((plain, adamw), (regularized, adam)):
            _closure(net, optimizer, batch)()
            optimizer.step()
    for p, q in zip(plain.parameters(), regularized.parameters(), strict=True):
        assert torch.equal(p, q)


#: (lr, lambda) of a float32 decoupled L2 and the undo it gets: a one-byte record (1 - c = 1e-6), a
#: two-byte record (1e-4), a copy (1e-3, over the two-byte record's 9.8e-4).
RECORDED = [(1e-3, 1e-3, torch.int8), (1e-2, 1e-2, torch.int16), (1e-2, 0.1, None)]


@pytest.mark.parametrize(("lr", "lam", "record"), RECORDED)
def test_a_recorded_float32_decay_is_adamw_and_a_refused_update_changes_nothing(lr, lam, record):
    """Float32 weights on the CPU: the default (atomic) decoupled decay is AdamW's bit for bit over three
    steps whichever undo it keeps, and Adam refusing the fourth update leaves everything as it was, bit
    for bit (the record restores each entry's bit pattern; the copy copies)."""
    plain, regularized = conv_net(0, dtype=torch.float32), conv_net(0, dtype=torch.float32)
    weights = [p for p in plain.parameters() if p.ndim >= 2]  # what the default selection takes
    rest = [p for p in plain.parameters() if p.ndim < 2]
    adamw = torch.optim.AdamW(
        [{"params": weights}, {"params": rest, "weight_decay": 0.0}], lr=lr, weight_decay=lam
    )
    reg = Regularizer(regularized, Rule(L2(lam), mode="decoupled"))
    # one group mixing decayed and undecayed tensors: the regularizer decays, and keeps the undo
    adam = reg.wrap(torch.optim.Adam(regularized.parameters(), lr=lr))
    batches = conv_batches(4, dtype=torch.float32)
    for batch in batches[:3]:
        adamw.step(_closure(plain, adamw, batch))
        adam.step(_closure(regularized, adam, batch, reg.penalty))
    for p, q in zip(plain.parameters(), regularized.parameters(), strict=True):
        assert torch.equal(p, q)
    (action,) = reg._wrapped[0].pre
    assert (action.records is None) == (record is None)
    assert record is None or {r.dtype for _, r in action.records} == {record}
    closure = _closure(regularized, adam, batches[3], reg.penalty)
    _assert_a_refused_update_changes_nothing(regularized, reg, adam, closure, "step(closure)")
