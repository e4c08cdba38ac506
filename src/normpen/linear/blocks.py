r"""Block-separable penalties as coordinate descent sees them.

Coordinate descent works on the rows of the coefficient matrix :math:`W`
(shape ``(p, m)``, ``m = 1`` for a single output), grouped into *blocks* that
partition the rows. Every penalty it takes is one :class:`BlockPenalty`,

.. math::

    P(W) = \sum_{j,c} \alpha_{jc} |W_{jc}| + \sum_g \beta_g \|W_g\|_F
           + \frac\mu2 \|W\|_F^2 \;\big[+\ \iota_{W \ge 0}\big],

with absolute (:math:`\lambda`-included) weights: the lasso and weighted
lasso (:math:`\beta = \mu = 0`, blocks of one row), the elastic net
(:math:`\alpha = \lambda\rho`, :math:`\mu = \lambda(1-\rho)`), the group lasso
(:math:`\alpha = 0`), the sparse-group lasso (both), the multitask group
lasso on the rows of :math:`W`, and the positivity constraint as an option.
A block whose :math:`\alpha` and :math:`\beta` are all zero is unpenalized.

Everything a solver needs comes from three block quantities, all vectorised
over blocks:

- the prox, :math:`\operatorname{prox}_{sP}(Z) = S_\beta(S_\alpha(Z)) / (1 + s\mu)`,
  elementwise soft thresholding at :math:`s\alpha` (one-sided with positivity)
  then group soft thresholding at :math:`s\beta_g` (exact for this sum of
  homogeneous terms), then the ridge shrinkage;
- the block dual norm :math:`t_g(V)`: the smallest :math:`t` with
  :math:`\|S_{t\alpha}(V_g)\|_F \le t\beta_g`, i.e. the root of the decreasing
  :math:`\|(|V_g| - t\alpha)_+\|^2 = t^2\beta_g^2` (closed form when
  :math:`\alpha` or :math:`\beta` vanishes, exact piecewise-quadratic root otherwise). A block is
  zero at the optimum iff :math:`t_g(-\nabla_g F) \le 1`, so
  :math:`\lambda_{\max} = \lambda\max_g t_g(-\nabla F(0))`, and the dual point
  :math:`-\nabla F/\kappa` with :math:`\kappa = \max(1, \max_g t_g)` is feasible;
- with :math:`\mu > 0` the conjugate
  :math:`P^*(V) = \|S_\beta(S_\alpha(V))\|^2 / (2\mu)` (every dual point is feasible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from normpen._array import group_soft_threshold_scale, soft_threshold, sparse_group_roots

__all__ = ["BlockPenalty", "as_block_penalty"]


@dataclass(frozen=True, eq=False)
class BlockPenalty:
    r"""The block-separable penalty of the module docstring, on ``W`` of shape ``(p, m)``.

    Parameters
    ----------
    l1 : ndarray of shape (p, m)
        Absolute elementwise weights :math:`\alpha \ge 0`; one value on all the entries of a
        block with a group weight (the sparse-group lasso's).
    row_order : int ndarray of shape (p,)
        The rows listed block after block (a permutation of ``0..p-1``).
    block_starts : int ndarray of shape (n_blocks,)
        Where each block starts in ``row_order``.
    group_weights : ndarray of shape (n_blocks,)
        Absolute block weights :math:`\beta \ge 0`.
    ridge : float
        :math:`\mu \ge 0`.
    positive : bool
        Constrain every coefficient to be :math:`\ge 0`.

    Build it with :meth:`from_blocks`, :meth:`separable` or :func:`as_block_penalty`.
    """

    l1: np.ndarray
    row_order: np.ndarray
    block_starts: np.ndarray
    group_weights: np.ndarray
    ridge: float = 0.0
    positive: bool = False
    block_of_row: np.ndarray = field(init=False, repr=False)
    block_sizes: np.ndarray = field(init=False, repr=False)
    penalized: np.ndarray = field(init=False, repr=False)
    free_rows: np.ndarray = field(init=False, repr=False)
    _identity: bool = field(init=False, repr=False)
    _grouped: bool = field(init=False, repr=False)
    _all_penalized: bool = field(init=False, repr=False)

    def __post_init__(self):
        p = self.l1.shape[0]
        sizes = np.diff(np.append(self.block_starts, self.row_order.size))
        block_of_row = np.full(p, -1, dtype=np.int64)
        block_of_row[self.row_order] = np.repeat(np.arange(sizes.size), sizes)
        if self.row_order.size != p or np.any(block_of_row < 0) or np.any(sizes <= 0):
            raise ValueError("blocks must partition the rows of the coefficients into non-empty blocks")
        identity = sizes.size == p and bool(np.all(self.row_order == np.arange(p)))
        self._set_structure(block_of_row, sizes, identity)
        if np.any((self.group_weights > 0) & (-self.block_max(-self.l1.min(axis=1)) != self._largest_l1())):
            raise ValueError(
                "a block with a group weight needs one L1 weight on all its entries (the sparse-group "
                "lasso's alpha); give l1 a constant value over each such block"
            )
        self._set_weights()

    def _set_structure(self, block_of_row, block_sizes, identity):
        object.__setattr__(self, "block_of_row", block_of_row)
        object.__setattr__(self, "block_sizes", block_sizes)
        object.__setattr__(self, "_identity", identity)

    def _largest_l1(self):
        return self.block_max(self.l1.max(axis=1))

    def _set_weights(self):
        """Set what the weights decide: ``penalized``, ``free_rows``, whether a block has a group weight.

        ``free_rows`` are the rows no term of the penalty touches (no L1, group or ridge weight):
        unpenalized coefficients.
        """
        penalized = (self._largest_l1() > 0) | (self.group_weights > 0)
        self._set_penalized(penalized, bool(penalized.all()), bool(np.any(self.group_weights > 0)))

    def _set_penalized(self, penalized, all_penalized, grouped):
        """Set ``penalized`` and what follows from it, given whether all blocks are and any is grouped."""
        object.__setattr__(self, "penalized", penalized)
        object.__setattr__(self, "_all_penalized", all_penalized)
        free = (
            np.zeros(0, dtype=np.int64)
            if self.ridge > 0 or all_penalized
            else np.flatnonzero(~penalized[self.block_of_row])
        )
        object.__setattr__(self, "free_rows", free)
        object.__setattr__(self, "_grouped", grouped)

    def _reweighted(self, l1, group_weights, ridge, structure, penalized=None):
        """A penalty of known-valid weights on a known partition ``structure`` (no checks, no recomputation).

        ``structure`` is ``(row_order, block_starts, block_of_row, block_sizes, identity)``; the
        weights must satisfy the class's conditions (those of a valid penalty, scaled or restricted).
        ``penalized``, when given, is ``(penalized, all_penalized, grouped)`` of the new weights (known
        to the caller: a positive scaling keeps them, a restriction selects them), else recomputed.
        """
        row_order, block_starts, *derived = structure
        out = object.__new__(BlockPenalty)
        given = {"l1": l1, "row_order": row_order, "block_starts": block_starts}
        given.update(group_weights=group_weights, ridge=ridge, positive=self.positive)
        for name, value in given.items():
            object.__setattr__(out, name, value)
        out._set_structure(*derived)
        if penalized is None:
            out._set_weights()
        else:
            out._set_penalized(*penalized)
        return out

    @classmethod
    def separable(cls, l1, ridge=0.0, positive=False):
        """One block per row: the (weighted) lasso, elastic net, ridge, or elementwise L1 on a matrix."""
        p = l1.shape[0]
        rows = np.arange(p)
        return cls(l1, rows, rows.copy(), np.zeros(p), ridge, positive)

    @classmethod
    def from_blocks(cls, l1, blocks, group_weights, ridge=0.0, positive=False):
        """From a sequence of row-index arrays that partition the rows."""
        sizes = np.array([len(rows) for rows in blocks], dtype=np.int64)
        row_order = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in blocks])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(l1, row_order, starts, np.asarray(group_weights, dtype=np.float64), ridge, positive)

    def scaled(self, factor):
        """The same structure with every weight multiplied by ``factor`` (a new strength).

        A positive factor changes nothing the weights decide (which blocks are penalized, the free
        rows, whether a block is grouped): the new penalty is this one's attributes with the three
        weights replaced (a path does it once a strength: about 2 instead of 6 microseconds).
        """
        weights = {
            "l1": self.l1 * factor,
            "group_weights": self.group_weights * factor,
            "ridge": self.ridge * factor,
        }
        if factor > 0:
            out = object.__new__(BlockPenalty)
            out.__dict__.update(self.__dict__, **weights)
            return out
        structure = (self.row_order, self.block_starts, self.block_of_row, self.block_sizes, self._identity)
        return self._reweighted(*weights.values(), structure)

    @property
    def shape(self):
        return self.l1.shape

    @property
    def n_blocks(self):
        return self.block_starts.size

    @property
    def singletons(self):
        """Every block is one row (the lasso, elastic net and multitask cases)."""
        return self.n_blocks == self.l1.shape[0]

    @cached_property
    def structure_key(self):
        """A hashable key of the block partition (for caches of per-block constants).

        Kept once formed: the scaled copies of a path share it, and with it the hash of its bytes
        (about 8 us a lookup for 1,000 groups of 5, twice a strength, when formed afresh).
        """
        if self._identity:
            return ("separable", self.row_order.size)
        return (self.row_order.tobytes(), self.block_starts.tobytes())

    @cached_property
    def _ordered(self):
        """The blocks list the rows in order (``row_order`` is ``0, 1, ...``: consecutive groups, and
        every restricted penalty): the block reductions then read a per-row vector without a gather.

        Computed on first use, :math:`O(p)`, and kept (a scaled copy shares it).
        """
        return self._identity or bool(np.array_equal(self.row_order, np.arange(self.row_order.size)))

    @cached_property
    def _l1_part(self):
        """Some L1 weight is positive (else a block's dual norm is its norm over its group weight)."""
        return bool(np.any(self.l1))

    def block_rows(self, g):
        """Rows of block ``g``."""
        start = self.block_starts[g]
        return self.row_order[start : start + self.block_sizes[g]]

    # ---- block reductions ---------------------------------------------------------

    def block_sum(self, per_row):
        """Sum of a per-row vector over each block, shape ``(n_blocks,)``."""
        if self._identity or not per_row.size:
            return per_row
        return np.add.reduceat(per_row if self._ordered else per_row[self.row_order], self.block_starts)

    def block_max(self, per_row):
        """Largest entry of a per-row vector over each block, shape ``(n_blocks,)``."""
        if self._identity or not per_row.size:
            return per_row
        return np.maximum.reduceat(per_row if self._ordered else per_row[self.row_order], self.block_starts)

    def block_norms(self, U):
        """Frobenius norm of every block of ``U`` (shape ``(p, m)``)."""
        if self._identity and U.shape[1] == 1:  # one entry a block: its magnitude (a tenth of the time)
            return np.abs(U[:, 0])
        return np.sqrt(self.block_sum(np.einsum("ij,ij->i", U, U)))

    def _per_row(self, per_block):
        return per_block if self._identity else np.asarray(per_block)[self.block_of_row]

    # ---- value and prox ---------------------------------------------------------

    def value(self, W):
        """:math:`P(W)` (``inf`` if positivity is violated)."""
        W = _as_matrix(W, self.shape)
        if self.positive and np.any(W < 0):
            return math.inf
        total = float(np.vdot(self.l1, np.abs(W))) if self._l1_part else 0.0
        if self._grouped:
            total += float(self.group_weights @ self.block_norms(W))
        return total + 0.5 * self.ridge * float(np.vdot(W, W)) if self.ridge else total

    def shrink(self, Z, step, one_sided=False):
        r""":math:`S_{s\beta}(S_{s\alpha}(Z))`, the prox of the non-ridge part (``step`` per block or one).

        ``one_sided``: the entries are thresholded one-sidedly, :math:`\max(Z - s\alpha, 0)`, which is
        :math:`S_{s\alpha}` itself for ``Z >= 0`` (magnitudes) and for a positive penalty.
        """
        U = Z
        # S_0(Z) = Z is skipped only when the group scaling follows, which makes the new array the caller
        # gets (returned alone, U would be Z itself)
        if self._l1_part or self.positive or one_sided or not self._grouped:
            row_step = step if np.isscalar(step) else self._per_row(step)[:, None]
            U = soft_threshold(Z, row_step * self.l1, self.positive or one_sided)
        if self._grouped:
            scale = group_soft_threshold_scale(self.block_norms(U), step * self.group_weights)
            U = U * self._per_row(scale)[:, None]
        return U

    def prox(self, Z, step):
        r""":math:`\operatorname{prox}_{sP}(Z)` for a scalar or per-block step ``s``."""
        U = self.shrink(_as_matrix(Z, self.shape), step)
        if not self.ridge:
            return U
        row_step = step if np.isscalar(step) else self._per_row(step)[:, None]
        return U / (1 + row_step * self.ridge)

    # ---- duality ------------------------------------------------------------------

    def block_dual_norms(self, V):
        r"""The block dual norms :math:`t_g(V)` (``inf`` for a nonzero unpenalized block)."""
        A = np.maximum(V, 0) if self.positive else np.abs(V)
        alpha, beta = self.l1, self.group_weights
        if self._identity and A.shape[1] == 1:
            # one entry per block: the group norm is |v|, so t = |v| / (alpha + beta); the weights are
            # positive where the block is penalized (one division: np.where over both took 10 times as long)
            total = alpha[:, 0] + beta
            if self._all_penalized:
                return A[:, 0] / total
            with np.errstate(divide="ignore", invalid="ignore"):
                t = A[:, 0] / total
            if not self._all_penalized:
                free = ~self.penalized
                t[free] = np.where(A[free, 0] > 0, np.inf, 0.0)
            return t
        # the group lasso: t = ||V_g|| / beta (no ratios, no roots: a fifth of the time)
        if not self._l1_part:
            norms = self.block_norms(A)
            if self._all_penalized:  # every block then has beta > 0
                return norms / beta
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(beta > 0, norms / beta, np.where(norms > 0, np.inf, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(alpha > 0, A / alpha, np.where(A > 0, np.inf, 0.0))
        pure_l1 = self.block_max(ratio.max(axis=1))
        norms = self.block_norms(A)
        with np.errstate(divide="ignore", invalid="ignore"):
            pure_group = np.where(beta > 0, norms / beta, np.where(norms > 0, np.inf, 0.0))
        has_l1 = self.block_max(alpha.max(axis=1)) > 0
        t = np.where(beta > 0, np.where(has_l1, np.minimum(pure_l1, pure_group), pure_group), pure_l1)
        mixed = np.flatnonzero(has_l1 & (beta > 0) & (norms > 0))
        if mixed.size:
            t[mixed] = self._mixed_root(A, mixed)
        return t

    def _mixed_root(self, A, blocks):
        r"""The root :math:`t_g` of the given blocks, each with one L1 weight and a group weight.

        The blocks' entries go into one zero-padded ``(blocks, entries)`` matrix (a zero
        entry changes no root) for :func:`normpen._array.sparse_group_roots`, the
        sparse-group lasso's own dual norm.
        """
        rows = self._rows_of(blocks)
        m = A.shape[1]
        counts = self.block_sizes[blocks] * m
        owner = np.repeat(np.arange(blocks.size), counts)
        position = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        a = np.zeros((blocks.size, int(counts.max())))
        a[owner, position] = A[rows].ravel()
        alpha = self.block_max(self.l1.max(axis=1))[blocks]
        return sparse_group_roots(a, alpha, self.group_weights[blocks])

    def _rows_of(self, blocks):
        """Rows of the given blocks, block after block."""
        sizes = self.block_sizes[blocks]
        first = np.repeat(self.block_starts[blocks] - np.cumsum(sizes) + sizes, sizes)
        return self.row_order[first + np.arange(int(sizes.sum()))]

    def dual_scale(self, V):
        r""":math:`\kappa = \max(1, \max_g t_g(V))` over the penalized blocks; 1 when :math:`\mu > 0`."""
        if self.ridge > 0 or not (self._all_penalized or np.any(self.penalized)):
            return 1.0
        return max(1.0, self._largest_penalized(self.block_dual_norms(V)))

    def conjugate(self, V):
        r""":math:`P^*(V) = \|S_\beta(S_\alpha(V))\|^2 / (2\mu)` for :math:`\mu > 0`; 0 when :math:`\mu = 0`.

        With :math:`\mu = 0` the conjugate is the indicator of the dual ball,
        which the solver enforces by rescaling with :meth:`dual_scale`.
        """
        if self.ridge == 0:
            return 0.0
        # soft thresholding is odd and the group scaling reads norms: S(V) and S(|V|) have the same norm,
        # and S(|V|) is one-sided (two array operations fewer than with the signs)
        U = self.shrink(_as_matrix(V if self.positive else np.abs(V), self.shape), 1.0, one_sided=True)
        return float(np.vdot(U, U)) / (2 * self.ridge)

    def zero_scale(self, V):
        r""":math:`\max_g t_g(V)` over penalized blocks: ``lambda_max / lam`` for :math:`V = -\nabla F(0)`."""
        if not np.any(self.penalized):
            return math.inf
        return self._largest_penalized(self.block_dual_norms(V))

    def _largest_penalized(self, per_block):
        """The largest entry of a per-block vector over the penalized blocks (at least one)."""
        return float((per_block if self._all_penalized else per_block[self.penalized]).max())

    def certified_zero(self, V, radius):
        r"""Gap-safe screening: blocks that are zero at every optimum.

        ``V`` is the centre :math:`-X^\top A u` of a ball of radii ``radius``
        (per block) known to contain :math:`-\nabla F` at the optimum. Block
        :math:`g` is zero iff :math:`\|S_\alpha(V^\star_g)\| \le \beta_g`, and
        :math:`V \mapsto \|S_\alpha(V)\| = \operatorname{dist}(V, \text{box})`
        grows by at most the distance moved (and stays 0 for a move smaller
        than the distance :math:`\delta_g` to the box's faces), so the test is
        :math:`\|S_\alpha(V_g)\| + r_g < \beta_g` outside the box and
        :math:`r_g - \delta_g < \beta_g` inside it.
        """
        A = np.maximum(V, 0) if self.positive else np.abs(V)
        if not self._l1_part:  # the box is {0}: the distance to it is the block's norm, delta_g = 0
            return self.penalized & (self.block_norms(A) + radius < self.group_weights)
        D = A - self.l1
        if self._identity and D.shape[1] == 1:  # one entry a block: the signed distance is D itself
            return self.penalized & (D[:, 0] + radius < self.group_weights)
        outside = self.block_norms(np.maximum(D, 0))
        # the distance to the box outside it (largest entry of D > 0), minus delta_g = -max D inside it
        signed = outside + np.minimum(self.block_max(D.max(axis=1)), 0)
        return self.penalized & (signed + radius < self.group_weights)

    def kkt_violation(self, W, grad, lipschitz):
        r"""Per-block prox-gradient residual.

        :math:`L_g\|W_g - \operatorname{prox}_{P/L_g}(W_g - \nabla_g F/L_g)\|`.

        Zero exactly at the optimum; for a zero block it is the distance of
        :math:`-\nabla_g F` to :math:`\partial P_g(0)` (without the ridge part).
        """
        step = 1.0 / lipschitz
        moved = W - self.prox(W - grad * self._per_row(step)[:, None], step)
        return lipschitz * self.block_norms(moved)

    def restrict(self, block_ids):
        """This penalty on the rows of the given blocks, in that order, and those rows."""
        sizes = self.block_sizes[block_ids]
        if self.singletons:  # a block a row: the blocks' rows, one after the other (a third of the time)
            rows = self.row_order[self.block_starts[block_ids]]
            local = np.arange(rows.size)
            structure = (local, local, local, sizes, True)
        else:
            rows = self._rows_of(block_ids)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            local = np.arange(rows.size)
            singletons = sizes.size == rows.size
            block_of_row = local if singletons else np.repeat(np.arange(sizes.size), sizes)
            structure = (local, starts, block_of_row, sizes, singletons)
        group_weights = self.group_weights[block_ids]
        penalized = self.penalized[block_ids]
        selected = (
            penalized,
            self._all_penalized or bool(penalized.all()),
            self._grouped and bool(np.any(group_weights > 0)),
        )
        return self._reweighted(self.l1[rows], group_weights, self.ridge, structure, selected), rows


def _as_matrix(W, shape):
    W = np.asarray(W)
    return W.reshape(shape)


def as_block_penalty(penalty, coef_shape, positive=False):
    """The :class:`BlockPenalty` of a normpen penalty for coefficients of shape ``coef_shape``.

    Reads the penalty's :meth:`~normpen.penalties.base.Penalty.block_form`: an L1
    part (weighted or not), a ridge at 0 and a group term on index groups over
    features, or on ``"rows"`` of a ``(p, m)`` matrix (L1, ElasticNet, L2,
    GroupLasso, SparseGroupLasso), and a :class:`BlockPenalty` of the right shape.
    Raises ``TypeError`` for penalties without such a form (an anchor, Fisher
    weights, a max-norm constraint, or none at all: solve those with FISTA) and
    ``ValueError`` for weights or groups that do not fit the coefficients.
    """
    p = coef_shape[0]
    m = 1 if len(coef_shape) == 1 else coef_shape[1]
    if isinstance(penalty, BlockPenalty):
        if penalty.shape != (p, m):
            raise ValueError(f"the BlockPenalty is for coefficients {penalty.shape}, got {(p, m)}")
        return (
            penalty
            if penalty.positive == positive
            else BlockPenalty(
                penalty.l1,
                penalty.row_order,
                penalty.block_starts,
                penalty.group_weights,
                penalty.ridge,
                positive,
            )
        )
    form = _coordinate_descent_form(penalty, coef_shape)
    if form.l1_weights is None:
        l1 = np.full((p, m), form.l1)
    elif form.l1_weights.shape != tuple(coef_shape):
        raise ValueError(
            f"the L1 weights have shape {form.l1_weights.shape} but the coefficients have shape "
            f"{tuple(coef_shape)}; give one weight per coefficient"
        )
    else:
        l1 = form.l1 * form.l1_weights.reshape(p, m)
    if form.groups is None:
        return BlockPenalty.separable(l1, form.ridge, positive)
    row_order, sizes, weights = _row_blocks(form, p, m)
    starts = np.cumsum(sizes) - sizes
    return BlockPenalty(l1, row_order, starts, form.group_lam * weights, form.ridge, positive)


def _coordinate_descent_form(penalty, coef_shape):
    """The penalty's block form, if coordinate descent takes it (no anchor, Fisher weights or constraint)."""
    declare = getattr(penalty, "block_form", None)
    form = declare(tuple(coef_shape)) if declare is not None else None
    if form is None or form.anchor is not None or form.fisher is not None or form.max_norm is not None:
        raise TypeError(
            "coordinate descent takes penalties made of an L1 part, a ridge at 0 and groups of features "
            f"(L1, ElasticNet, L2, GroupLasso, SparseGroupLasso), got {type(penalty).__name__}; solve "
            "other penalties with normpen.linear.solvers.fista"
        )
    return form


def _row_blocks(form, p, m):
    """Rows listed block after block, the blocks' sizes and unit weights, from a block form's groups.

    ``groups="rows"`` makes one block per row. Index groups count into the flattened ``(p, m)``
    coefficients, so for ``m > 1`` each must be a union of whole rows (a block lists its rows in
    increasing order); rows in no group become unpenalized singleton blocks after the groups. All
    groups are checked and converted at once, on their concatenation (a loop over 1,000 groups of 5
    took 3.6 ms of a path's set-up).
    """
    if form.axis is not None:
        if form.axis == 1 or m == 1:
            raise ValueError(
                "coordinate descent groups rows of the coefficients (features): use groups='rows' with a "
                "2-D coefficient matrix, or index arrays of features"
            )
        if form.group_weights.size != p:
            raise ValueError(
                f"weights has {form.group_weights.size} entries but there are {p} groups; give one per group"
            )
        return np.arange(p), np.ones(p, dtype=np.int64), form.group_weights
    groups = form.groups
    lengths = np.array([g.size for g in groups], dtype=np.int64)
    owner = np.repeat(np.arange(lengths.size), lengths)
    flat = np.concatenate([np.zeros(0, dtype=np.int64), *groups])
    # each group's rows, sorted, and whether it repeats one (every output of a row once: lengths = m rows)
    key = owner * p + np.minimum(flat // m, p)
    if not np.all(key[1:] > key[:-1]):
        key = np.sort(key)
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    counts = np.bincount(owner[first], minlength=lengths.size)
    beyond = np.zeros(lengths.size, dtype=bool)
    beyond[owner[flat >= p * m]] = True
    bad = np.flatnonzero(beyond | (counts * m != lengths))
    if bad.size:
        i = int(bad[0])
        if beyond[i]:
            raise ValueError(
                f"groups[{i}] contains index {groups[i].max()} but there are only {p * m} coefficients "
                f"({p} features x {m} outputs); the groups do not fit X"
            )
        raise ValueError(
            f"groups[{i}] splits a feature's outputs; with {m} outputs a group must hold whole rows "
            "(all outputs of each of its features)"
        )
    rows = key[first] % p
    covered = np.zeros(p, dtype=bool)
    covered[rows] = True
    free = np.flatnonzero(~covered)
    sizes = np.concatenate([counts, np.ones(free.size, dtype=np.int64)])
    return np.concatenate([rows, free]), sizes, np.concatenate([form.group_weights, np.zeros(free.size)])
