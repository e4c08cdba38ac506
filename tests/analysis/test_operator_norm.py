"""Operator norms of Linear and Conv layers: certified bound, power iteration and exact value.

References are independent of normpen's operator code: ``torch.linalg.matrix_norm(ord=2)``
for Linear, and the SVD of the dense matrix of the layer's own forward built by
autograd for convolutions.
"""

import math

import pytest
import torch
from analysis_helpers import dense_norm, dense_operator
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from normpen.analysis.operator_norm import (
    LayerOperator,
    PowerIteration,
    gram_iteration_bound,
    layer_input_shapes,
    operator_norm_bound,
    operator_norm_estimate,
    operator_norm_exact,
)


def _linear(out_features, in_features, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features).to(dtype)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (3, 7), (20, 20)])
def test_linear_bound_estimate_and_exact_against_matrix_norm(shape):
    layer = _linear(*shape, seed=sum(shape))
    true = float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
    bound = operator_norm_bound(layer, n_iter=10).item()
    rank = min(shape)
    assert true <= bound <= true * rank ** (2.0**-11) * (1 + 1e-12)  # Gram iteration's theorem, 10 steps
    # two backward-stable float64 SVDs of the same matrix: a few eps relative (measured 0)
    assert float(operator_norm_exact(layer)) == pytest.approx(true, rel=1e-13)
    estimate = float(operator_norm_estimate(layer, n_iter=300))
    assert estimate <= true * (1 + 1e-12)  # a Rayleigh quotient: below, up to rounding
    # 300 power steps: the error (s2/s1)^600 is below rounding for these seeded draws (measured 2e-16)
    assert estimate == pytest.approx(true, rel=1e-8)


def test_gram_bound_tightens_with_iterations_and_matches_rank_one_exactly():
    torch.manual_seed(0)
    matrix = torch.randn(6, 4, dtype=torch.float64)
    true = float(torch.linalg.matrix_norm(matrix, ord=2))
    bounds = [float(gram_iteration_bound(matrix, n_iter=t)) for t in range(8)]
    # step 0 is the Frobenius norm: two float64 sums of 24 squares, ~24 eps apart at worst (~5e-15)
    assert bounds[0] == pytest.approx(float(torch.linalg.matrix_norm(matrix)), rel=1e-12)
    assert all(b >= true for b in bounds)
    assert all(later <= earlier for earlier, later in zip(bounds, bounds[1:], strict=False))
    rank_one = torch.outer(torch.arange(1.0, 4.0, dtype=torch.float64), torch.ones(5, dtype=torch.float64))
    # a rank-one Gram iteration is exact in theory; 6 float64 squarings and rescalings of a 3x5 matrix
    # round by ~6 * 15 eps ~ 2e-14
    assert float(gram_iteration_bound(rank_one, 6)) == pytest.approx(math.sqrt(14 * 5), rel=1e-12)


def test_gram_bound_of_zero_and_huge_and_tiny_matrices():
    zero = torch.zeros(3, 4, dtype=torch.float64)
    assert float(gram_iteration_bound(zero)) == 0.0
    torch.manual_seed(1)
    matrix = torch.randn(4, 4, dtype=torch.float64)
    true = float(torch.linalg.matrix_norm(matrix, ord=2))
    for scale in (1e-150, 1e150):
        bound = float(gram_iteration_bound(matrix * scale, n_iter=12))
        assert math.isfinite(bound) and bound >= true * scale
        # Gram iteration's theorem after 12 steps: at most rank**(2**-13) = 1.00017 times the norm; the
        # (1 + 1e-12) is its float64 rounding allowance (12 rescaled 4x4 products, ~12 * 4 eps ~ 1e-14)
        assert bound <= true * scale * 4 ** (2.0**-13) * (1 + 1e-12)


