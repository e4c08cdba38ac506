# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
r"""One compiled working-set solve of :mod:`normpen.linear.solvers.cd`: coordinates, one output.

:func:`minimize_coordinates` minimises the quadratic model

.. math::

    m(b) = \tfrac12 (b - w)^\top Q (b - w) + g^\top (b - w) + \sum_j \alpha_j |b_j|
           + \tfrac\mu2 \|b\|^2 \;\big[+\ \iota_{b \ge 0}\big]

(blocks of one coordinate: the lasso, weighted lasso, elastic net, positivity and unpenalized
coordinates, :math:`\alpha_j = 0`) by the loop :func:`normpen.linear.solvers.cd._minimize_model` runs
in Python for the block sweeps, with face steps added, all of it in one call: epochs of
``_sweeps.epoch_coordinates``, Anderson extrapolation in the metric
of ``Q`` kept when it lowers the model beyond rounding, the gradient recomputed from ``Q`` at every
extrapolation, steps on the face of the signs (a pivoted Cholesky factorisation, LAPACK ``dpstrf``,
kept while the support stays, its null space followed to the first zero; Jacobi-preconditioned
conjugate gradients on large faces), the stop test after every epoch (the working set's exact duality
gap, or the fall of the prox-gradient residual of a Newton model) and the closing polish on the support.
The rules shared with the block sweeps' loop in ``cd.py`` are the ones documented there
(:func:`~normpen.linear.solvers.cd._lowers_model`,
:class:`~normpen.linear.solvers.cd._LeastSquaresGap`, :class:`~normpen.linear.solvers.cd._Anderson`);
the face steps and the polish live only here. The constants come from ``cd`` as arguments.
A working-set solve of issue 15's 200 x 1000 lasso took about 1,000 Python-level calls in a Python
loop: here it is one.

``Q`` is formed (its rows read in place), or left implicit on wide sparse working sets: then an
operator object (``cd._ResidualSweep``) makes the epochs (``_sweeps.epoch_residual``), the products,
the gradient at a rebase and the face Hessians, one Python call each, where an epoch costs passes
over the working set's columns (:func:`minimize_coordinates`).
"""

import numpy as np

from libc.float cimport DBL_EPSILON
from libc.math cimport INFINITY, fabs, isfinite, log, sqrt
from scipy.linalg import cython_blas, cython_lapack

from normpen.linear.solvers._common cimport _dgemv_t, _exported, _soft
from normpen.linear.solvers._sweeps import epoch_coordinates

# the BLAS and LAPACK routines only this module calls, with the signatures of scipy's .pxd files, read by
# _common._exported
ctypedef void (*_dtrsm_t)(char*, char*, char*, char*, int*, int*, double*, double*, int*, double*, int*) noexcept nogil
ctypedef void (*_dgeqrf_t)(int*, int*, double*, int*, double*, double*, int*, int*) noexcept nogil
ctypedef void (*_dgesv_t)(int*, int*, double*, int*, int*, double*, int*, int*) noexcept nogil
ctypedef void (*_dorgqr_t)(int*, int*, int*, double*, int*, double*, double*, int*, int*) noexcept nogil
ctypedef void (*_dpotrs_t)(char*, int*, int*, double*, int*, double*, int*, int*) noexcept nogil
ctypedef void (*_dpstrf_t)(char*, int*, double*, int*, int*, int*, double*, double*, int*) noexcept nogil



cdef _dgemv_t dgemv = <_dgemv_t>_exported(cython_blas, "dgemv")
cdef _dtrsm_t dtrsm = <_dtrsm_t>_exported(cython_blas, "dtrsm")
cdef _dgeqrf_t dgeqrf = <_dgeqrf_t>_exported(cython_lapack, "dgeqrf")
cdef _dgesv_t dgesv = <_dgesv_t>_exported(cython_lapack, "dgesv")
cdef _dorgqr_t dorgqr = <_dorgqr_t>_exported(cython_lapack, "dorgqr")
cdef _dpotrs_t dpotrs = <_dpotrs_t>_exported(cython_lapack, "dpotrs")
cdef _dpstrf_t dpstrf = <_dpstrf_t>_exported(cython_lapack, "dpstrf")

#: Faces whose coordinates changed (left or entered) by at most this share of their size since the last
#: factored face update its factor (:meth:`FaceFactor.updated`) instead of factoring afresh.
cdef double _UPDATE_SHARE = 0.1

#: Stop tests (:func:`minimize_coordinates`'s ``stop``).
cdef enum:
    _GAP = 0
    _RESIDUAL = 1
GAP, RESIDUAL = _GAP, _RESIDUAL


cdef inline double _sign(double x) noexcept nogil:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


