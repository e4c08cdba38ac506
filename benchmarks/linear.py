r"""normpen.linear against scikit-learn, skglm, celer, glmnet and adelie: time to a certified accuracy.

Issue 15.

Every library solves the same objective on the same data, without an
intercept (regression data centred first), one thread, along the same grid
of strengths; every solution is then measured by this module, whatever the
library reports itself, two ways:

- the *certified gap*: the duality gap of normpen's certificate (the
  datafit's derivative :math:`u = \ell'(XW)` rescaled into the dual ball, or
  paired with the ridge part's conjugate; :func:`relative_gap`) relative to
  the objective at :math:`W = 0`, the largest over the path;
- the *suboptimality*: the objective minus the best objective any run of any
  library reached at that strength, relative to the objective at
  :math:`W = 0`, the largest over the path. It is at most the gap and does
  not depend on the dual point a library happens to leave (glmnet's and
  adelie's objectives are much closer to the optimum than their gaps say).

The objective, for the quadratic, logistic and multinomial losses,
:math:`\frac1n\sum_i \ell(y_i, x_i^\top W) + \lambda\big(r\sum_b \omega_b\|W_b\|
+ \frac{1-r}2\|W\|^2\big)`, with blocks :math:`b` single coefficients
(:math:`\omega_b = 1`) or groups of ``group_size`` rows
(:math:`\omega_b = \sqrt{|b|}`). Each peer's parameters are mapped to it
(:data:`PEERS`); glmnet divides a gaussian :math:`\lambda` by the population
standard deviation :math:`s` of ``y`` even with ``standardize=False``, so ours
:math:`(\lambda, r)` is glmnet's :math:`\lambda_g = \lambda(r + (1-r)s)`,
:math:`\alpha = r / (r + (1-r)s)`. A mapping is checked on every run before it
is reported: the strength implied by the KKT conditions on the solution's
support (:func:`implied_strength`) must be the mapped one within
:data:`MAPPING_RTOL` (median over the path), otherwise the peer is refused.

Two accuracies, one table each:

1. normpen at ``--tol`` (default 1e-6, the accuracy of issue 15's table;
   ``g1`` always at 1e-6) against each peer run at its own default
   tolerance and then at tenfold tighter ones (down to a millionth of its
   default) until it reaches normpen's gap and suboptimality, unless a run
   already took ``--patience`` times normpen's time. The ratio is normpen's
   time over the fastest run of any peer with an equal or better accuracy,
   by each measure (or "no peer as accurate");
2. each peer with its own defaults, and normpen with ``tol`` set to the gap
   that peer reached (time to the same certified gap) and, separately, its
   time to the suboptimality the peer reached: normpen at the peer's gap,
   then at tenfold tighter tolerances (the ladder the peers get in table 1)
   until its measured suboptimality is at most the peer's, at the latest at
   ``tol`` = that suboptimality (suboptimality is at most the gap): ratio
   normpen over peer by each measure. A close call (a ratio within
   :data:`_CLOSE` of 1) is timed again in ``--rounds`` paired rounds, normpen
   at that ``tol`` and the peer at its default back to back, the order
   alternating (:func:`paired_ratios`): the cell shows the median of the
   rounds' ratios and their range, since two best-of-3 times taken minutes
   apart moved by 20% on the development machine.

Times are process CPU seconds with every thread pool pinned to one thread
(best of 3 for runs under a second), after one untimed call on a corner of
the data (skglm compiles with numba). A last table gives the first fit in a
fresh process (cold start, import excluded).

Workloads (issue 15's letters; ``--quick`` divides every dimension by 5):

a. lasso path, AR(1) design (rho = 0.6), n = 1000, p = 5000, 50 strengths to
   lambda_max / 100; ``a200``: the same at n = 200, p = 1000;
b. elastic net path, l1_ratio = 0.5, same data; ``b200``: at 200 x 1000;
c. L1 logistic path, n = 2000, p = 2000, 50 strengths to lambda_max / 100;
d. group lasso path, groups of 5, same data as (a);
e. sparse lasso path, 20000 x 50000, 1% nonzero, 20 strengths to lambda_max / 20;
f. multinomial L1 path (every coefficient its own block: glmnet's
   "ungrouped"), K = 5, n = 1000, p = 500, 20 strengths to lambda_max / 100;
g1. diabetes (scikit-learn's) with degree-3 polynomial features, standardised
    (442 x 285), lasso, 100 strengths to lambda_max / 1000, normpen at tol 1e-6;
h. wide lasso, n = 200, p = 100000, 50 strengths to lambda_max / 100;
svm. the linear SVMs of ``benchmarks/svm_problem.py`` (its own peers and
     measure: relative suboptimality), in their own table.

Run ``python benchmarks/linear.py [--quick] [--only a,b,g1] [--tol 1e-6] [--patience 5] [--rounds 7]``.
Install the peers with ``scripts/setup_bench.sh``; a missing one is skipped.
This is a benchmark, not a test: nothing asserts a time.
"""

# ruff: noqa: E402 (the thread variables are set before numpy is imported)
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy (and the peers) start their thread pools

