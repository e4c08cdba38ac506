r"""Constrained = penalized: the multiplier of a norm budget is the penalty strength and the shadow price.

Seed 004 ("A Deeper View: Constrained Optimization and the Lagrangian"):
minimising the loss subject to :math:`\|\theta\|_2^2 \le C` has the Lagrangian
:math:`L(\theta) + \lambda(\|\theta\|_2^2 - C)`; its multiplier :math:`\lambda^\star` plays
the role of the regularization coefficient, it satisfies every KKT condition,
and it is the shadow price of capacity, :math:`dL^\star/dC = -\lambda^\star`.

The text's problem, in closed form
----------------------------------
For :math:`L(\theta) = \tfrac12(\theta_1 - y_1)^2 + \tfrac12(\theta_2 - y_2)^2` stationarity
gives :math:`\theta = y/(1 + 2\lambda)`; with the constraint active
(:math:`C < \|y\|^2`), :math:`\|\theta\|^2 = C` gives

.. math::

    \theta^\star = y\,\frac{\sqrt C}{\|y\|},\qquad
    \lambda^\star = \frac12\Big(\frac{\|y\|}{\sqrt C} - 1\Big),\qquad
    L^\star(C) = \tfrac12(\|y\| - \sqrt C)^2,\qquad
    \frac{dL^\star}{dC} = -\frac{\|y\| - \sqrt C}{2\sqrt C} = -\lambda^\star ,

and for :math:`C \ge \|y\|^2` the constraint is inactive: :math:`\theta^\star = y`,
:math:`\lambda^\star = 0`, :math:`L^\star = 0`. The library's constrained solver
(:func:`normpen.linear.solvers.constrained.constrained` with the L2 ball of
radius :math:`\sqrt C`; the quadratic datafit :math:`\frac1{2n}\|y' - X\theta\|^2` with
:math:`n = 2`, :math:`X = \sqrt2 I`, :math:`y' = \sqrt2 y` is exactly :math:`L`) is run on a
grid of budgets on both sides of :math:`\|y\|^2` and checked against these formulas;
the KKT conditions (stationarity :math:`\theta - y + 2\lambda\theta = 0`, primal and
dual feasibility, complementary slackness) are evaluated from the data; the
shadow price is measured by central differences of :math:`L^\star` in :math:`C`; and
the penalized problem :math:`L + \lambda^\star\|\theta\|^2` (``L2(2 λ*)`` in normpen's
:math:`\tfrac\lambda2\|\theta\|^2` convention), solved independently by the library's
FISTA, returns the constrained solution.

A real design: diabetes
-----------------------
The same statements on scikit-learn's diabetes data (standardized, centred;
averaged squared loss with intercept), where no closed form exists: the
penalized solution is :math:`\theta(\lambda) = (X^\top X/n + 2\lambda I)^{-1}X^\top y/n`, and
the multiplier of :math:`\|\theta\|^2 \le C` is the root of the secular equation
:math:`\|\theta(\lambda)\|^2 = C` (decreasing in :math:`\lambda`; found by Brent's method on
the eigendecomposition of :math:`X^\top X/n`). The solver's :math:`\lambda^\star` must be
that root, its :math:`dL^\star/dC` (central differences) :math:`-\lambda^\star`, and the
library's ridge with :math:`\lambda^\star` must return the constrained solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import brentq

from normpen.datasets import load
from normpen.experiments.base import Check, Experiment, Result, Verdict
from normpen.linear import estimators
from normpen.linear.datafits import Quadratic
from normpen.linear.solvers import constrained as constrained_solver
from normpen.linear.solvers.fista import fista
from normpen.penalties.l2 import L2

__all__ = [
    "EXPERIMENT",
    "toy_target",
    "toy_closed_form",
    "kkt_residual",
    "solve_budget",
    "central_difference",
    "secular_multiplier",
    "run",
]


@dataclass(frozen=True)
class _Size:
    n_active: int
    n_inactive: int


_SIZES = {True: _Size(n_active=8, n_inactive=3), False: _Size(n_active=40, n_inactive=10)}
#: Budgets of the text's problem, as fractions of ‖y‖² (active below 1, inactive above).
_ACTIVE_RANGE, _INACTIVE_RANGE = (0.02, 0.8), (1.25, 3.0)
#: Budgets on diabetes, as fractions of ‖θ_OLS‖².
_DIABETES_FRACTIONS = (0.05, 0.25, 0.5)
#: Relative step of the central differences in C.
_FD_STEP = 1e-4
#: Relative duality-gap tolerance of the constrained and penalized solves.
_SOLVER_TOL = 1e-14

# Tolerances, stated before any measurement.
_EXACT_TOL = 1e-9  # closed forms and KKT residuals (relative to the problem's scale)
_FD_TOL = 1e-6  # central difference: O(h²) truncation plus rounding/h
#: Secular root vs the solver's multiplier, ridge vs the constrained solution: λ* is read off the gradient
#: at a point whose loss is certified to 1e-14 L(0), hence accurate to about √1e-14 times the conditioning.
_DIABETES_TOL = 1e-5
_DIABETES_FD_TOL = 1e-4  # central difference over solves certified to a gap of 1e-14 L(0)


def toy_target(seed: int) -> np.ndarray:
    r"""The text's :math:`(y_1, y_2)`: magnitudes :math:`U[1, 3]`, random signs, seeded."""
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 3.0, size=2) * rng.choice([-1.0, 1.0], size=2)


