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

With ``StateDictOptions(flatten_optimizer_state_dict=True)`` the state is
saved and ``dcp.load`` reads it back into the template, but
``set_optimizer_state_dict`` rebuilds the optimizer's state dict from the keys
the live optimizer has and drops it: the regularizer says so when it is
loaded, and ``reg.state_dict()`` saved beside the checkpoint resumes
bit-identical (single process, and two FSDP2 ranks with sharded bfloat16
residuals). The nested default says nothing.
"""

from __future__ import annotations

import functools
import os
import warnings

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
from normpen.torch.regularizer import ENTRY_PREFIX, STATE_KEY

WORLD = 2
STEPS = 4
SAVED_AT = 2
TIMEOUT_S = 600  # a loaded 2-core machine
#: What the regularizer's warning about a DCP state dict without its state says.
NOT_RESTORED = "got a torch.distributed.checkpoint state dict (parameters named, not numbered) without"


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
    """Parameters, Adam's state, the regularizer's multipliers, anchors and residuals, all whole."""
    state = reg.state_dict()
    # state.get: indexing adam.state (a defaultdict) would add empty entries, and DCP then takes a fresh
    # optimizer's state for initialised
    adam_state = {
        f"{n}.{k}": v for n, p in model.named_parameters() for k, v in adam.state.get(p, {}).items()
    }
    return {
        "params": _whole(dict(model.named_parameters())),
        "adam": _whole(adam_state),
        "reg": {
            "multipliers": state["multipliers"],
            "anchors": {i: _whole(anchors) for i, anchors in state["anchors"].items()},
            "residuals": _whole(state["residuals"]),
        },
    }


def _options(flatten):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=flatten)


def _state_dicts(model, reg, adam, flatten, beside):
    """What is saved: the model's and the optimizer's state dicts (DCP's), and ``reg.state_dict()`` if
    ``beside``. Also the template that ``dcp.load`` fills in place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {
        "model": get_model_state_dict(model),
        "optimizer": get_optimizer_state_dict(model, adam, options=_options(flatten)),
    }
    if beside:
        state["regularizer"] = reg.state_dict()
    return state


def _save(model, reg, adam, checkpoint, flatten, beside):
    import torch.distributed.checkpoint as dcp

    dcp.save(_state_dicts(model, reg, adam, flatten, beside), checkpoint_id=checkpoint)


def _load(model, reg, adam, checkpoint, flatten, beside):
    """``dcp.load`` into the template, then the model's, the optimizer's and (if ``beside``) the
    regularizer's state, in that order."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    template = _state_dicts(model, reg, adam, flatten, beside)
    dcp.load(template, checkpoint_id=checkpoint)
    set_model_state_dict(model, template["model"])
    set_optimizer_state_dict(model, adam, template["optimizer"], options=_options(flatten))
    if beside:
        reg.load_state_dict(template["regularizer"])


def _not_restored_warnings(function, *args):
    """The messages of the regularizer's warnings that its state was not restored, while ``function`` runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function(*args)
    return [str(w.message) for w in caught if NOT_RESTORED in str(w.message)]


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
    _save(*first, checkpoint, False, False)
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
        # the flattened state dict does not bring the regularizer's state back: it is saved beside
        said = _not_restored_warnings(_save, *first, checkpoint, flatten, flatten)
        saved = _everything(*first)

        resumed = setup(seed=7)
        model, reg, adam = resumed
        untouched = _whole(dict(model.named_parameters()))
        said += _not_restored_warnings(get_optimizer_state_dict, model, adam)  # initialises Adam's state
        initialised = _whole(dict(model.named_parameters()))
        said += _not_restored_warnings(_load, *resumed, checkpoint, flatten, flatten)
        _train(*resumed, batches[SAVED_AT:])
        result = {
            "checkpoint": checkpoint,
            "saved": saved,
            "straight": _everything(*straight),
            "resumed": _everything(*resumed),
            "initialisation_moved": any(not torch.equal(untouched[n], initialised[n]) for n in untouched),
            "not_restored_warnings": said,
        }
        if not flatten:  # one process's checkpoint, resharded onto the two ranks
            from_one = setup(seed=7)
            _load(*from_one, os.path.join(out_dir, "one"), False, False)
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
    assert not any(rank["not_restored_warnings"] for rank in bfloat16_ranks[0])  # the nested default


def _load_in_one_process(checkpoint, case):
    resumed = _single_process(seed=7, case=case)  # other weights, other anchors, the initial multiplier
    _load(*resumed, checkpoint, False, False)
    return resumed


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.parametrize("case", list(CASES))
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
@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_of_one_process_loads_bit_identical_on_two_fsdp2_ranks(ranks, bfloat16_ranks, case):
    two, one = {"float64": ranks, "bfloat16": bfloat16_ranks}[case]
    for rank in two:
        _assert_equal_trees(rank["from_one"]["loaded"], one["saved"])
        if case == "float64":
            _assert_close_trees(rank["from_one"]["trained"], one["straight"])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_flattened_dcp_checkpoint_with_the_regularizer_state_beside_it_resumes_fsdp2(
    flattened_bfloat16_ranks,
):
    _assert_sharded_residuals_carried(flattened_bfloat16_ranks[0])
    for rank in flattened_bfloat16_ranks[0]:
        assert len(rank["not_restored_warnings"]) == 1  # loaded by set_optimizer_state_dict


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_dcp_state_initialisation_step_moves_nothing(ranks):
    # the fresh rows of 2.weight lie outside the max-norm ball of radius 0.3: a projection would move them
    assert not any(rank["initialisation_moved"] for rank in ranks[0])


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_a_single_process_dcp_checkpoint_resumes_bit_identical(tmp_path, flatten):
    # the nested default carries the state in the optimizer's; a flattened one needs reg.state_dict() beside
    batches = _batches(0, torch.float64, world=1)
    straight = _single_process(seed=0)
    _train(*straight, batches)
    first = _single_process(seed=0)
    _train(*first, batches[:SAVED_AT])
    said = _not_restored_warnings(_save, *first, str(tmp_path), flatten, flatten)
    resumed = _single_process(seed=7)  # other weights, other anchors, the initial multiplier
    said += _not_restored_warnings(_load, *resumed, str(tmp_path), flatten, flatten)
    _train(*resumed, batches[SAVED_AT:])
    _assert_equal_trees(_everything(*resumed), _everything(*straight))
    assert straight[1].rules[3].multiplier > 0  # the multiplier moved: its value travelled
    assert len(said) == (1 if flatten else 0)  # loaded by set_optimizer_state_dict


def test_a_flattened_dcp_checkpoint_alone_saves_the_state_but_does_not_restore_it(tmp_path):
    # DCP flattens the parameters' entries like exp_avg and dcp.load reads them back into the template;
    # set_optimizer_state_dict rebuilds the optimizer's state dict from the keys the live optimizer has
    # (torch/distributed/checkpoint/state_dict.py, _unflatten_optim_state_dict) and drops them
    import torch.distributed.checkpoint as dcp

    model, reg, adam = _single_process(seed=0)
    _train(model, reg, adam, _batches(0, torch.float64, world=1)[:SAVED_AT])
    saved = _state_dicts(model, reg, adam, flatten=True, beside=False)
    anchor = f"state.0.weight.{ENTRY_PREFIX}anchor.0"
    assert torch.equal(saved["optimizer"][anchor], reg.state_dict()["anchors"]["0"]["0.weight"])
    assert f"param_groups.0.weight.{STATE_KEY}" in saved["optimizer"]  # a copy per parameter of the group
    dcp.save(saved, checkpoint_id=str(tmp_path))

    fresh_model, fresh_reg, fresh_adam = _single_process(seed=7)
    before = _everything(fresh_model, fresh_reg, fresh_adam)["reg"]
    template = _state_dicts(fresh_model, fresh_reg, fresh_adam, flatten=True, beside=False)
    dcp.load(template, checkpoint_id=str(tmp_path))
    assert torch.equal(template["optimizer"][anchor], saved["optimizer"][anchor])
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    with pytest.warns(UserWarning, match=r"\(flatten_optimizer_state_dict=True\)\) never has it"):
        set_optimizer_state_dict(fresh_model, fresh_adam, template["optimizer"], options=_options(True))
    _assert_equal_trees(_everything(fresh_model, fresh_reg, fresh_adam)["reg"], before)
    assert torch.equal(
        fresh_adam.state[fresh_model[0].weight]["exp_avg"], adam.state[model[0].weight]["exp_avg"]
    )
