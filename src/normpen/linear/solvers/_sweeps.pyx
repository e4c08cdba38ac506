# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
r"""The compiled epochs of :mod:`normpen.linear.solvers.cd`: one cyclic pass over a working set.

Both kernels minimise the quadratic model

.. math::

    m(B) = \tfrac12 \sum_c (B_c - W_c)^\top Q_c (B_c - W_c) + g_c^\top (B_c - W_c) + P(B)

one block at a time, keeping its gradient :math:`\nabla = g + Q(B - W)` up to date
in place with one axpy per moved row of a block (:math:`\nabla_c \mathrel{+}= \delta_{rc} Q_{c,r}`,
``Q`` symmetric, so its rows are its columns). ``Q`` is read in float32 or float64;
the arithmetic is float64. The penalty enters through the constants
:meth:`normpen.linear.blocks.BlockPenalty.prox` is made of (soft thresholding, group
soft thresholding, the ridge factor), and a group-lasso block's exact minimiser through its
group weight, the ridge and the eigen-decomposition of its diagonal block of ``Q``;
``tests/linear/test_sweeps.py`` checks every update against that prox, against an exact
coordinate minimisation and against an exact block minimisation (Brent's method on the block's
secular equation).
"""

from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from scipy.linalg import cython_blas

from normpen.linear.solvers._common cimport _dgemv_t, _exact_block, _exported, _soft

cdef _dgemv_t dgemv = <_dgemv_t>_exported(cython_blas, "dgemv")

ctypedef fused real:
    float
    double


cdef inline void _axpy(Py_ssize_t k, double a, const real *x, double *y, Py_ssize_t stride) noexcept nogil:
    """:math:`y \\mathrel{+}= a x` over ``k`` entries, ``y`` read with ``stride``."""
    cdef Py_ssize_t i
    if stride == 1:
        for i in range(k):
            y[i] += a * x[i]
    else:
        for i in range(k):
            y[i * stride] += a * x[i]


cdef inline double _gather_dot(
    double acc, const double *x, const double *v, const Py_ssize_t *index, Py_ssize_t nnz
) noexcept nogil:
    """``acc`` plus :math:`\\sum_t x_t v_{i_t}`, term by term; ``index`` NULL when dense (:math:`i_t = t`)."""
    cdef Py_ssize_t t
    if index == NULL:
        for t in range(nnz):
            acc = acc + x[t] * v[t]
    else:
        for t in range(nnz):
            acc = acc + x[t] * v[index[t]]
    return acc


cdef inline const Py_ssize_t *_column(
    const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] indices, Py_ssize_t j, Py_ssize_t n,
    Py_ssize_t *start, Py_ssize_t *nnz,
) noexcept nogil:
    """Column ``j``'s first entry and length in the kernels' column layout (``rows``/``indptr``/``indices``
    of :class:`~normpen.linear.solvers.cd._ColumnReader`), and its sample indices (NULL when dense)."""
    if indptr.shape[0] == 0:
        start[0], nnz[0] = j * n, n
        return NULL
    start[0], nnz[0] = indptr[j], indptr[j + 1] - indptr[j]
    return &indices[start[0]]


def epoch_coordinates(
    const real[:, ::1] Q,
    double[::1] grad,
    double[::1] b,
    const double[::1] thresh,
    const double[::1] inv_l,
    const double[::1] shrink,
    bint positive,
):
    r"""One cyclic pass of exact coordinate minimisation, one output, blocks of one coordinate.

    Coordinate :math:`j` moves to
    :math:`S_{t_j}(b_j - \nabla_j l_j)\,s_j` with :math:`t_j = \alpha_j/Q_{jj}`,
    :math:`l_j = 1/Q_{jj}` and :math:`s_j = 1/(1 + \mu/Q_{jj})` (``thresh``,
    ``inv_l``, ``shrink``): the exact minimiser of the model along :math:`j`.
    ``b`` and ``grad`` are updated in place; returns the number of moves.
    """
    cdef Py_ssize_t j, k = b.shape[0], moves = 0
    cdef double old, new
    with nogil:
        for j in range(k):
            old = b[j]
            new = _soft(old - grad[j] * inv_l[j], thresh[j], positive) * shrink[j]
            if new != old:
                _axpy(k, new - old, &Q[j, 0], &grad[0], 1)
                b[j] = new
                moves += 1
    return moves


