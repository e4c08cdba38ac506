"""Fisher diagonal against per-sample backward passes; L2-SP and EWC coupled, decoupled and proximal."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_cases import conv_batches, conv_net, mse_step, named

from normpen.penalties.anchored import Anchored
from normpen.torch import Regularizer, Rule, ewc, fisher_diagonal, l2_sp


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)
    ).double()


def class_batches(count=3, n=5):
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
        for _ in range(count)
    ]


def _loop_fisher(model, batches, loss_fn, names, per_sample):
    """Squared gradients from ordinary backward passes, one sample (or one batch) at a time."""
    model.eval()
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for x, y in batches:
        pieces = [(x[i : i + 1], y[i : i + 1]) for i in range(len(y))] if per_sample else [(x, y)]
        for xi, yi in pieces:
            model.zero_grad()
            loss_fn(model(xi), yi).backward()
            for n in names:
                sums[n] += params[n].grad ** 2
            count += 1
    model.zero_grad(set_to_none=True)
    return {n: s / count for n, s in sums.items()}


@pytest.mark.parametrize("variant", ["per_sample", "batch"])
def test_fisher_diagonal_matches_a_loop_of_backward_passes(variant):
    model = classifier()
    batches = class_batches()
    loss_fn = nn.CrossEntropyLoss()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = fisher_diagonal(model, batches, loss_fn, candidates="all", variant=variant, progress=False)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no .grad touched
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    expected = _loop_fisher(classifier(), batches, loss_fn, list(fisher), per_sample=variant == "per_sample")
    assert list(fisher) == [n for n, _ in model.named_parameters()]
    for name, value in fisher.items():
        # float64 per-sample gradients by two routes, squared and averaged: a few dozen roundings of order
        # eps each, ~50 eps = 1e-14 relative (measured 1.2e-15)
        torch.testing.assert_close(value, expected[name], rtol=1e-12, atol=1e-14, msg=name)


def test_fisher_diagonal_selects_like_a_rule_takes_tuple_inputs_and_stops_early():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x, z):
            return self.a(x) + self.b(z)

    torch.manual_seed(0)
    model = TwoInputs().double()
    g = torch.Generator().manual_seed(0)
    data = [
        (
            (
                torch.randn(4, 3, generator=g, dtype=torch.float64),
                torch.randn(4, 2, generator=g, dtype=torch.float64),
            ),
            torch.randn(4, 2, generator=g, dtype=torch.float64),
        )
        for _ in range(3)
    ]
    loss_fn = nn.MSELoss()
    fisher = fisher_diagonal(model, data, loss_fn, max_batches=2, progress=False)
    assert list(fisher) == ["a.weight", "b.weight"]
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for (x, z), y in data[:2]:
        for i in range(4):
            model.zero_grad()
            loss_fn(model(x[i : i + 1], z[i : i + 1]), y[i : i + 1]).backward()
            expected += model.a.weight.grad**2 / 8
    # float64 squared gradients summed over 8 samples in another order: ~8 eps (measured 0)
    torch.testing.assert_close(fisher["a.weight"], expected, rtol=1e-12, atol=1e-15)


def test_fisher_diagonal_arguments_are_validated():
    model, data = classifier(), class_batches(1)
    with pytest.raises(ValueError, match="variant must be one of"):
        fisher_diagonal(model, data, nn.CrossEntropyLoss(), variant="true")
    with pytest.raises(ValueError, match="max_batches must be a positive int"):
        fisher_diagonal(model, data, nn.CrossEntropyLoss(), max_batches=0)
    with pytest.raises(ValueError, match="data gave no sample"):  # issue 13 item 12: not an all-NaN Fisher
        fisher_diagonal(model, [], nn.CrossEntropyLoss(), progress=False)


def test_l2_sp_decoupled_pulls_toward_the_snapshot_by_hand_computed_steps():
    model = conv_net()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = l2_sp(model, 0.5)
    reg = Regularizer(model, rule)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    for batch in conv_batches(3):
        x, y = batch
        sgd.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        expected = {
            n: p.detach() - 0.1 * 0.5 * (p.detach() - anchor[n]) - 0.1 * p.grad
            for n, p in model.named_parameters()
            if n in reg.names(rule)
        }
        sgd.step()
        for n, p in model.named_parameters():
            if n in expected:
                # SGD's fused p - lr * g against the hand-written three-term update: about three float64
                # roundings of terms up to 1, 3 eps = 7e-16 absolute (atol was 1e-16, below one rounding)
                torch.testing.assert_close(p.detach(), expected[n], rtol=1e-14, atol=1e-15)
    assert all(torch.equal(rule.penalty[n].anchor, anchor[n]) for n in reg.names(rule))  # a snapshot


@pytest.mark.parametrize("mode", ["coupled", "decoupled", "proximal"])
def test_ewc_in_every_mode_matches_the_anchored_penalty_by_hand(mode):
    model = conv_net()
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters() if n.endswith("weight")}
    anchors = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = ewc(model, fisher, 2.0, mode=mode)
    reg = Regularizer(model, rule)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.05))
    reference = conv_net()
    ref_sgd = torch.optim.SGD(reference.parameters(), lr=0.05)
    pens = {n: Anchored(2.0, anchor=anchors[n], fisher=f) for n, f in fisher.items()}
    for batch in conv_batches(4):
        mse_step(model, sgd, batch, reg.penalty)
        x, y = batch
        ref_sgd.zero_grad()
        ((reference(x) - y) ** 2).mean().backward()
        with torch.no_grad():
            for n, p in zip(pens, named(reference, list(pens)), strict=True):
                if mode == "coupled":
                    p.grad += pens[n].grad(p)
                elif mode == "decoupled":
                    p -= 0.05 * pens[n].grad(p)
        ref_sgd.step()
        if mode == "proximal":
            with torch.no_grad():
                for n, p in zip(pens, named(reference, list(pens)), strict=True):
                    p.copy_(pens[n].prox(p, 0.05))
    for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        # 4 float64 steps of the kernel against Anchored's methods: a few roundings each (measured 3.4e-16)
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=n)


def test_ewc_coupled_value_is_half_lambda_fisher_weighted_distance():
    model = conv_net()
    fisher = {"fc.weight": torch.rand_like(model.fc.weight)}
    reg = Regularizer(model, ewc(model, fisher, 3.0))
    assert reg.penalty().item() == 0.0  # at the anchor
    with torch.no_grad():
        model.fc.weight.add_(0.1)
    expected = 1.5 * (fisher["fc.weight"] * 0.1**2).sum()
    # a float64 sum of 162 products in two orders: 162 eps = 3.6e-14 at worst (measured 3.9e-16)
    torch.testing.assert_close(reg.penalty().detach(), expected, rtol=1e-12, atol=0)


def test_anchored_helpers_validate_their_arguments():
    model = conv_net()
    with pytest.raises(ValueError, match="does not have"):
        ewc(model, {"fc.kernel": torch.ones(1)}, 1.0)
    with pytest.raises(TypeError, match="non-empty mapping"):
        ewc(model, {}, 1.0)
    with pytest.raises(ValueError, match="'coupled', 'decoupled' or 'proximal'"):
        l2_sp(model, 1.0, mode="lagrangian")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        l2_sp(model, -1.0)
    with pytest.raises(ValueError, match="fisher has shape"):
        ewc(model, {"fc.weight": torch.ones(3)}, 1.0)
    assert isinstance(l2_sp(model, 1.0, select="fc.*"), Rule)


@pytest.mark.parametrize("with_fisher", [False, True])
def test_anchors_and_fisher_of_a_transposed_conv1d_weight_meet_their_own_entries(with_fisher):
    """transformers' Conv1D stores its weight (in, out) and the regularizer hands penalties its transpose:
    the anchor and the Fisher weights follow, so the coupled term is lam/2 sum F (theta - a)^2 entry by entry
    and the decoupled pull moves each entry toward its own anchor (closed forms, float64)."""
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    model = nn.Sequential(conv1d(5, 3)).double()  # weight (3, 5): in = 3, out = 5
    weight = model[0].weight
    anchor = weight.detach().clone()
    fisher = {"0.weight": torch.rand(3, 5, dtype=torch.float64)} if with_fisher else None
    F = fisher["0.weight"] if with_fisher else torch.ones(3, 5, dtype=torch.float64)
    lam, lr = 0.5, 0.1

    def rule(mode):
        return (
            ewc(model, fisher, lam, mode=mode)
            if with_fisher
            else l2_sp(model, lam, mode=mode, select="0.weight")
        )

    coupled = Regularizer(model, rule("coupled"))
    decoupled = Regularizer(model, rule("decoupled"))
    with torch.no_grad():
        weight.add_(torch.randn(3, 5, dtype=torch.float64))
    moved = weight.detach().clone()
    torch.testing.assert_close(
        coupled.penalty(), 0.5 * lam * (F * (moved - anchor) ** 2).sum(), rtol=1e-14, atol=0
    )
    sgd = decoupled.wrap(torch.optim.SGD([weight], lr=lr))
    weight.grad = torch.zeros_like(weight)
    sgd.step()
    # theta - lr lam F (theta - a): a few roundings of entries of size |theta|
    torch.testing.assert_close(
        weight.detach(), moved - lr * lam * F * (moved - anchor), rtol=1e-14, atol=1e-15
    )
