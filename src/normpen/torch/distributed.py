r"""What a regularizer needs from ``torch.distributed``: the model under a wrapper, and reductions.

Under DistributedDataParallel every rank holds the same parameters and DDP
averages the gradients. So the coupled penalty, added to the loss on every
rank, contributes its gradient exactly once to the averaged gradient (not
once per rank), and the decoupled, proximal and constrained updates, applied
by every rank to identical tensors, keep the ranks identical. What must be
reduced explicitly are the statistics a rank computes from its own data or
that drive a learned quantity: the constraint value behind a Lagrange
multiplier and the Fisher diagonal.

Under FSDP2 (``fully_shard``) every parameter is a DTensor sharded by rows
(``Shard(0)``): each rank updates its own rows, through :func:`local_tensor`.
Elementwise work needs nothing more; a group norm whose group spans ranks
(a column of a row-sharded matrix) is the square root of the all-reduced sum
of the ranks' partial sums of squares. A penalty value (coupled and
lagrangian modes) is computed by every rank from its rows and summed over the
ranks with :func:`sum_over_ranks`, whose backward is the identity: every rank
holds the same total, and its derivative with respect to this rank's rows is
this rank's part of :math:`\nabla P`, exactly what one process would give
them. FSDP1 (``FullyShardedDataParallel``) is refused.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "unwrap_model",
    "is_sharded",
    "local_tensor",
    "whole_tensor",
    "local_rows",
    "check_row_sharded",
    "world_size",
    "all_reduce_mean_",
    "all_reduce_sum_",
    "sum_over_ranks",
]


def unwrap_model(model):
    """The module a wrapper trains: ``model.module`` for DDP and DataParallel, the original module of
    ``torch.compile(model)``, else ``model``.

    Parameter names (and so ``select`` globs and state-dict keys) are those of
    the unwrapped module, so one set of rules serves a model with and without
    DDP or compilation (no ``_orig_mod.`` prefix). FSDP2's ``fully_shard``
    keeps the module and its names. Raises ``TypeError`` for a non-module and
    for FSDP1.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers) or _is_compiled(model):
        model = model.module if isinstance(model, wrappers) else model._orig_mod
    if dist.is_available():
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(model, FullyShardedDataParallel):
            raise TypeError(
                "FSDP1 (FullyShardedDataParallel) is not supported: use FSDP2's fully_shard (rows of each "
                "parameter on each rank), or DistributedDataParallel"
            )
    return model


def is_sharded(tensor):
    """``tensor`` is a DTensor (FSDP2); torch.distributed.tensor is imported only once someone uses it."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def local_tensor(tensor):
    """The rank's own piece of a DTensor (a view: in-place updates write through), else ``tensor``."""
    return tensor._local_tensor if is_sharded(tensor) else tensor


def whole_tensor(tensor):
    """The whole tensor of a DTensor (an all-gather: every rank must call it), else ``tensor``."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def local_rows(tensor):
    """``(offset, count)``: the rows (dim 0) of a row-sharded DTensor that this rank holds."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    return offset[0], shape[0]


def check_row_sharded(tensor, name):
    """Raise ``TypeError`` unless ``tensor`` is sharded by rows on a 1-D mesh, as FSDP2 shards."""
    from torch.distributed.tensor import Shard

    if tensor.device_mesh.ndim != 1 or tuple(tensor.placements) != (Shard(0),):
        raise TypeError(
            f"parameter {name!r} is a DTensor with placements {tensor.placements} on a "
            f"{tensor.device_mesh.ndim}-D mesh; normpen supports FSDP2's row sharding (Shard(0) on a 1-D "
            "mesh) only"
        )


def _is_compiled(model):
    """``model`` is what ``torch.compile(module)`` returns (dynamo is imported only once someone compiled)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


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


class _SumOverRanks(torch.autograd.Function):
    r""":math:`S = \sum_r s_r` on every rank; backward :math:`\partial S / \partial s_r = 1` (local)."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def sum_over_ranks(tensor):
    r"""The sum of ``tensor`` over all ranks, differentiable with respect to this rank's summand.

    For a quantity :math:`S = \sum_r s_r` that every rank computes in full
    (a penalty's value from the rows each rank holds, the column sums of
    squares of a row-sharded matrix), the gradient that reaches :math:`s_r`
    on rank :math:`r` is :math:`\partial L / \partial S`: with the same loss
    term on every rank and the gradients of the other terms averaged (FSDP2),
    each rank's rows then get exactly the single-process gradient of the
    term. A new tensor; ``tensor`` itself on one rank.
    """
    return _SumOverRanks.apply(tensor) if world_size() > 1 else tensor
