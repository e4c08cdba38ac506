r"""Path norm against L2 on the same ReLU network: which gives the simpler function?

Seed 004 ("Path Norms and Model Symmetries") argues that the L2 norm penalises
two functionally identical ReLU networks differently, so "minimizing this path
norm encourages a more meaningful form of simplicity". This experiment trains
the same one-hidden-layer network :math:`f(x) = \sum_j v_j\,\mathrm{relu}(w_j x + b_j) + c`
on the same data with each penalty and compares the functions.

What theory says
----------------
- **L2 at its minimisers is a path norm.** Write :math:`u_j = (w_j, b_j)`. The
  rescaling :math:`u_j \to \alpha u_j`, :math:`v_j \to v_j/\alpha` keeps :math:`f`, and
  :math:`\|u_j\|^2 + v_j^2 \ge 2|v_j|\|u_j\|` with equality at the balanced scale
  :math:`\|u_j\| = |v_j|` (AM-GM). A minimiser of loss :math:`+\ \lambda\|\theta\|^2` is
  balanced (otherwise rebalancing lowers the penalty and keeps the loss), so
  there :math:`\|\theta\|^2 = 2\sum_j |v_j|\|u_j\|`, a rescaling-invariant norm of the
  paths grouped by unit (Neyshabur, Tomioka and Srebro, COLT 2015). The text's
  objection (L2 is not invariant) does not reach the regularised *function*.
- **The simplicity both control.** In one dimension the kink of unit :math:`j`
  changes the slope by :math:`v_j w_j`, so the total variation of the slope on the
  domain, :math:`\int|f''| = \sum_{\text{kinks inside}} |v_j w_j|`, is at most
  :math:`\sum_j|v_j|\|u_j\|` (half the balanced L2 penalty), and it is the L2
  representation cost of a one-dimensional function (Savarese, Evron, Soudry
  and Srebro, COLT 2019): L2 training minimises :math:`\int|f''|`, a sum over units
  that favours few kinks. The text's path norm, the sum of the *squared* path
  products, :math:`\phi_2^2 = \sum_j v_j^2\|u_j\|^2 + c^2`, is a sum of squares over
  units and spreads the slope changes over many small kinks. We measure
  :math:`\int|f''|`, the Lipschitz constant :math:`\max|f'|` on the domain (bounded by
  :math:`\int|f''|` plus the slope at one end) and the number of linear pieces
  (kinks inside the domain whose slope change exceeds :math:`10^{-3}` of the
  Lipschitz constant).

Set-up
------
Twelve noisy samples of :math:`\sin\pi x` on :math:`[-1, 1]`, 32 hidden units, float64,
the same initialisation for both penalties, full-batch L-BFGS. Each strength
:math:`\lambda` is set by bisection on :math:`\log\lambda` so that the training mean
squared error reaches :data:`TARGET_MSE` (twice the noise variance) from below:
the two fits are compared at the same training error.

Checks
------
- theory: after :func:`~normpen.analysis.rebalance` of the L2 fit (biases
  counted) the function is unchanged (:math:`10^{-12}` relative) and
  :math:`\|\theta\|^2 = 2\sum_j|v_j|\|u_j\|` (:math:`10^{-9}`, rebalance's tolerance
  :math:`10^{-12}` on :math:`\log\alpha`), and it is no larger than before (AM-GM);
  :math:`\int|f''|` computed from the kinks equals the finite-difference total
  variation of :math:`f'` on a fine grid (:math:`10^{-6}`);
- both fits reach the target error (bisection from below, within 20 %:
  empirical, since a non-convex fit's error can jump with :math:`\lambda`; 29 and
  30 of 30 seeds);
- the comparison: :math:`\int|f''|`, Lipschitz constant and pieces of the
  :math:`\phi_2` fit against the L2 fit. Whether the path norm gives the simpler
  function is the claim under test; the ratios are empirical (one random data
  set per seed) and carry their pass rates over the seed sweep: the
  :math:`\phi_2` fit is not simpler by :math:`\int|f''|` on 28 of 30 seeds (ratio
  0.94 to 1.20), by the Lipschitz constant on 24, by the piece count on 25.
  Under portable kernels (``MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default``,
  one thread) the same sweep gives 27, 23 and 28 (and 30 of 30 for both
  targets): the L-BFGS fits of a non-convex problem follow the kernels' last
  bits, which is why these checks are empirical.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from normpen._threads import single_threaded
from normpen.analysis.pathnorm import path_norm, rebalance
from normpen.experiments.base import Check, Experiment, Result, Verdict

__all__ = [
    "EXPERIMENT",
    "PENALTIES",
    "TARGET_MSE",
    "make_data",
    "network",
    "squared_weights",
    "squared_path_norm",
    "kink_measures",
    "fit_at_target",
    "run",
]

WIDTH = 32
NOISE = 0.1
#: Training mean squared error both fits are brought to: twice the noise variance.
TARGET_MSE = 2 * NOISE**2
_N_SAMPLES = 12
#: Bisection bracket of log λ.
_LOG_LAM = (math.log(1e-5), math.log(1.0))
#: Slope changes below this fraction of the Lipschitz constant do not count as a piece.
_PIECE_FLOOR = 1e-3
_ROUNDOFF = 1e-12
#: rebalance stops when no log α moves by more than 1e-12: the balanced identity holds to about that, with
#: the slack of float64 sums over 32 units.
_BALANCE_ATOL = 1e-9
#: Finite differences of f' on 20001 grid points: a kink between two grid points is seen exactly; the
#: only error is rounding of f' (about 1e-15 relative per difference), summed over the kinks.
_TV_RTOL = 1e-6
#: Both fits reach the target error from below; bisection of log λ over 14 (quick: 8) halvings usually
#: leaves them within 20 % of it, but the error of a non-convex fit can jump with λ: empirical.
_TARGET_RTOL = 0.2
#: Pass rates of the empirical checks over seeds 0–29 of the quick sweep.
_RATES = {
    "L2 ‖θ‖²": 29 / 30,
    "path norm φ₂²": 30 / 30,
    "total variation": 28 / 30,
    "lipschitz": 24 / 30,
    "pieces": 25 / 30,
}


@dataclass(frozen=True)
class _Size:
    bisections: int
    max_iter: int


_SIZES = {True: _Size(bisections=8, max_iter=300), False: _Size(bisections=14, max_iter=1000)}


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Twelve sorted points on [−1, 1] and noisy targets sin(πx) + 0.1·N(0, 1), float64."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1.0, 1.0, _N_SAMPLES))
    y = np.sin(np.pi * x) + NOISE * rng.standard_normal(_N_SAMPLES)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y)


def network(seed: int) -> torch.nn.Sequential:
    """The seeded one-hidden-layer ReLU network 1-32-1, float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(1, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 1)
        ).double()


