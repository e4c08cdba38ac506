"""The per-step kernels against the penalties' public API; low precision; no host synchronisation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch_cases import conv_batches, conv_net, mse_step

from normpen._array import group_soft_threshold_scale
from normpen.analysis.spectral_penalty import SpectralConstraint
from normpen.penalties.anchored import Anchored
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.spectral import Spectral
from normpen.torch import Regularizer, Rule, l2_sp
from normpen.torch.kernels import (
    AnchoredKernel,
    AxisGroupKernel,
    Kernel,
    L1Kernel,
    L2Kernel,
    MaxNormKernel,
    Slot,
    group_soft_threshold_scale_,
    kernel_for,
)

#: Agreement of a kernel with the penalty's public method in the same dtype: both compute a group norm of at
#: most 4^3 = 64 entries (worst case 64 eps) and a few more roundings (sqrt, divide, multiply, subtract), so
#: (64 + 8) eps: 1.6e-14 in float64, 8.6e-6 in float32; the tiers below leave a factor 2.5. An error is
#: relative to the largest magnitude involved (x - t x / ||x|| cancels): that is the absolute tolerance.
DTYPES = {torch.float64: 4e-14, torch.float32: 2e-5}


def assert_agree(actual, expected, source):
    """``actual`` is ``expected`` to the dtype's tier of :data:`DTYPES`, relative to the largest magnitude."""
    rtol = DTYPES[source.dtype]
    scale = max(float(source.abs().max()), float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


@st.composite
def tensors(draw, min_dims=1):
    """A list of 1 to 3 tensors of one dtype, 1 to 4 dims, moderate magnitudes (weights, not 1e300)."""
    dtype = draw(st.sampled_from(list(DTYPES)))
    count = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3]))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=min_dims, max_size=4)))
        x = torch.randn(shape, generator=g, dtype=dtype) * scale
        x[torch.rand(shape, generator=g) < 0.2] = 0.0  # exact zeros, and whole zero groups sometimes
        out.append(x)
    return out


def _run(penalty, method, xs, argument):
    """The kernel serving ``penalty`` applied in place to copies of ``xs``."""
    kernel = kernel_for(penalty)(penalty)
    copies = [x.clone() for x in xs]
    slots = [Slot(f"t{i}", x, penalty, kernel) for i, x in enumerate(copies)]
    getattr(kernel, f"{method}_")(copies, kernel.prepare(slots, xs[0].dtype, method), argument)
    return copies


def test_the_registry_picks_the_fast_kernels():
    assert kernel_for(L2(1.0)) is L2Kernel
    assert kernel_for(L1(1.0)) is L1Kernel
    assert kernel_for(GroupLasso(1.0, "cols")) is AxisGroupKernel
    assert kernel_for(GroupLasso(1.0, [[0, 1]])) is Kernel
    assert kernel_for(Anchored(1.0, anchor=torch.zeros(2))) is AnchoredKernel
    assert kernel_for(Nuclear(1.0)) is Kernel
    assert kernel_for(MaxNorm(1.0)) is MaxNormKernel


@given(tensors(), st.sampled_from([0.0, 1e-3, 0.3]), st.sampled_from([0.0, 0.5, 2.0]))
def test_l2_decay_is_one_minus_step_lam_times_x(xs, step, lam):
    out = _run(L2(lam), "decay", xs, step)
    for x, y in zip(xs, out, strict=True):
        assert torch.equal(y, x * (1 - step * lam))  # the same one multiply by the same scalar


@given(tensors(), st.sampled_from([0.0, 1e-3, 0.3]), st.sampled_from([0.0, 0.5, 2.0]))
def test_l1_prox_is_the_penalty_prox_bit_for_bit(xs, step, lam):
    out = _run(L1(lam), "prox", xs, step)
    for x, y in zip(xs, out, strict=True):
        # softshrink's x -+ t and sign(x) (|x| - t) are the same correctly rounded subtraction: bit equal
        assert torch.equal(y, L1(lam).prox(x, step))


@given(tensors(), st.sampled_from([0.0, 1e-3, 0.3]))
def test_l1_prox_with_a_tensor_step_matches_the_penalty(xs, step):
    out = _run(L1(0.5), "prox", xs, torch.tensor(step, dtype=xs[0].dtype))
    for x, y in zip(xs, out, strict=True):
        assert_agree(y, L1(0.5).prox(x, step), x)
        assert not (y[L1(0.5).prox(x, step) == 0] != 0).any()  # the same exact zeros


