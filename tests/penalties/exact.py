"""Reference prox and projections of the registry's penalties in 128-bit mpmath arithmetic.

Each is computed from the definition, not from normpen's closed forms: a prox by its formula,
a projection onto :math:`\\{\\Omega \\le r\\}` as :math:`\\operatorname{prox}_{\\mu\\Omega}(x)` with
the multiplier :math:`\\mu` found by bisection (geometric, then arithmetic) on the decreasing
:math:`\\Omega(\\operatorname{prox}_{\\mu\\Omega}(x))`, the projection onto a dual ball by the Moreau
identity, and the matrix penalties through mpmath's SVD. The answers are exact to about
:math:`2^{-120}` of the largest entry involved: ample against float64 rounding, which is what
they are compared with (entries far below that are not resolved, and need not be: the tests'
tolerances are relative to the largest entry).
"""

from __future__ import annotations

import mpmath
import numpy as np

from normpen.penalties.anchored import Anchored
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso
from normpen.penalties.spectral import Spectral

__all__ = ["exact"]

PRECISION = 128
#: Bisection steps: 14 halvings of the exponent range [2^-6000, 2^6000], then 130 bits of mu.
STEPS = 150


def exact(pen, method, x, scalar):
    """``pen.<method>(x, scalar)`` (prox, project, project_dual) as a float64 array, computed in mpmath."""
    with mpmath.workprec(PRECISION):
        flat = [mpmath.mpf(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1)]
        result = _METHODS[method](_model(pen, x.shape), flat, mpmath.mpf(scalar))
        return np.array([float(v) for v in result]).reshape(x.shape)


def _prox(model, x, step):
    if model.kind == "anchored":
        return [
            a + (v - a) / (1 + step * model.lam * f)
            for v, a, f in zip(x, model.anchor, model.fisher, strict=True)
        ]
    if model.kind == "l2":
        return [v / (1 + step * model.lam) for v in x]
    if model.kind == "maxnorm":
        return _project(model, x, mpmath.mpf(model.c))
    return model.shrink(x, step * model.lam)


def _project(model, x, radius):
    if model.measure(x) <= radius:
        return list(x)
    if model.kind in ("l2", "maxnorm"):
        return model.ball(x, radius)
    if model.kind in ("nuclear", "spectral"):
        u, s, v = model.svd(x)
        return _compose(
            u, _l1_ball(s, radius) if model.kind == "nuclear" else [min(si, radius) for si in s], v
        )
    return model.shrink(x, _multiplier(lambda mu: model.measure(model.shrink(x, mu)) - radius))


def _project_dual(model, x, radius):
    if model.kind == "anchored":
        free = [f > 0 for f in model.fisher]
        inverse = [1 / f if f > 0 else mpmath.mpf(0) for f in model.fisher]
        inverse = _Model("ellipsoid", fisher=inverse, anchor=[mpmath.mpf(0)] * len(x))
        return _project(
            inverse, [v if keep else mpmath.mpf(0) for v, keep in zip(x, free, strict=True)], radius
        )
    if model.kind == "elastic":
        bound = radius * model.rho
        return [min(max(v, -bound), bound) for v in x]
    if model.kind == "l2":
        return model.ball(x, radius)
    if model.kind == "maxnorm":  # the dual ball of the (2, inf) norm is the (2, 1) ball
        unit = _Model("group", l1_weights=[0] * len(x), groups=model.groups, weights=[1] * len(model.groups))
        return _project(unit, x, radius)
    return [v - p for v, p in zip(x, model.shrink(x, radius), strict=True)]  # Moreau, for a norm


_METHODS = {"prox": _prox, "project": _project, "project_dual": _project_dual}


def _multiplier(excess):
    """The root of the nonincreasing ``excess`` (positive at 0+, negative far out), by bisection."""
    low, high = mpmath.mpf(2) ** -6000, mpmath.mpf(2) ** 6000
    for _ in range(STEPS):
        mid = mpmath.sqrt(low * high) if high > 2 * low else (low + high) / 2
        low, high = (mid, high) if excess(mid) > 0 else (low, mid)
    return low


