# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
r"""The compiled strength loop of :mod:`normpen.linear.solvers.gaussian_path` (covariance coordinate descent).

Least squares with a coordinate-separable penalty on a dense float64 design, one output:

.. math::

    \min_{\beta, b}\; \tfrac12 \sum_i a_i (y_i - x_i^\top\beta - b)^2
        + \sum_j w_j |\beta_j| + \tfrac\mu2 \|\beta\|^2 \;\big[+\ \iota_{\beta \ge 0}\big],

:math:`\sum_i a_i = 1`. With the intercept eliminated (:math:`b = \bar y - \bar x^\top\beta`, the
weighted means) the datafit is :math:`\tfrac12\beta^\top Q\beta - c^\top\beta + \tfrac12 s_{yy}` with the
centred Gram matrix :math:`Q = X^\top AX - \bar x\bar x^\top`, :math:`c = X^\top A(y - \bar y)` and
:math:`s_{yy} = \sum_i a_i (y_i - \bar y)^2` (no centring without an intercept). :class:`GaussianPath`
keeps, across the strengths of a path, a working set of coordinates, a copy of their columns and
:math:`Q` restricted to them (a new coordinate costs one product :math:`X_{ws}^\top A x_j` of
:math:`n|ws|` multiply-adds, batched in one ``dgemm``), and runs one strength per call of
:meth:`GaussianPath.solve`:

1. *Strong rule* (Tibshirani et al., 2012): from the exact gradient at the previous solution, the
   coordinates with :math:`|\nabla_j F| \ge \omega_j(2\lambda - \lambda_{\text{prev}})` join the working
   set (:math:`\omega_j` the weight at strength 1); coordinates without weight are in it from the start.
2. *Coordinate descent on the working set* with the gradient :math:`g = Q\beta - c` kept on it (one
   axpy of a Gram column per moved coordinate), epochs until the working set's own duality gap
   (from Gram quantities, :math:`O(|ws|)`) is below a fraction of the target and the epoch's largest
   objective decrease :math:`Q_{jj}\delta_j^2` below the same fraction: at least one epoch, so no
   strength is returned at its warm start. Newton steps on the face of the signs once epochs have
   cost as much; a working set still unsolved after :data:`_SWEEP_EPOCHS` epochs (correlated columns)
   goes to coordinate descent's compiled model solve
   (:func:`normpen.linear.solvers._coordinate_solve.minimize_coordinates`: Anderson extrapolation,
   its face steps and polish), with the same stop test.
3. *Check*: the residual (:math:`X_{ws}\beta_{ws}`), the full gradient :math:`X^\top A r` (one
   ``dgemv``) and the duality gap of :meth:`normpen.linear.problem.Problem.duality_gap` (the same dual
   point: the residual, projected onto the unpenalized columns' constraints, rescaled into the dual ball,
   or with the ridge part's conjugate), with the stop rule of :func:`normpen.linear.solvers.cd._stops`
   (the gap below ``max(tol P_0, 64 eps |P|)``; below the certifiable tolerance also every coordinate's
   prox-gradient residual at the gradient's rounding). Coordinates that violate the optimality conditions
   join the working set; with none left the working-set target is tightened tenfold.
"""

from libc.math cimport fabs
from libc.string cimport memcpy
from scipy.linalg import cython_blas, cython_lapack

import numpy as np

from normpen.linear.solvers._common cimport _dgemv_t, _exported, _soft
from normpen.linear.solvers._coordinate_solve import GAP, minimize_coordinates

ctypedef void (*_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*, double*,
                          double*, int*) noexcept nogil
ctypedef void (*_daxpy_t)(int*, double*, double*, int*, double*, int*) noexcept nogil
ctypedef void (*_dpstrf_t)(char*, int*, double*, int*, int*, int*, double*, double*, int*) noexcept nogil
ctypedef void (*_dpotrs_t)(char*, int*, int*, double*, int*, double*, int*, int*) noexcept nogil

cdef _dgemv_t dgemv = <_dgemv_t>_exported(cython_blas, "dgemv")
cdef _dgemm_t dgemm = <_dgemm_t>_exported(cython_blas, "dgemm")
cdef _daxpy_t daxpy = <_daxpy_t>_exported(cython_blas, "daxpy")
cdef _dpstrf_t dpstrf = <_dpstrf_t>_exported(cython_lapack, "dpstrf")
cdef _dpotrs_t dpotrs = <_dpotrs_t>_exported(cython_lapack, "dpotrs")