import argparse
import math
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy.special import log_softmax, softmax, xlogy
from threadpoolctl import threadpool_limits

console = Console(width=160)

# ---- workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    r"""One penalized problem and its grid of strengths.

    The objective is
    :math:`\frac1n\sum_i\ell(y_i, x_i^\top W) + \lambda(r\sum_b\omega_b\|W_b\| + \frac{1-r}2\|W\|^2)`;

    ``loss`` is ``"quadratic"`` (``y`` real), ``"logistic"`` (``y`` in
    {-1, +1}) or ``"multinomial"`` (``y`` integer labels 0..K-1, coefficients
    ``(p, K)``); ``group_size`` rows per block (1: every coefficient its own
    block); ``tol``, when given, replaces ``--tol`` for normpen in table 1.
    """

    key: str
    title: str
    X: object
    y: np.ndarray
    loss: str
    lams: np.ndarray
    l1_ratio: float = 1.0
    group_size: int = 1
    tol: float | None = None
    n_classes: int = field(init=False, default=1)

    def __post_init__(self):
        if self.loss == "multinomial":
            object.__setattr__(self, "n_classes", int(self.y.max()) + 1)

    @property
    def coef_shape(self):
        p = self.X.shape[1]
        return (p, self.n_classes) if self.loss == "multinomial" else (p,)


def ar1_design(n, p, rho, rng):
    """Rows with AR(1) correlation :math:`\\operatorname{corr}(x_j, x_k) = \\rho^{|j-k|}`, Fortran order."""
    X = np.empty((n, p), order="F")
    X[:, 0] = rng.standard_normal(n)
    scale = math.sqrt(1 - rho**2)
    for j in range(1, p):
        X[:, j] = rho * X[:, j - 1] + scale * rng.standard_normal(n)
    return X


def regression(n, p, rng, sparse_signal=20):
    """Centred AR(1) design and a centred response with 20 nonzero coefficients and unit noise."""
    X = ar1_design(n, p, 0.6, rng)
    w = np.zeros(p)
    w[rng.choice(p, sparse_signal, replace=False)] = rng.standard_normal(sparse_signal)
    y = X @ w + rng.standard_normal(n)
    return np.asfortranarray(X - X.mean(0)), y - y.mean()


def grid(work, n_lams, eps):
    """``n_lams`` strengths from :func:`lambda_max` down to ``eps`` times it, geometric."""
    return lambda_max(work) * np.geomspace(1.0, eps, n_lams)


def _with_grid(key, title, X, y, loss, n_lams, eps, **options):
    work = Workload(key, title, X, y, loss, np.ones(1), **options)
    return replace(work, lams=grid(work, n_lams, eps))


#: The workloads' keys, in the order :func:`workloads` draws their data.
KEYS = ("a", "b", "d", "a200", "b200", "c", "e", "f", "g1", "h")


def workloads(quick, seed=0, keys=KEYS):
    """The workloads named in ``keys``, by key.

    Their data are drawn from ``seed`` in one fixed order whichever are asked for (a workload left
    out still draws its random numbers, cheap ones; the two large designs, the sparse (e) and the wide
    (h), are formed only when asked for), so a workload is the same in every run.
    """
    rng = np.random.default_rng(seed)
    s = 5 if quick else 1
    X, y = regression(1000 // s, 5000 // s, rng)
    Xs, ys = regression(200 // s, 1000 // s, rng)
    works = [
        _with_grid("a", "lasso path", X, y, "quadratic", 50, 1e-2),
        _with_grid("b", "elastic net path, l1_ratio 0.5", X, y, "quadratic", 50, 1e-2, l1_ratio=0.5),
        _with_grid("d", "group lasso path, groups of 5", X, y, "quadratic", 50, 1e-2, group_size=5),
        _with_grid("a200", "lasso path, small", Xs, ys, "quadratic", 50, 1e-2),
        _with_grid("b200", "elastic net path, small", Xs, ys, "quadratic", 50, 1e-2, l1_ratio=0.5),
        _logistic(2000 // s, 2000 // s, rng),
    ]
    noise = rng.standard_normal(20000 // s)
    if "e" in keys:
        works.append(_sparse(20000 // s, 50000 // s, noise, seed))
    works += [_multinomial(1000 // s, 500 // s, 5, rng), _diabetes(quick)]
    if "h" in keys:
        Xh, yh = regression(200 // s, 100_000 // s, rng)
        works.append(_with_grid("h", "wide lasso path", Xh, yh, "quadratic", 50, 1e-2))
    return {work.key: work for work in works if work.key in keys}


def _logistic(n, p, rng):
    X = rng.standard_normal((n, p))
    w = np.zeros(p)
    w[:20] = 1.0
    y = np.where(X @ w + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return _with_grid("c", "L1 logistic path", np.asfortranarray(X), y, "logistic", 50, 1e-2)


def _sparse(n, p, noise, seed):
    X = sp.random(n, p, density=0.01, format="csc", random_state=seed)
    w = np.zeros(p)
    w[:50] = 1.0
    y = X @ w + 0.1 * noise
    return _with_grid("e", "sparse lasso path, 1% nonzero", X, y - y.mean(), "quadratic", 20, 5e-2)


def _multinomial(n, p, n_classes, rng):
    X = rng.standard_normal((n, p))
    W = np.zeros((p, n_classes))
    W[:10] = rng.standard_normal((10, n_classes))
    probabilities = softmax(X @ W, axis=1)
    y = np.array([rng.choice(n_classes, p=row) for row in probabilities])
    return _with_grid(
        "f", f"multinomial L1 path, K={n_classes}", np.asfortranarray(X), y, "multinomial", 20, 1e-2
    )


def _diabetes(quick):
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(PolynomialFeatures(3, include_bias=False).fit_transform(X))
    n_lams, eps = (20, 1e-2) if quick else (100, 1e-3)
    title = "diabetes, degree-3 features, lasso"
    return _with_grid("g1", title, np.asfortranarray(X), y - y.mean(), "quadratic", n_lams, eps, tol=1e-6)


# ---- the certificate every library is measured with -----------------------------------


def _loss(work, z):
    """Mean loss at the linear predictor ``z`` and its derivative :math:`u_i = \\ell'(z_i)`."""
    n, y = z.shape[0], work.y
    if work.loss == "quadratic":
        return 0.5 * np.dot(z - y, z - y) / n, z - y
    if work.loss == "logistic":
        margins = -y * z
        return np.logaddexp(0.0, margins).mean(), -y * _sigmoid(margins)
    Y = np.eye(work.n_classes)[y]
    log_p = log_softmax(z, axis=1)
    return -np.sum(Y * log_p) / n, np.exp(log_p) - Y


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _conjugate(work, u):
    r"""Mean of the conjugates :math:`\ell_i^*(u_i)` (``inf`` outside their domain)."""
    y = work.y
    if work.loss == "quadratic":
        return np.mean(0.5 * u * u + u * y)
    if work.loss == "logistic":
        t = -u * y  # in [0, 1] on the domain
        return np.mean(xlogy(t, t) + xlogy(1 - t, 1 - t))
    q = u + np.eye(work.n_classes)[y]  # in the simplex on the domain
    return np.sum(xlogy(q, q)) / u.shape[0]


def _block_norms(work, V):
    """Euclidean norms of the blocks of ``V`` and their weight :math:`\\omega = \\sqrt{|b|}`."""
    blocks = np.reshape(V, (-1, work.group_size))
    return np.linalg.norm(blocks, axis=1), math.sqrt(work.group_size)


def objective_at_zero(work):
    """:math:`P(0) = \\frac1n\\sum_i\\ell(y_i, 0)`, the scale of both accuracy measures."""
    return _loss(work, np.zeros((work.X.shape[0], *work.coef_shape[1:])))[0]


def objective(work, lam, W):
    """The primal objective at strength ``lam``."""
    norms, omega = _block_norms(work, W)
    r = work.l1_ratio
    return _loss(work, work.X @ W)[0] + lam * (r * omega * norms.sum() + 0.5 * (1 - r) * np.sum(W * W))


def _neg_gradient(work, W):
    """:math:`-\\nabla F(W) = -X^\\top u / n` and :math:`u`."""
    u = _loss(work, work.X @ W)[1]
    return -(work.X.T @ u) / work.X.shape[0], u


def relative_gap(work, lam, W):
    r"""Duality gap at ``W`` over :math:`P(0)`: normpen's certificate, computed here for every library.

    With :math:`v = -X^\top u/n` and :math:`t_b = \|v_b\| / (\lambda\omega_b)`:
    for a pure norm penalty (:math:`r = 1`) the dual point is
    :math:`u / \max(1, \max_b t_b)`, which is feasible, and
    :math:`D = -\frac1n\sum\ell^*`; with a ridge part :math:`u` itself and
    :math:`D = -\frac1n\sum\ell^*(u_i) - \sum_b (\|v_b\| - \lambda r\omega_b)_+^2 / (2\lambda(1-r))`.
    """
    v, u = _neg_gradient(work, W)
    norms, omega = _block_norms(work, v)
    r = work.l1_ratio
    if r == 1.0:
        dual = -_conjugate(work, u / max(1.0, norms.max() / (lam * omega)))
    else:
        excess = np.maximum(norms - lam * r * omega, 0.0)
        dual = -_conjugate(work, u) - np.sum(excess**2) / (2 * lam * (1 - r))
    return (objective(work, lam, W) - dual) / objective_at_zero(work)


def lambda_max(work):
    """Smallest strength with :math:`W = 0` optimal: :math:`\\max_b \\|\\nabla_b F(0)\\| / (r\\omega_b)`."""
    norms, omega = _block_norms(work, _neg_gradient(work, np.zeros(work.coef_shape))[0])
    return norms.max() / (omega * work.l1_ratio)


def implied_strength(work, lam, W):
    r"""The strength the KKT conditions on the support of ``W`` imply, over ``lam`` (1 for a right mapping).

    On a nonzero block the optimality condition is
    :math:`v_b - \lambda(1-r)W_b = \lambda r\omega_b W_b/\|W_b\|`; its
    component along :math:`W_b` gives one estimate of :math:`\lambda` per block
    and this returns their median over ``lam`` (``nan`` for an empty support).
    The ridge part is evaluated at ``lam``, so an error in the l1 ratio's
    mapping shows too.
    """
    v, _ = _neg_gradient(work, W)
    blocks_w = np.reshape(W, (-1, work.group_size))
    blocks_v = np.reshape(v, (-1, work.group_size))
    norms = np.linalg.norm(blocks_w, axis=1)
    active = norms > 0
    if not active.any():
        return math.nan
    r, omega = work.l1_ratio, math.sqrt(work.group_size)
    along = np.sum(blocks_v[active] * blocks_w[active], axis=1) / norms[active]
    return float(np.median((along - lam * (1 - r) * norms[active]) / (lam * r * omega)))


#: Largest median relative error of :func:`implied_strength` over a path for a mapping to be reported.
MAPPING_RTOL = 1e-2


def mapping_error(work, coefs):
    """Median over the path of :math:`|\\text{implied strength} - 1|` (0 when every solution is zero)."""
    ratios = [implied_strength(work, lam, W) for lam, W in zip(work.lams, coefs, strict=True)]
    errors = [abs(x - 1) for x in ratios if not math.isnan(x)]
    return float(np.median(errors)) if errors else 0.0


# ---- the libraries ------------------------------------------------------------------------
# A runner takes (workload, tol) and returns one coefficient array per strength, or None when the
# library does not solve that problem; it raises PeerFailed when it stops short.


class PeerFailed(RuntimeError):
    """A library returned fewer strengths than asked or failed on the problem."""


def run_normpen(work, tol):
    from normpen.linear import path
    from normpen.linear.datafits import Logistic, Multinomial, Quadratic
    from normpen.penalties.elastic_net import ElasticNet
    from normpen.penalties.group_lasso import GroupLasso
    from normpen.penalties.l1 import L1

    datafit = {"quadratic": Quadratic, "logistic": Logistic, "multinomial": Multinomial}[work.loss]()
    if work.group_size > 1:
        p, g = work.X.shape[1], work.group_size
        penalty = GroupLasso(1.0, [np.arange(i, i + g) for i in range(0, p, g)])
    elif work.l1_ratio < 1:
        penalty = ElasticNet(1.0, work.l1_ratio)
    else:
        penalty = L1(1.0)
    result = path(work.X, work.y, datafit, penalty, work.lams, fit_intercept=False, tol=tol)
    return list(result.coefs)


def run_sklearn(work, tol):
    from sklearn import linear_model

    X, y, n = work.X, work.y, work.X.shape[0]
    if work.group_size > 1:
        return None
    if work.loss == "quadratic":
        _, coefs, _ = linear_model.enet_path(
            X, y, l1_ratio=work.l1_ratio, alphas=work.lams, tol=tol, max_iter=100_000
        )
        return list(coefs.T)
    # liblinear for two classes (no warm start), saga warm-started along the path for K classes
    solver = "liblinear" if work.loss == "logistic" else "saga"
    model = linear_model.LogisticRegression(
        l1_ratio=1.0, solver=solver, fit_intercept=False, tol=tol, max_iter=100_000, warm_start=True
    )
    return [model.set_params(C=1 / (n * lam)).fit(X, y).coef_.T.squeeze().copy() for lam in work.lams]


def run_skglm(work, tol):
    from skglm import datafits, penalties, solvers

    X, y, p = work.X, work.y, work.X.shape[1]
    if work.loss == "multinomial":
        return None
    if work.group_size > 1:
        g = work.group_size
        grp_ptr = np.arange(0, p + 1, g, dtype=np.int32)
        grp_indices = np.arange(p, dtype=np.int32)
        datafit, solver = datafits.QuadraticGroup(grp_ptr, grp_indices), solvers.GroupBCD(tol=tol)
        weights = np.full(p // g, math.sqrt(g))

        def penalty(lam):
            return penalties.WeightedGroupL2(lam, weights, grp_ptr, grp_indices)
    elif work.loss == "logistic":
        datafit, solver = datafits.Logistic(), solvers.ProxNewton(tol=tol, fit_intercept=False)

        def penalty(lam):
            return penalties.L1(lam)
    else:
        datafit, solver = datafits.Quadratic(), solvers.AndersonCD(tol=tol, fit_intercept=False)

        def penalty(lam):
            return penalties.L1_plus_L2(lam, work.l1_ratio) if work.l1_ratio < 1 else penalties.L1(lam)

    # warm-started solves along the grid, as skglm's own estimators and path do
    coefs, w = [], np.zeros(p)
    for lam in work.lams:
        w = solver.solve(X, y, datafit, penalty(float(lam)), w_init=w.copy(), Xw_init=np.asarray(X @ w))[0]
        coefs.append(w.copy())
    return coefs


def run_celer(work, tol):
    from celer import celer_path

    X, y, n = work.X, work.y, work.X.shape[0]
    if work.loss == "multinomial":
        return None
    if work.loss == "logistic":  # celer's logistic loss is a sum, not a mean
        _, coefs, _ = celer_path(X, y, "logreg", alphas=work.lams * n, tol=tol)
    elif work.group_size > 1:  # celer's group weights are 1, ours sqrt(group size)
        g = work.group_size
        _, coefs, _ = celer_path(X, y, "grouplasso", groups=g, alphas=work.lams * math.sqrt(g), tol=tol)
    else:  # celer solves scikit-learn's elastic net, alpha * (r|w| + (1-r)/2 w^2)
        _, coefs, _ = celer_path(X, y, "lasso", alphas=work.lams, l1_ratio=work.l1_ratio, tol=tol)
    return list(coefs.T)


def glmnet_gaussian_strengths(lams, l1_ratio, y):
    r"""glmnet's ``(lambda_path, alpha)`` for our gaussian ``(lams, l1_ratio)``.

    glmnet divides :math:`\lambda` by the population standard deviation
    :math:`s` of ``y`` (even with ``standardize=False``), which leaves the l1
    part's strength and scales the ridge part's by :math:`1/s`:
    :math:`\lambda_g\alpha = \lambda r` and :math:`\lambda_g(1-\alpha)/s = \lambda(1-r)`,
    so :math:`\lambda_g = \lambda(r + (1-r)s)` and :math:`\alpha = r/(r + (1-r)s)`.
    """
    s = float(np.std(y))
    scale = l1_ratio + (1 - l1_ratio) * s
    return np.asarray(lams) * scale, l1_ratio / scale


def run_glmnet(work, tol):
    import glmnet

    if work.group_size > 1:
        return None
    options = dict(standardize=False, fit_intercept=False, n_splits=0, tol=tol)
    if work.loss == "quadratic":
        lams, alpha = glmnet_gaussian_strengths(work.lams, work.l1_ratio, work.y)
        model = glmnet.ElasticNet(alpha=alpha, lambda_path=lams, **options).fit(work.X, work.y)
        coefs = list(model.coef_path_.T)
    else:  # lognet: binomial, or multinomial with type "ungrouped"
        model = glmnet.LogitNet(alpha=work.l1_ratio, lambda_path=work.lams, **options).fit(work.X, work.y)
        path = model.coef_path_  # (classes, p, L), one "class" for two
        coefs = [path[0, :, i] if work.loss == "logistic" else path[:, :, i].T for i in range(path.shape[2])]
    if len(coefs) != len(work.lams):
        raise PeerFailed(f"glmnet stopped after {len(coefs)} of {len(work.lams)} strengths")
    return coefs


def run_adelie(work, tol):
    import adelie

    X, n_lams = work.X, len(work.lams)
    if work.loss == "multinomial":  # adelie's multinomial groups are whole features (every class)
        return None
    matrix = adelie.matrix.sparse(X) if sp.issparse(X) else adelie.matrix.dense(np.asfortranarray(X))
    if work.loss == "quadratic":
        glm = adelie.glm.gaussian(work.y)
    else:
        glm = adelie.glm.binomial((work.y + 1) / 2)
    state = adelie.grpnet(
        matrix,
        glm,
        groups=np.arange(0, X.shape[1], work.group_size),  # penalty factors sqrt(group size): ours
        alpha=work.l1_ratio,
        lmda_path=work.lams,
        tol=tol,
        irls_tol=tol,
        intercept=False,
        early_exit=False,
        progress_bar=False,
        n_threads=1,
    )
    if state.betas.shape[0] != n_lams:
        raise PeerFailed(f"adelie stopped after {state.betas.shape[0]} of {n_lams} strengths")
    return list(state.betas.toarray())


@dataclass(frozen=True)
class Peer:
    """A library: its runner and its own default tolerance."""

    run: object
    default_tol: float
    module: str


OURS = "normpen"
PEERS = {
    "scikit-learn": Peer(run_sklearn, 1e-4, "sklearn"),
    "skglm": Peer(run_skglm, 1e-4, "skglm"),
    "celer": Peer(run_celer, 1e-4, "celer"),
    "glmnet": Peer(run_glmnet, 1e-7, "glmnet"),
    "adelie": Peer(run_adelie, 1e-7, "adelie"),
}
#: A peer's tolerances go down from its default to this fraction of it.
_TIGHTEST = 1e-6
#: Accuracies below this are rounding and all equal; normpen's tol is never set below it.
_FLOOR = 1e-14
#: Table 2's ratios within this factor of 1 (either way) are timed again in paired rounds: single best-of-3
#: times taken minutes apart moved by 20% on the development machine, enough to flip a close call.
_CLOSE = 1.5


def available(name):
    """Whether a peer's module imports (a missing peer is skipped)."""
    try:
        __import__(PEERS[name].module)
    except ImportError:
        return False
    return True


