r"""The L2-regularised mean-variance portfolio: the prudent investor of seed 000.

With estimated expected returns :math:`\mu`, covariance :math:`\Sigma`, risk
aversion :math:`\gamma > 0` and a ridge strength :math:`\lambda \ge 0`, the
portfolio fully invested (:math:`1^\top w = 1`, short positions allowed) solves

.. math::

    \max_{w:\,1^\top w = 1}\; w^\top\mu - \frac\gamma2 w^\top\Sigma w - \frac\lambda2\|w\|^2 .

The objective is strictly concave when :math:`A = \gamma\Sigma + \lambda I` is
positive definite, and the KKT conditions :math:`Aw = \mu - \nu 1`,
:math:`1^\top w = 1` give the closed form

.. math::

    w = A^{-1}(\mu - \nu 1), \qquad \nu = \frac{1^\top A^{-1}\mu - 1}{1^\top A^{-1} 1},

computed here with one Cholesky factorisation of :math:`A`. Without
:math:`\mu` it is the minimum-variance portfolio with the same penalty. The
penalty adds :math:`\lambda I` to the covariance, exactly as ridge regression
adds it to :math:`X^\top X/m`: the condition number falls from
:math:`s_{\max}/s_{\min}` to :math:`(\gamma s_{\max} + \lambda)/(\gamma s_{\min} + \lambda)`, and
as :math:`\lambda \to \infty` the weights tend to the equal-weight portfolio
:math:`1/N`. :math:`\|w_\lambda\|` never grows with :math:`\lambda` (compare the
objectives at two strengths), so the effective number of assets
:math:`1/\sum_i w_i^2` never falls.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from normpen._array import check_nonnegative, check_positive

__all__ = ["regularized_portfolio", "effective_number_of_assets", "portfolio_variance"]


def _check_covariance(cov) -> np.ndarray:
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(f"cov must be a square (n_assets, n_assets) matrix, got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise ValueError("cov contains NaN or infinite entries; estimate it from complete returns")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-14 * np.abs(cov).max()):
        raise ValueError("cov must be symmetric; pass (cov + cov.T) / 2 if it is only so up to rounding")
    return cov


def regularized_portfolio(cov, mean=None, *, risk_aversion: float = 1.0, lam: float = 0.0) -> np.ndarray:
    r"""Weights of the fully invested mean-variance portfolio with an L2 penalty (module docstring).

    Parameters
    ----------
    cov : array-like of shape (n_assets, n_assets)
        Covariance :math:`\Sigma` of the returns (symmetric positive semidefinite).
    mean : array-like of shape (n_assets,), optional
        Expected returns :math:`\mu`; ``None`` gives the minimum-variance portfolio.
    risk_aversion : float
        :math:`\gamma > 0`.
    lam : float
        :math:`\lambda \ge 0`. A singular :math:`\Sigma` (fewer return periods
        than assets) needs :math:`\lambda > 0`.

    Returns
    -------
    ndarray of shape (n_assets,)
        Weights summing to 1.
    """
    cov = _check_covariance(cov)
    n = cov.shape[0]
    gamma = check_positive(risk_aversion, "risk_aversion")
    lam = check_nonnegative(lam, "lam")
    mu = np.zeros(n) if mean is None else np.asarray(mean, dtype=np.float64)
    if mu.shape != (n,) or not np.all(np.isfinite(mu)):
        raise ValueError(f"mean must be a finite vector of length {n} (one per asset), got shape {mu.shape}")
    try:
        factor = scipy.linalg.cho_factor(gamma * cov + lam * np.eye(n))
    except np.linalg.LinAlgError:
        raise ValueError(
            "risk_aversion * cov + lam * I is not positive definite (cov is singular or not PSD); "
            "use lam > 0, or more return periods than assets"
        ) from None
    solved_mu, solved_ones = scipy.linalg.cho_solve(factor, np.column_stack([mu, np.ones(n)])).T
    nu = (solved_mu.sum() - 1.0) / solved_ones.sum()
    weights = solved_mu - nu * solved_ones
    # the subtraction cancels terms as large as cond(H) |w|, leaving 1^T w off by up to cond * eps
    # (4.5e-8 measured); a shift along 1 restores the budget to the rounding of one sum
    return weights + (1.0 - weights.sum()) / n


def effective_number_of_assets(weights) -> float:
    r"""Effective number of assets :math:`1/\sum_i w_i^2` (the inverse Herfindahl index).

    For weights summing to 1 it is :math:`N` for the equal-weight portfolio
    and 1 for a single asset; short positions lower it.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be a non-empty finite vector, got shape {w.shape}")
    total = float(w @ w)
    if total == 0:
        raise ValueError("weights are all zero; a portfolio needs at least one position")
    return 1.0 / total


def portfolio_variance(weights, cov) -> float:
    r"""Variance :math:`w^\top\Sigma w` of the portfolio's return under covariance :math:`\Sigma`."""
    w = np.asarray(weights, dtype=np.float64)
    cov = _check_covariance(cov)
    if w.shape != (cov.shape[0],):
        raise ValueError(f"weights must have one entry per asset ({cov.shape[0]}), got shape {w.shape}")
    return float(w @ cov @ w)
