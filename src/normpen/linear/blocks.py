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

import numpy as np

from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso, _parse_groups, _parse_weights
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

__all__ = ["BlockPenalty", "as_block_penalty"]


@dataclass(frozen=True, eq=False)
class BlockPenalty:
    r"""The block-separable penalty of the module docstring, on ``W`` of shape ``(p, m)``.

    Parameters
    ----------
    l1 : ndarray of shape (p, m)
        Absolute elementwise weights :math:`\alpha \ge 0`.
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
    _identity: bool = field(init=False, repr=False)

    def __post_init__(self):
        p = self.l1.shape[0]
        sizes = np.diff(np.append(self.block_starts, self.row_order.size))
        block_of_row = np.full(p, -1, dtype=np.int64)
        block_of_row[self.row_order] = np.repeat(np.arange(sizes.size), sizes)
        if self.row_order.size != p or np.any(block_of_row < 0) or np.any(sizes <= 0):
            raise ValueError("blocks must partition the rows of the coefficients into non-empty blocks")
        object.__setattr__(self, "block_of_row", block_of_row)
        object.__setattr__(self, "block_sizes", sizes)
        identity = sizes.size == p and bool(np.all(self.row_order == np.arange(p)))
        object.__setattr__(self, "_identity", identity)
        has_l1 = self.block_max(self.l1.max(axis=1)) > 0
        object.__setattr__(self, "penalized", has_l1 | (self.group_weights > 0))

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
        """The same structure with every weight multiplied by ``factor`` (a new strength)."""
        return BlockPenalty(
            self.l1 * factor,
            self.row_order,
            self.block_starts,
            self.group_weights * factor,
            self.ridge * factor,
            self.positive,
        )

    @property
    def free_rows(self):
        """Rows no term of the penalty touches (no L1, group or ridge weight): unpenalized coefficients."""
        if self.ridge > 0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(~self.penalized[self.block_of_row])

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

    @property
    def structure_key(self):
        """A hashable key of the block partition (for caches of per-block constants)."""
        if self._identity:
            return ("separable", self.row_order.size)
        return (self.row_order.tobytes(), self.block_starts.tobytes())

    def block_rows(self, g):
        """Rows of block ``g``."""
        start = self.block_starts[g]
        return self.row_order[start : start + self.block_sizes[g]]

    # ---- block reductions ---------------------------------------------------------

    def block_sum(self, per_row):
        """Sum of a per-row vector over each block, shape ``(n_blocks,)``."""
        if self._identity or not per_row.size:
            return per_row
        return np.add.reduceat(per_row[self.row_order], self.block_starts)

    def block_max(self, per_row):
        """Largest entry of a per-row vector over each block, shape ``(n_blocks,)``."""
        if self._identity or not per_row.size:
            return per_row
        return np.maximum.reduceat(per_row[self.row_order], self.block_starts)

    def block_norms(self, U):
        """Frobenius norm of every block of ``U`` (shape ``(p, m)``)."""
        return np.sqrt(self.block_sum(np.einsum("ij,ij->i", U, U)))

    def _per_row(self, per_block):
        return per_block if self._identity else np.asarray(per_block)[self.block_of_row]

    # ---- value and prox ---------------------------------------------------------

    def value(self, W):
        """:math:`P(W)` (``inf`` if positivity is violated)."""
        W = _as_matrix(W, self.shape)
        if self.positive and np.any(W < 0):
            return math.inf
        total = float(np.sum(self.l1 * np.abs(W))) + float(self.group_weights @ self.block_norms(W))
        return total + 0.5 * self.ridge * float(np.sum(W * W))

    def shrink(self, Z, step):
        r""":math:`S_{s\beta}(S_{s\alpha}(Z))`, the prox of the non-ridge part (``step`` per block or one)."""
        row_step = step if np.isscalar(step) else self._per_row(step)[:, None]
        thresh = row_step * self.l1
        U = np.maximum(Z - thresh, 0) if self.positive else np.sign(Z) * np.maximum(np.abs(Z) - thresh, 0)
        if np.any(self.group_weights > 0):
            norms = self.block_norms(U)
            block_thresh = step * self.group_weights
            scale = np.where(norms > block_thresh, 1 - block_thresh / np.where(norms > 0, norms, 1), 0.0)
            U = U * self._per_row(scale)[:, None]
        return U

    def prox(self, Z, step):
        r""":math:`\operatorname{prox}_{sP}(Z)` for a scalar or per-block step ``s``."""
        Z = _as_matrix(Z, self.shape)
        row_step = step if np.isscalar(step) else self._per_row(step)[:, None]
        return self.shrink(Z, step) / (1 + row_step * self.ridge)

    # ---- duality ------------------------------------------------------------------

    def block_dual_norms(self, V):
        r"""The block dual norms :math:`t_g(V)` (``inf`` for a nonzero unpenalized block)."""
        A = np.maximum(V, 0) if self.positive else np.abs(V)
        alpha, beta = self.l1, self.group_weights
        if self._identity and A.shape[1] == 1:
            # one entry per block: the group norm is |v|, so t = |v| / (alpha + beta)
            total = alpha[:, 0] + beta
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(total > 0, A[:, 0] / total, np.where(A[:, 0] > 0, np.inf, 0.0))
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
        r"""Exact root of :math:`f(t) = \|(A_g - t\alpha_g)_+\|^2 - t^2\beta_g^2` for the given blocks.

        :math:`f` is decreasing and piecewise quadratic between the breakpoints
        :math:`\tau_i = A_i/\alpha_i`. With the breakpoints sorted in decreasing
        order and the top :math:`k` entries active, :math:`f = 0` reads
        :math:`(S^{\alpha\alpha}_k - \beta^2)t^2 - 2S^{\alpha a}_k t + S^{aa}_k = 0`
        (cumulative sums), whose decreasing-branch root is
        :math:`t_k = S^{aa}_k / (S^{\alpha a}_k + \sqrt{\Delta_k})` with
        :math:`\Delta_k = (S^{\alpha a}_k)^2 - (S^{\alpha\alpha}_k - \beta^2)S^{aa}_k`;
        the answer is the :math:`t_k` inside its interval :math:`[\tau_{k+1}, \tau_k]`.
        All blocks are solved at once on a zero-padded ``(blocks, entries)`` layout.
        """
        rows = self._rows_of(blocks)
        m = A.shape[1]
        counts = self.block_sizes[blocks] * m
        owner = np.repeat(np.arange(blocks.size), counts)
        position = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        a = np.zeros((blocks.size, int(counts.max())))
        alpha = np.zeros_like(a)
        a[owner, position] = A[rows].ravel()
        alpha[owner, position] = self.l1[rows].ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = np.where(alpha > 0, a / alpha, np.where(a > 0, np.inf, -1.0))
        order = np.argsort(-tau, axis=1)
        tau, a, alpha = (np.take_along_axis(v, order, axis=1) for v in (tau, a, alpha))
        s_aa = np.cumsum(a * a, axis=1)
        s_alpha_a = np.cumsum(alpha * a, axis=1)
        s_alpha_alpha = np.cumsum(alpha * alpha, axis=1)
        beta2 = (self.group_weights[blocks] ** 2)[:, None]
        disc = np.maximum(s_alpha_a**2 - (s_alpha_alpha - beta2) * s_aa, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = s_aa / (s_alpha_a + np.sqrt(disc))
        below = np.concatenate([tau[:, 1:], np.full((blocks.size, 1), -1.0)], axis=1)
        slack = 1e-12 * np.where(np.isfinite(t), t, 0)
        valid = (t >= below - slack) & (t <= tau + slack) & np.isfinite(t)
        return t[np.arange(blocks.size), np.argmax(valid, axis=1)]

    def _rows_of(self, blocks):
        """Rows of the given blocks, block after block."""
        sizes = self.block_sizes[blocks]
        first = np.repeat(self.block_starts[blocks] - np.cumsum(sizes) + sizes, sizes)
        return self.row_order[first + np.arange(int(sizes.sum()))]

    def dual_scale(self, V):
        r""":math:`\kappa = \max(1, \max_g t_g(V))` over the penalized blocks; 1 when :math:`\mu > 0`."""
        if self.ridge > 0 or not np.any(self.penalized):
            return 1.0
        return max(1.0, float(np.max(self.block_dual_norms(V)[self.penalized])))

    def conjugate(self, V):
        r""":math:`P^*(V) = \|S_\beta(S_\alpha(V))\|^2 / (2\mu)` for :math:`\mu > 0`; 0 when :math:`\mu = 0`.

        With :math:`\mu = 0` the conjugate is the indicator of the dual ball,
        which the solver enforces by rescaling with :meth:`dual_scale`.
        """
        if self.ridge == 0:
            return 0.0
        U = self.shrink(_as_matrix(V, self.shape), 1.0)
        return float(np.sum(U * U)) / (2 * self.ridge)

    def zero_scale(self, V):
        r""":math:`\max_g t_g(V)` over penalized blocks: ``lambda_max / lam`` for :math:`V = -\nabla F(0)`."""
        if not np.any(self.penalized):
            return math.inf
        return float(np.max(self.block_dual_norms(V)[self.penalized]))

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
        excess = np.maximum(A - self.l1, 0)
        outside = self.block_norms(excess)
        margin = -self.block_max((A - self.l1).max(axis=1))
        inside_ok = (outside == 0) & (radius - margin < self.group_weights)
        outside_ok = (outside > 0) & (outside + radius < self.group_weights)
        return self.penalized & (inside_ok | outside_ok)

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
        rows = self._rows_of(block_ids)
        sizes = self.block_sizes[block_ids]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        local = BlockPenalty(
            self.l1[rows],
            np.arange(rows.size),
            starts,
            self.group_weights[block_ids],
            self.ridge,
            self.positive,
        )
        return local, rows


def _as_matrix(W, shape):
    W = np.asarray(W)
    return W.reshape(shape)


def as_block_penalty(penalty, coef_shape, positive=False):
    """The :class:`BlockPenalty` of a normpen penalty for coefficients of shape ``coef_shape``.

    Takes :class:`~normpen.penalties.l1.L1` (weighted),
    :class:`~normpen.penalties.elastic_net.ElasticNet`,
    :class:`~normpen.penalties.l2.L2`,
    :class:`~normpen.penalties.group_lasso.GroupLasso` (index groups over
    features, or ``"rows"`` for a ``(p, m)`` matrix),
    :class:`~normpen.penalties.sparse_group_lasso.SparseGroupLasso` (the same
    groups) and a :class:`BlockPenalty` of the right shape. Raises ``TypeError`` for
    other penalties (solve those with FISTA) and ``ValueError`` for groups that
    do not fit the coefficients.
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
    if isinstance(penalty, L1):
        weights = np.ones(coef_shape) if penalty.weights is None else penalty.weights
        if weights.shape != tuple(coef_shape):
            raise ValueError(
                f"the L1 weights have shape {weights.shape} but the coefficients have shape "
                f"{tuple(coef_shape)}; give one weight per coefficient"
            )
        return BlockPenalty.separable(penalty.lam * weights.reshape(p, m), 0.0, positive)
    if isinstance(penalty, ElasticNet):
        l1 = np.full((p, m), penalty.lam * penalty.l1_ratio)
        return BlockPenalty.separable(l1, penalty.lam * (1 - penalty.l1_ratio), positive)
    if isinstance(penalty, L2):
        return BlockPenalty.separable(np.zeros((p, m)), penalty.lam, positive)
    if isinstance(penalty, GroupLasso | SparseGroupLasso):
        rho = penalty.l1_ratio if isinstance(penalty, SparseGroupLasso) else 0.0
        blocks, weights = _row_blocks(penalty.groups, penalty.weights, p, m)
        l1 = np.full((p, m), penalty.lam * rho)
        if blocks is None:
            return BlockPenalty(
                l1, np.arange(p), np.arange(p), penalty.lam * (1 - rho) * weights, 0.0, positive
            )
        return BlockPenalty.from_blocks(l1, blocks, penalty.lam * (1 - rho) * weights, 0.0, positive)
    raise TypeError(
        f"coordinate descent takes L1, ElasticNet, L2, GroupLasso or SparseGroupLasso, got "
        f"{type(penalty).__name__}; solve other penalties with normpen.linear.solvers.fista"
    )