# ---- runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed path of one library at one tolerance, and its accuracy (filled by :func:`measure`)."""

    library: str
    tol: float
    seconds: float
    coefs: list
    objectives: np.ndarray
    gap: float
    subopt: float = math.nan


def timed_run(library, runner, work, tol):
    """A :class:`Run`: process CPU seconds, best of 3 when a run takes under a second."""
    best, coefs = math.inf, None
    for _ in range(3):
        start = time.process_time()
        coefs = runner(work, tol)
        best = min(best, time.process_time() - start)
        if coefs is None or best >= 1.0:
            break
    if coefs is None:
        return None
    coefs = [np.asarray(W, dtype=np.float64).reshape(work.coef_shape) for W in coefs]
    objectives = np.array([objective(work, lam, W) for lam, W in zip(work.lams, coefs, strict=True)])
    gap = max(relative_gap(work, lam, W) for lam, W in zip(work.lams, coefs, strict=True))
    return Run(library, tol, best, coefs, objectives, gap)


def measure(work, runs):
    """Set every run's suboptimality against the best objective of all ``runs`` at each strength."""
    best = np.min([run.objectives for run in runs], axis=0)
    scale = objective_at_zero(work)
    for run in runs:
        run.subopt = float(np.max(run.objectives - best) / scale)


