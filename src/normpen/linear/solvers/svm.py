r"""Linear support vector machines: the soft margin by dual coordinate descent, the hard margin exactly.

Soft margin (:func:`linear_svm`), in normpen's convention (datafits averaged
over samples, L2 as :math:`\tfrac\lambda2\|w\|^2`), with labels
:math:`y_i \in \{-1, +1\}`, sample weights :math:`s_i` and :math:`a_i = s_i/\sum_k s_k`:

.. math::

    \min_{w, b}\; P(w, b) = \frac\lambda2\|w\|^2 + \sum_i a_i\, \varphi\big(y_i(x_i^\top w + b)\big),
    \qquad \varphi(t) = \max(0, 1-t) \text{ (hinge) or } \max(0, 1-t)^2 \text{ (squared hinge)}.

Dividing by :math:`\lambda` gives liblinear's :math:`\tfrac12\|w\|^2 + \sum_i C_i\varphi(\cdot)`
with :math:`C_i = a_i/\lambda`; without weights that is scikit-learn's
``LinearSVC(C=1/(n*lam))`` (with ``sample_weight=s``: ``C = 1/(lam*sum(s))``),
except for the intercept, which liblinear penalizes and normpen does not.

The solver is the dual coordinate descent of Hsieh, Chang, Lin, Keerthi and
Sundararajan (ICML 2008), liblinear's algorithm. The dual is

.. math::

    \min_{\alpha}\; \tfrac12 \alpha^\top(\bar Q)\alpha - \textstyle\sum_i \alpha_i,
    \qquad \bar Q_{ij} = y_iy_j x_i^\top x_j + D_{ii}\delta_{ij},\quad 0 \le \alpha_i \le U_i,

with :math:`U_i = C_i, D_{ii} = 0` (hinge) or :math:`U_i = \infty, D_{ii} = 1/(2C_i)`
(squared hinge), and :math:`w = \sum_i \alpha_i y_i x_i` kept up to date so a
coordinate step costs one sparse row. Coordinates are visited in a fresh random
permutation every epoch, and variables stuck at a bound are shrunk (removed
until the active problem converges) as in the paper's Algorithm 3.

The unpenalized intercept adds the equality :math:`\sum_i \alpha_i y_i = 0` to
the dual, which single-coordinate steps cannot keep. normpen treats it exactly
by the method of multipliers on that constraint: each outer step minimises
:math:`\tfrac12\alpha^\top\bar Q\alpha - \sum\alpha_i + \beta_k\, y^\top\alpha + \tfrac\rho2 (y^\top\alpha)^2`
by the same coordinate descent (the coordinate gradient is the hinge's with the
running intercept :math:`b = \beta_k + \rho\, y^\top\alpha`, and
:math:`\bar Q_{ii}` grows by :math:`\rho`), then sets :math:`\beta_{k+1} = \beta_k + \rho\, y^\top\alpha`.
This is the proximal-point method on the intercept of the primal: it converges
to the unpenalized intercept (with exact inner solves, in finitely many outer
steps for the piecewise-linear hinge: Ferris, 1991), unlike liblinear's
constant feature, whose intercept is shrunk towards 0. Each inner problem is
solved until the spread of projected gradients is below a tolerance that
shrinks tenfold per outer step (an inexact method of multipliers with summable
errors). Two choices make it fast: the design is
centred, :math:`\tilde x_i = x_i - \bar x` with :math:`\bar x = \sum_i a_i x_i`
(exact, since :math:`x_i^\top w + b = \tilde x_i^\top w + (b + \bar x^\top w)`,
and done implicitly so sparse rows stay sparse), which decouples the intercept
from :math:`w`; and :math:`\rho` is a tenth of the mean of
:math:`\|\tilde x_i\|^2`, which keeps the coordinate steps well scaled.

Stopping uses the duality gap :math:`P(w, b) - D(\tilde\alpha)`, where
:math:`\tilde\alpha` is :math:`\alpha` with the heavier class scaled down so that
:math:`y^\top\tilde\alpha = 0` (a feasible dual point), and :math:`D` is the dual
objective in our scale, computed from the datafit's conjugate
(:meth:`normpen.linear.datafits.base.Datafit.dual`) at
:math:`u_i = -\lambda\tilde\alpha_i y_i / a_i`. The solve stops when the gap is
at most ``tol`` times :math:`P` at :math:`w = 0` (with the best constant
intercept), and warns with the gap it reached otherwise.

Hard margin (:func:`hard_margin_svm`), seed 004's "minimise the norm subject to
the margin":

.. math::

    \min_{w,b}\; \tfrac12\|w\|^2 \quad\text{s.t.}\quad y_i(x_i^\top w + b) \ge 1 \;\; \forall i .

Separability is decided first by a linear program (HiGHS through
:func:`scipy.optimize.linprog`): the constraints are feasible exactly when the
data are strictly linearly separable, and an infeasible program raises
:class:`NotSeparableError`. From the feasible point of that program a primal
active-set method (Nocedal and Wright, Algorithm 16.3) solves the QP exactly: on
a working set :math:`W` of constraints held at equality the minimiser follows
from the small linear system

.. math::

    \begin{pmatrix} K_{WW} & y_W \\ y_W^\top & 0\end{pmatrix}
    \begin{pmatrix} \alpha_W \\ b \end{pmatrix} = \begin{pmatrix} 1 \\ 0 \end{pmatrix},
    \qquad K_{ij} = y_iy_j x_i^\top x_j,\quad w = \textstyle\sum_{i\in W}\alpha_i y_i x_i,

a ratio test adds the first constraint that blocks the step, and a negative
multiplier drops its constraint. At exit every KKT condition holds to rounding:
the residuals are returned as a certificate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import daxpy, ddot
from scipy.optimize import linprog
from sklearn.exceptions import ConvergenceWarning

from normpen._array import check_positive
from normpen.linear._validation import check_count, check_design, check_target_array, check_tol
from normpen.linear.datafits.base import normalize_weights
from normpen.linear.datafits.hinge import Hinge
from normpen.linear.datafits.squared_hinge import SquaredHinge

__all__ = ["NotSeparableError", "LinearSVMResult", "HardMarginResult", "linear_svm", "hard_margin_svm"]

_DATAFITS = {"hinge": Hinge(), "squared_hinge": SquaredHinge()}
_RHO_SCALE = 0.1  # rho as a fraction of the mean squared row norm of the centred design


class NotSeparableError(ValueError):
    """The classes cannot be split by a hyperplane, so the hard-margin SVM has no solution."""


@dataclass(frozen=True, eq=False)
class LinearSVMResult:
    r"""Solution of the soft-margin linear SVM.

    Attributes
    ----------
    coef : ndarray of shape (p,)
        :math:`w`, in the dtype of ``X``.
    intercept : float
        :math:`b` (0.0 without an intercept).
    dual_coef : ndarray of shape (n,)
        :math:`\alpha`, with :math:`0 \le \alpha_i \le C_i = a_i/\lambda` (hinge) and
        :math:`w = \sum_i \alpha_i y_i x_i`; the support vectors are the :math:`\alpha_i > 0`.
    objective : float
        :math:`P(w, b)`.
    dual_gap : float
        The duality gap reached, in the units of :math:`P` (an upper bound on
        :math:`P(w, b) - P^\star`).
    gap_scale : float
        :math:`P_0`, the objective at :math:`w = 0` with the best constant intercept.
    n_iter : int
        Epochs (passes over the active coordinates).
    converged : bool
        Whether ``dual_gap <= tol * gap_scale`` was reached.
    """

    coef: np.ndarray
    intercept: float
    dual_coef: np.ndarray
    objective: float
    dual_gap: float
    gap_scale: float
    n_iter: int
    converged: bool


@dataclass(frozen=True, eq=False)
class HardMarginResult:
    r"""Solution of the hard-margin SVM :math:`\min \tfrac12\|w\|^2` s.t. :math:`y_i(x_i^\top w + b) \ge 1`.

    Attributes
    ----------
    coef : ndarray of shape (p,)
        :math:`w`.
    intercept : float
        :math:`b` (0.0 without an intercept).
    margin : float
        The geometric margin :math:`1/\|w\|`, the distance from the hyperplane to
        the closest points.
    support : ndarray of int
        Indices of the support vectors, the samples with :math:`\alpha_i > 0`.
    dual_coef : ndarray of shape (n,)
        :math:`\alpha \ge 0` with :math:`w = \sum_i \alpha_i y_i x_i` and
        :math:`\sum_i\alpha_i y_i = 0` (with an intercept).
    dual_gap : float
        :math:`\tfrac12\|w\|^2 - (\sum_i\alpha_i - \tfrac12\|\sum_i\alpha_iy_ix_i\|^2)`,
        zero to rounding relative to :math:`\tfrac12\|w\|^2`.
    kkt : dict of str to float
        KKT residuals, each relative to the size of the solution so that they
        do not depend on the scale of ``X`` (with :math:`m_i = y_i(x_i^\top w+b)`):
        ``primal_infeasibility`` :math:`\max_i (1 - m_i)_+`,
        ``dual_infeasibility`` :math:`\max_i(-\alpha_i)_+ / \max_i\alpha_i`,
        ``stationarity`` :math:`\max(\|w - \sum_i\alpha_iy_ix_i\|_\infty / \|w\|_\infty,
        |\sum_i\alpha_iy_i| / \sum_i\alpha_i)`,
        ``complementary_slackness`` :math:`\max_i \alpha_i|m_i - 1| / \max_i\alpha_i`.
    n_iter : int
        Active-set iterations.
    """

    coef: np.ndarray
    intercept: float
    margin: float
    support: np.ndarray
    dual_coef: np.ndarray
    dual_gap: float
    kkt: dict
    n_iter: int


def _check_labels(X, y, sample_weight):
    """Validated ``(X, y, a)``: float design, labels in {-1, +1} with both classes of positive weight."""
    X = check_design(X)
    y = Hinge().encode_target(check_target_array(X, y))
    a = normalize_weights(sample_weight, X.shape[0], np.zeros(1, dtype=np.float64))
    weighted = a > 0
    if not (np.any(y[weighted] > 0) and np.any(y[weighted] < 0)):
        raise ValueError(
            "y must contain both classes -1 and +1 among the samples of positive weight; "
            "a classifier needs two classes"
        )
    return X, y, a


def _float64_rows(X):
    """``X`` in float64 (C-ordered dense or canonical CSR) and its rows as fast-access objects."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        X.sum_duplicates()
        bounds = zip(X.indptr[:-1], X.indptr[1:], strict=True)
        return X, [(X.data[s:e], X.indices[s:e]) for s, e in bounds]
    X = np.ascontiguousarray(X, dtype=np.float64)
    return X, list(X)