def toy_closed_form(y: np.ndarray, C: float) -> tuple[np.ndarray, float, float]:
    r"""``(θ*, λ*, L*)`` of :math:`\min\tfrac12\|\theta - y\|^2` s.t. :math:`\|\theta\|^2 \le C` ."""
    norm, radius = float(np.linalg.norm(y)), float(np.sqrt(C))
    if radius >= norm:
        return y.copy(), 0.0, 0.0
    return y * radius / norm, 0.5 * (norm / radius - 1.0), 0.5 * (norm - radius) ** 2


def kkt_residual(gradient: np.ndarray, theta: np.ndarray, lam: float, C: float) -> float:
    r"""Largest KKT residual of :math:`(\theta, \lambda)` for :math:`\min L` s.t. :math:`\|\theta\|^2 \le C`.

    Stationarity :math:`\|\nabla L(\theta) + 2\lambda\theta\|_\infty`, primal feasibility
    :math:`(\|\theta\|^2 - C)_+`, dual feasibility :math:`(-\lambda)_+`, complementary slackness
    :math:`|\lambda(\|\theta\|^2 - C)|`, each relative to :math:`\max(1, C)`.
    """
    slack = float(theta @ theta) - C
    residuals = (
        float(np.max(np.abs(gradient + 2 * lam * theta))),
        max(slack, 0.0),
        max(-lam, 0.0),
        abs(lam * slack),
    )
    return max(residuals) / max(1.0, C)


def solve_budget(X, y, C, fit_intercept):
    r"""Solve :math:`\min \frac1{2n}\|y - X\theta - b\|^2` s.t. :math:`\|\theta\|^2 \le C` with the library.

    ``constrained`` on the L2 ball of radius :math:`\sqrt C`; its ``squared_multiplier``
    is :math:`\lambda^\star`.
    """
    return constrained_solver.constrained(
        X, y, Quadratic(), L2(1.0), np.sqrt(C), fit_intercept=fit_intercept, tol=_SOLVER_TOL, max_iter=100_000
    )


def central_difference(X, y, C, fit_intercept, step=_FD_STEP) -> float:
    r""":math:`(L^\star(C(1+h)) - L^\star(C(1-h)))/(2hC)` from two constrained solves."""
    up = solve_budget(X, y, C * (1 + step), fit_intercept).objective
    down = solve_budget(X, y, C * (1 - step), fit_intercept).objective
    return (up - down) / (2 * step * C)


