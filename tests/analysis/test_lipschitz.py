"""Lipschitz bounds of networks: per-layer constants against closed forms and dense operators, and
network bounds against the largest slope an optimiser can find."""

import math

import pytest
import torch
from analysis_helpers import dense_norm
from torch import nn

from normpen.analysis.lipschitz import GELU_LIPSCHITZ, Residual, lipschitz_bound
from normpen.analysis.operator_norm import operator_norm_bound


def _largest_slope(f, shape, seed, restarts=4, steps=150):
    """Largest ||f(x) - f(y)|| / ||x - y|| an optimiser finds, and the largest Jacobian norm at random points.

    Pairs (x, y) are optimised with Adam from random starts (a difference
    quotient has a gradient even where the Jacobian of a ReLU net is piecewise
    constant); Jacobian spectral norms are evaluated at 64 random points.
    """
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    for point in torch.randn((64, *shape), generator=gen, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda z: f(z[None])[0], point)
        best = max(best, float(torch.linalg.matrix_norm(jac.reshape(-1, point.numel()), ord=2)))
    for _ in range(restarts):
        x = torch.randn((8, *shape), generator=gen, dtype=torch.float64).requires_grad_(True)
        d = (0.1 * torch.randn((8, *shape), generator=gen, dtype=torch.float64)).requires_grad_(True)
        opt = torch.optim.Adam([x, d], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            ratio = (f(x + d) - f(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
            (-ratio.sum()).backward()
            opt.step()
        best = max(best, ratio.max().item())
    return best


def _randomise_batchnorm(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=gen))


NETWORKS = {
    "mlp": (
        lambda: nn.Sequential(
            nn.Linear(6, 16),
            nn.GELU(),
            nn.Linear(16, 16),
            nn.Tanh(),
            nn.Linear(16, 16),
            nn.LeakyReLU(0.2),
            nn.Linear(16, 3),
        ),
        (6,),
    ),
    "cnn": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.AvgPool2d(2),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Linear(4, 3),
        ),
        (2, 7, 7),
    ),
    "residual": (
        lambda: nn.Sequential(
            nn.Linear(8, 8),
            Residual(nn.Sequential(nn.ReLU(), nn.Linear(8, 8))),
            Residual(
                nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 4)), nn.Linear(8, 4)
            ),
            nn.Sigmoid(),
            nn.Linear(4, 2),
        ),
        (8,),
    ),
    "conv1d_residual": (
        lambda: nn.Sequential(
            Residual(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 3, 3, padding=1))),
            nn.BatchNorm1d(3),
            nn.AdaptiveAvgPool1d(2),
            nn.Flatten(),
            nn.Linear(6, 2),
        ),
        (3, 9),
    ),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_bound_is_above_the_largest_slope_found(name):
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    model = build().double()
    _randomise_batchnorm(model, seed=1)
    model.eval()
    certified = lipschitz_bound(model, shape)
    exact = lipschitz_bound(model, shape, exact=True)
    found = _largest_slope(model, shape, seed=2)
    assert found <= exact.bound <= certified.bound
    # the same float64 product of a handful of factors, each multiply rounding by eps/2 = 1.1e-16
    assert certified.bound == pytest.approx(math.prod(f.factor for f in certified.factors), rel=1e-15)
    assert float(certified) == certified.bound
    assert found > 0.0


def test_single_linear_layer_bound_is_tight():
    torch.manual_seed(3)
    layer = nn.Linear(5, 4).double()
    true = float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
    result = lipschitz_bound(layer, (5,))
    # Gram iteration's theorem (10 steps, rank 4); 1e-12 is its float64 rounding allowance (~10 * 5 eps)
    assert true <= result.bound <= true * 4 ** (2.0**-11) * (1 + 1e-12)
    # a linear map's slope is sigma_max along its top singular vector, which the search converges to: only
    # float64 rounding remains (measured 0)
    assert _largest_slope(layer, (5,), seed=0, restarts=1) == pytest.approx(true, rel=1e-12)
    (factor,) = result.factors
    assert (factor.name, factor.kind, factor.input_shape, factor.output_shape) == ("", "Linear", (5,), (4,))


def test_residual_factor_is_one_plus_the_body_or_the_shortcut_sum():
    torch.manual_seed(4)
    body, shortcut = nn.Linear(4, 4).double(), nn.Linear(4, 4).double()
    body_norm = operator_norm_bound(body).item()
    (factor,) = lipschitz_bound(Residual(body), (4,)).factors
    # one float64 addition of the same numbers: eps/2
    assert factor.kind == "Residual" and factor.factor == pytest.approx(1 + body_norm, rel=1e-15)
    with_shortcut = lipschitz_bound(Residual(body, shortcut), (4,)).bound
    assert with_shortcut == pytest.approx(body_norm + operator_norm_bound(shortcut).item(), rel=1e-15)


def test_factors_name_every_layer_of_nested_sequentials():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), Residual(nn.Tanh()))
    names = [(f.name, f.kind) for f in lipschitz_bound(model, (3,)).factors]
    assert names == [("0", "Linear"), ("1.0", "ReLU"), ("1.1", "Linear"), ("2", "Residual")]