cdef class BlockSteps:
    r"""The per-block constants of the block sweeps (:func:`epoch_blocks`, :func:`epoch_residual_blocks`).

    Block :math:`g` is rows ``starts[g]`` to ``starts[g] + sizes[g]``. With ``weights[g]``
    :math:`= \beta_g > 0` (a group norm, no L1 part, no positivity: the group lasso, with or
    without a ridge) it moves to the exact minimiser of the model over it (:func:`_exact_block`,
    from the eigen-decompositions of its diagonal blocks of ``Q``: eigenvalues ``values``
    ``(m|1, k)``, clamped at 0, and eigenvectors ``vectors[s, start + r, i]``, row :math:`r` of
    eigenvector :math:`i`, ``(m|1, k, width)``, and ``ridge`` :math:`\mu`). Any other block, or
    one whose root is not found, takes a proximal gradient step,
    :math:`\operatorname{prox}_{P_g/L_g}(B_g - \nabla_g/L_g)`, ``steps[g]`` :math:`= 1/L_g`:
    entrywise soft thresholding at ``thresh`` (:math:`\alpha/L_g`, zero for none), then group
    soft thresholding of the whole block at ``group[g]`` (:math:`\beta_g/L_g`), then the ridge
    factor ``shrink[g]`` (:math:`1/(1 + \mu/L_g)`). Built by
    :func:`~normpen.linear.solvers.cd._block_steps`.
    """

    cdef const Py_ssize_t[::1] starts, sizes
    cdef const double[::1] steps, group, shrink, weights
    cdef const double[:, ::1] thresh, values
    cdef const double[:, :, ::1] vectors
    cdef double ridge

    def __init__(self, starts, sizes, steps, thresh, group, shrink, weights, values, vectors, double ridge):
        self.starts, self.sizes, self.steps, self.thresh = starts, sizes, steps, thresh
        self.group, self.shrink, self.weights = group, shrink, weights
        self.values, self.vectors, self.ridge = values, vectors, ridge

    cdef void step(
        self,
        const double[:, ::1] grad,
        const double[:, ::1] B,
        Py_ssize_t g,
        bint shared,
        bint positive,
        double[:, :, ::1] work,
    ) noexcept nogil:
        """Block ``g``'s new rows into ``work[1]``: its exact minimiser, else its prox gradient step."""
        cdef Py_ssize_t r, c, m = B.shape[1], start = self.starts[g], size = self.sizes[g]
        cdef double z, norm = 0.0, scale
        if self.weights[g] > 0 and _exact_block(
            self.values, self.vectors, grad, B, start, size, shared, self.weights[g], self.ridge, work
        ):
            return
        for r in range(size):
            for c in range(m):
                z = _soft(
                    B[start + r, c] - self.steps[g] * grad[start + r, c], self.thresh[start + r, c], positive
                )
                work[1, r, c] = z
                norm += z * z
        scale = self.shrink[g]
        if self.group[g] > 0:
            norm = sqrt(norm)
            scale = scale * (_soft(norm, self.group[g], False) / norm) if norm > 0 else 0.0
        for r in range(size):
            for c in range(m):
                work[1, r, c] = work[1, r, c] * scale


def epoch_blocks(
    const real[:, :, ::1] Q,
    double[:, ::1] grad,
    double[:, ::1] B,
    BlockSteps rule,
    bint positive,
    double[:, :, ::1] work,
):
    r"""One cyclic pass of block updates, any blocks, any number of outputs.

    Each block takes the step of ``rule`` (:class:`BlockSteps`: its exact minimiser, else its
    proximal gradient step). ``Q`` is ``(1, k, k)`` (one matrix for every output) or
    ``(m, k, k)``, as are the rule's eigen-decompositions; ``work`` is scratch of
    ``(2, width, m)`` at least, ``width`` the largest block's rows. ``B`` and ``grad``
    (``(k, m)``) are updated in place; returns the number of blocks that moved.
    """
    cdef Py_ssize_t g, r, c, start, size, k = B.shape[0], m = B.shape[1], moves = 0
    cdef Py_ssize_t shared = Q.shape[0] == 1
    cdef double new, delta
    cdef bint moved
    with nogil:
        for g in range(rule.starts.shape[0]):
            start, size = rule.starts[g], rule.sizes[g]
            rule.step(grad, B, g, shared, positive, work)
            moved = False
            for r in range(size):
                for c in range(m):
                    new = work[1, r, c]
                    delta = new - B[start + r, c]
                    if delta != 0:
                        B[start + r, c] = new
                        _axpy(k, delta, &Q[0 if shared else c, start + r, 0], &grad[0, c], m)
                        moved = True
            moves += moved
    return moves


