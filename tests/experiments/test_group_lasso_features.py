"""The group-lasso-features experiment: prox training written out, ANOVA by hand, wrong penalties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import f_oneway

from normpen.experiments import group_lasso_features as gl
from normpen.experiments.common import digits_split
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1

SEED = gl.EXPERIMENT.seed
RULE_LAM = gl.LAM / (1 - gl.MOMENTUM)


@pytest.fixture(scope="module")
def quick_result():
    return gl.EXPERIMENT.run(quick=True)


@pytest.fixture(scope="module")
def split():
    return gl.with_noise_features(digits_split(300, SEED), gl.N_NOISE, SEED)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 8


def test_figure_shows_the_three_first_layers_and_the_kept_pixels(quick_result):
    axes = quick_result.figures["first-layer"].get_axes()
    assert len(axes) == 7  # three layers, their colour bar, the column norms, two pixel maps
    assert [ax.get_images()[0].get_array().shape for ax in axes[:3]] == [(gl.HIDDEN, 64 + gl.N_NOISE)] * 3
    assert axes[3].get_label() == "<colorbar>" and axes[3].get_ylabel().startswith("|weight|")
    assert axes[5].get_images()[0].get_array().shape == (8, 8)


def test_noise_features_are_appended_and_pixels_standardised_on_the_training_set(split):
    assert split.X_train.shape[1] == split.X_val.shape[1] == 64 + gl.N_NOISE
    pixels = split.X_train[:, :64]
    varying = pixels.std(dim=0) > 0
    torch.testing.assert_close(
        pixels[:, varying].mean(dim=0), torch.zeros(int(varying.sum()), dtype=pixels.dtype)
    )
    torch.testing.assert_close(
        pixels[:, varying].std(dim=0), torch.ones(int(varying.sum()), dtype=pixels.dtype)
    )
    assert torch.all(pixels[:, ~varying] == 0)
    again = gl.with_noise_features(digits_split(300, SEED), gl.N_NOISE, SEED)
    assert torch.equal(again.X_val, split.X_val)


def test_informative_pixels_are_the_largest_one_way_anova_f_statistics(split):
    pixels, labels = split.X_train[:, :64].numpy(), split.y_train.numpy()
    scores = np.full(64, -np.inf)
    for j in range(64):
        if pixels[:, j].std() > 0:
            scores[j] = f_oneway(*(pixels[labels == c, j] for c in np.unique(labels))).statistic
    np.testing.assert_array_equal(
        np.sort(gl.informative_pixels(split, 10)), np.sort(np.argsort(scores)[-10:])
    )


def test_proximal_training_is_momentum_sgd_then_group_soft_thresholding_of_columns(split):
    model = gl.train_first_layer(split, GroupLasso(RULE_LAM, groups="cols"), n_steps=12, seed=SEED)
    reference = gl.mlp((64 + gl.N_NOISE, gl.HIDDEN, 10), SEED)
    optimizer = torch.optim.SGD(reference.parameters(), lr=gl.LR, momentum=gl.MOMENTUM)
    threshold = gl.LR * RULE_LAM * math.sqrt(gl.HIDDEN)
    for _ in range(12):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(reference(split.X_train), split.y_train).backward()
        optimizer.step()
        with torch.no_grad():
            weight = reference[0].weight
            norms = torch.linalg.vector_norm(weight, dim=0)
            weight.mul_(torch.clamp(1 - threshold / norms, min=0.0))
    # float64, the same prox computed by the library: ~ε per step, grown over the steps by momentum
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_column_gradient_ratio_is_the_largest_zero_column_gradient_over_the_threshold(split):
    model = gl.mlp((64 + gl.N_NOISE, gl.HIDDEN, 10), SEED)
    zero = [3, 70]
    with torch.no_grad():
        model[0].weight[:, zero] = 0.0
    loss = torch.nn.functional.cross_entropy(model(split.X_train), split.y_train)
    (grad,) = torch.autograd.grad(loss, model[0].weight)
    expected = max(float(grad[:, j].norm()) for j in zero) / (0.01 * math.sqrt(gl.HIDDEN))
    # the same float64 gradient and norms: a few ε
    assert gl.column_gradient_ratio(model, split, 0.01) == pytest.approx(expected, rel=1e-12)


# ---- wrong penalties must fail the checks ------------------------------------------------

WRONG_PENALTIES = {
    "elementwise L1 for the group lasso": (
        {"group lasso": L1(RULE_LAM)},
        {
            "group lasso: irrelevant features dropped (all-zero columns)",
            "group lasso: share of zero weights in all-zero columns",
        },
    ),
    "group threshold 10 times too large": (
        {"group lasso": GroupLasso(10 * RULE_LAM, groups="cols")},
        {
            "group lasso: top-10 informative pixels dropped",
            "group lasso: val accuracy − unregularised val accuracy",
            "group lasso: max ‖∇_j L‖/(λω_j) over zero columns",
        },
    ),
    "group lasso for the L1": (
        {"L1": GroupLasso(RULE_LAM, groups="cols")},
        {"L1: share of zero weights in all-zero columns", "L1: irrelevant features kept (a nonzero weight)"},
    ),
    "L1 100 times too weak": (
        {"L1": L1(RULE_LAM / 100)},
        {"L1 / group lasso: zero weights"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_PENALTIES))
def test_a_wrong_penalty_fails_its_checks(monkeypatch, scenario):
    replacements, must_fail = WRONG_PENALTIES[scenario]
    for name, penalty in replacements.items():
        monkeypatch.setitem(gl.PENALTIES, name, penalty)
    result = gl.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_penalty(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_PENALTIES.values()))
    assert targeted == {c.name for c in quick_result.checks}
