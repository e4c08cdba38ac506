"""The compiled kernels (``normpen.torch._norm_kernels``: one-pass row thresholding and clipping, column
sums of squares) against float64 closed forms, and the kernels' choice between them and the torch
operations (``OnePassRows``)."""

from __future__ import annotations

import math
import multiprocessing
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch_cases import conv_batches, conv_net

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.max_norm import MaxNorm
from normpen.torch import Regularizer, Rule, _norm_kernels, kernels
from normpen.torch._norm_kernels import (
    RECORD_LIMITS,
    clip_rows_,
    column_sums_of_squares,
    record_dtype,
    restore_,
    scale_recording_,
    soft_threshold_rows_,
)
from normpen.torch.kernels import Slot, kernel_for

DTYPES = [torch.float32, torch.float64]


def norm_error(width, dtype):
    r"""A bound on the relative error of the kernel's row norm: the squares of ``width`` entries summed in
    16 lanes of at most :math:`\lceil w/16 \rceil` terms, then the remainder (< 16 terms) and the 16
    lanes added one by one: a sum of nonnegative terms, each rounded square and each addition one
    rounding, so at most :math:`m = \lceil w/16 \rceil + 32` roundings on any path, :math:`m u`
    relative (:math:`u` = eps / 2); the square root halves it and adds one :math:`u`:
    :math:`(m/2 + 1) u \le (m + 2)\,\mathrm{eps} / 4`, taken as :math:`(m + 2)\,\mathrm{eps}/2`."""
    return (math.ceil(width / 16) + 34) * torch.finfo(dtype).eps / 2


@st.composite
def matrices(draw):
    """A float32 or float64 matrix of 0 to 40 rows and 0 to 300 columns (both lane counts and
    remainders), moderate magnitudes, some zero rows."""
    dtype = draw(st.sampled_from(DTYPES))
    rows, width = draw(st.integers(0, 40)), draw(st.integers(0, 300))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(rows, width, generator=g, dtype=torch.float64) * draw(st.sampled_from([1e-6, 1.0, 1e3]))
    x[::5] = 0.0
    return x.to(dtype)


@given(matrices(), st.sampled_from([0.0, 0.1, 1.0, 10.0]))
def test_soft_threshold_rows_is_the_group_soft_threshold(x, level):
    r"""Against float64 :math:`x_r \max(n_r - t_r, 0)/n_r`. With the norm off by :math:`\varepsilon`
    relative, the factor :math:`1 - t/n` is off by at most :math:`|\varepsilon|` (:math:`t \le n`; where
    :math:`\hat n` and :math:`n` straddle :math:`t` both factors are at most :math:`|\varepsilon|`), plus
    a subtraction, a division and the product: 3 u. So each entry is within
    :math:`(|\varepsilon| + 2\,\mathrm{eps}) \max|x_r|`."""
    g = torch.Generator().manual_seed(x.shape[0])
    scale = float(x.abs().max()) if x.numel() else 1.0
    thresholds = (torch.rand(x.shape[0], generator=g, dtype=torch.float64) * level * scale).to(x.dtype)
    thresholds[::3] = 0.0  # unpenalised rows
    y = x.clone()
    soft_threshold_rows_(y, thresholds)
    exact = x.double()
    norms = exact.norm(dim=1, keepdim=True)
    expected = exact * ((norms - thresholds.double()[:, None]).clamp_min(0) / norms.clamp_min(1e-300))
    bound = norm_error(x.shape[1], x.dtype) + 2 * torch.finfo(x.dtype).eps
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=bound * scale)
    assert torch.equal(y[::3][thresholds[::3] == 0], x[::3][thresholds[::3] == 0])  # x * 1 is not applied


@given(matrices(), st.sampled_from([1e-3, 0.5, 30.0]))
def test_clip_rows_is_the_projection_on_the_ball(x, radius):
    r"""Against float64 :math:`x_r / (\max(n_r, c)/c)`: the divisor is off by :math:`|\varepsilon| + u`
    relative, the quotient by one more :math:`u`: within :math:`(|\varepsilon| + \mathrm{eps})|x|`.
    Rows inside the ball (with a margin of the norm's error) are unchanged bit for bit."""
    y = x.clone()
    clip_rows_(y, x.shape[0], radius)
    exact = x.double()
    norms = exact.norm(dim=1, keepdim=True)
    expected = exact / (norms.clamp_min(radius) / radius)
    bound = norm_error(x.shape[1], x.dtype) + torch.finfo(x.dtype).eps
    torch.testing.assert_close(y.double(), expected, rtol=bound, atol=0)
    inside = norms[:, 0] < radius * (1 - 2 * bound)
    assert torch.equal(y[inside], x[inside])


