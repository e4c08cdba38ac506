"""Under DDP (gloo, two CPU processes started here) the ranks stay identical and equal one process.

Each rank trains on its half of every global batch; DDP averages the
gradients, so with the coupled term counted once and the lagrangian value
averaged, the result must be the single-process run on the whole batch. The
Fisher diagonal of the two halves must be the Fisher of the whole data.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch_cases import conv_batches, conv_net, gloo_group, run_on_ranks

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule, fisher_diagonal

WORLD = 2
STEPS = 4
TIMEOUT_S = 120


def _rules():
    return [
        Rule(L2(0.05), mode="decoupled"),
        Rule(L1(0.02), mode="coupled", select="head.*"),
        Rule(GroupLasso(0.02, "rows"), mode="proximal", select="fc.weight"),
        Rule(L2(1.0), mode="lagrangian", budget=0.5, dual_lr=0.5),
    ]


def _train(model, batches, wrap=lambda m: m):
    reg = Regularizer(wrap(model), _rules())
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    net = wrap(model)
    for x, y in batches:
        sgd.zero_grad()
        (((net(x) - y) ** 2).mean() + reg.penalty()).backward()
        sgd.step()
    return reg.rules[-1].multiplier


def _fisher(model, batches):
    data = [(x, y) for x, y in batches]
    return fisher_diagonal(model, data, nn.MSELoss(), progress=False)


def _worker(rank, port, out_dir):
    with gloo_group(rank, port, WORLD, timeout_s=60):
        halves = [(x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]) for x, y in conv_batches(STEPS)]
        model = conv_net()
        ddp = nn.parallel.DistributedDataParallel(model)
        multiplier = _train(model, halves, wrap=lambda m: ddp)
        fisher = _fisher(conv_net(), halves)
        torch.save(
            {"params": dict(model.named_parameters()), "multiplier": multiplier, "fisher": fisher},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_ranks_stay_identical_and_equal_a_single_process_run(tmp_path):
    ranks = run_on_ranks(_worker, tmp_path, WORLD, TIMEOUT_S)

    # the ranks apply the same all-reduced gradient with the same operations: bit equal
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name
    assert torch.equal(ranks[0]["multiplier"], ranks[1]["multiplier"])

    # float64: gloo averages the two ranks' gradients (the same sums in another order) each step: a few
    # eps relative per step, amplified by Adam's division by sqrt(v); measured 1.6e-14 relative, 4e-17
    # absolute, so 1e-12 and 1e-14 (were 1e-10 and 1e-13, far above)
    single = conv_net()
    multiplier = _train(single, conv_batches(STEPS))
    for name, p in single.named_parameters():
        torch.testing.assert_close(ranks[0]["params"][name], p.detach(), rtol=1e-12, atol=1e-14, msg=name)
    torch.testing.assert_close(ranks[0]["multiplier"], multiplier, rtol=1e-12, atol=1e-14)
    assert multiplier.item() > 0

    fisher = _fisher(conv_net(), conv_batches(STEPS))
    for name, value in fisher.items():
        # squared gradients all-reduced: the same float64 sum in another order (measured 4.3e-16)
        torch.testing.assert_close(ranks[0]["fisher"][name], value, rtol=1e-12, atol=1e-15, msg=name)
        assert torch.equal(ranks[0]["fisher"][name], ranks[1]["fisher"][name])
