r"""Sculpting representations: separate L2 strengths on a shared trunk and on task heads.

Seed 000 ("Sculpting Representations in Complex Architectures") says that a
multi-task network trained with :math:`\tfrac{\lambda_s}2\|W_s\|_F^2` on its
shared trunk and :math:`\tfrac{\lambda_t}2\|v_t\|^2` on each head settles where

.. math:: \frac{\|W_s^*\|_F^2}{\sum_t \|v_t^*\|^2} = \frac{\lambda_t}{\lambda_s},

and that a smaller :math:`\lambda_s` moves capacity into the shared trunk.

Why, and when exactly
---------------------
The network is :math:`f_t(x) = v_t^\top \phi(W_s x + b_s) + c_t` with a positively
homogeneous activation, :math:`\phi(a z) = a\,\phi(z)` for :math:`a > 0` (ReLU).
Scaling hidden unit :math:`j`, :math:`(w_j, b_{s,j}) \to a\,(w_j, b_{s,j})` and
:math:`v_{tj} \to v_{tj}/a` for every head, leaves every output unchanged, so
along this curve only the penalty moves:

.. math::

    \frac{d}{da}\Big[\frac{\lambda_s}2 a^2\|w_j\|^2 + \frac{\lambda_t}2 a^{-2}\sum_t v_{tj}^2\Big]_{a=1}
    = \lambda_s\|w_j\|^2 - \lambda_t\sum_t v_{tj}^2 .

At any stationary point of the penalized loss this derivative is 0: every
hidden unit is balanced, :math:`\lambda_s\|w_j\|^2 = \lambda_t\sum_t v_{tj}^2`,
and summing over units gives the ratio above, exactly, at a local minimum as
at the global one. In general the derivative equals
:math:`\langle\nabla_{w_j}J, w_j\rangle + \nabla_{b_{s,j}}J\,b_{s,j} - \sum_t \nabla_{v_{tj}}J\,v_{tj}`,
so the residual imbalance is bounded by the gradient norm times the weights'.
The identity needs the homogeneity (a tanh trunk breaks it) and unpenalized
trunk biases (penalizing them with :math:`\lambda_s` moves part of the
trunk's share into :math:`\|b_s\|^2`).

Capacity: the share of the squared weight norm held by the trunk is then
:math:`\lambda_t/(\lambda_s + \lambda_t)`, and at global minimisers
:math:`\|W_s^*\|_F^2` is nonincreasing in :math:`\lambda_s` (comparing the
optimal values at two strengths), so lowering :math:`\lambda_s` at fixed
:math:`\lambda_t` grows the trunk.

Set-up and checks
-----------------
A ReLU trunk :math:`h = \max(W_s x, 0)` (no bias) with three linear heads
(unpenalized biases), taught by a seeded teacher whose three tasks share four
ReLU features plus a task-specific linear part, and trained on the
*population* loss: inputs :math:`x \sim N(0, I)`, where every second moment of
ReLU features has a closed form (the arc-cosine kernel, see
:func:`relu_gram`), so the objective is smooth and L-BFGS reaches a
stationary point to rounding. (On a finite sample the minimisers of a ReLU
network sit on kinks, where no gradient method certifies stationarity; the
identity holds there too, but could not be shown to 10⁻⁶.)
:math:`\lambda_t/\lambda_s` runs over a log grid from 1/8 to 8 at fixed
:math:`\lambda_t`, each fit warm-started from the previous one. Checks: the
ratio against :math:`\lambda_t/\lambda_s` (relative :math:`10^{-6}`), the
largest per-unit imbalance (relative to the total penalty, :math:`10^{-6}`),
the gradient (stationarity, :math:`10^{-9}`), and that
:math:`\|W_s\|_F^2` grows at every step down in :math:`\lambda_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from normpen._threads import single_threaded
from normpen.experiments.base import Check, Experiment, Result

__all__ = [
    "EXPERIMENT",
    "Teacher",
    "TrunkHeads",
    "Fit",
    "draw_teacher",
    "init_network",
    "relu_gram",
    "population_loss",
    "fit",
    "sweep",
    "run",
]

#: Head strength :math:`\lambda_t`, fixed along the sweep.
HEAD_LAM = 0.01
#: Relative slack of the ratio and balance checks; the stationarity the fits reach bounds the error.
_RTOL = 1e-6
#: Largest gradient entry accepted as stationary.
_GTOL = 1e-9
_N_FEATURES, _N_SHARED, _N_TASKS = 6, 4, 3
#: Hidden units of the trunk.
N_HIDDEN = 6

#: The ratios λ_t/λ_s of the sweep, quick and full.
_RATIOS = {True: (0.25, 1.0, 4.0), False: (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)}


@dataclass(frozen=True)
class Teacher:
    r"""Targets :math:`y_t(x) = a_t^\top\max(Bx, 0) + c_t^\top x` of three related tasks, float64 tensors.

    Attributes
    ----------
    shared : Tensor of shape (n_shared, n_features)
        :math:`B`, the features all tasks use.
    heads : Tensor of shape (n_shared, n_tasks)
        Column :math:`t` is :math:`a_t`.
    specific : Tensor of shape (n_features, n_tasks)
        Column :math:`t` is the task-specific linear part :math:`c_t`.
    """

    shared: torch.Tensor
    heads: torch.Tensor
    specific: torch.Tensor


def draw_teacher(seed: int, specific: float = 0.5) -> Teacher:
    r"""A teacher drawn from ``seed``.

    Rows of :math:`B` from :math:`N(0, I/p)`, :math:`a_{kt} \sim N(0, 1)` and
    :math:`c_t \sim N(0, s^2 I/p)` with :math:`s` = ``specific``.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    scale = 1.0 / math.sqrt(_N_FEATURES)
    return Teacher(
        shared=normal(_N_SHARED, _N_FEATURES) * scale,
        heads=normal(_N_SHARED, _N_TASKS),
        specific=normal(_N_FEATURES, _N_TASKS) * specific * scale,
    )