def secular_multiplier(X, y, C) -> float:
    r"""Root :math:`\lambda` of :math:`\|(X^\top X/n + 2\lambda I)^{-1}X^\top y/n\|^2 = C` by Brent's method.

    Centred data. With :math:`X^\top X/n = V\operatorname{diag}(d)V^\top` and :math:`c = V^\top X^\top y/n`,
    :math:`\|\theta(\lambda)\|^2 = \sum_j c_j^2/(d_j + 2\lambda)^2`, strictly decreasing; 0 when the
    least-squares solution already fits the budget.
    """
    n = X.shape[0]
    d, V = np.linalg.eigh(X.T @ X / n)
    c = V.T @ (X.T @ y) / n

    def excess(lam):
        return float(np.sum(c**2 / (d + 2 * lam) ** 2)) - C

    if excess(0.0) <= 0:
        return 0.0
    upper = 1.0
    while excess(upper) > 0:
        upper *= 2
    return brentq(excess, 0.0, upper, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def _toy_problem(y):
    """The design and target for which the averaged quadratic datafit is exactly ½‖θ − y‖²."""
    return np.sqrt(2.0) * np.eye(2), np.sqrt(2.0) * y


def _diabetes():
    """Standardized, centred diabetes design and centred target."""
    data = load("diabetes")
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    return X, data.y - data.y.mean()


def _penalized_distance(X, y, lam, theta):
    r"""Distance :math:`\|\arg\min(L + \lambda\|\theta\|^2) - \theta\|`, by the library's FISTA.

    Infinite for :math:`\lambda < 0`: a negative multiplier violates dual feasibility
    and has no (convex) penalized twin.
    """
    if lam < 0:
        return np.inf
    penalized = fista(
        X, y, Quadratic(), L2(2 * lam), fit_intercept=False, tol=_SOLVER_TOL, max_iter=1_000
    ).coef
    return float(np.linalg.norm(penalized - theta))


def _toy_checks(y, budgets, quick):
    X, target = _toy_problem(y)
    scale = max(1.0, float(y @ y))
    rows = []
    for C in budgets:
        result = solve_budget(X, target, C, fit_intercept=False)
        theta, lam = np.asarray(result.coef, dtype=float), result.squared_multiplier
        theta_cf, lam_cf, loss_cf = toy_closed_form(y, C)
        rows.append(
            {
                "C": C,
                "theta": theta,
                "lam": lam,
                "loss": result.objective,
                "theta_error": float(np.linalg.norm(theta - theta_cf)) / scale,
                "lam_error": abs(lam - lam_cf) / (1 + lam_cf),
                "loss_error": abs(result.objective - loss_cf) / scale,
                "kkt": kkt_residual(theta - y, theta, lam, C),
                "fd": central_difference(X, target, C, fit_intercept=False),
                "penalized_error": _penalized_distance(X, target, lam, theta) / scale,
            }
        )
    active = [r for r in rows if r["C"] < y @ y]
    inactive = [r for r in rows if r["C"] >= y @ y]
    checks = [
        Check.close(
            "text: max ‖θ_C − y√C/‖y‖‖ over the budgets",
            max(r["theta_error"] for r in rows),
            0.0,
            atol=_EXACT_TOL,
        ),
        Check.close(
            "text: max |λ* − ½(‖y‖/√C − 1)₊| / (1 + λ*)",
            max(r["lam_error"] for r in rows),
            0.0,
            atol=_EXACT_TOL,
        ),
        Check.close(
            "text: max |L* − ½(‖y‖ − √C)₊²|", max(r["loss_error"] for r in rows), 0.0, atol=_EXACT_TOL
        ),
        Check.at_most(
            "text: max KKT residual of (θ_C, λ*), from the data",
            max(r["kkt"] for r in rows),
            0.0,
            atol=_EXACT_TOL,
        ),
        Check.close(
            "text: max |dL*/dC (central difference) + λ*| / (1 + λ*)",
            max(abs(r["fd"] + r["lam"]) / (1 + r["lam"]) for r in rows),
            0.0,
            atol=_FD_TOL,
        ),
        Check.close(
            "text: max ‖argmin L + λ*‖θ‖² − θ_C‖ (FISTA, L2(2λ*))",
            max(r["penalized_error"] for r in rows),
            0.0,
            atol=_EXACT_TOL,
        ),
        Check.at_most(
            "text: max |λ*| over budgets C ≥ ‖y‖² (inactive)",
            max(abs(r["lam"]) for r in inactive),
            0.0,
            atol=_EXACT_TOL,
        ),
        Check.close(
            "text: max |‖θ_C‖²/C − 1| over budgets C < ‖y‖² (binding)",
            max(abs(r["theta"] @ r["theta"] / r["C"] - 1) for r in active),
            0.0,
            atol=_EXACT_TOL,
        ),
    ]
    return checks, rows


def _diabetes_checks():
    X, y = _diabetes()
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    rows = []
    for fraction in _DIABETES_FRACTIONS:
        C = fraction * float(ols @ ols)
        result = solve_budget(X, y, C, fit_intercept=True)
        lam = result.squared_multiplier
        ridge = estimators.Ridge(lam=2 * lam).fit(X, y)
        theta = np.asarray(result.coef, dtype=float)
        rows.append(
            {
                "C": C,
                "lam": lam,
                "secular": secular_multiplier(X, y, C),
                "fd": central_difference(X, y, C, fit_intercept=True),
                "ridge_error": float(np.linalg.norm(ridge.coef_ - theta) / np.linalg.norm(theta)),
            }
        )
    checks = [
        Check.close(
            "diabetes: max |λ* − secular root| / secular root",
            max(abs(r["lam"] / r["secular"] - 1) for r in rows),
            0.0,
            atol=_DIABETES_TOL,
        ),
        Check.close(
            "diabetes: max |dL*/dC (central difference) + λ*| / λ*",
            max(abs(r["fd"] / r["lam"] + 1) for r in rows),
            0.0,
            atol=_DIABETES_FD_TOL,
        ),
        Check.close(
            "diabetes: max ‖Ridge(2λ*) − θ_C‖/‖θ_C‖",
            max(r["ridge_error"] for r in rows),
            0.0,
            atol=_DIABETES_TOL,
        ),
    ]
    return checks, rows, (X, y, ols)


def _geometry_axes(ax, y, rows):
    """Loss contours, three budget circles, the constrained solutions and −∇L there (radial: 2λ*θ)."""
    active = [r for r in rows if r["lam"] > 0]
    picks = [active[len(active) // 4], active[(3 * len(active)) // 4], rows[-1]]
    reach = 1.15 * max(float(np.linalg.norm(y)), float(np.sqrt(picks[-1]["C"])))
    grid = np.linspace(-reach, reach, 200)
    g1, g2 = np.meshgrid(grid, grid)
    ax.contour(g1, g2, 0.5 * ((g1 - y[0]) ** 2 + (g2 - y[1]) ** 2), levels=12, colors="0.8", linewidths=0.7)
    circle = np.linspace(0, 2 * np.pi, 200)
    for k, row in enumerate(picks):
        r = np.sqrt(row["C"])
        ax.plot(r * np.cos(circle), r * np.sin(circle), color=f"C{k}", lw=1, label=f"‖θ‖² = {row['C']:.3g}")
        theta = row["theta"]
        ax.plot(*theta, "o", color=f"C{k}")
        ax.annotate(
            "", xy=theta + 0.5 * (y - theta), xytext=theta, arrowprops={"arrowstyle": "->", "color": f"C{k}"}
        )
    ax.plot(*y, "k*", ms=10, label="y (unconstrained minimum)")
    ax.set_aspect("equal")
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_title("constrained minima; −∇L = 2λ*θ points along θ", fontsize=9)
    ax.legend(frameon=False, fontsize=7, loc="lower left")


def _shadow_price_axes(ax_loss, ax_lam, y, rows):
    """L*(C) with tangents of slope −λ*, and λ*(C): closed form, solver, central differences."""
    norm2 = float(y @ y)
    Cs = np.geomspace(rows[0]["C"], rows[-1]["C"], 300)
    closed = [toy_closed_form(y, C) for C in Cs]
    Cr = np.array([r["C"] for r in rows])
    ax_loss.plot(Cs, [c[2] for c in closed], "k-", lw=1, label="½(‖y‖ − √C)₊² (closed form)")
    ax_loss.plot(Cr, [r["loss"] for r in rows], "o", ms=4, label="constrained solver L*(C)")
    for row in rows[:: max(1, len(rows) // 5)]:
        span = 0.25 * row["C"]
        ax_loss.plot(
            [row["C"] - span, row["C"] + span],
            [row["loss"] + row["lam"] * span, row["loss"] - row["lam"] * span],
            "r-",
            lw=1.2,
        )
    ax_loss.plot([], [], "r-", label="tangent of slope −λ*")
    ax_loss.axvline(norm2, color="0.5", ls=":", lw=1)
    ax_loss.set_xlabel("budget C")
    ax_loss.set_ylabel("L*(C)")
    ax_loss.set_title("the text's problem: shadow price dL*/dC = −λ*", fontsize=9)
    ax_loss.legend(frameon=False, fontsize=7)
    ax_lam.plot(Cs, [c[1] for c in closed], "k-", lw=1, label="½(‖y‖/√C − 1)₊ (closed form)")
    ax_lam.plot(Cr, [r["lam"] for r in rows], "o", ms=4, label="λ* of the solver")
    ax_lam.plot(Cr, [-r["fd"] for r in rows], "x", ms=6, label="−dL*/dC, central difference")
    ax_lam.axvline(norm2, color="0.5", ls=":", lw=1, label="C = ‖y‖²")
    ax_lam.set_xscale("log")
    ax_lam.set_yscale("symlog", linthresh=1e-2)
    ax_lam.set_ylim(bottom=0.0)
    ax_lam.set_xlabel("budget C")
    ax_lam.set_ylabel("λ*")
    ax_lam.set_title("the multiplier, three ways", fontsize=9)
    ax_lam.legend(frameon=False, fontsize=7)


def _diabetes_axes(ax, X, y, ols, rows):
    """λ*(C) on diabetes: secular equation, solver, central differences."""
    full = float(ols @ ols)
    Cs = full * np.geomspace(0.02, 0.95, 60)
    ax.plot(Cs / full, [secular_multiplier(X, y, C) for C in Cs], "k-", lw=1, label="root of ‖θ(λ)‖² = C")
    ax.plot([r["C"] / full for r in rows], [r["lam"] for r in rows], "o", label="λ* of the solver")
    ax.plot(
        [r["C"] / full for r in rows],
        [-r["fd"] for r in rows],
        "x",
        ms=7,
        label="−dL*/dC, central difference",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C / ‖θ_OLS‖²")
    ax.set_ylabel("λ*")
    ax.set_title("diabetes (10 standardized features)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)


def run(quick: bool, seed: int) -> Result:
    """The text's two-parameter problem on a grid of budgets, then diabetes, against closed forms and FD."""
    size = _SIZES[bool(quick)]
    y = toy_target(seed)
    norm2 = float(y @ y)
    budgets = norm2 * np.concatenate(
        [np.geomspace(*_ACTIVE_RANGE, size.n_active), np.geomspace(*_INACTIVE_RANGE, size.n_inactive)]
    )
    toy_checks, toy_rows = _toy_checks(y, budgets, quick)
    diabetes_checks, diabetes_rows, (X, yd, ols) = _diabetes_checks()
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axes = fig.subplots(2, 2)
    _geometry_axes(axes[0, 0], y, toy_rows)
    _shadow_price_axes(axes[0, 1], axes[1, 0], y, toy_rows)
    _diabetes_axes(axes[1, 1], X, yd, ols, diabetes_rows)
    notes = (
        f"The text's L = ½(θ₁ − y₁)² + ½(θ₂ − y₂)² with y = ({y[0]:.3f}, {y[1]:.3f}), ‖y‖² = {norm2:.3f}, on "
        f"{size.n_active} active and {size.n_inactive} inactive budgets C; central differences with step "
        f"{_FD_STEP:g}·C. Diabetes: n = {X.shape[0]}, p = {X.shape[1]}, budgets "
        f"{', '.join(f'{f:g}' for f in _DIABETES_FRACTIONS)} × ‖θ_OLS‖²."
    )
    return Result(checks=[*toy_checks, *diabetes_checks], figures={"lagrangian": fig}, notes=notes)


EXPERIMENT = Experiment(
    name="constrained-penalized",
    title="Constrained = penalized: the multiplier of a norm budget is the penalty and its shadow price",
    seed_section="004 A Deeper View: Constrained Optimization and the Lagrangian",
    claim=(
        "Minimising the loss subject to ‖θ‖² ≤ C gives a multiplier λ* that satisfies every KKT condition, "
        "makes the penalized problem L + λ*‖θ‖² return the same solution, and is the shadow price of "
        "capacity: dL*/dC = −λ*, zero when the budget is not binding."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "confirmed",
        "The multiplier λ* of ‖θ‖² ≤ C satisfies every KKT condition, L + λ*‖θ‖² (the text's penalized J at "
        "strength 2λ*, since J carries λ/2) returns the constrained solution, dL*/dC = −λ* (the shadow "
        "price), and λ* = 0 exactly when the budget does not bind: in the text's two-parameter example in "
        "closed form and on the diabetes data.",
    ),
)