class _Model:
    """A penalty as mpmath sees it: its kind, parameters and the shrink / measure / ball it needs."""

    def __init__(self, kind, **params):
        self.kind = kind
        self.__dict__.update(params)

    def measure(self, z):
        if self.kind in ("l1", "group", "sgl"):
            l1 = sum(w * abs(v) for v, w in zip(z, self.l1_weights, strict=True))
            return l1 + sum(
                w * _norm([z[i] for i in g]) for g, w in zip(self.groups, self.weights, strict=True)
            )
        if self.kind == "elastic":
            return self.rho * sum(abs(v) for v in z) + (1 - self.rho) / 2 * sum(v * v for v in z)
        if self.kind in ("ellipsoid", "anchored"):
            return mpmath.sqrt(
                sum(f * (v - a) ** 2 for v, a, f in zip(z, self.anchor, self.fisher, strict=True))
            )
        if self.kind == "l2":
            return _norm(z)
        if self.kind == "maxnorm":
            return max(_norm([z[i] for i in g]) for g in self.groups)
        return sum(self.singular_values(z)) if self.kind == "nuclear" else max(self.singular_values(z))

    def shrink(self, z, t):
        """The prox of :math:`t\\Omega` (or, for the ellipsoids, the point of multiplier ``t``)."""
        if self.kind in ("l1", "group", "sgl"):
            u = [mpmath.sign(v) * max(abs(v) - t * w, 0) for v, w in zip(z, self.l1_weights, strict=True)]
            for g, w in zip(self.groups, self.weights, strict=True):
                size = _norm([u[i] for i in g])
                factor = max(1 - t * w / size, 0) if size > 0 else 0
                for i in g:
                    u[i] *= factor
            return u
        if self.kind == "elastic":
            return [mpmath.sign(v) * max(abs(v) - t * self.rho, 0) / (1 + t * (1 - self.rho)) for v in z]
        if self.kind in ("ellipsoid", "anchored"):
            return [a + (v - a) / (1 + t * f) for v, a, f in zip(z, self.anchor, self.fisher, strict=True)]
        u, s, v = self.svd(z)
        projected = _l1_ball(s, t) if self.kind == "spectral" else [max(si - t, 0) for si in s]
        kept = [si - p for si, p in zip(s, projected, strict=True)] if self.kind == "spectral" else projected
        return _compose(u, kept, v)

    def ball(self, z, radius):
        groups = self.groups if self.kind == "maxnorm" else [range(len(z))]
        out = list(z)
        for g in groups:
            size = _norm([z[i] for i in g])
            if size > radius:
                for i in g:
                    out[i] = z[i] / size * radius
        return out

    def svd(self, z):
        u, s, v = mpmath.svd_r(self.matrix(z))
        return u, [s[i] for i in range(len(s))], v

    def matrix(self, z):
        return mpmath.matrix([[z[i * self.cols + j] for j in range(self.cols)] for i in range(self.rows)])

    def singular_values(self, z):
        return self.svd(z)[1]


def _l1_ball(s, radius):
    """Projection of nonnegative singular values onto the L1 ball, by bisection on the threshold."""
    if sum(s) <= radius:
        return list(s)
    tau = _multiplier(lambda t: sum(max(si - t, 0) for si in s) - radius)
    return [max(si - tau, 0) for si in s]


def _compose(u, s, v):
    rows, cols = u.rows, v.cols
    return [sum(u[i, k] * s[k] * v[k, j] for k in range(len(s))) for i in range(rows) for j in range(cols)]


def _norm(values):
    return mpmath.sqrt(sum(v * v for v in values))


def _groups(group, shape):
    """The groups of a GroupLasso (index lists into the flat input) and their weights, in its order."""
    index = np.arange(1, np.prod(shape, dtype=int) + 1, dtype=np.float64).reshape(shape)
    groups = [[int(i) - 1 for i in row if i > 0] for rows in group.group_rows(index) for row in rows]
    weights = [mpmath.mpf(float(w)) for w in group.group_weights_like(index)]
    return groups, weights


def _model(pen, shape):
    size = int(np.prod(shape, dtype=int))
    zeros = [mpmath.mpf(0)] * size
    if isinstance(pen, L1):
        weights = np.ones(size) if pen.weights is None else pen.weights.reshape(-1)
        return _Model(
            "l1", lam=pen.lam, l1_weights=[mpmath.mpf(float(w)) for w in weights], groups=[], weights=[]
        )
    if isinstance(pen, GroupLasso):
        groups, weights = _groups(pen, shape)
        return _Model("group", lam=pen.lam, l1_weights=zeros, groups=groups, weights=weights)
    if isinstance(pen, SparseGroupLasso):
        groups, weights = _groups(pen._group, shape)
        alpha = mpmath.mpf(pen.l1_ratio)
        return _Model(
            "sgl",
            lam=pen.lam,
            l1_weights=[alpha] * size,
            groups=groups,
            weights=[(1 - alpha) * w for w in weights],
        )
    if isinstance(pen, ElasticNet):
        return _Model("elastic", lam=pen.lam, rho=mpmath.mpf(pen.l1_ratio))
    if isinstance(pen, Anchored):
        fisher = np.ones(size) if pen.fisher is None else np.asarray(pen.fisher, dtype=float).reshape(-1)
        anchor = np.asarray(pen.anchor, dtype=float).reshape(-1)
        return _Model(
            "anchored",
            lam=pen.lam,
            anchor=[mpmath.mpf(float(a)) for a in anchor],
            fisher=[mpmath.mpf(float(f)) for f in fisher],
        )
    if isinstance(pen, L2):
        return _Model("l2", lam=pen.lam)
    if isinstance(pen, MaxNorm):
        rows, cols = shape
        grid = np.arange(size).reshape(shape)
        groups = (
            [list(grid[i]) for i in range(rows)]
            if pen.axis == "rows"
            else [list(grid[:, j]) for j in range(cols)]
        )
        return _Model("maxnorm", lam=pen.lam, c=pen.c, groups=groups)
    kind = "nuclear" if isinstance(pen, Nuclear) else "spectral"
    assert isinstance(pen, (Nuclear, Spectral))
    return _Model(kind, lam=pen.lam, rows=shape[0], cols=shape[1])