def _row_blocks(groups, weights, p, m):
    """Blocks of rows and their weights (default sqrt of the entry count) from GroupLasso-style groups.

    ``None`` for the blocks means one block per row (``groups="rows"``).

    Index groups count into the flattened ``(p, m)`` coefficients, so for
    ``m > 1`` each must be a union of whole rows; rows in no group become
    unpenalized singleton blocks.
    """
    parsed = _parse_groups(groups)
    if isinstance(parsed, int):
        if parsed == 1 or m == 1:
            raise ValueError(
                "coordinate descent groups rows of the coefficients (features): use groups='rows' with a "
                "2-D coefficient matrix, or index arrays of features"
            )
        w = _parse_weights(weights, p)
        return None, (np.full(p, math.sqrt(m)) if w is None else w)
    w = _parse_weights(weights, len(parsed))
    w = np.sqrt([g.size for g in parsed]) if w is None else w
    blocks, covered = [], np.zeros(p, dtype=bool)
    for i, g in enumerate(parsed):
        if g.max() >= p * m:
            raise ValueError(
                f"groups[{i}] contains index {g.max()} but there are only {p * m} coefficients "
                f"({p} features x {m} outputs); the groups do not fit X"
            )
        rows = np.unique(g // m)
        if rows.size * m != g.size:
            raise ValueError(
                f"groups[{i}] splits a feature's outputs; with {m} outputs a group must hold whole rows "
                "(all outputs of each of its features)"
            )
        blocks.append(rows)
        covered[rows] = True
    free = np.flatnonzero(~covered)
    blocks.extend(np.array([j]) for j in free)
    return tuple(blocks), np.concatenate([w, np.zeros(free.size)])
