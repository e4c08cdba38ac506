"""What the compiled kernels (``_sweeps.pyx``, ``_coordinate_solve.pyx``, ``_gaussian_path.pyx``) share:
soft thresholding, a group-lasso block's exact minimiser (:func:`_exact_block`), and scipy's BLAS/LAPACK
read from the function pointers ``scipy.linalg.cython_blas`` / ``cython_lapack`` export (the signatures
of their .pxd files), so that building normpen needs no scipy."""

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.float cimport DBL_EPSILON
from libc.math cimport sqrt

ctypedef void (*_dgemv_t)(char*, int*, int*, double*, double*, int*, double*, int*, double*, double*, int*) noexcept nogil


cdef inline void *_exported(module, name) except NULL:
    """The C function ``name`` that the Cython module ``module`` exports (its ``__pyx_capi__`` capsule)."""
    capsule = module.__pyx_capi__[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


cdef inline double _soft(double z, double t, bint positive) noexcept nogil:
    """:math:`S_t(z)`, one-sided (negative values to 0) with ``positive``."""
    if z > t:
        return z - t
    if z < -t and not positive:
        return z + t
    return 0.0


#: Newton steps on a block's secular equation before its exact minimisation gives up (:func:`_exact_block`).
cdef enum:
    _SECULAR_ITERATIONS = 64


cdef inline bint _exact_block(
    const double[:, ::1] values,
    const double[:, :, ::1] vectors,
    const double[:, ::1] grad,
    const double[:, ::1] B,
    Py_ssize_t start,
    Py_ssize_t size,
    bint shared,
    double beta,
    double ridge,
    double[:, :, ::1] work,
) noexcept nogil:
    r"""The exact minimiser of the model over one group-lasso block (into ``work[1]``); False if not found.

    With the block's curvature :math:`Q_{gg,c} = V_c\,\mathrm{diag}(d_c)V_c^\top` per output and
    :math:`\hat c = d\circ V^\top b - V^\top\nabla_g` (the linear term with the other blocks fixed,
    in the eigenbasis, into ``work[0]``), the minimiser of
    :math:`\tfrac12 b^\top(Q_{gg} + \mu)b - c^\top b + \beta\|b\|` is 0 when
    :math:`\|\hat c\| \le \beta`, else :math:`\hat b = \hat c / (d + \mu + \beta/\rho)` where
    :math:`\rho = \|b\|` solves :math:`q(\rho) = 1`,
    :math:`q(\rho) = \big(\sum \hat c^2/(\rho(d + \mu) + \beta)^2\big)^{-1/2}`. :math:`q` is increasing
    and concave (the perspective of Moré and Sorensen's concave :math:`1/\|(D + \sigma)^{-1}\hat c\|`),
    so Newton's method from the lower bound :math:`(\|\hat c\| - \beta)/\max(d + \mu)` rises
    monotonically to the root; it stops when a step is below :math:`4\epsilon\rho` or :math:`q`
    reaches 1 to rounding. Returns False (the caller takes a proximal gradient step instead) when the
    curvature vanishes or :data:`_SECULAR_ITERATIONS` steps do not get there (a root far out along
    a near-null direction of :math:`Q_{gg}`).
    """
    cdef Py_ssize_t i, r, c, s, it, m = B.shape[1]
    cdef double total = 0.0, top = 0.0, bh, gh, v, d, den, t, h, p, q, step, rho
    cdef bint found = False
    for c in range(m):
        s = 0 if shared else c
        for i in range(size):
            bh = 0.0
            gh = 0.0
            for r in range(size):
                v = vectors[s, start + r, i]
                bh += v * B[start + r, c]
                gh += v * grad[start + r, c]
            d = values[s, start + i]
            t = d * bh - gh
            work[0, i, c] = t
            total += t * t
            if d + ridge > top:
                top = d + ridge
    total = sqrt(total)
    if total <= beta:
        for r in range(size):
            for c in range(m):
                work[1, r, c] = 0.0
        return True
    if top <= 0:
        return False
    rho = (total - beta) / top
    for it in range(_SECULAR_ITERATIONS):
        h = 0.0
        p = 0.0
        for c in range(m):
            s = 0 if shared else c
            for i in range(size):
                d = values[s, start + i] + ridge
                den = rho * d + beta
                t = work[0, i, c] / den
                t = t * t
                h += t
                p += t * d / den
        q = 1.0 / sqrt(h)
        if q >= 1.0:
            found = True
            break
        if p <= 0:
            return False
        step = (1.0 - q) / (p * q * q * q)
        rho += step
        if step <= 4 * DBL_EPSILON * rho:
            found = True
            break
    if not found:
        return False
    for c in range(m):
        s = 0 if shared else c
        for i in range(size):
            work[0, i, c] = work[0, i, c] / (values[s, start + i] + ridge + beta / rho)
        for r in range(size):
            t = 0.0
            for i in range(size):
                t += vectors[s, start + r, i] * work[0, i, c]
            work[1, r, c] = t
    return True
