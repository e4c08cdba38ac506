# cython: language_level=3
r"""Compiled one-pass rescaling of the rows of a tensor's matrix view (``_norm_kernels.h``).

torch computes a row's norm and rescales the row in two passes over the
tensor: every norm first, then every row. These kernels read each row from
memory once and rescale it while it is still in the L1 cache. They take a
contiguous CPU tensor of float32 or float64 seen as a row-major matrix of
``len(thresholds)`` (or ``rows``) rows, write into it in place, release the GIL and
bump the tensor's version counter (autograd then sees the write, as it sees
torch's in-place operations).
"""

from libc.stdint cimport uintptr_t

import torch

cdef extern from "_norm_kernels.h" nogil:
    void normpen_soft_threshold_rows_f32(float *x, size_t rows, size_t width, const float *thresholds)
    void normpen_soft_threshold_rows_f64(double *x, size_t rows, size_t width, const double *thresholds)
    void normpen_clip_rows_f32(float *x, size_t rows, size_t width, float radius)
    void normpen_clip_rows_f64(double *x, size_t rows, size_t width, double radius)
    void normpen_column_squares_f32(const float *x, size_t rows, size_t width, double *sums)
    void normpen_column_squares_f64(const double *x, size_t rows, size_t width, double *sums)


def _check(x, Py_ssize_t rows, name):
    """Raise unless ``x`` is a contiguous CPU float32/float64 tensor of ``rows`` rows (0 rows: empty)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
        raise ValueError(
            f"{name} must be a contiguous CPU tensor of float32 or float64, not {x.dtype} on {x.device} "
            f"(contiguous: {x.is_contiguous()}); pass {name}.contiguous() or use the torch operations"
        )
    if rows < 0 or (x.numel() % rows if rows else x.numel()):
        raise ValueError(f"{name} of {x.numel()} entries does not split into {rows} rows")


def soft_threshold_rows_(x, thresholds):
    r"""Group soft thresholding of the rows of ``x``, in place:
    :math:`x_r \leftarrow x_r \max(\|x_r\|_2 - t_r, 0) / \|x_r\|_2` (0 for a zero row).

    Parameters
    ----------
    x : Tensor
        Contiguous, CPU, float32 or float64; its rows are those of ``x.view(len(thresholds), -1)``.
    thresholds : Tensor
        :math:`t_r \ge 0`, one per row, contiguous, CPU, the dtype of ``x``.
    """
    cdef Py_ssize_t rows = thresholds.numel()
    _check(x, rows, "x")
    _check(thresholds, rows, "thresholds")
    if thresholds.dtype != x.dtype:
        raise ValueError(f"thresholds must have the dtype of x ({x.dtype}), not {thresholds.dtype}")
    if rows == 0:
        return
    cdef size_t width = x.numel() // rows
    cdef uintptr_t data = x.data_ptr(), levels = thresholds.data_ptr()
    if x.dtype == torch.float32:
        with nogil:
            normpen_soft_threshold_rows_f32(<float *>data, rows, width, <const float *>levels)
    else:
        with nogil:
            normpen_soft_threshold_rows_f64(<double *>data, rows, width, <const double *>levels)
    torch.autograd.graph.increment_version(x)


def clip_rows_(x, Py_ssize_t rows, double radius):
    r"""Each row of ``x.view(rows, -1)`` clipped to the ball of radius ``radius`` in place:
    :math:`x_r \leftarrow x_r / (\max(\|x_r\|_2, c) / c)` (rows inside the ball unchanged, bit for bit).

    Parameters
    ----------
    x : Tensor
        Contiguous, CPU, float32 or float64.
    rows : int
    radius : float
        :math:`c > 0`, rounded to the dtype of ``x``.
    """
    _check(x, rows, "x")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if rows == 0:
        return
    cdef size_t width = x.numel() // rows
    cdef uintptr_t data = x.data_ptr()
    cdef float radius32 = <float>radius
    if x.dtype == torch.float32:
        with nogil:
            normpen_clip_rows_f32(<float *>data, rows, width, radius32)
    else:
        with nogil:
            normpen_clip_rows_f64(<double *>data, rows, width, radius)
    torch.autograd.graph.increment_version(x)


def column_sums_of_squares(x, sums):
    r"""``sums`` = :math:`\sum_r x_{rj}^2` for each column :math:`j` of ``x.view(-1, len(sums))``, accumulated
    in float64 (a sum of :math:`m` rows is within :math:`(m/4 + 4)\,u_{64}` relative, then rounded once
    to the dtype of ``sums``).

    Parameters
    ----------
    x : Tensor
        Contiguous, CPU, float32 or float64.
    sums : Tensor
        One entry per column, contiguous, CPU, float64 or the dtype of ``x``; written.
    """
    cdef Py_ssize_t width = sums.numel()
    _check(sums, 1 if width else 0, "sums")
    if width == 0:
        return
    if x.numel() % width:
        raise ValueError(f"x of {x.numel()} entries does not split into columns of {width}")
    cdef Py_ssize_t rows = x.numel() // width
    _check(x, rows, "x")
    accumulator = sums if sums.dtype == torch.float64 else torch.empty(width, dtype=torch.float64)
    cdef uintptr_t data = x.data_ptr(), out = accumulator.data_ptr()
    if x.dtype == torch.float32:
        with nogil:
            normpen_column_squares_f32(<const float *>data, rows, width, <double *>out)
    else:
        with nogil:
            normpen_column_squares_f64(<const double *>data, rows, width, <double *>out)
    if accumulator is not sums:
        sums.copy_(accumulator)
