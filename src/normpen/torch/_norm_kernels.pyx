# cython: language_level=3
r"""Compiled one-pass rescaling of the rows of a tensor's matrix view, and its column sums of squares
(``_norm_kernels.h``).

torch computes a row's norm and rescales the row in two passes over the
tensor: every norm first, then every row. These kernels read each row from
memory once and rescale it while it is still in the L1 cache. They take a
contiguous CPU tensor of float32 or float64 seen as a row-major matrix of
``len(thresholds)`` (or ``rows``) rows, write into it in place, release the GIL and
bump the tensor's version counter (autograd then sees the write, as it sees
torch's in-place operations).

A tensor of twice :data:`PARALLEL_ENTRIES` entries or more is cut into blocks of
rows, one per thread of ``torch.get_num_threads()`` (at most one per
:data:`PARALLEL_ENTRIES` entries), run on a pool of that many threads: the
kernels hold no GIL, so they run side by side, and the wall time of a large
tensor follows torch's own multi-threaded operations. The pool is made again
in a forked child (threads do not survive ``fork``) and when the thread count
changes.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from libc.stdint cimport int8_t, int16_t, uintptr_t

import torch

cdef extern from "_norm_kernels.h" nogil:
    void normpen_soft_threshold_rows_f32(float *x, size_t rows, size_t width, const float *thresholds)
    void normpen_soft_threshold_rows_f64(double *x, size_t rows, size_t width, const double *thresholds)
    void normpen_clip_rows_f32(float *x, size_t rows, size_t width, float radius)
    void normpen_clip_rows_f64(double *x, size_t rows, size_t width, double radius)
    void normpen_column_squares_f32(const float *x, size_t rows, size_t width, double *sums)
    void normpen_column_squares_f64(const double *x, size_t rows, size_t width, double *sums)
    int normpen_scale_recording_i8(float *x, size_t n, float factor, int8_t *record)
    int normpen_scale_recording_i16(float *x, size_t n, float factor, int16_t *record)
    void normpen_restore_i8(float *x, size_t n, const int8_t *record)
    void normpen_restore_i16(float *x, size_t n, const int16_t *record)

#: A block of rows run on a thread of its own holds at least this many entries: 4 MiB of float32, about
#: 0.5 ms of one thread's work here, so that handing it to a pool thread (tens of microseconds of CPU
#: time) stays a few percent. With 2^18, the CPU time of ``benchmarks/torch_step.py``'s transformer
#: rows rose from about AdamW's to 1.09 x AdamW (one 20-round run, 2 threads).
PARALLEL_ENTRIES = 2**20

#: (process id, threads, executor) of the pool the blocks run on, made on first use.
_pool = None


def _row_blocks(Py_ssize_t rows, Py_ssize_t width):
    """``[start, stop)`` ranges of rows, one per thread: as many as ``torch.get_num_threads()``, at most one
    per :data:`PARALLEL_ENTRIES` entries, at least one."""
    blocks = max(1, min(torch.get_num_threads(), rows, rows * width // PARALLEL_ENTRIES))
    bounds = [rows * i // blocks for i in range(blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _run(work, blocks):
    """The values of ``work(start, stop)`` for every block: in this thread for one, else on the pool
    (errors re-raised)."""
    global _pool
    if len(blocks) == 1:
        return [work(*blocks[0])]
    threads = torch.get_num_threads()
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)  # its idle threads end (a forked child has none to end)
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="normpen-rows"))
    return list(_pool[2].map(lambda block: work(*block), blocks))


def _threshold_block(uintptr_t data, uintptr_t levels, size_t width, bint single, size_t start, size_t stop):
    """Rows ``start:stop`` of :func:`soft_threshold_rows_`."""
    with nogil:
        if single:
            normpen_soft_threshold_rows_f32(
                <float *>data + start * width, stop - start, width, <const float *>levels + start
            )
        else:
            normpen_soft_threshold_rows_f64(
                <double *>data + start * width, stop - start, width, <const double *>levels + start
            )


def _clip_block(uintptr_t data, double radius, size_t width, bint single, size_t start, size_t stop):
    """Rows ``start:stop`` of :func:`clip_rows_`."""
    cdef float radius32 = <float>radius
    with nogil:
        if single:
            normpen_clip_rows_f32(<float *>data + start * width, stop - start, width, radius32)
        else:
            normpen_clip_rows_f64(<double *>data + start * width, stop - start, width, radius)


def _squares_block(uintptr_t data, uintptr_t partials, size_t width, bint single, blocks, size_t start, size_t stop):
    """The column sums of rows ``start:stop`` of :func:`column_sums_of_squares`, into row ``k`` of the
    partial sums (``blocks[k]`` is this block)."""
    cdef size_t k = blocks.index((start, stop))
    cdef double *sums = <double *>partials + k * width
    with nogil:
        if single:
            normpen_column_squares_f32(<const float *>data + start * width, stop - start, width, sums)
        else:
            normpen_column_squares_f64(<const double *>data + start * width, stop - start, width, sums)


#: The dtypes the kernels compute in.
DTYPES = (torch.float32, torch.float64)


def takes(tensor):
    """Whether the kernels take ``tensor``: contiguous, on the CPU, of one of :data:`DTYPES`."""
    return tensor.device.type == "cpu" and tensor.dtype in DTYPES and tensor.is_contiguous()


def _check(x, Py_ssize_t rows, name):
    """Raise unless ``x`` is a contiguous CPU float32/float64 tensor of ``rows`` rows (0 rows: empty)."""
    if not takes(x):
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
    work = partial(_threshold_block, x.data_ptr(), thresholds.data_ptr(), width, x.dtype == torch.float32)
    _run(work, _row_blocks(rows, width))
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
    _run(partial(_clip_block, x.data_ptr(), radius, width, x.dtype == torch.float32), _row_blocks(rows, width))
    torch.autograd.graph.increment_version(x)


def column_sums_of_squares(x, sums):
    r"""``sums`` = :math:`\sum_r x_{rj}^2` for each column :math:`j` of ``x.view(-1, len(sums))``, accumulated
    in float64 (a sum of :math:`m` rows over :math:`b` blocks is within :math:`(m/4 + 4 + b)\,u_{64}`
    relative, then rounded once to the dtype of ``sums``).

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
    blocks = _row_blocks(rows, width)
    one = len(blocks) == 1 and sums.dtype == torch.float64
    partials = sums if one else torch.empty(len(blocks), width, dtype=torch.float64)
    work = partial(_squares_block, x.data_ptr(), partials.data_ptr(), width, x.dtype == torch.float32, blocks)
    _run(work, blocks)
    if not one:
        sums.copy_(partials.sum(dim=0))


