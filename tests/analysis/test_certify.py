"""Certified radii against a strong PGD attack, on models trained on scikit-learn's digits, and against
the exact distance to the decision boundary of linear classifiers."""

import math

import pytest
import torch
from torch import nn

from normpen.analysis.certify import certified_accuracy, certified_radius, empirical_radius, pgd_attack
from normpen.analysis.lipschitz import lipschitz_bound


def _correct(model, X, y):
    with torch.no_grad():
        keep = model(X).argmax(1) == y
    return X[keep], y[keep]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_pgd_never_breaks_a_certified_prediction_and_tightness(kind, digits, digits_mlp, digits_cnn, capsys):
    model = digits_mlp if kind == "mlp" else digits_cnn
    _, _, X, y = digits
    X = X[:80] if kind == "mlp" else X[:80].reshape(-1, 1, 8, 8)
    X, y = _correct(model, X, y[:80])
    assert len(y) >= 60  # the models are trained: most test digits are right
    bound = lipschitz_bound(model, tuple(X.shape[1:]))
    radius = certified_radius(model, X, lipschitz=bound)
    attack = pgd_attack(model, X, y, radius, steps=40, restarts=3)
    assert not attack.success.any()
    # the attack promises the exact distance <= radius; float32 points differ exactly in float64, whose
    # norm of 64 terms rounds by at most 64 * 2**-53 relative
    distances = torch.linalg.vector_norm((attack.x_adv.double() - X.double()).flatten(1), dim=1)
    assert (distances <= radius.double() * (1 + 64 * 2.0**-53)).all()
    found = empirical_radius(model, X, y, eps_max=8.0, n_bisect=6, steps=30, restarts=1)
    assert torch.isfinite(found).all()  # the attack is strong enough to break every prediction somewhere
    ratio = found / radius
    assert (ratio >= 1).all()  # no adversarial example inside a certified ball
    with capsys.disabled():
        print(
            f"\n[{kind}] L = {bound.bound:.3g}, median certified radius {radius.median():.3g}, "
            f"PGD distance / certified radius: min {ratio.min():.3g}, median {ratio.median():.3g}"
        )


def test_linear_classifier_radius_is_below_the_exact_boundary_distance_which_pgd_reaches():
    """For f(x) = Wx + b the distance to the nearest decision boundary is min_j (f_c - f_j)/||w_c - w_j||,
    and ||w_c - w_j|| <= sqrt(2) sigma_max(W) makes the certified radius a lower bound of it."""
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    X = torch.randn(30, 5, dtype=torch.float64)
    with torch.no_grad():
        logits = model(X)
    pred = logits.argmax(1)
    W = model.weight.detach()
    gaps = logits.gather(1, pred[:, None]) - logits
    dists = gaps / torch.linalg.vector_norm(W[pred][:, None, :] - W[None, :, :], dim=2)
    exact = dists.masked_fill(torch.nn.functional.one_hot(pred, 4).bool(), math.inf).min(1).values
    radius = certified_radius(model, X)
    assert (radius <= exact * (1 + 1e-12)).all()  # a theorem; float64 rounding of both sides
    sigma = float(torch.linalg.matrix_norm(W, ord=2))
    top2 = torch.topk(logits, 2, dim=1).values
    # the bound computed inside is sigma up to Gram iteration's factor rank**(2**-11) = 4**(2**-11) < 1 + 7e-4
    torch.testing.assert_close(radius, (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * sigma), rtol=7e-4, atol=0)
    # PGD finds the boundary just beyond the exact distance, and nothing inside it
    # 0.1% beyond the boundary: a float64 linear margin crosses zero there by far more than its rounding
    assert pgd_attack(model, X, pred, exact * 1.001, steps=50, restarts=1).success.all()
    assert not pgd_attack(model, X, pred, exact * 0.999, steps=50, restarts=2).success.any()
    untargeted = pgd_attack(model, X, pred, exact * 1.001, steps=50, restarts=1, targets=0)
    assert not untargeted.success.all()  # the targeted runs are what reaches the nearest boundary
    found = empirical_radius(model, X, pred, eps_max=4.0, n_bisect=12, steps=50, restarts=1)
    assert (found >= exact * (1 - 1e-12)).all()  # no adversarial point inside: float64 rounding only
    assert (found <= exact + 4.0 * 2.0**-12).all()  # the bisection's resolution


def forward_rounding(model, X):
    """First-order bound on the float32 rounding error of each logit of a Linear-ReLU-Linear ``model``,
    in any summation order: a dot product of length k rounds by at most k u sum |w_i x_i| (Higham, 3.1),
    u = 2**-24, and ReLU is 1-Lipschitz, so the error is at most (k1 + k2 + 2) u |W2|(|W1||x| + |b1|) + ...,
    bounded by (k1 + k2 + 2) u times the network with absolute weights evaluated at |x|."""
    first, last = model[0], model[2]
    with torch.no_grad():
        hidden = X.double().abs() @ first.weight.double().abs().T + first.bias.double().abs()
        magnitude = hidden @ last.weight.double().abs().T + last.bias.double().abs()
    return (first.in_features + last.in_features + 2) * 2.0**-24 * magnitude


