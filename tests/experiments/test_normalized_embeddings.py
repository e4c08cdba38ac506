"""The normalized-embeddings experiment: its checks pass, and wrong ingredients fail them."""

from __future__ import annotations

import pytest
import torch

from normpen.analysis import contrastive
from normpen.experiments import normalized_embeddings as ne

SEED = ne.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return ne.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_and_full_mode_with_the_same_checks(quick_result):
    full = ne.EXPERIMENT.run(quick=False)
    for result in (quick_result, full):
        failed = [(c.name, c.measured, c.expected) for c in result.checks if not c.passed]
        assert not failed
    assert [c.name for c in quick_result.checks] == [c.name for c in full.checks]
    assert len(quick_result.figures["gradients"].get_axes()) == 4


def test_the_embeddings_hold_right_and_confused_anchors_over_four_decades_of_norm():
    e = ne.make_embeddings(512, SEED)
    right = e.right
    # Noise levels U[0.5, 8] put the fraction of right anchors near one half (0.47 over 4096 anchors); 512
    # anchors give a standard error of 0.022, so [0.25, 0.75] is ten standard errors wide.
    assert 0.25 < float(right.double().mean()) < 0.75
    norms = torch.linalg.vector_norm(e.anchors, dim=1)
    # Norms log-uniform on [1e-2, 1e2]: P(r < 0.02) = P(r > 50) = log10(2)/4 = 0.075, so among 512 anchors
    # both fail with probability (1 − 0.075)^512 ≈ 5e-18.
    assert float(norms.min()) < 0.02 and float(norms.max()) > 50
    torch.testing.assert_close(torch.linalg.vector_norm(e.keys, dim=1), torch.ones(16, dtype=torch.float64))


def test_the_checks_pass_for_another_seed():
    result = ne.run(quick=True, seed=11)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------

RADIAL = "x̂·k̂ logits: max |radial part| / ‖∇L‖"
SCALING = "x̂·k̂ logits: max ‖c·∇L(cx) − ∇L(x)‖ / ‖∇L(x)‖, c = 10^±3 (∇L ∝ 1/‖x‖)"
CLOSED = "x̂·k̂ logits: max relative error of the closed-form gradient vs autograd"
FORCE = "x·k̂ logits: max |(−∂L/∂‖x‖ by autograd) − (cos₊ − Σpᵢcosᵢ)/τ| · τ"
RIGHT = "x·k̂ logits: (right anchor, norm) pairs with a norm force < 0 beyond rounding"
CONFUSED = (
    "x·k̂ logits: confused anchors (cosine gap ≥ W(N/e)/R) whose norm force is ≥ 0 at ‖x‖ = R·τ = "
    f"{ne._SHARP:g}τ"
)
CONVEX = "x·k̂ logits: (anchor, norm) pairs where the force grows with ‖x‖ (L not convex in ‖x‖)"
STEP = "x̂·k̂ logits, gradient descent: max |‖x_{t+1}‖² − ‖x_t‖² − η²‖∇L‖²| / ‖x_{t+1}‖²"
GROWN = f"x̂·k̂ logits, gradient descent: confused anchors whose norm did not grow in {ne._N_STEPS} steps"
FASTEST = "x̂·k̂ logits, gradient descent: mean growth of ‖x‖², confused / right anchors"


def _soft_unit(v):
    """A normalisation that is not scale invariant: v / (‖v‖ + 1)."""
    return v / (torch.linalg.vector_norm(v, dim=-1, keepdim=True) + 1.0)


def _gradient_without_the_norm(anchors, keys, positives, temperature, *, normalize):
    """The closed form with the 1/‖x‖ factor forgotten."""
    g = contrastive.info_nce_grad(anchors, keys, positives, temperature, normalize=normalize)
    return g * torch.linalg.vector_norm(anchors, dim=1, keepdim=True)


def _uniform_average_force(anchors, keys, positives, temperature):
    """cos₊ minus the plain mean of the cosines instead of the softmax-weighted one."""
    cosines = torch.nn.functional.normalize(anchors) @ keys.T
    return (cosines.gather(1, positives[:, None])[:, 0] - cosines.mean(dim=1)) / temperature


def _flipped_force(anchors, keys, positives, temperature):
    return -contrastive.norm_force(anchors, keys, positives, temperature)


_AUTOGRAD_GRADIENT = ne.autograd_gradient


def _the_texts_gradient(embeddings, anchors, normalize):
    """The gradient the text describes: the true one plus a radial pull −(cos₊ − Σpᵢcosᵢ)/τ² · x.

    The extra 1/τ gives the radial part the size of the tangential one (both carry one 1/τ per cosine).
    """
    force = contrastive.norm_force(anchors, embeddings.keys, embeddings.positives, ne.TEMPERATURE)
    return _AUTOGRAD_GRADIENT(embeddings, anchors, normalize) - force[:, None] * anchors / ne.TEMPERATURE


def _swapped_right(self):
    """Right and confused anchors swapped."""
    return (self.anchors @ self.keys.T).argmax(dim=1) != self.positives


WRONG = {
    "a normalisation that is not scale invariant": (
        contrastive,
        "_unit",
        _soft_unit,
        {RADIAL, SCALING, CLOSED},
    ),
    "a closed form without 1/‖x‖": (ne, "info_nce_grad", _gradient_without_the_norm, {CLOSED}),
    "the force with a uniform average": (ne, "norm_force", _uniform_average_force, {FORCE, CONFUSED}),
    "the force with the wrong sign": (ne, "norm_force", _flipped_force, {FORCE, RIGHT, CONFUSED, CONVEX}),
    "the text's radial force in the descent": (ne, "autograd_gradient", _the_texts_gradient, {STEP, GROWN}),
    "right and confused swapped": (ne.Embeddings, "right", property(_swapped_right), {FASTEST, RIGHT}),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    module, attribute, replacement, must_fail = WRONG[scenario]
    monkeypatch.setattr(module, attribute, replacement)
    failed = {c.name for c in ne.run(quick=True, seed=SEED).checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for *_, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}


def test_the_verdict_refutes_the_text_with_the_descent_checks_as_evidence(quick_result):
    verdict = ne.EXPERIMENT.verdict
    assert verdict.status == "refuted"
    assert {STEP, GROWN, FASTEST, RADIAL} == set(verdict.evidence)
    assert all(c.passed for c in quick_result.checks if c.name in verdict.evidence)