def epoch_rows(
    const double[:, ::1] g,
    double[:, ::1] R,
    double[:, ::1] B,
    const double[:, ::1] rows,
    const Py_ssize_t[::1] indptr,
    const Py_ssize_t[::1] indices,
    const double[:, ::1] D,
    const double[:, ::1] V,
    const double[:, :, ::1] blocks,
    const double[:, ::1] l1,
    const double[::1] group,
    const double[::1] L,
    double ridge,
    bint positive,
    double[::1] work,
):
    r"""One cyclic pass over the rows of a Newton model whose Hessian couples the outputs.

    The model is :math:`g^\top\Delta + \tfrac12\sum_i e_i^\top H_i e_i + P(B)` with
    :math:`e_i = \Delta^\top x_i` and :math:`H_i = \operatorname{diag}(D_i) - V_iV_i^\top`
    (``D``, ``V`` class-major, ``(m, n)``); ``R`` (``(m, n)``) holds :math:`H_ie_i` and
    row :math:`j`'s gradient is :math:`g_j + \sum_i R_{\cdot i}x_{ij}`. Row :math:`j`
    then either takes one proximal gradient step of length :math:`1/L_j` when it
    has a group weight (soft thresholding at :math:`\alpha_j/L_j`, group soft
    thresholding at :math:`\beta_j/L_j`, the ridge factor :math:`1/(1 + \mu/L_j)`),
    or minimises each output :math:`c` exactly in turn on its Hessian block
    :math:`Q` (``blocks[j]``):
    :math:`b_c \leftarrow S_{\alpha_c}(Q_{cc}b_c - \nabla_c)/(Q_{cc} + \mu)`, the
    gradient following by :math:`\nabla \mathrel{+}= Q_{c\cdot}\,\delta_c`; a zero
    row whose gradient stays inside the L1 ball is left alone. A row's step
    :math:`s` moves :math:`R_{ci}` by :math:`x_{ij}(D_{ci}s_c - V_{ci}\,V_i^\top s)`.

    The rows of :math:`X` are ``rows`` (``(k, n)``, dense) when ``indptr`` is
    empty, else CSC columns: row :math:`j`'s nonzeros are ``rows[0, indptr[j]:indptr[j+1]]``
    at samples ``indices[...]``. ``work`` is scratch of at least ``n + 3m``
    entries. ``B`` and ``R`` are updated in place; returns the number of rows
    that moved.
    """
    cdef Py_ssize_t k = B.shape[0], m = B.shape[1], n = R.shape[1]
    cdef Py_ssize_t j, c, e, t, i, start, nnz, moves = 0
    cdef double step, shrink, z, norm, scale, curvature, new, move, acc
    cdef bint moved, inside
    cdef const double *x
    cdef const Py_ssize_t *index
    cdef double *sv = &work[0]
    cdef double *grad = &work[n]
    cdef double *s = &work[n + m]
    cdef double *row = &work[n + 2 * m]
    with nogil:
        for j in range(k):
            index = _column(indptr, indices, j, n, &start, &nnz)
            x = &rows[0, 0] + start
            for c in range(m):
                grad[c] = _gather_dot(g[j, c], x, &R[c, 0], index, nnz)
                row[c] = B[j, c]
                s[c] = 0.0
            moved = False
            if group[j] > 0:
                step = 1.0 / L[j]
                shrink = 1.0 / (1.0 + step * ridge)
                norm = 0.0
                for c in range(m):
                    z = _soft(row[c] - step * grad[c], step * l1[j, c], positive)
                    s[c] = z
                    norm += z * z
                norm = sqrt(norm)
                scale = (_soft(norm, step * group[j], False) / norm if norm > 0 else 0.0) * shrink
                for c in range(m):
                    new = s[c] * scale
                    s[c] = new - row[c]
                    if s[c] != 0:
                        moved = True
                    B[j, c] = new
            else:
                inside = True
                for c in range(m):
                    if row[c] != 0 or not (grad[c] <= l1[j, c] and -grad[c] <= l1[j, c]):
                        inside = False
                        break
                if inside:
                    continue
                for c in range(m):
                    curvature = blocks[j, c, c]
                    if curvature <= 0:
                        continue
                    new = _soft(curvature * row[c] - grad[c], l1[j, c], positive) / (curvature + ridge)
                    move = new - row[c]
                    if move != 0:
                        for e in range(m):
                            grad[e] += blocks[j, c, e] * move
                        row[c] = new
                        s[c] += move
                        moved = True
                for c in range(m):
                    B[j, c] = row[c]
            if not moved:
                continue
            moves += 1
            for t in range(nnz):
                i = t if index == NULL else index[t]
                acc = 0.0
                for c in range(m):
                    acc = acc + V[c, i] * s[c]
                sv[t] = acc * x[t]
            for c in range(m):
                if index == NULL:
                    for t in range(nnz):
                        R[c, t] += x[t] * (D[c, t] * s[c]) - V[c, t] * sv[t]
                else:
                    for t in range(nnz):
                        i = index[t]
                        R[c, i] += x[t] * (D[c, i] * s[c]) - V[c, i] * sv[t]
    return moves


