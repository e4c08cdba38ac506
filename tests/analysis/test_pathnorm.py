"""Path norms against brute-force path enumeration, their rescaling invariance, and rebalancing against
a numerical minimisation over the rescalings."""

import copy
import itertools

import numpy as np
import pytest
import torch
from analysis_helpers import dense_operator
from scipy.optimize import minimize
from torch import nn

from normpen.analysis.pathnorm import PathNormPenalty, path_norm, rebalance


def _mlp(seed, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3), nn.LeakyReLU(0.1), nn.Linear(3, 2, bias=bias)
    ).double()


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 2, stride=2, dilation=1, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
        nn.ReLU(),
        nn.Linear(3, 2),
    ).double()


CNN_SHAPE = (1, 4, 4)


def _unrolled(model, input_shape):
    """(matrix, bias) of every weight layer as dense maps of flattened activations."""
    layers, shape = [], input_shape
    for module in model:
        if isinstance(module, nn.Linear | nn.Conv2d):
            matrix = dense_operator(module, shape).numpy()
            with torch.no_grad():
                bias = module(torch.zeros((1, *shape), dtype=torch.float64)).flatten().numpy()
            layers.append((matrix, bias))
        with torch.no_grad():
            shape = tuple(module(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
    return layers


def _brute_force(layers, q):
    """Sum over every path, from each input unit and from each bias, of the product of |weight|^q."""
    total = 0.0
    for start in range(len(layers) + 1):
        if start == 0:
            heads = [(i, 1.0) for i in range(layers[0][0].shape[1])]
        else:
            bias = layers[start - 1][1]
            heads = [(j, abs(bias[j]) ** q) for j in range(len(bias))]
        later = layers[start:]
        for unit, head in heads:
            for route in itertools.product(*[range(m.shape[0]) for m, _ in later]):
                product, prev = head, unit
                for (m, _), nxt in zip(later, route, strict=True):
                    product *= abs(m[nxt, prev]) ** q
                    prev = nxt
                total += product
    return total ** (1 / q)


def _rescale(model, log_scales):
    """Apply hidden-unit rescalings exp(beta) to a copy: rows and bias times alpha, next columns over alpha.

    Written for the test models (groups act per channel; a Flatten spreads a
    channel over a contiguous block of the next Linear's columns).
    """
    model = copy.deepcopy(model)
    layers = [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        for layer, nxt, beta in zip(layers, layers[1:], log_scales, strict=False):
            alpha = torch.exp(torch.as_tensor(beta, dtype=torch.float64))
            layer.weight.mul_(alpha.reshape(-1, *([1] * (layer.weight.ndim - 1))))
            layer.bias.mul_(alpha)
            if isinstance(nxt, nn.Linear):
                cols = nxt.weight.view(nxt.out_features, len(alpha), -1)
                cols.div_(alpha.reshape(1, -1, 1))
            else:
                per_group = nxt.in_channels // nxt.groups
                for c, a in enumerate(alpha):
                    group, index = divmod(c, per_group)
                    rows = slice(
                        group * nxt.out_channels // nxt.groups, (group + 1) * nxt.out_channels // nxt.groups
                    )
                    nxt.weight[rows, index].div_(a)
    return model


def _hidden_sizes(model):
    layers = [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]
    return [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers[:-1]]


def _squared_weights(model, include_bias=False):
    total = 0.0
    for m in model:
        if isinstance(m, nn.Linear | nn.Conv2d):
            total += float((m.weight.detach() ** 2).sum())
            if include_bias and m.bias is not None:
                total += float((m.bias.detach() ** 2).sum())
    return total


CASES = {"mlp": (_mlp, (3,)), "cnn": (_cnn, CNN_SHAPE)}


@pytest.mark.parametrize("q", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("name", sorted(CASES))
def test_path_norm_equals_brute_force_enumeration(name, q):
    build, shape = CASES[name]
    model = build(seed=1)
    expected = _brute_force(_unrolled(model, shape), q)
    # float64 sums over up to ~1e4 nonnegative path products in two orders: ~1e4 eps = 2e-12 worst case,
    # pairwise summation makes it far less
    assert path_norm(model, q, shape).item() == pytest.approx(expected, rel=1e-12)


def test_path_norm_without_biases_and_mlp_default_shape():
    model = _mlp(seed=2, bias=False)
    expected = _brute_force(_unrolled(model, (3,)), 2.0)
    # 4 * 3 * 2 = 24 float64 path products summed in two orders: ~24 eps
    assert path_norm(model).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_path_norm_is_invariant_under_rescaling_and_l2_is_not(name):
    build, shape = CASES[name]
    model = build(seed=3)
    rng = np.random.default_rng(4)
    x = torch.randn((5, *shape), dtype=torch.float64)
    for _ in range(3):
        betas = [rng.uniform(-2.3, 2.3, size=n) for n in _hidden_sizes(model)]
        scaled = _rescale(model, betas)
        # the same float64 forward pass with every unit's in/out weights multiplied by beta and 1 / beta
        # (beta <= e^2.3 = 10): each rounding grows by at most beta, ~10 * (fan-in ~ 20) eps ~ 4e-14
        torch.testing.assert_close(scaled(x), model(x), rtol=1e-12, atol=1e-12)
        # the same path products in float64, each rounded a few more times than in the brute force above
        for q in (1.0, 2.0):
            assert path_norm(scaled, q, shape).item() == pytest.approx(
                path_norm(model, q, shape).item(), rel=1e-12
            )
        assert abs(_squared_weights(scaled) / _squared_weights(model) - 1) > 1e-2


def test_path_norm_gradient_matches_finite_differences():
    model = _cnn(seed=5)
    value = path_norm(model, 2.0, CNN_SHAPE)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(value, params)
    rng = np.random.default_rng(6)
    h = 1e-6
    for param, grad in zip(params, grads, strict=True):
        for flat in rng.choice(param.numel(), size=min(3, param.numel()), replace=False):
            index = np.unravel_index(flat, tuple(param.shape))
            with torch.no_grad():
                param[index] += h
                up = path_norm(model, 2.0, CNN_SHAPE).item()
                param[index] -= 2 * h
                down = path_norm(model, 2.0, CNN_SHAPE).item()
                param[index] += h
            # central difference: truncation h^2 |f3| / 6 ~ 1e-13 and rounding eps |f| / h ~ 1e-10 |f|
            assert grad[index].item() == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)


def test_path_norm_penalty_is_a_callable_model_penalty():
    model = _mlp(seed=7)
    penalty = PathNormPenalty(0.3, q=1.0)
    value = penalty(model)
    # one float64 multiplication by lam apart: eps / 2 = 1.1e-16
    assert value.item() == pytest.approx(0.3 * path_norm(model, 1.0).item(), rel=1e-15)
    value.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert PathNormPenalty(0.1, input_shape=[1, 4, 4])(_cnn(seed=0)).ndim == 0
    with pytest.raises(ValueError, match="lam must be >= 0"):
        PathNormPenalty(-1.0)


@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rebalance_keeps_the_function_and_reaches_the_smallest_l2(name, include_bias):
    build, shape = CASES[name]
    original = build(seed=8)
    rng = np.random.default_rng(9)
    original = _rescale(original, [rng.uniform(-1.5, 1.5, size=n) for n in _hidden_sizes(original)])
    model = copy.deepcopy(original)
    x = torch.randn((6, *shape), dtype=torch.float64)
    scales = rebalance(model, include_bias=include_bias)
    # rebalancing is the rescaling of the invariance test above (scales within e^+-1.5 here): the same
    # float64 rounding bounds, ~4e-14 for the outputs and ~1e4 eps for path-norm sums
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-12, atol=1e-12)
    assert path_norm(model, 2.0, shape).item() == pytest.approx(
        path_norm(original, 2.0, shape).item(), rel=1e-12
    )
    after = _squared_weights(model, include_bias)
    assert after < _squared_weights(original, include_bias)
    sizes = _hidden_sizes(original)
    assert [len(s) for s in scales] == sizes

    def objective(flat):
        betas = np.split(flat, np.cumsum(sizes)[:-1])
        return _squared_weights(_rescale(original, betas), include_bias)

    best = minimize(objective, np.zeros(sum(sizes)), method="BFGS", options={"gtol": 1e-10}).fun
    # BFGS on finite-difference gradients (error ~ sqrt(eps) ~ 1.5e-8) stops about eps-relative above the
    # optimum in value at best, 1e-7 at worst (quadratic in the 1.5e-8 gradient error, scaled by curvature)
    assert after <= best * (1 + 1e-9)
    assert after == pytest.approx(best, rel=1e-7)
    # a second call finds the network balanced: every scale is 1
    for again in rebalance(model, include_bias=include_bias):
        # sqrt(outgoing / incoming) of norms already balanced: 1 up to float64 rounding of the layer sums
        # (measured at most 3.1e-13 over these cases); 1e-9 leaves 3000x room
        torch.testing.assert_close(again, torch.ones_like(again), rtol=0, atol=1e-9)


def test_rebalanced_units_have_equal_incoming_and_outgoing_norms():
    model = _mlp(seed=10)
    rebalance(model)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    for layer, nxt in zip(layers, layers[1:], strict=False):
        incoming = (layer.weight.detach() ** 2).sum(1)
        outgoing = (nxt.weight.detach() ** 2).sum(0)
        # the sweeps stop once no log-scale moves by more than tol = 1e-12: the imbalance left is of that
        # order (measured at most 9.3e-13 relative over 30 seeds of _mlp)
        torch.testing.assert_close(incoming, outgoing, rtol=1e-9, atol=0)


def test_rebalance_leaves_dead_units_unscaled_and_the_rest_balanced():
    model = _mlp(seed=11)
    with torch.no_grad():
        model[2].weight[:, 1] = 0.0  # hidden unit 1 of the first layer has no outgoing weight
    x = torch.randn(4, 3, dtype=torch.float64)
    before = model(x).detach()
    scales = rebalance(model)
    assert scales[0][1].item() == 1.0
    assert torch.isfinite(torch.cat(scales)).all()
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)  # as in the rebalancing test above


def test_failed_rebalance_changes_nothing_and_errors_are_clear():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(6, 2)).double()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="not a multiple of the 4 units"):
        rebalance(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(TypeError, match=r"1 \(Tanh\)"):
        path_norm(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        path_norm(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect")), input_shape=(1, 5))
    with pytest.raises(ValueError, match="input_shape is required"):
        path_norm(nn.Sequential(nn.Conv1d(1, 1, 3)))
    with pytest.raises(ValueError, match="q must be >= 1"):
        path_norm(_mlp(seed=0), q=0.5)
    with pytest.raises(ValueError, match="no Linear or Conv"):
        path_norm(nn.Sequential(nn.ReLU()))
    assert rebalance(nn.Sequential(nn.Linear(2, 2))) == []
