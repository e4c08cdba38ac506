"""The registry every penalty contract test runs over.

A :class:`Case` is a factory ``make(shape, rng) -> Penalty`` that builds a
penalty suited to inputs of ``shape`` (weights, groups, anchors drawn from
``rng``), plus the kind of input it accepts: :data:`ANY` shape or
:data:`MATRIX` only. Adding a penalty to every contract test is one line in
:data:`CASES`.

Factories keep the strengths and weights of order one (``lam * weight <= 1``),
so that every array a method returns for a finite input is finite; the
extreme-input tests rely on it.

The second registry, :data:`ARRAY_KINDS`, lists the array kinds every method
must serve: numpy and torch, float64 and float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis.extra import numpy as hnp

from normpen.penalties.anchored import Anchored
from normpen.penalties.base import Penalty
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso
from normpen.penalties.spectral import Spectral

__all__ = [
    "SAME_FORMULA",
    "SUM_OF_TERMS",
    "CHAIN",
    "CERTIFICATE",
    "SCIPY",
    "FINITE_DIFFERENCE",
    "FINITE_DIFFERENCE_SVD",
    "ANY",
    "MATRIX",
    "Case",
    "CASES",
    "SHAPES",
    "shapes",
    "partial_groups",
    "some_zero",
    "ArrayKind",
    "ARRAY_KINDS",
    "to_numpy",
    "assert_methods_agree",
    "every_method",
]

#: Tolerance tiers of the float64 penalty tests, for entries of order one (at most 12 of them, magnitudes
#: up to 10), eps = 2.2e-16. Each test module names the tier of every tolerance it uses; what a module
#: allows beyond these tiers it derives in its own docstring.
#:
#: One or two roundings of the same formula on both sides: <= 2 eps.
SAME_FORMULA = 1e-15
#: A sum or norm of at most 12 terms against numpy's, each side within (n + 2) eps = 3e-15; also the
#: singular values of one backward-stable LAPACK SVD, within max(m, n) eps sigma_max = 1.3e-14.
SUM_OF_TERMS = 1e-14
#: A chain of a norm, a division and a product on both sides (about 20 eps each, times a condition
#: number below 10); also an SVD whose result is recomposed and decomposed again.
CHAIN = 1e-13
#: Inner products and optimality certificates of up to 12 terms of magnitude up to 10
#: (12 * 10 * 10 * eps = 3e-13); also singular vectors, accurate to eps over a singular gap >= 1e-2.
CERTIFICATE = 1e-12
#: Against scipy.optimize: the optimisers stop when the objective moves by less than ftol = 1e-15
#: (relative, objectives of magnitude at most 100); the objectives are 1-strongly convex,
#: f(z) - f* >= ||z - z*||^2 / 2, so the reference point is within sqrt(2 * 1e-15 * 100) = 4.5e-7.
SCIPY = 1e-6
#: Central finite differences with h = 1e-6: truncation h^2 f3 / 6 < 1e-12 (f3, the third derivative,
#: below 10 away from kinks) and rounding eps |f| / h = 2e-10 per entry.
FINITE_DIFFERENCE = 1e-8
#: The same for SVD-based values, whose rounding is 10 times larger.
FINITE_DIFFERENCE_SVD = 1e-7

#: The penalty accepts an array of any shape.
ANY = "any"
#: The penalty accepts a matrix (2-D array) only.
MATRIX = "matrix"

#: The shapes of the contract tests' inputs, per kind of input: a vector and a matrix, or a tall and
#: a wide matrix (small: several checks search over every coordinate).
SHAPES = {ANY: ((6,), (2, 3)), MATRIX: ((3, 2), (2, 3))}


def shapes(kind):
    """Hypothesis strategy of the shapes of ``kind``: empty, one-element and (for ANY) 0-d ones included."""
    if kind == MATRIX:
        return hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=4)
    return hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@dataclass(frozen=True)
class Case:
    """One registry line: a named penalty factory and the kind of input the penalty accepts."""

    name: str
    kind: str
    make: Callable[[tuple[int, ...], np.random.Generator], Penalty]

    def __str__(self):
        return self.name


def partial_groups(shape, rng, coverage=0.75):
    """Disjoint groups of 1 to 3 indices into ``x.reshape(-1)`` covering about ``coverage`` of them.

    The indices are shuffled, so groups are not contiguous; the uncovered
    indices are the coordinates a group penalty leaves unpenalized.
    """
    size = math.prod(shape)
    order = rng.permutation(size)[: round(coverage * size)]
    cuts = np.cumsum(rng.integers(1, 4, size=size))
    return [group for group in np.split(order, cuts[cuts < order.size]) if group.size]


def some_zero(rng, low, high, shape):
    """Uniform weights in [low, high) with about 30% of them 0: coordinates left free (a seminorm)."""
    return rng.uniform(low, high, shape) * (rng.random(shape) >= 0.3)


CASES = (
    Case("L1", ANY, lambda shape, rng: L1(0.6)),
    Case("L1-weighted", ANY, lambda shape, rng: L1(0.6, weights=rng.uniform(0.2, 1.5, shape))),
    Case("L1-free", ANY, lambda shape, rng: L1(0.6, weights=some_zero(rng, 0.2, 1.5, shape))),
    Case("L2", ANY, lambda shape, rng: L2(0.8)),
    Case("ElasticNet", ANY, lambda shape, rng: ElasticNet(0.6, l1_ratio=rng.uniform(0.2, 0.9))),
    Case("ElasticNet-lasso", ANY, lambda shape, rng: ElasticNet(0.6, l1_ratio=1.0)),
    Case("ElasticNet-ridge", ANY, lambda shape, rng: ElasticNet(0.6, l1_ratio=0.0)),
    Case("Anchored", ANY, lambda shape, rng: Anchored(0.5, rng.standard_normal(shape))),
    Case(
        "Anchored-Fisher",
        ANY,
        lambda shape, rng: Anchored(0.5, rng.standard_normal(shape), fisher=some_zero(rng, 0.1, 2.0, shape)),
    ),
    Case("GroupLasso", ANY, lambda shape, rng: GroupLasso(0.5, partial_groups(shape, rng))),
    Case("GroupLasso-rows", MATRIX, lambda shape, rng: GroupLasso(0.5, "rows")),
    Case(
        "GroupLasso-cols",
        MATRIX,
        lambda shape, rng: GroupLasso(0.5, "cols", weights=rng.uniform(0.2, 1.5, shape[1])),
    ),
    Case(
        "SparseGroupLasso",
        ANY,
        lambda shape, rng: SparseGroupLasso(0.5, partial_groups(shape, rng), l1_ratio=rng.uniform(0.2, 0.8)),
    ),
    Case(
        "SparseGroupLasso-rows",
        MATRIX,
        lambda shape, rng: SparseGroupLasso(
            0.5, "rows", l1_ratio=0.3, weights=some_zero(rng, 0.2, 1.5, shape[0])
        ),
    ),
    Case("Spectral", MATRIX, lambda shape, rng: Spectral(0.6)),
    Case("Nuclear", MATRIX, lambda shape, rng: Nuclear(0.6)),
    Case("MaxNorm-rows", MATRIX, lambda shape, rng: MaxNorm(1.0)),
    Case("MaxNorm-cols", MATRIX, lambda shape, rng: MaxNorm(1.2, axis="cols")),
)


@dataclass(frozen=True)
class ArrayKind:
    """An array library and a floating dtype; ``rtol`` is the agreement expected of its results."""

    backend: str
    dtype: str

    def __str__(self):
        return f"{self.backend}-{self.dtype}"

    @property
    def rtol(self):
        """Relative agreement with the float64 numpy result: 1e-12 in float64, 1e-5 in float32.

        Derivation: a method chains at most about 40 roundings (a sort, sums of at most 12 terms, a
        square root, divisions; the iterative ones stop at the dtype's resolution) of order-one
        numbers, each at most eps: 40 eps32 = 4.8e-6 <= 1e-5 in float32; in float64 torch and numpy
        reduce in different orders, 40 eps64 = 9e-15, and 1e-12 leaves a factor 100 for the
        conditioning (at most about 10 for these inputs) of the SVD and the ellipsoid's root.
        """
        return 1e-12 if self.dtype == "float64" else 1e-5

    def asarray(self, a):
        """A copy of the numpy array ``a`` as this kind of array (rounded to this dtype)."""
        a = np.array(a, dtype=self.dtype)
        return torch.from_numpy(a) if self.backend == "torch" else a

    def holds(self, a):
        """Whether ``a`` is an array of exactly this kind and dtype (numpy's 0-d results may be scalars)."""
        if self.backend == "torch":
            return isinstance(a, torch.Tensor) and a.dtype == getattr(torch, self.dtype)
        return isinstance(a, (np.ndarray, np.generic)) and a.dtype == np.dtype(self.dtype)


ARRAY_KINDS = tuple(ArrayKind(b, d) for b in ("numpy", "torch") for d in ("float64", "float32"))


def to_numpy(a):
    """A float64 numpy copy of a numpy array, torch tensor or scalar result."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.array(a, dtype=np.float64)


def every_method(step, radius, dual_radius=None):
    """The ``(method, args)`` calls of the whole contract: ``prox`` at ``step``, ``project`` at ``radius``,
    ``project_dual`` at ``dual_radius`` (default ``radius``), and the argument-free methods."""
    return (
        ("value", ()),
        ("norm", ()),
        ("dual_norm", ()),
        ("grad", ()),
        ("prox", (step,)),
        ("project", (radius,)),
        ("project_dual", (radius if dual_radius is None else dual_radius,)),
    )


def assert_methods_agree(pen, x64, kind, calls, rtol):
    """Each ``(method, args)`` of ``pen`` on ``x64`` as ``kind`` keeps the kind, dtype and shape and
    agrees with the float64 numpy result to ``rtol`` (relative and absolute)."""
    x = kind.asarray(x64)
    for method, args in calls:
        out = getattr(pen, method)(x, *args)
        expected = getattr(pen, method)(x64, *args)
        assert kind.holds(out), method
        assert tuple(out.shape) == np.shape(expected), method
        np.testing.assert_allclose(to_numpy(out), expected, rtol=rtol, atol=rtol, err_msg=method)