def test_gelu_constants_are_the_largest_slopes():
    x = torch.linspace(-8, 8, 400_001, dtype=torch.float64, requires_grad=True)
    for approximate in ("none", "tanh"):
        (slope,) = torch.autograd.grad(nn.functional.gelu(x, approximate=approximate).sum(), x)
        largest = float(slope.abs().max())
        constant = lipschitz_bound(nn.GELU(approximate=approximate), (1,)).bound
        # grid step h = 4e-5: misses the slope's peak by at most |slope''| h^2 / 8 < 1e-9 (|slope''| < 2)
        assert largest <= constant <= largest * (1 + 1e-9)
    closed_form = 0.5 * (1 + math.erf(1)) + math.sqrt(2) * math.exp(-1) / math.sqrt(2 * math.pi)
    assert GELU_LIPSCHITZ == pytest.approx(closed_form, rel=1e-15)  # a few float64 operations
    assert GELU_LIPSCHITZ == pytest.approx(1.1289, abs=1e-4)  # the 4 decimals quoted in the docs


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.ReLU(), 1.0),
        (nn.Tanh(), 1.0),
        (nn.Sigmoid(), 0.25),
        (nn.LeakyReLU(0.1), 1.0),
        (nn.LeakyReLU(2.5), 2.5),
        (nn.LeakyReLU(-3.0), 3.0),
        (nn.Identity(), 1.0),
        (nn.Flatten(), 1.0),
        (nn.Dropout(0.5).eval(), 1.0),
    ],
    ids=repr,
)
def test_elementwise_constants(module, expected):
    assert lipschitz_bound(module, (2, 3)).bound == expected


def test_batchnorm_eval_is_its_largest_diagonal_scale():
    bn = nn.BatchNorm1d(3).double()
    _randomise_batchnorm(bn, seed=5)
    bn.eval()
    expected = float((bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).max())
    # the same float64 add, then rsqrt and multiply against sqrt and divide: ~3 roundings of eps / 2 each
    assert lipschitz_bound(bn, (3,)).bound == pytest.approx(expected, rel=1e-15)
    # a float64 SVD of the 3x3 diagonal operator (backward stable, a few eps) against the same scale
    assert lipschitz_bound(bn, (3,)).bound == pytest.approx(dense_norm(bn, (3,)), rel=1e-12)


@pytest.mark.parametrize(
    ("pool", "shape", "expected"),
    [
        (nn.MaxPool2d(2), (1, 6, 6), 1.0),
        (nn.MaxPool2d(3, stride=1), (1, 6, 6), 3.0),
        (nn.MaxPool1d(3, stride=2), (1, 9), math.sqrt(2)),
        (nn.MaxPool1d(2, stride=1, dilation=2), (1, 8), math.sqrt(2)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 6, 5), 2.0),
        (nn.AdaptiveMaxPool1d(3), (1, 7), math.sqrt(2)),
    ],
    ids=repr,
)
def test_max_pool_constant_is_attained(pool, shape, expected):
    bound = lipschitz_bound(pool, shape).bound
    # the square root of a window count (an integer): one correctly rounded float64 sqrt, eps / 2
    assert bound == pytest.approx(expected, rel=1e-15)
    # a bump at the most shared entry moves every window holding it by its height
    best = 0.0
    for index in range(math.prod(shape)):
        bump = torch.zeros(math.prod(shape), dtype=torch.float64)
        bump[index] = 1.0
        best = max(best, float(pool(bump.reshape(1, *shape)).norm()))
    assert best == pytest.approx(bound, rel=1e-12)  # the norm of a few ones: float64 rounding


@pytest.mark.parametrize(
    ("pool", "shape"),
    [
        (nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 6)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 6)),
        (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 7, 6)),
        (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 8, 6)),
        (nn.AvgPool2d(2, stride=1, divisor_override=3), (1, 5, 6)),
        (nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True), (2, 11)),
        (nn.AdaptiveAvgPool2d((3, 4)), (1, 7, 9)),
        (nn.AdaptiveAvgPool1d(1), (2, 7)),
    ],
    ids=repr,
)
def test_avg_pool_constant_is_its_operator_norm(pool, shape):
    true = dense_norm(pool, shape)
    bound = lipschitz_bound(pool, shape).bound
    # average pooling's bound is its operator norm exactly, plus float64 rounding allowances (measured at
    # most 3.3e-14 above the dense SVD over these cases)
    assert true <= bound <= true * (1 + 1e-12)


class _Custom(nn.Module):
    def forward(self, x):
        return 2 * x


def test_unsupported_modules_are_named_errors():
    with pytest.raises(TypeError, match=r"2 \(Softmax\)"):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Softmax(dim=1)), (3,))
    with pytest.raises(TypeError, match=r"1\.body\.0 \(_Custom\).*constants="):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3), Residual(nn.Sequential(_Custom()))), (3,))
    assert lipschitz_bound(nn.Sequential(_Custom()), (3,), constants={_Custom: 2.0}).bound == 2.0
    with pytest.raises(TypeError, match="constants"):
        lipschitz_bound(nn.ReLU(), (3,), constants=[2.0])
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3), nn.Dropout()), (3,))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        lipschitz_bound(nn.Sequential(nn.BatchNorm1d(3)), (3,))
    with pytest.raises(ValueError, match="positive ints"):
        lipschitz_bound(nn.ReLU(), (3, -1))
    with pytest.raises(ValueError, match="return_indices=False"):
        lipschitz_bound(nn.MaxPool1d(2, return_indices=True), (1, 4))


def test_wrong_input_shape_names_the_failing_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"2 \(Linear\) fails on inputs of shape \(4,\)"):
        lipschitz_bound(model, (3,))


def test_training_mode_batchnorm_is_refused_before_any_statistic_moves():
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(nn.Linear(3, 3), Residual(nn.Sequential(nn.Linear(3, 3), bn)))
    with pytest.raises(ValueError, match=r"1\.body\.1 \(BatchNorm1d\)"):
        lipschitz_bound(model, (3,))
    assert bn.num_batches_tracked == 0
    factors = lipschitz_bound(Residual(nn.ReLU()), (2,)).factors
    assert [(f.name, f.factor) for f in factors] == [("", 2.0)]