def as_good(accuracy, target):
    """An equal or better accuracy (both below :data:`_FLOOR` count as equal)."""
    return accuracy <= target * (1 + 1e-9) or accuracy <= _FLOOR


def corner(work, n_lams):
    """The problem on a corner of the data: 20 blocks, 100 rows (sparse: about 100 nonzeros a column)."""
    n, p = work.X.shape
    rows = int(min(n, 100 * n * p / work.X.nnz)) if sp.issparse(work.X) else 100
    small = replace(work, X=work.X[:rows, : 20 * work.group_size], y=work.y[:rows])
    return replace(small, lams=grid(small, n_lams, 0.1))


def corner_mapping_error(peer, work):
    """:func:`mapping_error` of ``peer`` at its tightest tolerance on :func:`corner` (None: unsupported).

    Run before any timing, it also compiles just-in-time code (skglm) and loads the library.
    """
    small = corner(work, 5)
    coefs = peer.run(small, peer.default_tol * _TIGHTEST)
    return None if coefs is None else mapping_error(small, [np.reshape(W, small.coef_shape) for W in coefs])


@dataclass
class Comparison:
    """All runs of one workload: normpen's, each peer's tolerance ladder, normpen at the peers' accuracies."""

    work: Workload
    ours: Run
    ladders: dict = field(default_factory=dict)  # peer -> [Run], default tolerance first
    refused: dict = field(default_factory=dict)  # peer -> reason
    at_peer: dict = field(default_factory=dict)  # peer -> (normpen at its gap, normpen at its suboptimality)
    paired: dict = field(default_factory=dict)  # (peer, normpen's tol) -> per-round ratios (close calls)

    def runs(self):
        extra = [run for pair in self.at_peer.values() for run in pair]
        return [self.ours, *(run for ladder in self.ladders.values() for run in ladder), *extra]


