"""The lr·wd experiment: scale invariance of the model, the equivalence, and wrong ingredients failing."""

from __future__ import annotations

import math

import pytest
import torch

from normpen.experiments import lr_wd_scaling as lw

SEED = lw.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return lw.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 12
    assert len(quick_result.figures["runs"].get_axes()) == 6


@pytest.mark.parametrize("degree, scale", [(1, math.sqrt(2.0)), (0, 2.0)])
def test_equivalent_scale_is_sqrt2_for_sgd_and_2_for_adam(degree, scale):
    assert lw.equivalent_scale(2.0, degree) == pytest.approx(scale, rel=1e-15)


def test_the_model_loss_is_scale_invariant_and_its_gradient_orthogonal_to_the_weights(rng):
    X = torch.from_numpy(rng.standard_normal((30, 6)))
    y = torch.from_numpy(rng.integers(0, 4, 30))
    W = torch.from_numpy(rng.standard_normal((1, 6, 4))).requires_grad_(True)
    loss = lw.normalized_softmax_losses(W, X, y, 3.0)
    (grad,) = torch.autograd.grad(loss.sum(), W)
    for c in (1e-3, 0.7, 50.0):
        scaled = (c * W.detach()).requires_grad_(True)
        loss_c = lw.normalized_softmax_losses(scaled, X, y, 3.0)
        (grad_c,) = torch.autograd.grad(loss_c.sum(), scaled)
        # Normalising cW and W gives the same direction to a few ε; the loss, a mean of 30 log-sum-exps of
        # logits ~3√6, to ~30 ε relative.
        torch.testing.assert_close(loss_c, loss.detach(), rtol=1e-13, atol=0)
        # The gradient goes through the projection I − ŵŵᵀ, which cancels a component of size ‖∇‖·‖W‖:
        # relative rounding up to ~1e3 ε when the tangential part is small; atol for entries near 0.
        torch.testing.assert_close(grad_c, grad / c, rtol=1e-10, atol=1e-14)
    W = W.detach()
    # ⟨∇L, W⟩ = 0 exactly; a 24-term float64 dot product rounds to ~24 ε·‖∇L‖‖W‖.
    assert abs(float((grad * W).sum())) <= 1e-14 * float(grad.norm() * W.norm())
    expected = torch.nn.functional.cross_entropy(3.0 * X @ (W[0] / W[0].norm()), y)
    torch.testing.assert_close(loss[0], expected, rtol=1e-14, atol=0)


def test_the_rescaled_start_gives_s_times_the_weights_of_the_base_run_for_sgd_written_out(rng):
    """Two plain SGD loops written out by hand, without torch.optim: the equivalence is the math's."""
    X = torch.from_numpy(rng.standard_normal((40, 5)))
    y = torch.from_numpy(rng.integers(0, 3, 40))
    w0 = torch.from_numpy(rng.standard_normal((1, 5, 3)))
    alpha, lam, s = 0.3, 0.05, math.sqrt(2.0)

    def sgd(w, lr, decay, steps=50):
        for _ in range(steps):
            w = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(lw.normalized_softmax_losses(w, X, y, 2.0).sum(), w)
            w = (1 - lr * decay) * w.detach() - lr * g
        return w

    # 50 steps of the same recursion at scales differing by √2: each step rounds differently, ~50·few ε.
    torch.testing.assert_close(sgd(s * w0, 2 * alpha, lam / 2), s * sgd(w0, alpha, lam), rtol=1e-12, atol=0)
    assert not torch.allclose(sgd(s * w0, 2 * alpha, lam), s * sgd(w0, alpha, lam), rtol=1e-3)


def test_the_ordinary_model_is_plain_softmax_regression_and_sees_the_scale(rng):
    X = torch.from_numpy(rng.standard_normal((30, 6)))
    y = torch.from_numpy(rng.integers(0, 4, 30))
    W = torch.from_numpy(rng.standard_normal((1, 6, 4)))
    loss = lw.ordinary_softmax_losses(W, X, y, 3.0)
    expected = torch.nn.functional.cross_entropy(3.0 * X @ W[0], y)
    # float64, einsum against matmul over 6 terms and a mean of 30 log-sum-exps: a few ε ≈ 1e-15 relative.
    torch.testing.assert_close(loss[0], expected, rtol=1e-14, atol=0)
    # Doubling random N(0, 1) weights changes logits of size ~3√6 by as much: an O(1) change of the loss.
    assert abs(float(lw.ordinary_softmax_losses(2.0 * W, X, y, 3.0)[0] - loss[0])) > 1e-3


