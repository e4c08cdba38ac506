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


# ---- separable classes, block-correlated designs, pathway-structured regression --------------

__all__ += [
    "ClassificationProblem",
    "separable_classification",
    "planted_max_margin",
    "block_design",
    "pathway_regression",
]


@dataclass(frozen=True)
class ClassificationProblem:
    r"""Two classes :math:`y_i \in \{-1, +1\}` split by a known hyperplane with an empty slab around it.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Labels, -1.0 or +1.0.
    direction : ndarray of shape (n_features,)
        Unit normal :math:`u` of the generating hyperplane :math:`u^\top x + c = 0`.
    offset : float
        Its offset :math:`c`.
    gap : float
        Width of the empty slab: :math:`y_i(u^\top x_i + c) \ge \text{gap}/2` for every i, so
        the maximal margin of the data is at least ``gap / 2``.
    """

    X: np.ndarray
    y: np.ndarray
    direction: np.ndarray
    offset: float
    gap: float


def separable_classification(
    n_samples: int = 40, n_features: int = 2, *, gap: float = 1.0, offset: float = 0.0, seed=0
) -> ClassificationProblem:
    r"""Linearly separable classes: Gaussian clouds pushed apart along a random unit normal :math:`u`.

    Half the samples (rounded up) are labelled +1, in random order. Each point is
    :math:`x_i = P_\perp z_i + \big(y_i(\text{gap}/2 + |\zeta_i|) - c\big)u`
    with :math:`z_i \sim N(0, I_p)`, :math:`\zeta_i \sim N(0, 1)` and :math:`P_\perp` the projection
    orthogonal to :math:`u`, so :math:`y_i(u^\top x_i + c) = \text{gap}/2 + |\zeta_i|`: the
    hyperplane :math:`u^\top x + c = 0` separates the classes with margin at least ``gap / 2``.
    ``offset = 0`` gives data separable by a hyperplane through the origin.

    Parameters
    ----------
    n_samples : int
        At least 2 (one sample of each class).
    n_features : int
    gap : float
        Width of the empty slab, > 0.
    offset : float
        :math:`c`, any real number.
    seed : int or numpy.random.Generator
    """
    n_samples = _check_count(n_samples, "n_samples", 2)
    n_features = _check_count(n_features, "n_features", 1)
    gap = float(gap)
    if not np.isfinite(gap) or gap <= 0:
        raise ValueError(f"gap must be a finite number > 0 (the width of the empty slab), got {gap}")
    offset = float(offset)
    if not np.isfinite(offset):
        raise ValueError(f"offset must be finite, got {offset}")
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n_features)
    u /= np.linalg.norm(u)
    y = rng.permutation(np.where(np.arange(n_samples) < (n_samples + 1) // 2, 1.0, -1.0))
    z = rng.standard_normal((n_samples, n_features))
    along = y * (gap / 2 + np.abs(rng.standard_normal(n_samples))) - offset
    X = z - np.outer(z @ u, u) + np.outer(along, u)
    return ClassificationProblem(X=X, y=y, direction=u, offset=offset, gap=gap)


def planted_max_margin(
    n_samples: int = 16,
    n_features: int = 2,
    *,
    margin: float = 0.5,
    excess: float = 1.0,
    spread: float = 2.0,
    seed=0,
) -> ClassificationProblem:
    r"""Separable data whose hard-margin SVM (through the origin) is known: :math:`\hat w = u/\gamma`.

    With :math:`z_i = y_i x_i`, the max-margin problem
    :math:`\min \tfrac12\|w\|^2` s.t. :math:`z_i^\top w \ge 1` is planted:

    - ``n_features`` support vectors :math:`z_s = \gamma u + v_s`, with :math:`v_s \perp u` the
      vertices of a regular simplex of circumradius ``spread`` :math:`\cdot\gamma` (randomly rotated
      in :math:`u^\perp`) shifted so that :math:`\sum_s \omega_s v_s = 0` for the unequal weights
      :math:`\omega_s \propto 1, 2, \dots, p` (in random order);
    - every other point has :math:`z_i^\top u = \gamma(1 + \text{excess} + E_i)`, :math:`E_i \sim`
      Exp(1), and a :math:`N(0, (\text{spread}\,\gamma)^2)` component in :math:`u^\perp`.

    Then :math:`w = u/\gamma` satisfies every KKT condition with multipliers
    :math:`\alpha_s = \omega_s/\gamma^2 > 0` on the support vectors (:math:`\sum_s\alpha_s z_s = u/\gamma`)
    and 0 elsewhere, so the maximal margin is exactly :math:`\gamma` and every non-support point
    has margin at least :math:`\gamma(1 + \text{excess})`. The unequal multipliers make the
    offset of gradient descent from the max-margin ray (Soudry et al., 2018) not parallel
    to :math:`u`, and ``spread`` keeps the support vectors well apart, so that gradient
    descent on the logistic loss reaches its asymptote quickly. ``gap`` of the result is
    :math:`2\gamma` and ``offset`` is 0.

    Parameters
    ----------
    n_samples : int
        At least ``n_features + 1``; half of them (rounded up), in random order, are labelled +1.
    n_features : int
    margin : float
        :math:`\gamma > 0`.
    excess : float
        Relative margin excess of the non-support points, > 0.
    spread : float
        Circumradius of the support vectors' simplex in units of :math:`\gamma`, > 0.
    seed : int or numpy.random.Generator
    """
    n_features = _check_count(n_features, "n_features", 1)
    n_samples = _check_count(n_samples, "n_samples", n_features + 1)
    for value, name in ((margin, "margin"), (excess, "excess"), (spread, "spread")):
        if not (isinstance(value, Real) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    gamma = float(margin)
    rng = np.random.default_rng(seed)
    # an orthonormal basis: u, then n_features - 1 directions spanning its complement
    basis = np.linalg.qr(rng.standard_normal((n_features, n_features)))[0]
    u, perp = basis[:, 0], basis[:, 1:]
    simplex = np.eye(n_features) - 1.0 / n_features  # rows: regular simplex in the sum-zero hyperplane
    simplex_coords = simplex @ np.linalg.svd(simplex)[2][: n_features - 1].T
    radius = np.linalg.norm(simplex_coords[0]) if n_features > 1 else 1.0
    vertices = spread * gamma * simplex_coords / radius @ perp.T
    weights = rng.permutation(np.arange(1.0, n_features + 1))
    weights /= weights.sum()
    support = gamma * u + vertices - weights @ vertices
    n_rest = n_samples - n_features
    along = gamma * (1.0 + excess + rng.exponential(1.0, n_rest))
    rest = np.outer(along, u) + spread * gamma * rng.standard_normal((n_rest, n_features - 1)) @ perp.T
    order = rng.permutation(n_samples)
    z = np.vstack([support, rest])[order]
    y = rng.permutation(np.where(np.arange(n_samples) < (n_samples + 1) // 2, 1.0, -1.0))
    return ClassificationProblem(X=y[:, None] * z, y=y, direction=u, offset=0.0, gap=2 * gamma)


def block_design(n_samples: int, group_sizes, correlation: float, seed=0) -> np.ndarray:
    r"""Rows from :math:`N(0, \Sigma)` with unit variances, correlation :math:`\rho` within a group, 0 across.

    Feature :math:`j` of group :math:`g` is :math:`x_j = \sqrt\rho\, f_g + \sqrt{1-\rho}\, z_j`
    with independent standard normal factors :math:`f_g` and noises :math:`z_j`: the
    equicorrelated blocks of co-expressed genes in a pathway, or of near-duplicate
    measurements.

    Parameters
    ----------
    n_samples : int
    group_sizes : sequence of int
        Sizes of the consecutive groups (each >= 1).
    correlation : float
        :math:`\rho \in [0, 1)`.
    seed : int or numpy.random.Generator
    """
    n_samples = _check_count(n_samples, "n_samples", 1)
    sizes = _check_group_sizes(group_sizes)
    rho = _check_correlation(correlation)
    if rho < 0:
        raise ValueError(f"correlation must lie in [0, 1) for equicorrelated blocks, got {rho}")
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n_samples, len(sizes)))
    noise = rng.standard_normal((n_samples, sum(sizes)))
    return np.sqrt(rho) * np.repeat(factors, sizes, axis=1) + np.sqrt(1.0 - rho) * noise


def pathway_regression(
    n_samples: int = 60,
    group_sizes=(10,) * 50,
    n_active_groups: int = 3,
    *,
    correlation: float = 0.5,
    noise: float = 0.5,
    effects: str = "gene",
    seed=0,
) -> RegressionProblem:
    r"""Expression-like regression: genes in pathways (groups), a few whole pathways drive the response.

    The design is :func:`block_design` (genes of a pathway correlated by
    :math:`\rho`, pathways independent). In each of ``n_active_groups`` pathways
    drawn at random every gene has a nonzero effect, with one random sign
    :math:`s_g` per pathway (its genes act together):

    - ``effects="gene"``: :math:`w^\star_j = s_g u_j`, :math:`u_j \sim U[1, 3]` per gene;
    - ``effects="pathway"``: :math:`w^\star_j = s_g u_g/|g|`, one :math:`u_g \sim U[1, 3]` per pathway,
      so the response depends on the pathway's mean expression (its activity)
      and its genes are interchangeable.

    Then :math:`y = Xw^\star + \sigma\varepsilon`. ``n_samples`` may be far below the
    number of genes.

    Parameters
    ----------
    n_samples : int
    group_sizes : sequence of int
        Pathway sizes, in feature order.
    n_active_groups : int
        Number of pathways with an effect, ``0 .. len(group_sizes)``.
    correlation : float
        Within-pathway correlation :math:`\rho \in [0, 1)`.
    noise : float
        Noise standard deviation :math:`\sigma \ge 0`.
    effects : {"gene", "pathway"}
        One effect size per gene, or one per pathway shared by its genes.
    seed : int or numpy.random.Generator
    """
    if effects not in ("gene", "pathway"):
        raise ValueError(f"effects must be 'gene' or 'pathway', got {effects!r}")
    sizes = _check_group_sizes(group_sizes)
    n_active_groups = _check_count(n_active_groups, "n_active_groups", 0)
    if n_active_groups > len(sizes):
        raise ValueError(
            f"n_active_groups must be at most the number of groups ({len(sizes)}), got {n_active_groups}"
        )
    noise = check_nonnegative(noise, "noise")
    rng = np.random.default_rng(seed)
    X = block_design(n_samples, sizes, correlation, rng)
    groups = tuple(np.split(np.arange(X.shape[1]), np.cumsum(sizes)[:-1]))
    coef = np.zeros(X.shape[1])
    for g in rng.choice(len(sizes), size=n_active_groups, replace=False):
        size = groups[g].size
        sign = rng.choice([-1.0, 1.0])
        if effects == "gene":
            coef[groups[g]] = sign * rng.uniform(*_COEF_RANGE, size=size)
        else:
            coef[groups[g]] = sign * rng.uniform(*_COEF_RANGE) / size
    y = X @ coef + noise * rng.standard_normal(X.shape[0])
    return RegressionProblem(X=X, y=y, coef=coef, groups=groups, noise=noise)


# ---- factor-model asset returns ---------------------------------------------------------------

__all__ += ["FactorMarket", "factor_market"]


@dataclass(frozen=True)
class FactorMarket:
    r"""Asset returns of a factor model: the true moments and sampled estimation windows.

    Attributes
    ----------
    mean : ndarray of shape (n_assets,)
        True expected returns :math:`\mu`.
    cov : ndarray of shape (n_assets, n_assets)
        True covariance :math:`\Sigma = B B^\top + D`.
    returns : ndarray of shape (n_windows, n_periods, n_assets)
        Independent windows of i.i.d. returns :math:`r \sim N(\mu, \Sigma)`, one per row of the first axis.
    """

    mean: np.ndarray
    cov: np.ndarray
    returns: np.ndarray


def factor_market(
    n_assets: int = 20,
    n_periods: int = 60,
    n_windows: int = 1,
    *,
    n_factors: int = 2,
    seed=0,
) -> FactorMarket:
    r"""Returns of ``n_assets`` assets driven by ``n_factors`` common factors, in independent windows.

    Monthly-scale numbers: loadings :math:`B_{ik} \sim N(0, 0.04^2)` (the first
    factor, the market, has loadings :math:`0.04 + 0.02\,|z|`), idiosyncratic
    volatilities :math:`\sqrt{D_{ii}} \sim U[0.02, 0.08]`, and expected returns
    :math:`\mu = 0.005 + B\pi` with factor premia :math:`\pi_k \sim U[0, 0.5]`
    (expected return rises with risk, as in a factor model). Each window holds
    ``n_periods`` i.i.d. draws :math:`r_t \sim N(\mu, \Sigma)`.

    Parameters
    ----------
    n_assets, n_periods, n_windows, n_factors : int
    seed : int or numpy.random.Generator
    """
    n_assets = _check_count(n_assets, "n_assets", 1)
    n_periods = _check_count(n_periods, "n_periods", 1)
    n_windows = _check_count(n_windows, "n_windows", 1)
    n_factors = _check_count(n_factors, "n_factors", 1)
    rng = np.random.default_rng(seed)
    loadings = 0.04 * rng.standard_normal((n_assets, n_factors))
    loadings[:, 0] = 0.04 + 0.02 * np.abs(rng.standard_normal(n_assets))
    idiosyncratic = rng.uniform(0.02, 0.08, n_assets) ** 2
    cov = loadings @ loadings.T + np.diag(idiosyncratic)
    mean = 0.005 + loadings @ rng.uniform(0.0, 0.5, n_factors)
    noise = rng.standard_normal((n_windows, n_periods, n_assets)) @ np.linalg.cholesky(cov).T
    return FactorMarket(mean=mean, cov=cov, returns=mean + noise)


# ---- a ring of Gaussians (the 2-D GAN benchmark) --------------------------------------------------

__all__ += ["ring_centers", "ring_of_gaussians"]


def ring_centers(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    r"""The centers :math:`r(\cos(2\pi k/K), \sin(2\pi k/K))`, :math:`k = 0..K-1`, shape ``(K, 2)``."""
    n_modes = _check_count(n_modes, "n_modes", 1)
    radius = check_nonnegative(radius, "radius")
    angles = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def ring_of_gaussians(
    n_samples: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.05, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Points from an equal mixture of isotropic Gaussians centred on a ring (:func:`ring_centers`).

    Each point picks a mode :math:`k` uniformly and is
    :math:`c_k + \sigma\varepsilon`, :math:`\varepsilon \sim N(0, I_2)`: the standard
    2-D test of mode collapse in generative adversarial networks.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    modes : ndarray of shape (n_samples,), int
        The mode each point was drawn from.
    """
    n_samples = _check_count(n_samples, "n_samples", 1)
    std = check_nonnegative(std, "std")
    centers = ring_centers(n_modes, radius)
    rng = np.random.default_rng(seed)
    modes = rng.integers(0, len(centers), n_samples)
    return centers[modes] + std * rng.standard_normal((n_samples, 2)), modes
