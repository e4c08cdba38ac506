"""torch.distributed.checkpoint carries the regularizer's state in the optimizer's (FSDP2, two gloo ranks).

The run saves with ``get_model_state_dict``/``get_optimizer_state_dict`` and
``dcp.save``, a fresh model (another initialisation, another anchor) loads
with ``dcp.load`` and ``set_model_state_dict``/``set_optimizer_state_dict``
and trains on: the result is bit-identical to the uninterrupted run
(multipliers, L2-SP anchors, parameters and Adam's state), with no
``reg.state_dict()`` call. A bfloat16 model does the same with its float32
residuals, which are sharded like the parameters (each rank holds its rows'):
DCP must save and load each rank's piece, not one rank's for all. A
parameter's tensors ride in its optimizer state beside ``exp_avg``, so DCP
reshards them as it does Adam's: a checkpoint of two FSDP2 ranks loads into
one process, and one process's into two FSDP2 ranks, bit for bit, and the
training goes on to where the uninterrupted run ends (to float64 rounding:
one process and two ranks sum the gradients in another order). DCP
initialises the state of a fresh optimizer by a step at learning rate 0 on
zero gradients; the regularizer sits it out (no projection, no dual step, no
missing-penalty error).

With ``StateDictOptions(flatten_optimizer_state_dict=True)`` (what
transformers' ``save_optimizer_distributed``/``load_optimizer_distributed``
use) ``set_optimizer_state_dict`` rebuilds the optimizer's state dict from the
keys the live optimizer's state has: the live state holds the regularizer's
entries once it is not empty, so the flattened checkpoint resumes bit-identical
too, on one process and on two FSDP2 ranks, every kind of state (residuals,
anchors, Fisher weights, multipliers, a model-level penalty's power-iteration
vectors).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch_cases import gloo_group, run_on_ranks

from normpen.analysis import SpectralPenalty
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.torch import Regularizer, Rule, ewc, l2_sp
from normpen.torch.regularizer import ENTRY_PREFIX

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


def _rules_model_level(model):
    """Fisher weights (EWC, each run's own: the squares of its first weights), a model-level penalty with
    power-iteration vectors and a multiplier: one process only (FSDP2 refuses model-level rules)."""
    fisher = {"0.weight": model[0].weight.detach() ** 2}
    return [
        ewc(model, fisher, 0.5, mode="decoupled"),
        Rule(SpectralPenalty(model, 0.1, names=["2"]), mode="coupled"),
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
    "model_level": (torch.float64, 5, _rules_model_level),
}
#: The cases that also run on two FSDP2 ranks.
FSDP2_CASES = ("float64", "bfloat16")


def _model(seed, dtype, hidden):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 3)).to(dtype)


def _batches(rank, dtype, world=WORLD):
    g = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(8, 6, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(8, 3, generator=g, dtype=torch.float64).to(dtype),
        )
        for _ in range(STEPS)
    ]
    return [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in batches]


def _whole(tensors):
    """``{name: tensor}``, copies, with every DTensor gathered whole (a collective: every rank calls it)."""
    return {
        n: t.full_tensor() if isinstance(t, dist.tensor.DTensor) else t.detach().clone()
        for n, t in tensors.items()
    }


def _train(model, reg, adam, batches):
    for x, y in batches:
        adam.zero_grad()
        (((model(x) - y) ** 2).mean() + reg.penalty()).backward()
        adam.step()


@torch.no_grad()
def _everything(model, reg, adam):
    """Parameters, Adam's state, every kind of the regularizer's state, all whole."""
    state = reg.state_dict()
    # state.get: indexing adam.state (a defaultdict) would add empty entries, and DCP then takes a fresh
    # optimizer's state for initialised
    adam_state = {
        f"{n}.{k}": v
        for n, p in model.named_parameters()
        for k, v in adam.state.get(p, {}).items()
        if not k.startswith(ENTRY_PREFIX)  # the regularizer's own tensors, compared under "reg"
    }
    return {
        "params": _whole(dict(model.named_parameters())),
        "adam": _whole(adam_state),
        "reg": {
            "multipliers": state["multipliers"],
            "anchors": {i: _whole(anchors) for i, anchors in state["anchors"].items()},
            "fisher": {i: _whole(fisher) for i, fisher in state["fisher"].items()},
            "residuals": _whole(state["residuals"]),
            "model_level": state["model_level"],
        },
    }


def _options(flatten):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=flatten)


def _state_dicts(model, adam, flatten):
    """What is saved: the model's and the optimizer's state dicts (DCP's); also the template that
    ``dcp.load`` fills in place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {
        "model": get_model_state_dict(model),
        "optimizer": get_optimizer_state_dict(model, adam, options=_options(flatten)),
    }


def _save(model, reg, adam, checkpoint, flatten):
    import torch.distributed.checkpoint as dcp

    dcp.save(_state_dicts(model, adam, flatten), checkpoint_id=checkpoint)


def _load(model, reg, adam, checkpoint, flatten):
    """``dcp.load`` into the template, then the model's and the optimizer's state: no regularizer call."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    template = _state_dicts(model, adam, flatten)
    dcp.load(template, checkpoint_id=checkpoint)
    set_model_state_dict(model, template["model"])
    set_optimizer_state_dict(model, adam, template["optimizer"], options=_options(flatten))


def _single_process(seed, case="float64"):
    dtype, hidden, rules = CASES[case]
    model = _model(seed, dtype, hidden)
    reg = Regularizer(model, rules(model))
    return model, reg, reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))


def _one_process_run(case, checkpoint):
    """One process on the global batches: the state after ``SAVED_AT`` steps (saved with DCP to
    ``checkpoint``) and at the end."""
    batches = _batches(0, CASES[case][0], world=1)
    straight = _single_process(0, case)
    _train(*straight, batches)
    first = _single_process(0, case)
    _train(*first, batches[:SAVED_AT])
    _save(*first, checkpoint, False)
    return {"saved": _everything(*first), "straight": _everything(*straight)}


def _worker(rank, port, out_dir, case, flatten=False):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
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

        batches = _batches(rank, dtype)
        straight = setup(seed=0)
        _train(*straight, batches)

        first = setup(seed=0)
        _train(*first, batches[:SAVED_AT])
        checkpoint = str(os.path.join(out_dir, "dcp"))
        _save(*first, checkpoint, flatten)
        saved = _everything(*first)

        resumed = setup(seed=7)
        model, reg, adam = resumed
        untouched = _whole(dict(model.named_parameters()))
        get_optimizer_state_dict(model, adam)  # initialises Adam's state
        initialised = _whole(dict(model.named_parameters()))
        fresh = _everything(*resumed)["reg"]
        _load(*resumed, checkpoint, flatten)
        _train(*resumed, batches[SAVED_AT:])
        result = {
            "checkpoint": checkpoint,
            "saved": saved,
            "straight": _everything(*straight),
            "resumed": _everything(*resumed),
            "fresh": fresh,
            "initialisation_moved": any(not torch.equal(untouched[n], initialised[n]) for n in untouched),
        }
        if not flatten:  # one process's checkpoint, resharded onto the two ranks
            from_one = setup(seed=7)
            _load(*from_one, os.path.join(out_dir, "one"), False)
            loaded = _everything(*from_one)
            _train(*from_one, batches[SAVED_AT:])
            result["from_one"] = {"loaded": loaded, "trained": _everything(*from_one)}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def _run(tmp_path_factory, case, flatten=False):
    """What each of the two ranks saved, and (nested only) the one-process run whose checkpoint they load."""
    out_dir = tmp_path_factory.mktemp(f"dcp_{case}_{'flat' if flatten else 'nested'}")
    one = None if flatten else _one_process_run(case, str(out_dir / "one"))
    worker = functools.partial(_worker, case=case, flatten=flatten)
    return run_on_ranks(worker, out_dir, WORLD, TIMEOUT_S), one


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _run(tmp_path_factory, "float64")


@pytest.fixture(scope="module")
def bfloat16_ranks(tmp_path_factory):
    return _run(tmp_path_factory, "bfloat16")


@pytest.fixture(scope="module")
def flattened_ranks(tmp_path_factory):
    return _run(tmp_path_factory, "float64", flatten=True)


@pytest.fixture(scope="module")
def flattened_bfloat16_ranks(tmp_path_factory):
    return _run(tmp_path_factory, "bfloat16", flatten=True)


def _assert_equal_trees(a, b, where="run"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_trees(a[key], b[key], f"{where}[{key!r}]")
    else:
        # the resumed run performs the same operations on the same values in the same order
        assert torch.equal(a, b), where


#: One process and two FSDP2 ranks on the same global batch, float64 throughout: the ranks' gradient
#: halves are averaged by a reduce-scatter (another order of the same sums) and the column norms of the
#: group lasso are square roots of all-reduced partial sums, so each step differs by relative rounding
#: ~1e-16..1e-15, amplified by Adam's division by sqrt(v) over the 2 steps after the load (measured, both
#: directions: <= 1.5e-15 relative, 6e-17 absolute over the parameters, Adam's state, the multiplier and
#: the anchor): rtol 1e-12, atol 1e-14 leave a factor >= 100, as in tests/torch/test_torch_fsdp.py.
ONE_VS_TWO = {"rtol": 1e-12, "atol": 1e-14}


def _assert_close_trees(a, b, where="run"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_close_trees(a[key], b[key], f"{where}[{key!r}]")
    else:
        torch.testing.assert_close(a, b, **ONE_VS_TWO, msg=where)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_dcp_checkpoint_resumes_bit_identical_with_the_regularizer_state(ranks):
    for rank in ranks[0]:
        _assert_equal_trees(rank["resumed"], rank["straight"])
        assert rank["straight"]["reg"]["multipliers"]["3"] > 0  # the multiplier moved: its value travelled


def _assert_sharded_residuals_carried(ranks):
    for rank in ranks:
        _assert_equal_trees(rank["resumed"], rank["straight"])
        residuals = rank["straight"]["reg"]["residuals"]
        assert set(residuals) == {"0.weight", "2.weight"}
        for name, residual in residuals.items():
            assert residual.dtype == torch.float32, name
            # each rank's rows carry rounding of their own: a residual of one rank loaded on both would differ
            top, bottom = residual[: residual.shape[0] // 2], residual[residual.shape[0] // 2 :]
            assert top.abs().max() > 0 and bottom.abs().max() > 0, name


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_dcp_checkpoint_carries_the_sharded_residuals_of_bfloat16_parameters(bfloat16_ranks):
    _assert_sharded_residuals_carried(bfloat16_ranks[0])


def _load_in_one_process(checkpoint, case):
    resumed = _single_process(seed=7, case=case)  # other weights, other anchors, the initial multiplier
    _load(*resumed, checkpoint, False)
    return resumed


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.parametrize("case", FSDP2_CASES)
def test_a_checkpoint_of_two_fsdp2_ranks_loads_bit_identical_in_one_process(ranks, bfloat16_ranks, case):
    two = {"float64": ranks, "bfloat16": bfloat16_ranks}[case][0]
    resumed = _load_in_one_process(two[0]["checkpoint"], case)
    # a copy of every rank's rows into one tensor: the gathered state of the two ranks, bit for bit
    _assert_equal_trees(_everything(*resumed), two[0]["saved"])
    if case == "float64":
        assert two[0]["saved"]["reg"]["multipliers"]["3"] > 0 and two[0]["saved"]["reg"]["anchors"]["0"]
    else:
        assert two[0]["saved"]["reg"]["residuals"]["0.weight"].abs().max() > 0


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_training_resumed_in_one_process_from_two_fsdp2_ranks_ends_where_the_two_ranks_do(ranks):
    two = ranks[0]
    resumed = _load_in_one_process(two[0]["checkpoint"], "float64")
    _train(*resumed, _batches(0, torch.float64, world=1)[SAVED_AT:])
    _assert_close_trees(_everything(*resumed), two[0]["straight"])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.parametrize("case", FSDP2_CASES)
def test_a_checkpoint_of_one_process_loads_bit_identical_on_two_fsdp2_ranks(ranks, bfloat16_ranks, case):
    two, one = {"float64": ranks, "bfloat16": bfloat16_ranks}[case]
    for rank in two:
        _assert_equal_trees(rank["from_one"]["loaded"], one["saved"])
        if case == "float64":
            _assert_close_trees(rank["from_one"]["trained"], one["straight"])


def _assert_every_kind_differs(fresh, saved):
    """Each kind of the regularizer's state in ``saved`` differs from a fresh regularizer's: a resumed run
    equal to the uninterrupted one then shows that each travelled."""
    for kind, tree in saved.items():
        for a, b in zip(_leaves(fresh[kind]), _leaves(tree), strict=True):
            assert not torch.equal(a, b), kind


def _leaves(tree):
    return [t for v in tree.values() for t in _leaves(v)] if isinstance(tree, dict) else [tree]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_flattened_dcp_checkpoint_resumes_fsdp2_bit_identical(flattened_ranks, flattened_bfloat16_ranks):
    # the flattened state dict names every entry by the parameter's name (state.0.weight.normpen.anchor.0)
    # and set_optimizer_state_dict keeps those of the live state: the residuals (sharded rows), the
    # anchors (DTensors) and the multiplier (the same on each rank: saved once) come back
    _assert_sharded_residuals_carried(flattened_bfloat16_ranks[0])
    for rank in flattened_ranks[0]:
        _assert_equal_trees(rank["resumed"], rank["straight"])
        assert rank["straight"]["reg"]["multipliers"]["3"] > 0
        _assert_every_kind_differs(rank["fresh"], rank["saved"]["reg"])
    for rank in flattened_bfloat16_ranks[0]:
        _assert_every_kind_differs(rank["fresh"], rank["saved"]["reg"])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_dcp_state_initialisation_step_moves_nothing(ranks):
    # the fresh rows of 2.weight lie outside the max-norm ball of radius 0.3: a projection would move them
    assert not any(rank["initialisation_moved"] for rank in ranks[0])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_a_single_process_dcp_checkpoint_resumes_bit_identical(tmp_path, flatten, case):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # residuals (bfloat16), anchors, Fisher weights, multipliers and power-iteration vectors (model_level)
    batches = _batches(0, CASES[case][0], world=1)
    straight = _single_process(seed=0, case=case)
    _train(*straight, batches)
    first = _single_process(seed=0, case=case)
    _train(*first, batches[:SAVED_AT])
    _save(*first, str(tmp_path), flatten)
    resumed = _single_process(seed=7, case=case)  # other weights, anchors, Fisher; the initial multiplier
    get_optimizer_state_dict(resumed[0], resumed[2])  # initialises Adam's state, as _load will
    _assert_every_kind_differs(_everything(*resumed)["reg"], _everything(*first)["reg"])
    _load(*resumed, str(tmp_path), flatten)
    _assert_equal_trees(_everything(*resumed), _everything(*first))
    _train(*resumed, batches[SAVED_AT:])
    _assert_equal_trees(_everything(*resumed), _everything(*straight))


def test_transformers_save_and_load_optimizer_distributed_resume_bit_identical(tmp_path):
    # transformers' own DCP functions flatten the optimizer state dict; a tiny random GPT-2 in bfloat16
    # (residuals), an L2-SP anchor and a multiplier travel with the optimizer's state alone
    transformers = pytest.importorskip("transformers")
    from transformers.distributed.checkpoint import load_optimizer_distributed, save_optimizer_distributed

    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=97,
        n_positions=16,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    tokens = torch.randint(0, 97, (STEPS, 4, 16), generator=torch.Generator().manual_seed(1))

    def setup(seed):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config).to(torch.bfloat16)
        rules = [
            Rule(L2(0.1), mode="decoupled", select="*.weight"),
            l2_sp(model, 0.5, mode="coupled", select="transformer.wte.weight"),
            Rule(
                L2(1.0),
                mode="lagrangian",
                budget=0.1,
                dual_lr=0.5,
                select="transformer.h.0.attn.c_proj.weight",
            ),
        ]
        reg = Regularizer(model, rules)
        return model, reg, reg.wrap(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0))

    def train(model, reg, adamw, batches):
        for ids in batches:
            adamw.zero_grad()
            (model(input_ids=ids, labels=ids).loss + reg.penalty()).backward()
            adamw.step()

    straight = setup(seed=0)
    train(*straight, tokens)
    first = setup(seed=0)
    train(*first, tokens[:SAVED_AT])
    save_optimizer_distributed(first[0], first[2], str(tmp_path))
    model, reg, adamw = resumed = setup(seed=7)  # other weights and anchor, zero residuals, multiplier 0
    model.load_state_dict(first[0].state_dict())
    _assert_every_kind_differs(_everything(*resumed)["reg"], _everything(*first)["reg"])
    load_optimizer_distributed(model, adamw, str(tmp_path))
    _assert_equal_trees(_everything(*resumed)["reg"], _everything(*first)["reg"])
    train(*resumed, tokens[SAVED_AT:])
    _assert_equal_trees(_everything(*resumed), _everything(*straight))
    assert reg.rules[2].multiplier > 0 and reg.state_dict()["residuals"]


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_an_unwrapped_optimizers_checkpoint_loads_partially_and_keeps_the_regularizer(tmp_path, flatten):
    # the wrapped optimizer's template has the regularizer's keys, the checkpoint does not: dcp.load
    # refuses it as any missing key; allowed a partial load, the template keeps the regularizer's own
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    model = _model(0, torch.float64, 5)
    adam = torch.optim.Adam(model.parameters(), lr=0.05)
    for x, y in _batches(0, torch.float64, world=1)[:SAVED_AT]:
        adam.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        adam.step()
    dcp.save(_state_dicts(model, adam, flatten)["optimizer"], checkpoint_id=str(tmp_path))
    resumed = _single_process(seed=7)
    before = _everything(*resumed)["reg"]
    with pytest.raises(CheckpointException, match="Missing key in checkpoint state_dict"):
        dcp.load(_state_dicts(resumed[0], resumed[2], flatten)["optimizer"], checkpoint_id=str(tmp_path))
    template = _state_dicts(resumed[0], resumed[2], flatten)["optimizer"]
    dcp.load(template, checkpoint_id=str(tmp_path), planner=DefaultLoadPlanner(allow_partial_load=True))
    set_optimizer_state_dict(resumed[0], resumed[2], template, options=_options(flatten))
    _assert_equal_trees(_everything(*resumed)["reg"], before)
    assert torch.equal(
        resumed[2].state[resumed[0][0].weight]["exp_avg"], adam.state[model[0].weight]["exp_avg"]
    )
