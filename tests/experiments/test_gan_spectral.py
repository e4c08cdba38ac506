"""The gan-spectral experiment: the ring, the mode rule, the ensemble, normalisation, wrong ingredients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normpen.datasets import ring_centers, ring_of_gaussians
from normpen.experiments import gan_spectral as gs
from normpen.experiments.common import mlp

SEED = gs.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return gs.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 6


def test_figure_shows_data_samples_modes_and_bounds(quick_result):
    axes = quick_result.figures["modes"].get_axes()
    assert len(axes) == 5
    n_seeds = gs._SIZES[True].n_seeds
    assert len(axes[3].patches) == 2 * n_seeds
    assert axes[4].get_yscale() == "log"


def test_ring_of_gaussians_draws_each_mode_around_its_center():
    X, modes = ring_of_gaussians(8000, 8, 2.0, 0.05, seed=3)
    centers = ring_centers(8, 2.0)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.0)
    np.testing.assert_allclose(centers[2], [0.0, 2.0], atol=1e-15)  # 2cos(π/2) in float64: 1.2e-16
    # 1000 points per mode: a share's sd is 0.0037 (0.02 is 5 sd), a mean's 0.05/√1000 = 0.0016 (0.01 is
    # 6 sd), a standard deviation's relative sd 1/√2000 = 2.2 % (10 % is 4.5 sd)
    for k in range(8):
        points = X[modes == k]
        assert abs(len(points) / 8000 - 1 / 8) < 0.02
        np.testing.assert_allclose(points.mean(axis=0), centers[k], atol=0.01)
        np.testing.assert_allclose(points.std(axis=0), 0.05, rtol=0.1)
    again, _ = ring_of_gaussians(8000, 8, 2.0, 0.05, seed=3)
    np.testing.assert_array_equal(again, X)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ring_of_gaussians(0), "n_samples"),
        (lambda: ring_of_gaussians(10, std=-1.0), "std"),
        (lambda: ring_centers(0), "n_modes"),
    ],
)
def test_ring_generators_refuse_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_covered_modes_counts_modes_with_enough_points_near_their_center():
    centers = ring_centers(8, 2.0)
    near = [centers[k] + 0.4 * np.array([0.6, 0.8]) for k in (0, 3, 5)]
    points = np.concatenate([np.repeat(near, [50, 50, 4], axis=0), np.zeros((96, 2))])
    # 200 points: modes 0 and 3 hold 25 %, mode 5 holds 2 % < 2.5 %, the 96 at the origin belong to none
    np.testing.assert_array_equal(gs.mode_counts(points, centers), [50, 0, 0, 50, 0, 4, 0, 0])
    assert gs.covered_modes(points, centers) == 2


def test_the_ensemble_is_its_members_and_trains_them_independently():
    seeds = [4, 9]
    ensemble = gs.EnsembleMLP((2, 5, 1), seeds)
    x = torch.randn(2, 7, 2, generator=torch.Generator().manual_seed(0))
    members = [mlp((2, 5, 1), s, dtype=torch.float32) for s in seeds]
    for k, member in enumerate(members):
        # float32 batched and single matmuls reduce in another order: assert_close's float32 defaults
        # (rtol 1.3e-6, atol 1e-5) cover a few ε_32 of these O(1) outputs
        torch.testing.assert_close(ensemble(x)[k], member(x[k]))
        torch.testing.assert_close(ensemble.member(k)(x[k]), member(x[k]))
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=0.1)
    singles = [torch.optim.Adam(m.parameters(), lr=0.1) for m in members]
    for _ in range(3):
        optimizer.zero_grad()
        ensemble(x).square().mean(dim=(1, 2)).sum().backward()
        optimizer.step()
        for member, single, xk in zip(members, singles, x, strict=True):
            single.zero_grad()
            member(xk).square().mean().backward()
            single.step()
    for k, member in enumerate(members):
        # three Adam steps of lr 0.1 on gradients that differ by a few ε_32: Adam's step is lr·m/√v, whose
        # rounding is relative, so the weights differ by ~lr·10 ε_32 ≈ 1e-7 per step, outputs by ≲ 1e-6
        torch.testing.assert_close(ensemble(x)[k], member(x[k]), rtol=1e-5, atol=1e-6)


def test_spectral_normalisation_puts_every_member_layer_in_the_ball_and_leaves_inner_ones():
    ensemble = gs.EnsembleMLP((2, 6, 6, 1), [0, 1, 2])
    with torch.no_grad():
        ensemble.weights[1][0].mul_(50.0)
        ensemble.weights[1][1].mul_(1e-3)
    inside = ensemble.weights[1][1].detach().clone()
    gs.spectral_normalize_(ensemble, 1.5)
    for weight in ensemble.weights:
        norms = torch.linalg.matrix_norm(weight.detach().double(), ord=2)
        # float32 weights rescaled to 1.5 by a float64 SVD: their norm is 1.5 to a few ε_32 (1.2e-7)
        assert bool((norms <= 1.5 * (1 + 1e-6)).all())
    assert float(torch.linalg.matrix_norm(ensemble.weights[1][0].detach().double(), ord=2)) == pytest.approx(
        1.5, rel=1e-5
    )
    assert torch.equal(ensemble.weights[1][1].detach(), inside)


# ---- wrong ingredients must fail the checks ---------------------------------------------

_TRAIN = gs.train_gans


WRONG_INGREDIENTS = {
    "no normalisation": (
        lambda mp: mp.setattr(gs, "spectral_normalize_", lambda ensemble, radius: None),
        {
            "spectral norm: largest Lipschitz bound of D in training / r³",
            "covered modes, seed mean: spectral norm − plain",
            "covered modes, worst seed: spectral norm − plain",
        },
    ),
    "normalisation in both variants": (
        lambda mp: mp.setattr(
            gs, "train_gans", lambda seeds, n_steps, spectral: _TRAIN(seeds, n_steps, True)
        ),
        {
            "plain: final Lipschitz bound of D / r³ (seed mean)",
            "covered modes, seed mean: spectral norm − plain",
            "covered modes, worst seed: spectral norm − plain",
        },
    ),
    "capture radius 100 times too small": (
        lambda mp: mp.setattr(gs, "CAPTURE", gs.CAPTURE / 100),
        {f"covered modes of {gs.N_EVAL} real samples (the rule)", "spectral norm: covered modes (seed mean)"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_INGREDIENTS))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_INGREDIENTS[scenario]
    patch(monkeypatch)
    result = gs.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_INGREDIENTS.values()))
    assert targeted == {c.name for c in quick_result.checks}
