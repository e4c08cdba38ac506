"""GroupNorms: the column norms accumulated block by block equal the norms of the whole columns.

A reduction over dim 0 adds the squares of blocks of rows into one buffer
(``BLOCK_BYTES``); small blocks here force several of them, a last one
shorter than the others, and a block of one row.
"""

from __future__ import annotations

import math

import pytest
import torch

from normpen.torch.kernels import GroupNorms

SHAPES = [(7, 5), (33, 4, 3, 3), (1, 6), (0, 4)]


@pytest.mark.parametrize("block_bytes", [1, 3 * 5 * 8, 2**21])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_column_norms_by_blocks_equal_the_whole_columns(block_bytes, dtype, monkeypatch):
    monkeypatch.setattr(GroupNorms, "BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape in SHAPES]
    dims = [(0,), (0, 2, 3), (0,), (0,)]
    norms = GroupNorms(tensors, dims, dtype)
    norms.compute(tensors)
    for tensor, reduced, out in zip(tensors, dims, norms.out, strict=True):
        expected = tensor.double().square().sum(dim=reduced, keepdim=True).sqrt()
        # a sum of n nonnegative rounded squares: relative error <= (n + 1) u (u = eps / 2), halved by the
        # square root; (n + 2) eps bounds it with room
        n = math.prod(tensor.shape[d] for d in reduced)
        torch.testing.assert_close(out.double(), expected, rtol=(n + 2) * torch.finfo(dtype).eps, atol=0)


def test_the_buffer_holds_one_block_not_the_tensor(monkeypatch):
    monkeypatch.setattr(GroupNorms, "BLOCK_BYTES", 3 * 5 * 8)
    tensor = torch.randn(7, 5, dtype=torch.float64)
    norms = GroupNorms([tensor], [(0,)], torch.float64)
    assert norms.blocks == [3] and norms._squares.numel() == 3 * 5