@dataclass(frozen=True)
class TrunkHeads:
    r"""Parameters of :math:`f_t(x) = v_t^\top\phi(W_s x) + c_t`, float64 tensors.

    Attributes
    ----------
    trunk : Tensor of shape (n_hidden, n_features)
        :math:`W_s`.
    heads : Tensor of shape (n_hidden, n_tasks)
        Column :math:`t` is :math:`v_t`.
    head_bias : Tensor of shape (n_tasks,)
        :math:`c_t` (unpenalized).
    """

    trunk: torch.Tensor
    heads: torch.Tensor
    head_bias: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.trunk, self.heads, self.head_bias)

    def flat(self) -> np.ndarray:
        """All parameters in one float64 vector (for scipy)."""
        return torch.cat([t.detach().reshape(-1) for t in self.tensors()]).numpy()

    def from_flat(self, vector) -> TrunkHeads:
        """Parameters of the same shapes read from ``vector``."""
        source = torch.as_tensor(vector, dtype=torch.float64)
        sizes = [t.numel() for t in self.tensors()]
        parts = torch.split(source, sizes)
        return TrunkHeads(*(p.reshape(t.shape) for p, t in zip(parts, self.tensors(), strict=True)))


def init_network(n_hidden: int, seed: int) -> TrunkHeads:
    """He-scaled random trunk and heads, zero head biases, from ``seed + 1`` (the teacher uses ``seed``)."""
    generator = torch.Generator().manual_seed(seed + 1)
    trunk = torch.randn(n_hidden, _N_FEATURES, generator=generator, dtype=torch.float64)
    heads = torch.randn(n_hidden, _N_TASKS, generator=generator, dtype=torch.float64)
    return TrunkHeads(
        trunk=trunk * math.sqrt(2.0 / _N_FEATURES),
        heads=heads / math.sqrt(n_hidden),
        head_bias=torch.zeros(_N_TASKS, dtype=torch.float64),
    )


