r"""The group lasso :math:`\lambda \sum_g \omega_g \|x_g\|_2` (weighted L2,1 norm) and its group machinery.

Every operation of the group lasso is the weighted L1 operation applied to the
vector of group norms :math:`a_g = \|x_g\|_2`, followed by rescaling each group
from norm :math:`a_g` to the new norm: the prox soft-thresholds :math:`a`, the
projection projects :math:`a` onto the weighted L1 ball, the dual-ball
projection clips :math:`a`. The partitions below (:class:`_AxisGroups` for
``"rows"``/``"cols"``, :class:`_IndexGroups` for explicit index arrays) give
the group norms, spread a per-group vector back over the entries, and do that
rescaling; :mod:`normpen.penalties.max_norm` uses the same machinery.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from normpen._array import (
    as_float64_array,
    check_nonnegative,
    l2_norm,
    max_or_zero,
    namespace,
    scaled_threshold,
    soft_threshold,
)
from normpen.penalties.base import BlockForm, Penalty
from normpen.penalties.l1 import project_l1_ball

__all__ = ["GroupLasso"]

_GROUPS_HELP = "groups must be 'rows', 'cols' or a sequence of integer index arrays into x.reshape(-1)"
_CACHE_SIZE = 8


def _memo(cache, key, build):
    """``cache[key]``, built by ``build()`` on first use; the oldest entry goes when the cache is full."""
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


def _placement(x):
    """What an array built for ``x`` depends on besides its shape: the namespace and the device."""
    return namespace(x).__name__, str(array_api_compat.device(x))


class _Groups:
    """A partition of the entries of ``x`` into groups, with one nonnegative weight per group.

    Subclasses give the group norms (:meth:`norms`), the groups as rows of
    matrices (:meth:`rows`), spread one value per group back over the entries
    (:meth:`expand`) and the host-side weights; the order of the groups inside
    these vectors is the subclass's own.
    """

    def __init__(self, weights):
        self.weights = weights
        self._cache = {}

    def weights_like(self, x):
        """The group weights as a vector of ``x``'s kind, dtype and device (built once per placement)."""
        xp = namespace(x)
        key = ("weights", tuple(x.shape), str(x.dtype), *_placement(x))
        return _memo(
            self._cache,
            key,
            lambda: xp.asarray(self._host_weights(x.shape), dtype=x.dtype, device=array_api_compat.device(x)),
        )

    def rescale(self, x, old, new):
        r"""``x`` with each group rescaled from norm ``old[g]`` to norm ``new[g]``.

        Unchanged groups (``new == old``, infinite norms included) come back bit for
        bit; the others are divided by ``old`` and then multiplied by ``new``, so a
        ratio far below the smallest float does not flush them to zero; a group with
        ``new = 0`` becomes exact zeros (``new`` must be 0 where ``old`` is).
        """
        xp = namespace(x)
        same = new == old
        divisor = self.expand(x, xp.where(same | (old == 0), 1, old))
        return x / divisor * self.expand(x, xp.where(same, 1, new))  # x / old first: new / old may underflow

    def unit(self, x, norms):
        """Each group divided by its norm (zero groups stay zero): the direction of every group."""
        xp = namespace(x)
        return x / self.expand(x, xp.where(norms > 0, norms, 1))


