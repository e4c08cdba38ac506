r"""Embedded data: scikit-learn's bundled data sets and seeded generators with a known answer.

Nothing here downloads: :func:`load` reads the data sets scikit-learn ships
inside its wheel, and the generators draw from a seeded
:class:`numpy.random.Generator`, so the same arguments give the same arrays
on every machine. Every array is float64.

Generators
----------
- :func:`gaussian_design`: rows drawn from :math:`N(0, \Sigma)` with the
  AR(1) (Toeplitz) correlation :math:`\Sigma_{ij} = \rho^{|i-j|}`;
- :func:`orthogonal_design`: :math:`X^\top X = n I` exactly, the design on
  which penalized least squares is the prox of the least-squares solution;
- :func:`grouped_regression`, :func:`sparse_regression`: a linear model
  :math:`y = X w^\star + \sigma\varepsilon` whose true coefficients
  :math:`w^\star` vanish outside known groups / a known support.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from normpen._array import check_nonnegative

__all__ = [
    "DATASETS",
    "Dataset",
    "load",
    "RegressionProblem",
    "gaussian_design",
    "orthogonal_design",
    "grouped_regression",
    "sparse_regression",
]

#: Task of each bundled data set :func:`load` knows.
DATASETS = {
    "breast_cancer": "classification",
    "diabetes": "regression",
    "digits": "classification",
    "iris": "classification",
    "wine": "classification",
}

#: Magnitude range of the nonzero true coefficients of the regression generators.
_COEF_RANGE = (1.0, 3.0)


@dataclass(frozen=True)
class Dataset:
    """A bundled data set as float64 arrays.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,), float64
        The target; for classification the class index ``0 .. K-1``.
    feature_names : tuple of str
    target_names : tuple of str
        Class names for classification (``target_names[int(y[i])]``), empty for regression.
    task : {"regression", "classification"}
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    task: str