@given(tensors(), st.sampled_from([1e-3, 0.3]))
def test_weighted_l1_prox_matches_the_penalty(xs, step):
    x = xs[0]
    weights = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights[..., 0] = 0.0  # an unpenalised coordinate
    pen = L1(0.7, weights=weights.numpy())
    (y,) = _run(pen, "prox", [x], step)
    assert_agree(y, pen.prox(x, step), x)


@given(tensors(min_dims=2), st.sampled_from(["rows", "cols"]), st.sampled_from([1e-3, 0.1, 1.0]))
def test_group_prox_matches_the_penalty_and_zeroes_the_same_groups(xs, groups, step):
    pen = GroupLasso(0.4, groups)
    out = _run(pen, "prox", xs, step)
    for x, y in zip(xs, out, strict=True):
        expected = pen.prox(x, step)
        assert_agree(y, expected, x)
        axis = 0 if groups == "rows" else 1
        dims = tuple(d for d in range(x.ndim) if d != axis)
        # both zero a group when ||x|| <= t; a group norm within a rounding of t could split them, which
        # these continuous draws (t a round number, norms random) do not produce
        assert torch.equal((y == 0).all(dim=dims), (expected == 0).all(dim=dims))


@given(st.sampled_from(list(DTYPES)), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1e-3, 1.0]))
def test_the_in_place_group_factor_is_the_array_formula_bit_for_bit(dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    norms = torch.rand(64, generator=g, dtype=dtype) * 2
    norms[::7] = 0.0  # zero groups
    thresholds = torch.rand(64, generator=g, dtype=dtype) * scale  # 0: the identity
    thresholds[::5] = 0.0
    out, denominators = torch.empty_like(norms), torch.empty_like(norms)
    positive = torch.zeros_like(norms, dtype=torch.bool)  # written by the call
    group_soft_threshold_scale_(out, norms, thresholds, positive, denominators, norms.new_ones(()))
    assert torch.equal(out, group_soft_threshold_scale(norms, thresholds))


@given(tensors(min_dims=2), st.sampled_from(["rows", "cols"]), st.sampled_from([1e-3, 0.5, 10.0]))
def test_max_norm_projection_matches_the_penalty_on_the_matrix_view(xs, axis, radius):
    pen = MaxNorm(1.0, axis=axis)
    for method, argument, expected_radius in (("project", radius, radius), ("prox", 0.1, 1.0)):
        out = _run(pen, method, xs, argument)
        for x, y in zip(xs, out, strict=True):
            matrix = x.reshape(x.shape[0], -1)
            expected = pen.project(matrix, expected_radius).reshape(x.shape)
            assert_agree(y, expected, x)
            inside = matrix.norm(dim=1 if axis == "rows" else 0) < expected_radius * 0.999
            kept = y.reshape(matrix.shape)
            assert torch.equal(kept[inside] if axis == "rows" else kept[:, inside],
                               matrix[inside] if axis == "rows" else matrix[:, inside])  # fmt: skip


@given(tensors(), st.sampled_from([0.0, 0.7]))
def test_l2_value_and_its_gradient_match_the_penalty(xs, lam):
    params = [x.clone().requires_grad_() for x in xs]
    kernel = L2Kernel(L2(lam))
    value = kernel.value(params, [Slot("t", p, L2(lam), kernel) for p in params])
    value.backward()
    expected = sum(L2(lam).value(x) for x in xs)
    # a sum of squares of up to 3 * 256 entries: (768 + 4) eps relative, 1.7e-13 and 9.2e-5, not the tier
    rtol = 800 * torch.finfo(xs[0].dtype).eps
    expected = torch.as_tensor(expected, dtype=xs[0].dtype)
    torch.testing.assert_close(value.detach(), expected, rtol=rtol, atol=0)
    for x, p in zip(xs, params, strict=True):
        assert torch.equal(p.grad, lam * x)  # autograd of (lam / 2) x^2 scales by 1/2 and 2: exact


@given(tensors(min_dims=2), st.sampled_from(["rows", "cols"]))
def test_group_prox_with_given_weights_matches_the_penalty(xs, groups):
    x = xs[0]
    axis = 0 if groups == "rows" else 1
    weights = torch.rand(x.shape[axis], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weights[0] = 0.0  # an unpenalised group
    pen = GroupLasso(0.4, groups, weights=weights.numpy())
    (y,) = _run(pen, "prox", [x], 0.3)
    assert_agree(y, pen.prox(x, 0.3), x)


def test_axis_weights_are_the_given_weights_or_the_square_root_of_the_group_size():
    assert GroupLasso(1.0, "rows").axis == 0 and GroupLasso(1.0, "cols").axis == 1
    assert GroupLasso(1.0, [[0, 1]]).axis is None
    assert GroupLasso(1.0, "cols").axis_weights((3, 2, 4)).tolist() == [12**0.5, 12**0.5]
    assert GroupLasso(1.0, "rows", weights=[1.0, 2.0]).axis_weights((2, 5)).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="index groups have no group axis"):
        GroupLasso(1.0, [[0, 1]]).axis_weights((2,))
    with pytest.raises(ValueError, match="has no axis 1"):
        GroupLasso(1.0, "cols").axis_weights((4,))


def test_group_prox_of_a_vector_with_row_groups_is_weighted_soft_thresholding():
    x = torch.tensor([3.0, -0.05, 0.0, -2.0], dtype=torch.float64)
    (y,) = _run(GroupLasso(0.5, "rows"), "prox", [x], 0.2)
    # one-entry groups: x (1 - t / |x|) in float64 rounds to these literals (IEEE ops, no reduction)
    assert torch.equal(y, torch.tensor([2.9, 0.0, 0.0, -1.9], dtype=torch.float64))


@given(tensors(), st.sampled_from([1e-3, 0.3]), st.booleans())
def test_anchored_decay_pulls_toward_each_anchor(xs, step, with_fisher):
    g = torch.Generator().manual_seed(1)
    anchors = [torch.randn(x.shape, generator=g, dtype=x.dtype) for x in xs]
    fishers = [torch.rand(x.shape, generator=g, dtype=x.dtype) if with_fisher else None for x in xs]
    penalties = [Anchored(0.8, anchor=a, fisher=f) for a, f in zip(anchors, fishers, strict=True)]
    kernel = AnchoredKernel(penalties[0])
    copies = [x.clone() for x in xs]
    slots = [Slot(str(i), c, p, kernel) for i, (c, p) in enumerate(zip(copies, penalties, strict=True))]
    kernel.decay_(copies, kernel.prepare(slots, xs[0].dtype, "decay"), step)
    for x, y, p in zip(xs, copies, penalties, strict=True):
        assert_agree(y, x - step * p.grad(x), x)


def test_a_zero_weight_gets_a_zero_gradient_not_nan_in_coupled_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()  # zero-initialised head, common in practice
    reg = Regularizer(
        model,
        [
            Rule(L2(0.1), mode="coupled"),
            Rule(GroupLasso(0.1, "rows"), mode="lagrangian", budget=1.0, dual_lr=0.1, multiplier_init=1.0),
        ],
    )
    reg.penalty().backward()
    assert torch.equal(model[1].weight.grad, torch.zeros(2, 4))
    assert torch.isfinite(model[0].weight.grad).all()


def test_matrix_penalties_see_a_conv_kernel_as_out_by_rest():
    model = conv_net()
    reg = Regularizer(model, Rule(Spectral(0.5), mode="coupled", select="conv.weight"))
    w = model.conv.weight.detach()
    expected = Spectral(0.5).value(w.reshape(3, -1))
    # float64 SVDs of the same 3x18 matrix by torch and numpy: backward stable, ~18 eps = 4e-15 apart
    torch.testing.assert_close(reg.penalty().detach(), expected, rtol=1e-13, atol=0)


class WithIdle(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.used = nn.Linear(4, 1).to(dtype)
        self.idle = nn.Linear(4, 8, bias=False).to(dtype)

    def forward(self, x):
        return self.used(x) + 0 * self.idle(x).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_decay_below_epsilon_accumulates_instead_of_rounding_away(dtype):
    lr, lam, steps = 1e-3, 0.1, 400  # lr*lam = 1e-4, far below half an ulp of bf16 (2^-9) and fp16 (2^-12)
    torch.manual_seed(0)
    model = WithIdle(dtype)
    start = model.idle.weight.detach().float().clone()
    naive = model.idle.weight.detach().clone()
    reg = Regularizer(model, Rule(L2(lam), mode="decoupled", select="idle.*"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=lr))
    x, y = torch.randn(8, 4).to(dtype), torch.randn(8, 1).to(dtype)
    for _ in range(steps):
        mse_step(model, sgd, (x, y))
        naive.mul_(1 - lr * lam)  # what AdamW and a hand-written decay do in the parameter's dtype
    expected = start * (1 - lr * lam) ** steps  # 0.96: a 4% shrink
    assert torch.equal(naive.float(), start)  # the plain way rounds the decay away entirely
    residual = reg.state_dict()["residuals"]["idle.weight"]
    # the float32 copy is multiplied 400 times by fl32(0.9999), 1.66e-8 relative below the double factor
    # of expected: a systematic 6.6e-6, plus 400 correctly rounded multiplies (random walk ~1.2e-6)
    torch.testing.assert_close(model.idle.weight.float() + residual, expected, rtol=1e-5, atol=1e-7)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(model.idle.weight.float(), expected, rtol=ulp, atol=0)


class SyncDetector(TorchDispatchMode):
    """Fails on every operation that copies a tensor's value to the host (what .item() or bool() do)."""

    SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.SYNCING:
            raise AssertionError(f"host synchronisation: {func}")
        return func(*args, **(kwargs or {}))


def test_the_sync_detector_catches_item_and_bool():
    t = torch.tensor([1.0, 2.0])
    with pytest.raises(AssertionError, match="host synchronisation"), SyncDetector():
        t.sum().item()
    with pytest.raises(AssertionError, match="host synchronisation"), SyncDetector():
        bool(t.sum() > 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_no_mode_synchronises_with_the_host_during_a_step(dtype):
    model = conv_net(dtype=dtype)
    rules = [
        Rule(L2(0.1), mode="decoupled", select=["conv.*", "head.*"]),
        l2_sp(model, 0.05, mode="decoupled", select="fc.weight"),
        Rule(L2(0.01), mode="coupled"),
        Rule(L1(0.01), mode="proximal", select="conv.weight"),
        Rule(GroupLasso(0.01, "rows"), mode="proximal", select="fc.weight"),
        Rule(Nuclear(0.01), mode="proximal", select="head.weight"),
        Rule(L2(1.0), mode="constrained", radius=2.0, select="fc.weight"),
        Rule(MaxNorm(1.0), mode="constrained", radius=0.5, select="conv.weight"),
        Rule(GroupLasso(1.0, "cols"), mode="lagrangian", budget=1.0, dual_lr=0.1),
        Rule(SpectralConstraint(model, 1.0, (2, 5, 5), names=["conv", "head"]), mode="constrained"),
    ]
    reg = Regularizer(model, rules)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.05))
    batches = conv_batches(3, dtype=dtype)
    mse_step(model, sgd, batches[0], reg.penalty)  # first step: one-time validation may read values
    with SyncDetector():
        for batch in batches[1:]:
            mse_step(model, sgd, batch, reg.penalty)
    assert float(rules[-2].multiplier) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for torch's sync debug mode")
def test_no_synchronisation_under_cuda_sync_debug_mode():
    model = conv_net().cuda()
    reg = Regularizer(model, [Rule(L2(0.1), mode="decoupled"), Rule(L1(0.01), mode="proximal")])
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2, foreach=True, capturable=True))
    batches = [(x.cuda(), y.cuda()) for x, y in conv_batches(3)]
    mse_step(model, adam, batches[0], reg.penalty)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            mse_step(model, adam, batch, reg.penalty)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_bucket_skips_tensors_without_gradient_and_keeps_the_others_exact():
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)).double()
    pen = GroupLasso(0.5, "rows")
    reg = Regularizer(model, Rule(pen, mode="proximal"))
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.2))
    for skipped in (0, 1, 0):  # each subset of the bucket is built once and reused
        first, second = (p.detach().clone() for p in model.parameters())
        model[1 - skipped].weight.grad = torch.zeros_like(model[1 - skipped].weight)
        model[skipped].weight.grad = None
        sgd.step()
        kept = (first, second)[skipped]
        assert torch.equal(model[skipped].weight.detach(), kept)  # untouched, as AdamW leaves it
        moved = (first, second)[1 - skipped]
        # the bucket's foreach row norms against the penalty's per-tensor ones, float64 rows of 4-5 entries:
        # a few eps; 1e-12 is the float64 tier of DTYPES with room
        torch.testing.assert_close(
            model[1 - skipped].weight.detach(), pen.prox(moved, 0.2), rtol=1e-12, atol=0
        )


def test_the_group_thresholds_follow_a_changed_step_and_a_tensor_step_changed_in_place():
    # the thresholds are kept while the step is the same number; each call must act as a fresh one
    pen = GroupLasso(0.5, "rows")
    kernel = kernel_for(pen)(pen)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    slots = [Slot("t0", x.clone(), pen, kernel)]
    data = kernel.prepare(slots, x.dtype, "prox")
    tensor_step = torch.tensor(0.0)
    for value, as_tensor in (
        (0.1, False),
        (0.1, False),
        (0.3, False),
        (0.2, True),
        (0.4, True),
        (0.4, False),
    ):
        step = tensor_step.fill_(value) if as_tensor else value  # the tensor changed in place
        y = [slots[0].local.clone()]
        kernel.prox_(y, data, step)
        fresh = _run(pen, "prox", [slots[0].local], value)[0]
        assert torch.equal(y[0], fresh)  # the same operations on the same numbers