class _AxisGroups(_Groups):
    """Groups that are the slices ``x[i, ...]`` (axis 0, "rows") or ``x[:, j, ...]`` (axis 1, "cols").

    Viewing ``x`` as ``(lead, G, rest)`` with the group axis in the middle,
    group norms are one axis reduction and a per-group vector broadcasts back
    with a reshape, so no index array is needed.
    """

    def __init__(self, axis, weights=None):
        super().__init__(weights)
        self.axis = axis

    @property
    def label(self):
        return ("rows", "cols")[self.axis]

    def check(self, x, name):
        if x.ndim <= self.axis:
            raise ValueError(
                f"groups='{self.label}' needs {name} with at least {self.axis + 1} dimension(s), got shape "
                f"{tuple(x.shape)}; give explicit index arrays into {name}.reshape(-1) instead"
            )
        count = x.shape[self.axis]
        if self.weights is not None and self.weights.shape[0] != count:
            raise ValueError(
                f"weights has {self.weights.shape[0]} entries but {name} has {count} {self.label} "
                f"(shape {tuple(x.shape)}); give one weight per group"
            )

    def _host_weights(self, shape):
        if self.weights is not None:
            return self.weights
        count = shape[self.axis]
        return np.full(count, math.sqrt(math.prod(shape) / count) if count else 0.0)

    def _view(self, x):
        """``x`` as ``(lead, G, rest)``, the group axis in the middle."""
        shape = tuple(x.shape)
        view = (math.prod(shape[: self.axis]), shape[self.axis], math.prod(shape[self.axis + 1 :]))
        return namespace(x).reshape(x, view)

    def norms(self, x):
        return l2_norm(self._view(x), axis=(0, 2))

    def rows(self, x):
        """The groups as the rows of one matrix ``(G, |g|)``, in the order of :meth:`norms`."""
        xp = namespace(x)
        view = self._view(x)
        lead, count, rest = view.shape
        return [xp.reshape(xp.permute_dims(view, (1, 0, 2)), (count, lead * rest))]

    def expand(self, x, v):
        xp = namespace(x)
        shape = [1] * x.ndim
        shape[self.axis] = x.shape[self.axis]
        return xp.reshape(v, tuple(shape))


class _IndexGroups(_Groups):
    """Groups given as disjoint integer index arrays into ``x.reshape(-1)``.

    Coordinates in no group become singleton groups of weight 0, which the
    weighted-L1 operations on the group norms leave unpenalized. Internally
    the groups are bucketed by size class :math:`\\lceil\\log_2|g|\\rceil`
    and each bucket is a padded ``(groups, width)`` index matrix, so one gather
    per bucket gives all its groups (padding below a factor of 2, hence under
    :math:`2n` stored indices); index 0 is the padding slot, a zero placed in
    front of ``x.reshape(-1)``. Layouts are built once per length and device.
    """

    def __init__(self, groups, weights=None):
        super().__init__(weights)
        self.groups = groups
        self.lengths = np.array([g.size for g in groups], dtype=np.int64)
        tops = _group_reduce(np.maximum, groups, self.lengths) if groups else np.zeros(0, dtype=np.int64)
        self.top_group = int(np.argmax(tops)) if groups else -1
        self.top = int(tops[self.top_group]) if groups else -1

    def check(self, x, name):
        size = math.prod(x.shape)
        if self.top >= size:
            raise ValueError(
                f"groups[{self.top_group}] contains index {self.top} but {name} has only {size} entries "
                f"(shape {tuple(x.shape)}); indices count into {name}.reshape(-1)"
            )

    def _host_layout(self, size):
        """The :func:`_bucket_layout` for a vector of ``size`` entries, built once per size."""
        return _memo(self._cache, ("host", size), lambda: _bucket_layout(self.groups, self.lengths, size))

    def _host_weights(self, shape):
        weights = np.sqrt(self.lengths) if self.weights is None else self.weights
        owner = self._host_layout(math.prod(shape))[2]
        return np.append(weights, 0.0)[owner]  # owner -1 (a free coordinate) picks the appended 0

    def _layout(self, x):
        xp = namespace(x)
        size = math.prod(x.shape)

        def build():
            blocks, coord_group, _ = self._host_layout(size)
            device = array_api_compat.device(x)
            return (
                [(xp.asarray(b.reshape(-1), device=device), b.shape) for b in blocks],
                xp.asarray(coord_group, device=device),
            )

        return _memo(self._cache, ("device", size, *_placement(x)), build)

    def rows(self, x):
        """The groups as the zero-padded rows of one matrix per size class, in the order of :meth:`norms`."""
        xp = namespace(x)
        blocks, _ = self._layout(x)
        zero = xp.zeros((1,), dtype=x.dtype, device=array_api_compat.device(x))
        padded = xp.concat([zero, xp.reshape(x, (-1,))])
        return [xp.reshape(xp.take(padded, index, axis=0), shape) for index, shape in blocks]

    def norms(self, x):
        return namespace(x).concat([l2_norm(rows, axis=1) for rows in self.rows(x)])

    def expand(self, x, v):
        xp = namespace(x)
        _, coord_group = self._layout(x)
        return xp.reshape(xp.take(v, coord_group, axis=0), tuple(x.shape))