def compare(work, names, tol, patience, rounds):
    """Run normpen, every peer's ladder and normpen at every peer's default accuracy; time the close calls
    of table 2 again in ``rounds`` paired rounds (:func:`paired_ratios`)."""
    run_normpen(corner(work, 2), tol)  # imports and first-call costs, untimed as the peers' are
    ours = timed_run(OURS, run_normpen, work, tol)
    comparison = Comparison(work, ours)
    for name in names:
        peer = PEERS[name]
        with console.status(f"({work.key}) {work.title}: {name}"):
            try:
                error = corner_mapping_error(peer, work)
                if error is not None and error > MAPPING_RTOL:
                    raise PeerFailed(f"mapping check failed: implied strength off by {error:.1e}")
                ladder = None if error is None else _ladder(work, peer, name, ours, patience)
            except Exception as failure:  # a peer that breaks is reported, and the others still run
                comparison.refused[name] = f"{type(failure).__name__}: {str(failure)[:80]}"
                continue
        if ladder is not None:
            comparison.ladders[name] = ladder
    measure(work, comparison.runs())
    at_gap = {}
    for name, ladder in comparison.ladders.items():
        default = ladder[0]
        target = max(default.gap, _FLOOR)
        with console.status(f"({work.key}) normpen at {name}'s accuracy"):
            if target not in at_gap:
                at_gap[target] = timed_run(OURS, run_normpen, work, target)
            at_subopt = _ladder_to_subopt(work, comparison, at_gap[target], default)
        comparison.at_peer[name] = (at_gap[target], at_subopt)
    measure(work, comparison.runs())
    for name, pair in comparison.at_peer.items():
        default = comparison.ladders[name][0]
        for ours_run in pair:
            close = rounds > 0 and 1 / _CLOSE <= ours_run.seconds / default.seconds <= _CLOSE
            if close and (name, ours_run.tol) not in comparison.paired:
                with console.status(f"({work.key}) normpen against {name}: paired rounds"):
                    comparison.paired[name, ours_run.tol] = paired_ratios(work, ours_run.tol, name, rounds)
    return comparison