#: The record types of :func:`scale_recording_`, and the largest :math:`1 - c` (``c`` the float32 factor)
#: each holds: a decayed entry moves by at most :math:`(1 - c)|x| + \tfrac12\mathrm{ulp}` and
#: :math:`|x| < 2^{24}` ulps of its binade, twice that where the result falls into the binade below, so
#: by at most :math:`2^{25}(1 - c) + 1` float32 steps, which must stay within the type's range.
RECORD_LIMITS = {torch.int8: (127 - 1) / 2**25, torch.int16: (32767 - 1) / 2**25}


def record_dtype(double factor):
    """The narrowest record type (:data:`RECORD_LIMITS`) that holds the steps of a decay by ``factor``
    (rounded to float32), or None where none does."""
    cdef float single = <float>factor
    return next((dtype for dtype, limit in RECORD_LIMITS.items() if 0 <= 1 - single <= limit), None)


def _scale_block(uintptr_t data, float factor, uintptr_t record, bint narrow, size_t start, size_t stop):
    """Entries ``start:stop`` of :func:`scale_recording_`; returns 1 where a difference did not fit."""
    cdef int overflow
    with nogil:
        if narrow:
            overflow = normpen_scale_recording_i8(<float *>data + start, stop - start, factor, <int8_t *>record + start)
        else:
            overflow = normpen_scale_recording_i16(
                <float *>data + start, stop - start, factor, <int16_t *>record + start
            )
    return overflow


def _restore_block(uintptr_t data, uintptr_t record, bint narrow, size_t start, size_t stop):
    """Entries ``start:stop`` of :func:`restore_`."""
    with nogil:
        if narrow:
            normpen_restore_i8(<float *>data + start, stop - start, <const int8_t *>record + start)
        else:
            normpen_restore_i16(<float *>data + start, stop - start, <const int16_t *>record + start)


def _check_record(x, record):
    """Raise unless ``x`` is a contiguous CPU float32 tensor and ``record`` a contiguous CPU int8 or int16
    tensor of as many entries."""
    _check(x, 1 if x.numel() else 0, "x")
    if x.dtype != torch.float32:
        raise ValueError(f"x must be float32, not {x.dtype}: a float64 decay's steps do not fit a record")
    if record.device.type != "cpu" or record.dtype not in RECORD_LIMITS or not record.is_contiguous():
        raise ValueError(f"record must be a contiguous CPU int8 or int16 tensor, not {record.dtype} on {record.device}")
    if record.numel() != x.numel():
        raise ValueError(f"record has {record.numel()} entries, x has {x.numel()}")


def scale_recording_(x, double factor, record):
    r"""``x *= factor`` in float32 (torch's product by a scalar, bit for bit), keeping in ``record`` what
    :func:`restore_` undoes it with: the difference of each entry's bit pattern before and after.

    Parameters
    ----------
    x : Tensor
        Contiguous, CPU, float32; written.
    factor : float
        :math:`c`, rounded to float32; :math:`1 - c` at most :data:`RECORD_LIMITS` of the record's type.
    record : Tensor
        Contiguous, CPU, int8 or int16, as many entries as ``x``; written.

    Returns
    -------
    bool
        True where every difference fitted (always for finite and infinite entries within the limit; a
        signalling NaN, turned quiet by the product, may not fit and comes back quiet).
    """
    _check_record(x, record)
    cdef float single = <float>factor
    if not 0 <= 1 - single <= RECORD_LIMITS[record.dtype]:
        raise ValueError(f"1 - factor = {1 - single} is outside [0, {RECORD_LIMITS[record.dtype]}] for {record.dtype}")
    work = partial(_scale_block, x.data_ptr(), single, record.data_ptr(), record.dtype == torch.int8)
    blocks = _row_blocks(x.numel(), 1)
    fitted = not any(_run(work, blocks))
    torch.autograd.graph.increment_version(x)
    return fitted


def restore_(x, record):
    """``x`` as it was before :func:`scale_recording_` wrote it and ``record``, bit for bit."""
    _check_record(x, record)
    _run(partial(_restore_block, x.data_ptr(), record.data_ptr(), record.dtype == torch.int8), _row_blocks(x.numel(), 1))
    torch.autograd.graph.increment_version(x)