CONV_CASES = [
    # (conv, input shape)
    (nn.Conv1d(2, 3, 3), (2, 9)),
    (nn.Conv1d(2, 4, 3, stride=2, padding=1), (2, 9)),
    (nn.Conv1d(4, 2, 2, dilation=3, padding=2, groups=2), (4, 10)),
    (nn.Conv1d(2, 2, 4, padding="same"), (2, 7)),
    (nn.Conv1d(2, 3, 3, padding=2, padding_mode="circular"), (2, 8)),
    (nn.Conv2d(2, 3, 3, padding=1), (2, 6, 5)),
    (nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0)), (3, 7, 6)),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4), (4, 6, 6)),
    (nn.Conv2d(2, 4, 2, stride=2, groups=2), (2, 6, 6)),
    (nn.Conv2d(2, 2, 3, padding="same", padding_mode="reflect"), (2, 5, 6)),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate", stride=2), (2, 7, 7)),
    (nn.Conv2d(1, 2, 5, padding="valid"), (1, 5, 5)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    ("conv", "shape"), CONV_CASES, ids=lambda c: repr(c) if isinstance(c, nn.Module) else None
)
def test_conv_against_dense_operator_matrix(conv, shape):
    torch.manual_seed(3)
    conv.reset_parameters()  # CONV_CASES are built at import, from whatever the global RNG held then
    conv = conv.double()
    true = dense_norm(conv, shape)
    # two float64 SVDs of the same (at most 100x150) operator, backward stable: ~100 eps (measured 0)
    assert float(operator_norm_exact(conv, shape)) == pytest.approx(true, rel=1e-12)
    assert operator_norm_bound(conv, shape).item() >= true
    estimate = float(operator_norm_estimate(conv, shape, n_iter=300))
    assert estimate <= true * (1 + 1e-12)  # a Rayleigh quotient: below, up to float64 rounding
    # 300 power steps: the error depends on the gap sigma_2 / sigma_1 of the draw, measured at most 6.0e-3
    # over the cases and 21 weight seeds (8.4e-4 for seed 3; deterministic up to ~1e-15 rounding)
    assert estimate == pytest.approx(true, rel=1e-2)
    assert LayerOperator(conv, shape).output_shape == tuple(
        conv(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:]
    )


def test_conv_operator_is_not_the_reshaped_kernel():
    """A 1x1 conv on an n-point signal is W kron I (norm sigma(W)); a 3-tap averaging kernel is not
    its reshaped 1x3 matrix (norm sqrt(3)/3 vs the operator's near 1)."""
    conv = nn.Conv1d(3, 2, 1, bias=False).double()
    matrix = conv.weight.detach()[:, :, 0]
    bound = operator_norm_bound(conv, (3, 11), n_iter=12).item()
    # per frequency the circular 1x1 conv is W itself (2x3, rank 2): Gram's slack 2**(2**-13), < 1e-4
    assert bound == pytest.approx(float(torch.linalg.matrix_norm(matrix, ord=2)), rel=1e-4)
    smooth = nn.Conv1d(1, 1, 3, padding=1, bias=False).double()
    with torch.no_grad():
        smooth.weight.fill_(1.0 / 3.0)
    reshaped = float(torch.linalg.matrix_norm(smooth.weight.detach().reshape(1, -1), ord=2))
    operator = dense_norm(smooth, (1, 40))
    # float64 SVDs of a 1x3 and a 40x40 matrix against closed forms: ~40 eps at most
    assert reshaped == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    # the 40-point tridiagonal Toeplitz (1, 1, 1)/3 has eigenvalues (1 + 2 cos(k pi / 41)) / 3, k = 1..40
    assert operator == pytest.approx((1 + 2 * math.cos(math.pi / 41)) / 3, rel=1e-13)
    # the bound is the norm of the circular convolution, the kernel's DFT at frequency 0: exactly 1, plus
    # the Gram iteration's rounding allowance (float64, ~1e-14)
    assert operator_norm_bound(smooth, (1, 40)).item() == pytest.approx(1.0, rel=1e-12)


@st.composite
def conv_layers(draw):
    dims = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2]))
    in_ch = groups * draw(st.integers(1, 2))
    out_ch = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(draw(st.integers(max(r, p + 1, 2), 7)) for r, p in zip(reach, padding, strict=True))
    conv_type = nn.Conv1d if dims == 1 else nn.Conv2d
    conv = conv_type(in_ch, out_ch, kernel, stride, padding, dilation, groups, padding_mode=mode)
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    with torch.no_grad():
        conv.weight.normal_(0.0, draw(st.sampled_from([1e-3, 1.0, 1e3])))
    return conv.double(), (in_ch, *size)


