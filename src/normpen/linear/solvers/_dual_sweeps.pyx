# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
r"""The compiled epoch of :mod:`normpen.linear.solvers.svm`'s dual coordinate descent.

One pass over the samples in ``order`` of exact coordinate minimisation of the dual

.. math::

    \tfrac12\alpha^\top(\tilde Z\tilde Z^\top + D)\alpha - \textstyle\sum_i\alpha_i
    + \beta\, y^\top\alpha + \tfrac\rho2 (y^\top\alpha)^2,
    \qquad 0 \le \alpha_i \le U_i,

on the implicitly centred design :math:`\tilde x_i = x_i - c`
(:class:`~normpen.linear.solvers.svm._DualCoordinateDescent`). The state is
:math:`u = \sum_i \alpha_i y_i x_i` (updated in place, one axpy of row :math:`i`
per move), :math:`s = y^\top\alpha` and :math:`u^\top c`; with :math:`w = u - s c`
and the running intercept :math:`b' = \beta + \rho s` the coordinate gradient is

.. math::

    G_i = y_i(\tilde x_i^\top w + b') - 1 + D_{ii}\alpha_i
        = y_i\big(x_i^\top u + s\,(\|c\|^2 + \rho - x_i^\top c) - u^\top c + \beta\big) - 1 + D_{ii}\alpha_i,

one dot with row :math:`i` (``shift`` :math:`= \|c\|^2 + \rho - Xc` and
``xc`` :math:`= Xc` are precomputed). Its projected gradient :math:`P_i` is
:math:`\min(G_i, 0)` at :math:`\alpha_i = 0`, :math:`\max(G_i, 0)` at
:math:`\alpha_i = U_i` and :math:`G_i` inside; a variable at its lower bound with
:math:`G_i >` ``shrink_above``, or at its upper bound with :math:`G_i <`
``shrink_below``, is skipped and left out of the kept indices (Hsieh et al.,
ICML 2008, Algorithm 3). Otherwise, when :math:`|P_i| > 10^{-14}`,
:math:`\alpha_i \leftarrow \min(\max(\alpha_i - G_i/\bar Q_{ii}, 0), U_i)`
(``inv_q`` :math:`= 1/\bar Q_{ii}`, :math:`\bar Q_{ii} = \|\tilde x_i\|^2 + \rho + D_{ii}`),
and with :math:`\delta = (\alpha_i^{new} - \alpha_i) y_i`: :math:`u \mathrel{+}= \delta x_i`,
:math:`u^\top c \mathrel{+}= \delta\, x_i^\top c`, :math:`s \mathrel{+}= \delta`.

Rows are read from a C-contiguous float64 array (:func:`epoch_dense`) or from
CSR arrays (:func:`epoch_sparse`); both run :func:`_run`. The arithmetic is
float64; ``tests/linear/test_dual_sweeps.py`` replays an epoch from the centred
form above and compares.
"""

from libc.math cimport INFINITY

import numpy as np

ctypedef fused index:
    int
    long long


cdef inline double _dot(const double *x, const index *columns, Py_ssize_t k, const double *u) noexcept nogil:
    """:math:`x^\\top u` over ``k`` entries, ``u`` read at ``columns`` (contiguous if NULL).

    A contiguous dot keeps four partial sums: one running sum is a chain of dependent additions,
    each waiting for the last (about 4x slower on rows of hundreds of entries); the rounding
    bound is that of any summation order (Higham 2002, eq. 4.4).
    """
    cdef Py_ssize_t j, tail = k - k % 4
    cdef double total = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0
    if columns != NULL:
        for j in range(k):
            total += x[j] * u[columns[j]]
        return total
    for j in range(0, tail, 4):
        total += x[j] * u[j]
        t1 += x[j + 1] * u[j + 1]
        t2 += x[j + 2] * u[j + 2]
        t3 += x[j + 3] * u[j + 3]
    for j in range(tail, k):
        total += x[j] * u[j]
    return (total + t1) + (t2 + t3)


cdef inline void _axpy(Py_ssize_t k, double a, const double *x, const index *columns, double *u) noexcept nogil:
    """:math:`u \\mathrel{+}= a x` over ``k`` entries, ``u`` written at ``columns`` (contiguous if NULL)."""
    cdef Py_ssize_t j
    if columns == NULL:
        for j in range(k):
            u[j] += a * x[j]
    else:
        for j in range(k):
            u[columns[j]] += a * x[j]