def _units(model):
    """Per hidden unit: u_j = (w_j, b_j), shape (WIDTH, 2), and v_j, shape (WIDTH,)."""
    u = torch.cat([model[0].weight, model[0].bias[:, None]], dim=1)
    return u, model[2].weight[0]


def squared_weights(model) -> torch.Tensor:
    r""":math:`\|\theta\|^2 = \sum_j \|u_j\|^2 + v_j^2`: every weight and hidden bias, not the output bias."""
    u, v = _units(model)
    return u.square().sum() + v.square().sum()


def squared_path_norm(model) -> torch.Tensor:
    r"""The text's path norm: the sum of the squared path products, :math:`\phi_2^2` (:func:`path_norm`)."""
    return path_norm(model, 2) ** 2


#: The two penalties compared, by name.
PENALTIES = {"L2 ‖θ‖²": squared_weights, "path norm φ₂²": squared_path_norm}


def _mse(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X)[:, 0] - y).square().mean())


def _fit(penalty, lam, seed, X, y, max_iter):
    """Loss + λ·penalty minimised by L-BFGS from the seeded initialisation."""
    model = network(seed)
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = (model(X)[:, 0] - y).square().mean() + lam * penalty(model)
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def fit_at_target(penalty, seed, X, y, size) -> tuple[torch.nn.Sequential, float]:
    """The fit whose λ, by bisection on log λ, is the largest found with training MSE ≤ :data:`TARGET_MSE`."""
    low, high = _LOG_LAM
    best = _fit(penalty, math.exp(low), seed, X, y, size.max_iter)
    for _ in range(size.bisections):
        middle = 0.5 * (low + high)
        model = _fit(penalty, math.exp(middle), seed, X, y, size.max_iter)
        if _mse(model, X, y) > TARGET_MSE:
            high = middle
        else:
            low, best = middle, model
    return best, math.exp(low)