@given(conv_layers())
def test_certified_bound_never_below_the_true_norm(case):
    conv, shape = case
    true = dense_norm(conv, shape)
    assert operator_norm_bound(conv, shape, n_iter=6).item() >= true
    assert operator_norm_bound(conv, shape, n_iter=14).item() >= true


@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_linear_bound_never_below_the_true_norm(rows, cols, seed, dtype):
    layer = _linear(rows, cols, seed, dtype)
    true = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    assert operator_norm_bound(layer, n_iter=14).item() >= true


def test_power_iteration_is_a_lower_bound_at_every_step_and_improves():
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    true = dense_norm(conv, (2, 5, 5))
    it = PowerIteration(conv, (2, 5, 5), seed=1)
    estimates = [float(it.step(1)) for _ in range(300)]
    # Rayleigh quotients: below the norm and nondecreasing in exact arithmetic; 1e-12 allows the float64
    # rounding of a 50x75 operator's products (~75 eps ~ 2e-14)
    assert all(e <= true * (1 + 1e-12) for e in estimates)
    assert all(b >= a * (1 - 1e-12) for a, b in zip(estimates, estimates[1:], strict=False))
    # this seeded draw has sigma_2 / sigma_1 = 1.4320 / 1.4326: after 300 steps the estimate is 3.5e-4
    # below (measured; deterministic up to ~1e-15 rounding)
    assert estimates[-1] == pytest.approx(true, rel=1e-3)


def test_linear_sigma_gradient_is_u_v_transpose_and_that_of_the_spectral_norm():
    layer = _linear(4, 6, seed=7)
    it = PowerIteration(layer)
    it.step(500)
    sigma = it.sigma()
    (grad,) = torch.autograd.grad(sigma, layer.weight)
    # u^T W v differentiated by autograd is the outer product of the same two float64 vectors: exact
    torch.testing.assert_close(grad, torch.outer(it.u[0], it.v[0]), rtol=0, atol=0)
    weight = layer.weight.detach().clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(torch.linalg.matrix_norm(weight, ord=2), weight)
    # sigma_2 / sigma_1 = 0.72: 500 steps leave (0.72)^500 ~ 1e-71, so only rounding remains: singular
    # vectors from an SVD move by ~eps / (sigma_1 - sigma_2) = 1e-15 (measured 7e-16)
    torch.testing.assert_close(grad, reference, rtol=0, atol=1e-12)
    # a converged Rayleigh quotient against an SVD: a few float64 eps
    assert sigma.item() == pytest.approx(float(torch.linalg.matrix_norm(weight.detach(), ord=2)), rel=1e-12)


def test_conv_sigma_gradient_matches_the_gradient_of_the_dense_operator_norm():
    torch.manual_seed(11)
    conv = nn.Conv2d(2, 2, 3, stride=2, padding=1).double()
    shape = (2, 6, 6)
    it = PowerIteration(conv, shape)
    it.step(800)
    (grad,) = torch.autograd.grad(it.sigma(), conv.weight)
    weight = conv.weight.detach().clone().requires_grad_(True)
    basis = torch.eye(72, dtype=torch.float64).reshape(72, *shape)
    columns = nn.functional.conv2d(basis, weight, None, 2, 1).reshape(72, -1)
    (reference,) = torch.autograd.grad(torch.linalg.matrix_norm(columns, ord=2), weight)
    # sigma_2 / sigma_1 = 0.6785 / 0.6866 on this seeded draw: 800 steps leave a convergence error
    # (measured 1.7e-10 in the gradient's largest entry, deterministic up to float64 rounding)
    torch.testing.assert_close(grad, reference, rtol=0, atol=1e-9)


def test_bound_is_differentiable_and_float32_layers_get_a_float64_bound():
    torch.manual_seed(2)
    conv = nn.Conv1d(2, 3, 3, padding=1)
    bound = operator_norm_bound(conv, (2, 8))
    assert bound.dtype == torch.float64
    bound.backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    assert bound.item() >= dense_norm(conv, (2, 8))