def epoch_residual(
    const double[:, ::1] columns,
    const double[:, ::1] weighted,
    const Py_ssize_t[::1] indptr,
    const Py_ssize_t[::1] indices,
    const double[::1] g0,
    double[::1] b,
    double[::1] v,
    const double[::1] q,
    double centre,
    double hsum,
    const double[::1] thresh,
    const double[::1] inv_l,
    const double[::1] shrink,
    bint positive,
):
    r"""The pass of :func:`epoch_coordinates` on :math:`Q = X^\top HX - qq^\top/\textstyle\sum h`, not formed.

    Kept instead: the weighted residual :math:`v = HX(b - w_0)` and
    :math:`c = q^\top(b - w_0)` (``centre``), from which coordinate :math:`j`'s model
    gradient is :math:`g_{0,j} + x_j^\top v - q_jc/\sum h` (one pass over its
    column's nonzeros); its move :math:`\delta` (the same exact minimisation)
    then adds :math:`\delta\,(Hx_j)` to :math:`v` and :math:`q_j\delta` to :math:`c`
    (a second pass): the iterates of :func:`epoch_coordinates` on the formed
    :math:`Q`, at two passes over a column's nonzeros per coordinate instead of
    a row of :math:`Q`. ``q`` is empty without an intercept (no centring).

    The columns of :math:`X` and of :math:`HX` are ``columns`` and ``weighted``
    (``(k, n)``, dense) when ``indptr`` is empty, else CSC data as one row each
    with their shared ``indptr``/``indices``. ``b`` and ``v`` are updated in place;
    returns the number of moves and the new ``centre``.
    """
    cdef Py_ssize_t k = b.shape[0], n = v.shape[0], j, t, start, nnz, moves = 0
    cdef bint centred = q.shape[0] > 0
    cdef double grad, old, new, delta
    cdef const double *x
    cdef const double *hx
    cdef const Py_ssize_t *index
    with nogil:
        for j in range(k):
            index = _column(indptr, indices, j, n, &start, &nnz)
            x, hx = &columns[0, 0] + start, &weighted[0, 0] + start
            grad = _gather_dot(g0[j], x, &v[0], index, nnz)
            if centred:
                grad = grad - q[j] * (centre / hsum)
            old = b[j]
            new = _soft(old - grad * inv_l[j], thresh[j], positive) * shrink[j]
            if new != old:
                delta = new - old
                if index == NULL:
                    for t in range(nnz):
                        v[t] += delta * hx[t]
                else:
                    for t in range(nnz):
                        v[index[t]] += delta * hx[t]
                if centred:
                    centre += q[j] * delta
                b[j] = new
                moves += 1
    return moves, centre