cdef class FaceFactor:
    r"""A face Hessian :math:`H = Q_{SS} + \mu I` (positive semidefinite) factored: :meth:`solution`
    minimises :math:`\tfrac12 u^\top H u - r^\top u` for any :math:`r`. The one face factorisation of
    ``cd``: this solve's faces, and through :meth:`solution` the faces ``cd`` forms itself (an
    implicit ``Q``'s, the multinomial's coupled model's; ``S`` all of a formed ``H``, :math:`\mu = 0`).

    A Cholesky factorisation with diagonal pivoting (LAPACK ``dpstrf``) stops at
    rank :math:`k` where every remaining pivot is below ``cutoff`` times the
    largest diagonal entry, the level at which a computed :math:`H` cannot be
    told from a singular one. The columns left out span the null space
    :math:`N = [-L_{11}^{-\top}L_{21}^\top;\ I]` (in pivoted order), kept as an
    orthonormal basis (``dgeqrf``/``dorgqr``). A face close to the last one factored
    updates its factor instead (:meth:`updated`); on issue 15's degree-3 diabetes path
    three face solves in four repeat the last support, which keeps its factor.
    """

    cdef Py_ssize_t size, rank, nullity
    cdef readonly bint from_update  # factored by updated()
    cdef double cutoff
    cdef object support
    cdef double[::1, :] factor
    cdef double[::1, :] nullspace
    cdef int[::1] pivots
    cdef double[::1] ordered, basic, flat, coefficients

    def __init__(self, const double[:, ::1] Q, support, double ridge, double cutoff, FaceFactor previous=None):
        cdef const Py_ssize_t[::1] S = support
        cdef Py_ssize_t s = S.shape[0], a, c
        cdef int n = <int>s, rank = 0, info = 0
        cdef double scale = 0.0, tol
        self.support, self.size, self.cutoff, self.rank = support, s, cutoff, 0
        # one allocation: the factor's s columns, then the four vectors and dpstrf's work (2s)
        cdef double[::1, :] columns = np.empty((s, s + 6), order="F")
        self.factor = columns[:, :s]
        self.ordered = columns[:, s]
        self.basic = columns[:, s + 1]
        self.flat = columns[:, s + 2]
        self.coefficients = columns[:, s + 3]
        self.pivots = np.empty(s, dtype=np.intc)
        for c in range(s):
            scale = max(scale, Q[S[c], S[c]] + ridge)
        if not scale > 0:
            return
        self.from_update = previous is not None and self.updated(Q, ridge, cutoff * scale, previous)
        if self.from_update:
            return
        for c in range(s):  # the lower triangle (dpstrf's), from row S[c] of the symmetric Q
            for a in range(c, s):
                self.factor[a, c] = Q[S[c], S[a]]
            self.factor[c, c] += ridge
        tol = cutoff * scale
        dpstrf(b"L", &n, &self.factor[0, 0], &n, &self.pivots[0], &rank, &tol, &columns[0, s + 4], &info)
        self.rank = rank
        for a in range(s):
            self.pivots[a] -= 1
        self.nullity = s - rank
        self._null_space()

    cdef void _null_space(self):
        r"""The orthonormal basis of the null space :math:`N = [-L_{11}^{-\top}L_{21}^\top;\ I]` (pivoted
        order) of a factor of rank :math:`k < s` (nothing at full rank)."""
        cdef Py_ssize_t a, c
        cdef int n = <int>self.size, rank = <int>self.rank, nr = <int>self.nullity, lwork, info = 0
        cdef double unit = 1.0
        if self.nullity == 0:
            return
        self.nullspace = np.zeros((self.size, self.nullity), order="F")
        for c in range(self.nullity):  # -L21^T, then L11^{-T} applied in place: the top block of the basis
            for a in range(rank):
                self.nullspace[a, c] = -self.factor[rank + c, a]
            self.nullspace[rank + c, c] = 1.0
        if rank:
            dtrsm(b"L", b"L", b"T", b"N", &rank, &nr, &unit, &self.factor[0, 0], &n, &self.nullspace[0, 0], &n)
        tau = np.empty(nr)
        lwork = 64 * nr
        work = np.empty(lwork)
        cdef double[::1] t = tau, w = work
        dgeqrf(&n, &nr, &self.nullspace[0, 0], &n, &t[0], &w[0], &lwork, &info)
        dorgqr(&n, &nr, &nr, &self.nullspace[0, 0], &n, &t[0], &w[0], &lwork, &info)

    cdef bint updated(self, const double[:, ::1] Q, double ridge, double tol, FaceFactor old) except -1:
        r"""The factor of this face from ``old``'s, when few coordinates changed.

        Deleting the rows of the coordinates that left from ``old``'s factor :math:`L` leaves
        :math:`MM^\top = H'` (the kept coordinates in ``old``'s pivoted order) with :math:`M` lower
        triangular but for one superdiagonal entry per deleted row above; Givens rotations of
        adjacent columns (orthogonal, so :math:`MM^\top` is unchanged) take them to 0. Each coordinate
        that entered is appended: its row :math:`l = L^{-1}h` and pivot :math:`\sqrt{H_{jj} - l^\top l}`.
        Every pivot must stay above the rank cutoff (``tol``, as ``dpstrf``'s; the kept ones can only
        grow, as conditioning on fewer coordinates leaves more variance), else False and the face is
        factored afresh. A rank-deficient ``old`` (rank :math:`k`) is updated when coordinates only left:
        its coordinates past the rank (the rows :math:`L_{21}`) are rotated with the others and stay
        past it while their remaining pivots :math:`H_{jj} - \|l_j\|^2` on the kept basis are still below
        the cutoff (a basis coordinate that left may have carried one of them: then False), and the null
        space is formed anew (:meth:`_null_space`, :math:`O(s^2(s - k))`). On issue 15's degree-3
        diabetes path the feature-sign search drops one coordinate a step from faces of about 190 with
        nullity 1 to 4. The cost is :math:`O(s^2)` a change against ``dpstrf``'s :math:`s^3/3`: taken
        while the changes are at most :data:`_UPDATE_SHARE` of the face's size.
        """
        cdef const Py_ssize_t[::1] S = self.support
        cdef const Py_ssize_t[::1] So = old.support
        cdef Py_ssize_t s = self.size, so = old.size, kept = 0, basis = 0, cur, a, c, i, t, j
        cdef double x, y, r, cs, sn, d
        if old.rank == 0:
            return False
        where = np.full(Q.shape[0], -1, dtype=np.intp)
        fresh_array = np.ones(s, dtype=np.int8)
        kept_array = np.empty(so, dtype=np.intp)
        cdef Py_ssize_t[::1] position = where, kp = kept_array
        cdef signed char[::1] fresh = fresh_array
        for a in range(s):
            position[S[a]] = a
        for a in range(so):
            j = position[So[old.pivots[a]]]
            if j >= 0:
                kp[kept] = a
                self.pivots[kept] = <int>j
                fresh[j] = 0
                kept += 1
                basis += a < old.rank
        if (so - kept) + (s - kept) > _UPDATE_SHARE * s or (old.nullity and s > kept):
            return False
        M_array = np.zeros((kept, old.rank), order="F")
        cdef double[::1, :] M = M_array
        for i in range(kept):
            for c in range(min(kp[i] + 1, old.rank)):
                M[i, c] = old.factor[kp[i], c]
        for i in range(basis):
            for c in range(kp[i], i, -1):  # rotate columns (c - 1, c) to take M[i, c] to 0
                y = M[i, c]
                if y == 0:
                    continue
                x = M[i, c - 1]
                r = sqrt(x * x + y * y)
                cs, sn = x / r, y / r
                for t in range(i, kept):
                    x, y = M[t, c - 1], M[t, c]
                    M[t, c - 1] = cs * x + sn * y
                    M[t, c] = cs * y - sn * x
            if M[i, i] < 0:
                for t in range(i, kept):
                    M[t, i] = -M[t, i]
            if not M[i, i] * M[i, i] > tol:
                return False
            for t in range(i, kept):
                self.factor[t, i] = M[t, i]
        for i in range(basis, kept):  # old's coordinates past its rank: still below the cutoff
            j = S[self.pivots[i]]
            d = Q[j, j] + ridge
            for c in range(basis):
                d -= M[i, c] * M[i, c]
            if d > tol:
                return False
        if basis < kept:
            self.rank, self.nullity = basis, kept - basis
            self._null_space()
            return True
        cur = kept
        for a in range(s):
            if not fresh[a]:
                continue
            j = S[a]
            for t in range(cur):  # h, then L^{-1}h by forward substitution, column by column
                self.basic[t] = Q[j, S[self.pivots[t]]]
            d = Q[j, j] + ridge
            for c in range(cur):
                self.basic[c] /= self.factor[c, c]
                d -= self.basic[c] * self.basic[c]
                for t in range(c + 1, cur):
                    self.basic[t] -= self.factor[t, c] * self.basic[c]
            if not d > tol:
                return False
            for c in range(cur):
                self.factor[cur, c] = self.basic[c]
            self.factor[cur, cur] = sqrt(d)
            self.pivots[cur] = <int>a
            cur += 1
        self.rank, self.nullity = s, 0
        return True

    def solution(self, target, values):
        r"""The step for :math:`r` = ``target`` and whether :math:`H` had full rank (:meth:`solve`).

        The first ``len(values)`` coordinates are coefficients whose current values are ``values``.
        """
        out = np.zeros(self.size)
        if self.size == 0:
            return out, False
        cdef double[::1] r = np.ascontiguousarray(target, dtype=np.float64)
        cdef double[::1] v = np.ascontiguousarray(values, dtype=np.float64)
        cdef double[::1] o = out
        full_rank = self.solve(&r[0], &v[0] if v.shape[0] else NULL, v.shape[0], &o[0])
        return out, full_rank

    cdef bint solve(self, const double *target, const double *values, Py_ssize_t count, double *solution) noexcept:
        r"""The least-norm solution of :math:`Hu = r` on the range of :math:`H` (the :math:`k` pivoted
        coordinates: independent of the pivots), plus the part of :math:`r` in the null space: a flat
        direction with a nonzero slope, along which the model falls without bound, followed until the
        first of the ``count`` coefficients it moves towards zero (current values ``values``) reaches
        zero. Returns whether :math:`H` had full rank."""
        cdef Py_ssize_t s = self.size, rank = self.rank, a, c
        cdef int n = <int>s, r = <int>rank, one = 1, info = 0
        cdef double dot, flat2 = 0.0, target2 = 0.0, length = INFINITY, ratio
        cdef bint towards = False
        if rank == 0:
            for a in range(s):
                solution[a] = 0.0
            return False
        for a in range(s):
            self.ordered[a] = target[self.pivots[a]]
            self.flat[a] = 0.0
        if self.nullity == 0:
            for a in range(s):
                self.basic[a] = self.ordered[a]
            dpotrs(b"L", &n, &one, &self.factor[0, 0], &n, &self.basic[0], &n, &info)
        else:
            for c in range(self.nullity):  # flat = N N^T ordered
                dot = 0.0
                for a in range(s):
                    dot += self.nullspace[a, c] * self.ordered[a]
                for a in range(s):
                    self.flat[a] += dot * self.nullspace[a, c]
            for a in range(s):
                self.basic[a] = self.ordered[a] - self.flat[a] if a < rank else 0.0
            dpotrs(b"L", &r, &one, &self.factor[0, 0], &n, &self.basic[0], &r, &info)
            for c in range(self.nullity):  # basic -= N N^T basic
                dot = 0.0
                for a in range(s):
                    dot += self.nullspace[a, c] * self.basic[a]
                for a in range(s):
                    self.coefficients[a] = dot * self.nullspace[a, c]
                for a in range(s):
                    self.basic[a] -= self.coefficients[a]
        for a in range(s):
            solution[self.pivots[a]] = self.basic[a]
            self.coefficients[self.pivots[a]] = self.flat[a]  # the flat part, in the support's order
        for a in range(s):
            flat2 += self.coefficients[a] * self.coefficients[a]
            target2 += target[a] * target[a]
        if flat2 > self.cutoff * target2:
            for a in range(count):
                ratio = values[a] + solution[a]
                if self.coefficients[a] * ratio < 0:
                    towards = True
                    length = min(length, -ratio / self.coefficients[a])
            if towards:
                for a in range(s):
                    solution[a] += self.coefficients[a] * length
        return rank == s