def paired_ratios(work, tol, name, rounds):
    """normpen's time at ``tol`` over the peer's at its default tolerance, timed back to back in ``rounds``
    rounds (the order alternating): one ratio a round, so that a change in the machine's speed between
    rounds (other tenants, caches, clocks) moves both sides of it."""
    peer = PEERS[name]
    sides = [(OURS, run_normpen, tol), (name, peer.run, peer.default_tol)]
    ratios = []
    for round_ in range(rounds):
        seconds = {}
        for library, runner, at in sides[:: 1 if round_ % 2 == 0 else -1]:
            start = time.process_time()
            runner(work, at)
            seconds[library] = time.process_time() - start
        ratios.append(seconds[OURS] / seconds[name])
    return np.array(ratios)


def _ladder_to_subopt(work, comparison, first, peer):
    """normpen's first run as sub-optimal as ``peer`` or better: ``first`` (at the peer's gap), then tenfold
    tighter tolerances, the peer's ladder in reverse. It ends at the latest at ``tol`` = the peer's
    suboptimality, which bounds normpen's (suboptimality is at most the certified gap). Comparing two runs'
    suboptimalities does not depend on the best objective both are measured against (both move by the same
    amount when a run finds a better one), so the runs measured so far are enough to decide."""
    target = max(peer.subopt, _FLOOR)
    run = first
    while True:
        measure(work, [*comparison.runs(), run])
        if as_good(run.subopt, peer.subopt) or run.tol <= target * (1 + 1e-9):
            return run
        run = timed_run(OURS, run_normpen, work, max(run.tol / 10, target))