def relu_gram(U: torch.Tensor) -> torch.Tensor:
    r"""Second moments of :math:`z(x) = (\max(Ux, 0), x, 1)` under :math:`x \sim N(0, I_p)`.

    With :math:`u, u'` rows of :math:`U`, :math:`\rho` the cosine between them
    and :math:`\theta = \arccos\rho` (Cho and Saul's arc-cosine kernel of degree 1):

    .. math::

        E[\max(u^\top x,0)\max(u'^\top x,0)]
            = \frac{\|u\|\|u'\|}{2\pi}\big(\sin\theta + (\pi-\theta)\cos\theta\big),
        \quad E[\max(u^\top x,0)\,x] = \frac u2, \quad E[\max(u^\top x,0)] = \frac{\|u\|}{\sqrt{2\pi}},

    :math:`E[xx^\top] = I`, :math:`E[x] = 0`. The diagonal is :math:`\|u\|^2/2`. Rows
    must be nonzero. Returns the symmetric matrix of order ``U.shape[0] + p + 1``.
    """
    norms = torch.linalg.vector_norm(U, dim=1)
    n_units, p = U.shape
    cosine = (U @ U.T) / (norms[:, None] * norms[None, :])
    off_diagonal = ~torch.eye(n_units, dtype=torch.bool)
    # the diagonal is set apart: arccos is not differentiable at cosine = 1
    theta = torch.arccos(torch.where(off_diagonal, cosine, torch.zeros_like(cosine)).clamp(-1.0, 1.0))
    kernel = (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    kernel = torch.where(off_diagonal, kernel, torch.full_like(kernel, 0.5))
    relu_relu = norms[:, None] * norms[None, :] * kernel
    relu_mean = norms / math.sqrt(2 * math.pi)
    top = torch.cat([relu_relu, U / 2, relu_mean[:, None]], dim=1)
    middle = torch.cat([U.T / 2, torch.eye(p, dtype=U.dtype), torch.zeros(p, 1, dtype=U.dtype)], dim=1)
    bottom = torch.cat([relu_mean, torch.zeros(p, dtype=U.dtype), torch.ones(1, dtype=U.dtype)])[None, :]
    return torch.cat([top, middle, bottom], dim=0)


def population_loss(params: TrunkHeads, teacher: Teacher, trunk_lam: float, head_lam: float):
    r"""The penalized population risk of the trunk-heads network.

    .. math::

        J = \frac12\sum_t E\,(f_t(x) - y_t(x))^2 + \frac{\lambda_s}2\|W_s\|_F^2
            + \frac{\lambda_t}2\sum_t\|v_t\|^2 .

    The residual of task :math:`t` is linear in the features
    :math:`z = (\max(W_s x,0), \max(Bx,0), x, 1)`, with coefficients
    :math:`\beta_t = (v_t, -a_t, -c_t, \text{bias}_t)`, so
    :math:`E(f_t - y_t)^2 = \beta_t^\top G \beta_t` with :math:`G` from :func:`relu_gram`.
    """
    gram = relu_gram(torch.cat([params.trunk, teacher.shared]))
    coefficients = torch.cat([params.heads, -teacher.heads, -teacher.specific, params.head_bias[None, :]])
    risk = 0.5 * torch.sum(coefficients * (gram @ coefficients))
    return risk + 0.5 * trunk_lam * (params.trunk**2).sum() + 0.5 * head_lam * (params.heads**2).sum()


@dataclass(frozen=True)
class Fit:
    """A minimiser found by :func:`fit`, with its largest gradient entry."""

    params: TrunkHeads
    trunk_lam: float
    head_lam: float
    max_gradient: float


def fit(start: TrunkHeads, teacher: Teacher, trunk_lam: float, head_lam: float) -> Fit:
    """Minimise :func:`population_loss` from ``start``: L-BFGS, then exact-Hessian trust-region steps.

    Both scipy methods run on float64 autograd derivatives; the trust-region
    polish converges quadratically, to a gradient at rounding level.
    """

    def objective(vector):
        params = start.from_flat(vector)
        return population_loss(params, teacher, trunk_lam, head_lam)

    def value_and_grad(vector):
        x = torch.as_tensor(vector, dtype=torch.float64).requires_grad_(True)
        loss = objective(x)
        (grad,) = torch.autograd.grad(loss, x)
        return loss.item(), grad.numpy()

    def hessian(vector):
        return torch.autograd.functional.hessian(
            objective, torch.as_tensor(vector, dtype=torch.float64)
        ).numpy()

    rough = scipy.optimize.minimize(
        value_and_grad, start.flat(), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-9}
    )
    polished = scipy.optimize.minimize(
        value_and_grad, rough.x, jac=True, hess=hessian, method="trust-exact", options={"gtol": 1e-14}
    )
    _, gradient = value_and_grad(polished.x)
    return Fit(start.from_flat(polished.x), trunk_lam, head_lam, float(np.max(np.abs(gradient))))


