r"""The per-step tensor work of the training modes, on lists of tensors, with no host synchronisation.

A :class:`Kernel` does one penalty's work on a *bucket*: the tensors of one
rule that share an optimizer param group, a device and a dtype. The generic
:class:`Kernel` calls the penalty's own unchecked array-API kernels
(``_grad``, ``_prox``, ``_project``) tensor by tensor and writes the results
back with one ``torch._foreach_copy_``; it serves every penalty, including
ones written after this module. Where a multi-tensor (``torch._foreach_*``)
formulation exists, a subclass replaces a method by it. A kernel picks the
penalties it serves by their declared
:class:`~normpen.penalties.base.BlockForm` (``penalty.block_form()``), never by
their class, so a new penalty with the same form gets the same kernel:

- :class:`L2Kernel` (a ridge alone, :attr:`BlockForm.ridge_only`): decay
  :math:`\theta \leftarrow (1 - \eta\mu)\theta` with one ``_foreach_mul_``, the
  very operation of ``torch.optim.AdamW``;
- :class:`L1Kernel` (an L1 part alone, weighted or not): soft thresholding in
  place (``softshrink`` for a number threshold,
  :math:`\theta - \operatorname{clip}(\theta, -t, t)` in foreach ops for tensor
  thresholds), exact zeros;
- :class:`AxisGroupKernel` (a group term alone on ``"rows"`` or ``"cols"``):
  group soft thresholding;
- :class:`MaxNormKernel` (a max-norm constraint): rows (or columns) clipped to a ball;
- :class:`AnchoredKernel` (a ridge towards an anchor): the pull
  :math:`\theta \leftarrow \theta - \eta\mu F(\theta - a)`;
- :class:`ElasticNetKernel` (any other elementwise form without per-entry
  arrays): the penalty's own kernels, right on any rows of a tensor.

The step :math:`\eta` may be a Python float or a 0-d tensor (a tensor
learning rate); no kernel branches on a tensor's value.

:class:`Bucket` runs a kernel on its tensors: it skips the parameters the
optimizer skips (``grad is None``), and for float16/bfloat16 parameters it
works on float32 copies and keeps the rounding error in a float32 residual
(error feedback), so a decay :math:`\eta\lambda` below the dtype's epsilon
accumulates instead of rounding away.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from normpen.penalties.base import Penalty
from normpen.torch._norm_kernels import DTYPES as COMPILED_DTYPES
from normpen.torch._norm_kernels import clip_rows_, column_sums_of_squares, soft_threshold_rows_
from normpen.torch._norm_kernels import takes as compiled_kernels_take
from normpen.torch.distributed import all_reduce_sum_, is_sharded, local_rows, local_tensor, sum_over_ranks

__all__ = [
    "Slot",
    "Kernel",
    "L2Kernel",
    "L1Kernel",
    "AxisGroupKernel",
    "MaxNormKernel",
    "AnchoredKernel",
    "ElasticNetKernel",
    "local_piece",
    "kernel_for",
    "decays_like_weight_decay",
    "is_anchored",
    "penalty_value",
    "as_penalty_input",
    "in_layout",
    "from_penalty_input",
    "structure_axis",
    "LAYOUTS",
    "work_dtype",
    "Bucket",
]


@dataclass(eq=False)
class Slot:
    """One parameter under one rule: its name, the tensor, its penalty and the kernel serving it."""

    name: str
    param: torch.nn.Parameter
    penalty: Penalty
    kernel: Any = None
    #: How the tensor stores its matrix (:data:`LAYOUTS`).
    layout: str = "plain"

    @property
    def local(self):
        """The tensor the kernels update: the parameter, or this rank's rows of an FSDP2 parameter."""
        return local_tensor(self.param)


def local_piece(array, slot, dtype):
    """``array`` (of the parameter's global shape, or a DTensor) as this rank's rows, in ``dtype``."""
    if is_sharded(array):
        array = array.to_local()
    elif is_sharded(slot.param):
        offset, count = local_rows(slot.param)
        array = array[offset : offset + count]
    return torch.as_tensor(array, dtype=dtype, device=slot.local.device)