def test_zero_weights_give_zero_and_power_iteration_recovers_after():
    torch.manual_seed(2)
    conv = nn.Conv1d(1, 2, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.zero_()
    assert operator_norm_bound(conv, (1, 6)).item() == 0.0
    it = PowerIteration(conv, (1, 6))
    assert float(it.step(3)) == 0.0
    # a normalised float64 6-vector: its norm is 1 up to ~6 eps
    assert torch.isfinite(it.u).all()
    assert float(torch.linalg.vector_norm(it.v)) == pytest.approx(1.0, rel=1e-14)
    with torch.no_grad():
        conv.weight.normal_()
    # seeded: 400 steps converge to rounding on this draw (measured 2e-16; unseeded draws with a small gap
    # sigma_2 / sigma_1 stop up to 6e-4 away, seed 0)
    assert float(it.step(400)) == pytest.approx(dense_norm(conv, (1, 6)), rel=1e-12)


def test_state_dict_round_trip_and_shape_check():
    layer = _linear(3, 5, seed=0)
    it = PowerIteration(layer)
    it.step(5)
    saved = it.state_dict()
    other = PowerIteration(layer, seed=9)
    other.load_state_dict(saved)
    torch.testing.assert_close(other.u, it.u)
    torch.testing.assert_close(other.v, it.v)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({"u": torch.zeros(1, 4), "v": saved["v"]})
    torch.testing.assert_close(other.u, it.u)


def test_layer_input_shapes_restores_modes_and_batchnorm_statistics():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Conv2d(2, 2, 2, stride=2),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 4),
    )
    model.train()
    before = model[1].running_mean.clone()
    shapes = layer_input_shapes(model, (1, 6, 6))
    assert shapes == {"0": (1, 6, 6), "3": (2, 6, 6), "5": (18,)}
    assert model.training and all(m.training for m in model)
    torch.testing.assert_close(model[1].running_mean, before)
    assert model[1].num_batches_tracked == 0


def test_clear_errors():
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(TypeError, match="Linear, Conv1d or Conv2d"):
        operator_norm_bound(nn.Conv3d(1, 1, 1), (1, 2, 2, 2))
    with pytest.raises(ValueError, match="input_shape is required"):
        operator_norm_bound(conv)
    with pytest.raises(ValueError, match="in_channels=2"):
        operator_norm_bound(conv, (3, 5, 5))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        operator_norm_bound(conv, (2, 2, 5))
    with pytest.raises(ValueError, match="positive ints"):
        operator_norm_bound(conv, (2, 0, 5))
    with pytest.raises(TypeError, match="tuple of ints"):
        operator_norm_bound(conv, 5)
    with pytest.raises(ValueError, match="in_features=4"):
        operator_norm_bound(nn.Linear(4, 2), (5,))
    with pytest.raises(ValueError, match="n_iter"):
        gram_iteration_bound(torch.eye(2), n_iter=-1)
    with pytest.raises(ValueError, match="operator_norm_bound"):
        operator_norm_exact(nn.Conv2d(1, 1, 3, padding=1), (1, 100, 100))
    shared = nn.Conv1d(1, 1, 3, padding=1)
    with pytest.raises(ValueError, match="different shapes|shapes"):
        layer_input_shapes(_TwoSizes(shared), (1, 8))


class _TwoSizes(nn.Module):
    """Applies one conv to a signal and to its first half."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x).sum() + self.conv(x[..., : x.shape[-1] // 2]).sum()


def test_dense_reference_sees_padding_modes():
    """Sanity of the reference itself: reflect padding duplicates entries, so the operator differs."""
    torch.manual_seed(0)
    zeros = nn.Conv1d(1, 1, 3, padding=1).double()
    reflect = nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect").double()
    with torch.no_grad():
        reflect.weight.copy_(zeros.weight)
    assert not torch.allclose(dense_operator(zeros, (1, 5)), dense_operator(reflect, (1, 5)))
