"""What the compiled kernels (``_sweeps.pyx``, ``_coordinate_solve.pyx``) share: soft thresholding, and
scipy's BLAS/LAPACK read from the function pointers ``scipy.linalg.cython_blas`` / ``cython_lapack``
export (the signatures of their .pxd files), so that building normpen needs no scipy."""

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

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