cdef class _Solve:
    """The state of one :func:`minimize_coordinates` call."""

    cdef const double[:, ::1] Q
    cdef const double[::1] g0, W0, alpha, inv_l, thresh, shrink, c, free_system
    cdef object implicit  # None for a formed Q, else the operator of an implicit one (minimize_coordinates)
    cdef Py_ssize_t terms  # the most terms in one sum of a product with Q (lowers())
    cdef const Py_ssize_t[::1] factored_support  # the support whose face ``factored`` factors
    cdef double[::1] row_sums  # of |Q|, computed at the first lowers()
    cdef bint has_row_sums
    cdef const Py_ssize_t[::1] free
    cdef double ridge, cutoff, yy, target, settled_fraction, face_reduction, face_cost, goal
    cdef double measured, measured_before  # the stop test's gap or residual at the last two epochs (pays())
    cdef bint positive, penalized
    cdef Py_ssize_t k, memory, count, direct_face, face_iterations
    cdef object b_array, grad_array, Q_array, constants
    cdef double[::1] b, grad, work, work2, work3, point, face_target, face_step, face_values, free_coefficients
    cdef double[:, ::1] iterates, grads
    cdef signed char[::1] signs, refused
    cdef bint has_signs, has_refused
    cdef Py_ssize_t[::1] support
    cdef FaceFactor factored

    cdef double value(self, const double[::1] b) noexcept:
        """:math:`P(b)` (``inf`` off the positive orthant with positivity)."""
        cdef Py_ssize_t j
        cdef double total = 0.0, squares = 0.0
        for j in range(self.k):
            if self.positive and b[j] < 0:
                return INFINITY
            total += self.alpha[j] * fabs(b[j])
            squares += b[j] * b[j]
        return total + 0.5 * self.ridge * squares

    cdef void product(self, const double[::1] e, double[::1] out):
        """``out`` = :math:`Qe`, one ``dgemv`` (the operator's product for an implicit ``Q``). (A loop of an
        axpy per nonzero :math:`e_j` took 10% of the degree-3 diabetes path (g1), its faces of ~190
        coordinates mostly nonzero.)"""
        cdef int k = <int>self.k, one_i = 1
        cdef double one = 1.0, zero = 0.0
        cdef const double[::1] result
        if self.implicit is not None:
            result = self.implicit.product(np.asarray(e))
            out[:] = result
            return
        if k:  # Q is symmetric: its C order read as Fortran's is Q itself
            dgemv(b"N", &k, &k, &one, <double*>&self.Q[0, 0], &k, <double*>&e[0], &one_i, &zero, &out[0], &one_i)

    cdef void rebase(self):
        """The gradient :math:`g + Q(b - w)` recomputed from scratch, so rounding never accumulates (by the
        operator of an implicit ``Q``, which also recomputes its residual at ``b``)."""
        cdef Py_ssize_t j
        if self.implicit is not None:
            self.implicit.rebase(self.b_array, self.grad_array)
            return
        for j in range(self.k):
            self.work2[j] = self.b[j] - self.W0[j]
        self.product(self.work2, self.grad)
        for j in range(self.k):
            self.grad[j] = self.g0[j] + self.grad[j]

    cdef bint lowers(self, const double[::1] C) except -1:
        """``cd._lowers_model``: whether moving from ``b`` to ``C`` lowers the model by more than rounding."""
        cdef Py_ssize_t j, i
        cdef double change = 0.0, size = 0.0, e
        cdef const double[::1] sums
        if self.value(C) == INFINITY:
            return False
        if not self.has_row_sums and self.implicit is not None:
            sums = self.implicit.magnitude_row_sums()
            self.row_sums[:] = sums
            self.has_row_sums = True
        if not self.has_row_sums:
            for j in range(self.k):
                e = 0.0
                for i in range(self.k):
                    e += fabs(self.Q[j, i])
                self.row_sums[j] = e
            self.has_row_sums = True
        for j in range(self.k):
            self.work[j] = C[j] - self.b[j]
        self.product(self.work, self.work2)
        for j in range(self.k):
            e = self.work[j]
            change += e * (self.grad[j] + 0.5 * self.work2[j])
            size += fabs(e) * (fabs(self.grad[j]) + self.row_sums[j] * fabs(e))
            # the penalty's change coordinate by coordinate, |C_j| - |b_j| and C_j^2 - b_j^2 = e (C_j + b_j)
            change += self.alpha[j] * (fabs(C[j]) - fabs(self.b[j])) + 0.5 * self.ridge * e * (C[j] + self.b[j])
            size += fabs(e) * (self.alpha[j] + 0.5 * self.ridge * (fabs(C[j]) + fabs(self.b[j])))
        return change < -(self.terms + 2) * DBL_EPSILON * size

    cdef void push(self) noexcept:
        """``cd._Anderson.push``: record the iterate and its gradient, dropping the oldest when full."""
        cdef Py_ssize_t i, j
        if self.count > self.memory:
            for i in range(self.memory):
                self.iterates[i, :] = self.iterates[i + 1, :]
                self.grads[i, :] = self.grads[i + 1, :]
            self.count = self.memory
        self.iterates[self.count, :] = self.b
        self.grads[self.count, :] = self.grad
        self.count += 1

    cdef bint extrapolate(self):
        """``cd._Anderson.extrapolate`` into ``point``; False (and a restart) when not full or singular."""
        cdef Py_ssize_t m = self.memory, i, l, j
        cdef int n = <int>m, one = 1, info = 0
        cdef double dot, total = 0.0
        cdef bint full = self.count > m
        self.count = 0
        if not full:
            return False
        system = np.empty((m, m), order="F")
        z, pivots = np.ones(m), np.empty(m, dtype=np.intc)
        cdef double[::1, :] A = system
        cdef double[::1] w = z
        cdef int[::1] p = pivots
        for i in range(m):
            for l in range(m):  # (U V^T)_il with U, V the differences of the iterates and the gradients
                dot = 0.0
                for j in range(self.k):
                    dot += (self.iterates[i + 1, j] - self.iterates[i, j]) * (self.grads[l + 1, j] - self.grads[l, j])
                A[i, l] = dot
        for i in range(m):
            for l in range(i + 1):
                A[i, l] = A[l, i] = A[i, l] + A[l, i]
        dgesv(&n, &one, &A[0, 0], &n, &p[0], &w[0], &n, &info)
        if info != 0:
            return False
        for i in range(m):
            if not isfinite(w[i]):
                return False
            total += w[i]
        if total == 0 or not isfinite(total):
            return False
        for j in range(self.k):
            self.point[j] = 0.0
        for i in range(m):
            dot = w[i] / total
            for j in range(self.k):
                self.point[j] += dot * self.iterates[i + 1, j]
        return True

    cdef Py_ssize_t face(self, bint *exact):
        r"""The face of ``b``'s signs and the step towards the model's minimiser on it.

        On the face (the nonzero coordinates :math:`S` keep their signs :math:`\sigma`, the others
        stay 0; unpenalized coordinates are always on it) the model is the quadratic
        :math:`\tfrac12 u^\top(Q_{SS} + \mu I)u + (\nabla_S + \mu b_S + \alpha_S\sigma_S)^\top u`,
        minimised by a :class:`FaceFactor` (kept while the support stays, updated when it moved
        little) on faces of at most ``direct_face`` coordinates, by :meth:`iterate_face` on larger
        ones. ``exact`` says the face's Hessian had full rank and was factored (the step then solves
        the face's optimality conditions). The support goes into ``support``, the step into
        ``face_step``; returns :math:`|S|` (0: an empty face)."""
        cdef Py_ssize_t j, s = 0
        cdef double bj
        for j in range(self.k):
            bj = self.b[j]
            if bj != 0 or (self.alpha[j] == 0 and not self.positive):
                self.support[s] = j
                self.face_target[s] = -(self.grad[j] + self.ridge * bj + self.alpha[j] * _sign(bj))
                self.face_values[s] = bj
                s += 1
        if s == 0:
            return 0
        if s > self.direct_face:
            self.iterate_face(s)
            exact[0] = False
            return s
        if not self.factored_here(s):
            support = np.asarray(self.support[:s]).copy()
            if self.implicit is None:
                self.factored = FaceFactor(self.Q, support, self.ridge, self.cutoff, self.factored)
            else:  # the face's entries, formed: its factor cannot be updated from Q's rows
                hessian = np.ascontiguousarray(self.implicit.principal(support, self.ridge).formed())
                self.factored = FaceFactor(hessian, np.arange(s, dtype=np.intp), 0.0, self.cutoff)
            self.factored_support = support
        exact[0] = self.factored.solve(&self.face_target[0], &self.face_values[0], s, &self.face_step[0])
        return s

    cdef bint factored_here(self, Py_ssize_t s) noexcept:
        """Whether ``factored`` factors the face of the first ``s`` coordinates of ``support``."""
        cdef Py_ssize_t a
        if self.factored is None or self.factored_support.shape[0] != s:
            return False
        for a in range(s):
            if self.factored_support[a] != self.support[a]:
                return False
        return True

    cdef void iterate_face(self, Py_ssize_t s):
        r"""An approximate minimiser of the face quadratic :math:`\tfrac12 u^\top H u - r^\top u` on a large
        face, :math:`H = Q_{SS} + \mu I`: Jacobi-preconditioned conjugate gradients from 0 (scipy's ``cg``
        iteration), until the residual fell by ``face_reduction`` or after ``face_iterations`` products
        with :math:`H`, where a factorisation would cost :math:`|S|^3/3`. The step is a descent direction
        of the face quadratic from its first iteration on; :meth:`face_move` keeps it only where it
        lowers the model. :math:`H` is formed once for the products (``dgemv``), or for an implicit ``Q``
        is the operator's implicit principal block (each product two passes over its columns)."""
        cdef double[::1] r = np.empty(s), z = np.empty(s), p = np.empty(s), q = np.empty(s)
        cdef double[::1] x = self.face_step, inverse = np.empty(s)
        cdef const double[::1] diagonal, result
        cdef double[:, ::1] H
        cdef Py_ssize_t a, c, it
        cdef int n = <int>s, inc = 1
        cdef double bound = 0.0, rho = 0.0, previous = 0.0, norm, pq, step, unit = 1.0, nothing = 0.0
        operator = None
        if self.implicit is None:
            H = np.empty((s, s))
            for a in range(s):
                for c in range(s):
                    H[a, c] = self.Q[self.support[a], self.support[c]]
                H[a, a] += self.ridge
                inverse[a] = 1.0 / H[a, a] if H[a, a] > 0 else 1.0
        else:
            operator = self.implicit.principal(np.asarray(self.support[:s]).copy(), self.ridge)
            diagonal = operator.diagonal()
            for a in range(s):
                inverse[a] = 1.0 / diagonal[a] if diagonal[a] > 0 else 1.0
        for a in range(s):
            x[a] = 0.0
            r[a] = self.face_target[a]
            bound += r[a] * r[a]
        bound = self.face_reduction * sqrt(bound)
        for it in range(self.face_iterations):
            norm = 0.0
            for a in range(s):
                norm += r[a] * r[a]
            if sqrt(norm) < bound or norm == 0:
                return
            rho = 0.0
            for a in range(s):
                z[a] = inverse[a] * r[a]
                rho += r[a] * z[a]
            for a in range(s):
                p[a] = z[a] if it == 0 else z[a] + (rho / previous) * p[a]
            if operator is None:
                dgemv(b"N", &n, &n, &unit, &H[0, 0], &n, &p[0], &inc, &nothing, &q[0], &inc)  # H symmetric
            else:
                result = operator @ np.asarray(p)
                q[:] = result
            pq = 0.0
            for a in range(s):
                pq += p[a] * q[a]
            if not pq > 0:
                return
            step = rho / pq
            for a in range(s):
                x[a] += step * p[a]
                r[a] -= step * q[a]
            previous = rho

    cdef void face_move(self):
        r"""After an epoch that (nearly) kept the signs: steps on their face, while they lower the model.

        Coordinate descent alone approaches the minimiser slowly on an ill-conditioned ``Q`` (on
        issue 15's degree-3 diabetes features, condition ~1e11 and rank 274 of 285, it did not reach
        a gap of 1e-2 in 10,000 epochs). Once an epoch changes the signs of at most
        ``settled_fraction`` of the coordinates (none on working sets under 100; on issue 15's sparse
        workload (e), thousands of coordinates of which a few near 0 change sign at every epoch,
        waiting for none took about 90 epochs a strength, against 10 to 30) and where the step costs
        less than the epochs it is expected to save (:meth:`pays`), the step :meth:`face`
        towards the face's minimiser is tried in full, the coordinates it carries across 0 set to 0
        (its projection onto the face's orthant); where that does not lower the model, up to its
        first crossing of 0 (the model falls all along that segment, a descent direction of a convex
        quadratic up to its minimiser), and from there the same on the smaller face, with no epoch
        in between, until a step is taken in full, one is refused or the face is empty: the
        feature-sign search of Lee et al. (2007, "Efficient sparse coding algorithms"). Each step
        taken lowers the model, and each one up to a crossing drops a coordinate from the face (none
        enters), so the loop ends within :math:`|S|` steps. (Stopping at the first crossing left the
        next signs to the epochs, which brought the crossed coordinate back: on near-duplicate
        columns, pairs :math:`x, x + 10^{-4}\xi`, whose models' minimisers need several signs flipped
        along flat valleys, one float64 Newton model's solve took ~43,000 epochs, and a prototype of
        this loop solved that model in 6 face steps: issue 15.) A candidate is kept when it lowers
        the model by more than rounding (:meth:`lowers`). A face whose step was refused is not tried
        again until the signs change."""
        cdef Py_ssize_t j, a, s, changed = 0, zero, trial, size = 0
        cdef bint exact, same_as_refused = self.has_refused, kinked, crossed
        cdef double t, best, time
        for j in range(self.k):
            size += self.b[j] != 0 or (self.alpha[j] == 0 and not self.positive)
            if self.has_signs and self.signs[j] != <signed char>_sign(self.b[j]):
                changed += 1
            if self.has_refused and self.refused[j] != <signed char>_sign(self.b[j]):
                same_as_refused = False
            self.signs[j] = <signed char>_sign(self.b[j])
        if not self.has_signs:
            changed = self.k
        self.has_signs = True
        if changed > self.settled_fraction * self.k or same_as_refused or not self.pays(size):
            return
        while True:
            s = self.face(&exact)
            if s == 0:
                return
            best, zero = INFINITY, -1
            for a in range(s):
                j = self.support[a]
                kinked = self.alpha[j] > 0 or self.positive
                if kinked and self.signs[j] * self.face_step[a] < 0:
                    time = -self.b[j] / self.face_step[a]
                    if time < best:
                        best, zero = time, j
            crossed = False
            for trial in range(2 if zero >= 0 else 1):
                t = 1.0 if trial == 0 else best
                self.point[:] = self.b
                for a in range(s):
                    j = self.support[a]
                    self.point[j] += t * self.face_step[a]
                    kinked = self.alpha[j] > 0 or self.positive
                    if kinked and <signed char>_sign(self.point[j]) != self.signs[j]:
                        self.point[j] = 0.0
                if trial == 1:
                    self.point[zero] = 0.0
                if self.lowers(self.point):
                    self.b[:] = self.point
                    for j in range(self.k):
                        self.signs[j] = <signed char>_sign(self.b[j])
                    self.rebase()
                    crossed = trial == 1
                    break
            else:
                self.refused[:] = self.signs
                self.has_refused = True
                return
            if not crossed:
                return

    cdef bint pays(self, Py_ssize_t s) noexcept:
        r"""Whether a face step on ``s`` coordinates costs less than the epochs it is expected to save.

        The last two epochs cut the stop test's measure :math:`m` (the gap, or the residual) at the
        rate :math:`\rho = m_e / m_{e-1}`; at that rate coordinate descent reaches the target
        :math:`t` in :math:`\log(t/m_e)/\log\rho` more epochs of :math:`k^2` multiply-adds. The step
        costs a factorisation, :math:`s^3/3` at ``face_cost`` times an epoch's speed, or on faces
        above ``direct_face`` coordinates ``face_iterations`` products of :math:`s^2`. A rate of 1 or
        more (no progress) pays, and so does any step before two measures give a rate. Where the
        face's Hessian :math:`Q_{SS} + \mu I` is well conditioned (a ridge :math:`\mu`) a few epochs
        converge: on issue 15's 200 x 1000 elastic net (l1_ratio 0.5) the face steps cut the epochs
        from 368 to 206 and cost more than the 162 epochs saved (8.0 against 5.2 ms of kernel time
        along the path). Near-singular faces (the lasso's supports near the sample count) converge
        slowly and keep their steps."""
        cdef double rate, epochs, cost, k2 = <double>self.k * <double>self.k
        if not (self.measured_before < INFINITY and self.measured > 0 and self.measured_before > 0 and self.goal > 0):
            return True  # no rate yet (or a measure at 0: rounding)
        rate = self.measured / self.measured_before
        if rate >= 1:  # (the measure is above the goal: the solve did not stop)
            return True
        epochs = log(self.goal / self.measured) / log(rate)
        if s > self.direct_face:
            cost = <double>self.face_iterations * s * s / k2
        else:
            cost = <double>s * s * s / (3 * self.face_cost * k2)
        return epochs > cost

    cdef void record(self, double measure) noexcept:
        """Keep the stop test's measure of this epoch for :meth:`pays`."""
        self.measured_before, self.measured = self.measured, measure

    cdef bint gap_stops(self) except -1:
        """``cd._LeastSquaresGap.__call__``: the working set's duality gap from Gram quantities."""
        cdef Py_ssize_t j, a, l, f = self.free.shape[0]
        cdef double bg = 0.0, bc = 0.0, loss, fitted, squared, dual, kappa = 1.0, v, conjugate = 0.0, acc
        for j in range(self.k):
            bg += self.b[j] * (self.grad[j] - self.c[j])
            bc += self.b[j] * self.c[j]
            self.work[j] = self.grad[j]
        loss = 0.5 * (self.yy + bg)
        fitted = self.yy - bc
        squared = 2 * loss
        if f:  # project the residual onto the unpenalized columns' constraints
            for a in range(f):
                acc = 0.0
                for l in range(f):
                    acc += self.free_system[a * f + l] * self.grad[self.free[l]]
                self.free_coefficients[a] = acc
                fitted += acc * self.c[self.free[a]]
                squared -= acc * self.grad[self.free[a]]
            if self.implicit is None:
                for a in range(f):
                    acc = self.free_coefficients[a]
                    for j in range(self.k):
                        self.work[j] -= acc * self.Q[self.free[a], j]
            else:  # Q_{:, f} times the coefficients, as Q times them placed in a zero vector
                self.work2[:] = 0.0
                for a in range(f):
                    self.work2[self.free[a]] = self.free_coefficients[a]
                self.product(self.work2, self.work3)
                for j in range(self.k):
                    self.work[j] -= self.work3[j]
        if self.ridge > 0:
            for j in range(self.k):
                v = _soft(-self.work[j], self.alpha[j], self.positive)
                conjugate += v * v
            dual = fitted - 0.5 * squared - conjugate / (2 * self.ridge)
        else:
            if self.penalized:
                for j in range(self.k):
                    if self.alpha[j] > 0:
                        v = max(-self.work[j], 0.0) if self.positive else fabs(self.work[j])
                        kappa = max(kappa, v / self.alpha[j])
            dual = fitted / kappa - 0.5 * squared / (kappa * kappa)
        self.record(loss + self.value(self.b) - dual)
        return self.measured <= self.target

    cdef double residual(self) noexcept:
        """The largest prox-gradient residual :math:`|b_j - \\mathrm{prox}(b_j - \\nabla_j/L_j)|L_j`."""
        cdef Py_ssize_t j
        cdef double largest = 0.0, moved
        for j in range(self.k):
            moved = _soft(self.b[j] - self.grad[j] * self.inv_l[j], self.thresh[j], self.positive) * self.shrink[j]
            largest = max(largest, fabs(self.b[j] - moved) / self.inv_l[j])
        return largest

    cdef void polish(self, Py_ssize_t max_support):
        r"""The model's exact minimiser on the support and signs coordinate descent found, when they are right.

        On the support :math:`S` with signs :math:`\sigma` the optimality conditions are linear, and
        :meth:`face` solves them: the point :math:`b_S + u` is kept when the face's Hessian had full
        rank (collinear columns on the support leave the minimiser not unique), it keeps the signs
        of the penalized coordinates and the coordinates off :math:`S` still satisfy
        :math:`|\nabla_j| \le \alpha_j` (one-sided with positivity) to a slack of :math:`10^{-9}`
        of the largest gradient and weight; then it is the exact minimiser, to rounding. Supports
        above ``max_support`` are left as they are."""
        cdef Py_ssize_t j, a, s, nonzero = 0
        cdef bint exact
        cdef double largest = 0.0, top_alpha = 0.0, slack, violation
        for j in range(self.k):
            nonzero += self.b[j] != 0
        if not 0 < nonzero <= max_support:
            return
        s = self.face(&exact)
        if not exact:
            return
        for a in range(s):
            j = self.support[a]
            self.point[j] = self.b[j] + self.face_step[a]
            if self.alpha[j] > 0 and _sign(self.point[j]) != _sign(self.b[j]):
                return
        self.work[:] = 0.0
        for a in range(s):
            self.work[self.support[a]] = self.face_step[a]
        self.product(self.work, self.work2)
        for j in range(self.k):
            self.work2[j] += self.grad[j]  # the gradient after the step
            largest = max(largest, fabs(self.work2[j]))
            top_alpha = max(top_alpha, self.alpha[j])
            self.work[j] = 1.0  # off the support
        for a in range(s):
            self.work[self.support[a]] = 0.0
        slack = 1e-9 * (largest + top_alpha)
        for j in range(self.k):
            if self.work[j]:
                violation = -self.work2[j] if self.positive else fabs(self.work2[j])
                if violation > self.alpha[j] + slack:
                    return
        for j in range(self.k):
            self.b[j] = self.point[j] if self.work[j] == 0 else 0.0