def _ladder(work, peer, name, ours, patience):
    """The peer at its default tolerance, then tenfold tighter ones until it is as accurate as ``ours``."""
    ladder, tol = [], peer.default_tol
    while True:
        run = timed_run(name, peer.run, work, tol)
        if run is None:
            return None
        ladder.append(run)
        measure(work, [ours, *ladder])
        matched = as_good(run.gap, ours.gap) and as_good(run.subopt, ours.subopt)
        if (
            matched
            or tol <= peer.default_tol * _TIGHTEST * (1 + 1e-9)
            or run.seconds > patience * ours.seconds
        ):
            return ladder
        tol /= 10


# ---- tables -------------------------------------------------------------------------------


def _ratio(ours, runs, accuracy):
    """normpen's time over the fastest run as accurate by ``accuracy``, and its library."""
    matched = [run for run in runs if as_good(accuracy(run), accuracy(ours))]
    if not matched:
        return "no peer as accurate" if runs else ""
    fastest = min(matched, key=lambda run: run.seconds)
    return f"{ours.seconds / fastest.seconds:.2f} {fastest.library}"


def _gap(run):
    return run.gap


def _subopt(run):
    return run.subopt


def _label(work):
    n, p = work.X.shape
    return f"({work.key}) {work.title}, {n}x{p}, {len(work.lams)} λ"


def accuracy_table(comparisons, tol):
    """Table 1: normpen at its tolerance against each peer's tightest run, ratios at equal accuracy."""
    table = Table(
        title=f"1. normpen at tol {tol:g} (g1: 1e-6), peers tightened until as accurate: CPU s, one thread; "
        "largest relative gap and suboptimality on the path"
    )
    for column in ("workload", "library", "tol", "time", "gap", "subopt", "ratio by gap", "ratio by subopt"):
        table.add_column(column, justify="left" if column in ("workload", "library") else "right")
    for comp in comparisons:
        peer_runs = [run for ladder in comp.ladders.values() for run in ladder]
        o = comp.ours
        ratios = (_ratio(o, peer_runs, _gap), _ratio(o, peer_runs, _subopt))
        table.add_row(
            _label(comp.work),
            OURS,
            f"{o.tol:.0e}",
            f"{o.seconds:.3f}",
            f"{o.gap:.1e}",
            f"{o.subopt:.1e}",
            *ratios,
        )
        for name, ladder in comp.ladders.items():
            r = ladder[-1]
            table.add_row(
                "", name, f"{r.tol:.0e}", f"{r.seconds:.3f}", f"{r.gap:.1e}", f"{r.subopt:.1e}", "", ""
            )
        for name, reason in comp.refused.items():
            table.add_row("", name, "", "", "", "", reason, "")
        table.add_section()
    return table


def _ratio_cell(comp, name, ours, peer):
    """The ratio of the two runs' times; for a close call the median of its paired rounds, [min, max]."""
    ratios = comp.paired.get((name, ours.tol))
    if ratios is None:
        return f"{ours.seconds / peer.seconds:.2f}"
    return f"{np.median(ratios):.2f} [{ratios.min():.2f}, {ratios.max():.2f}]"


def defaults_table(comparisons):
    """Table 2: each peer at its defaults, normpen at the gap it reached and first as sub-optimal as it."""
    table = Table(
        title="2. each peer at its defaults; normpen at tol = the peer's gap, and its first run of the "
        "tolerance ladder as sub-optimal as the peer: "
        "CPU s, ratio normpen / peer"
    )
    columns = (
        "workload",
        "peer",
        "time",
        "gap",
        "subopt",
        "normpen @gap",
        "gap",
        "ratio",
        "normpen @subopt",
        "at tol",
        "subopt",
        "ratio",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("workload", "peer") else "right")
    for comp in comparisons:
        for i, (name, (at_gap, at_subopt)) in enumerate(comp.at_peer.items()):
            peer = comp.ladders[name][0]
            table.add_row(
                _label(comp.work) if i == 0 else "",
                name,
                f"{peer.seconds:.3f}",
                f"{peer.gap:.1e}",
                f"{peer.subopt:.1e}",
                f"{at_gap.seconds:.3f}",
                f"{at_gap.gap:.1e}",
                _ratio_cell(comp, name, at_gap, peer),
                f"{at_subopt.seconds:.3f}",
                f"{at_subopt.tol:.0e}",
                f"{at_subopt.subopt:.1e}",
                _ratio_cell(comp, name, at_subopt, peer),
            )
        table.add_section()
    return table