#: Fraction of the gap target the working set's own gap (and an epoch's largest decrease) must reach.
cdef double _INNER_FRACTION = 0.6
#: Factor by which that fraction falls when a check added no coordinate and missed the target.
cdef double _TIGHTEN = 0.1
#: How many times faster a face step's factorisation runs per multiply-add than an epoch's axpys.
cdef double _FACE_SPEED = 3.0
#: Epochs of the plain sweep in a round before the working set goes to ``minimize_coordinates``. On the
#: diabetes degree-3 lasso path (g1, 442 x 285) at tol 2e-3 the late strengths took 400-700 epochs each;
#: handing over after 20: 132 -> 115 ms (best of 5; a200, b200 unchanged within noise, 10 slower on b200).
cdef int _SWEEP_EPOCHS = 20


cdef class GaussianPath:
    """The state of one path: coefficients, the working set, its columns and Gram matrix.

    Parameters
    ----------
    X : float64 ndarray (n, p), Fortran order
    y, a : float64 ndarray (n,)
        The target and the sample weights (summing to 1).
    means : float64 ndarray (p,)
        :math:`\\bar x` (zeros without an intercept).
    target : float64 ndarray (p,)
        :math:`c = X^\\top A(y - \\bar y)`.
    square_norms : float64 ndarray (p,)
        :math:`Q_{jj}` for every coordinate (the block Lipschitz constants before their zero floor).
    unit : float64 ndarray (p,)
        :math:`\\omega_j`, the L1 weight of each coordinate at strength 1.
    unit_ridge : float
        :math:`\\mu` at strength 1.
    positive, fit_intercept : bool
    free : tuple or None
        ``free_constraints`` of the unpenalized coordinates (``None`` when the dual point needs no
        projection).
    model : tuple
        ``minimize_coordinates``' constants after ``max_epochs``, but for ``max_epochs`` itself: Anderson's
        memory, the face's rank cutoff, then ``refresh_epochs`` to ``face_cost``.
    """

    cdef const double[::1, :] X
    cdef const double[::1] y, a, means, target, sq, unit
    cdef double[::1] beta, z, G, grad, work
    cdef double ybar, syy, unit_ridge, b, lam_prev
    cdef bint positive, intercept, has_free
    cdef int n, p, ws_n, cap
    cdef Py_ssize_t[::1] ws, pos, found
    cdef double[::1, :] Xws, Q
    cdef double[::1] beta_ws, g_ws
    cdef object free, model
    cdef bint settled
    cdef public double primal, dual
    cdef public int n_iter, n_epochs

    def __init__(
        self, X, y, a, means, target, square_norms, unit, unit_ridge, positive, fit_intercept, free, model
    ):
        self.X = X
        self.y, self.a, self.means, self.target, self.sq, self.unit = y, a, means, target, square_norms, unit
        self.n, self.p = X.shape[0], X.shape[1]
        self.unit_ridge, self.positive, self.intercept = unit_ridge, positive, fit_intercept
        self.ybar = float(np.dot(a, y)) if fit_intercept else 0.0
        centred = np.asarray(y) - self.ybar
        self.syy = float(np.dot(a, centred * centred))
        self.free = free
        self.has_free = free is not None
        self.model = model
        self.beta = np.zeros(self.p)
        self.z = np.zeros(self.n)
        self.G = np.zeros(self.n)
        self.grad = np.zeros(self.p)
        self.work = np.zeros(max(self.n, self.p))
        self.pos = np.full(self.p, -1, dtype=np.intp)
        self.ws = np.zeros(self.p, dtype=np.intp)
        self.found = np.zeros(self.p, dtype=np.intp)
        self.ws_n, self.cap = 0, 0
        self._grow(16)

    def coef(self):
        """The coefficients (a view: copy before the next solve)."""
        return np.asarray(self.beta)

    def point(self):
        """``(z, b)``: the predictor :math:`X\\beta + b` and the intercept at the last check."""
        return np.asarray(self.z), self.b

    def start(self, const double[::1] beta, double lam_prev):
        """Move to ``beta`` (a warm start or a restart): the working set becomes its support and the
        coordinates without weight, and the point is checked (residual and gradient)."""
        cdef int j
        for j in range(self.ws_n):
            self.pos[self.ws[j]] = -1
        self.ws_n = 0
        self.beta[:] = beta
        self._add(np.flatnonzero((np.asarray(beta) != 0) | (np.asarray(self.unit) == 0)).astype(np.intp))
        self._residual()
        self.lam_prev = lam_prev

    cdef void _grow(self, int need):
        """Room for ``need`` working-set coordinates (doubling), the held entries copied over."""
        cdef int cap = max(need, 2 * self.cap)
        if cap > self.p:
            cap = self.p
        if cap <= self.cap:
            return
        Xws = np.empty((self.n, cap), order="F")
        Q = np.empty((cap, cap), order="F")
        beta_ws, g_ws = np.zeros(cap), np.zeros(cap)
        if self.ws_n:
            k = self.ws_n
            Xws[:, :k] = np.asarray(self.Xws)[:, :k]
            Q[:k, :k] = np.asarray(self.Q)[:k, :k]
            beta_ws[:k] = np.asarray(self.beta_ws)[:k]
            g_ws[:k] = np.asarray(self.g_ws)[:k]
        self.Xws, self.Q, self.beta_ws, self.g_ws, self.cap = Xws, Q, beta_ws, g_ws, cap

    def _add(self, Py_ssize_t[::1] new):
        """Append the coordinates ``new`` to the working set: their columns, their Gram rows and columns
        (one ``dgemm`` of :math:`X_{ws}^\\top A X_{new}`), coefficients and gradient entries."""
        cdef int k = new.shape[0], old = self.ws_n, total, i, t, j
        cdef double one = 1.0, zero = 0.0
        if k == 0:
            return
        total = old + k
        if total > self.cap:
            self._grow(total)
        scaled = np.empty((self.n, k), order="F")
        cdef double[::1, :] S = scaled
        for t in range(k):
            j = new[t]
            self.ws[old + t] = j
            self.pos[j] = old + t
            memcpy(&self.Xws[0, old + t], &self.X[0, j], self.n * sizeof(double))
            for i in range(self.n):
                S[i, t] = self.a[i] * self.X[i, j]
            self.beta_ws[old + t] = self.beta[j]
            self.g_ws[old + t] = self.grad[j]
        dgemm("T", "N", &total, &k, &self.n, &one, &self.Xws[0, 0], &self.n, &S[0, 0], &self.n, &zero,
              &self.Q[0, old], &self.cap)
        if self.intercept:
            for t in range(k):
                for i in range(total):
                    self.Q[i, old + t] -= self.means[self.ws[i]] * self.means[self.ws[old + t]]
        for t in range(k):  # the new rows of the old columns, by symmetry
            for i in range(old):
                self.Q[old + t, i] = self.Q[i, old + t]
        self.ws_n = total

    cdef void _residual(self) noexcept nogil:
        """The exact point from the working set's coefficients: :math:`z = X_{ws}\\beta_{ws} + b` with the
        intercept refitted, :math:`G = A(z - y)`, the full gradient :math:`X^\\top G`, and the working
        set's gradient reset to it (no rounding carried from the epochs' updates)."""
        cdef int i, k, one_i = 1
        cdef double one = 1.0, zero = 0.0, shift = 0.0
        for k in range(self.ws_n):
            self.beta[self.ws[k]] = self.beta_ws[k]
        if self.ws_n:
            dgemv("N", &self.n, &self.ws_n, &one, &self.Xws[0, 0], &self.n, &self.beta_ws[0], &one_i, &zero,
                  &self.z[0], &one_i)
        else:
            for i in range(self.n):
                self.z[i] = 0.0
        if self.intercept:
            for i in range(self.n):
                shift += self.a[i] * (self.y[i] - self.z[i])
        self.b = shift
        for i in range(self.n):
            self.z[i] += shift
            self.G[i] = self.a[i] * (self.z[i] - self.y[i])
        dgemv("T", &self.n, &self.p, &one, <double*>&self.X[0, 0], &self.n, &self.G[0], &one_i, &zero,
              &self.grad[0], &one_i)
        for k in range(self.ws_n):
            self.g_ws[k] = self.grad[self.ws[k]]

    def solve(self, double lam, double tol, double scale, double eps, int max_iter, int max_epochs):
        """Solve at strength ``lam`` from the current point; returns ``(gap, threshold)``.

        The working set is solved before the first check (``max_iter = 0``: the current point is only
        checked). ``scale`` is :math:`P_0`, ``eps`` the rounding unit of ``X``'s dtype; ``primal``,
        ``dual``, ``n_iter`` (working-set rounds) and ``n_epochs`` are left on the object.
        """
        cdef double fraction = _INNER_FRACTION, gap, threshold, target
        cdef int rounds = 0, epochs = 0, found
        self._add(self.found[:self._outside(2 * lam - self.lam_prev, lam, False)])
        while True:
            if rounds < max_iter and epochs < max_epochs:
                target = fraction * max(tol * scale, 64 * eps * fabs(self.primal))
                epochs += self._epochs(lam, target, min(max_epochs - epochs, _SWEEP_EPOCHS))
                if not self.settled and epochs < max_epochs:
                    epochs += self._model_solve(lam, target, max_epochs - epochs)
                rounds += 1
                self._residual()
            gap, threshold = self._check(lam, tol, scale, eps)
            if rounds >= max_iter or epochs >= max_epochs:
                break
            if self._stops(lam, tol, scale, eps, gap, threshold):
                break
            found = self._outside(lam, lam, True)
            if found:
                self._add(self.found[:found])
            else:
                fraction *= _TIGHTEN
        self.lam_prev = lam
        self.n_iter, self.n_epochs = rounds, epochs
        return gap, threshold

    cdef int _outside(self, double level, double lam, bint strict) noexcept nogil:
        """Write into ``found`` the coordinates outside the working set whose gradient reaches ``level``
        times their weight (strictly: violators of the optimality conditions at zero; else the sequential
        strong rule's level :math:`2\\lambda - \\lambda_{\\text{prev}}`); returns how many."""
        cdef int j, count = 0
        cdef double excess
        for j in range(self.p):
            if self.pos[j] >= 0:
                continue
            excess = self._excess(j, level)
            if excess > 0 or (excess == 0 and not strict):
                self.found[count] = j
                count += 1
        return count

    cdef inline double _excess(self, int j, double lam) noexcept nogil:
        """:math:`A_j - \\lambda\\omega_j` with :math:`A_j = |\\nabla_j F|` (its negative part with positivity)."""
        cdef double v = -self.grad[j]
        if not self.positive:
            v = fabs(v)
        return v - lam * self.unit[j]

    cdef int _model_solve(self, double lam, double target, int max_epochs):
        """The working set solved by ``minimize_coordinates`` from the current point to the working-set
        gap ``target`` (:class:`normpen.linear.solvers.cd._LeastSquaresGap`'s test, whose unpenalized
        coordinates need the pseudo-inverse of their Gram block); returns the epochs used."""
        cdef int k = self.ws_n
        if k == 0:
            return 0
        ws = np.asarray(self.ws)[:k]
        unit = np.asarray(self.unit)[ws]
        Q = np.asarray(self.Q)[:k, :k].T
        free = np.flatnonzero(unit == 0) if self.has_free else np.zeros(0, dtype=np.intp)
        system = np.linalg.pinv(Q[np.ix_(free, free)]).ravel() if free.size else np.zeros(0)
        anderson, cutoff, *rest = self.model
        B, used = minimize_coordinates(
            Q, np.asarray(self.g_ws)[:k].copy(), np.asarray(self.beta_ws)[:k].copy(), lam * unit,
            lam * self.unit_ridge, self.positive,
            (GAP, np.asarray(self.target)[ws], self.syy, target, free.astype(np.intp), system),
            anderson, max_epochs, cutoff, *rest,
        )
        np.asarray(self.beta_ws)[:k] = B
        return used

    cdef int _epochs(self, double lam, double target, int max_epochs):
        """Cyclic epochs over the working set until its gap and an epoch's largest decrease are at most
        ``target`` (at least one epoch); returns the epochs run.

        After an epoch that changed no coordinate's zero pattern, once the epochs since the last face
        step have cost (in multiply-adds, times :data:`_FACE_SPEED`) what a face step costs, a face step
        (:meth:`_face_step`) is taken; and once at the stop when it costs less than an epoch (small
        supports then end on their face, exactly, as coordinate descent's support polish).
        """
        cdef int k, epochs = 0, one_i = 1, n = self.ws_n, active
        cdef bint switched, polished = False
        cdef double mu = lam * self.unit_ridge, qkk, old, new, delta, moved, work = 0.0, face
        self.settled = False
        while epochs < max_epochs:
            epochs += 1
            moved = 0.0
            switched = False
            active = 0
            for k in range(n):
                qkk = self.Q[k, k]
                old = self.beta_ws[k]
                if qkk <= 0:
                    continue
                new = _soft(qkk * old - self.g_ws[k], lam * self.unit[self.ws[k]], self.positive) / (qkk + mu)
                if new != old:
                    delta = new - old
                    self.beta_ws[k] = new
                    daxpy(&n, &delta, &self.Q[0, k], &one_i, &self.g_ws[0], &one_i)
                    work += n
                    switched = switched or old == 0 or new == 0
                    if qkk * delta * delta > moved:
                        moved = qkk * delta * delta
                if new != 0:
                    active += 1
            face = active * (active * active / 3.0 + n)
            self.settled = moved <= target and self._working_gap(lam) <= target
            if self.settled:
                if polished or switched or face > _FACE_SPEED * active * n:
                    break
                polished = True  # a face step cheaper than an epoch: small supports end on their face
                self._face_step(lam)
            elif _FACE_SPEED * work >= face:
                self._face_step(lam)
                work = 0.0
        return epochs

    cdef void _face_step(self, double lam):
        r"""A Newton step on the face of the current signs: on the nonzero coordinates :math:`A`, with
        :math:`H = Q_{AA} + \mu I` and :math:`\nabla_A = g_A + \mu\beta_A + w_A\operatorname{sign}\beta_A`,
        :math:`d = -H^{-1}\nabla_A` on the coordinates of a pivoted Cholesky factor of :math:`H`'s numerical
        rank (``dpstrf``; the others keep their values: with more coordinates than samples :math:`H` is
        singular), shortened to the first coordinate it would take through zero (set to zero there).
        The model is quadratic on the face and decreases along :math:`d` up to :math:`t = 1`, so every
        step taken lowers it."""
        cdef int k, i, c, m = 0, rank = 0, info = 0, one_i = 1, n = self.ws_n, blocked = -1
        cdef double mu = lam * self.unit_ridge, t = 1.0, b, step, cutoff = -1.0
        for k in range(n):
            if self.beta_ws[k] != 0:
                self.found[m] = k
                m += 1
        if m == 0:
            return
        H = np.empty((m, m), order="F")
        d = np.zeros(m)
        rhs = np.empty(m)
        pivots = np.empty(m, dtype=np.intc)
        scratch = np.empty(2 * m)
        cdef double[::1, :] Hv = H
        cdef double[::1] dv = d, rv = rhs, wv = scratch
        cdef int[::1] pv = pivots
        for i in range(m):
            k = self.found[i]
            b = self.beta_ws[k]
            for c in range(m):
                Hv[c, i] = self.Q[self.found[c], k]
            Hv[i, i] += mu
        dpstrf("L", &m, &Hv[0, 0], &m, &pv[0], &rank, &cutoff, &wv[0], &info)
        if rank == 0:
            return
        for i in range(rank):
            k = self.found[pv[i] - 1]
            b = self.beta_ws[k]
            rv[i] = -(self.g_ws[k] + mu * b + lam * self.unit[self.ws[k]] * (1.0 if b > 0 else -1.0))
        dpotrs("L", &rank, &one_i, &Hv[0, 0], &m, &rv[0], &rank, &info)
        for i in range(rank):
            dv[pv[i] - 1] = rv[i]
        for i in range(m):
            b = self.beta_ws[self.found[i]]
            if b * dv[i] < 0 and -b / dv[i] < t:
                t, blocked = -b / dv[i], i
        for i in range(m):
            k = self.found[i]
            step = -self.beta_ws[k] if i == blocked else t * dv[i]
            if step != 0:
                self.beta_ws[k] = 0.0 if i == blocked else self.beta_ws[k] + step
                daxpy(&n, &step, &self.Q[0, k], &one_i, &self.g_ws[0], &one_i)

    cdef double _working_gap(self, double lam) noexcept nogil:
        r"""The duality gap of the problem restricted to the working set, from Gram quantities:
        :math:`F = \tfrac12(\beta^\top g - c^\top\beta + s_{yy})` and
        :math:`\sum_i a_i u_i y_i = c^\top\beta - s_{yy}` for :math:`u = X_c\beta - y_c`."""
        cdef int k
        cdef double bg = 0.0, cb = 0.0, pen = 0.0, kappa = 1.0, conj = 0.0, v, w, loss, excess
        cdef double mu = lam * self.unit_ridge
        for k in range(self.ws_n):
            w = lam * self.unit[self.ws[k]]
            bg += self.beta_ws[k] * self.g_ws[k]
            cb += self.target[self.ws[k]] * self.beta_ws[k]
            pen += w * fabs(self.beta_ws[k]) + 0.5 * mu * self.beta_ws[k] * self.beta_ws[k]
            v = -self.g_ws[k] if self.positive else fabs(self.g_ws[k])
            if mu > 0:
                excess = v - w
                if excess > 0:
                    conj += excess * excess
            elif w > 0 and v > kappa * w:
                kappa = v / w
        loss = 0.5 * (bg - cb + self.syy)
        if mu > 0:
            conj /= 2 * mu
        return loss + pen + (cb - self.syy) / kappa + loss / (kappa * kappa) + conj

    cdef tuple _check(self, double lam, double tol, double scale, double eps):
        """The gap of :meth:`Problem.duality_gap` at the current point and its threshold."""
        cdef int i, j, one_i = 1, f
        cdef double loss = 0.0, pen = 0.0, kappa = 1.0, conj = 0.0, dual = 0.0, r, u, v, w, excess
        cdef double mu = lam * self.unit_ridge, one = 1.0, minus = -1.0
        cdef double[::1] V = self.grad, U = self.work
        for i in range(self.n):
            r = self.z[i] - self.y[i]
            loss += self.a[i] * 0.5 * r * r
        for j in range(self.p):
            pen += lam * self.unit[j] * fabs(self.beta[j])
            if mu > 0:
                pen += 0.5 * mu * self.beta[j] * self.beta[j]
        if self.has_free:  # the projection of Problem.free_projection (normpen.linear.problem.project_free)
            residual = np.asarray(self.z) - np.asarray(self.y)
            projected, correction = _project(self.free, residual)
            V = np.asarray(self.grad) - correction
            U = projected
        else:
            for i in range(self.n):
                U[i] = self.z[i] - self.y[i]
        for j in range(self.p):
            w = lam * self.unit[j]
            v = -V[j] if self.positive else fabs(V[j])
            if mu > 0:
                excess = v - w
                if excess > 0:
                    conj += excess * excess
            elif w > 0 and v > kappa * w:
                kappa = v / w
        if mu > 0:
            conj /= 2 * mu
        for i in range(self.n):
            u = U[i] / kappa
            dual -= self.a[i] * (u * self.y[i] + 0.5 * u * u)
        self.primal = loss + pen
        self.dual = dual - conj
        threshold = max(tol * scale, 64 * eps * fabs(self.primal))
        return self.primal - self.dual, threshold

    cdef bint _stops(self, double lam, double tol, double scale, double eps, double gap, double threshold):
        """:func:`normpen.linear.solvers.cd._stops`: the gap at ``threshold``, and below the certifiable
        tolerance every coordinate's prox-gradient residual :math:`L_j|\\beta_j - \\operatorname{prox}(
        \\beta_j - \\nabla_j F/L_j)|` at the gradient's rounding :math:`64\\epsilon\\max|\\nabla F|`."""
        cdef int j
        cdef double L, moved, worst = 0.0, largest = 0.0, mu = lam * self.unit_ridge
        if gap > threshold:
            return False
        if scale <= 0 or tol >= 64 * eps * fabs(self.primal) / scale:
            return True
        for j in range(self.p):
            L = self.sq[j] if self.sq[j] > 0 else 1.0
            moved = self.beta[j] - _soft(self.beta[j] - self.grad[j] / L, lam * self.unit[j] / L,
                                         self.positive) / (1 + mu / L)
            worst = max(worst, L * fabs(moved))
            largest = max(largest, fabs(self.grad[j]))
        return worst <= 64 * eps * largest


def _project(free, residual):
    """``normpen.linear.problem.project_free`` (imported here, not at the module's import)."""
    from normpen.linear.problem import project_free

    return project_free(free, residual)