@dataclass(frozen=True)
class KinkMeasures:
    """Simplicity of a fitted 1-D network on [−1, 1]: ∫|f''|, max |f'| and the number of linear pieces."""

    total_variation: float
    lipschitz: float
    pieces: int


def kink_measures(model) -> KinkMeasures:
    r""":math:`\int_{-1}^1|f''| = \sum_{\text{kinks inside}}|v_jw_j|`, :math:`\max|f'|` and the pieces."""
    with torch.no_grad():
        w, b = model[0].weight[:, 0].numpy(), model[0].bias.numpy()
        v = model[2].weight[0].numpy()
    moving = w != 0
    kinks = np.where(moving, -b / np.where(moving, w, 1.0), np.inf)
    inside = np.abs(kinks) < 1.0
    jumps = np.abs(v * w)
    ends = np.concatenate([[-1.0], np.sort(kinks[inside]), [1.0]])
    midpoints = torch.from_numpy(0.5 * (ends[:-1] + ends[1:]))[:, None].requires_grad_(True)
    (slopes,) = torch.autograd.grad(model(midpoints).sum(), midpoints)
    lipschitz = float(slopes.abs().max())
    pieces = 1 + int(np.sum(inside & (jumps > _PIECE_FLOOR * lipschitz)))
    return KinkMeasures(float(jumps[inside].sum()), lipschitz, pieces)


def _grid_total_variation(model) -> float:
    """Total variation of f' from finite differences on 20001 points of [−1, 1] (independent of the kinks)."""
    grid = torch.linspace(-1.0, 1.0, 20001, dtype=torch.float64)[:, None].requires_grad_(True)
    (slopes,) = torch.autograd.grad(model(grid).sum(), grid)
    return float(slopes[:, 0].diff().abs().sum())


def _balance_checks(model, X) -> list[Check]:
    balanced = copy.deepcopy(model)
    rebalance(balanced, include_bias=True)
    with torch.no_grad():
        before = float(squared_weights(model))
        u, v = _units(balanced)
        group = float(2 * (torch.linalg.vector_norm(u, dim=1) * v.abs()).sum())
        grid = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)[:, None]
        outputs, rebalanced_outputs = model(grid), balanced(grid)
        after = float(squared_weights(balanced))
    return [
        Check.at_most(
            "L2 fit rebalanced: max output change / max |f|",
            float((outputs - rebalanced_outputs).abs().max() / outputs.abs().max()),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.close(
            "L2 fit rebalanced: ‖θ‖² / (2Σⱼ|vⱼ|‖uⱼ‖) (L2 at balance = the group path norm)",
            after / group,
            1.0,
            atol=_BALANCE_ATOL,
        ),
        Check.at_most(
            "L2 fit: ‖θ‖² after rebalancing / before (AM-GM: ≤ 1)", after / before, 1.0, atol=_ROUNDOFF
        ),
    ]


def _figure(X, y, fits, measures) -> Figure:
    """The two fits and their slopes f′ on [−1, 1]."""
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax_fit, ax_slope = fig.subplots(1, 2)
    grid = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)[:, None].requires_grad_(True)
    ax_fit.plot(X[:, 0].numpy(), y.numpy(), "ko", ms=5, label="training data")
    for k, (name, model) in enumerate(fits.items()):
        values = model(grid)
        (slopes,) = torch.autograd.grad(values.sum(), grid)
        m = measures[name]
        label = f"{name}: ∫|f″| = {m.total_variation:.2f}, pieces {m.pieces}"
        ax_fit.plot(
            grid[:, 0].detach().numpy(), values[:, 0].detach().numpy(), color=f"C{k}", lw=1.8, label=label
        )
        ax_slope.plot(grid[:, 0].detach().numpy(), slopes[:, 0].numpy(), color=f"C{k}", lw=1.5, label=name)
    ax_fit.set_xlabel("x")
    ax_fit.set_title(f"fits at the same training MSE ≤ {TARGET_MSE:g}", fontsize=10)
    ax_fit.legend(frameon=False, fontsize=8)
    ax_slope.set_xlabel("x")
    ax_slope.set_ylabel("f′(x)")
    ax_slope.set_title("slope: each step is a kink (|jump| = |vⱼwⱼ|)", fontsize=10)
    ax_slope.legend(frameon=False, fontsize=8)
    return fig