def _row_kernels(u, sparse):
    """``(dot(row), axpy(row, step))`` on the vector ``u``, updated in place: BLAS for dense rows."""
    if sparse:

        def dot(row):
            return row[0] @ u[row[1]]

        def axpy(row, step):
            u[row[1]] += step * row[0]

        return dot, axpy
    return (lambda row: ddot(row, u)), (lambda row, step: daxpy(row, u, a=step))


def _row_sq_norms(X):
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", X, X)


class _DualCoordinateDescent:
    r"""State of the dual coordinate descent on the centred design :math:`\tilde X = X - 1c^\top`.

    With an intercept, :math:`c = \sum_i a_i x_i`; the problem is unchanged
    (:math:`x_i^\top w + b = \tilde x_i^\top w + b'` with :math:`b = b' - c^\top w`),
    but the intercept decouples from :math:`w` and the multiplier iteration
    converges far faster on off-centre data. :math:`\tilde X` is never formed:
    :math:`w = u - (y^\top\alpha)\,c` with :math:`u = \sum_i \alpha_i y_i x_i` kept
    as liblinear keeps :math:`w`, and :math:`u^\top c`, :math:`Xc`, :math:`\|c\|^2`
    carried as numbers, so a step still costs one (sparse) row.
    """

    def __init__(self, X, y, a, lam, loss, fit_intercept, dual_init):
        self.X, self.rows = _float64_rows(X)
        self.sparse = sp.issparse(self.X)
        self.y, self.a, self.lam = y.astype(np.float64), a, lam
        self.datafit = _DATAFITS[loss]
        weighted = a > 0
        self.c = np.asarray(self.X.T @ a).ravel() if fit_intercept else np.zeros(self.X.shape[1])
        self.xc = np.asarray(self.X @ self.c).ravel()
        self.cc = float(self.c @ self.c)
        sq_norms = np.clip(_row_sq_norms(self.X) - 2 * self.xc + self.cc, 0, None)  # ||x_i - c||^2
        self.rho = (_RHO_SCALE * float(sq_norms[weighted].mean()) or 1.0) if fit_intercept else 0.0
        safe_a = np.where(weighted, a, 1.0)
        if loss == "hinge":
            self.upper = np.where(weighted, a / lam, 0.0)
            self.extra_diag = np.zeros_like(a)
        else:
            self.upper = np.where(weighted, np.inf, 0.0)
            self.extra_diag = np.where(weighted, lam / (2 * safe_a), 0.0)
        q_diag = sq_norms + self.rho + self.extra_diag
        # a zero row of the hinge without intercept has a linear dual: its step goes to the bound
        self.inv_q_diag = np.divide(1.0, q_diag, out=np.full_like(q_diag, np.inf), where=q_diag > 0)
        alpha = np.zeros_like(a) if dual_init is None else np.clip(dual_init, 0, self.upper)
        self.u = np.asarray(self.X.T @ (alpha * self.y)).ravel()
        self.uc = float(self.u @ self.c)
        self.y_alpha = float(alpha @ self.y)
        # per-sample numbers as Python lists: the coordinate loop indexes them one at a time
        self.alpha_list = alpha.tolist()
        self._y, self._upper, self._extra = self.y.tolist(), self.upper.tolist(), self.extra_diag.tolist()
        self._inv_q, self._xc = self.inv_q_diag.tolist(), self.xc.tolist()
        self._shift = (self.cc + self.rho - self.xc).tolist()
        self._dot, self._axpy = _row_kernels(self.u, self.sparse)
        # beta_k, the multiplier of y^T alpha = 0, set so that the running intercept starts
        # at the best one for the initial w (the best constant for a cold start)
        self.center = 0.0
        if fit_intercept:
            z = np.asarray(self.X @ self.coef).ravel() - float(self.c @ self.coef)
            self.center = _best_intercept(self.datafit, self.y, z, a) - self.rho * self.y_alpha

    @property
    def coef(self):
        r""":math:`w = u - (y^\top\alpha)\,c = \sum_i \alpha_i y_i \tilde x_i`."""
        return self.u - self.y_alpha * self.c

    @property
    def centred_intercept(self):
        r"""The running intercept :math:`b' = \beta_k + \rho\, y^\top\alpha` of the centred problem."""
        return self.center + self.rho * self.y_alpha

    @property
    def intercept(self):
        r"""The intercept :math:`b = b' - c^\top w` of the original problem."""
        return self.centred_intercept - float(self.c @ self.coef)

    def update_multiplier(self):
        r"""Method-of-multipliers step :math:`\beta_{k+1} = \beta_k + \rho\, y^\top\alpha`."""
        self.center = self.centred_intercept

    def epoch(self, order, shrink_above, shrink_below):
        """One pass over ``order``; returns ``(max PG, min PG, kept indices)``.

        A variable at its lower (upper) bound whose gradient exceeds
        ``shrink_above`` (is below ``shrink_below``) is left out of the kept
        indices: Hsieh et al.'s shrinking. The loop runs on Python floats and
        lists, with BLAS ``ddot``/``daxpy`` on dense rows: per coordinate, the
        interpreter's overhead is what costs.
        """
        alpha, upper, extra, inv_q, y = self.alpha_list, self._upper, self._extra, self._inv_q, self._y
        shift, rows, dot, axpy = self._shift, self.rows, self._dot, self._axpy
        pg_max, pg_min, kept = -math.inf, math.inf, []
        s, uc, center = self.y_alpha, self.uc, self.center
        for i in order.tolist():
            row = rows[i]
            yi, ai = y[i], alpha[i]
            # x~_i . w + b' = x_i . u - s x_i . c - u . c + s ||c||^2 + center + rho s, with w = u - s c
            grad = yi * (dot(row) + s * shift[i] - uc + center) - 1.0 + extra[i] * ai
            if ai == 0.0:
                if grad > shrink_above:
                    continue
                pg = min(grad, 0.0)
            elif ai == upper[i]:
                if grad < shrink_below:
                    continue
                pg = max(grad, 0.0)
            else:
                pg = grad
            kept.append(i)
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > 1e-14:
                new = min(max(ai - grad * inv_q[i], 0.0), upper[i])
                step = (new - ai) * yi
                alpha[i] = new
                axpy(row, step)
                uc += step * self._xc[i]
                s += step
        self.y_alpha, self.uc = s, uc
        return pg_max, pg_min, kept

    @property
    def alpha(self):
        """:math:`\alpha` as an array."""
        return np.asarray(self.alpha_list)

    def objective(self):
        """Primal :math:`P(w, b)` at the current :math:`w` and running intercept."""
        w = self.coef
        z = np.asarray(self.X @ w).ravel() + self.intercept
        return 0.5 * self.lam * float(w @ w) + float(self.datafit.value(self.y, z, self.a))

    def dual_objective(self):
        r"""Dual objective at :math:`\alpha` made feasible (heavier class scaled down, with an intercept)."""
        alpha = self.alpha
        if self.rho:
            positive, negative = alpha[self.y > 0].sum(), alpha[self.y < 0].sum()
            heavy = self.y > 0 if positive > negative else self.y < 0
            scale = min(positive, negative) / max(positive, negative) if max(positive, negative) > 0 else 1.0
            alpha = np.where(heavy, scale * alpha, alpha)
        w = np.asarray(self.X.T @ (alpha * self.y)).ravel()  # y^T alpha = 0: centring drops out
        weighted = self.a > 0
        u = np.where(weighted, -self.lam * alpha * self.y / np.where(weighted, self.a, 1.0), 0.0)
        return float(self.datafit.dual(self.y, u, self.a)) - 0.5 * self.lam * float(w @ w)