def sweep(teacher: Teacher, ratios, n_hidden: int, seed: int, head_lam: float = HEAD_LAM) -> list[Fit]:
    r"""Fits for :math:`\lambda_s = \lambda_t/\text{ratio}`, largest :math:`\lambda_s` first, warm-started."""
    start = init_network(n_hidden, seed)
    fits = []
    for ratio in sorted(ratios):
        result = fit(start, teacher, head_lam / ratio, head_lam)
        fits.append(result)
        start = result.params
    return fits


def _squared_norms(params: TrunkHeads) -> tuple[np.ndarray, np.ndarray]:
    r"""Per hidden unit: :math:`\|w_j\|^2` and :math:`\sum_t v_{tj}^2`."""
    return (params.trunk**2).sum(dim=1).numpy(), (params.heads**2).sum(dim=1).numpy()


def _checks(fits: list[Fit]) -> list[Check]:
    ratio_errors, imbalances, trunk_norms = [], [], []
    for f in fits:
        trunk_sq, head_sq = _squared_norms(f.params)
        expected = f.head_lam / f.trunk_lam
        ratio_errors.append(abs(trunk_sq.sum() / head_sq.sum() / expected - 1.0))
        total_penalty = f.trunk_lam * trunk_sq.sum() + f.head_lam * head_sq.sum()
        imbalances.append(np.max(np.abs(f.trunk_lam * trunk_sq - f.head_lam * head_sq)) / total_penalty)
        trunk_norms.append(trunk_sq.sum())
    shrinking = int(np.sum(np.diff(trunk_norms) <= 0))
    return [
        Check.close(
            "max |(‖W_s‖² / Σ‖v_t‖²) / (λ_t/λ_s) − 1| over the ratios", max(ratio_errors), 0.0, atol=_RTOL
        ),
        Check.close(
            "max per-unit |λ_s‖w_j‖² − λ_t Σ_t v_tj²| / total penalty", max(imbalances), 0.0, atol=_RTOL
        ),
        Check.at_most(
            "max |∂J/∂θ| at the fits (stationarity)", max(f.max_gradient for f in fits), 0.0, atol=_GTOL
        ),
        Check.equal("steps down in λ_s where ‖W_s‖² does not grow", shrinking, 0),
    ]


