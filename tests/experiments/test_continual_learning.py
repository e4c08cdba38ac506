"""The continual-learning experiment: tasks, Fisher in closed form, anchored training, wrong ingredients."""

from __future__ import annotations

import copy

import pytest
import torch

from normpen.experiments import continual_learning as cl
from normpen.torch import fisher_diagonal

SEED = cl.EXPERIMENT.seed


@pytest.fixture(scope="module")
def quick_result():
    return cl.EXPERIMENT.run(quick=True)


def test_every_check_passes_in_quick_mode(quick_result):
    failed = [(c.name, c.measured, c.expected) for c in quick_result.checks if not c.passed]
    assert not failed
    assert len(quick_result.checks) == 2 + 3 * (len(cl.METHODS) - 1)


def test_figure_has_two_bars_per_method(quick_result):
    (ax,) = quick_result.figures["forgetting"].get_axes()
    assert len(ax.patches) == 2 * len(cl.METHODS)


def test_tasks_are_the_two_halves_of_the_digits_with_labels_0_to_4():
    task_a, task_b = cl.make_tasks(SEED)
    for task in (task_a, task_b):
        assert set(task.y_train.tolist()) == set(range(5)) == set(task.y_val.tolist())
    assert (
        task_a.X_train.shape[0] + task_a.X_val.shape[0] + task_b.X_train.shape[0] + task_b.X_val.shape[0]
        == 1797
    )
    assert not torch.equal(task_a.X_train[:5], task_b.X_train[:5])


def test_fisher_of_softmax_regression_has_its_closed_form():
    """For logits Wx + b, the per-sample gradient is (p − e_y) xᵀ: F_W = mean((p − e_y)² (x²)ᵀ)."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (20,), generator=generator)
    model = torch.nn.Linear(3, 4, dtype=torch.float64)
    residual = torch.softmax(model(X), dim=1).detach() - torch.nn.functional.one_hot(y, 4)
    expected_weight = (residual[:, :, None] ** 2 * X[:, None, :] ** 2).mean(dim=0)
    expected_bias = (residual**2).mean(dim=0)
    loop = cl.fisher_by_loop(model, X, y)
    # float64 means of 20 products, summed in another order: a few ε relative; atol for exact zeros
    torch.testing.assert_close(loop["weight"], expected_weight, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(loop["bias"], expected_bias, rtol=1e-12, atol=1e-15)
    library = fisher_diagonal(model, [(X, y)], torch.nn.CrossEntropyLoss(), candidates="all", progress=False)
    # the library accumulates per-batch squared gradients through autograd: still ~10ε relative
    torch.testing.assert_close(library["weight"], expected_weight, rtol=1e-10, atol=1e-15)


def test_the_ewc_run_is_adam_on_the_loss_plus_the_fisher_weighted_pull():
    """Two EWC steps on task B equal Adam on CE + λ/2 Σ F (θ − θ_A)², written by hand."""
    task_a, task_b = cl.make_tasks(SEED)
    model = cl._train(cl.mlp((64, 8, 5), SEED), task_a, n_steps=5)
    fisher = cl._fisher(model, task_a)
    anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
    learner = cl._train(copy.deepcopy(model), task_b, 2, cl.ewc(model, fisher, cl.LAM_EWC))
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(reference.parameters(), lr=cl.LR)
    for _ in range(2):
        optimizer.zero_grad()
        pull = sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in reference.named_parameters())
        (cl._loss(reference, task_b.X_train, task_b.y_train) + cl.LAM_EWC / 2 * pull).backward()
        optimizer.step()
    # float64, the pull's gradient formed in another order: ~ε per step, two Adam steps
    for p, q in zip(learner.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


# ---- wrong ingredients must fail the checks ---------------------------------------------


def _fisher_as_batch(model, data, loss_fn, **kwargs):
    """The squared gradient of each batch's mean loss: not the per-sample Fisher of EWC."""
    return fisher_diagonal(model, data, loss_fn, **{**kwargs, "variant": "batch"})


WRONG_INGREDIENTS = {
    "batch Fisher": (
        lambda mp: mp.setattr(cl, "fisher_diagonal", _fisher_as_batch),
        {"Fisher diagonal vs per-sample loop: max relative difference"},
    ),
    "task B is task A": (
        lambda mp: mp.setattr(cl, "TASKS", (cl.TASKS[0], cl.TASKS[0])),
        {"fine-tuning: forgetting of task A (accuracy drop)"},
    ),
    "no anchoring": (
        lambda mp: (mp.setattr(cl, "LAM_EWC", 0.0), mp.setattr(cl, "LAM_L2SP", 0.0)),
        {
            f"{method}: {what}"
            for method in cl.METHODS[1:]
            for what in (
                "forgetting less than fine-tuning's by",
                "mean accuracy over A and B − fine-tuning's",
            )
        },
    ),
    "anchors 100 times too strong": (
        lambda mp: (
            mp.setattr(cl, "LAM_EWC", 100 * cl.LAM_EWC),
            mp.setattr(cl, "LAM_L2SP", 100 * cl.LAM_L2SP),
        ),
        {f"{method}: task B accuracy" for method in cl.METHODS[1:]},
    ),
}


@pytest.mark.parametrize("scenario", sorted(WRONG_INGREDIENTS))
def test_a_wrong_ingredient_fails_its_checks(monkeypatch, scenario):
    patch, must_fail = WRONG_INGREDIENTS[scenario]
    patch(monkeypatch)
    result = cl.run(quick=True, seed=SEED)
    failed = {c.name for c in result.checks if not c.passed}
    assert must_fail <= failed, f"{scenario}: expected {sorted(must_fail - failed)} among the failures"


def test_every_check_is_failed_by_some_wrong_ingredient(quick_result):
    targeted = set().union(*(must_fail for _, must_fail in WRONG_INGREDIENTS.values()))
    assert targeted == {c.name for c in quick_result.checks}
