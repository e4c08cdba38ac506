"""Input checks shared by the solvers, the path and the estimators of :mod:`normpen.linear`.

Each check raises ``ValueError`` or ``TypeError`` naming the argument, what is
wrong and how to fix it, before anything is computed or changed.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array, check_consistent_length

__all__ = [
    "check_design",
    "check_target_array",
    "check_tol",
    "check_count",
    "check_flag",
    "check_lams",
    "decreasing_lams",
]


def check_design(X, name="X"):
    """``X`` as a float32/float64 Fortran-ordered array or CSC matrix, finite, 2-D, not empty.

    Other dtypes become float64. scipy.sparse input of any format becomes CSC
    (cheap column slices for coordinate descent). Raises ``ValueError`` for NaN
    or infinite entries, a non-2-D ``X`` or an empty one.
    """
    if sp.issparse(X) and X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    X = check_array(
        X,
        accept_sparse="csc",
        dtype=[np.float64, np.float32],
        order="F",
        ensure_all_finite=True,
        input_name=name,
    )
    _check_scale(X.data if sp.issparse(X) else X, X.shape[0] * X.shape[1], X.dtype, name)
    return X


def _check_scale(values, count, dtype, name):
    r"""Raise unless every sum of ``count`` products of two of ``values`` is finite in ``dtype``.

    Gram entries :math:`\sum_i x_{ij}x_{ik}`, column norms, gradients
    :math:`X^\top X w` (``count`` = np) and the squared residuals (``count`` = n)
    are such sums; above :math:`\sqrt{f_{\max}/\text{count}}` they can overflow
    and a solver would return zeros or NaN.
    """
    largest = float(np.max(np.abs(values), initial=0.0))
    limit = math.sqrt(float(np.finfo(dtype).max) / max(count, 1))
    if largest > limit:
        raise ValueError(
            f"{name} has entries up to {largest:.3g}: at that scale sums of products of its entries "
            f"overflow {np.dtype(dtype).name} (the limit for this shape is {limit:.3g}); divide {name} by a "
            "power of ten (or standardise it) and rescale the fitted coefficients by the same factor"
        )


def check_target_array(X, y, name="y"):
    """``y`` as a finite 1-D or 2-D numpy array with as many rows as ``X``."""
    y = check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=True, input_name=name)
    if y.dtype.kind == "f":
        _check_scale(y, y.size, np.float64, name)
    if y.ndim > 2:
        raise ValueError(f"{name} must be 1-D (one target) or 2-D (one column per output), got {y.ndim}-D")
    check_consistent_length(X, y)
    return y


def check_tol(tol, name="tol"):
    """``tol`` as a positive finite float."""
    if isinstance(tol, bool) or not isinstance(tol, Real) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"{name} must be a positive finite number such as 1e-4, got {tol!r}")
    return float(tol)


def check_count(value, name, minimum=1):
    """``value`` as an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_flag(value, name):
    """``value`` as a ``bool``: only ``True`` and ``False`` (numpy's too), never strings or numbers."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_lams(lams, name="lams"):
    """A non-empty 1-D float64 array of finite, nonnegative strengths."""
    try:
        lams = np.asarray(lams, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers (strengths >= 0), got {lams!r}") from None
    if lams.ndim != 1 or lams.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of strengths, got shape {lams.shape}")
    if not np.all(np.isfinite(lams)) or np.any(lams < 0):
        raise ValueError(f"{name} must be finite strengths >= 0")
    return lams


def decreasing_lams(lams, name="lams"):
    """:func:`check_lams`, sorted from the largest strength down (the order of a warm-started path)."""
    return -np.sort(-check_lams(lams, name))