@given(matrices(), st.sampled_from([None, torch.float64]))
def test_column_sums_of_squares_are_float64_sums(x, into):
    r"""Against the float64 sums of the exact squares. A float32 entry's square is exact in float64 (48
    significant bits), a float64 one's rounded once; the kernel adds four rows, then that into the sum:
    at most :math:`m/4 + 4` additions on any path, all of nonnegative terms, so
    :math:`(m/4 + 5)\,u_{64}` relative, then one rounding to the output's dtype."""
    sums = torch.full((x.shape[1],), float("nan"), dtype=into or x.dtype)
    column_sums_of_squares(x, sums)
    exact = x.double().square().sum(dim=0)
    bound = (x.shape[0] / 4 + 5) * torch.finfo(torch.float64).eps / 2 + torch.finfo(sums.dtype).eps / 2
    torch.testing.assert_close(sums.double(), exact, rtol=bound, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_of_rows_on_threads_give_the_one_thread_result(dtype, monkeypatch):
    """Cut into blocks of rows on 3 threads, each row gets the same operations: the rows' results are the
    one-thread results bit for bit, and the column sums, which add the blocks' partial sums, are within
    the bound of one more addition per block (``column_sums_of_squares``' docstring)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 50, generator=g, dtype=dtype)
    thresholds = torch.rand(37, generator=g, dtype=dtype) * 7
    results = []
    for threads, entries in ((1, _norm_kernels.PARALLEL_ENTRIES), (3, 64)):
        torch.set_num_threads(threads)  # (the conftest fixture restores the count)
        monkeypatch.setattr(_norm_kernels, "PARALLEL_ENTRIES", entries)
        assert len(_norm_kernels._row_blocks(37, 50)) == threads
        thresholded, clipped, sums = x.clone(), x.clone(), torch.empty(50, dtype=dtype)
        soft_threshold_rows_(thresholded, thresholds)
        clip_rows_(clipped, 37, 4.0)
        column_sums_of_squares(x, sums)
        results.append((thresholded, clipped, sums))
    torch.set_num_threads(2)  # a new count: a new pool, and the old one's threads end
    old = _norm_kernels._pool[2]
    soft_threshold_rows_(x.clone(), thresholds)
    assert _norm_kernels._pool[1] == 2 and old._shutdown
    (t1, c1, s1), (t3, c3, s3) = results
    assert torch.equal(t3, t1) and torch.equal(c3, c1)
    bound = (37 / 4 + 4 + 3) * torch.finfo(torch.float64).eps + torch.finfo(dtype).eps
    torch.testing.assert_close(s3, s1, rtol=bound, atol=0)


def _threshold_in_child(x, thresholds, expected, done):
    soft_threshold_rows_(x, thresholds)
    done.put((bool(torch.equal(x, expected)), _norm_kernels._pool[0] == os.getpid()))


def test_a_forked_child_makes_its_own_pool(monkeypatch):
    """Threads do not survive ``fork``: a child forked after the parent made its pool runs its blocks on a
    pool of its own (the parent's executor would wait for threads that are not there, or start none:
    its idle threads' semaphore says they are free) and gets the parent's result."""
    monkeypatch.setattr(_norm_kernels, "PARALLEL_ENTRIES", 64)
    torch.set_num_threads(2)
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    thresholds = torch.full((40,), 2.0, dtype=torch.float64)
    expected = x.clone()
    soft_threshold_rows_(expected, thresholds)  # the parent's pool
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    child = context.Process(target=_threshold_in_child, args=(x, thresholds, expected, done))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's pool")
    assert child.exitcode == 0 and done.get(timeout=5) == (True, True)


@st.composite
def float32_entries(draw):
    """Float32 vectors from subnormal to huge, both signs, with zeros and infinities."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n = draw(st.integers(0, 3000))
    exponents = torch.randint(-149, 128, (n,), generator=g).double()
    x = (torch.rand(n, generator=g, dtype=torch.float64) + 1) * torch.pow(2.0, exponents) / 2
    x = torch.where(torch.rand(n, generator=g) < 0.5, -x, x).float()  # beyond float32's range: inf
    x[torch.rand(n, generator=g) < 0.05] = 0.0
    return x


@given(float32_entries(), st.sampled_from(list(RECORD_LIMITS)), st.floats(0.0, 1.0))
def test_a_recorded_decay_is_torchs_product_and_its_record_undoes_it_bit_for_bit(x, dtype, where):
    """The decay by :math:`c` is torch's float32 product by the Python number, bit for bit, at any
    :math:`1 - c` up to the record type's limit (the limit itself included), every step count fits the
    record, and the record gives back every bit pattern (zeros' signs and infinities included)."""
    factor = 1 - where * RECORD_LIMITS[dtype]
    decayed, record = x.clone(), torch.empty(x.shape, dtype=dtype)
    assert scale_recording_(decayed, factor, record)
    assert torch.equal(decayed.view(torch.int32), (x * factor).view(torch.int32))
    restore_(decayed, record)
    assert torch.equal(decayed.view(torch.int32), x.view(torch.int32))


def test_the_record_type_is_the_narrowest_that_holds_the_steps():
    assert record_dtype(1 - 1e-6) == torch.int8 and record_dtype(1.0) == torch.int8
    assert record_dtype(1 - 1e-4) == torch.int16 and record_dtype(1 - 1e-3) is None
    assert record_dtype(1.5) is None  # a growth is no decay
    with pytest.raises(ValueError, match="outside"):
        scale_recording_(torch.ones(3), 1 - 1e-4, torch.empty(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="x must be float32"):
        scale_recording_(torch.ones(3, dtype=torch.float64), 1.0, torch.empty(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="record has 2 entries"):
        restore_(torch.ones(3), torch.empty(2, dtype=torch.int16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_infinite_rows_propagate_and_zero_rows_stay_zero(dtype):
    """A NaN row stays NaN (as torch's clamp_min and division leave it), not zeroed; an infinite row turns
    NaN (inf / inf), as the torch operations do; a zero row stays zero."""
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 1.0], [0.0, 0.0], [3.0, 4.0]], dtype=dtype)
    y = x.clone()
    soft_threshold_rows_(y, torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=dtype))
    assert y[0].isnan().all() and y[1].isnan().any()
    assert torch.equal(y[2], x[2])
    torch.testing.assert_close(y[3], x[3] * 0.8, rtol=2 * torch.finfo(dtype).eps, atol=0)
    z = x.clone()
    clip_rows_(z, 4, 1.0)
    assert z[0].isnan().all() and torch.equal(z[2], x[2])


def test_bad_inputs_are_refused_naming_the_argument():
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="x must be a contiguous CPU tensor of float32 or float64"):
        soft_threshold_rows_(x.bfloat16(), torch.zeros(4))
    with pytest.raises(ValueError, match=r"x\.contiguous\(\)"):
        soft_threshold_rows_(torch.ones(3, 4).t(), torch.zeros(4))
    with pytest.raises(ValueError, match="thresholds must have the dtype of x"):
        soft_threshold_rows_(x, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not split into 5 rows"):
        soft_threshold_rows_(x, torch.zeros(5))
    with pytest.raises(ValueError, match="radius must be positive"):
        clip_rows_(x, 4, 0.0)
    with pytest.raises(ValueError, match="does not split into columns of 5"):
        column_sums_of_squares(x, torch.zeros(5))
    with pytest.raises(ValueError, match="sums must be a contiguous CPU tensor"):
        column_sums_of_squares(x, torch.zeros(3, 2)[:, 0])
    assert torch.equal(x, torch.ones(4, 3))


def test_autograd_sees_the_in_place_write():
    """The kernels bump the version counter, as torch's in-place operations do: a backward through a
    graph that saved the tensor before the write raises instead of using the new values."""
    w = torch.ones(3, 4, requires_grad=True)
    loss = (w * w).sum()  # saves w for the product's backward
    with torch.no_grad():
        soft_threshold_rows_(w, torch.full((3,), 0.5))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def _prox(penalty, tensors, method="prox", argument=0.3):
    """The kernel serving ``penalty`` run on copies of ``tensors``; returns them and the data it used."""
    kernel = kernel_for(penalty)(penalty)
    slots = [Slot(f"t{i}", t, penalty, kernel) for i, t in enumerate(tensors)]
    data = kernel.prepare(slots, tensors[0].dtype, method)
    copies = [t.clone() for t in tensors]
    getattr(kernel, f"{method}_")(copies, data, argument)
    return copies, data


@pytest.mark.parametrize(
    ("penalty", "method"),
    [
        (GroupLasso(0.4, "rows"), "prox"),
        (MaxNorm(1.0, axis="rows"), "project"),
        (MaxNorm(1.0, axis="cols"), "project"),
    ],
)
def test_the_kernel_serves_row_groups_of_cpu_tensors_and_the_torch_operations_the_rest(penalty, method):
    """Row groups of 2-D and 4-D tensors go to the compiled kernel, a 1-D tensor's one-entry groups and
    column groups to the torch operations; both parts agree with the penalty (the tolerance of
    ``test_torch_kernels``: groups of at most 48 entries, (48 + 8) eps times 2.5, relative to the largest
    magnitude)."""
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=g, dtype=torch.float64) for shape in [(6, 4), (5, 3, 4, 4), (7,)]]
    out, data = _prox(penalty, tensors, method)
    rows_served = [0, 1] if penalty.block_form().axis == 0 else []
    assert data.rows.members == rows_served
    assert data.rows.others == [i for i in range(3) if i not in rows_served]
    tol = 2.5 * 56 * torch.finfo(torch.float64).eps
    for x, y in zip(tensors, out, strict=True):
        if method == "prox":
            expected = penalty.prox(x, 0.3)
        else:
            matrix = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
            expected = penalty.project(matrix, 0.3).reshape(x.shape)
        torch.testing.assert_close(y, expected, rtol=tol, atol=tol * float(x.abs().max()))