# ---- cold start ---------------------------------------------------------------------------

COLD = {
    "normpen": "from normpen.linear import Lasso\nfit = lambda X, y: Lasso(0.05).fit(X, y)",
    "scikit-learn": "from sklearn.linear_model import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
    "skglm": "from skglm import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
    "celer": "from celer import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
    "glmnet": "from glmnet import ElasticNet\n"
    "fit = lambda X, y: ElasticNet(lambda_path=[0.05], standardize=False, n_splits=0).fit(X, y)",
    "adelie": "import adelie\nfit = lambda X, y: adelie.grpnet(X, adelie.glm.gaussian(y), lmda_path=[0.05], "
    "early_exit=False, progress_bar=False)",
}

COLD_SCRIPT = """
import time
import numpy as np
{setup}
rng = np.random.default_rng(0)
X = np.asfortranarray(rng.standard_normal((200, 500))); y = X[:, :5].sum(1) + rng.standard_normal(200)
start = time.perf_counter(); fit(X, y); first = time.perf_counter() - start
start = time.perf_counter(); fit(X, y); second = time.perf_counter() - start
print(first, second)
"""


def cold_start(name):
    """First and second fit of a small lasso in a fresh interpreter (imports excluded)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", COLD_SCRIPT.format(setup=COLD[name])],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    first, second = map(float, out.stdout.split())
    return first, second


def cold_table(names):
    table = Table(title="cold start: first fit in a fresh process (small lasso, 200x500, imports excluded)")
    for column in ("library", "first fit (s)", "second fit (s)"):
        table.add_column(column)
    for name in names:
        with console.status(f"cold start: {name}"):
            first, second = cold_start(name)
        table.add_row(name, f"{first:.3f}", f"{second:.4f}")
    return table


# ---- main ---------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every dimension 5x smaller (g1: 20 strengths)")
    parser.add_argument(
        "--only", default="a,b,d,f,g1,a200,b200,e,h,c,svm", help="comma-separated workloads, e.g. 'a,g1'"
    )
    parser.add_argument("--tol", type=float, default=1e-6, help="normpen's tolerance in table 1 (g1: 1e-6)")
    parser.add_argument(
        "--patience", type=float, default=5.0, help="no tighter peer run past this multiple of normpen's time"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="paired rounds for table 2's close calls (ratio within 1.5x of 1); 0 skips them",
    )
    args = parser.parse_args(argv)
    if args.rounds < 0:
        parser.error(f"--rounds: give 0 (no paired rounds) or more, got {args.rounds}")
    keys = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = set(keys) - set(KEYS) - {"svm"}
    if unknown:
        parser.error(f"--only: unknown workloads {sorted(unknown)}; choose among {sorted(KEYS)} and 'svm'")
    works = workloads(args.quick, keys=keys)
    names = [name for name in PEERS if available(name)]
    missing = sorted(set(PEERS) - set(names))
    if missing:
        console.print(f"not installed, skipped: {', '.join(missing)} (scripts/setup_bench.sh installs them)")
    comparisons = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peers' convergence, deprecation and numba warnings
        measured = [key for key in keys if key != "svm"]
        # minutes per workload and nothing printed until the tables: show which one runs, and how far
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("workloads", total=len(measured))
            for key in measured:
                work = works[key]
                progress.update(task, description=f"({key}) {work.title}")
                comparisons.append(compare(work, names, work.tol or args.tol, args.patience, args.rounds))
                progress.advance(task)
        if comparisons:
            console.print(accuracy_table(comparisons, args.tol))
            console.print(defaults_table(comparisons))
        if "svm" in keys:
            try:
                console.print(_svm_table(args))
            except Exception as failure:  # its reference solve is normpen's own: report, go on to cold starts
                console.print(f"svm table failed: {type(failure).__name__}: {failure}")
    console.print(cold_table([OURS, *names]))


def _svm_table(args):
    from svm_problem import svm_rows  # benchmarks/ is the script's directory, hence on sys.path

    table = Table(title="linear SVMs (benchmarks/svm_problem.py): relative suboptimality, CPU s")
    for column in ("problem", "library", "tol", "time", "rel. subopt"):
        table.add_column(column)
    for label, rows in svm_rows(args.quick, args.tol, args.patience):
        label = label.replace("(g", "(svm")  # svm_problem's own letters g1..g5, not workload g1
        for i, (name, (tol, seconds, subopt)) in enumerate(rows.items()):
            table.add_row(label if i == 0 else "", name, f"{tol:.0e}", f"{seconds:.3f}", f"{subopt:.1e}")
        table.add_section()
    return table


if __name__ == "__main__":
    main()
