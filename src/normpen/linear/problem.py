r"""A penalized linear problem bound to its data, and the duality gap that certifies a solution.

:class:`Problem` holds what every solve on the same data shares (the
validated design, the encoded target, the normalised sample weights and the
caches: the Gram matrix of the quadratic datafit, block Lipschitz constants,
the objective at zero), so that a path of :math:`\lambda` pays for it once.

Coefficients are handled internally as a ``(p, m)`` matrix :math:`W` and the
intercept as an ``(m,)`` vector :math:`b`, with :math:`m = 1` for a single
output; the linear predictor :math:`z = XW + b` keeps the datafit's own shape
(``(n,)`` for a single output).

The certificate. For a :class:`~normpen.linear.blocks.BlockPenalty` :math:`P`,
the dual of :math:`\min_{W,b} F(XW + b) + P(W)` is
:math:`\max_u -\sum_i a_i\ell_i^*(u_i) - P^*(-X^\top A u)`, with
:math:`\sum_i a_i u_i = 0` when the intercept is fitted. At a primal point
the intercept is first refitted exactly (:meth:`Datafit.fit_intercept`), so
that :math:`u = \ell'(z)` has :math:`\sum_i a_i u_i = 0`; then

- without ridge part, :math:`P^*` is the indicator of the dual ball and
  :math:`u / \kappa` is feasible for :math:`\kappa = \max(1, \max_g t_g)`;
- with a ridge part :math:`P^*` is finite and :math:`u` itself is used.

The gap :math:`P(W, b) - D(u) \ge P(W, b) - P^\star` is reported as is
(``dual_gap_``) and compared with ``tol`` times :math:`P_0 = \min_b F(0, b)`,
the objective at :math:`W = 0`. Unpenalized coefficients (zero weights,
features outside every group) carry the dual constraint
:math:`(X^\top A u)_j = 0`, or :math:`(X^\top A u)_j \ge 0` with
``positive=True``, which no rescaling meets: :math:`u` is first projected
onto them (:meth:`Problem.free_projection`), so the certificate holds for
every penalty.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import array_api_compat
import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning

from normpen._array import check_array, matrix_axis_sum, namespace
from normpen.linear._validation import check_design, check_flag, check_target_array
from normpen.linear.datafits.base import Datafit, normalize_weights
from normpen.linear.datafits.quadratic import Quadratic

__all__ = [
    "Problem",
    "is_tensor",
    "host_array",
    "State",
    "Solution",
    "Path",
    "GapReport",
    "relative_stop",
    "dual_objective",
    "penalty_dual_terms",
    "FreeConstraints",
    "free_constraints",
    "one_sided_system",
    "one_sided_coefficients",
    "project_free",
]


@dataclass
class State:
    """A primal point: ``W`` (p, m) and ``b`` (m,) in float64, and ``z = XW + b``.

    ``gradient`` caches ``(G, X^T G)`` at this point; whoever moves the point
    resets it to ``None`` (a path reuses it for the next strength). ``working``
    keeps coordinate descent's last working set, ``(structure_key, blocks)``, for
    the next solve along a path.
    """

    W: np.ndarray
    b: np.ndarray
    z: np.ndarray
    gradient: tuple | None = None
    working: tuple | None = None

    def copy(self):
        """A state at the same point that moving does not share (the cached gradient is read-only)."""
        return State(self.W.copy(), self.b.copy(), self.z.copy(), self.gradient, self.working)


@dataclass(frozen=True)
class GapReport:
    """Primal and dual objectives at a point and the gap between them."""

    primal: float
    dual: float
    gap: float


@dataclass(frozen=True, eq=False)
class Solution:
    r"""What every solver returns: a point, its certificate, and what the solver knows besides.

    The first seven fields are set by every solver; the others by the solvers
    to which they apply, and are ``None`` elsewhere.

    Attributes
    ----------
    coef : ndarray of shape (p,) or (p, m)
        Coefficients, in the dtype of ``X`` (a torch tensor for FISTA on torch input).
    intercept : float or ndarray of shape (m,)
        Intercept (0 when not fitted).
    objective : float
        Primal objective at the returned point (for the constrained form: the datafit).
    dual_gap : float
        Duality gap at the returned point (absolute): an upper bound on
        ``objective`` minus the optimum; ``nan`` where no certificate exists
        (FISTA on a penalty without a dual norm).
    gap_scale : float
        :math:`P_0`, the objective at :math:`W = 0` with the best intercept
        (hard-margin SVM: :math:`\tfrac12\|w\|^2`); ``dual_gap / gap_scale`` is
        the relative gap that ``tol`` bounds.
    n_iter : int
        Outer iterations (working-set rounds for coordinate descent,
        iterations for FISTA and the constrained form, interior-point
        iterations or dual coordinate-descent epochs for the SVM, active-set
        iterations for the hard margin, 1 for the closed-form ridge, certified
        rounds for L-BFGS).
    converged : bool
        Whether the solver's stopping rule was met.
    n_epochs : int, optional
        Coordinate descent: inner passes over the working sets; L-BFGS: its iterations.
    dual_coef : ndarray of shape (n,), optional
        SVMs: :math:`\alpha` in liblinear's scale, :math:`w = \sum_i \alpha_i y_i x_i`.
    support : ndarray of int, optional
        SVMs: the support vectors, the samples with :math:`\alpha_i > 0`.
    margin : float, optional
        Hard-margin SVM: the geometric margin :math:`1/\|w\|`.
    kkt : dict of str to float, optional
        Hard-margin SVM and constrained form: KKT residuals (see those solvers).
    radius, multiplier, squared_multiplier, twin : optional
        Constrained form :math:`\min L` s.t. :math:`\Omega(w) \le r`: the budget
        :math:`r`, the multiplier :math:`\mu^\star`, :math:`\mu^\star/(2r)` and the
        penalty whose penalized problem has the same solution.
    loo_errors : ndarray of shape (n,) or (n, k), optional
        Ridge: squared exact leave-one-out residuals of every sample.
    """

    coef: np.ndarray
    intercept: float | np.ndarray
    objective: float
    dual_gap: float
    gap_scale: float
    n_iter: int
    converged: bool
    n_epochs: int | None = None
    dual_coef: np.ndarray | None = None
    support: np.ndarray | None = None
    margin: float | None = None
    kkt: dict | None = None
    radius: float | None = None
    multiplier: float | None = None
    squared_multiplier: float | None = None
    twin: object | None = None
    loo_errors: np.ndarray | None = None

    @property
    def relative_gap(self):
        """``dual_gap / gap_scale``, the quantity ``tol`` bounds."""
        return self.dual_gap / self.gap_scale if self.gap_scale > 0 else self.dual_gap

    @classmethod
    def side_by_side(cls, parts):
        r"""Independent problems solved side by side (one-vs-rest) as one, outputs on the last axis.

        The joint objective is the sum of the parts', so the sums of their
        gaps and scales certify it: :math:`\sum_k (P_k - P_k^\star) \le \sum_k G_k`.
        """
        if len(parts) == 1:
            return parts[0]
        return cls(
            coef=np.stack([np.asarray(s.coef) for s in parts], axis=-1),
            intercept=np.array([s.intercept for s in parts]),
            objective=float(sum(s.objective for s in parts)),
            dual_gap=float(sum(s.dual_gap for s in parts)),
            gap_scale=float(sum(s.gap_scale for s in parts)),
            n_iter=max(s.n_iter for s in parts),
            converged=all(s.converged for s in parts),
        )


@dataclass(frozen=True, eq=False)
class Path:
    r"""Solutions along a grid of strengths (``L`` of them), in the order of ``lams``.

    Built from the solvers' :class:`Solution` objects by :meth:`from_solutions`.

    Attributes
    ----------
    lams : ndarray of shape (L,)
        Strengths (decreasing, but for :func:`~normpen.linear.solvers.ridge.ridge_path`,
        which keeps the order given).
    coefs : ndarray of shape (L, p) or (L, p, m)
        Coefficients at every strength.
    intercepts : ndarray of shape (L,) or (L, m)
        Intercepts (zeros without one).
    dual_gaps : ndarray of shape (L,)
        Duality gap reached at every strength (absolute).
    gap_scale : float
        Objective at :math:`W = 0`; ``dual_gaps / gap_scale`` are the relative gaps.
    objectives : ndarray of shape (L,)
        Primal objective at every strength.
    n_iters : ndarray of shape (L,)
        Outer iterations spent at every strength.
    converged : ndarray of bool, shape (L,)
        Whether each solve met the tolerance.
    lambda_max : float
        :math:`\lambda_{\max}` of the data (``inf`` for a penalty that never zeroes
        everything; ``nan`` where the grid was given and it was not needed).
    """

    lams: np.ndarray
    coefs: np.ndarray
    intercepts: np.ndarray
    dual_gaps: np.ndarray
    gap_scale: float
    objectives: np.ndarray
    n_iters: np.ndarray
    converged: np.ndarray
    lambda_max: float

    @classmethod
    def from_solutions(cls, lams, solutions, lambda_max=math.inf, **extra):
        """The path of ``solutions`` (one per strength of ``lams``, all of one problem).

        Intercepts take the coefficients' dtype (that of ``X``).
        """
        coefs = np.stack([np.asarray(s.coef) for s in solutions])
        return cls(
            lams=np.asarray(lams, dtype=np.float64),
            coefs=coefs,
            intercepts=np.array([s.intercept for s in solutions], dtype=coefs.dtype),
            dual_gaps=np.array([s.dual_gap for s in solutions], dtype=np.float64),
            gap_scale=float(solutions[0].gap_scale),
            objectives=np.array([s.objective for s in solutions], dtype=np.float64),
            n_iters=np.array([s.n_iter for s in solutions]),
            converged=np.array([s.converged for s in solutions], dtype=bool),
            lambda_max=lambda_max,
            **extra,
        )

    def plot(self, ax=None):
        r"""Coefficient paths against :math:`\lambda/\lambda_{\max}` (log scale); returns the Figure."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot()
        fig = ax.figure
        scale = self.lambda_max if math.isfinite(self.lambda_max) and self.lambda_max > 0 else 1.0
        x = self.lams / scale
        ax.plot(x, self.coefs.reshape(len(self.lams), -1), linewidth=1)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(r"$\lambda / \lambda_{\max}$" if scale != 1.0 else r"$\lambda$")
        ax.set_ylabel("coefficient")
        ax.set_title(f"regularisation path ({len(self.lams)} strengths)")
        return fig


