"""torch.distributed.checkpoint carries the regularizer's state in the optimizer's (FSDP2, two gloo ranks).

The run saves with ``get_model_state_dict``/``get_optimizer_state_dict`` and
``dcp.save``, a fresh model (another initialisation, another anchor) loads
with ``dcp.load`` and ``set_model_state_dict``/``set_optimizer_state_dict``
and trains on: the result is bit-identical to the uninterrupted run
(multipliers, L2-SP anchors, parameters and Adam's state), with no
``reg.state_dict()`` call. A bfloat16 model does the same with its float32
residuals, which are sharded like the parameters (each rank holds its rows'):
DCP must save and load each rank's piece, not one rank's for all. DCP
initialises the state of a fresh optimizer by a step at learning rate 0 on
zero gradients; the regularizer sits it out (no projection, no dual step, no
missing-penalty error).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch_cases import gloo_group, run_on_ranks

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.torch import Regularizer, Rule, l2_sp

WORLD = 2
STEPS = 4
SAVED_AT = 2
TIMEOUT_S = 600  # a loaded 2-core machine


def _rules_float64(model):
    return [
        l2_sp(model, 0.5, mode="decoupled", select="0.weight"),
        Rule(GroupLasso(0.05, "cols"), mode="proximal", select="0.weight"),
        Rule(MaxNorm(1.0), mode="constrained", radius=0.3, select="2.weight"),
        Rule(L2(1.0), mode="lagrangian", budget=0.1, dual_lr=0.5, select="2.weight"),
    ]


def _rules_bfloat16(model):
    return [
        Rule(L2(0.5), mode="decoupled"),
        Rule(GroupLasso(0.05, "cols"), mode="proximal", select="0.weight"),
        Rule(L1(0.01), mode="proximal", select="2.weight"),
    ]


#: dtype, hidden width and rules of each case. The bfloat16 weights (4, 6) and (3, 4) are split
#: 2 + 2 rows (even: a residual saved once for both ranks would load without an error, wrongly)
#: and 2 + 1 rows (uneven).
CASES = {
    "float64": (torch.float64, 5, _rules_float64),
    "bfloat16": (torch.bfloat16, 4, _rules_bfloat16),
}


def _model(seed, dtype, hidden):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 3)).to(dtype)


def _batches(rank, dtype):
    g = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(8, 6, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(8, 3, generator=g, dtype=torch.float64).to(dtype),
        )
        for _ in range(STEPS)
    ]
    return [(x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]) for x, y in batches]


def _whole(tensors):
    """``{name: tensor}`` with every DTensor gathered whole (a collective: every rank calls it)."""
    return {n: t.full_tensor() if isinstance(t, dist.tensor.DTensor) else t for n, t in tensors.items()}


def _train(model, reg, adam, batches):
    for x, y in batches:
        adam.zero_grad()
        (((model(x) - y) ** 2).mean() + reg.penalty()).backward()
        adam.step()


def _worker(rank, port, out_dir, case):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dtype, hidden, rules = CASES[case]
    with gloo_group(rank, port, WORLD, timeout_s=300):
        mesh = init_device_mesh("cpu", (WORLD,))

        def setup(seed):
            model = _model(seed, dtype, hidden)
            for layer in (model[0], model[2], model):
                fully_shard(layer, mesh=mesh)
            reg = Regularizer(model, rules(model))
            return model, reg, reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))

        def everything(model, reg, adam):
            params = {n: p.full_tensor() for n, p in model.named_parameters()}
            adam_state = {
                f"{n}.{k}": v.full_tensor() if isinstance(v, dist.tensor.DTensor) else v
                for n, p in model.named_parameters()
                for k, v in adam.state[p].items()
            }
            state = reg.state_dict()
            return {
                "params": params,
                "adam": adam_state,
                "reg": {"multipliers": state["multipliers"], "residuals": _whole(state["residuals"])},
            }

        batches = _batches(rank, dtype)
        straight = setup(seed=0)
        _train(*straight, batches)

        first = setup(seed=0)
        _train(*first, batches[:SAVED_AT])
        model, reg, adam = first
        checkpoint = str(os.path.join(out_dir, "dcp"))
        dcp.save(
            {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, adam)},
            checkpoint_id=checkpoint,
        )

        resumed = setup(seed=7)
        model, reg, adam = resumed
        untouched = {n: p.full_tensor() for n, p in model.named_parameters()}
        template = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, adam)}
        initialised = {n: p.full_tensor() for n, p in model.named_parameters()}
        dcp.load(template, checkpoint_id=checkpoint)
        set_model_state_dict(model, template["model"])
        set_optimizer_state_dict(model, adam, template["optimizer"])
        _train(*resumed, batches[SAVED_AT:])
        torch.save(
            {
                "straight": everything(*straight),
                "resumed": everything(*resumed),
                "initialisation_moved": any(not torch.equal(untouched[n], initialised[n]) for n in untouched),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_on_ranks(
        functools.partial(_worker, case="float64"), tmp_path_factory.mktemp("dcp"), WORLD, TIMEOUT_S
    )


@pytest.fixture(scope="module")
def bfloat16_ranks(tmp_path_factory):
    worker = functools.partial(_worker, case="bfloat16")
    return run_on_ranks(worker, tmp_path_factory.mktemp("dcp_bf16"), WORLD, TIMEOUT_S)


def _assert_equal_trees(a, b, where="run"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_trees(a[key], b[key], f"{where}[{key!r}]")
    else:
        # the resumed run performs the same operations on the same values in the same order
        assert torch.equal(a, b), where


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_dcp_checkpoint_resumes_bit_identical_with_the_regularizer_state(ranks):
    for rank in ranks:
        _assert_equal_trees(rank["resumed"], rank["straight"])
        assert rank["straight"]["reg"]["multipliers"]["3"] > 0  # the multiplier moved: its value travelled


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_dcp_checkpoint_carries_the_sharded_residuals_of_bfloat16_parameters(bfloat16_ranks):
    for rank in bfloat16_ranks:
        _assert_equal_trees(rank["resumed"], rank["straight"])
        residuals = rank["straight"]["reg"]["residuals"]
        assert set(residuals) == {"0.weight", "2.weight"}
        for name, residual in residuals.items():
            assert residual.dtype == torch.float32, name
            # each rank's rows carry rounding of their own: a residual of one rank loaded on both would differ
            top, bottom = residual[: residual.shape[0] // 2], residual[residual.shape[0] // 2 :]
            assert top.abs().max() > 0 and bottom.abs().max() > 0, name


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_dcp_state_initialisation_step_moves_nothing(ranks):
    # the fresh rows of 2.weight lie outside the max-norm ball of radius 0.3: a projection would move them
    assert not any(rank["initialisation_moved"] for rank in ranks)