def run(quick: bool, seed: int) -> Result:
    """Fit the network with each penalty at the same training error; compare ∫|f''|, Lipschitz, pieces."""
    size = _SIZES[bool(quick)]
    X, y = make_data(seed)
    with single_threaded():
        fitted = {name: fit_at_target(penalty, seed, X, y, size) for name, penalty in PENALTIES.items()}
        fits = {name: model for name, (model, _) in fitted.items()}
        measures = {name: kink_measures(model) for name, model in fits.items()}
        l2_name, path_name = PENALTIES
        checks = _balance_checks(fits[l2_name], X)
        checks.append(
            Check.close(
                "∫|f″| from the kinks vs the finite-difference total variation of f′ (L2 fit)",
                measures[l2_name].total_variation,
                _grid_total_variation(fits[l2_name]),
                rtol=_TV_RTOL,
            )
        )
        for name, model in fits.items():
            checks.append(
                Check.close(
                    f"{name}: training MSE vs target",
                    _mse(model, X, y),
                    TARGET_MSE,
                    rtol=_TARGET_RTOL,
                    pass_rate=_RATES[name],
                )
            )
    l2, path = measures[l2_name], measures[path_name]
    checks += [
        Check.at_least(
            "∫|f″|: path-norm fit / L2 fit (≥ 1: the path norm is not simpler)",
            path.total_variation / l2.total_variation,
            1.0,
            pass_rate=_RATES["total variation"],
        ),
        Check.at_least(
            "Lipschitz constant: path-norm fit / L2 fit (≥ 1: not simpler)",
            path.lipschitz / l2.lipschitz,
            1.0,
            pass_rate=_RATES["lipschitz"],
        ),
        Check.at_least(
            "linear pieces: path-norm fit − L2 fit (≥ 0: not simpler)",
            path.pieces - l2.pieces,
            0,
            pass_rate=_RATES["pieces"],
        ),
    ]
    lams = ", ".join(f"{name}: λ = {lam:.3g}" for name, (_, lam) in fitted.items())
    summary = "; ".join(
        f"{name}: ∫|f″| = {m.total_variation:.3g}, max|f′| = {m.lipschitz:.3g}, {m.pieces} pieces"
        for name, m in measures.items()
    )
    notes = (
        f"{_N_SAMPLES} samples of sin(πx) + {NOISE:g}·N(0, 1) on [−1, 1], network 1-{WIDTH}-1 (ReLU), "
        f"float64, L-BFGS from one initialisation; λ by {size.bisections} bisections of log λ to training "
        f"MSE ≤ {TARGET_MSE:g} ({lams}). {summary}."
    )
    return Result(checks=checks, figures={"fits": _figure(X, y, fits, measures)}, notes=notes)


EXPERIMENT = Experiment(
    name="path-norm-simplicity",
    title="Path norm vs L2 on the same ReLU network: which function is simpler?",
    seed_section="004 Path Norms and Model Symmetries",
    claim=(
        "Minimising the path norm gives a simpler function than L2 on the same ReLU network, measured by "
        "the total variation of the slope ∫|f″|, the Lipschitz constant and the number of linear pieces at "
        "the same training error."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "refuted",
        "At its minimisers the L2 penalty equals the rescaling-invariant group path norm 2Σ|vⱼ|‖uⱼ‖ (every "
        "seed), so L2 already regularises the function, not the parametrisation; and at the same training "
        "error the fit of the text's path norm (sum of squared path products) is not simpler: its ∫|f″| is "
        "larger on 28 of 30 draws (ratio 0.94 to 1.20), its Lipschitz constant on 24, its piece count on "
        "25 (ties included).",
        evidence=(
            "L2 fit rebalanced: ‖θ‖² / (2Σⱼ|vⱼ|‖uⱼ‖) (L2 at balance = the group path norm)",
            "∫|f″|: path-norm fit / L2 fit (≥ 1: the path norm is not simpler)",
        ),
    ),
)
