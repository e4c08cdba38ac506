"""GroupNorms: the column norms accumulated block by block equal the norms of the whole columns.

A reduction over dim 0 adds the squares of blocks of rows into one buffer
(``BLOCK_BYTES``); small blocks here force several of them, a last one
shorter than the others, and a block of one row. The column sums of a
contiguous CPU tensor come from a compiled kernel instead; every test of the
norms runs both ways (``torch_only`` turns the kernel off).
"""

from __future__ import annotations

import math

import pytest
import torch

from normpen.torch.kernels import GroupNorms

SHAPES = [(7, 5), (33, 4, 3, 3), (1, 6), (0, 4)]


@pytest.fixture(params=["compiled", "torch"])
def torch_only(request, monkeypatch):
    """Run with the compiled column sums (where they take the tensor), or with the torch operations only."""
    if request.param == "torch":
        monkeypatch.setattr("normpen.torch.kernels.compiled_kernels_take", lambda tensor: False)
    return request.param == "torch"


@pytest.mark.parametrize("block_bytes", [1, 3 * 5 * 8, 2**21])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_column_norms_by_blocks_equal_the_whole_columns(block_bytes, dtype, monkeypatch, torch_only):
    monkeypatch.setattr(GroupNorms, "BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape in SHAPES]
    dims = [(0,), (0, 2, 3), (0,), (0,)]
    norms = GroupNorms(tensors, dims, dtype)
    norms.compute(tensors)
    for tensor, reduced, out in zip(tensors, dims, norms.out, strict=True):
        expected = tensor.double().square().sum(dim=reduced, keepdim=True).sqrt()
        # a sum of n nonnegative rounded squares: relative error <= (n + 1) u (u = eps / 2), halved by the
        # square root, taken as 1 / rsqrt (3 roundings, 3 u): (n + 1) u / 2 + 3 u <= (n + 2) eps (the
        # compiled sums, in float64 then rounded once, are within that too)
        n = math.prod(tensor.shape[d] for d in reduced)
        torch.testing.assert_close(out.double(), expected, rtol=(n + 2) * torch.finfo(dtype).eps, atol=0)


def test_the_buffer_holds_one_block_not_the_tensor(monkeypatch):
    monkeypatch.setattr(GroupNorms, "BLOCK_BYTES", 3 * 5 * 8)
    tensor = torch.randn(7, 5, dtype=torch.float64)
    norms = GroupNorms([tensor], [(0,)], torch.float64)
    assert norms.blocks == [3] and norms._squares.numel() == 3 * 5


def _bucket(dtype):
    """Tensors whose groups take every path: runs of 9 and of 4 columns (two conv kernels' input channels,
    pooled by run length), plain columns, rows, and a vector with nothing reduced."""
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 3, 3, 3), (7, 2), (4, 6, 2, 2), (6, 4, 3, 3), (3, 5), (4,)]
    dims = [(0, 2, 3), (0,), (0, 2, 3), (0, 2, 3), (1,), ()]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes], dims


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norms_of_every_kind_of_group_in_one_bucket(dtype, torch_only):
    tensors, dims = _bucket(dtype)
    norms = GroupNorms(tensors, dims, dtype)
    flat = norms.compute(tensors)
    for tensor, reduced, out in zip(tensors, dims, norms.out, strict=True):
        squares = tensor.double().square()
        expected = (squares.sum(dim=reduced, keepdim=True) if reduced else squares).sqrt()  # dim=() sums all
        # a sum of n rounded squares, (n + 1) u, then the root as 1 / rsqrt: rsqrt is the correctly rounded
        # sqrt then a division (u each) and the reciprocal another u: (n + 1) u / 2 + 3 u <= (n + 2) eps
        n = math.prod(tensor.shape[d] for d in reduced)
        torch.testing.assert_close(out.double(), expected, rtol=(n + 2) * torch.finfo(dtype).eps, atol=0)
    assert flat.data_ptr() == norms.flat.data_ptr()
    # concatenate puts per-tensor values where views finds them
    values = [torch.arange(out.numel(), dtype=dtype) + 100 * i for i, out in enumerate(norms.out)]
    for view, value in zip(norms.views(norms.concatenate(values)), values, strict=True):
        assert torch.equal(view.reshape(-1), value)


