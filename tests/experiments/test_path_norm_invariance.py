"""The path-norm-invariance experiment: paths enumerated one by one, rescalings, wrong ingredients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normpen.analysis import pathnorm
from normpen.experiments import path_norm_invariance as pn
from normpen.experiments.common import mlp

SEED = pn.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return pn.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 7


def test_figure_has_the_rescalings_and_the_one_unit_sweep(quick_result):
    left, right = quick_result.figures["rescaling"].get_axes()
    assert len(left.get_lines()[0].get_xdata()) == pn._SIZES[True].n_rescalings
    assert right.get_xscale() == "log"


def _path_norm_one_path_at_a_time(model, q):
    """Every path from an input or a bias to an output, its product of |w|^q formed by a Python loop."""
    layers = pn.linear_layers(model)
    weights = [layer.weight.detach().numpy() for layer in layers]
    biases = [layer.bias.detach().numpy() for layer in layers]
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    total = 0.0
    for start in range(len(layers) + 1):
        for units in itertools.product(*(range(n) for n in widths[start:])):
            value = 1.0 if start == 0 else abs(biases[start - 1][units[0]]) ** q
            for l, (i, j) in enumerate(itertools.pairwise(units)):
                value *= abs(weights[start + l][j, i]) ** q
            total += value
    return total ** (1 / q)


@settings(max_examples=10)
@given(widths=st.lists(st.integers(1, 4), min_size=2, max_size=4), q=st.sampled_from([1.0, 2.0, 3.0]))
def test_enumeration_on_the_grid_equals_the_path_by_path_loop_and_normpen(widths, q):
    model = mlp(tuple(widths), seed=len(widths))
    expected = _path_norm_one_path_at_a_time(model, q)
    # Sums of at most 4⁴ positive products in float64, summed in different orders: ≤ 256 ε relative.
    assert pn.path_norm_by_enumeration(model, q) == pytest.approx(expected, rel=1e-12)
    assert float(pathnorm.path_norm(model, q=q).detach()) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=10)
@given(seed=st.integers(0, 1000))
def test_rescale_keeps_the_function_and_moves_each_unit_by_its_scale(seed):
    model = mlp((5, 4, 3, 2), seed=seed)
    scales = pn.random_scales(torch.Generator().manual_seed(seed), widths=(5, 4, 3, 2))
    rescaled = pn.rescale(model, scales)
    X = torch.randn(7, 5, dtype=torch.float64)
    # The rescaling multiplies each weight by α and 1/α (α ≤ 10^0.5): two roundings per edge, over three
    # layers of width ≤ 5: ~20 ε relative.
    torch.testing.assert_close(rescaled(X), model(X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rescaled[0].weight, model[0].weight * scales[0][:, None])
    torch.testing.assert_close(rescaled[4].weight, model[4].weight / scales[1][None, :])
    assert all(bool(((s >= 10**-pn.SPREAD) & (s <= 10**pn.SPREAD)).all()) for s in scales)


def test_a_balanced_unit_minimises_a_alpha_squared_plus_c_over_alpha_squared():
    """One unit's Σ‖W‖² is a α² + c/α² + rest, smallest (2√(ac) + rest) at α⁴ = c/a."""
    model = mlp((6, 1, 3), seed=3)
    a = float(model[0].weight.detach().square().sum())
    c = float(model[2].weight.detach().square().sum())
    balanced = pn.rescale(model, [torch.tensor([(c / a) ** 0.25], dtype=torch.float64)])
    # α⁴ = c/a computed in float64: the two squared norms agree to a few ε.
    assert pn.unit_balance(balanced) == pytest.approx(0.0, abs=1e-12)
    # Same: a few roundings of O(1) sums of ≤ 6 squares.
    assert pn.squared_weight_norm(balanced) == pytest.approx(2 * math.sqrt(a * c), rel=1e-12)
    for alpha in (0.5, 0.9, 1.1, 2.0):
        other = pn.rescale(model, [torch.tensor([alpha], dtype=torch.float64)])
        # Squares of weights scaled by α: two roundings per weight, sums of ≤ 6 terms.
        assert pn.squared_weight_norm(other) == pytest.approx(a * alpha**2 + c / alpha**2, rel=1e-12)
        assert pn.squared_weight_norm(other) > pn.squared_weight_norm(balanced)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 10_000))
def test_the_checks_pass_for_other_seeds(seed):
    result = pn.run(quick=True, seed=seed)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ---------------------------------------------

_RESCALE = pn.rescale
_REBALANCE = pathnorm.rebalance


def _not_a_symmetry(model, scales):
    """Outgoing weights divided by α² instead of α: the function changes."""
    out = _RESCALE(model, scales)
    layers = pn.linear_layers(out)
    with torch.no_grad():
        for following, alpha in zip(layers[1:], scales, strict=True):
            following.weight.div_(alpha[None, :])
    return out


def _l2_for_path_norm(model, q=2, input_shape=None):
    """The L2 norm of the weights passed off as a path norm."""
    return torch.sqrt(sum(layer.weight.square().sum() for layer in pn.linear_layers(model)))


def _rebalance_then_unbalance(model, **kwargs):
    """Rebalance, then scale every hidden unit by 2: same function, unbalanced, larger L2."""
    scales = _REBALANCE(model, **kwargs)
    unbalanced = pn.rescale(model, [torch.full_like(s, 2.0) for s in scales])
    model.load_state_dict(unbalanced.state_dict())
    return scales


def _unit_scales(generator, widths=pn.WIDTHS):
    """'Random' scales that are all 1: nothing moves."""
    return [torch.ones(width, dtype=torch.float64) for width in widths[1:-1]]


WRONG_INGREDIENTS = {
    "rescaling that is no symmetry": (
        lambda mp: mp.setattr(pn, "rescale", _not_a_symmetry),
        {
            "max relative output change under rescaling",
            "path norm φ₂: max relative change under rescaling",
            "path norm φ₁: max relative change under rescaling",
        },
    ),
    "L2 norm for the path norm": (
        lambda mp: mp.setattr(pn, "path_norm", _l2_for_path_norm),
        {
            "path norm φ₂: max relative change under rescaling",
            "path_norm vs enumeration of every path: relative difference",
        },
    ),
    "rebalance that unbalances": (
        lambda mp: mp.setattr(pn, "rebalance", _rebalance_then_unbalance),
        {
            "rebalanced: max |a_j − c_j|/(a_j + c_j) over hidden units",
            "rebalanced Σ‖W‖² / smallest Σ‖W‖² of the original and the random rescalings",
        },
    ),
    "scales all 1": (
        lambda mp: mp.setattr(pn, "random_scales", _unit_scales),
        {"Σ‖W‖²: smallest relative change under a random rescaling"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_INGREDIENTS))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_INGREDIENTS[scenario]
    patch(monkeypatch)
    result = pn.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_INGREDIENTS.values()))
    assert targeted == {c.name for c in quick_result.checks}