def test_the_verdict_narrows_the_rule_to_scale_invariant_weights(quick_result):
    verdict = lw.EXPERIMENT.verdict
    assert verdict.status == "narrowed"
    assert _ordinary("SGD") | _ordinary("AdamW") <= set(verdict.evidence)
    assert all(c.passed for c in quick_result.checks if c.name in verdict.evidence)


def test_checks_pass_for_another_seed():
    result = lw.run(quick=True, seed=7)
    assert all(c.passed for c in result.checks), [c.name for c in result.checks if not c.passed]


# ---- wrong ingredients must fail the checks ------------------------------------------------


class _DecayIgnoresLr(torch.optim.Optimizer):
    """SGD whose decay does not scale with the learning rate: w <- (1 - λ) w - α g."""

    def __init__(self, groups):
        super().__init__(groups, {"lr": 0.1, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["weight_decay"]).add_(p.grad, alpha=-group["lr"])


class _IgnoresLr(torch.optim.Optimizer):
    """SGD with one fixed step size whatever the group's lr: doubling α changes nothing."""

    def __init__(self, groups):
        super().__init__(groups, {"lr": 0.1, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - 0.5 * group["weight_decay"]).add_(p.grad, alpha=-0.5)


def _adam_with_l2(groups):
    """Adam with the decay coupled into the gradient (torch.optim.Adam's weight_decay), not AdamW."""
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=0.0)


def _equivalence(name):
    """The four checks of the (2α, λ/2) runs of optimizer ``name``."""
    return {
        f"{name}: (2α, λ/2) from s·w₀, max relative loss difference over all steps",
        f"{name}: (2α, λ/2) from s·w₀, max |‖w‖ ratio / s − 1|",
        f"{name}: (2α, λ/2) from w₀, relative end-loss difference",
        f"{name}: (2α, λ/2) from w₀, end ‖w‖ ratio / s",
    }


def _separation(name):
    return {f"{name}: (2α, λ) from w₀, end-loss difference in standard errors"}


def _ordinary(name):
    return {f"{name}, ordinary weights: (2α, λ/2) vs (α, λ), relative full-data loss gap (iterate average)"}


def _replace_optimizer(monkeypatch, name, factory):
    old = lw.OPTIMIZERS[name]
    setting = lw.OptimizerSetting(factory, old.lr, old.weight_decay, old.gradient_degree)
    monkeypatch.setitem(lw.OPTIMIZERS, name, setting)


WRONG = {
    "Adam with an L2 term instead of AdamW": (
        lambda mp: _replace_optimizer(mp, "AdamW", _adam_with_l2),
        _equivalence("AdamW"),
    ),
    "SGD whose decay ignores the learning rate": (
        lambda mp: _replace_optimizer(mp, "SGD", _DecayIgnoresLr),
        _equivalence("SGD") | _separation("SGD"),
    ),
    "optimizers that ignore the learning rate": (
        lambda mp: [_replace_optimizer(mp, name, _IgnoresLr) for name in ("SGD", "AdamW")],
        _equivalence("SGD") | _equivalence("AdamW") | _separation("SGD") | _separation("AdamW"),
    ),
    "a model that is not scale invariant": (
        lambda mp: mp.setattr(lw, "normalized_softmax_losses", lw.ordinary_softmax_losses),
        _equivalence("SGD") | _equivalence("AdamW"),
    ),
    "'ordinary' weights that are scale invariant": (
        lambda mp: mp.setattr(lw, "ordinary_softmax_losses", lw.normalized_softmax_losses),
        _ordinary("SGD") | _ordinary("AdamW"),
    ),
}


@pytest.fixture(scope="module")
def wrong_results():
    """Quick runs with each wrong ingredient in place."""
    results = {}
    for scenario, (patch, _) in WRONG.items():
        with pytest.MonkeyPatch.context() as mp:
            patch(mp)
            results[scenario] = lw.run(quick=True, seed=SEED)
    return results


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(wrong_results, scenario):
    failed = {c.name for c in wrong_results[scenario].checks if not c.passed}
    must_fail = WRONG[scenario][1]
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert targeted == {c.name for c in quick_result.checks}