def relative_stop(tol, scale, objective):
    r"""The gap to reach under ``tol``: :math:`\text{tol}\cdot\min(P_0, P)`.

    ``tol`` is the gap relative to :math:`P_0` (the objective at zero); when the
    current objective :math:`P` has fallen below :math:`P_0` the gap must also
    be at most ``tol`` times :math:`P`, so that an optimum with
    :math:`P^\star \ll P_0` (a large-:math:`C` SVM) is still reached to relative
    accuracy ``tol``: :math:`(P - P^\star)/P \le \text{tol}`.
    """
    return tol * min(scale, abs(objective))


class Problem:
    r"""Data of a penalized linear problem, validated once, with the caches solvers share.

    Parameters
    ----------
    X : array-like, scipy.sparse matrix or torch tensor of shape (n, p)
        Design; float32 is kept, other dtypes become float64. A torch tensor
        stays on its device with its dtype (``y`` and the weights follow it);
        such a problem serves FISTA: the methods that move a :class:`State`
        (coordinate descent's) take numpy and scipy.sparse only, and
        :meth:`zero_state` gives tensors on the device.
    y : array-like
        Target in the form the datafit's ``encode_target`` takes.
    datafit : Datafit
        The loss.
    sample_weight : array-like of shape (n,), optional
        Nonnegative weights with a positive sum.
    fit_intercept : bool, default True
        Fit an unpenalized intercept.
    """

    def __init__(self, X, y, datafit, sample_weight=None, fit_intercept=True):
        if not isinstance(datafit, Datafit):
            raise TypeError(
                f"datafit must be a normpen.linear.datafits object such as Quadratic() or Logistic(), "
                f"got {datafit!r}"
            )
        self.fit_intercept = check_flag(fit_intercept, "fit_intercept")
        self.datafit = datafit
        self.tensor = is_tensor(X)
        self.X, self.y = _tensor_data(X, y, datafit) if self.tensor else _numpy_data(X, y, datafit)
        self.n_samples, self.n_features = self.X.shape
        self.n_outputs = datafit.n_outputs(self.y)
        self.coef_shape = (self.n_features, self.n_outputs) if datafit.multi_output else (self.n_features,)
        like = self.X if self.tensor else np.zeros(1)
        self.weights = normalize_weights(sample_weight, self.n_samples, like)
        self.sparse = sp.issparse(self.X)
        self.eps = float((namespace(self.X) if self.tensor else np).finfo(self.X.dtype).eps)
        self._means = None
        self._gram = _GramCache(self) if isinstance(datafit, Quadratic) and not self.tensor else None
        self._block_lipschitz = {}
        self._square_norms = None
        self._zero = None
        self._target = None
        self._free = None

    def require_host_arrays(self, caller):
        """Refuse torch tensors where only numpy arrays and scipy.sparse matrices are taken (``caller``)."""
        if self.tensor:
            raise TypeError(
                f"{caller} takes numpy arrays or scipy.sparse matrices, not torch tensors: pass "
                "X.cpu().numpy() and y.cpu().numpy(), or solve on the tensors' device with FISTA: "
                "normpen.linear.path(..., solver='fista') or "
                "normpen.linear.solvers.fista.fista(X, y, datafit, penalty)"
            )

    # ---- shapes -----------------------------------------------------------------

    def as_matrix(self, coef):
        """Coefficients of shape ``coef_shape`` as a float64 ``(p, m)`` copy (solvers write to it)."""
        coef = np.array(coef, dtype=np.float64)
        if coef.shape != self.coef_shape:
            raise ValueError(f"coef_init must have shape {self.coef_shape}, got {coef.shape}")
        return coef.reshape(self.n_features, self.n_outputs)

    def as_coef(self, W):
        """A ``(p, m)`` matrix back to ``coef_shape``, in the dtype of ``X``."""
        return W.reshape(self.coef_shape).astype(self.X.dtype)

    def as_intercept(self, b):
        b = self.datafit.canonical_intercept(b)
        return b.copy() if self.datafit.multi_output else float(b[0])

    def columns(self, rows):
        """The columns ``rows`` of ``X`` (dense Fortran array or CSC matrix)."""
        return self.X[:, rows]

    def natural(self, Z):
        """An ``(n, m)`` predictor in the datafit's shape."""
        return Z if self.datafit.multi_output else Z[:, 0]

    def matrix(self, z):
        """A predictor (or anything of its shape) as an ``(n, m)`` array."""
        return z if z.ndim == 2 else z[:, None]

    @property
    def exact_model(self):
        """The datafit is least squares: its quadratic model is exact and its Gram matrix is cached."""
        return self._gram is not None

    # ---- predictor, gradient, objective ---------------------------------------------

    def product(self, X_cols, W_rows):
        """``X_cols @ W_rows`` as an ``(n, m)`` float64 array, computed in the dtype of ``X``."""
        out = X_cols @ W_rows.astype(self.X.dtype, copy=False)
        return np.asarray(out, dtype=np.float64).reshape(self.n_samples, self.n_outputs)

    def predictor(self, W, b):
        support = np.flatnonzero(np.any(W != 0, axis=1))
        Z = (
            self.product(self.columns(support), W[support])
            if support.size
            else np.zeros((self.n_samples, self.n_outputs))
        )
        return self.natural(Z + b)

    def state(self, coef_init=None, intercept_init=None):
        """The starting :class:`State`: zeros, or the given coefficients and intercept."""
        W = np.zeros((self.n_features, self.n_outputs)) if coef_init is None else self.as_matrix(coef_init)
        b = np.zeros(self.n_outputs)
        if intercept_init is not None and self.fit_intercept:
            b = np.asarray(intercept_init, dtype=np.float64).reshape(self.n_outputs).copy()
        return State(W, b, self.predictor(W, b))

    def refit_intercept(self, state):
        """Set ``state.b`` to the best intercept for ``state.W`` (no-op without an intercept)."""
        if not self.fit_intercept:
            return
        shift = np.atleast_1d(np.asarray(self.datafit.fit_intercept(self.y, state.z, self.weights)))
        if np.any(shift != 0):
            state.gradient = self._shifted_gradient(state.gradient, shift)
            state.b += shift
            state.z = state.z + (shift[0] if state.z.ndim == 1 else shift)

    def _shifted_gradient(self, gradient, shift):
        r"""The cached gradient ``(G, X^\top G)`` after the intercept moved by ``shift``, ``None`` if unknown.

        Least squares: :math:`G = A(z - y)` gains :math:`a\,\text{shift}^\top` and :math:`X^\top G`
        gains :math:`\bar x\,\text{shift}^\top` (:math:`\bar x = X^\top a`, :meth:`means`), with no
        pass over :math:`X`. A path's strength starts with the intercept refitted at the previous
        solution, where the shift is rounding (about :math:`\epsilon|y|`) yet not zero: dropping the
        gradient there cost a pass over :math:`X` a strength (49 of 50 strengths on issue 15's
        workloads (a) and (d) with an intercept). Other datafits' :math:`G` is not affine in the
        intercept: their gradient is formed again.
        """
        if gradient is None or not self.exact_model:
            return None
        G, grad = gradient
        return G + self.weights[:, None] * shift, grad + self.means()[:, None] * shift

    def loss(self, z):
        return float(self.datafit.value(self.y, z, self.weights))

    def raw_gradient(self, z):
        """:math:`G = (a_i \\ell'(z_i))_i` as an ``(n, m)`` array."""
        return self.matrix(self.datafit.raw_gradient(self.y, z, self.weights))

    def full_gradient(self, state):
        """``(G, X^T G)`` at ``state``, cached on it."""
        if state.gradient is None:
            G = self.raw_gradient(state.z)
            state.gradient = (G, self.gradient(G))
        return state.gradient

    def intercept_gradient(self, G):
        r""":math:`\partial_b F = \sum_i G_i` (``(m,)``); zeros without an intercept, which no step moves."""
        return matrix_axis_sum(G, 0) if self.fit_intercept else np.zeros(self.n_outputs)

    def gradient(self, G, rows=None):
        r""":math:`X^\top G` (restricted to ``rows``), an ``(p, m)`` float64 array."""
        return self.columns_gradient(self.X if rows is None else self.columns(rows), G)

    def columns_gradient(self, X_cols, G):
        r""":math:`X_c^\top G` for columns ``X_cols`` of ``X`` at hand, as a float64 array of one row per
        column, computed in the dtype of ``X`` (the transpose of :meth:`product`)."""
        out = X_cols.T @ G.astype(self.X.dtype, copy=False)
        return np.asarray(out, dtype=np.float64).reshape(-1, self.n_outputs)

    def objective_at_zero(self):
        r""":math:`P_0 = \min_b F(0, b)`, the scale of the relative duality gap."""
        if self._zero is None and self.tensor:
            self._zero, self._zero_z = self._tensor_zero()
        if self._zero is None:
            state = self.state()
            self.refit_intercept(state)
            G = self.raw_gradient(state.z)
            self._zero = (self.loss(state.z), self.gradient(G), state.b.copy())
            self._zero_z = state.z
        return self._zero[0]

    def _tensor_zero(self):
        r"""Tensor data, on their device: ``(P_0, \nabla_W F(0, b_0), b_0)`` and the predictor :math:`b_0`.

        The gradient has shape ``(p, m)`` and the intercept ``(m,)`` (zeros
        without one), both in ``X``'s dtype; only :math:`P_0` leaves the device.
        """
        xp = namespace(self.X)
        device = array_api_compat.device(self.X)
        shape = (self.n_samples, self.n_outputs) if self.datafit.multi_output else (self.n_samples,)
        z = xp.zeros(shape, dtype=self.X.dtype, device=device)
        a = xp.astype(self.weights, self.X.dtype)
        b = xp.zeros((self.n_outputs,), dtype=self.X.dtype, device=device)
        if self.fit_intercept:
            shift = self.datafit.fit_intercept(self.y, z, a)
            z = z + shift
            b = b + xp.reshape(xp.asarray(shift, dtype=self.X.dtype, device=device), (-1,))
        G = xp.reshape(self.datafit.raw_gradient(self.y, z, a), (self.n_samples, self.n_outputs))
        return (float(self.datafit.value(self.y, z, a)), self.X.T @ G, b), z

    def zero_state(self):
        """The :class:`State` at :math:`W = 0` with the intercept fitted, its gradient already known.

        For tensor data its arrays are tensors on ``X``'s device in ``X``'s
        dtype (what :func:`~normpen.linear.solvers.fista.solve` moves), its
        cached gradient ``(None, X^T G)``.
        """
        self.objective_at_zero()
        if self.tensor:
            xp = namespace(self.X)
            W = xp.zeros(
                (self.n_features, self.n_outputs), dtype=self.X.dtype, device=array_api_compat.device(self.X)
            )
            return State(W, self._zero[2], self._zero_z, (None, self._zero[1]))
        G0 = self.raw_gradient(self._zero_z)
        state = State(np.zeros((self.n_features, self.n_outputs)), self._zero[2].copy(), self._zero_z.copy())
        state.gradient = (G0, self._zero[1])
        return state

    def gradient_at_zero(self):
        r""":math:`\nabla_W F(0, b_0)` with the intercept :math:`b_0` fitted, shape ``(p, m)``.

        For tensor data a tensor on their device, in ``X``'s dtype.
        """
        self.objective_at_zero()
        return self._zero[1]

    def target_products(self):
        r"""Least squares: :math:`c = X^\top A(y - \bar y)` (:math:`X^\top Ay` without intercept), ``(p, m)``.

        It is :math:`-\nabla_W F(0, b_0)` (:meth:`gradient_at_zero`: :math:`b_0 = \bar y`, and
        :math:`A(y - \bar y)` sums to 0), so a path, which computes that gradient for :math:`P_0`, has it
        without a pass over :math:`X`. At a point :math:`(W, b)` with the intercept fitted
        (:math:`b = \bar y - \bar x^\top W`) it is :math:`QW - X^\top G` for the centred Gram matrix
        :math:`Q = X^\top AX - \bar x\bar x^\top` and :math:`G = A(XW + b - y)`: the least-squares
        stop test's :math:`c` (:class:`~normpen.linear.solvers.cd._LeastSquaresGap`).
        """
        if self._target is None:
            self._target = -self.gradient_at_zero()
        return self._target

    # ---- duality ------------------------------------------------------------------

    def duality_gap(self, z, penalty, W, grad, rows=None):
        r""":class:`GapReport` at the predictor ``z`` (intercept refitted) for a BlockPenalty.

        ``W`` and ``grad`` (:math:`X^\top G`) are the coefficients the penalty
        covers: all of them (``rows=None``), or the working set ``rows`` (then
        ``penalty`` is restricted to them and the gap is that of the problem
        restricted to the working set). Unpenalized coefficients are handled
        by :meth:`free_projection`.
        """
        primal = self.loss(z) + penalty.value(W)
        u = self.matrix(self.datafit.derivative(self.y, z))
        free = penalty.free_rows
        if free.size:
            u, correction = self.free_projection(u, free if rows is None else rows[free], penalty.positive)
            grad = grad - (correction if rows is None else correction[rows])
        dual = dual_objective(
            self.datafit, self.y, self.natural(u), self.weights, *penalty_dual_terms(penalty, -grad)
        )
        return GapReport(primal, dual, primal - dual)

    def certify(self, penalty, coef, intercept=None):
        r""":class:`GapReport` of the given coefficients for a BlockPenalty, the intercept refitted first."""
        state = self.state(coef, None if intercept is None else np.atleast_1d(intercept))
        self.refit_intercept(state)
        _, grad = self.full_gradient(state)
        return self.duality_gap(state.z, penalty, state.W, grad)

    def solution(self, state, report, threshold, *, tol, n_iter, n_epochs, solver, work, warn):
        r"""The :class:`Solution` a primal solver returns at ``state`` with its :class:`GapReport`.

        It has converged when the gap is at most ``threshold``; with ``warn``, a
        ``ConvergenceWarning`` names the ``solver``, the gap and the ``work`` done (for
        example ``"12 iterations (80 epochs)"``), and :meth:`warn_if_uncertifiable` speaks
        when ``tol`` asked for less than a gap can certify.
        """
        converged = report.gap <= threshold
        if warn and not converged:
            warnings.warn(
                f"{solver} did not converge: duality gap {report.gap:.3e} > tol * P0 = {threshold:.3e} "
                f"after {work}; increase max_iter or tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        if warn:
            self.warn_if_uncertifiable(tol, report.primal, report.gap)
        return Solution(
            coef=self.as_coef(state.W),
            intercept=self.as_intercept(state.b),
            dual_gap=float(report.gap),
            gap_scale=self.objective_at_zero(),
            objective=float(report.primal),
            n_iter=n_iter,
            n_epochs=n_epochs,
            converged=converged,
        )

    def free_projection(self, u, free, positive=False):
        r"""The dual point ``u`` projected onto the constraints of the unpenalized coefficients ``free``.

        An unpenalized coefficient :math:`j` (zero weights, a feature in no
        group) adds to :math:`P` the term 0, or with ``positive`` the indicator
        of :math:`w_j \ge 0`. Their conjugates at :math:`v_j = -(X^\top A u)_j`
        are the indicator of :math:`v_j = 0` and
        :math:`\sup_{w \ge 0} w v_j`, the indicator of :math:`v_j \le 0`: the
        dual constraints :math:`X_j^\top A u = 0`, or :math:`X_j^\top A u \ge 0`
        with ``positive`` (active only where the optimal :math:`w_j` is 0, by
        complementary slackness). With the intercept's :math:`1^\top A u = 0`
        (which the intercept refit already meets) they define a closed convex
        cone :math:`K`, which the later rescaling by :math:`\kappa > 0` keeps.

        ``u`` is replaced by its :math:`A`-orthogonal projection onto :math:`K`,
        :math:`u - \tilde X c` for :math:`\tilde X = [X_f, 1]` and :math:`c`
        minimising :math:`\tfrac12\|u - \tilde X c\|_A^2 = \text{const} - c^\top h
        + \tfrac12 c^\top M c` with :math:`h = \tilde X^\top A u`,
        :math:`M = \tilde X^\top A\tilde X`: :math:`c = M^+ h` for equalities;
        with ``positive``, subject to :math:`c_j \le 0` on the coefficients'
        columns (the projection's optimality conditions read
        :math:`u' = u + \sum_j d_j X_j` with :math:`d_j = -c_j \ge 0` and
        :math:`d_j X_j^\top A u' = 0`), a small nonnegative least-squares
        problem (:func:`project_free`). A projection onto a convex set moves
        no point closer together and fixes the optimal dual point
        :math:`u^\star = \ell'(z^\star)`, which is in :math:`K` (the optimality
        conditions of the unpenalized coefficients), so
        :math:`\|u' - u^\star\|_A \le \|u - u^\star\|_A` and the gap goes to 0
        with the primal point. (The equality projection is feasible for the
        one-sided constraints too, but it moves :math:`u^\star` itself when a
        coefficient sits at 0 with :math:`X_j^\top A u^\star > 0`: its gap stays
        bounded away from 0.)

        Returns the projection and :math:`X^\top A\tilde X c`, the change of
        :math:`X^\top A u` (from the cached :math:`X^\top A \tilde X`, so no
        pass over :math:`X`). A projection that leaves the datafit conjugate's
        domain gives an infinite gap, so the certificate stays valid.
        """
        key = (free.tobytes(), bool(positive))
        if self._free is None or self._free[0] != key:
            constraints = free_constraints(self.X, self.weights, self.fit_intercept, free, positive)
            self._free = (key, constraints)
        return project_free(self._free[1], u)

    def gap_threshold(self, tol, primal):
        """The gap to reach: ``tol * P0``, never below the rounding level in ``X``'s dtype of objectives near
        ``primal``."""
        return max(tol * self.objective_at_zero(), self.objective_rounding(primal))

    def certifiable_tol(self, objective):
        r"""The smallest relative gap a duality gap can certify at this objective: :math:`64\epsilon|P|/P_0`.

        The primal and dual objectives are sums whose rounding is a few
        :math:`\epsilon|P|` in ``X``'s dtype; a gap below that is noise. (0 when
        :math:`P_0 = 0`: zero is then optimal and no tolerance is needed.)
        """
        scale = self.objective_at_zero()
        return self.objective_rounding(objective) / scale if scale > 0 else 0.0

    def objective_rounding(self, objective):
        r"""The rounding :math:`64\epsilon|P|` of objectives near ``objective`` (a smaller gap is noise)."""
        return 64 * self.eps * abs(objective)

    def warn_if_uncertifiable(self, tol, objective, gap):
        """Warn when ``tol`` asks for less than a gap can certify at ``objective``; say the gap reached."""
        certifiable = self.certifiable_tol(objective)
        if tol < certifiable:
            warnings.warn(
                f"tol={tol:.1e} is below the relative duality gap {self.X.dtype} can certify here "
                f"({certifiable:.1e}), so the solver also asks the optimality conditions to hold to "
                f"rounding; it stopped at relative gap {gap / self.objective_at_zero():.1e}",
                UserWarning,
                stacklevel=3,
            )

    def gradient_rounding(self, grad):
        r"""The rounding level of the gradient :math:`X^\top \nabla_z F`: :math:`64\epsilon\max|\nabla|`."""
        return 64 * self.eps * float(np.max(np.abs(grad), initial=0.0))

    # ---- curvature ----------------------------------------------------------------

    def means(self):
        r""":math:`\bar x = X^\top a`, the weighted column means (zeros without an intercept)."""
        if self._means is None:
            if self.fit_intercept:
                self._means = np.asarray(
                    self.X.T @ self.weights.astype(self.X.dtype), dtype=np.float64
                ).ravel()
            else:
                self._means = np.zeros(self.n_features)
        return self._means

    def block_lipschitz(self, penalty):
        r"""Per-block :math:`L_g = c\,\|A^{1/2}(X_g - 1\bar x_g^\top)\|_2^2` (cached per block structure).

        :math:`c` is the datafit's curvature; the centring applies with an
        intercept (dual points then satisfy :math:`\sum_i a_i u_i = 0`). A
        zero column gets :math:`L = 1` so that steps stay finite.
        """
        key = penalty.structure_key
        if key not in self._block_lipschitz:
            sizes = penalty.block_sizes
            L = np.zeros(sizes.size)
            single = sizes == 1
            if single.any():  # blocks of one row: their centred square norms (a pass over X, only for them)
                L[single] = self._centred_square_norms()[penalty.row_order[penalty.block_starts[single]]]
            for size in np.unique(sizes[sizes > 1]):  # blocks of one size: kept blocks and eigh (batched)
                blocks = np.flatnonzero(sizes == size)
                rows = penalty.row_order[penalty.block_starts[blocks, None] + np.arange(size)]
                L[blocks] = self.centred_eigen(rows)[0][:, -1]
            L = self.datafit.curvature * L
            self._block_lipschitz = {key: np.where(L > 0, L, 1.0)}
        return self._block_lipschitz[key]

    def _centred_square_norms(self):
        if self._square_norms is not None:
            return self._square_norms
        a = self.weights
        if self.sparse:
            sq = np.asarray(self.X.power(2).T @ a).ravel()  # (X.multiply(X) took 1.5x as long)
        else:
            sq = np.einsum("ij,ij,i->j", self.X, self.X, a.astype(self.X.dtype), dtype=np.float64)
        self._square_norms = np.maximum(sq - self.means() ** 2, 0)
        return self._square_norms

    def centred_blocks(self, rows):
        r"""The centred Gram blocks :math:`X_r^\top AX_r - \bar x_r\bar x_r^\top` of the rows ``r`` of
        ``rows`` ``(blocks, size)``, float64 ``(blocks, size, size)``.

        Dense designs form them in batched products (:func:`gram_blocks`, in float64), and for least
        squares the Gram cache keeps them (:meth:`_GramCache.blocks`): the groups' blocks are the
        same at every strength of a path, so :meth:`block_lipschitz` forms them all once and the
        implicit block sweeps read theirs from the cache. Sparse designs form each block with
        :meth:`weighted_gram`.
        """
        if self.sparse:
            return np.array([self.weighted_gram(r, self.weights, cached=False) for r in rows]).reshape(
                rows.shape[0], rows.shape[1], rows.shape[1]
            )
        if self._gram is not None:
            return self._gram.blocks(rows)[0]
        return self._centred(gram_blocks(self.X, self.weights, rows), rows)

    def centred_eigen(self, rows):
        """``eigh`` of :meth:`centred_blocks` (eigenvalues ascending, eigenvectors as columns), kept
        with the blocks by the Gram cache."""
        if self._gram is not None and not self.sparse:
            return self._gram.blocks(rows)[1:]
        return np.linalg.eigh(self.centred_blocks(rows))

    def _centred(self, blocks, rows):
        """Gram blocks of ``rows`` less the means' outer products (with an intercept), in place."""
        if self.fit_intercept:
            q = self.means()[rows]
            blocks -= q[:, :, None] * q[:, None, :]
        return blocks

    def gram_order(self, rows):
        """An index into ``rows`` that puts those the Gram cache holds last, in its order
        (:meth:`_GramCache.order`: the cache then moves its matrix in one slice); ``slice(None)`` without
        a cache."""
        return slice(None) if self._gram is None else self._gram.order(rows)

    def gram_missing(self, rows):
        """How many of ``rows`` the Gram cache would compute products for (all of them without a cache)."""
        return rows.size if self._gram is None else self._gram.missing(rows)

    def weighted_gram(self, rows, h, hsum=None, cached=True, columns=None, single=False, q=None):
        r"""Centred Gram :math:`X_r^\top H X_r - q q^\top / \sum h` with :math:`q = X_r^\top h`.

        The centring (only with an intercept) is the Schur complement that
        eliminates the intercept from a quadratic model with curvature
        weights ``h``; for the quadratic datafit (``h = a``) the result is
        taken from and stored in the Gram cache. ``columns`` are
        :math:`X_r` and ``q`` is :math:`X_r^\top h` when the caller holds
        them. With ``single`` a dense design's product is formed in float32
        (half the time of float64's; entries then known to about
        :math:`n\varepsilon_{32}` of their scale) and returned in float64.
        """
        if cached and self._gram is not None and h is self.weights:
            return self._gram.centred(rows, columns)
        Xr = self.columns(rows) if columns is None else columns
        if self.fit_intercept:
            if q is None:
                q = np.asarray(Xr.T @ h.astype(Xr.dtype), dtype=np.float64).ravel()
            hsum = h.sum() if hsum is None else hsum
        if self.sparse:
            gram = _dense(Xr.T @ _rows_scaled(Xr, h))
            return gram - np.outer(q, q) / hsum if self.fit_intercept else gram
        # S^T S with S = H^(1/2) X_r (h >= 0: a convex datafit's curvature), which numpy hands to BLAS's
        # symmetric rank-k update: half the multiply-adds of X_r^T (H X_r). S is one buffer of the
        # product's dtype, written once from X_r and scaled in place (on issue 15's workload (c), 2,000 x
        # 712 float64 columns to float32, 1.08 -> 0.76 ms centred, 0.38 -> 0.29 ms not; the same values)
        dtype = np.float32 if single else Xr.dtype
        S = np.empty_like(Xr, dtype=dtype)
        if self.fit_intercept:
            # the columns centred on their h-weighted means q / sum h (in X_r's dtype, then stored): S^T S
            # is then the Schur complement itself, with no cancellation against q q^T / sum h (whose
            # entries, of the order of the means' squares, a float32 product would leave rounded to their
            # n eps_32)
            np.subtract(Xr, (q / hsum).astype(Xr.dtype), out=S, casting="unsafe")
        else:
            S[...] = Xr
        S *= np.sqrt(h).astype(dtype)[:, None]
        return _dense(S.T @ S)


#: Entries of ``X`` gathered at a time for its diagonal Gram blocks (:func:`gram_blocks`): 512 KiB of
#: float64, so that the gathered columns and their weighted copy stay in cache (about 1.5 times faster
#: than one product over 3,000 columns of 1,000 samples).
_GATHERED_ENTRIES = 2**16


def gram_blocks(X, h, rows):
    r"""The uncentred :math:`X_r^\top\operatorname{diag}(h)X_r` of each row ``r`` of ``rows`` (blocks, size).

    ``X`` dense; the columns of :data:`_GATHERED_ENTRIES` entries' worth of blocks are gathered
    (in float64) and multiplied in one batched product at a time. Returns ``(blocks, size, size)``.
    """
    size, n = rows.shape[1], X.shape[0]
    h = np.asarray(h, dtype=np.float64)
    chunk = max(1, _GATHERED_ENTRIES // (n * size))
    out = np.empty((rows.shape[0], size, size))
    # equal weights (least squares without sample weights) scale the products, not the columns: on issue
    # 15's workload (d), 1,000 blocks of 5 columns of 1,000 samples, 7.2 -> 5.8 ms
    equal = bool(h.size) and h.min() == h.max()
    for start in range(0, rows.shape[0], chunk):
        part = rows[start : start + chunk]
        columns = np.asarray(X[:, part.ravel()], dtype=np.float64).T.reshape(part.shape[0], size, n)
        if equal:
            out[start : start + chunk] = columns @ columns.transpose(0, 2, 1)
        else:
            out[start : start + chunk] = columns @ (columns * h).transpose(0, 2, 1)
    if equal:
        out *= h[0]
    return out


def is_tensor(X):
    """Whether ``X`` is a torch tensor (without importing torch)."""
    return type(X).__module__.startswith("torch")


def host_array(x):
    """``x`` as a numpy array on the host (a torch tensor is detached and copied from its device)."""
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def _numpy_data(X, y, datafit):
    """The validated design (:func:`check_design`) and the encoded target."""
    X = check_design(X)
    return X, datafit.encode_target(check_target_array(X, y))


def _tensor_data(X, y, datafit):
    """A 2-D floating tensor design, and the encoded target on its device in its dtype."""
    check_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features), got shape {tuple(X.shape)}")
    xp = namespace(X)
    y = xp.astype(datafit.encode_target(xp.asarray(y, device=array_api_compat.device(X))), X.dtype)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    return X, y


def penalty_dual_terms(penalty, V):
    r"""``(kappa, conjugate)`` of a penalty at :math:`V = -X^\top G`, for :func:`dual_objective`.

    A :class:`~normpen.linear.blocks.BlockPenalty` with a ridge part has a
    finite conjugate (``kappa = 1``); without one, and for any norm penalty
    (``is_norm``), the conjugate is the indicator of the dual ball and
    ``kappa = max(1, dual_norm(V) / lam)`` rescales the dual point into it.
    Returns ``None`` for a penalty with neither (no certificate).
    """
    if hasattr(penalty, "dual_scale"):
        if penalty.ridge > 0:
            return 1.0, penalty.conjugate(V)
        return penalty.dual_scale(V), 0.0
    if getattr(penalty, "is_norm", False) and penalty.lam > 0:
        return max(1.0, float(penalty.dual_norm(V)) / penalty.lam), 0.0
    return None


class FreeConstraints(NamedTuple):
    r"""What :func:`project_free` needs: :math:`\tilde X = [X_f, 1]` and the products it reads.

    ``columns`` is :math:`\tilde X` (dense), ``weighted`` :math:`A\tilde X`, ``system``
    :math:`M^+ = (\tilde X^\top A\tilde X)^+`, ``cross`` :math:`X^\top A\tilde X`, all in the
    kind of the weights; ``one_sided`` is ``None`` for equality constraints, else the host
    (float64) matrices ``(L, R, K, N)`` of the one-sided problem (:func:`free_constraints`).
    """

    columns: object
    weighted: object
    system: object
    cross: object
    one_sided: tuple | None = None


def free_constraints(X, weights, fit_intercept, free, positive=False):
    r"""What :func:`project_free` needs for the unpenalized columns ``free`` (numpy, scipy.sparse or torch).

    Returns a :class:`FreeConstraints`. With ``positive`` the constraints of the
    columns are one-sided (:meth:`Problem.free_projection`): minimise
    :math:`\tfrac12 c^\top Mc - c^\top h` over :math:`c = (c_B, c_E)` (``B`` the
    columns :math:`X_f`, ``E`` the column of ones, if any) with :math:`c_B \le 0`.
    For a fixed :math:`c_B` the best :math:`c_E = M_{EE}^+(h_E - M_{EB}c_B)`; what is
    left, in :math:`d = -c_B \ge 0`, is
    :math:`\tfrac12 d^\top S d + d^\top(h_B - T h_E)` with :math:`T = M_{BE}M_{EE}^+`
    and the Schur complement :math:`S = M_{BB} - TM_{EB} = Q\Lambda Q^\top`. Over the
    eigenvalues above :math:`k\epsilon\lambda_{\max}` (``pinv``'s cutoff), with
    :math:`R = \Lambda^{1/2}Q^\top`, it is :math:`\tfrac12\|Rd - Lh\|^2` plus a constant,
    for :math:`L = -\Lambda^{-1/2}Q^\top[I, -T]` (:math:`h_B - Th_E` lies in the range of
    :math:`S`): nonnegative least squares. Then :math:`c = Kh + Nd` with
    :math:`K = \operatorname{diag}(0, M_{EE}^+)` and :math:`N = [-I; T^\top]`.
    """
    xp = namespace(weights)
    device = array_api_compat.device(weights)
    columns = X[:, free]
    columns = columns.toarray() if sp.issparse(columns) else columns
    columns = xp.asarray(columns, dtype=weights.dtype, device=device)
    if fit_intercept:
        ones = xp.ones((X.shape[0], 1), dtype=weights.dtype, device=device)
        columns = xp.concat([columns, ones], axis=1)
    weighted = columns * xp.reshape(weights, (-1, 1))
    gram = columns.T @ weighted
    system = xp.linalg.pinv(gram)
    cross = xp.asarray(X.T @ xp.astype(weighted, X.dtype), dtype=weights.dtype, device=device)
    one_sided = one_sided_system(host_array(gram).astype(np.float64), len(free)) if positive else None
    return FreeConstraints(columns, weighted, system, cross, one_sided)


def one_sided_system(M, k):
    r"""``(L, R, K, N)`` of :func:`free_constraints` for the Gram matrix ``M`` (``k`` one-sided columns)."""
    E = np.linalg.pinv(M[k:, k:])
    T = M[:k, k:] @ E
    values, vectors = np.linalg.eigh(M[:k, :k] - T @ M[k:, :k])
    kept = values > k * np.finfo(np.float64).eps * max(float(values.max(initial=0.0)), 0.0)
    root = np.sqrt(values[kept])
    R = root[:, None] * vectors[:, kept].T
    L = -(vectors[:, kept].T / root[:, None]) @ np.hstack([np.eye(k), -T])
    K = np.zeros_like(M)
    K[k:, k:] = E
    N = np.vstack([-np.eye(k), T.T])
    return L, R, K, N


def project_free(constraints, u):
    r"""The projected dual point :math:`u - \tilde X c` and :math:`X^\top A\tilde X c`.

    For equality constraints :math:`c = (\tilde X^\top A\tilde X)^+\tilde X^\top A u`; for
    one-sided ones (``positive``) :math:`c = Kh + Nd` with :math:`d \ge 0` the
    nonnegative least-squares solution of :math:`\min\|Rd - Lh\|`, :math:`h = \tilde X^\top Au`,
    one output at a time (:func:`free_constraints`; solved on the host in float64).

    ``u`` has shape ``(n,)`` or ``(n, m)``; see :meth:`Problem.free_projection`.
    """
    columns, weighted, system, cross, one_sided = constraints
    h = weighted.T @ u
    if one_sided is None:
        coefficients = system @ h
    else:
        H = host_array(h).astype(np.float64)
        C = one_sided_coefficients(one_sided, H[:, None] if H.ndim == 1 else H)
        coefficients = namespace(h).asarray(
            C.reshape(h.shape), dtype=h.dtype, device=array_api_compat.device(h)
        )
    return u - columns @ coefficients, cross @ coefficients


def one_sided_coefficients(one_sided, H):
    r""":math:`c = Kh + Nd` of :func:`free_constraints` for each column :math:`h` of ``H`` (host, float64)."""
    L, R, K, N = one_sided
    if R.size:
        B = L @ H
        D = np.column_stack([nnls(R, B[:, j])[0] for j in range(B.shape[1])])
    else:  # S = 0: every column lies in the span of the ones, whose constraint the intercept meets; d = 0
        D = np.zeros((R.shape[1], H.shape[1]))
    return K @ H + N @ D


def dual_objective(datafit, y, u, weights, kappa, conjugate):
    r"""Dual objective :math:`-\sum_i a_i \ell_i^*(u_i/\kappa) - P^*(V)` at the dual point :math:`u/\kappa`.

    ``u`` is :math:`\ell'(z)` at a primal point (possibly projected by
    :meth:`Problem.free_projection`), in the datafit's shape.
    """
    return float(datafit.dual(y, u if kappa == 1 else u / kappa, weights)) - conjugate


def _rows_scaled(X, h):
    """``diag(h) X`` of a CSC matrix, its stored entries scaled (``multiply`` takes a COO round trip)."""
    return type(X)((X.data * h[X.indices], X.indices, X.indptr), X.shape)


def _dense(M):
    return np.asarray(M.toarray() if sp.issparse(M) else M, dtype=np.float64)


class _GramCache:
    r"""Centred :math:`X_r^\top A X_r - \bar x_r \bar x_r^\top` of the last rows asked for, moved to the next.

    Working sets along a path overlap heavily, so the matrix of the next rows
    is the last one with a few rows and columns taken out and a few put in:
    the entries of rows met before are copied over (in one slice when the rows
    come in :meth:`order` and keep every stored row, by :func:`_moved`
    otherwise), and only the new rows' products with the
    columns :math:`X_r` are computed, from the caller's copy of those columns
    when it holds one (the working set's, :func:`~normpen.linear.solvers.cd._solve_working_set`).
    The entries are stored centred (the means' outer product subtracted once,
    when an entry is computed) and handed out read-only, so that the same rows
    asked for again cost nothing. ``position`` gives each feature's row in the
    stored matrix (-1 for the others).
    """

    def __init__(self, problem):
        self.problem = problem
        self.rows = np.zeros(0, dtype=np.int64)
        self.gram = np.zeros((0, 0))
        self.position = np.full(problem.n_features, -1, dtype=np.int64)
        self.positions = np.arange(problem.n_features)  # 0, 1, ...: the stored rows' positions, in order
        self.kept_blocks = {}  # size: (slot of each block's first row, the blocks' rows, their Gram blocks)

    def blocks(self, rows):
        """The centred Gram blocks of ``rows`` ``(blocks, size)`` (dense ``X``) and their ``eigh``:
        ``(blocks, values, vectors)``, those met before kept.

        A block is found by its first row and checked against its stored rows; the others are
        formed in one :func:`gram_blocks` call and one batched ``eigh``, and stored.
        """
        problem, size = self.problem, rows.shape[1]
        if size not in self.kept_blocks:
            slots = np.full(problem.n_features, -1, dtype=np.int64)
            empty = np.zeros((0, size, size))
            self.kept_blocks[size] = (slots, np.zeros((0, size), dtype=np.int64), empty, empty[:, 0], empty)
        slots, kept_rows, *kept = self.kept_blocks[size]
        slot = slots[rows[:, 0]]
        found = slot >= 0
        found[found] = np.all(kept_rows[slot[found]] == rows[found], axis=1)
        if not np.all(found):
            new = rows[~found]
            if kept_rows.shape[0] + new.shape[0] > problem.n_features:  # other groups before: start afresh
                slots[:] = -1
                kept_rows, kept = kept_rows[:0], [array[:0] for array in kept]
            formed = problem._centred(gram_blocks(problem.X, problem.weights, new), new)
            slots[new[:, 0]] = kept_rows.shape[0] + np.arange(new.shape[0])
            kept_rows = np.concatenate([kept_rows, new])
            kept = [
                np.concatenate([a, b]) for a, b in zip(kept, (formed, *np.linalg.eigh(formed)), strict=True)
            ]
            self.kept_blocks[size] = (slots, kept_rows, *kept)
            slot = slots[rows[:, 0]]
        return tuple(array[slot] for array in kept)

    def missing(self, rows):
        """How many of ``rows`` are not among the last rows asked for (:meth:`centred` computes theirs)."""
        return int(np.count_nonzero(self.position[rows] < 0))

    def order(self, rows):
        """Positions in ``rows`` of the rows not stored, in their order, then of the stored, in stored order.

        Rows asked for in that order (:func:`~normpen.linear.solvers.cd._solve_working_set` does) take
        :meth:`centred`'s fast path when every stored row is among them: the stored matrix is copied
        whole into the bottom-right corner (one slice, about 5 times as fast as :func:`_moved`'s
        gathers on issue 15's 200 x 1000 paths, whose working sets keep every row met before), and the
        new rows' products fill the first rows and columns.
        """
        old = self.position[rows]
        held = old >= 0
        stored = np.flatnonzero(held)
        if stored.size == self.rows.size:  # every stored row: their positions are a permutation, inverted
            in_order = np.empty_like(stored)
            in_order[old[stored]] = stored
        else:
            in_order = stored[np.argsort(old[stored])]
        return np.concatenate([np.flatnonzero(~held), in_order])

    def centred(self, rows, columns=None):
        """The centred Gram matrix of ``rows``; ``columns`` are :math:`X_r` when the caller holds them."""
        if rows.size == self.rows.size and np.array_equal(rows, self.rows):
            return self.gram
        problem = self.problem
        old = self.position[rows]
        kept = self.rows.size
        gram = np.empty((rows.size, rows.size))
        fresh = rows.size - kept
        # rows in order(): the new ones first, then every stored one in the stored order
        if fresh >= 0 and np.array_equal(old[fresh:], self.positions[:kept]):
            gram[fresh:, fresh:] = self.gram
            new = slice(0, fresh)
        else:
            stays = old >= 0
            _moved(self.gram, old[stays], gram, np.flatnonzero(stays))
            new = np.flatnonzero(~stays)
            fresh = new.size
        if fresh:
            X_r = problem.columns(rows) if columns is None else columns
            X_new, a = X_r[:, new], problem.weights
            aX_new = _rows_scaled(X_new, a) if problem.sparse else X_new * a[:, None].astype(X_new.dtype)
            cross = _dense(aX_new.T @ X_r)
            if problem.fit_intercept:
                q = problem.means()[rows]
                cross -= q[new, None] * q[None, :]
            gram[new] = cross
            gram[:, new] = cross.T
        gram.flags.writeable = False
        self.position[self.rows] = -1
        self.position[rows] = np.arange(rows.size)
        self.rows, self.gram = rows.copy(), gram
        return gram


#: Entries of kept Gram rows below which :func:`_moved` gathers the columns by index without
#: looking for runs (finding them costs about that many entries' gather).
_GATHERED_GRAM = 2**16

#: Entries per run of consecutive columns above which :func:`_moved` copies the columns run by run:
#: a slice copy of a run costs about as much Python overhead as the index gather of 3,000 entries.
_ENTRIES_PER_RUN = 3000


def _moved(source, at, target, to):
    """``target[to][:, to] = source[at][:, at]``: the columns moved into a buffer, then the rows.

    Rows kept from one working set to the next keep their order, so ``at`` and ``to`` step by 1
    in runs: in a large matrix with few runs the columns are copied run by run (slices), otherwise
    gathered by index along that one axis; the rows then go over by one gather along the other
    axis, none when every row of ``source`` is kept (in order). Measured on the Gram matrices of
    issue 15's lasso and elastic-net paths (a, b, a200, b200), against per-run copies of both axes
    (the rows too) or a 2-d gather by index pairs, :func:`numpy.ix_`: 1.5 / 3.1 / 0.17 / 0.73 ms
    against 2.6 / 4.1 / 0.60 / 1.20 ms in all.
    """
    if not at.size:
        return
    in_order = at.size == source.shape[0] and bool(np.all(at[1:] > at[:-1]))  # at is then 0, 1, ...
    columns = np.empty((source.shape[0], target.shape[1]))
    entries = source.shape[0] * at.size
    starts = None
    if entries >= _GATHERED_GRAM:
        starts = np.flatnonzero(np.concatenate([[True], (np.diff(at) != 1) | (np.diff(to) != 1)]))
    if starts is None or entries < _ENTRIES_PER_RUN * starts.size:
        columns[:, to] = source if in_order else source[:, at]
    else:
        ends = np.append(starts[1:], at.size)
        for i, j in zip(starts.tolist(), ends.tolist(), strict=True):
            columns[:, to[i] : to[i] + j - i] = source[:, at[i] : at[i] + j - i]
    target[to] = columns if in_order else columns[at]
