r"""Consistency regularisation, and its equivalence with an L2 penalty for linear models.

Semi-supervised training adds, on unlabeled inputs :math:`u_j`, a term asking
the model to answer the same on a perturbed copy :math:`T(u_j)`:

.. math:: C(\theta) = \frac1m \sum_{j=1}^m E_T\,\|f_\theta(u_j) - f_\theta(T(u_j))\|^2 .

For a linear model :math:`f(u) = Wu + b` and Gaussian noise
:math:`T(u) = u + \varepsilon`, :math:`\varepsilon \sim N(0, \operatorname{diag}(\sigma^2))`,
the difference is :math:`-W\varepsilon` whatever :math:`u` is, so

.. math::

    C(W) = E\,\|W\varepsilon\|^2 = \sum_i \sigma_i^2 \|W_{:,i}\|^2
         \;=\; \sigma^2\|W\|_F^2 \text{ for a scalar } \sigma,

an L2 penalty (weighted per input feature when the noise is). A labeled
least-squares fit plus :math:`\tfrac\mu2 C` is therefore ridge regression with
:math:`\lambda = \mu\sigma^2` in normpen's convention
(:math:`\tfrac1{2n}\|y - Xw - b\|^2 + \tfrac\lambda2\|w\|^2`, scikit-learn's
``Ridge(alpha=n * lam)``): :func:`equivalent_ridge_lam`.

With a finite number of noise draws the penalty is :math:`W\hat S W^\top`-shaped,
:math:`\hat S = \frac1{mM}\sum \varepsilon\varepsilon^\top`, which tends to
:math:`\sigma^2 I` as the draws grow (:func:`sampled_noise_moment`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from normpen._array import check_nonnegative

__all__ = [
    "gaussian_perturbation",
    "consistency_loss",
    "expected_linear_consistency",
    "equivalent_ridge_lam",
    "sampled_noise_moment",
]


def _noise_std(noise_std):
    """``noise_std`` as a float64 array (scalar or one per feature), each >= 0 and finite."""
    std = np.asarray(noise_std, dtype=np.float64)
    if std.ndim > 1 or not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError(
            "noise_std must be a finite number >= 0 or a 1-D array of them (one per feature), "
            f"got {noise_std!r}"
        )
    return std


def gaussian_perturbation(noise_std, generator: torch.Generator | None = None) -> Callable:
    r"""Gaussian perturbation :math:`T(u) = u + \varepsilon`, :math:`\varepsilon_i \sim N(0, \sigma_i^2)`.

    A new :math:`\varepsilon` is drawn at every call.

    Parameters
    ----------
    noise_std : float or array-like of shape (d,)
        :math:`\sigma`, one for all features or one per feature.
    generator : torch.Generator, optional
        Source of the noise, for reproducible draws.
    """
    std = torch.from_numpy(_noise_std(noise_std))

    def perturb(u: torch.Tensor) -> torch.Tensor:
        if std.ndim == 1 and std.shape[0] != u.shape[-1]:
            raise ValueError(
                f"noise_std has {std.shape[0]} entries but the inputs have {u.shape[-1]} features"
            )
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        return u + noise * std.to(dtype=u.dtype, device=u.device)

    return perturb


def consistency_loss(
    model: Callable,
    unlabeled: torch.Tensor,
    perturb: Callable,
    n_draws: int = 1,
    *,
    stop_gradient: bool = False,
) -> torch.Tensor:
    r"""Monte Carlo consistency :math:`\frac1{mM}\sum_j\sum_{r=1}^M \|f(u_j) - f(T_r(u_j))\|^2`.

    Parameters
    ----------
    model : callable
        :math:`f`, mapping a batch ``(m, ...)`` to outputs ``(m, ...)`` (a ``torch.nn.Module``).
    unlabeled : Tensor of shape (m, ...)
        The unlabeled inputs :math:`u_j`.
    perturb : callable
        :math:`T`, a fresh random perturbation of a batch per call (e.g. :func:`gaussian_perturbation`).
    n_draws : int
        :math:`M`, perturbations per input.
    stop_gradient : bool
        Treat :math:`f(u_j)` as a fixed target (as in Mean Teacher or UDA); the
        value is the same, and so is the expected gradient for a linear model.

    Returns
    -------
    Tensor
        A 0-d tensor, differentiable with respect to the model's parameters.
    """
    if not isinstance(unlabeled, torch.Tensor):
        raise TypeError(f"unlabeled must be a torch.Tensor, got {type(unlabeled).__name__}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an int >= 1, got {n_draws!r}")
    if unlabeled.shape[0] == 0:
        raise ValueError("unlabeled is empty; the consistency of no inputs is undefined")
    clean = model(unlabeled)
    if stop_gradient:
        clean = clean.detach()
    repeated = unlabeled.repeat(n_draws, *([1] * (unlabeled.ndim - 1)))
    perturbed = model(perturb(repeated))
    difference = clean.repeat(n_draws, *([1] * (clean.ndim - 1))) - perturbed
    return (difference**2).reshape(difference.shape[0], -1).sum(dim=1).mean()


def expected_linear_consistency(weight, noise_std):
    r"""Exact :math:`E\|W\varepsilon\|^2 = \sum_i \sigma_i^2\|W_{:,i}\|^2` for :math:`f(u) = Wu + b`.

    ``weight`` is :math:`W` of shape ``(k, d)`` (``torch.nn.Linear.weight``) or
    a vector of shape ``(d,)`` for a scalar output; numpy or torch, the result
    is of the same kind. ``noise_std`` is :math:`\sigma`, scalar or per feature.
    """
    std = _noise_std(noise_std)
    is_torch = isinstance(weight, torch.Tensor)
    W = weight if is_torch else np.asarray(weight, dtype=np.float64)
    if W.ndim not in (1, 2):
        raise ValueError(f"weight must be (d,) or (k, d), got shape {tuple(W.shape)}")
    d = W.shape[-1]
    if std.ndim == 1 and std.shape[0] != d:
        raise ValueError(f"noise_std has {std.shape[0]} entries but weight has {d} input features")
    variance = std**2
    if is_torch:
        variance = torch.as_tensor(variance, dtype=W.dtype, device=W.device)
    squared_columns = (W**2).reshape(-1, d).sum(0)
    return (variance * squared_columns).sum()


def equivalent_ridge_lam(consistency_weight: float, noise_std: float) -> float:
    r"""The ridge strength :math:`\lambda = \mu\sigma^2` of a linear fit with consistency weight :math:`\mu`.

    The objective :math:`\frac1{2n}\|y - Xw - b\|^2 + \frac\mu2 C(w)` with
    isotropic Gaussian noise of standard deviation :math:`\sigma` equals
    :math:`\frac1{2n}\|y - Xw - b\|^2 + \frac{\mu\sigma^2}2\|w\|^2`, i.e.
    ``normpen`` ridge with ``lam = mu * sigma**2`` and scikit-learn's
    ``Ridge(alpha=n * mu * sigma**2)``.
    """
    return (
        check_nonnegative(consistency_weight, "consistency_weight")
        * check_nonnegative(noise_std, "noise_std") ** 2
    )


def sampled_noise_moment(noise: np.ndarray) -> np.ndarray:
    r"""Second moment :math:`\hat S = \frac1N\sum_r \varepsilon_r\varepsilon_r^\top` of the rows of ``noise``.

    With these draws the sampled consistency of a linear model is
    :math:`\operatorname{tr}(W\hat S W^\top)` exactly, and the semi-supervised
    least-squares fit solves :math:`(X_c^\top X_c/n + \mu\hat S)\,w = X_c^\top y_c/n`
    (:math:`X_c, y_c` centred), a generalised ridge that tends to ridge with
    :math:`\lambda = \mu\sigma^2` as :math:`\hat S \to \sigma^2 I`.
    """
    noise = np.asarray(noise, dtype=np.float64)
    if noise.ndim != 2 or noise.shape[0] == 0:
        raise ValueError(f"noise must be a non-empty 2-D array of draws (N, d), got shape {noise.shape}")
    return noise.T @ noise / noise.shape[0]
