"""The path-norm-simplicity experiment: measures against definitions, checks against wrong ingredients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normpen.analysis.pathnorm import path_norm
from normpen.experiments import path_norm_simplicity as ps

SEED = ps.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return ps.EXPERIMENT.run(quick=True)


def test_every_claim_check_passes_in_quick_mode_and_the_figure_shows_both_fits(quick_result):
    failed = [(c.name, c.measured) for c in quick_result.checks if not c.passed and not c.empirical]
    assert not failed
    fit_axes, slope_axes = quick_result.figures["fits"].get_axes()
    assert len(fit_axes.get_lines()) == 1 + len(ps.PENALTIES) and len(slope_axes.get_lines()) == len(
        ps.PENALTIES
    )


def _network_with(w, b, v, c=0.0):
    model = ps.network(0)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w, dtype=torch.float64)[:, None])
        model[0].bias.copy_(torch.tensor(b, dtype=torch.float64))
        model[2].weight.copy_(torch.tensor(v, dtype=torch.float64)[None, :])
        model[2].bias.fill_(c)
    return model


def _hand_made(width=ps.WIDTH):
    """Units with kinks at −0.5 and 0.25 (inside), one at 3 (outside), the rest dead (v = 0)."""
    w, b, v = np.zeros(width), np.zeros(width), np.zeros(width)
    w[:3], b[:3], v[:3] = [2.0, -4.0, 1.0], [1.0, 1.0, -3.0], [1.5, 0.5, 7.0]
    return _network_with(w, b, v, c=0.3)


def test_kink_measures_of_a_hand_made_network():
    m = ps.kink_measures(_hand_made())
    # Slope jumps |v·w| of the two kinks inside [−1, 1]: 3 and 2; the kink at x = 3 is outside.
    # Exact products of small integers and halves: only the final sum rounds.
    assert m.total_variation == pytest.approx(5.0, rel=1e-15)
    # Slopes: −2 left of −0.5 (unit 2 on), 3 − 2 = 1 up to 0.25, 3 beyond (unit 2 off); the largest |f'| is 3.
    assert m.lipschitz == pytest.approx(3.0, rel=1e-15)
    assert m.pieces == 3


def test_the_kink_total_variation_matches_the_grid_and_the_squared_path_norm_its_definition():
    model = _hand_made()
    # Finite differences of f' see each kink as one jump: exact up to rounding of f' (a few ε).
    assert ps.kink_measures(model).total_variation == pytest.approx(
        ps._grid_total_variation(model), rel=1e-12
    )
    # φ₂² = Σⱼ vⱼ²(wⱼ² + bⱼ²) + c²: the squared products of every input and bias path; float64 sums of 32
    # terms of size ≤ 490 round to about 32ε relative, well inside 1e-14.
    expected = 1.5**2 * (4 + 1) + 0.5**2 * (16 + 1) + 7.0**2 * (1 + 9) + 0.3**2
    assert float(ps.squared_path_norm(model).detach()) == pytest.approx(expected, rel=1e-14)
    assert float(path_norm(model, 2).detach()) ** 2 == pytest.approx(expected, rel=1e-14)
    assert float(ps.squared_weights(model).detach()) == pytest.approx(
        4 + 1 + 16 + 1 + 1 + 9 + 1.5**2 + 0.5**2 + 49, rel=1e-14
    )


def test_fit_at_target_brings_the_training_error_to_the_target_from_below():
    X, y = ps.make_data(3)
    model, lam = ps.fit_at_target(ps.squared_weights, 3, X, y, ps._SIZES[True])
    mse = float((model(X)[:, 0] - y).square().mean().detach())
    assert mse <= ps.TARGET_MSE and mse >= (1 - ps._TARGET_RTOL) * ps.TARGET_MSE
    assert ps._LOG_LAM[0] < np.log(lam) < ps._LOG_LAM[1]


# ---- wrong ingredients must fail the checks ------------------------------------------------

CHANGE = "L2 fit rebalanced: max output change / max |f|"
GROUP = "L2 fit rebalanced: ‖θ‖² / (2Σⱼ|vⱼ|‖uⱼ‖) (L2 at balance = the group path norm)"
AMGM = "L2 fit: ‖θ‖² after rebalancing / before (AM-GM: ≤ 1)"
GRID = "∫|f″| from the kinks vs the finite-difference total variation of f′ (L2 fit)"
TARGETS = {f"{name}: training MSE vs target" for name in ps.PENALTIES}


def _rebalance_outgoing_only(model, *, include_bias=False):
    """A 'rebalance' that scales the outgoing weights alone: the function changes."""
    with torch.no_grad():
        model[2].weight.mul_(2.0)


def _rebalance_unbalanced(model, *, include_bias=False):
    """A 'rebalance' that keeps the function but unbalances every unit (incoming × 2, outgoing ÷ 2)."""
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[0].bias.mul_(2.0)
        model[2].weight.div_(2.0)


def _kinks_without_the_outgoing_weight(model):
    measures = _KINK_MEASURES(model)
    return ps.KinkMeasures(2 * measures.total_variation, measures.lipschitz, measures.pieces)


_KINK_MEASURES = ps.kink_measures

WRONG = {
    "a rebalance that changes the function": (
        lambda mp: mp.setattr(ps, "rebalance", _rebalance_outgoing_only),
        {CHANGE, GROUP},
    ),
    "a rebalance that unbalances": (
        lambda mp: mp.setattr(ps, "rebalance", _rebalance_unbalanced),
        {GROUP, AMGM},
    ),
    "∫|f″| counted twice": (
        lambda mp: mp.setattr(ps, "kink_measures", _kinks_without_the_outgoing_weight),
        {GRID},
    ),
    "no bisection (λ at the bottom of the bracket)": (
        lambda mp: mp.setattr(ps, "_SIZES", {True: ps._Size(bisections=0, max_iter=300)}),
        TARGETS,
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG[scenario]
    patch(monkeypatch)
    failed = {c.name for c in ps.run(quick=True, seed=SEED).checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail - failed} among the failures"


def test_every_claim_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG.values()))
    assert {c.name for c in quick_result.checks if not c.empirical} <= targeted


def test_the_verdict_refutes_the_text_with_the_balance_identity_and_the_comparison(quick_result):
    verdict = ps.EXPERIMENT.verdict
    assert verdict.status == "refuted" and GROUP in verdict.evidence
    by_name = {c.name: c for c in quick_result.checks}
    assert all(name in by_name for name in verdict.evidence)
    assert by_name[GROUP].passed and not by_name[GROUP].empirical