def load(name: str) -> Dataset:
    """Load one of scikit-learn's bundled data sets (no download) as float64 arrays.

    Parameters
    ----------
    name : {"breast_cancer", "diabetes", "digits", "iris", "wine"}

    Examples
    --------
    >>> data = load("diabetes")
    >>> data.X.shape, data.task
    ((442, 10), 'regression')
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    import sklearn.datasets  # imported on use: it takes most of a second

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    return Dataset(
        X=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.float64),
        feature_names=tuple(str(f) for f in bunch.feature_names),
        target_names=tuple(str(t) for t in bunch.get("target_names", ())),
        task=DATASETS[name],
    )


@dataclass(frozen=True)
class RegressionProblem:
    r"""A seeded linear model :math:`y = X w^\star + \sigma\varepsilon` with known structure.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    coef : ndarray of shape (n_features,)
        The true coefficients :math:`w^\star`.
    groups : tuple of ndarray
        Index arrays partitioning the features, in order (singletons for
        :func:`sparse_regression`); ready for ``GroupLasso(lam, groups)``.
    noise : float
        Standard deviation :math:`\sigma` of the Gaussian noise.
    """

    X: np.ndarray
    y: np.ndarray
    coef: np.ndarray
    groups: tuple[np.ndarray, ...]
    noise: float

    @property
    def support(self) -> np.ndarray:
        """Indices of the nonzero true coefficients, increasing."""
        return np.flatnonzero(self.coef)

    @property
    def active_groups(self) -> np.ndarray:
        """Indices (into :attr:`groups`) of the groups with a nonzero true coefficient."""
        return np.array([g for g, idx in enumerate(self.groups) if np.any(self.coef[idx] != 0)], dtype=int)


def gaussian_design(n_samples: int, n_features: int, correlation: float = 0.0, seed=0) -> np.ndarray:
    r"""Rows drawn i.i.d. from :math:`N(0, \Sigma)`, :math:`\Sigma_{ij} = \rho^{|i-j|}` (correlated features).

    Built column by column with the AR(1) recursion
    :math:`x_1 = z_1`, :math:`x_j = \rho\,x_{j-1} + \sqrt{1-\rho^2}\,z_j`, which has
    exactly this covariance (unit variances, correlation :math:`\rho^{k}` between
    features :math:`k` apart) in :math:`O(np)` time.

    Parameters
    ----------
    n_samples, n_features : int
    correlation : float
        :math:`\rho \in (-1, 1)`; 0 gives independent standard normal features.
    seed : int or numpy.random.Generator
    """
    n_samples = _check_count(n_samples, "n_samples", 1)
    n_features = _check_count(n_features, "n_features", 1)
    rho = _check_correlation(correlation)
    z = np.random.default_rng(seed).standard_normal((n_samples, n_features))
    x = np.empty_like(z)
    x[:, 0] = z[:, 0]
    innovation = np.sqrt(1.0 - rho * rho)
    for j in range(1, n_features):
        x[:, j] = rho * x[:, j - 1] + innovation * z[:, j]
    return x


def orthogonal_design(n_samples: int, n_features: int, seed=0) -> np.ndarray:
    r"""A random design with orthogonal columns of squared norm ``n_samples``: :math:`X^\top X = nI`.

    On this design the averaged least-squares loss
    :math:`\tfrac1{2n}\|y - Xw\|^2 = \tfrac12\|w - \hat w\|^2 + \text{const}`
    with :math:`\hat w = X^\top y / n`, so the minimiser of the loss plus a
    penalty :math:`P` is exactly :math:`\operatorname{prox}_P(\hat w)`.

    The columns are the Q factor of a Gaussian matrix (signs fixed so it is
    Haar distributed) scaled by :math:`\sqrt n`. Needs ``n_samples >= n_features``.
    """
    n_samples = _check_count(n_samples, "n_samples", 1)
    n_features = _check_count(n_features, "n_features", 1)
    if n_samples < n_features:
        raise ValueError(
            f"an orthogonal design needs n_samples >= n_features, got {n_samples} < {n_features}; "
            "use more samples or design='gaussian'"
        )
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_samples, n_features)))
    return np.sqrt(n_samples) * q * np.where(np.diag(r) < 0, -1.0, 1.0)


def grouped_regression(
    n_samples: int = 100,
    group_sizes=(3, 3, 3, 3, 3, 3),
    n_active_groups: int = 2,
    *,
    noise: float = 0.1,
    correlation: float = 0.0,
    design: str = "gaussian",
    seed=0,
) -> RegressionProblem:
    r"""A linear model whose true coefficients vanish outside ``n_active_groups`` groups.

    Features are split into consecutive groups of the given sizes; the active
    groups are drawn at random, and every coefficient of an active group is
    nonzero: :math:`w^\star_j = s_j u_j` with random signs :math:`s_j` and
    :math:`u_j \sim U[1, 3]`. Then :math:`y = X w^\star + \sigma\varepsilon`,
    :math:`\varepsilon \sim N(0, I)`.

    Parameters
    ----------
    n_samples : int
    group_sizes : sequence of int
        Size of each group (each >= 1), in feature order.
    n_active_groups : int
        Number of groups with nonzero coefficients, ``0 .. len(group_sizes)``.
    noise : float
        Noise standard deviation :math:`\sigma \ge 0` (0 gives :math:`y = Xw^\star` exactly).
    correlation : float
        AR(1) feature correlation :math:`\rho` of the Gaussian design, see :func:`gaussian_design`.
    design : {"gaussian", "orthogonal"}
        :func:`gaussian_design` or :func:`orthogonal_design` (which needs ``correlation=0``).
    seed : int or numpy.random.Generator
    """
    sizes = _check_group_sizes(group_sizes)
    n_active_groups = _check_count(n_active_groups, "n_active_groups", 0)
    if n_active_groups > len(sizes):
        raise ValueError(
            f"n_active_groups must be at most the number of groups ({len(sizes)}), got {n_active_groups}"
        )
    noise = check_nonnegative(noise, "noise")
    rng = np.random.default_rng(seed)
    n_features = sum(sizes)
    X = _design(design, n_samples, n_features, correlation, rng)
    groups = tuple(np.split(np.arange(n_features), np.cumsum(sizes)[:-1]))
    active = rng.choice(len(sizes), size=n_active_groups, replace=False)
    coef = np.zeros(n_features)
    for g in active:
        idx = groups[g]
        coef[idx] = rng.choice([-1.0, 1.0], size=idx.size) * rng.uniform(*_COEF_RANGE, size=idx.size)
    y = X @ coef + noise * rng.standard_normal(X.shape[0])
    return RegressionProblem(X=X, y=y, coef=coef, groups=groups, noise=noise)


def sparse_regression(
    n_samples: int = 100,
    n_features: int = 20,
    n_informative: int = 5,
    *,
    noise: float = 0.1,
    correlation: float = 0.0,
    design: str = "gaussian",
    seed=0,
) -> RegressionProblem:
    r"""A linear model with a known support of ``n_informative`` features.

    :func:`grouped_regression` with singleton groups: ``n_informative``
    coefficients drawn as :math:`\pm U[1, 3]`, the others exactly 0;
    ``problem.support`` gives their indices. See :func:`grouped_regression`
    for the other parameters.
    """
    n_features = _check_count(n_features, "n_features", 1)
    n_informative = _check_count(n_informative, "n_informative", 0)
    if n_informative > n_features:
        raise ValueError(f"n_informative must be at most n_features ({n_features}), got {n_informative}")
    return grouped_regression(
        n_samples,
        (1,) * n_features,
        n_informative,
        noise=noise,
        correlation=correlation,
        design=design,
        seed=seed,
    )


def _design(design, n_samples, n_features, correlation, rng):
    """The design matrix ``design`` names, drawn from ``rng``."""
    if design == "gaussian":
        return gaussian_design(n_samples, n_features, correlation, rng)
    if design == "orthogonal":
        if _check_correlation(correlation) != 0:
            raise ValueError("design='orthogonal' has uncorrelated columns; use correlation=0")
        return orthogonal_design(n_samples, n_features, rng)
    raise ValueError(f"design must be 'gaussian' or 'orthogonal', got {design!r}")


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_correlation(value):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"correlation must be a real number, got {type(value).__name__}")
    if not -1.0 < value < 1.0:
        raise ValueError(f"correlation must lie strictly between -1 and 1, got {value}")
    return float(value)


def _check_group_sizes(group_sizes):
    sizes = tuple(group_sizes) if not isinstance(group_sizes, str) else ()
    if not sizes:
        raise ValueError(f"group_sizes must be a non-empty sequence of ints >= 1, got {group_sizes!r}")
    return tuple(_check_count(s, "each group size", 1) for s in sizes)