def _best_intercept(datafit, y, z, a):
    r"""The :math:`b` minimising :math:`\sum_i a_i \varphi(y_i(z_i + b))`, exactly; needs both classes.

    Hinge: the objective is piecewise linear in :math:`b`, with breakpoints
    :math:`t_i = y_i - z_i` and slope :math:`\sum_{y_i<0,\,t_i<b} a_i - \sum_{y_i>0,\,t_i>b} a_i`
    just right of :math:`b`; the minimiser is the first breakpoint where that
    slope is :math:`\ge 0` (a weighted median, by one sort). Squared hinge: the
    datafit's own Newton solve (:meth:`~normpen.linear.datafits.base.Datafit.fit_intercept`).
    """
    if not isinstance(datafit, Hinge):
        return float(datafit.fit_intercept(y, z, a))
    breakpoints = y - z
    order = np.argsort(breakpoints, kind="stable")
    positive, weight = y[order] > 0, a[order]
    slope_right = np.cumsum(weight * ~positive) - (weight[positive].sum() - np.cumsum(weight * positive))
    return float(breakpoints[order][np.argmax(slope_right >= 0)])


def _objective_at_zero(datafit, y, a, fit_intercept):
    """:math:`P(0, b_0)`: the loss with the best constant intercept (with :math:`b = 0` without one)."""
    zero = np.zeros_like(y)
    b = _best_intercept(datafit, y, zero, a) if fit_intercept else 0.0
    return float(datafit.value(y, zero + b, a))