def work_dtype(dtype):
    """The dtype the per-step updates are computed in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


#: How a parameter stores its matrix: ``"plain"`` (output units on axis 0: Linear, convolutions),
#: ``"transposed"`` (``(in, out)``: transformers' ``Conv1D``), ``"stacked"`` (``(experts, out, in)``:
#: fused expert tensors). See :func:`normpen.torch.rules.layout_of`.
LAYOUTS = ("plain", "transposed", "stacked")


def structure_axis(penalty):
    """0 (rows) or 1 (columns) for a penalty with row or column groups (its declared form's), else None."""
    form = penalty.block_form()
    return None if form is None else form.axis


def decays_like_weight_decay(penalty):
    r"""Whether ``penalty`` is :math:`\tfrac{\mu}{2}\|x\|^2` with :math:`\mu > 0` alone (its declared form):
    its decoupled decay is ``torch.optim``'s ``weight_decay``, so the two together decay twice."""
    form = penalty.block_form()
    return form is not None and form.ridge_only and form.ridge > 0


def is_anchored(penalty):
    """Whether ``penalty`` pulls towards an anchor it holds (its declared form's): state to checkpoint."""
    form = penalty.block_form()
    return form is not None and form.anchor is not None


def as_penalty_input(penalty, tensor, layout="plain"):
    """``tensor`` as ``penalty`` sees it (:func:`in_layout` with the penalty's column groups and
    matrix-only flag)."""
    return in_layout(tensor, layout, columns=structure_axis(penalty) == 1, matrix=penalty.matrix_only)


def in_layout(tensor, layout="plain", *, columns=False, matrix=False):
    """``tensor`` with output units on axis 0 and one matrix per expert's groups.

    - ``"transposed"`` ``(in, out)``: the transpose (a view);
    - ``"stacked"`` ``(E, out, in)``: ``(E * out, in)`` (a view), so row
      groups are each expert's rows; with ``columns`` (column groups)
      ``(out, E * in)`` (a copy), each expert's columns;
    - with ``matrix`` (a matrix-only penalty) a conv kernel ``(out, in, k...)``
      as the matrix ``(out, -1)`` (one row per output channel), not the
      convolution operator.

    Entrywise tensors kept beside a parameter (an anchor, Fisher weights) take
    the defaults, so each entry meets the parameter's entry it belongs to.
    """
    if layout == "stacked":
        experts, out = tensor.shape[:2]
        if columns:
            return tensor.movedim(0, 1).reshape(out, -1)
        return tensor.reshape(experts * out, -1)
    if layout == "transposed":
        tensor = tensor.T
    if matrix and tensor.ndim > 2:
        return tensor.reshape(tensor.shape[0], -1)
    return tensor


def from_penalty_input(penalty, result, like, layout="plain"):
    """The inverse of :func:`as_penalty_input`: ``result`` in the stored shape of ``like``."""
    if layout == "stacked" and structure_axis(penalty) == 1:
        experts, out, inner = like.shape
        return result.reshape(out, experts, inner).movedim(1, 0)
    if layout == "transposed":
        return result.T
    return result.reshape(like.shape)


class _PenaltyValue(torch.autograd.Function):
    """:math:`P(x)` whose backward is the penalty's own gradient (minimum-norm subgradient).

    Differentiating the value's formula instead would give NaN where a norm
    is zero (the derivative of :math:`\\sqrt{\\cdot}` at 0) and would record
    the overflow-safe scaling of every norm in the autograd graph.
    """

    @staticmethod
    def forward(x, penalty):
        return penalty._value(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, penalty = inputs
        ctx.save_for_backward(x)
        ctx.penalty = penalty

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.penalty._grad(x), None


def penalty_value(penalty, tensor, layout="plain"):
    """Differentiable :math:`P(\\text{tensor})` (0-d) with :math:`\\nabla P` from ``penalty._grad``."""
    return _PenaltyValue.apply(as_penalty_input(penalty, tensor, layout), penalty)


def _total(values):
    """Sum of 0-d tensors (the first one's device; dtypes promote)."""
    first = values[0]
    return sum((v.to(first.device) for v in values[1:]), first)


def axpy_(xs, ys, alpha):
    """``xs[i] += alpha * ys[i]`` for every i, with ``alpha`` a number or a 0-d tensor."""
    if isinstance(alpha, torch.Tensor):
        torch._foreach_add_(xs, torch._foreach_mul(ys, alpha))
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def _negative(t):
    return torch._foreach_neg(t) if isinstance(t, (list, tuple)) else -t


def soft_threshold_(xs, t):
    r"""Soft thresholding in place: :math:`x \leftarrow x - \operatorname{clip}(x, -t, t)`.

    That is :func:`normpen._array.soft_threshold`, :math:`\operatorname{sign}(x)\max(|x| - t, 0)`, bit
    for bit (tested), as the multi-tensor in-place operation the array-API function cannot be.

    ``t`` is a number, a 0-d tensor or a list of tensors broadcastable to
    ``xs``; entries with :math:`|x| \le t` become exact zeros. A number takes
    ``softshrink`` written into ``x`` itself, one read and one write per
    entry (the same values; about 4x less memory traffic than the foreach
    form, which a tensor threshold needs: ``softshrink`` would read it to
    the host).
    """
    if isinstance(t, (int, float)):
        for x in xs:
            torch._C._nn.softshrink(x, t, out=x)
        return
    clipped = torch._foreach_clamp_max(xs, t)
    torch._foreach_clamp_min_(clipped, _negative(t))
    torch._foreach_sub_(xs, clipped)


class Kernel:
    """Generic kernel: the penalty's array-API kernels tensor by tensor, written back with foreach ops.

    A kernel serves the tensors of a rule that share :meth:`bucket_key`. Its
    per-step methods take the tensors, the data :meth:`prepare` built once
    for exactly those tensors (a bucket), and the step or radius. Subclasses
    override :meth:`accepts` (which declared forms they serve), :meth:`bucket_key`,
    :meth:`prepare` and the operations they do faster.
    """

    def __init__(self, penalty):
        #: A representative penalty of the bucket (they agree on :meth:`bucket_key`).
        self.penalty = penalty
        #: Its declared form (:meth:`~normpen.penalties.base.Penalty.block_form`), None if it has none.
        self.form = penalty.block_form()

    #: The operations (``"decay"``, ``"prox"``, ``"project"``, and ``"value"`` for the coupled and
    #: lagrangian terms) this kernel does right on the rows a rank holds of an FSDP2 parameter:
    #: elementwise ones, and group ones whose norms it all-reduces.
    row_shard_methods = frozenset()

    @classmethod
    def accepts(cls, form):
        """Whether this kernel serves a penalty of the declared ``form`` (a BlockForm, not None)."""
        return True

    @staticmethod
    def bucket_key(penalty):
        """What slots of one rule must share to be served by one kernel instance."""
        return None

    def weight_decay(self):
        """The ``weight_decay`` whose decoupled decay in ``torch.optim`` (``x *= 1 - lr * weight_decay``) is
        this kernel's :meth:`decay_` at step ``lr``, bit for bit; None if no such value is."""
        return None

    def prepare(self, slots, dtype, method):
        """The data ``<method>_`` needs on the tensors of ``slots``, computed in ``dtype``; built once.

        The generic methods need each tensor's penalty; a subclass prepares
        its own data for the methods it replaces.
        """
        return [(s.penalty, s.layout) for s in slots]

    def value(self, tensors, slots):
        """:math:`\\sum_i P_i(x_i)`, differentiable, as a 0-d tensor."""
        return _total([penalty_value(s.penalty, t, s.layout) for t, s in zip(tensors, slots, strict=True)])

    def total(self, slots):
        """:math:`\\sum_i P_i(\\theta_i)` over ``slots``' whole tensors (FSDP2 ones too), differentiable."""
        whole = [s for s in slots if not is_sharded(s.param)]
        sharded = [s for s in slots if is_sharded(s.param)]
        values = [self.value([s.param for s in whole], whole)] if whole else []
        if sharded:
            values.append(self.sharded_value([s.param.to_local() for s in sharded], sharded))
        return _total(values)

    def sharded_value(self, tensors, slots):
        """The value of FSDP2 parameters from the rows ``tensors`` this rank holds (``to_local()``: the
        gradient reaches the parameters): a kernel whose value is a sum over rows sums it over the ranks."""
        local = [
            dataclasses.replace(s, penalty=self.local_penalty(s, t.dtype))
            for t, s in zip(tensors, slots, strict=True)
        ]
        return sum_over_ranks(self.value(tensors, local))

    def local_penalty(self, slot, dtype):
        """``slot``'s penalty on the rows this rank holds: the penalty itself, unless it holds arrays of the
        parameter's shape (a subclass cuts them to the rank's rows, in ``dtype``)."""
        return slot.penalty

    def decay_factor(self, step):
        """The number :math:`c` the decay multiplies every entry by (:math:`x \\leftarrow c x`, one product),
        where the decay is only that; else None."""
        return None

    def decay_(self, tensors, data, step):
        """In place :math:`x \\leftarrow x - \\eta\\nabla P(x)`."""
        grads = [_reshaped(p, layout, "_grad", t) for t, (p, layout) in zip(tensors, data, strict=True)]
        axpy_(tensors, grads, _negative(step))

    def prox_(self, tensors, data, step):
        """In place :math:`x \\leftarrow \\operatorname{prox}_{\\eta P}(x)`."""
        results = [
            _reshaped(p, layout, "_prox", t, step) for t, (p, layout) in zip(tensors, data, strict=True)
        ]
        torch._foreach_copy_(tensors, results)

    def project_(self, tensors, data, radius):
        """In place :math:`x \\leftarrow \\Pi_{\\{\\Omega \\le r\\}}(x)`, each tensor onto its own ball."""
        results = [
            _reshaped(p, layout, "_project", t, radius) for t, (p, layout) in zip(tensors, data, strict=True)
        ]
        torch._foreach_copy_(tensors, results)


def _reshaped(penalty, layout, kernel, tensor, *args):
    """``penalty.<kernel>`` on ``tensor`` as the penalty sees it, put back in ``tensor``'s stored shape."""
    result = getattr(penalty, kernel)(as_penalty_input(penalty, tensor, layout), *args)
    return from_penalty_input(penalty, result, tensor, layout)


class L2Kernel(Kernel):
    r"""A ridge alone, :math:`\tfrac{\mu}{2}\|x\|^2` (L2): decay :math:`x \leftarrow (1 - \eta\mu)x` as AdamW
    computes it, bit for bit; its prox, the penalty's own, is elementwise (right on any rows).

    The value :math:`\tfrac{\mu}{2}\sum x\cdot x` is one dot product per
    tensor (autograd gives exactly :math:`\lambda x`, 0 at 0): no scaling,
    so exact unless entries exceed about :math:`10^{154}` (float64) or
    :math:`10^{19}` (float32), far beyond any trained weight.
    """

    row_shard_methods = frozenset({"decay", "prox", "value"})

    @classmethod
    def accepts(cls, form):
        return form.ridge_only

    @staticmethod
    def bucket_key(penalty):
        return penalty.block_form().ridge

    def value(self, tensors, slots):
        flat = [t.reshape(-1) for t in tensors]
        return (self.form.ridge / 2) * _total([torch.dot(f, f) for f in flat])

    def weight_decay(self):
        return self.form.ridge

    def decay_factor(self, step):
        return 1 - step * self.form.ridge

    def decay_(self, tensors, data, step):
        torch._foreach_mul_(tensors, self.decay_factor(step))


class L1Kernel(Kernel):
    r"""An L1 part alone (L1, weighted or not): prox by soft thresholding at :math:`\eta\lambda\omega`.

    Its data: ``None``, or the tensors :math:`\lambda\omega` of weighted L1.
    """

    row_shard_methods = frozenset({"decay", "prox", "value"})

    @classmethod
    def accepts(cls, form):
        return form.elementwise and form.ridge == 0 and form.anchor is None and form.fisher is None

    @staticmethod
    def bucket_key(penalty):
        form = penalty.block_form()
        return form.l1, form.l1_weights is None

    def prepare(self, slots, dtype, method):
        if method != "prox":
            return super().prepare(slots, dtype, method)
        if self.form.l1_weights is None:
            return None
        forms = [s.penalty.block_form() for s in slots]
        return [local_piece(f.l1_weights, s, dtype) * f.l1 for s, f in zip(slots, forms, strict=True)]

    def prox_(self, tensors, data, step):
        soft_threshold_(tensors, step * self.form.l1 if data is None else torch._foreach_mul(data, step))

    def local_penalty(self, slot, dtype):
        weights = slot.penalty.block_form().l1_weights
        if weights is None:
            return slot.penalty
        return dataclasses.replace(slot.penalty, weights=local_piece(weights, slot, dtype))


class GroupNorms:
    r"""The norms of the groups (slices) of a bucket's tensors, written into one flat buffer, and the
    rescaling of every group by its own factor.

    Tensor :math:`i`'s group norms reduce over ``dims[i]`` (kept as size-1
    axes; :math:`|x|` when there is nothing to reduce) and land in its
    segment of :attr:`flat`, so the per-group arithmetic of a whole bucket is
    a handful of operations on one vector; :meth:`views` broadcasts any such
    vector back over the tensors and :meth:`scale_` multiplies every group by
    its entry of one. For a tensor whose groups span ranks (``split[i]``:
    rows of an FSDP2 parameter, reduced over dim 0) the norm is
    :math:`\sqrt{\sum_{\text{ranks}} \sum x^2}`: the segments of these
    tensors come first in :attr:`flat`, so one all-reduce sums all their
    partial sums (one per tensor, in ``benchmarks/torch_step.py`` under FSDP2
    with 2 gloo ranks, put the column prox at 1.40 / 2.88 / 1.52 x Adam on the
    MLP / CNN / transformer, against 1.34 / 2.22 / 1.22 with one; separate
    runs at load 3.6 to 5.3).

    A reduction without dim 0 (rows) is one ``vector_norm`` per tensor. A
    reduction over dim 0 (columns) sums the squares of the columns of the
    tensor's matrix view ``(rows, width)`` (see :meth:`compute`); where a
    group holds a run of :math:`k` of these columns (a convolution's input
    channel holds its :math:`k = k_h k_w` kernel positions) the runs are
    summed by one ``sum`` per distinct :math:`k` for the whole bucket. The
    segments of these tensors come first in :attr:`flat`, so one square
    root finishes all their norms.
    """

    #: The size of the buffer the squares of a block of rows accumulate in: about the L2 cache.
    BLOCK_BYTES = 2**21

    def __init__(self, tensors, dims, dtype, split=None):
        self.dims = [tuple(d) for d in dims]
        self.split = list(split) if split is not None else [False] * len(self.dims)
        self.shapes = [
            tuple(1 if axis in reduced else size for axis, size in enumerate(t.shape))
            for t, reduced in zip(tensors, self.dims, strict=True)
        ]
        device = tensors[0].device
        counts = [math.prod(s) for s in self.shapes]
        widths = [math.prod(t.shape[1:]) for t in tensors]
        columns = [0 in reduced for reduced in self.dims]
        # per tensor, how many columns of its matrix view one group holds (0: groups without dim 0)
        runs = [w // max(n, 1) if c else 0 for c, w, n in zip(columns, widths, counts, strict=True)]
        for i, (t, reduced, run) in enumerate(zip(tensors, self.dims, runs, strict=True)):
            if run > 1 and set(reduced) != {0, *range(t.ndim - len(reduced) + 1, t.ndim)}:
                raise ValueError(
                    f"dims[{i}]={reduced} of a {t.ndim}-D tensor: groups over dims {reduced} are not runs of "
                    "columns of its matrix view; reduce over (0,) or over 0 and the trailing dims"
                )
        # the split tensors (all column tensors), then pooled tensors (runs of k > 1 columns) by k, then the
        # other column tensors, then the rest
        order = sorted(
            range(len(tensors)), key=lambda i: (not self.split[i], runs[i] <= 1, not columns[i], runs[i])
        )
        #: The tensors in the order of their segments in :attr:`flat`, and each one's first entry there.
        self.order = order
        self.offsets = [0] * len(tensors)
        for rank, i in enumerate(order):
            self.offsets[i] = sum(counts[j] for j in order[:rank])
        self.flat = torch.zeros(sum(counts), dtype=dtype, device=device)
        self.out = self.views(self.flat)
        self._squared = self.flat[: sum(n for n, c in zip(counts, columns, strict=True) if c)]
        self._partial = self.flat[: sum(n for n, split in zip(counts, self.split, strict=True) if split)]
        self._column_out, self._runs, self._repeated_views = self._pool(tensors, runs, widths, dtype)
        self.blocks = [self._block_rows(t, dtype) if c else 0 for t, c in zip(tensors, columns, strict=True)]
        size = max((b * w for b, w in zip(self.blocks, widths, strict=True)), default=0)
        self._squares = torch.empty(size, dtype=dtype, device=device)
        self._ones = torch.ones(1, max(self.blocks, default=0), dtype=dtype, device=device)
        #: Per column tensor: its matrix shape, its block, and the views of the buffer and of the ones its
        #: first block takes (built once: a step's Python work is the operations alone).
        self._column_plans = [
            self._column_plan(t.shape[0], w, b) if c else None
            for t, w, b, c in zip(tensors, widths, self.blocks, columns, strict=True)
        ]
        #: Per column tensor, its column sums as a vector (what the compiled kernel writes).
        self._column_vectors = [None if row is None else row.view(-1) for row in self._column_out]
        self._scaling = None

    def _pool(self, tensors, runs, widths, dtype):
        """The column sums' destinations and the pooled tensors' buffers.

        Returns, per tensor, the row its column sums go to (its own segment
        of :attr:`flat`, or its part of the pooled column sums; None for a
        tensor without columns); per run length :math:`k` (split and unsplit
        tensors apart), its groups' slice of :attr:`flat`, that segment, and their column sums and
        repeated factors as ``(groups, k)``; per pooled tensor, its repeated
        factors as a row over its trailing axes.
        """
        pooled = [i for i in self.order if runs[i] > 1]
        sums = torch.zeros(sum(widths[i] for i in pooled), dtype=dtype, device=self.flat.device)
        repeated = torch.empty_like(sums)
        starts = dict(zip(pooled, itertools.accumulate([widths[i] for i in pooled], initial=0), strict=False))
        rows = [self.out[i].view(1, widths[i]) if runs[i] == 1 else None for i in range(len(tensors))]
        repeated_rows = {}
        for i in pooled:
            own = slice(starts[i], starts[i] + widths[i])
            rows[i] = sums[own].view(1, widths[i])
            repeated_rows[i] = repeated[own].view((1, *tensors[i].shape[1:]))
        by_run = []
        for (_, k), members in itertools.groupby(pooled, key=lambda i: (self.split[i], runs[i])):
            members = list(members)
            first, last = members[0], members[-1]
            groups = slice(self.offsets[first], self.offsets[last] + self.out[last].numel())
            span = slice(starts[first], starts[last] + widths[last])
            by_run.append((groups, self.flat[groups], sums[span].view(-1, k), repeated[span].view(-1, k)))
        return rows, by_run, repeated_rows

    def _column_plan(self, rows, width, block):
        """What :meth:`_sums_of_squares_of_columns` takes for a ``(rows, width)`` matrix in blocks of
        ``block`` rows: the shape, the block, and the views of the buffer and of the ones for its first
        block."""
        first = min(rows, block)
        return (rows, width), block, self._squares[: first * width].view(first, width), self._ones[:, :first]

    def _block_rows(self, tensor, dtype):
        """How many rows of ``tensor`` a block holds: :attr:`BLOCK_BYTES` of them, at least one."""
        row_bytes = max(math.prod(tensor.shape[1:]), 1) * torch.finfo(dtype).bits // 8
        return max(1, min(tensor.shape[0], self.BLOCK_BYTES // row_bytes))

    def concatenate(self, values):
        """One vector like :attr:`flat` from ``values``, one 1-D tensor per tensor (its groups in row-major
        order)."""
        return torch.cat([values[i] for i in self.order])

    def views(self, flat):
        """``flat`` (one entry per group of the bucket) as one broadcastable view per tensor."""
        return [flat[o : o + math.prod(s)].view(s) for o, s in zip(self.offsets, self.shapes, strict=True)]

    def compute(self, tensors):
        """Write the group norms of ``tensors`` into :attr:`flat` and return it.

        A reduction over dim 0 (columns) is a sum of squares then a square
        root (the split groups need the sums anyway). Of a contiguous CPU
        tensor in float32 or float64 the sums are one read by a compiled kernel
        (:func:`normpen.torch._norm_kernels.column_sums_of_squares`: four rows
        at a time into float64 sums that stay in cache; not while
        ``torch.compile`` traces). On ``benchmarks/torch_step.py``'s MLP, right
        after an ``Adam(foreach=True)`` step, the column norms added 9.3% to the
        step against 19.7% with the torch operations below (2 threads, CPU time,
        30 interleaved rounds, a loaded machine: Adam 24.5 ms). Otherwise the
        squares of each
        block of rows added into a preallocated cache-sized buffer (one read
        of the tensor, nothing written to memory), whose rows are then summed
        by ``ones @ buffer`` (a matrix-vector product). On a 2048 x 2048
        float32 matrix, 2 CPU threads, CPU time: 0.56 ms, against 1.0 ms for
        the squares of the whole tensor in a buffer, 3.6 ms for
        ``square().sum(0)`` (a fresh 16 MB temporary per step) and 50 ms for
        ``vector_norm`` over dim 0 (a strided reduction); the row norms take
        0.3 ms. No faster either (2 threads, caches evicted between calls: this
        buffer 0.81 ms, the row norms 0.46): the per-column statistics of
        ``torch.batch_norm_update_stats`` (two passes) 1.06 ms, an
        inductor-compiled ``(w * w).sum(0)`` 1.06 ms (1 thread, hot caches: this buffer 0.50),
        ``einsum("ij,ij->j")`` 55 ms, blocks of 1 MiB instead of 2 the same, and
        in ``benchmarks/torch_step.py`` the tensors in reverse order (to read
        first what the optimizer's step wrote last) the same.
        """
        compiled = not torch.compiler.is_compiling()
        for tensor, reduced, out, columns, vector, plan in zip(
            tensors,
            self.dims,
            self.out,
            self._column_out,
            self._column_vectors,
            self._column_plans,
            strict=True,
        ):
            if columns is not None and compiled and compiled_kernels_take(tensor):
                column_sums_of_squares(tensor, vector)
            elif columns is not None:
                self._sums_of_squares_of_columns(tensor, columns, *plan)
            elif reduced:
                torch.linalg.vector_norm(tensor, dim=reduced, keepdim=True, out=out)
            else:
                torch.abs(tensor, out=out)
        for _, groups, sums, _ in self._runs:
            torch.sum(sums, dim=1, out=groups)
        if self._partial.numel():
            all_reduce_sum_([self._partial])
        if self._squared.numel():
            # the square root as 1 / rsqrt (0 at 0): within 1.5 units in the last place of sqrt, and not
            # MKL's vector sqrt, which starts its threads for a vector of any length (8 to 40 us a call here)
            self._squared.rsqrt_().reciprocal_()
        return self.flat

    def _sums_of_squares_of_columns(self, tensor, out, shape, block, squares, ones):
        """``out`` (a row) = the sums of the squares of the columns of ``tensor`` as a matrix ``shape``,
        accumulated ``block`` rows at a time in ``squares`` (a view of the buffer), summed by ``ones``."""
        matrix = tensor.reshape(shape)
        first = matrix[: squares.shape[0]]
        torch.mul(first, first, out=squares)
        for start in range(block, shape[0], block):
            rows = matrix[start : start + block]
            squares[: rows.shape[0]].addcmul_(rows, rows)
        torch.mm(ones, squares, out=out)

    def scale_(self, tensors, factors):
        r"""Multiply every group of ``tensors`` by its entry of ``factors`` (a vector like :attr:`flat`).

        One ``_foreach_mul_``. A factor broadcast over a pooled tensor's
        trailing axes would leave the multiplication inner runs of :math:`k`
        entries (a third of the speed on a small CNN); the pooled tensors'
        factors are first repeated to one per column (one copy per distinct
        :math:`k`), so every tensor is multiplied by a column or a row of
        factors.
        """
        if self._scaling is None or self._scaling[0] is not factors:
            views = self.views(factors)
            for i, repeated in self._repeated_views.items():
                views[i] = repeated
            copies = [(out, factors[groups].view(-1, 1).expand_as(out)) for groups, _, _, out in self._runs]
            self._scaling = (factors, views, copies)
        for out, repeated in self._scaling[2]:
            out.copy_(repeated)
        torch._foreach_mul_(tensors, self._scaling[1])


class _GroupNormsOfRows(torch.autograd.Function):
    r"""The norms :math:`\|x_g\|_2` of a tensor's groups over ``dims``, from this rank's rows ``x``.

    With ``split`` (groups spanning the ranks) the sums of squares are summed
    over the ranks before the square root. Backward: :math:`x / \|x_g\|`,
    0 for a zero group (the minimum-norm subgradient; the whole group is 0
    on every rank then), this rank's entries only: no communication.
    """

    @staticmethod
    def forward(x, dims, split):
        squares = x.square().sum(dim=dims, keepdim=True)
        if split:
            all_reduce_sum_([squares])
        return squares.sqrt_()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad_output):
        x, norms = ctx.saved_tensors
        return grad_output * x / torch.where(norms > 0, norms, 1), None, None


def _split_groups(slots, dims):
    """Per slot: its groups span ranks (an FSDP2 parameter reduced over its sharded dim 0)."""
    return [is_sharded(s.param) and 0 in d for s, d in zip(slots, dims, strict=True)]


def _local_group_weights(slot, weights, reduced):
    """The weights of the groups this rank holds: all of them when the groups span the ranks (dim 0
    reduced), else the slice of this rank's rows (dim 0 is the outermost group index)."""
    if not is_sharded(slot.param) or 0 in reduced:
        return weights
    offset, count = local_rows(slot.param)
    per_row = weights.numel() // slot.param.shape[0]
    return weights[offset * per_row : (offset + count) * per_row]


def _canonical_shape(slot):
    """The global shape of ``slot``'s tensor as its penalty sees it (:func:`as_penalty_input`)."""
    return as_penalty_input(slot.penalty, torch.empty(slot.param.shape, device="meta"), slot.layout).shape


class OnePassRows:
    r"""Which tensors of a bucket a compiled kernel rescales row by row in one pass
    (:mod:`normpen.torch._norm_kernels`), and which are left to the torch operations.

    A tensor qualifies when its groups are the rows of its row-major matrix
    view (its norms reduce over its trailing axes, at least one, and dim 0 is
    not among them: no group spans ranks), it lives on the CPU and the bucket
    works in float32 or float64. torch computes every norm in one pass and
    rescales every row in a second; the kernel reads each row from memory once
    and rescales it while it is in the L1 cache. In ``benchmarks/torch_step.py``'s
    MLP (four ``Linear`` weights, 6.3M entries), one ``Adam(foreach=True)`` step
    plus the row group soft thresholding measured 1.107 x the step alone with the
    kernel against 1.196 with the torch operations, and the max-norm clipping
    1.105 against 1.208 (2 threads, CPU time, 30 interleaved rounds, a loaded
    machine: Adam's step 23.6 ms).

    Parameters
    ----------
    tensors : list of Tensor
        The bucket's tensors (this rank's rows of an FSDP2 parameter).
    dims : list of tuple of int
        The axes each tensor's group norms reduce over.
    split : list of bool
        Per tensor, its groups span ranks.
    dtype : torch.dtype
        The dtype the bucket works in.
    enabled : bool
        False: no tensor qualifies (the torch operations for all).
    """

    def __init__(self, tensors, dims, split, dtype, enabled=True):
        compiled = enabled and dtype in COMPILED_DTYPES
        serves = [
            compiled and not spans and t.device.type == "cpu" and _trailing(reduced, t.ndim)
            for t, reduced, spans in zip(tensors, dims, split, strict=True)
        ]
        #: The indices of the tensors the kernel serves, and of the others.
        self.members = [i for i, yes in enumerate(serves) if yes]
        self.others = [i for i, yes in enumerate(serves) if not yes]
        #: Per member, the number of rows of its matrix view.
        self.rows = [math.prod(tensors[i].shape[: tensors[i].ndim - len(dims[i])]) for i in self.members]

    def serve(self, tensors):
        """Whether the kernel may run on ``tensors`` in this call: it takes every member (contiguous), and
        not while ``torch.compile`` traces the step (the kernel is opaque to it; inductor fuses the torch
        operations itself)."""
        return not torch.compiler.is_compiling() and all(
            compiled_kernels_take(tensors[i]) for i in self.members
        )

    def norms_of_others(self, tensors, dims, split, dtype):
        """The :class:`GroupNorms` of the tensors the kernel does not serve (the arguments as the
        constructor's), None where it serves all."""
        if not self.others:
            return None
        tensors, dims, split = ([seq[i] for i in self.others] for seq in (tensors, dims, split))
        return GroupNorms(tensors, dims, dtype, split)


def _trailing(dims, ndim):
    """Whether ``dims`` are the trailing axes of an ``ndim``-D tensor, at least one, leaving dim 0."""
    return 0 < len(dims) < ndim and tuple(dims) == tuple(range(ndim - len(dims), ndim))


@dataclass(eq=False)
class _GroupThreshold:
    r"""AxisGroupKernel's data: the tensors the compiled kernel serves (:class:`OnePassRows`) and the
    norms of the others (:class:`GroupNorms`, None for none); :math:`\lambda\omega` per group (the
    members' rows first, then the others' groups in the norms' order), buffers for the thresholds
    :math:`\eta\lambda\omega` (and the Python number :math:`\eta` they were last computed at,
    ``None`` for none or a tensor) and each member's view of them; the factors and
    :func:`group_soft_threshold_scale_`'s mask, denominators and 1 for the others; and the data of the
    torch operations on every tensor, for a call the kernel cannot serve (None where it serves none)."""

    rows: OnePassRows
    norms: GroupNorms | None
    scaled_weights: torch.Tensor
    thresholds: torch.Tensor
    row_thresholds: list
    group_thresholds: torch.Tensor
    factors: torch.Tensor | None
    positive: torch.Tensor | None
    denominators: torch.Tensor | None
    one: torch.Tensor
    fallback: _GroupThreshold | None
    step: float | None = None


class AxisGroupKernel(Kernel):
    r"""A group term alone on rows (axis 0) or columns (axis 1), the group lasso: prox by group soft
    thresholding.

    .. math::
        x_g \leftarrow x_g\,\frac{\max(\|x_g\|_2 - \eta\lambda\omega_g, 0)}{\|x_g\|_2}

    (:func:`normpen._array.group_soft_threshold_scale`; 0 for a zero group). The thresholds are one
    multiply (kept while the step is the same number). Where the groups are the rows of a CPU tensor's
    matrix view, a compiled kernel thresholds each row in one pass (:class:`OnePassRows`). For the
    other tensors the norms of every group land in one vector (:class:`GroupNorms`: one
    ``vector_norm`` per tensor for rows, blocked sums of squares for columns), the factors are five
    operations on preallocated vectors (:func:`group_soft_threshold_scale_`) and the rescaling one
    ``_foreach_mul_`` (:meth:`GroupNorms.scale_`): nothing per tensor but the norms, in two passes
    over the weights (every norm must be complete before its group is rescaled). The norms are plain
    sums of squares: exact unless entries exceed about :math:`10^{150}` in float64, :math:`10^{19}`
    in float32, far beyond any trained weight.
    """

    row_shard_methods = frozenset({"prox", "value"})

    @classmethod
    def accepts(cls, form):
        plain = form.l1 == 0 and form.l1_weights is None and form.ridge == 0 and form.max_norm is None
        return form.axis is not None and plain and form.anchor is None and form.fisher is None

    @staticmethod
    def bucket_key(penalty):
        return penalty.block_form().group_lam

    def prepare(self, slots, dtype, method):
        if method != "prox":
            return super().prepare(slots, dtype, method)
        return self._thresholding(slots, dtype, one_pass=True)

    def _thresholding(self, slots, dtype, one_pass):
        """The prox's data (:class:`_GroupThreshold`); ``one_pass``: the compiled kernel serves the tensors
        that qualify."""
        dims = [self._dims(s) for s in slots]
        split = _split_groups(slots, dims)
        tensors = [s.local for s in slots]
        rows = OnePassRows(tensors, dims, split, dtype, enabled=one_pass)
        norms = rows.norms_of_others(tensors, dims, split, dtype)
        weights = [self._weights(s, d, dtype) for s, d in zip(slots, dims, strict=True)]
        ordered = [weights[i] for i in rows.members]
        if norms is not None:
            ordered.append(norms.concatenate([weights[i] for i in rows.others]))
        scaled = (self.form.group_lam * torch.cat(ordered)).to(tensors[0].device)
        thresholds = torch.empty_like(scaled)
        *row_thresholds, group_thresholds = thresholds.split([*rows.rows, scaled.numel() - sum(rows.rows)])
        buffers = [None] * 3
        if norms is not None:
            flat = norms.flat
            buffers = [
                torch.empty_like(flat),
                torch.empty_like(flat, dtype=torch.bool),
                torch.empty_like(flat),
            ]
        fallback = self._thresholding(slots, dtype, one_pass=False) if rows.members else None
        return _GroupThreshold(
            rows,
            norms,
            scaled,
            thresholds,
            row_thresholds,
            group_thresholds,
            *buffers,
            scaled.new_ones(()),
            fallback,
        )

    def sharded_value(self, tensors, slots):
        r""":math:`\lambda \sum_g \omega_g \|x_g\|` of FSDP2 parameters from this rank's rows: groups inside
        the rows summed over the ranks, groups across the ranks from all-reduced sums of squares (a plain
        sum of squares: exact unless entries exceed about :math:`10^{150}` in float64)."""
        split = _split_groups(slots, [self._dims(s) for s in slots])
        within, across = [], []
        for t, s, spans in zip(tensors, slots, split, strict=True):
            dims = self._dims(s)
            weights = self._weights(s, dims, t.dtype).to(t.device)
            norms = _GroupNormsOfRows.apply(t, dims, spans)
            (across if spans else within).append(torch.dot(weights, norms.reshape(-1)))
        parts = ([sum_over_ranks(_total(within))] if within else []) + across
        return self.form.group_lam * _total(parts)

    def _dims(self, slot):
        """The dimensions one group norm of ``slot``'s tensor reduces over."""
        axis = self.form.axis
        return _group_dims(slot, axis, _all_but(slot.param.ndim, axis))

    @staticmethod
    def _weights(slot, dims, dtype):
        r""":math:`\omega_g` of the groups this rank holds, in the order of their norms."""
        unit = slot.penalty.block_form(tuple(_canonical_shape(slot))).group_weights
        return _local_group_weights(slot, torch.as_tensor(unit, dtype=dtype), dims)

    def prox_(self, tensors, data, step):
        """The thresholds are kept while the step is the same Python number (a constant learning rate):
        multiplied again only when it changes or is a tensor (whose value may have changed in place)."""
        if data.fallback is not None and not data.rows.serve(tensors):
            data = data.fallback
        if isinstance(step, torch.Tensor) or step != data.step:
            torch.mul(data.scaled_weights, step, out=data.thresholds)
            data.step = None if isinstance(step, torch.Tensor) else step
        for i, thresholds in zip(data.rows.members, data.row_thresholds, strict=True):
            soft_threshold_rows_(tensors[i], thresholds)
        if data.norms is None:
            return
        others = [tensors[i] for i in data.rows.others]
        norms = data.norms.compute(others)
        buffers = data.positive, data.denominators, data.one
        group_soft_threshold_scale_(data.factors, norms, data.group_thresholds, *buffers)
        data.norms.scale_(others, data.factors)


def group_soft_threshold_scale_(out, norms, thresholds, positive, denominators, one):
    """:func:`normpen._array.group_soft_threshold_scale` of ``norms`` (:math:`n \\ge 0`) at ``thresholds``,
    bit for bit (tested), written into ``out``: five operations on the bucket's vectors, the mask of
    nonzero norms and the denominators written into the buffers ``positive`` (bool) and
    ``denominators`` (``one`` a 0-d tensor 1 of their dtype): no temporary, where the array-API
    formula takes nine operations and seven temporaries.

    For :math:`n \\ge 0` the soft threshold :math:`\\operatorname{sign}(n)\\max(|n| - t, 0)` is
    :math:`\\max(n - t, 0)` (the same rounding; 0 at :math:`n = 0`).
    """
    torch.sub(norms, thresholds, out=out).clamp_min_(0)
    torch.gt(norms, 0, out=positive)
    out.div_(torch.where(positive, norms, one, out=denominators))


def _group_dims(slot, axis, plain):
    """The dimensions one group norm reduces over: ``plain`` for a plain layout, else those that give
    output units (``axis`` 0) or input features (``axis`` 1) of a ``(in, out)`` or ``(E, out, in)`` tensor,
    per expert."""
    if slot.layout == "transposed":
        return (axis,)
    if slot.layout == "stacked":
        return (2 - axis,)
    return plain


def _all_but(ndim, axis):
    """The dimensions of an ``ndim``-dimensional tensor other than ``axis``."""
    return tuple(d for d in range(ndim) if d != axis)


@dataclass(eq=False)
class _Clipping:
    """MaxNormKernel's data: the tensors the compiled kernel serves (:class:`OnePassRows`), the norms of
    the others (:class:`GroupNorms`, None for none), and the data of the torch operations on every
    tensor, for a call the kernel cannot serve (None where it serves none)."""

    rows: OnePassRows
    norms: GroupNorms | None
    fallback: _Clipping | None


class MaxNormKernel(Kernel):
    r"""A max-norm constraint: every row (or column) of the matrix view clipped to a ball of radius :math:`r`.

    .. math:: x_g \leftarrow x_g \big/ \max(1, \|x_g\|_2 / r)

    with :math:`r = c` for ``prox`` (the constraint's own projection) and
    ``radius`` for ``project``. Rows of the matrix view ``(out, -1)`` are the
    slices along axis 0 and its columns the positions across axis 0. Rows of
    CPU tensors are clipped in one pass by a compiled kernel
    (:class:`OnePassRows`); for the others the norms are one ``vector_norm``
    on each tensor into one :class:`GroupNorms` vector and the division one
    ``_foreach_div_``. Slices inside the ball are divided by exactly 1 (or
    left alone), unchanged bit for bit.
    """

    row_shard_methods = frozenset({"prox", "project"})

    @classmethod
    def accepts(cls, form):
        return form.max_norm is not None and form.axis is not None

    @staticmethod
    def bucket_key(penalty):
        form = penalty.block_form()
        return form.max_norm, form.axis

    def prepare(self, slots, dtype, method):
        return self._clipping(slots, dtype, one_pass=True)

    def _clipping(self, slots, dtype, one_pass):
        """The clipping's data (:class:`_Clipping`); ``one_pass``: the compiled kernel serves the tensors
        that qualify."""
        axis = self.form.axis
        plain = [_all_but(s.param.ndim, 0) if axis == 0 else (0,) for s in slots]
        dims = [_group_dims(s, axis, p) for s, p in zip(slots, plain, strict=True)]
        split = _split_groups(slots, dims)
        tensors = [s.local for s in slots]
        rows = OnePassRows(tensors, dims, split, dtype, enabled=one_pass)
        fallback = self._clipping(slots, dtype, one_pass=False) if rows.members else None
        return _Clipping(rows, rows.norms_of_others(tensors, dims, split, dtype), fallback)

    def prox_(self, tensors, data, step):
        self.project_(tensors, data, self.form.max_norm)

    def project_(self, tensors, data, radius):
        if data.fallback is not None and not data.rows.serve(tensors):
            data = data.fallback
        for i, rows in zip(data.rows.members, data.rows.rows, strict=True):
            clip_rows_(tensors[i], rows, radius)
        if data.norms is None:
            return
        others = [tensors[i] for i in data.rows.others]
        data.norms.compute(others).clamp_min_(radius).div_(radius)
        torch._foreach_div_(others, data.norms.out)


class AnchoredKernel(Kernel):
    r"""A ridge towards an anchor alone (L2-SP, EWC): decay :math:`x \leftarrow x - \eta\mu F(x - a)`.

    One bucket batches every tensor of a rule with the same :math:`\lambda`,
    each with its own anchor :math:`a` and Fisher weights :math:`F`, held on the
    tensor's device in the working dtype (the data: the two lists; this
    rank's rows of them for an FSDP2 parameter). The prox is the penalty's
    own elementwise kernel on those rows.
    """

    row_shard_methods = frozenset({"decay", "prox", "value"})

    @classmethod
    def accepts(cls, form):
        return form.elementwise and form.l1 == 0 and form.l1_weights is None and form.anchor is not None

    @staticmethod
    def bucket_key(penalty):
        form = penalty.block_form()
        return form.ridge, form.fisher is None

    def prepare(self, slots, dtype, method):
        if method == "decay":
            forms = [s.penalty.block_form() for s in slots]
            anchors = [self._stored_piece(f.anchor, s, dtype) for s, f in zip(slots, forms, strict=True)]
            if self.form.fisher is None:
                return anchors, None
            return anchors, [
                self._stored_piece(f.fisher, s, dtype) for s, f in zip(slots, forms, strict=True)
            ]
        if not any(is_sharded(s.param) for s in slots):
            return super().prepare(slots, dtype, method)
        return [(self.local_penalty(s, dtype), s.layout) for s in slots]

    def local_penalty(self, slot, dtype):
        if not is_sharded(slot.param):
            return slot.penalty
        form = slot.penalty.block_form()

        def seen(value):
            return as_penalty_input(slot.penalty, self._stored_piece(value, slot, dtype), slot.layout)

        return dataclasses.replace(
            slot.penalty,
            anchor=seen(form.anchor),
            fisher=None if form.fisher is None else seen(form.fisher),
        )

    @staticmethod
    def _stored_piece(value, slot, dtype):
        """An anchor or Fisher weight, held as the penalty sees the tensor, in the tensor's stored layout
        (:func:`from_penalty_input`: a ``Conv1D`` weight's transpose undone) and cut to this rank's rows."""
        return local_piece(from_penalty_input(slot.penalty, value, slot.param, slot.layout), slot, dtype)

    def decay_(self, tensors, data, step):
        anchors, fishers = data
        pull = torch._foreach_sub(tensors, anchors)
        if fishers is not None:
            torch._foreach_mul_(pull, fishers)
        axpy_(tensors, pull, _negative(step * self.form.ridge))


class ElasticNetKernel(Kernel):
    """An elementwise form without per-entry arrays (the elastic net) through the penalty's own kernels:
    right on any rows of a tensor."""

    row_shard_methods = frozenset({"decay", "prox", "value"})

    @classmethod
    def accepts(cls, form):
        arrays = form.l1_weights is not None or form.anchor is not None or form.fisher is not None
        return form.elementwise and not arrays


#: The specialised kernels, tried in order; the generic :class:`Kernel` serves the rest.
FAST_KERNELS = (L2Kernel, L1Kernel, AxisGroupKernel, MaxNormKernel, AnchoredKernel, ElasticNetKernel)


def kernel_for(penalty):
    """The kernel class that serves ``penalty``: the first of :data:`FAST_KERNELS` that accepts its
    declared form, else the generic :class:`Kernel` (also for a penalty without a form)."""
    form = penalty.block_form()
    if form is None:
        return Kernel
    return next((k for k in FAST_KERNELS if k.accepts(form)), Kernel)


class Bucket:
    """The tensors of one rule in one param group on one device and dtype, and the kernel work on them.

    Parameters
    ----------
    kernel : Kernel
    slots : list of Slot
    group : dict
        The optimizer param group the tensors belong to (its ``lr`` is read
        at every step, so schedulers are followed).
    method : {"decay", "prox", "project"}
        The kernel operation :meth:`apply_` runs.
    residuals : list of Tensor or None
        float32 residuals, one per slot, for float16/bfloat16 parameters.
    """

    def __init__(self, kernel, slots, group, method, residuals=None):
        self.kernel = kernel
        self.slots = slots
        self.group = group
        self.method = method
        self.operation = getattr(kernel, f"{method}_")
        self.residuals = residuals
        self.params = [s.param for s in slots]
        self.tensors = [s.local for s in slots]
        self.param_dtype, self.device = self.params[0].dtype, self.params[0].device
        self.dtype = work_dtype(self.param_dtype)
        self.data = kernel.prepare(slots, self.dtype, method)
        self._subsets = {}

    def is_stale(self):
        """The tensors were cast or moved since the bucket was built: its data and residuals no longer fit."""
        first = self.params[0]
        return first.dtype != self.param_dtype or first.device != self.device

    def live(self):
        """The tensors, kernel data and residuals of the parameters the optimizer updates in this step,
        those with a gradient (AdamW skips the others too, decay included), or None for none. The kernel
        data of a subset is built on its first use and kept."""
        if all(p.grad is not None for p in self.params):
            return self.tensors, self.data, self.residuals
        live = tuple(i for i, p in enumerate(self.params) if p.grad is not None)
        return self._subset(live) if live else None

    def recordable_factor(self, step):
        """The factor of a decay that :func:`~normpen.torch._norm_kernels.scale_recording_` can make and
        record (a decay that only scales, by a Python number, contiguous CPU float32 tensors without
        residuals, not while ``torch.compile`` traces), else None."""
        if self.method != "decay" or self.residuals is not None or isinstance(step, torch.Tensor):
            return None
        if torch.compiler.is_compiling() or self.param_dtype != torch.float32:
            return None
        if not all(compiled_kernels_take(t) for t in self.tensors):
            return None
        return self.kernel.decay_factor(step)

    def apply_(self, argument):
        """Run the kernel operation with ``argument`` (step or radius) on the live tensors (:meth:`live`)."""
        live = self.live()
        if live is None:
            return
        params, data, residuals = live
        with torch.no_grad():
            if residuals is None:
                self.operation(params, data, argument)
            else:
                _with_residuals(self.operation, params, data, argument, residuals)

    def _subset(self, live):
        if live not in self._subsets:
            slots = [self.slots[i] for i in live]
            residuals = None if self.residuals is None else [self.residuals[i] for i in live]
            data = self.kernel.prepare(slots, self.dtype, self.method)
            self._subsets[live] = ([s.local for s in slots], data, residuals)
        return self._subsets[live]


def _with_residuals(operation, params, data, argument, residuals):
    r"""``operation`` on float32 :math:`w = \theta + r`; then :math:`\theta = w`, :math:`r = w - \theta`.

    Error feedback: :math:`\theta + r` carries the float32 result, so
    increments below half a unit in the last place of the low-precision
    :math:`\theta` accumulate in :math:`r` until they move :math:`\theta`.
    """
    work = torch._foreach_add([p.float() for p in params], residuals)
    operation(work, data, argument)
    torch._foreach_copy_(params, work)
    torch._foreach_sub_(work, [p.float() for p in params])
    torch._foreach_copy_(residuals, work)