#: Which tensors of ``_bucket`` have groups that span ranks (only column groups can): none; the runs of 9
#: of one conv kernel split and the other's not, with a split plain column tensor between them in the order.
SPLITS = [None, [True, True, True, False, False, False]]


@pytest.mark.parametrize("split", SPLITS)
def test_split_groups_sum_their_squares_over_the_ranks_in_one_all_reduce(split, monkeypatch, torch_only):
    calls = []

    def two_equal_ranks(tensors):
        """An all-reduce over two ranks that hold the same entries: every sum doubles."""
        calls.append(len(tensors))
        for t in tensors:
            t.mul_(2)

    monkeypatch.setattr("normpen.torch.kernels.all_reduce_sum_", two_equal_ranks)
    tensors, dims = _bucket(torch.float64)
    norms = GroupNorms(tensors, dims, torch.float64, split)
    norms.compute(tensors)
    split = split or [False] * len(tensors)
    assert calls == ([1] if any(split) else [])
    for tensor, reduced, out, spans in zip(tensors, dims, norms.out, split, strict=True):
        squares = tensor.square().sum(dim=reduced, keepdim=True) if reduced else tensor.square()
        expected = (squares * (2 if spans else 1)).sqrt()
        # float64 sums of at most 24 squares, doubled exactly, the root as 1 / rsqrt: as above, (n + 2) eps
        # with n <= 24 on both sides
        torch.testing.assert_close(out, expected, rtol=52 * torch.finfo(torch.float64).eps, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_multiplies_every_group_by_its_factor_exactly(dtype):
    tensors, dims = _bucket(dtype)
    norms = GroupNorms(tensors, dims, dtype)
    factors = torch.rand(norms.flat.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    expected = [t * f for t, f in zip(tensors, norms.views(factors), strict=True)]
    for _ in range(2):  # the second call reuses the views prepared for this factor vector
        scaled = [t.clone() for t in tensors]
        norms.scale_(scaled, factors)
        for actual, wanted in zip(scaled, expected, strict=True):
            assert torch.equal(actual, wanted)  # one product per entry either way: the same rounding
    factors.mul_(0.5)  # new values in the same buffer are read at the next call
    norms.scale_(scaled, factors)
    for actual, wanted, f in zip(scaled, expected, norms.views(factors), strict=True):
        assert torch.equal(actual, wanted * f)


def test_groups_of_columns_that_are_not_runs_are_refused():
    with pytest.raises(ValueError, match="not runs of columns"):
        GroupNorms([torch.ones(2, 3, 4)], [(0, 1)], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_column_sums_serve_contiguous_cpu_tensors_only(dtype, monkeypatch):
    """The kernel takes the contiguous tensors; a transposed (non-contiguous) one gets the blocked torch
    sums; both give the same norms to the bound above (columns of 7 entries: 9 eps)."""
    served = []
    monkeypatch.setattr(
        "normpen.torch.kernels.column_sums_of_squares",
        lambda x, out: served.append(x) or out.copy_(x.square().sum(0)),
    )
    plain = torch.randn(7, 5, generator=torch.Generator().manual_seed(4), dtype=dtype)
    transposed = plain.t().contiguous().t()
    results = []
    for tensor in (plain, transposed):
        norms = GroupNorms([tensor], [(0,)], dtype)
        results.append(norms.compute([tensor]).clone())
    assert len(served) == 1 and served[0] is plain
    torch.testing.assert_close(results[1], results[0], rtol=9 * torch.finfo(dtype).eps, atol=0)
