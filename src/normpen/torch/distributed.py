"""What a regularizer needs from ``torch.distributed``: the model under a wrapper, and reductions.

Under DistributedDataParallel every rank holds the same parameters and DDP
averages the gradients. So the coupled penalty, added to the loss on every
rank, contributes its gradient exactly once to the averaged gradient (not
once per rank), and the decoupled, proximal and constrained updates, applied
by every rank to identical tensors, keep the ranks identical. What must be
reduced explicitly are the statistics a rank computes from its own data or
that drive a learned quantity: the constraint value behind a Lagrange
multiplier and the Fisher diagonal.

Sharded parameters (FSDP, DTensor) are refused: a group, spectral or nuclear
penalty needs the whole tensor on one rank.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["unwrap_model", "check_not_sharded", "world_size", "all_reduce_mean_", "all_reduce_sum_"]


def unwrap_model(model):
    """The module a wrapper trains: ``model.module`` for DDP and DataParallel, the original module of
    ``torch.compile(model)``, else ``model``.

    Parameter names (and so ``select`` globs and state-dict keys) are those of
    the unwrapped module, so one set of rules serves a model with and without
    DDP or compilation (no ``_orig_mod.`` prefix). Raises
    ``TypeError`` for a non-module and for sharded (FSDP/DTensor) parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers) or _is_compiled(model):
        model = model.module if isinstance(model, wrappers) else model._orig_mod
    check_not_sharded(model)
    return model


def check_not_sharded(model):
    """Raise ``TypeError`` when ``model`` is FSDP-wrapped or holds DTensor parameters (FSDP2)."""
    if _is_sharded(model):
        raise TypeError(
            "sharded parameters (FSDP2's fully_shard, FSDP1 or DTensor) are not supported yet: group, "
            "spectral and nuclear penalties need whole tensors, and a rule built before fully_shard would "
            "act on nothing; train with DistributedDataParallel, or gather the parameters before "
            "regularizing"
        )


def _is_compiled(model):
    """``model`` is what ``torch.compile(module)`` returns (dynamo is imported only once someone compiled)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def _is_sharded(model):
    if not dist.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    return isinstance(model, (FullyShardedDataParallel, FSDPModule)) or any(
        isinstance(p, DTensor) for p in model.parameters()
    )


def world_size():
    """Number of ranks of the default process group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum_(tensors):
    """Sum each tensor of ``tensors`` over all ranks, in place (a no-op on one rank)."""
    if world_size() > 1:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensors


def all_reduce_mean_(tensors):
    """Average each tensor of ``tensors`` over all ranks, in place (a no-op on one rank)."""
    size = world_size()
    if size > 1:
        all_reduce_sum_(tensors)
        torch._foreach_div_(list(tensors), float(size))
    return tensors