def linear_svm(
    X,
    y,
    lam,
    *,
    loss="hinge",
    sample_weight=None,
    fit_intercept=True,
    tol=1e-4,
    max_iter=1000,
    shrinking=True,
    random_state=None,
    dual_init=None,
):
    r"""Soft-margin linear SVM by dual coordinate descent (see the module docstring).

    Minimises :math:`\frac\lambda2\|w\|^2 + \sum_i a_i\varphi(y_i(x_i^\top w + b))`; this
    is scikit-learn's ``LinearSVC(C=1/(n*lam))`` objective divided by :math:`nC`,
    with an unpenalized intercept.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like of shape (n,)
        Labels in {-1, +1}.
    lam : float
        :math:`\lambda > 0`.
    loss : {"hinge", "squared_hinge"}
    sample_weight : array-like of shape (n,), optional
        Nonnegative weights; only their ratios matter.
    fit_intercept : bool
        Fit an unpenalized intercept (method of multipliers on :math:`y^\top\alpha = 0`).
    tol : float
        Stop when the duality gap is at most ``tol`` times the objective at :math:`w = 0`.
    max_iter : int
        Maximum number of epochs.
    shrinking : bool
        Shrink variables stuck at a bound (Hsieh et al., Algorithm 3).
    random_state : int, numpy Generator or None
        Seeds the coordinate permutations.
    dual_init : array-like of shape (n,), optional
        Warm start :math:`\alpha`, clipped to the box :math:`[0, U_i]`: along a
        path, the previous solution's ``dual_coef`` (which keeps its :math:`w`).

    Returns
    -------
    LinearSVMResult

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        If ``max_iter`` epochs end with the gap above ``tol``; the message gives the gap.
    """
    if loss not in _DATAFITS:
        raise ValueError(f"loss must be one of {sorted(_DATAFITS)}, got {loss!r}")
    X, y, a = _check_labels(X, y, sample_weight)
    lam = check_positive(lam, "lam")
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    if dual_init is not None:
        dual_init = np.asarray(dual_init, dtype=np.float64)
        if dual_init.shape != (X.shape[0],) or not np.all(np.isfinite(dual_init)):
            raise ValueError(f"dual_init must be a finite vector of shape ({X.shape[0]},), one per sample")
    rng = np.random.default_rng(random_state)
    cd = _DualCoordinateDescent(X, y, a, lam, loss, fit_intercept, dual_init)
    gap_scale = _objective_at_zero(cd.datafit, cd.y, a, fit_intercept)
    target = tol * gap_scale
    gap, n_iter = _run_dual_cd(cd, target, max_iter, shrinking, rng)
    if gap > target:
        warnings.warn(
            f"linear_svm stopped after {n_iter} epochs with duality gap {gap:.3e} > tol * P(0) = "
            f"{target:.3e}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return LinearSVMResult(
        coef=cd.coef.astype(X.dtype),
        intercept=float(cd.intercept) if fit_intercept else 0.0,
        dual_coef=cd.alpha,
        objective=cd.objective(),
        dual_gap=gap,
        gap_scale=gap_scale,
        n_iter=n_iter,
        converged=gap <= target,
    )


