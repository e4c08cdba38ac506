r"""The budget form of seed 004, min L s.t. P <= C, against its closed form on a quadratic.

For :math:`L(\theta) = \tfrac12\|\theta - a\|^2` and :math:`P = \tfrac{\lambda}{2}\|\theta\|^2`
the KKT conditions give :math:`\theta^* = a/(1 + \mu^*\lambda)`; when the budget binds,
:math:`\|\theta^*\| = r = \sqrt{2C/\lambda}`, so :math:`\theta^* = a\,r/\|a\|` and
:math:`\mu^* = (\|a\|/r - 1)/\lambda`; when it does not, :math:`\theta^* = a` and :math:`\mu^* = 0`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule

A = torch.tensor([[3.0, -1.0, 2.0], [0.5, 1.5, -2.5]], dtype=torch.float64)


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))

    def loss(self):
        return 0.5 * ((self.theta - A) ** 2).sum()


def _solve(rule, steps=400, lr=0.1):
    model = Quadratic()
    reg = Regularizer(model, rule)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=lr))
    for _ in range(steps):
        sgd.zero_grad()
        (model.loss() + reg.penalty()).backward()
        sgd.step()
    return model.theta.detach(), rule.multiplier


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_binding_budget_reaches_the_closed_form_point_and_multiplier(lam):
    budget = 1.0
    r = math.sqrt(2 * budget / lam)
    norm_a = A.norm().item()
    assert norm_a > r
    theta, multiplier = _solve(Rule(L2(lam), mode="lagrangian", budget=budget, dual_lr=0.5, candidates="all"))
    # the primal-dual iteration contracts linearly (measured: the error falls 5e4-fold per 100 steps for
    # lam = 0.5, faster for 2.0), so after 400 steps only float64 rounding of order-one numbers remains
    # (measured <= 2.2e-16): a few eps, hence 1e-12 (was 1e-8)
    torch.testing.assert_close(theta, A * r / norm_a, rtol=1e-12, atol=1e-14)
    assert math.isclose(multiplier.item(), (norm_a / r - 1) / lam, rel_tol=1e-12)
    assert math.isclose(L2(lam).value(theta).item(), budget, rel_tol=1e-12)


def test_slack_budget_leaves_the_unconstrained_optimum_and_a_zero_multiplier():
    theta, multiplier = _solve(Rule(L2(1.0), mode="lagrangian", budget=100.0, dual_lr=0.5, candidates="all"))
    torch.testing.assert_close(theta, A, rtol=1e-12, atol=1e-14)  # converged as above (measured 1.8e-15)
    assert multiplier.item() == 0.0


def test_a_model_level_callable_works_as_the_constrained_quantity():
    budget = 1.0
    rule = Rule(lambda m: (m.theta**2).sum(), mode="lagrangian", budget=budget, dual_lr=0.5)
    theta, multiplier = _solve(rule)
    r = math.sqrt(budget)  # sum theta^2 <= 1 is the lam = 2 case
    # the lam = 2 iteration of the first test: converged to rounding after 400 steps (measured 0)
    torch.testing.assert_close(theta, A * r / A.norm(), rtol=1e-12, atol=1e-14)
    assert math.isclose(multiplier.item(), (A.norm().item() / r - 1) / 2, rel_tol=1e-12)


def test_the_dual_step_is_projected_dual_ascent_on_the_recorded_value():
    model = Quadratic()
    with torch.no_grad():
        model.theta.copy_(A)
    rule = Rule(L2(1.0), mode="lagrangian", budget=2.0, dual_lr=0.25, multiplier_init=0.1, candidates="all")
    reg = Regularizer(model, rule)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.0))
    value = L2(1.0).value(A).item()
    for expected_mu in (0.1, 0.1 + 0.25 * (value - 2.0)):
        assert math.isclose(rule.multiplier.item(), expected_mu, rel_tol=1e-14)  # one float64 axpy: ~2 eps
        sgd.zero_grad()
        (model.loss() + reg.penalty()).backward()
        sgd.step()
    low = Rule(L2(1.0), mode="lagrangian", budget=1e6, dual_lr=1.0, multiplier_init=0.5, candidates="all")
    reg = Regularizer(Quadratic(), low)
    sgd = reg.wrap(torch.optim.SGD(reg.model.parameters(), lr=0.1))
    reg.penalty().backward()
    sgd.step()
    assert low.multiplier.item() == 0.0  # projected onto mu >= 0


def test_a_step_without_the_penalty_term_fails_before_changing_anything():
    model = Quadratic()
    rule = Rule(L2(1.0), mode="lagrangian", budget=1.0, dual_lr=0.1, candidates="all")
    reg = Regularizer(model, rule)
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    model.loss().backward()
    with pytest.raises(RuntimeError, match=r"add reg.penalty\(\)"):
        sgd.step()
    assert torch.equal(model.theta.detach(), torch.zeros(2, 3, dtype=torch.float64))
    assert rule.multiplier.item() == 0.0


def test_lagrangian_rule_arguments_are_validated():
    with pytest.raises(ValueError, match="budget=C"):
        Rule(L2(1.0), mode="lagrangian", dual_lr=0.1)
    with pytest.raises(ValueError, match="budget=C"):
        Rule(L2(1.0), mode="lagrangian", budget=1.0)
    with pytest.raises(ValueError, match="only it takes them"):
        Rule(L2(1.0), mode="coupled", budget=1.0)
    with pytest.raises(ValueError, match="dual_lr must be > 0"):
        Rule(L2(1.0), mode="lagrangian", budget=1.0, dual_lr=0.0)
    with pytest.raises(ValueError, match="multiplier_init"):
        Rule(L2(1.0), mode="coupled", multiplier_init=1.0)
    assert Rule(L2(1.0), mode="coupled").multiplier is None
