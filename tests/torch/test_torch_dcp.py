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

With ``StateDictOptions(flatten_optimizer_state_dict=True)`` DCP cannot carry
the state (it rebuilds the optimizer's state dict from the keys of the
optimizer's param groups): the regularizer says so when the state dict is
taken and when it is loaded, and ``reg.state_dict()`` saved beside the
checkpoint resumes bit-identical (single process, and two FSDP2 ranks with
sharded bfloat16 residuals). The nested default says nothing.
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
from normpen.torch.regularizer import STATE_KEY

WORLD = 2
STEPS = 4
SAVED_AT = 2
TIMEOUT_S = 600  # a loaded 2-core machine
#: What the regularizer's warnings about a flattened DCP state dict begin with.
FLATTENED = (
    r"torch.distributed.checkpoint with StateDictOptions\(flatten_optimizer_state_dict=True\) cannot carry"
)


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
    """``{name: tensor}`` with every DTensor gathered whole (a collective: every rank calls it)."""
    return {n: t.full_tensor() if isinstance(t, dist.tensor.DTensor) else t for n, t in tensors.items()}


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


def _flattened_warnings(function, *args):
    """The messages of the regularizer's warnings about a flattened DCP state dict while ``function`` runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function(*args)
    return [
        str(w.message) for w in caught if "flatten_optimizer_state_dict=True) cannot carry" in str(w.message)
    ]


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
        # the flattened state dict cannot carry the regularizer's state: it is saved beside
        said = _flattened_warnings(_save, *first, checkpoint, flatten, flatten)

        resumed = setup(seed=7)
        model, reg, adam = resumed
        untouched = _whole(dict(model.named_parameters()))
        said += _flattened_warnings(get_optimizer_state_dict, model, adam)  # initialises Adam's state
        initialised = _whole(dict(model.named_parameters()))
        said += _flattened_warnings(_load, *resumed, checkpoint, flatten, flatten)
        _train(*resumed, batches[SAVED_AT:])
        torch.save(
            {
                "straight": _everything(*straight),
                "resumed": _everything(*resumed),
                "initialisation_moved": any(not torch.equal(untouched[n], initialised[n]) for n in untouched),
                "flattened_warnings": said,
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


@pytest.fixture(scope="module")
def flattened_bfloat16_ranks(tmp_path_factory):
    worker = functools.partial(_worker, case="bfloat16", flatten=True)
    return run_on_ranks(worker, tmp_path_factory.mktemp("dcp_bf16_flat"), WORLD, TIMEOUT_S)


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
    _assert_sharded_residuals_carried(bfloat16_ranks)
    assert not any(rank["flattened_warnings"] for rank in bfloat16_ranks)  # the nested default: no alarm


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_a_flattened_dcp_checkpoint_with_the_regularizer_state_beside_it_resumes_fsdp2(
    flattened_bfloat16_ranks,
):
    _assert_sharded_residuals_carried(flattened_bfloat16_ranks)
    for rank in flattened_bfloat16_ranks:
        said = rank["flattened_warnings"]
        # taken for dcp.save, taken for the template, loaded by set_optimizer_state_dict
        assert [m.split(". The state ")[1].split(";")[0] for m in said] == [
            "is left out of this flattened optimizer state dict",
            "is left out of this flattened optimizer state dict",
            "is not restored by this flattened optimizer state dict and stays as it was",
        ]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_dcp_state_initialisation_step_moves_nothing(ranks):
    # the fresh rows of 2.weight lie outside the max-norm ball of radius 0.3: a projection would move them
    assert not any(rank["initialisation_moved"] for rank in ranks)


def _single_process(seed):
    model = _model(seed, torch.float64, 5)
    reg = Regularizer(model, _rules_float64(model))
    return model, reg, reg.wrap(torch.optim.Adam(model.parameters(), lr=0.05))


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_a_single_process_dcp_checkpoint_resumes_bit_identical(tmp_path, flatten):
    # the nested default carries the state in the optimizer's; a flattened one needs reg.state_dict() beside
    batches = _batches(0, torch.float64, world=1)
    straight = _single_process(seed=0)
    _train(*straight, batches)
    first = _single_process(seed=0)
    _train(*first, batches[:SAVED_AT])
    said = _flattened_warnings(_save, *first, str(tmp_path), flatten, flatten)
    resumed = _single_process(seed=7)  # other weights, other anchors, the initial multiplier
    said += _flattened_warnings(_load, *resumed, str(tmp_path), flatten, flatten)
    _train(*resumed, batches[SAVED_AT:])
    _assert_equal_trees(_everything(*resumed), _everything(*straight))
    assert straight[1].rules[3].multiplier > 0  # the multiplier moved: its value travelled
    assert len(said) == (3 if flatten else 0)  # taken for dcp.save and the template, loaded


def test_a_flattened_dcp_checkpoint_alone_says_it_does_not_carry_the_regularizer_state(tmp_path):
    # DCP rebuilds a flattened optimizer state from the keys of the optimizer's param groups: it would
    # drop the regularizer's state silently; the regularizer leaves it out and says so, twice
    import torch.distributed.checkpoint as dcp

    model, reg, adam = _single_process(seed=0)
    _train(model, reg, adam, _batches(0, torch.float64, world=1)[:SAVED_AT])
    with pytest.warns(UserWarning, match=FLATTENED + r".*The state is left out of this flattened"):
        state = _state_dicts(model, reg, adam, flatten=True, beside=False)
    assert not [key for key in state["optimizer"] if STATE_KEY in key]  # not one copy per parameter
    dcp.save(state, checkpoint_id=str(tmp_path))

    fresh_model, fresh_reg, fresh_adam = _single_process(seed=7)
    before = _everything(fresh_model, fresh_reg, fresh_adam)["reg"]
    with pytest.warns(UserWarning, match=FLATTENED) as caught:
        _load(fresh_model, fresh_reg, fresh_adam, str(tmp_path), flatten=True, beside=False)
    assert any("is not restored by this flattened" in str(w.message) for w in caught)
    _assert_equal_trees(_everything(fresh_model, fresh_reg, fresh_adam)["reg"], before)
    assert torch.equal(
        fresh_adam.state[fresh_model[0].weight]["exp_avg"], adam.state[model[0].weight]["exp_avg"]
    )