def epoch_residual_blocks(
    const double[:, ::1] columns,
    const Py_ssize_t[::1] indptr,
    const Py_ssize_t[::1] indices,
    const double[::1] h,
    const double[::1] g0,
    double[:, ::1] B,
    double[:, ::1] grad,
    double[::1] v,
    const double[::1] q,
    double centre,
    double hsum,
    BlockSteps rule,
    bint positive,
    double[:, :, ::1] work,
    const Py_ssize_t[::1] visit,
):
    r"""The pass of :func:`epoch_blocks`, one output, on :math:`Q = X^\top HX - qq^\top/\sum h` not formed.

    As in :func:`epoch_residual`, the weighted residual :math:`v = HX(b - w_0)` and
    :math:`c = q^\top(b - w_0)` (``centre``) are kept; on reaching block :math:`g` its
    gradient :math:`\nabla_g = g_{0,g} + X_g^\top v - q_gc/\sum h` is computed into
    ``grad`` (one pass over the block's columns; ``grad`` of the other blocks is
    left as it was), the block takes the step :func:`epoch_blocks` takes from it
    (the exact minimiser from its eigen-decomposition, else the proximal gradient
    step of ``rule``, with ``B``, ``grad`` and ``thresh`` ``(k, 1)``, ``values`` ``(1, k)``,
    ``vectors`` ``(1, k, width)``), and each moved row :math:`r` adds
    :math:`\delta_r\,h \circ x_r` to :math:`v` and :math:`q_r\delta_r` to :math:`c` (a second
    pass, over the column the gradient has just read, so that only :math:`X` streams from memory;
    ``h`` the curvature weights, ``(n,)``): the iterates of :func:`epoch_blocks` on the formed
    :math:`Q`. The columns' layout is :func:`epoch_residual`'s; a dense block's columns lie side by
    side, so its gradient :math:`X_g^\top v` and its move :math:`X_g\delta` (added to :math:`v`
    times :math:`h`) are one BLAS ``dgemv`` each (scipy's; on issue 15's workload (d), blocks of 5
    columns of 1,000 samples, 15% less time at tolerance 1e-6 than the four-chain loops). When every
    sample has the same weight :math:`h_0` (least squares without sample weights) the move's
    ``dgemv`` adds :math:`h_0X_g\delta` to :math:`v` itself, without a pass of its own over
    :math:`v` (a moving block's visit about 10% faster: 1.84-2.14 -> 1.73-1.77 us on 1,000 x 2,500
    columns in blocks of 5, interleaved, loaded machine). The blocks visited are ``visit``, in that order (all of
    them, or the active ones between passes over all: :class:`~normpen.linear.solvers.cd._ResidualBlockSweep`).
    ``B``, ``grad`` and ``v`` are updated in place; returns the number of blocks that moved, the new
    ``centre`` and the largest :math:`L_g\|\Delta_g\|^2` of a block's move :math:`\Delta_g`
    (``rule.steps[g]`` :math:`= 1/L_g`).
    """
    cdef Py_ssize_t n = v.shape[0], i, g, r, j, t, start, size, cstart, nnz, moves = 0
    cdef bint centred = q.shape[0] > 0, dense = indptr.shape[0] == 0, moved, uniform = n > 0
    cdef double new, delta, square, change = 0.0, one = 1.0, zero = 0.0, weight = h[0] if n > 0 else 0.0
    cdef const double *x
    cdef const Py_ssize_t *index
    cdef int rows_blas = <int>n, cols_blas, step_blas = 1
    cdef char transposed = b"T", plain = b"N"
    cdef double *moves_x = <double *>malloc(max(n, 1) * sizeof(double))
    if moves_x == NULL:
        raise MemoryError()
    with nogil:
        for t in range(1, n):  # one weight for every sample (least squares without sample weights)
            if h[t] != weight:
                uniform = False
                break
        for i in range(visit.shape[0]):
            g = visit[i]
            start, size = rule.starts[g], rule.sizes[g]
            if dense:  # the block's columns side by side: X_g^T v in one BLAS call
                cols_blas = <int>size
                for r in range(size):
                    grad[start + r, 0] = g0[start + r]
                dgemv(&transposed, &rows_blas, &cols_blas, &one, <double *>&columns[0, 0] + start * n,
                      &rows_blas, &v[0], &step_blas, &one, &grad[start, 0], &step_blas)
            else:
                for r in range(size):
                    j = start + r
                    index = _column(indptr, indices, j, n, &cstart, &nnz)
                    grad[j, 0] = _gather_dot(g0[j], &columns[0, 0] + cstart, &v[0], index, nnz)
            if centred:
                for r in range(size):
                    grad[start + r, 0] = grad[start + r, 0] - q[start + r] * (centre / hsum)
            rule.step(grad, B, g, True, positive, work)
            moved, square = False, 0.0
            for r in range(size):
                j = start + r
                new = work[1, r, 0]
                delta = new - B[j, 0]
                work[0, r, 0] = delta
                if delta != 0:
                    B[j, 0] = new
                    if not dense:
                        index = _column(indptr, indices, j, n, &cstart, &nnz)
                        x = &columns[0, 0] + cstart
                        for t in range(nnz):
                            v[index[t]] += (delta * h[index[t]]) * x[t]
                    if centred:
                        centre += q[j] * delta
                    moved = True
                    square += delta * delta
            if moved and dense and uniform:  # v += h_0 X_g delta in one BLAS call, into v
                dgemv(&plain, &rows_blas, &cols_blas, &weight, <double *>&columns[0, 0] + start * n,
                      &rows_blas, &work[0, 0, 0], &step_blas, &one, &v[0], &step_blas)
            elif moved and dense:  # v += h o (X_g delta), X_g delta in one BLAS call
                dgemv(&plain, &rows_blas, &cols_blas, &one, <double *>&columns[0, 0] + start * n,
                      &rows_blas, &work[0, 0, 0], &step_blas, &zero, moves_x, &step_blas)
                for t in range(n):
                    v[t] += h[t] * moves_x[t]
            moves += moved
            change = max(change, square / rule.steps[g])
    free(moves_x)
    return moves, centre, change
