r"""Coupled L2 versus decoupled weight decay under momentum (seed 004, Scheme A vs Scheme B).

Scheme A puts the penalty in the loss, so its gradient :math:`\lambda\theta` enters the
velocity; Scheme B shrinks the weights outside the momentum:

.. math::

    \text{A:}\quad v_{t+1} = \beta v_t + \nabla L(\theta_t) + \lambda\theta_t,\qquad
    \theta_{t+1} = \theta_t - \eta v_{t+1}

    \text{B:}\quad \tilde v_{t+1} = \beta\tilde v_t + \nabla L(\theta_t),\qquad
    \theta_{t+1} = (1 - \eta\gamma)\theta_t - \eta\tilde v_{t+1}

With :math:`\beta = 0` and :math:`\gamma = \lambda` both read
:math:`\theta_{t+1} = \theta_t - \eta(\nabla L(\theta_t) + \lambda\theta_t)`: the same update.

Where they go
-------------
On the least-squares loss :math:`L(\theta) = \tfrac1{2n}\|y - X\theta\|^2`, with
:math:`H = X^\top X/n` and :math:`b = X^\top y/n`, both schemes are linear
recursions whose fixed points are found by setting :math:`v_{t+1} = v_t`,
:math:`\theta_{t+1} = \theta_t`:

- A: :math:`v^\ast = 0`, so :math:`\nabla L + \lambda\theta = 0`:
  :math:`\theta_A^\ast = (H + \lambda I)^{-1} b`, whatever :math:`\beta`;
- B: :math:`\tilde v^\ast = \nabla L/(1-\beta)` and :math:`\eta\gamma\theta = -\eta\tilde v^\ast`, so
  :math:`\nabla L + (1-\beta)\gamma\theta = 0`: :math:`\theta_B^\ast = (H + (1-\beta)\gamma I)^{-1} b`.

Decoupled decay under momentum is L2 with the effective strength
:math:`(1-\beta)\gamma`: with :math:`\gamma = \lambda` the gap
:math:`\|\theta_A^\ast - \theta_B^\ast\|` is 0 at :math:`\beta = 0` and grows with
:math:`\beta`, and :math:`\gamma = \lambda/(1-\beta)` closes it again.

Checks
------
Both schemes run through normpen (``Rule(L2(λ), mode="coupled")`` and
``Rule(L2(γ), mode="decoupled")`` on ``torch.optim.SGD(momentum=β)``) and, as
an independent reference, as the two recursions above written out in numpy.
In float64: the normpen runs equal the written-out schemes (relative
:math:`10^{-12}`); at :math:`\beta = 0` the two schemes agree at every step
(relative :math:`10^{-12}`); after the run each scheme sits on its fixed point
(relative :math:`10^{-8}`); the measured gap equals the closed form (relative
:math:`10^{-6}`) and grows by at least :math:`0.02\|\theta_A^\ast\|` from one :math:`\beta` of the
grid to the next;
B with :math:`\gamma = \lambda/(1-\beta)` lands on :math:`\theta_A^\ast` (relative :math:`10^{-8}`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from normpen._threads import single_threaded
from normpen.datasets import RegressionProblem, sparse_regression
from normpen.experiments.base import Check, Experiment, Result, Verdict
from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule

__all__ = [
    "EXPERIMENT",
    "BETAS",
    "Scheme",
    "fixed_point",
    "scheme_a",
    "scheme_b",
    "normpen_runs",
    "run",
]

#: Momentum coefficients of the comparison, increasing.
BETAS = (0.0, 0.5, 0.8, 0.9)
LAM = 1.0
LR = 0.1
_ROUNDOFF = 1e-12
_FIXED_POINT_RTOL = 1e-8
_GAP_RTOL = 1e-6
# The gap grows strictly with β (each eigencomponent of b/(h + (1−β)λ) − b/(h + λ) grows as (1−β)λ falls);
# its smallest step over the β grid is 0.062‖θ_A*‖ to 0.52‖θ_A*‖ over seeds 0–29 (quick), so 2% is cleared
# by every seed with room (the closed-form gaps are checked to _GAP_RTOL separately), far from the 0 of
# identical schemes.
_GAP_GROWTH = 0.02


@dataclass(frozen=True)
class _Size:
    n_samples: int
    n_features: int
    n_steps: int


_SIZES = {
    True: _Size(n_samples=60, n_features=5, n_steps=450),
    False: _Size(n_samples=200, n_features=10, n_steps=600),
}


@dataclass(frozen=True)
class Scheme:
    """One run: ``"A"`` (coupled) or ``"B"`` (decoupled), its momentum, its L2 strength λ or decay γ."""

    kind: str
    beta: float
    strength: float


def _problem(quick, seed) -> RegressionProblem:
    size = _SIZES[bool(quick)]
    return sparse_regression(
        size.n_samples, size.n_features, size.n_features, noise=0.5, correlation=0.5, seed=seed
    )


def fixed_point(X, y, strength):
    r"""The L2 solution of strength :math:`s`: :math:`(H + sI)^{-1} b`, with :math:`H = X^\top X/n`
    and :math:`b = X^\top y/n`.

    It minimises :math:`\tfrac1{2n}\|y - X\theta\|^2 + \tfrac s2\|\theta\|^2`.
    """
    n, p = X.shape
    return np.linalg.solve(X.T @ X / n + strength * np.eye(p), X.T @ y / n)


def _gradient(X, y, theta):
    return X.T @ (X @ theta - y) / X.shape[0]


def scheme_a(X, y, lam, beta, lr, n_steps):
    r"""Scheme A written out in numpy: the iterates of

    .. math:: v \leftarrow \beta v + \nabla L(\theta) + \lambda\theta, \qquad
              \theta \leftarrow \theta - \eta v.

    Starts from :math:`\theta_0 = 0`, :math:`v_0 = 0`; returns the iterates
    :math:`\theta_1 \dots \theta_T`, shape ``(n_steps, p)``.
    """
    theta, v = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    path = np.empty((n_steps, X.shape[1]))
    for t in range(n_steps):
        v = beta * v + (_gradient(X, y, theta) + lam * theta)
        theta = theta - lr * v
        path[t] = theta
    return path


def scheme_b(X, y, gamma, beta, lr, n_steps):
    r"""Scheme B written out in numpy: the iterates of

    .. math:: \tilde v \leftarrow \beta\tilde v + \nabla L(\theta), \qquad
              \theta \leftarrow (1-\eta\gamma)\theta - \eta\tilde v.

    Same start and output as :func:`scheme_a`.
    """
    theta, v = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    path = np.empty((n_steps, X.shape[1]))
    for t in range(n_steps):
        v = beta * v + _gradient(X, y, theta)
        theta = (1 - lr * gamma) * theta - lr * v
        path[t] = theta
    return path


def _sgd(groups, lr):
    """Heavy-ball SGD as the seed writes it: no dampening, no Nesterov, momentum per param group."""
    return torch.optim.SGD(groups, lr=lr)


def normpen_runs(X, y, schemes, lr, n_steps):
    r"""Every scheme trained by normpen at once: iterates of shape ``(len(schemes), n_steps, p)``.

    One bias-free ``nn.Linear(p, 1)`` per scheme, starting at 0, in its own
    SGD param group with its momentum; Scheme A under a coupled L2 rule,
    Scheme B under a decoupled one. The summed loss gives each weight exactly
    its own gradient.
    """
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    models = torch.nn.ModuleList(
        [torch.nn.Linear(X.shape[1], 1, bias=False, dtype=torch.float64) for _ in schemes]
    )
    for model in models:
        torch.nn.init.zeros_(model.weight)
    rules = [
        Rule(L2(s.strength), mode="coupled" if s.kind == "A" else "decoupled", select=f"{k}.weight")
        for k, s in enumerate(schemes)
    ]
    reg = Regularizer(models, rules)
    groups = [{"params": m.parameters(), "momentum": s.beta} for m, s in zip(models, schemes, strict=True)]
    optimizer = reg.wrap(_sgd(groups, lr))
    path = torch.empty(len(schemes), n_steps, X.shape[1], dtype=torch.float64)
    for t in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        weights = torch.cat([m.weight for m in models])
        residuals = Xt @ weights.T - yt[:, None]
        loss = 0.5 * residuals.square().sum() / X.shape[0]
        (loss + reg.penalty()).backward()
        optimizer.step()
        with torch.no_grad():
            path[:, t] = torch.cat([m.weight for m in models])
    return path.numpy()


def _schemes():
    """A and B at every β with γ = λ, then B with the corrected γ = λ/(1 − β) at the largest β."""
    pairs = [Scheme(kind, beta, LAM) for beta in BETAS for kind in ("A", "B")]
    return pairs + [Scheme("B", BETAS[-1], LAM / (1 - BETAS[-1]))]


def _relative(a, b):
    """Largest deviation of ``a`` from ``b`` relative to the size of ``b`` (max norms)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _checks(X, y, schemes, paths, written):
    by = {(s.kind, s.beta, s.strength): path for s, path in zip(schemes, paths, strict=True)}
    theta_a = fixed_point(X, y, LAM)
    checks = [
        Check.at_most(
            "normpen runs vs the schemes written out: max relative deviation",
            max(_relative(p, w) for p, w in zip(paths, written, strict=True)),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.at_most(
            "β = 0, γ = λ: max relative |θ_A − θ_B| over all steps",
            _relative(by[("A", 0.0, LAM)], by[("B", 0.0, LAM)]),
            0.0,
            atol=_ROUNDOFF,
        ),
    ]
    gaps, closed_gaps = [], []
    for beta in BETAS:
        end_a, end_b = by[("A", beta, LAM)][-1], by[("B", beta, LAM)][-1]
        theta_b = fixed_point(X, y, (1 - beta) * LAM)
        checks += [
            Check.at_most(
                f"β = {beta:g}: relative distance of A from (H + λI)⁻¹b",
                _relative(end_a, theta_a),
                0.0,
                atol=_FIXED_POINT_RTOL,
            ),
            Check.at_most(
                f"β = {beta:g}: relative distance of B from (H + (1−β)γI)⁻¹b",
                _relative(end_b, theta_b),
                0.0,
                atol=_FIXED_POINT_RTOL,
            ),
        ]
        gaps.append(float(np.linalg.norm(end_a - end_b)))
        closed_gaps.append(float(np.linalg.norm(theta_a - theta_b)))
    checks += [
        Check.close(
            f"β = {beta:g}: ‖θ_A − θ_B‖ at the end vs closed form",
            gap,
            closed,
            rtol=_GAP_RTOL,
            atol=_FIXED_POINT_RTOL * float(np.max(np.abs(theta_a))),
        )
        for beta, gap, closed in zip(BETAS[1:], gaps[1:], closed_gaps[1:], strict=True)
    ]
    checks.append(
        Check.at_least(
            "smallest increase of ‖θ_A − θ_B‖ / ‖θ_A*‖ from one β to the next",
            float(np.min(np.diff(gaps))) / float(np.linalg.norm(theta_a)),
            _GAP_GROWTH,
        )
    )
    corrected = by[("B", BETAS[-1], LAM / (1 - BETAS[-1]))][-1]
    checks.append(
        Check.at_most(
            f"β = {BETAS[-1]:g}, γ = λ/(1−β): relative distance of B from (H + λI)⁻¹b",
            _relative(corrected, theta_a),
            0.0,
            atol=_FIXED_POINT_RTOL,
        )
    )
    return checks, closed_gaps


def _figure(X, y, schemes, paths, closed_gaps):
    """Left: ‖θ_A(t) − θ_B(t)‖ per β with the closed-form limits. Right: the limit gap against β."""
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    by = {(s.kind, s.beta, s.strength): path for s, path in zip(schemes, paths, strict=True)}
    floor = 1e-17 * float(np.max(np.abs(fixed_point(X, y, LAM))))
    steps = np.arange(1, paths.shape[1] + 1)
    for k, (beta, closed) in enumerate(zip(BETAS, closed_gaps, strict=True)):
        gap = np.linalg.norm(by[("A", beta, LAM)] - by[("B", beta, LAM)], axis=1)
        left.plot(steps, np.maximum(gap, floor), color=f"C{k}", label=f"β = {beta:g}")
        if closed > 0:
            left.axhline(closed, color=f"C{k}", ls=":", lw=1.0)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("‖θ_A − θ_B‖ (0 drawn at 1e-17·‖θ*‖)")
    left.set_title("A vs B with γ = λ: identical at β = 0, apart for β > 0 (dotted: limit)", fontsize=10)
    left.legend(frameon=False, fontsize=8)
    grid = np.linspace(0.0, 0.95, 60)
    theta_a = fixed_point(X, y, LAM)
    curve = [np.linalg.norm(theta_a - fixed_point(X, y, (1 - b) * LAM)) for b in grid]
    right.plot(grid, curve, color="black", lw=1.0, label="closed form ‖(H+λI)⁻¹b − (H+(1−β)λI)⁻¹b‖")
    measured = [np.linalg.norm(by[("A", b, LAM)][-1] - by[("B", b, LAM)][-1]) for b in BETAS]
    right.plot(BETAS, measured, "o", color="C3", label="normpen runs, end of training")
    right.set_xlabel("momentum β")
    right.set_ylabel("gap between the limits")
    right.set_title("decoupled decay under momentum acts as L2 of strength (1 − β)γ", fontsize=10)
    right.legend(frameon=False, fontsize=8)
    return fig


def run(quick: bool, seed: int) -> Result:
    """Run both schemes at every β through normpen and written out; check against the fixed points."""
    size = _SIZES[bool(quick)]
    problem = _problem(quick, seed)
    X, y = problem.X, problem.y
    schemes = _schemes()
    with single_threaded():
        paths = normpen_runs(X, y, schemes, LR, size.n_steps)
    written = [
        (scheme_a if s.kind == "A" else scheme_b)(X, y, s.strength, s.beta, LR, size.n_steps) for s in schemes
    ]
    checks, closed_gaps = _checks(X, y, schemes, paths, written)
    notes = (
        f"Least squares on a seeded Gaussian design (n = {X.shape[0]}, p = {X.shape[1]}, AR(1) ρ = 0.5), "
        f"θ₀ = 0, lr η = {LR:g}, λ = γ = {LAM:g}, {size.n_steps} full-batch SGD steps per run, "
        f"β ∈ {{{', '.join(f'{b:g}' for b in BETAS)}}}; float64."
    )
    return Result(checks=checks, figures={"gap": _figure(X, y, schemes, paths, closed_gaps)}, notes=notes)


EXPERIMENT = Experiment(
    name="coupled-decoupled",
    title="Coupled L2 vs decoupled weight decay under momentum",
    seed_section="004 Implementation in Modern Optimizers: L2 Penalty versus Decoupled Weight Decay",
    claim=(
        "With momentum β, coupled L2 (λ) and decoupled decay (γ) are the same update when β = 0 and γ = λ; "
        "for β > 0 decoupled decay converges to the L2 solution of strength (1 − β)γ, so the gap grows "
        "with β."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "confirmed",
        "With momentum β the two schemes are one update only at β = 0 (γ = λ); for β > 0 decoupled decay γ "
        "converges to the L2 solution of strength (1 − β)γ, so the gap to coupled L2 grows with β, matches "
        "its closed form, and γ = λ/(1 − β) closes it.",
    ),
)