@pytest.mark.parametrize(
    ("penalty", "method"), [(GroupLasso(0.4, "rows"), "prox"), (MaxNorm(1.0, axis="rows"), "project")]
)
def test_a_call_the_kernel_cannot_serve_takes_the_torch_operations(penalty, method, monkeypatch):
    """A member that is not contiguous at the call, or a step that ``torch.compile`` traces, runs the
    torch operations on every tensor (the fallback's data), with the same result to the tolerance above."""
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(6, 5, generator=g, dtype=torch.float64)]
    served, data = _prox(penalty, tensors, method)
    assert data.fallback is not None and data.fallback.rows.members == []
    kernel = kernel_for(penalty)(penalty)
    transposed = [tensors[0].t().contiguous().t()]  # the same values, not contiguous
    getattr(kernel, f"{method}_")(transposed, data, 0.3)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced, _ = _prox(penalty, tensors, method)
    tol = 2.5 * 13 * torch.finfo(torch.float64).eps
    for other in (transposed[0], traced[0]):
        torch.testing.assert_close(other, served[0], rtol=tol, atol=tol * float(tensors[0].abs().max()))


@pytest.mark.parametrize("case", ["rows", "cols", "max-norm"])
def test_a_compiled_step_traces_the_torch_operations(case, monkeypatch):
    """``torch.compile(opt.step)`` (dynamo's eager backend) traces the torch operations (the kernels are
    opaque to it): the compiled wrapped step is the compiled plain Adam step followed by the penalty's
    prox (projection) of the weights the rule takes (the weights, ``ndim >= 2``), to the tolerance of
    ``test_torch_kernels`` (groups of at most 27 entries: (27 + 8) eps times 2.5, relative to the largest
    weight). Compiled Adam is the reference because it is not eager Adam bit for bit."""
    penalty = {"rows": GroupLasso(0.3, "rows"), "cols": GroupLasso(0.3, "cols"), "max-norm": MaxNorm(1.0)}[
        case
    ]
    mode, radius = ("constrained", 0.05) if case == "max-norm" else ("proximal", None)

    def refused(*args):
        raise AssertionError("a compiled kernel ran inside a traced step")

    for name in ("soft_threshold_rows_", "clip_rows_", "column_sums_of_squares"):
        monkeypatch.setattr(kernels, name, refused)
    results = []
    for wrapped in (True, False):
        model = conv_net(0)
        adam = torch.optim.Adam(model.parameters(), lr=1e-2)
        if wrapped:
            adam = Regularizer(model, Rule(penalty, mode=mode, radius=radius)).wrap(adam)
        x, y = conv_batches(1)[0]
        ((model(x) - y) ** 2).mean().backward()
        torch.compile(adam.step, backend="eager")()
        results.append([p.detach().clone() for p in model.parameters()])
    tol = 2.5 * 35 * torch.finfo(torch.float64).eps
    for traced, plain in zip(*results, strict=True):
        expected = plain
        if plain.ndim >= 2 and radius is None:
            expected = penalty.prox(plain, 1e-2)
        elif plain.ndim >= 2:
            expected = penalty.project(plain.reshape(plain.shape[0], -1), radius).reshape(plain.shape)
        assert plain.ndim < 2 or not torch.equal(expected, plain)
        torch.testing.assert_close(traced, expected, rtol=0, atol=tol * float(plain.abs().max()))