def _run_dual_cd(cd, target, max_iter, shrinking, rng, check_every=10):
    """Epochs with shrinking until the duality gap is at most ``target``; returns ``(gap, epochs)``.

    The gap is computed when the active problem is solved to the current
    projected-gradient tolerance (which then tightens tenfold, after a
    multiplier step for the intercept) and every ``check_every`` epochs.
    """
    everyone = np.flatnonzero(cd.a > 0)
    active, above, below = everyone, math.inf, -math.inf
    pg_tol = 0.1
    for n_iter in range(1, max_iter + 1):
        pg_max, pg_min, kept = cd.epoch(rng.permutation(active), above, below)
        solved = pg_max - pg_min <= pg_tol
        if solved and len(kept) < len(everyone):
            active, above, below = everyone, math.inf, -math.inf
            continue
        if solved or n_iter % check_every == 0:
            gap = cd.objective() - cd.dual_objective()
            if gap <= target:
                return gap, n_iter
        if solved:
            if cd.rho:
                cd.update_multiplier()
            pg_tol = max(pg_tol / 10, 1e-14)
        active = np.asarray(kept) if shrinking else everyone
        above = pg_max if (shrinking and pg_max > 0) else math.inf
        below = pg_min if (shrinking and pg_min < 0) else -math.inf
    return cd.objective() - cd.dual_objective(), max_iter