def _figure(fits: list[Fit]) -> Figure:
    """Measured ratio against λ_t/λ_s, per-unit balance, and the trunk's share of the squared norm."""
    ratios = np.array([f.head_lam / f.trunk_lam for f in fits])
    norms = [_squared_norms(f.params) for f in fits]
    trunk_total = np.array([t.sum() for t, _ in norms])
    head_total = np.array([h.sum() for _, h in norms])
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_ratio, ax_units, ax_share = fig.subplots(1, 3)
    ax_ratio.loglog(ratios, ratios, color="black", lw=1.0, label="λ_t / λ_s (theory)")
    ax_ratio.loglog(ratios, trunk_total / head_total, "o", color="C0", label="‖W_s‖² / Σ‖v_t‖² (fit)")
    ax_ratio.set_xlabel("λ_t / λ_s")
    ax_ratio.set_title("trunk-to-heads ratio at convergence", fontsize=10)
    ax_ratio.legend(frameon=False)
    for k, (f, (trunk_sq, head_sq)) in enumerate(zip(fits, norms, strict=True)):
        ax_units.loglog(f.trunk_lam * trunk_sq, f.head_lam * head_sq, "o", ms=4, color=f"C{k % 10}")
    low, high = ax_units.get_xlim()
    ax_units.loglog([low, high], [low, high], color="black", lw=1.0)
    ax_units.set_xlabel("λ_s ‖w_j‖² (unit j of the trunk)")
    ax_units.set_ylabel("λ_t Σ_t v_tj² (its head weights)")
    ax_units.set_title("every hidden unit is balanced (colour = ratio)", fontsize=10)
    trunk_lams = np.array([f.trunk_lam for f in fits])
    ax_share.semilogx(trunk_lams, trunk_total / (trunk_total + head_total), "o", color="C0", label="fit")
    ax_share.semilogx(
        trunk_lams, HEAD_LAM / (HEAD_LAM + trunk_lams), color="black", lw=1.0, label="λ_t/(λ_s+λ_t)"
    )
    ax_share.set_ylabel("trunk share of the squared weights", color="C0")
    ax_share.set_xlabel(f"λ_s (λ_t = {HEAD_LAM:g}), decreasing →")
    ax_share.invert_xaxis()
    ax_share.legend(frameon=False, loc="upper left", fontsize=9)
    ax_norm = ax_share.twinx()
    ax_norm.semilogy(trunk_lams, trunk_total, "s-", color="C1")
    ax_norm.set_ylabel("‖W_s‖²", color="C1")
    ax_share.set_title("smaller λ_s: capacity moves into the trunk", fontsize=10)
    for ax in (ax_ratio, ax_units, ax_share, ax_norm):
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    return fig


def run(quick: bool, seed: int) -> Result:
    """Fit the trunk-heads network along the ratio grid and check the balance identity."""
    ratios = _RATIOS[bool(quick)]
    teacher = draw_teacher(seed)
    with single_threaded():
        fits = sweep(teacher, ratios, N_HIDDEN, seed)
    notes = (
        f"{_N_TASKS} regression tasks sharing {_N_SHARED} ReLU features of x ~ N(0, I_{_N_FEATURES}) plus "
        f"task-specific linear parts; a bias-free ReLU trunk of {N_HIDDEN} units and linear heads with "
        f"unpenalized biases, fitted to the population risk by L-BFGS in float64 for "
        f"λ_t/λ_s ∈ {{{', '.join(f'{r:g}' for r in sorted(ratios))}}} at λ_t = {HEAD_LAM:g}."
    )
    return Result(checks=_checks(fits), figures={"balance": _figure(fits)}, notes=notes)


EXPERIMENT = Experiment(
    name="trunk-heads",
    title="Trunk and heads: the ratio of squared norms is λ_t/λ_s",
    seed_section="000 Sculpting Representations in Complex Architectures",
    claim=(
        "At any stationary point of a ReLU trunk with linear heads, every hidden unit balances "
        "λ_s‖w_j‖² = λ_t Σ_t v_tj², so ‖W_s‖²/Σ_t‖v_t‖² = λ_t/λ_s exactly, and a smaller λ_s moves "
        "capacity into the shared trunk."
    ),
    compute=run,
    seed=0,
)
