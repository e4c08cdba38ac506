"""The spectral-certification experiment: norms and Jacobians computed independently, wrong ingredients."""

from __future__ import annotations

import math

import pytest
import torch

from normpen.analysis.certify import certified_radius
from normpen.analysis.lipschitz import lipschitz_bound
from normpen.analysis.spectral_penalty import SpectralPenalty
from normpen.experiments import spectral_certification as sc
from normpen.experiments.common import digits_split, mlp

SEED = sc.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return sc.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 13


def test_the_verdict_narrows_the_text_with_the_counterexample(quick_result):
    verdict = sc.EXPERIMENT.verdict
    assert verdict.status == "narrowed"
    passed = {c.name for c in quick_result.checks if c.passed}
    assert set(verdict.evidence) <= passed and len(verdict.evidence) == 3


def test_the_counterexample_is_tight_at_sqrt2():
    """Along e₁ the margin of W moves by exactly √2·K·ε: m = √2Kε(1 ± 10⁻³) (≫ float64 rounding) sit on
    either side: just below is flipped and not certified, just above survives and is certified."""
    for margin, flipped in ((math.sqrt(2.0) * 0.999, True), (math.sqrt(2.0) * 1.001, False)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sc, "_TEXT_MARGIN", margin)
            _, after, radius = sc.texts_condition_counterexample(sc.EPS)
        assert (after < 0) == flipped and (radius < 1) == flipped


def test_figure_shows_certified_accuracy_curves_and_layer_norms(quick_result):
    left, right = quick_result.figures["certified"].get_axes()
    assert len(left.get_lines()) >= 4
    assert len(right.patches) == 2 * (len(sc.WIDTHS) - 1)


def test_product_of_spectral_norms_uses_the_largest_singular_value_of_each_layer():
    model = mlp((5, 4, 3), seed=1)
    expected = 1.0
    for layer in (model[0], model[2]):
        expected *= float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
    # numpy's and torch's SVD of the same 4×5 and 3×4 float64 matrices: a few ε each.
    assert sc.product_of_spectral_norms(model) == pytest.approx(expected, rel=1e-12)


def test_jacobian_norms_match_finite_differences():
    model = mlp((5, 4, 3), seed=2)
    X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    norms = sc.jacobian_norms(model, X)
    h = 1e-6
    for x, norm in zip(X, norms, strict=True):
        columns = [(model(x + h * e) - model(x - h * e)) / (2 * h) for e in torch.eye(5, dtype=torch.float64)]
        jacobian = torch.stack(columns, dim=1).detach()
        # Central differences with h = 1e-6 of a piecewise-linear map (exact unless a kink is within h:
        # not at these points), rounding ε/h ≈ 2e-10 relative.
        assert norm == pytest.approx(float(torch.linalg.matrix_norm(jacobian, ord=2)), rel=1e-6)


def test_the_penalised_run_adds_lambda_times_the_sum_of_spectral_norms():
    """One penalised step is one Adam step on CE + λ Σ σ(W), σ from the persistent power iteration."""
    split = digits_split(100, SEED)
    trained = sc.train(split, sc.LAM, n_steps=1, seed=SEED)
    model = mlp(sc.WIDTHS, SEED)
    penalty = SpectralPenalty(model, sc.LAM, seed=SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=sc.LR)
    (torch.nn.functional.cross_entropy(model(split.X_train), split.y_train) + penalty(model)).backward()
    optimizer.step()
    for p, q in zip(trained.parameters(), model.parameters(), strict=True):
        # One Adam step computed twice in float64 by the same torch kernels in a different order of the
        # penalty's terms: a few ε.
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


# ---- wrong ingredients must fail the checks ---------------------------------------------


def _quarter_bound(model, input_shape, **kwargs):
    """A 'Lipschitz bound' four times too small."""
    bound = lipschitz_bound(model, input_shape, **kwargs)
    return type(bound)(bound.bound / 4, bound.factors)


def _no_penalty(self, model):
    return 0.0 * sum(p.sum() for p in model.parameters())


def _radius_without_sqrt2(model, x, *, lipschitz=None):
    """The radius m/K the text's condition implies: √2 times the certified one."""
    return math.sqrt(2.0) * certified_radius(model, x, lipschitz=lipschitz)


WRONG_INGREDIENTS = {
    "bound four times too small": (
        lambda mp: mp.setattr(sc, "lipschitz_bound", _quarter_bound),
        {
            *(f"{name}: Lipschitz bound / ∏‖W_l‖₂ (SVD) − 1" for name in sc.MODELS),
            *(f"{name}: max ‖∂f/∂x‖₂ on val / Lipschitz bound" for name in sc.MODELS),
            *(f"{name}: certified at ε = {sc.EPS:g} but broken by PGD" for name in sc.MODELS),
        },
    ),
    "penalty without effect": (
        lambda mp: mp.setattr(SpectralPenalty, "__call__", _no_penalty),
        {
            "Lipschitz bound: spectral / unregularised (lowered)",
            "Lipschitz bound: spectral / unregularised ≤ 1/2",
            f"certified accuracy at ε = {sc.EPS:g}: spectral − unregularised (raised)",
        },
    ),
    "a certificate without the √2 (the text's condition)": (
        lambda mp: mp.setattr(sc, "certified_radius", _radius_without_sqrt2),
        {"text's condition: library's radius m/(√2K) at that point / ε (< 1: not certified)"},
    ),
    "a point where the text's condition fails (m < Kε)": (
        lambda mp: mp.setattr(sc, "_TEXT_MARGIN", 0.9),
        {"text's condition: m / (Kε) at the constructed point (> 1: the text certifies)"},
    ),
    "a point beyond the √2 (m > √2 Kε)": (
        lambda mp: mp.setattr(sc, "_TEXT_MARGIN", 1.5),
        {
            "text's condition: margin after a perturbation of norm ε, / ε (< 0: flipped)",
            "text's condition: library's radius m/(√2K) at that point / ε (< 1: not certified)",
        },
    ),
    "penalty 100 times too strong": (
        lambda mp: mp.setattr(sc, "LAM", 100 * sc.LAM),
        {"clean accuracy: spectral − unregularised"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_INGREDIENTS))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_INGREDIENTS[scenario]
    patch(monkeypatch)
    result = sc.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_INGREDIENTS.values()))
    assert targeted == {c.name for c in quick_result.checks}