def hard_margin_svm(X, y, *, fit_intercept=True, max_iter=None):
    r"""Hard-margin SVM :math:`\min \tfrac12\|w\|^2` s.t. :math:`y_i(x_i^\top w + b) \ge 1`, solved exactly.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like of shape (n,)
        Labels in {-1, +1}.
    fit_intercept : bool
        Include the (unpenalized) offset :math:`b`; without it the hyperplane
        passes through the origin.
    max_iter : int, optional
        Cap on active-set iterations (default ``10 * (n + p) + 100``).

    Returns
    -------
    HardMarginResult
        :math:`w`, :math:`b`, the margin :math:`1/\|w\|`, the support vectors, the
        multipliers and the KKT residuals.

    Raises
    ------
    NotSeparableError
        If no hyperplane separates the classes (the linear program
        :math:`y_i(x_i^\top w + b) \ge 1` is infeasible): use the soft-margin
        :func:`linear_svm` instead.
    """
    X, y, _ = _check_labels(X, y, None)
    X = X.tocsr().astype(np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n, p = X.shape
    max_iter = 10 * (n + p) + 100 if max_iter is None else check_count(max_iter, "max_iter")
    w, b = _separating_hyperplane(X, y, fit_intercept)
    w, b, working, multipliers, n_iter = _active_set(X, y, w, b, fit_intercept, max_iter)
    alpha = np.zeros(n)
    alpha[working] = multipliers
    return _hard_margin_result(X, y, w, b if fit_intercept else 0.0, alpha, n_iter)


def _active_set(X, y, w, b, fit_intercept, max_iter):
    """Primal active set from the feasible ``(w, b)``; returns ``(w, b, working, alpha_W, n_iter)``.

    Each iteration moves towards the minimiser with the working set held at
    equality (:func:`_equality_qp`) as far as the other constraints allow,
    adding the one that blocks; at that minimiser, a negative multiplier
    drops its constraint, and nonnegative ones prove optimality.
    """
    working = []
    for n_iter in range(1, max_iter + 1):
        multipliers, w_target, b_target = _equality_qp(X, y, working, fit_intercept, b)
        step_w, step_b = w_target - w, b_target - b
        scale = max(float(np.abs(w).max()), abs(b), float(np.abs(w_target).max(initial=0.0)))
        if max(float(np.abs(step_w).max()), abs(step_b)) <= 1e-13 * scale:
            if multipliers.size == 0 or multipliers.min() >= -1e-12 * float(np.abs(multipliers).max()):
                return w, b, working, multipliers, n_iter
            working.pop(int(np.argmin(multipliers)))
            continue
        t, blocking = _ratio_test(X, y, w, b, step_w, step_b, working)
        w, b = w + t * step_w, b + t * step_b
        if blocking is not None:
            working.append(blocking)
    raise RuntimeError(
        f"hard_margin_svm: no optimum after {max_iter} active-set iterations (degenerate cycling); "
        "raise max_iter or use linear_svm with a small lam"
    )


def _separating_hyperplane(X, y, fit_intercept):
    r"""A point of :math:`\{(w, b) : y_i(x_i^\top w + b) \ge 1\}`, or :class:`NotSeparableError`.

    Solves the feasibility linear program with HiGHS, then divides by the
    smallest margin so that the point is feasible to rounding.
    """
    n, p = X.shape
    ones = np.ones((n, int(fit_intercept)))
    if sp.issparse(X):
        constraints = sp.diags(-y) @ sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    else:
        constraints = -y[:, None] * np.hstack([X, ones])
    result = linprog(
        np.zeros(constraints.shape[1]),
        A_ub=constraints,
        b_ub=-np.ones(n),
        bounds=(None, None),
        method="highs",
    )
    if result.status == 2:
        raise NotSeparableError(
            "the classes are not linearly separable (no w, b with y_i (x_i.w + b) >= 1 for all i), "
            "so the hard-margin SVM has no solution; use the soft-margin SVM "
            "(normpen.linear.solvers.svm.linear_svm, or LinearSVC without hard_margin)"
        )
    if result.status != 0:
        raise RuntimeError(f"the separability linear program failed: {result.message}")
    z = result.x
    smallest = float((-(constraints @ z)).min())
    if smallest <= 0:
        raise NotSeparableError(
            "the classes are separable only to rounding (some margin is <= 0 at the linear program's "
            "solution); use the soft-margin SVM (normpen.linear.solvers.svm.linear_svm)"
        )
    z = z / min(smallest, 1.0)
    return z[:p], (float(z[p]) if fit_intercept else 0.0)


def _equality_qp(X, y, working, fit_intercept, b):
    r"""Minimiser of :math:`\tfrac12\|w\|^2` with the constraints in ``working`` held at equality.

    Returns ``(alpha_W, w, b)`` from the bordered system of the module
    docstring. With an empty working set the minimiser is :math:`w = 0` and
    :math:`b` is free, so the current ``b`` is kept.
    """
    if not working:
        return np.zeros(0), np.zeros(X.shape[1]), b
    rows = X[working]
    yw = y[working]
    gram = np.asarray((rows @ rows.T).todense() if sp.issparse(rows) else rows @ rows.T)
    K = yw[:, None] * gram * yw[None, :]
    m = len(working)
    if fit_intercept:
        system = np.block([[K, yw[:, None]], [yw[None, :], np.zeros((1, 1))]])
        rhs = np.append(np.ones(m), 0.0)
    else:
        system, rhs = K, np.ones(m)
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    alpha = solution[:m]
    w = np.asarray(rows.T @ (alpha * yw)).ravel()
    return alpha, w, (float(solution[m]) if fit_intercept else 0.0)


def _ratio_test(X, y, w, b, step_w, step_b, working):
    r"""Longest step :math:`t \le 1` keeping all constraints, and the constraint that blocks it (or None)."""
    slack = y * (np.asarray(X @ w).ravel() + b) - 1.0
    change = y * (np.asarray(X @ step_w).ravel() + step_b)
    change[working] = 0.0
    threshold = -1e-12 * (np.abs(change).max(initial=0.0) + 1.0)
    decreasing = np.flatnonzero(change < threshold)
    if decreasing.size == 0:
        return 1.0, None
    limits = np.clip(slack[decreasing], 0, None) / -change[decreasing]
    first = int(np.argmin(limits))
    if limits[first] >= 1.0:
        return 1.0, None
    return float(limits[first]), int(decreasing[first])


def _hard_margin_result(X, y, w, b, alpha, n_iter):
    """Assemble :class:`HardMarginResult` with its KKT residuals and duality gap."""
    margins = y * (np.asarray(X @ w).ravel() + b)
    w_dual = np.asarray(X.T @ (alpha * y)).ravel()
    scale = float(alpha.max())
    kkt = {
        "primal_infeasibility": float(np.clip(1 - margins, 0, None).max()),
        "dual_infeasibility": float(np.clip(-alpha, 0, None).max()) / scale,
        "stationarity": max(
            float(np.abs(w - w_dual).max()) / float(np.abs(w).max()),
            abs(float(alpha @ y)) / float(alpha.sum()),
        ),
        "complementary_slackness": float((alpha * np.abs(margins - 1)).max()) / scale,
    }
    norm_sq = float(w @ w)
    return HardMarginResult(
        coef=w,
        intercept=float(b),
        margin=1 / math.sqrt(norm_sq),
        support=np.flatnonzero(alpha > 0),
        dual_coef=alpha,
        dual_gap=0.5 * norm_sq - (float(alpha.sum()) - 0.5 * float(w_dual @ w_dual)),
        kkt=kkt,
        n_iter=n_iter,
    )
