"""The diagnosing-fit experiment: the sweep against hand-written training, checks against wrong penalties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from normpen.experiments import diagnosing_fit as df
from normpen.penalties.l2 import L2

SEED = df.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return df.EXPERIMENT.run(quick=True)


def test_the_norm_check_has_a_floor_where_every_weight_is_zero_in_theory():
    """Two near-zero norms at the largest λ: their ratio is noise, the floored rise is not."""
    sweep = df.Sweep(
        lams=np.array([0.1, 1.0]),
        steps=np.array([0]),
        train_curves=np.ones((1, 2)),
        val_curves=np.ones((1, 2)),
        sq_norms=np.array([1e-12, 1e-6]),
    )
    (check,) = [c for c in df._checks(sweep, 0.0, 0.0, n_weights=100) if "‖W‖²" in c.name]
    assert check.passed and check.measured == pytest.approx((1e-6 - 1e-12) / (100 * df._LR**2))


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 9


def test_figure_shows_losses_against_lambda_and_learning_curves(quick_result):
    axes = quick_result.figures["lambda-sweep"].get_axes()
    assert len(axes) == 2
    assert axes[0].get_xscale() == "log"
    n_lams = df._SIZES[True].n_lams
    train_line = axes[0].get_lines()[0]
    np.testing.assert_allclose(train_line.get_xdata(), np.geomspace(*df.LAMBDA_RANGE, n_lams))


def test_digits_split_is_stratified_scaled_and_filters_classes():
    split = df.digits_split(150, SEED)
    assert split.X_train.shape == (150, 64) and split.X_val.shape == (1797 - 150, 64)
    assert float(split.X_train.min()) >= 0.0 and float(split.X_train.max()) <= 1.0
    assert np.all(np.bincount(split.y_train.numpy()) == 15)
    subset = df.digits_split(0.5, SEED, classes=[3, 7])
    assert set(subset.y_train.tolist()) == {3, 7} == set(subset.y_val.tolist())


def test_mlp_is_reproducible_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b = df.mlp((4, 3, 2), seed=5), df.mlp((4, 3, 2), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [type(m).__name__ for m in a] == ["Linear", "ReLU", "Linear"]


def test_constant_prediction_losses_equal_scikit_learn_log_loss():
    rng = np.random.default_rng(0)
    y_train = torch.from_numpy(rng.integers(0, 4, 50))
    y_val = torch.from_numpy(rng.integers(0, 4, 30))
    pi = np.bincount(y_train.numpy(), minlength=4) / 50
    train, val = df.constant_prediction_losses(y_train, y_val, 4)
    # the same float64 entropy summed in another order: a few ε relative
    assert train == pytest.approx(log_loss(y_train.numpy(), np.tile(pi, (50, 1)), labels=range(4)), rel=1e-12)
    assert val == pytest.approx(log_loss(y_val.numpy(), np.tile(pi, (30, 1)), labels=range(4)), rel=1e-12)


def test_the_sweep_is_exactly_independent_runs_of_adam_on_the_l2_objective():
    """Each copy equals a model trained alone with Adam on CE + λ/2 ‖W‖², the penalty written by hand."""
    split = df.digits_split(40, SEED)
    lams = np.array([1e-3, 0.3])
    sweep = df.train_sweep(split, (64, 6, 10), lams, n_steps=15, record_every=15, seed=SEED)
    for k, lam in enumerate(lams):
        model = df.mlp((64, 6, 10), SEED)
        optimizer = torch.optim.Adam(model.parameters(), lr=df._LR)
        for _ in range(15):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(split.X_train), split.y_train)
            penalty = lam / 2 * sum(p.square().sum() for p in model.parameters() if p.ndim == 2)
            (loss + penalty).backward()
            optimizer.step()
        train = df.cross_entropy(model, split.X_train, split.y_train)
        # float64, the penalty's gradient formed in another order: ~ε per step, grown by 15 Adam steps
        # (Adam divides by √v, at most ~1/ε_adam), still far below 1e-10
        assert sweep.train[k] == pytest.approx(train, rel=1e-10)
        assert sweep.val[k] == pytest.approx(df.cross_entropy(model, split.X_val, split.y_val), rel=1e-10)
        sq_norm = sum(float(p.detach().square().sum()) for p in model.parameters() if p.ndim == 2)
        assert sweep.sq_norms[k] == pytest.approx(sq_norm, rel=1e-10)


# ---- wrong penalty strengths must fail the checks -----------------------------------------


def _wrong_l2(strength):
    """An L2 whose actual strength is ``strength(λ)``: what the sweep would train if λ were mishandled."""

    class WrongL2(L2):
        def __post_init__(self):
            super().__post_init__()
            object.__setattr__(self, "lam", strength(self.lam))

    return WrongL2


WRONG_PENALTIES = {
    "no effect": (
        _wrong_l2(lambda lam: 0.0),
        {
            "largest λ: train loss − H(π_train) (all weights 0)",
            "largest λ: val loss − cross-entropy(q_val, π_train)",
            "val(λ*) / val(smallest λ)",
            "val(λ*) / val(largest λ)",
        },
    ),
    "10⁴ times stronger": (
        _wrong_l2(lambda lam: 1e4 * lam),
        {
            "smallest λ: train loss (memorised)",
            "smallest λ: rise of val loss after its minimum in training (relative)",
        },
    ),
    "inverted": (
        _wrong_l2(lambda lam: 1e-5 / lam),
        {
            "largest drop of train loss as λ grows (nondecreasing in theory)",
            "largest rise of ‖W‖² as λ grows / max(‖W‖², P·lr²) (nonincreasing in theory)",
            "largest rise of the gap (val − train) as λ grows",
        },
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_PENALTIES))
def test_a_wrong_penalty_strength_fails_its_checks(monkeypatch, scenario):
    penalty, must_fail = WRONG_PENALTIES[scenario]
    monkeypatch.setattr(df, "L2", penalty)
    result = df.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {must_fail} among the failures, got {failed}"


def test_every_check_is_failed_by_some_wrong_penalty(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_PENALTIES.values()))
    assert targeted == {c.name for c in quick_result.checks}