cdef tuple _run(
    const double *data,
    const index *columns,
    const index *indptr,
    Py_ssize_t width,
    const double[:, ::1] samples,
    double[::1] alpha,
    double[::1] u,
    const Py_ssize_t[::1] order,
    double s,
    double uc,
    double center,
    double shrink_above,
    double shrink_below,
):
    """The pass of the module docstring; row ``i`` is ``data[indptr[i]:indptr[i+1]]`` at ``columns``
    (CSR) or, with ``indptr`` NULL, the ``width`` entries from ``data + i * width`` (dense).
    """
    cdef Py_ssize_t t, i, start, k, n = samples.shape[0], n_kept = 0
    cdef double ai, yi, grad, pg, new, step, pg_max = -INFINITY, pg_min = INFINITY
    cdef const double *x
    cdef const index *cols = NULL
    if samples.shape[1] != 6 or alpha.shape[0] != n:
        raise ValueError(f"samples must be ({alpha.shape[0]}, 6), one row per alpha, got "
                         f"({samples.shape[0]}, {samples.shape[1]})")
    for t in range(order.shape[0]):
        if not 0 <= order[t] < n:
            raise ValueError(f"order must hold sample indices in [0, {n}), got {order[t]}")
    kept_array = np.empty(order.shape[0], dtype=np.intp)
    cdef Py_ssize_t[::1] kept = kept_array
    with nogil:
        for t in range(order.shape[0]):
            i = order[t]
            if indptr == NULL:
                x, k = data + i * width, width
            else:
                start, k = indptr[i], indptr[i + 1] - indptr[i]
                x, cols = data + start, columns + start
            # the columns of samples: y, U, D, 1/Q, shift, xc
            ai, yi = alpha[i], samples[i, 0]
            grad = yi * (_dot(x, cols, k, &u[0]) + s * samples[i, 4] - uc + center) - 1.0 + samples[i, 2] * ai
            if ai == 0.0:
                if grad > shrink_above:
                    continue
                pg = grad if grad < 0.0 else 0.0
            elif ai == samples[i, 1]:
                if grad < shrink_below:
                    continue
                pg = grad if grad > 0.0 else 0.0
            else:
                pg = grad
            kept[n_kept] = i
            n_kept += 1
            if pg > pg_max:
                pg_max = pg
            if pg < pg_min:
                pg_min = pg
            if pg > 1e-14 or pg < -1e-14:
                new = ai - grad * samples[i, 3]
                if new < 0.0:
                    new = 0.0
                if new > samples[i, 1]:
                    new = samples[i, 1]
                step = (new - ai) * yi
                alpha[i] = new
                _axpy(k, step, x, cols, &u[0])
                uc += step * samples[i, 5]
                s += step
    return pg_max, pg_min, kept_array[:n_kept], s, uc


def epoch_dense(
    const double[:, ::1] X,
    const double[:, ::1] samples,
    double[::1] alpha,
    double[::1] u,
    const Py_ssize_t[::1] order,
    double s,
    double uc,
    double center,
    double shrink_above,
    double shrink_below,
):
    r"""One pass over ``order`` with the rows of ``X`` (C-contiguous float64, ``(n, p)``).

    ``samples`` is ``(n, 6)``, per sample :math:`y_i, U_i, D_{ii}, 1/\bar Q_{ii}`,
    ``shift`` :math:`_i` and :math:`x_i^\top c`; ``alpha`` (``n``) and ``u`` (``p``) are
    updated in place, ``s`` is :math:`y^\top\alpha`, ``uc`` :math:`u^\top c`, ``center``
    :math:`\beta` (module docstring). Returns ``(pg_max, pg_min, kept, s, uc)``: the
    extreme projected gradients over the kept variables, the kept indices in visiting
    order (an ``intp`` array) and the updated :math:`y^\top\alpha` and :math:`u^\top c`.
    """
    if X.shape[0] != alpha.shape[0] or X.shape[1] != u.shape[0]:
        raise ValueError(f"X must be (len(alpha), len(u)) = ({alpha.shape[0]}, {u.shape[0]}), "
                         f"got ({X.shape[0]}, {X.shape[1]})")
    return _run(&X[0, 0] if X.shape[0] * X.shape[1] else NULL, <const int *> NULL, <const int *> NULL,
                X.shape[1], samples, alpha, u, order, s, uc, center, shrink_above, shrink_below)


def epoch_sparse(
    const double[::1] data,
    const index[::1] indices,
    const index[::1] indptr,
    const double[:, ::1] samples,
    double[::1] alpha,
    double[::1] u,
    const Py_ssize_t[::1] order,
    double s,
    double uc,
    double center,
    double shrink_above,
    double shrink_below,
):
    """:func:`epoch_dense` with the rows of a CSR matrix of ``len(u)`` columns.

    ``data``, ``indices`` and ``indptr`` must be those of a valid (scipy-checked) CSR
    matrix with ``len(alpha)`` rows and ``len(u)`` columns: the column indices are
    not checked again here, on every epoch.
    """
    if indptr.shape[0] != alpha.shape[0] + 1 or indices.shape[0] != data.shape[0]:
        raise ValueError(f"indptr must have len(alpha) + 1 = {alpha.shape[0] + 1} entries and indices "
                         f"as many as data, got {indptr.shape[0]}, {indices.shape[0]} and {data.shape[0]}")
    if alpha.shape[0] and not 0 <= indptr[0] <= indptr[alpha.shape[0]] <= data.shape[0]:
        raise ValueError("indptr must run from 0 to at most len(data): pass a CSR matrix's arrays")
    if data.shape[0] == 0:
        return _run(<const double *> NULL, <const index *> NULL, &indptr[0], u.shape[0], samples, alpha, u,
                    order, s, uc, center, shrink_above, shrink_below)
    return _run(&data[0], &indices[0], &indptr[0], u.shape[0], samples, alpha, u, order, s, uc, center,
                shrink_above, shrink_below)