def minimize_coordinates(
    Q, g0, W0, alpha, double ridge, bint positive, stop, Py_ssize_t anderson, Py_ssize_t max_epochs,
    double cutoff, Py_ssize_t refresh_epochs, double settled_fraction, Py_ssize_t direct_face,
    Py_ssize_t face_iterations, double face_reduction, Py_ssize_t polish_max_support, double face_cost,
):
    r"""Minimise the module's model from ``W0`` (gradient ``g0``): returns the minimiser and the epochs used.

    ``Q`` ``(k, k)`` C-contiguous float64, or an implicit ``Q``: an operator with ``diagonal()``,
    ``terms`` (the most terms in one sum of its products), ``magnitude_row_sums()`` (row sums of a
    matrix entrywise at least :math:`|Q|`), ``product(e)`` (:math:`Qe`), ``principal(S, mu)`` (the
    implicit :math:`Q_{SS} + \mu I`, with ``diagonal()``, ``@`` and ``formed()``), ``epoch(b, grad,
    thresh, inv_l, shrink, positive)`` (one cyclic pass from ``b`` that leaves ``b`` and its gradient in
    place, at ``_sweeps.epoch_coordinates``' constants) and ``rebase(b, grad)`` (the gradient at ``b``
    from scratch, in place); it starts at ``W0``. ``g0``, ``W0`` and ``alpha`` (:math:`\alpha`, 0 for
    unpenalized coordinates) float64 ``(k,)``. The coordinates' curvatures are :math:`Q_{jj}`, or 1
    where that is 0 (``cd._block_lipschitz_of_model``'s). ``stop`` is ``(GAP, c, yy, target, free, free_system)`` (:class:`cd._LeastSquaresGap`'s
    quantities, ``free_system`` the flattened pseudo-inverse of :math:`Q_{ff}`) or ``(RESIDUAL, fraction)``
    (stop once the largest prox-gradient residual fell by ``fraction`` from its value at ``W0``). The
    rest are ``cd``'s constants: Anderson's memory (0: none, the gradient then recomputed every
    ``refresh_epochs``), the face's rank ``cutoff``, ``settled_fraction`` of signs an epoch may change
    before a face step, faces above ``direct_face`` coordinates solved by ``face_iterations`` of
    conjugate gradients to a reduction ``face_reduction``, supports up to ``polish_max_support`` polished,
    face steps only where they cost less than the epochs they save (:meth:`_Solve.pays`, a factorisation's
    multiply-adds ``face_cost`` times as fast as an epoch's).
    """
    cdef _Solve self = _Solve()
    cdef Py_ssize_t k = W0.shape[0], epoch = 0, cycle = anderson + 1 if anderson else refresh_epochs
    cdef int mode = stop[0]
    cdef Py_ssize_t j
    cdef double d
    cdef const double[::1] diagonal
    implicit = None if isinstance(Q, np.ndarray) else Q
    if implicit is None:
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        self.terms = k
    else:
        diagonal, self.terms = np.ascontiguousarray(implicit.diagonal(), dtype=np.float64), implicit.terms
        Q = np.zeros((0, 0))  # never read: every use of Q goes through the operator
    scratch = np.empty((13, k))  # every vector of the solve, one allocation
    cdef double[:, ::1] rows = scratch
    self.Q, self.implicit, self.k, self.ridge, self.positive, self.cutoff = Q, implicit, k, ridge, positive, cutoff
    self.g0, self.W0, self.alpha = g0, W0, alpha
    self.penalized = False
    for j in range(k):
        d = self.Q[j, j] if implicit is None else diagonal[j]
        rows[0, j] = 1.0 / d if d > 0 else 1.0
        rows[1, j] = self.alpha[j] * rows[0, j]
        rows[2, j] = 1.0 / (1.0 + ridge * rows[0, j])
        rows[3, j], rows[4, j] = self.W0[j], self.g0[j]
        self.penalized = self.penalized or self.alpha[j] > 0
    self.inv_l, self.thresh, self.shrink, self.b, self.grad = rows[0], rows[1], rows[2], rows[3], rows[4]
    self.constants = (scratch[1], scratch[0], scratch[2])
    self.b_array, self.grad_array = scratch[3], scratch[4]
    self.work, self.work2, self.point, self.row_sums = rows[5], rows[6], rows[7], rows[8]
    self.face_target, self.face_step, self.face_values, self.work3 = rows[9], rows[10], rows[11], rows[12]
    self.settled_fraction, self.direct_face = settled_fraction, direct_face
    self.face_iterations, self.face_reduction = face_iterations, face_reduction
    self.face_cost, self.measured, self.measured_before = face_cost, INFINITY, INFINITY
    self.memory = anderson
    cdef double[:, :, ::1] history = np.empty((2, anderson + 1, k))
    self.iterates, self.grads = history[0], history[1]
    self.support = np.empty(k, dtype=np.intp)
    signs = np.zeros((2, k), dtype=np.int8)
    self.signs, self.refused = signs[0], signs[1]
    if mode == _GAP:
        _, self.c, self.yy, self.target, self.free, self.free_system = stop
        self.goal = self.target
        self.free_coefficients = np.empty(self.free.shape[0])
    else:
        self.free, self.c, self.free_system = np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0)
        self.goal = stop[1] * self.residual()
    while epoch < max_epochs:
        epoch += 1
        if implicit is None:
            epoch_coordinates(Q, self.grad_array, self.b_array, *self.constants, positive)
        else:
            implicit.epoch(self.b_array, self.grad_array, *self.constants, positive)
        if anderson:
            self.push()
        if epoch % cycle == 0:
            if anderson and self.extrapolate() and self.lowers(self.point):
                self.b[:] = self.point
            self.rebase()
        self.face_move()
        if mode == _GAP:
            if self.gap_stops():
                break
        else:
            self.record(self.residual())
            if self.measured <= self.goal:
                break
    self.polish(polish_max_support)
    return self.b_array, epoch