def _bucket_layout(groups, lengths, size):
    """Host-side layout of :class:`_IndexGroups` over a vector of ``size`` entries.

    Returns the padded index blocks (entries shifted by one, 0 = padding), the
    internal group of every coordinate, and for every internal group the
    position of its user group (-1 for the singleton of a free coordinate).
    """
    covered = np.concatenate([np.zeros(0, dtype=np.int64), *groups])
    free = np.setdiff1d(np.arange(size), covered, assume_unique=True)
    flat = np.concatenate([covered, free])
    lengths = np.concatenate([lengths, np.ones(free.size, dtype=lengths.dtype)])
    owner = np.concatenate([np.arange(len(groups)), np.full(free.size, -1)])
    size_class = np.frexp(lengths - 1)[1]
    entry_class = np.repeat(size_class, lengths)
    blocks, order = [], []
    coord_group = np.empty(size, dtype=np.int64)
    for c in np.unique(size_class):
        members = np.flatnonzero(size_class == c)
        entries = flat[entry_class == c]
        widths = lengths[members]
        rows = np.repeat(np.arange(members.size), widths)
        cols = np.arange(entries.size) - np.repeat(np.cumsum(widths) - widths, widths)
        block = np.zeros((members.size, int(widths.max())), dtype=np.int64)
        block[rows, cols] = entries + 1
        coord_group[entries] = sum(b.shape[0] for b in blocks) + rows
        blocks.append(block)
        order.append(owner[members])
    if not blocks:  # an empty vector: one empty block keeps the gathers uniform
        blocks, order = [np.zeros((0, 1), dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    return blocks, coord_group, np.concatenate(order)


def _parse_groups(groups):
    """Validated ``"rows"``/``"cols"`` (as an axis) or a tuple of disjoint int64 index arrays."""
    if isinstance(groups, str):
        if groups not in ("rows", "cols"):
            raise ValueError(f"{_GROUPS_HELP}, got {groups!r}")
        return ("rows", "cols").index(groups)
    try:
        parsed = [np.asarray(g) for g in groups]
    except TypeError as err:
        raise TypeError(f"{_GROUPS_HELP}, got {type(groups).__name__}") from err
    for i, g in enumerate(parsed):
        _check_index_array(g, i)
    _check_index_range(parsed)
    parsed = tuple(g.astype(np.int64) for g in parsed)
    _check_disjoint(parsed)
    return parsed


def _group_reduce(ufunc, groups, lengths):
    """``ufunc.reduce`` of every group (non-empty, one integer dtype) in one ``reduceat`` over their
    concatenation (a reduction a group took 3 us each: 1,000 groups of 5 were 7 ms of a path's set-up)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return ufunc.reduceat(np.concatenate(groups), starts)


def _check_index_range(groups):
    """Every index of the 1-D integer index arrays ``groups`` is in ``[0, 2**63)``; the first group that
    is not named. Groups of one dtype are reduced together (:func:`_group_reduce`), so that mixing
    signed and unsigned indices never converts them to float."""
    by_dtype = {}
    for i, g in enumerate(groups):
        by_dtype.setdefault(g.dtype, []).append(i)
    bad = []
    for members in by_dtype.values():
        arrays = [groups[i] for i in members]
        lengths = [g.size for g in arrays]
        low = np.flatnonzero(_group_reduce(np.minimum, arrays, lengths) < 0)
        high = np.flatnonzero(_group_reduce(np.maximum, arrays, lengths) > np.iinfo(np.int64).max)
        bad += [members[j] for j in (*low[:1], *high[:1])]
    if bad:
        _check_index_values(groups[min(bad)], min(bad))


def _check_index_array(g, i):
    if g.ndim != 1:
        hint = (
            "; if you have one group label per coordinate, convert it with "
            "[numpy.flatnonzero(labels == g) for g in numpy.unique(labels)]"
            if g.ndim == 0
            else ""
        )
        raise TypeError(f"groups[{i}] must be a 1-D array of indices, got shape {g.shape}{hint}")
    if g.size == 0:
        raise ValueError(f"groups[{i}] is empty; every group needs at least one index")
    if g.dtype.kind not in "iu":  # signed or unsigned integers (not bool, float, object, ...)
        raise TypeError(
            f"groups[{i}] must hold integer indices, got dtype {g.dtype}; "
            "turn a boolean mask into indices with numpy.flatnonzero(mask)"
        )


def _check_index_values(g, i):
    if g.min() < 0:
        raise ValueError(f"groups[{i}] contains the negative index {g.min()}; indices count from 0")
    if g.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"groups[{i}] contains the index {g.max()}, beyond any array's length; "
            "indices count into x.reshape(-1)"
        )


def _check_disjoint(groups):
    flat = np.concatenate([np.zeros(0, dtype=np.int64), *groups])
    owner = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    order = np.argsort(flat, kind="stable")
    repeated = np.flatnonzero(flat[order][1:] == flat[order][:-1])
    if repeated.size:
        first, second = owner[order[repeated[0]]], owner[order[repeated[0] + 1]]
        where = f"twice in groups[{first}]" if first == second else f"in groups[{first}] and groups[{second}]"
        raise ValueError(
            f"index {flat[order[repeated[0]]]} appears {where}; groups must not overlap "
            "(each coordinate belongs to at most one group)"
        )


def _parse_weights(weights, count):
    """Weights as a float64 vector, finite and >= 0, with ``count`` entries when the group count is known."""
    if weights is None:
        return None
    w = as_float64_array(weights, "weights")
    if w.ndim != 1:
        raise ValueError(f"weights must be a 1-D sequence with one weight per group, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0; use 0 to leave a group unpenalized")
    if count is not None and w.size != count:
        raise ValueError(f"weights has {w.size} entries but there are {count} groups; give one per group")
    return w


@dataclass(frozen=True, eq=False)
class GroupLasso(Penalty):
    r"""Group lasso :math:`P(x) = \lambda \sum_g \omega_g \|x_g\|_2` (the weighted L2,1 norm).

    Parameters
    ----------
    lam : float
        Strength :math:`\lambda \ge 0`.
    groups : {"rows", "cols"} or sequence of int arrays
        ``"rows"``: each slice ``x[i, ...]`` is a group (for a Linear weight
        ``(out, in)`` one output unit, for a conv kernel one filter);
        ``"cols"``: each slice ``x[:, j, ...]`` is a group (for a Linear
        weight one input feature, for a conv kernel one input channel); or
        disjoint integer index arrays into ``x.reshape(-1)``. Coordinates in
        no explicit group are left unpenalized (an empty sequence leaves all of them free).
    weights : array-like, optional
        One weight :math:`\omega_g \ge 0` per group (0 leaves the group
        unpenalized); default :math:`\omega_g = \sqrt{|g|}`.

    Notes
    -----
    With :math:`a_g = \|x_g\|_2`, every operation rescales each group from
    :math:`a_g` to a new norm :math:`b_g` (:math:`x_g \mapsto x_g\, b_g / a_g`):

    - prox: group soft thresholding :math:`b_g = \max(a_g - s\lambda\omega_g, 0)`,
      i.e. :math:`x_g \max(1 - s\lambda\omega_g/\|x_g\|, 0)`; whole groups
      become exact zeros.
    - grad: :math:`\lambda\omega_g x_g / \|x_g\|`, and 0 on zero groups (the
      minimum-norm subgradient).
    - project onto :math:`\{\sum_g \omega_g\|z_g\| \le r\}`: :math:`b` is the
      projection of :math:`a` onto the weighted L1 ball,
      :math:`b_g = \max(a_g - \tau\omega_g, 0)` with :math:`\tau` from the
      sort-based search of :mod:`normpen.penalties.l1`.
    - dual norm: :math:`\max_g \|x_g\| / \omega_g` (the weighted L2,inf norm);
      its ball clips every group, :math:`b_g = \min(a_g, r\omega_g)`.

    Coordinates in no group behave as groups of weight 0: they pass through
    ``prox`` and ``project`` unchanged, get zero gradient, add nothing to the
    norm, make ``dual_norm`` infinite when nonzero (so ``lambda_max`` is
    infinite exactly when no strength can zero them) and are set to 0 by
    ``project_dual``. Group norms are computed with per-group scaling, so
    entries from 1e-300 to 1e300 do not overflow or underflow.
    """

    sign_invariant: ClassVar[bool] = True

    groups: Any
    weights: Any = None
    _partition: Any = field(init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        groups = _parse_groups(self.groups)
        if isinstance(groups, int):
            weights = _parse_weights(self.weights, None)
            partition = _AxisGroups(groups, weights)
            groups = partition.label
        else:
            weights = _parse_weights(self.weights, len(groups))
            partition = _IndexGroups(groups, weights)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "_partition", partition)

    def __repr__(self):
        groups = repr(self.groups) if isinstance(self.groups, str) else f"<{len(self.groups)} index arrays>"
        weights = "None" if self.weights is None else f"<{self.weights.size} weights>"
        return f"GroupLasso(lam={self.lam!r}, groups={groups}, weights={weights})"

    def with_lam(self, lam):
        """The same penalty with another strength ``lam``, sharing the validated groups and their layouts."""
        twin = copy.copy(self)
        object.__setattr__(twin, "lam", check_nonnegative(lam, "lam"))
        return twin

    @property
    def axis(self):
        """The group axis: 0 for ``groups="rows"``, 1 for ``"cols"``, None for index groups."""
        return self._partition.axis if isinstance(self._partition, _AxisGroups) else None

    def axis_weights(self, shape):
        r"""The weights :math:`\omega_g` of the slices along :attr:`axis` of an array of ``shape``.

        A float64 numpy vector with ``shape[axis]`` entries, in slice order: the
        given ``weights``, else :math:`\sqrt{|g|}` with
        :math:`|g| = \prod(\text{shape}) / \text{shape}[\text{axis}]`. For
        ``groups="rows"`` or ``"cols"`` only; raises ``ValueError`` for index
        groups and for a shape without the group axis.
        """
        if self.axis is None:
            raise ValueError("axis_weights is for groups='rows' or 'cols'; index groups have no group axis")
        if len(shape) <= self.axis:
            raise ValueError(f"shape {tuple(shape)} has no axis {self.axis} (groups={self.groups!r})")
        return self._partition._host_weights(tuple(shape))

    def block_form(self, shape=None):
        """The :class:`BlockForm`: group term :math:`\\lambda` on the groups."""
        return BlockForm(groups=self.groups, group_lam=self.lam, group_weights=self._unit_weights(shape))

    def _unit_weights(self, shape):
        """:math:`\\omega_g` in group order: the given weights, else :math:`\\sqrt{|g|}` (for ``"rows"`` or
        ``"cols"`` only with ``shape``: None without it)."""
        if self.weights is not None:
            return self.weights
        if self.axis is None:
            return np.sqrt(self._partition.lengths)
        return None if shape is None else self.axis_weights(shape)

    def group_rows(self, x):
        r"""The groups of ``x`` as the rows of matrices, for penalties built on the same groups.

        One matrix for ``"rows"`` / ``"cols"``, one zero-padded matrix per group
        size for index groups; the rows follow the order of :meth:`group_weights_like`
        (zero padding changes no norm). ``x`` is not validated.
        """
        return self._partition.rows(x)

    def group_weights_like(self, x):
        r"""The weights :math:`\omega_g` as a vector of ``x``'s kind, dtype and device, in group order."""
        return self._partition.weights_like(x)

    def _check_shape(self, x, name):
        self._partition.check(x, name)

    def _norm(self, x):
        xp = namespace(x)
        return xp.sum(self._partition.weights_like(x) * self._partition.norms(x))

    def _value(self, x):
        return self.lam * self._norm(x)

    def _grad(self, x):
        groups = self._partition
        norms = groups.norms(x)
        return groups.unit(x, norms) * groups.expand(x, self.lam * groups.weights_like(x))

    def _prox(self, x, step):
        groups = self._partition
        norms = groups.norms(x)
        return groups.rescale(
            x, norms, soft_threshold(norms, scaled_threshold(step * self.lam, groups.weights_like(x)))
        )

    def _project(self, x, radius):
        if math.prod(x.shape) == 0:
            return x
        groups = self._partition
        norms = groups.norms(x)
        return groups.rescale(x, norms, project_l1_ball(norms, groups.weights_like(x), radius))

    def _dual_norm(self, x):
        xp = namespace(x)
        norms, w = self._partition.norms(x), self._partition.weights_like(x)
        ratio = norms / xp.where(w > 0, w, 1)
        return max_or_zero(xp.where((w > 0) | (norms == 0), ratio, xp.inf))

    def _project_dual(self, x, radius):
        xp = namespace(x)
        norms = self._partition.norms(x)
        bound = scaled_threshold(radius, self._partition.weights_like(x))
        return self._partition.rescale(x, norms, xp.minimum(norms, bound))