def test_certified_accuracy_counts_correct_and_certified(digits, digits_mlp):
    _, _, X, y = digits
    bound = lipschitz_bound(digits_mlp, (64,))
    radius = certified_radius(digits_mlp, X, lipschitz=bound)
    with torch.no_grad():
        correct = digits_mlp(X).argmax(1) == y
    # batches of 100 and of all samples round differently (other GEMM blockings): the top-two margin of
    # each path is within 2 * forward_rounding of the exact one, so the radii of the two paths differ by
    # at most 4 * max_error / (sqrt(2) L); samples that close to eps may be counted by one path only
    band = 4 * forward_rounding(digits_mlp, X).amax(1) / (math.sqrt(2) * bound.bound)
    accuracies = []
    for eps in (0.0, 0.05, 0.1, 0.3):
        expected = float((correct & (radius > eps)).double().mean())
        undecided = float(((radius.double() - eps).abs() <= band).double().mean())
        batched = certified_accuracy(digits_mlp, X, y, eps, lipschitz=bound, batch_size=100)
        assert abs(batched - expected) <= undecided
        accuracies.append(expected)
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[0] == pytest.approx(float(correct.double().mean()))
    # one batch of every sample and the same bound: the very operations of `radius` above, so equal
    assert certified_accuracy(digits_mlp, X, y, 0.1) == accuracies[2]


def test_attack_stays_in_the_ball_and_reports_margins():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    X = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    eps = torch.linspace(0.01, 2.0, 10, dtype=torch.float64)
    result = pgd_attack(model, X, y, eps, steps=30, restarts=3)
    distances = torch.linalg.vector_norm(result.x_adv - X, dim=1)
    assert (distances <= eps * (1 + 1e-12)).all()  # float64 points: the attack's ball, norm rounding only
    with torch.no_grad():
        logits = model(result.x_adv)
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf).max(1).values
    torch.testing.assert_close(result.margin, true - others)
    assert torch.equal(result.success, result.margin < 0)


@pytest.mark.parametrize("eps", [5e-4, 2e-3, 0.02])
def test_float32_attack_points_lie_in_the_ball_exactly(digits, digits_mlp, eps):
    """Storing x + delta in float32 rounds by up to (eps_32/2)(||x|| + r) ~ 2e-7 here, more than the radius
    itself allows at r = 5e-4 when delta is on the sphere; the attack shrinks its ball by that rounding."""
    _, _, X, y = digits
    attack = pgd_attack(digits_mlp, X[:80], y[:80], eps, steps=10, restarts=3)
    # float32 points differ exactly in float64; its norm of 64 terms rounds by at most 64 * 2**-53 relative
    distances = torch.linalg.vector_norm(attack.x_adv.double() - X[:80].double(), dim=1)
    assert (distances <= torch.tensor(eps, dtype=torch.float32).double() * (1 + 64 * 2.0**-53)).all()
    assert (distances[~attack.success] >= 0.99 * eps).any()  # the attack does go out to the sphere


def test_clear_errors(digits_mlp):
    X = torch.zeros(3, 64)
    with pytest.raises(TypeError, match="batch dimension"):
        certified_radius(digits_mlp, [0.0] * 64)
    with pytest.raises(ValueError, match="class indices"):
        certified_accuracy(digits_mlp, X, torch.zeros(2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\).*map the labels"):
        certified_accuracy(digits_mlp, X, torch.tensor([0, 3, 10]), 0.1)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\)"):
        certified_accuracy(digits_mlp, X, torch.tensor([0, -1, 2]), 0.1)
    with pytest.raises(ValueError, match="integer tensor"):
        certified_accuracy(digits_mlp, X, torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\)"):
        pgd_attack(digits_mlp, X, torch.full((3,), 10), 0.1)
    with pytest.raises(ValueError, match="X must hold at least one sample"):
        certified_accuracy(digits_mlp, X[:0], torch.zeros(0, dtype=torch.long), 0.1)
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            certified_accuracy(digits_mlp, X, torch.zeros(3, dtype=torch.long), 0.1, batch_size=batch_size)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        certified_accuracy(digits_mlp, X, torch.zeros(3, dtype=torch.long), -0.1)
    with pytest.raises(ValueError, match="lipschitz must be > 0"):
        certified_radius(digits_mlp, X, lipschitz=0.0)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        certified_radius(nn.Linear(64, 1), X)
    with pytest.raises(ValueError, match="steps and restarts must be >= 1"):
        pgd_attack(digits_mlp, X, torch.zeros(3, dtype=torch.long), 0.1, steps=0)
    with pytest.raises(ValueError, match="nonnegative radii"):
        pgd_attack(digits_mlp, X, torch.zeros(3, dtype=torch.long), torch.ones(2))
