r"""Closed-form ridge regression for a whole :math:`\lambda` path through one SVD.

The objective, in normpen's convention (datafits averaged over samples, L2 as
:math:`\tfrac\lambda2\|w\|^2`), with sample weights :math:`s_i \ge 0` and
:math:`v_i = s_i / \sum_j s_j`:

.. math::

    \min_{w, b}\; \frac12 \sum_i v_i\,\|y_i - x_i^\top w - b\|^2 + \frac\lambda2 \|w\|^2 ,

which for unit weights is :math:`\frac1{2n}\|y - Xw - b\|^2 + \frac\lambda2\|w\|^2`.
The intercept :math:`b` is never penalized. scikit-learn's ``Ridge(alpha=a)``
minimises :math:`\sum_i s_i \|y_i - x_i^\top w - b\|^2 + a\|w\|^2`, so
``Ridge(alpha=a)`` equals our ``lam = a / sum(s)``, i.e. ``lam = a / n`` without
weights.

With :math:`\bar x = \sum_i v_i x_i`, :math:`\bar y = \sum_i v_i y_i` and
:math:`D = \operatorname{diag}(\sqrt{v})`, the intercept is
:math:`b = \bar y - \bar x^\top w` and :math:`w` solves an unweighted ridge
problem in :math:`A = D(X - 1\bar x^\top)` and :math:`z = D(y - \bar y)`. One thin
SVD :math:`A = U\,\mathrm{diag}(\sigma)\,V^\top` then gives every
:math:`\lambda` at the cost of a matrix product:

.. math::

    w(\lambda) = V\,\mathrm{diag}\!\Big(\frac{\sigma_j}{\sigma_j^2 + \lambda}\Big)\,U^\top z .

The hat matrix of the weighted problem (the map :math:`Dy \mapsto D\hat y`) is
:math:`H = \sqrt v\sqrt v^\top + U\,\mathrm{diag}(\sigma_j^2 / (\sigma_j^2+\lambda))\,U^\top`
(the first term only with an intercept), so its diagonal

.. math:: h_{ii}(\lambda) = v_i + \sum_j U_{ij}^2\, \frac{\sigma_j^2}{\sigma_j^2 + \lambda}

comes free for every :math:`\lambda`, and with it

- the exact leave-one-out residuals :math:`e_i / (1 - h_{ii})`, where
  :math:`e_i = y_i - x_i^\top w - b`: the residual at sample :math:`i` of the fit
  with sample :math:`i`'s term deleted from the sum above and everything else
  unchanged (for unit weights: the refit on the other :math:`n-1` samples with
  :math:`\lambda\,n/(n-1)`, which is scikit-learn's ``Ridge(alpha=a)`` refitted
  with the same ``alpha``, the quantity ``RidgeCV`` minimises);
- generalised cross-validation (Golub, Heath and Wahba, 1979)
  :math:`\mathrm{GCV}(\lambda) = \sum_i v_i e_i^2 / (1 - \operatorname{tr}H / m)^2`,
  with :math:`m` the number of samples of positive weight and
  :math:`\operatorname{tr} H` the effective degrees of freedom (intercept included).

Dense ``X`` is decomposed by LAPACK's SVD. For ``scipy.sparse`` ``X`` the centred
matrix is never formed: the smaller Gram matrix (:math:`A^\top A`, or
:math:`AA^\top` when there are fewer samples than features) is built from sparse
products and the centring correction, and its symmetric eigendecomposition gives
:math:`\sigma^2` and one set of singular vectors, the other following by one
sparse product. That route squares the condition number: singular values below
about :math:`\sqrt{\epsilon}\,\sigma_{\max}` are lost, which matters only for
:math:`\lambda \lesssim \epsilon\,\sigma_{\max}^2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from normpen._array import check_nonnegative
from normpen.linear._validation import check_lams
from normpen.linear.blocks import BlockPenalty
from normpen.linear.datafits.multitask_quadratic import MultitaskQuadratic
from normpen.linear.datafits.quadratic import Quadratic
from normpen.linear.problem import GapReport, Path, Problem, Solution

__all__ = ["RidgePath", "ridge_path", "ridge", "solve_path"]


@dataclass(frozen=True, eq=False)
class RidgePath(Path):
    r"""A :class:`~normpen.linear.path.Path` of ridge solutions, with leave-one-out and GCV errors.

    Shapes use ``L = len(lams)``, ``p`` features and, for a 2-D target, ``k``
    outputs; a 1-D target drops the last axis everywhere. Besides the fields of
    a ``Path`` (``lams`` in the order given, ``coefs``, ``intercepts``, the
    duality gap of every closed-form solution in ``dual_gaps``, which is
    rounding, ``objectives``; ``n_iters`` are 1 and ``lambda_max`` is ``inf``):

    Attributes
    ----------
    loo_mse : ndarray of shape (L,) or (L, k)
        Exact leave-one-out mean squared error :math:`\sum_i v_i (e_i/(1-h_{ii}))^2`
        per output; ``inf`` where a sample has leverage 1 (only possible at :math:`\lambda = 0`).
    loo_errors : ndarray of shape (L, n) or (L, n, k)
        The squared leave-one-out residuals :math:`(e_i/(1-h_{ii}))^2` of every sample, whose
        ``v``-weighted mean is ``loo_mse`` (``inf`` for a sample of positive weight and leverage 1);
        each solution's ``loo_errors``.
    gcv : ndarray of shape (L,) or (L, k)
        Generalised cross-validation error per output; ``inf`` when the degrees of
        freedom reach the number of samples.
    dof : ndarray of shape (L,)
        Effective degrees of freedom :math:`\operatorname{tr}H(\lambda)`, the intercept counting 1.
    singular_values : ndarray of shape (r,)
        The nonzero singular values :math:`\sigma` of the centred, weighted design.
    """

    loo_mse: np.ndarray
    loo_errors: np.ndarray
    gcv: np.ndarray
    dof: np.ndarray
    singular_values: np.ndarray

    def best_index(self, criterion="loo", per_target=False):
        """Index of the :math:`\\lambda` of least error.

        Parameters
        ----------
        criterion : {"loo", "gcv"}
            Leave-one-out error or generalised cross-validation.
        per_target : bool
            With a 2-D target, one index per output (an int array of shape
            ``(k,)``) instead of the index of least error averaged over outputs.
        """
        if criterion not in ("loo", "gcv"):
            raise ValueError(f"criterion must be 'loo' or 'gcv', got {criterion!r}")
        error = self.loo_mse if criterion == "loo" else self.gcv
        if error.ndim == 2 and not per_target:
            error = error.mean(axis=1)
        return np.argmin(error, axis=0)


def _weighted_centred_svd(X, v, x_mean):
    r"""Thin SVD of :math:`A = D(X - 1\bar x^\top)`, :math:`D = \operatorname{diag}(\sqrt v)`.

    Returns ``(U, sigma, V)`` with ``U`` of shape (n, r), ``V`` of shape (p, r)
    and only the numerically nonzero singular values kept (the pseudo-inverse
    rule of :func:`numpy.linalg.lstsq`). Dense ``X``: LAPACK's SVD of :math:`A`.
    Sparse ``X``: the eigendecomposition of the smaller Gram matrix, built
    without forming :math:`A`.
    """
    n, p = X.shape
    sqrt_v = np.sqrt(v)
    cutoff = max(n, p) * np.finfo(X.dtype).eps
    if not sp.issparse(X):
        U, sigma, Vt = np.linalg.svd(sqrt_v[:, None] * (X - x_mean), full_matrices=False)
        keep = sigma > sigma[:1].max(initial=0) * cutoff
        return U[:, keep], sigma[keep], Vt[keep].T
    if n >= p:  # A^T A = X^T diag(v) X - xbar xbar^T (the weights sum to 1)
        gram = np.asarray((X.T @ X.multiply(v[:, None])).todense()) - np.outer(x_mean, x_mean)
        sigma, V = _nonzero_spectrum(gram, cutoff)
        U = sqrt_v[:, None] * (X @ V - x_mean @ V) / sigma
        return U, sigma, V
    Xm = X @ x_mean  # A A^T = D (X X^T - Xm 1^T - 1 Xm^T + |xbar|^2) D
    gram = np.asarray((X @ X.T).todense()) - Xm[:, None] - Xm[None, :] + x_mean @ x_mean
    sigma, U = _nonzero_spectrum(sqrt_v[:, None] * gram * sqrt_v[None, :], cutoff)
    DU = sqrt_v[:, None] * U
    V = (np.asarray(X.T @ DU) - np.outer(x_mean, DU.sum(axis=0))) / sigma
    return U, sigma, V


def _nonzero_spectrum(gram, cutoff):
    """``(sigma, vectors)`` of a PSD Gram matrix: square roots of its eigenvalues, decreasing.

    Eigenvalues at most ``cutoff`` times the largest count as zero and are dropped.
    """
    squares, vectors = np.linalg.eigh((gram + gram.T) / 2)
    squares, vectors = squares[::-1], vectors[:, ::-1]
    keep = squares > squares[:1].max(initial=0) * cutoff
    return np.sqrt(squares[keep]), vectors[:, keep]


def ridge_path(X, y, lams, *, sample_weight=None, fit_intercept=True, certify=True):
    r"""Ridge regression for every :math:`\lambda` in ``lams`` from one SVD, with LOO and GCV errors.

    Solves :math:`\min_{w,b} \frac12\sum_i v_i\|y_i - x_i^\top w - b\|^2 + \frac\lambda2\|w\|^2`
    (:math:`\frac1{2n}\|y - Xw - b\|^2 + \frac\lambda2\|w\|^2` without weights); see
    the module docstring for the method and the map ``lam = alpha / sum(sample_weight)``
    to scikit-learn's ``Ridge(alpha)``.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
        Design; float32 stays float32, integers become float64.
    y : array-like of shape (n,) or (n, k)
        Target; several outputs share the decomposition.
    lams : array-like of shape (L,)
        Strengths :math:`\lambda \ge 0`, any order. :math:`\lambda = 0` gives the
        minimum-norm least-squares fit.
    sample_weight : array-like of shape (n,), optional
        Nonnegative weights :math:`s_i`; only their ratios matter.
    fit_intercept : bool
        Fit an unpenalized intercept (the weighted means are removed first).
    certify : bool
        Compute every solution's objective and duality gap from ``X`` (two products
        with ``X`` per strength, about as much again as the path itself); ``False``
        leaves them ``nan``, for a search that reads only the leave-one-out errors.

    Returns
    -------
    RidgePath
        Coefficients, intercepts, duality gaps, exact leave-one-out and GCV errors, degrees of freedom.
    """
    return solve_path(_problem(X, y, sample_weight, fit_intercept), lams, certify)


def _problem(X, y, sample_weight, fit_intercept):
    """The least-squares :class:`Problem` of ``(X, y)``, one output or several."""
    datafit = MultitaskQuadratic() if np.ndim(y) == 2 else Quadratic()
    return Problem(X, y, datafit, sample_weight, fit_intercept)


def solve_path(problem, lams, certify=True):
    """:func:`ridge_path` on a least-squares :class:`~normpen.linear.problem.Problem`."""
    lams = check_lams(lams)
    solutions, extra = _solutions(problem, lams, certify)
    return RidgePath.from_solutions(lams, solutions, math.inf, **extra)


def _solutions(problem, lams, certify=True):
    """One :class:`Solution` per strength (with its certificate), and the path-wide LOO/GCV arrays."""
    X, n = problem.X, problem.n_samples
    dtype = X.dtype
    y = np.asarray(problem.y, dtype=dtype)
    v = problem.weights.astype(dtype)
    Y = y.reshape(n, -1)
    if problem.fit_intercept:
        x_mean = np.asarray(X.T @ v).ravel().astype(dtype)
        y_mean = v @ Y
    else:
        x_mean = np.zeros(X.shape[1], dtype=dtype)
        y_mean = np.zeros(Y.shape[1], dtype=dtype)
    U, sigma, V = _weighted_centred_svd(X, v, x_mean)
    Yc = Y - y_mean
    Utz = U.T @ (np.sqrt(v)[:, None] * Yc)  # (r, k)
    sq = sigma**2
    lam_col = lams.astype(dtype)[:, None]
    gain = sigma / (sq + lam_col)  # (L, r); sigma > 0, so never 0 / 0
    shrink = gain * sigma  # sigma^2 / (sigma^2 + lam)
    coefs = V[None] @ (gain[:, :, None] * Utz[None])  # (L, p, k)
    intercepts = y_mean[None] - np.einsum("p,lpk->lk", x_mean, coefs)
    B = np.asarray(X @ V) - x_mean @ V  # centred X times V, (n, r)
    residuals = Yc[None] - B[None] @ (gain[:, :, None] * Utz[None])  # (L, n, k)
    leverage = (U**2 @ shrink.T).T + (v if problem.fit_intercept else 0)  # (L, n)
    dof = shrink.sum(axis=1) + (1 if problem.fit_intercept else 0)
    loo_errors = _loo_errors(residuals, leverage, v)
    loo_mse = np.einsum("n,lnk->lk", v, loo_errors)
    gcv = _gcv(residuals, dof, v)
    squeeze = y.ndim == 1
    if squeeze:
        coefs, intercepts, loo_errors, loo_mse, gcv = (
            a[..., 0] for a in (coefs, intercepts, loo_errors, loo_mse, gcv)
        )
    unit = BlockPenalty.separable(np.zeros((problem.n_features, problem.n_outputs)), 1.0)
    solutions = []
    for lam, coef, intercept, errors in zip(lams.tolist(), coefs, intercepts, loo_errors, strict=True):
        intercept = float(intercept) if squeeze else intercept
        report = (
            problem.certify(unit.scaled(lam), coef, intercept if problem.fit_intercept else None)
            if certify
            else GapReport(math.nan, math.nan, math.nan)
        )
        solutions.append(
            Solution(
                coef=coef,
                intercept=intercept,
                objective=report.primal,
                dual_gap=report.gap,
                gap_scale=problem.objective_at_zero(),
                n_iter=1,
                converged=True,
                loo_errors=errors,
            )
        )
    extra = {"loo_mse": loo_mse, "loo_errors": loo_errors, "gcv": gcv, "dof": dof, "singular_values": sigma}
    return solutions, extra


def _loo_errors(residuals, leverage, v):
    r"""Squared leave-one-out residuals :math:`(e_i / (1 - h_{ii}))^2`, shape ``(L, n, k)``.

    A sample of positive weight with leverage 1 (to rounding) has no
    leave-one-out prediction: ``inf``, which makes the mean at its :math:`\lambda` infinite.
    """
    room = 1 - leverage  # (L, n)
    tiny = 16 * np.finfo(residuals.dtype).eps
    undefined = (room <= tiny) & (v > 0)
    safe_room = np.where(room > tiny, room, 1)
    loo = (residuals / safe_room[:, :, None]) ** 2
    return np.where(undefined[:, :, None], np.inf, loo).astype(residuals.dtype)


def _gcv(residuals, dof, v):
    r"""Generalised cross-validation :math:`\sum_i v_i e_i^2 / (1 - \operatorname{tr}H/m)^2`, per output.

    :math:`m` counts the samples of positive weight; ``inf`` where
    :math:`\operatorname{tr}H \ge m` (the fit interpolates).
    """
    n_eff = np.count_nonzero(v)
    room = np.where(dof < n_eff, 1 - dof / n_eff, 1)[:, None]
    mse = np.einsum("n,lnk->lk", v, residuals**2)
    return np.where(dof[:, None] < n_eff, mse / room**2, np.inf).astype(residuals.dtype)


def ridge(X, y, lam, *, sample_weight=None, fit_intercept=True):
    r"""Ridge regression at one :math:`\lambda`, as a :class:`~normpen.linear.problem.Solution`.

    Same objective, conventions and parameters as :func:`ridge_path`
    (scikit-learn's ``Ridge(alpha=a)`` is ``lam = a / n``): ``coef`` has shape
    (p,) or (p, k), ``intercept`` is a float or an array of shape (k,);
    ``dual_gap`` certifies the closed form (rounding) and ``loo_errors`` holds
    the squared leave-one-out residuals.
    """
    lam = check_nonnegative(lam, "lam")
    solutions, _ = _solutions(_problem(X, y, sample_weight, fit_intercept), np.array([lam]))
    return solutions[0]
