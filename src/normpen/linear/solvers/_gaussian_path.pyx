# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
r"""The compiled strength loop of :mod:`normpen.linear.solvers.gaussian_path` (covariance coordinate descent).

Least squares with a block-separable penalty on a dense float64 design, one output:

.. math::

    \min_{\beta, b}\; \tfrac12 \sum_i a_i (y_i - x_i^\top\beta - b)^2
        + \sum_j w_j |\beta_j| + \sum_g v_g \|\beta_g\| + \tfrac\mu2 \|\beta\|^2
        \;\big[+\ \iota_{\beta \ge 0}\big],

over blocks :math:`g` that partition the coordinates: a block of one coordinate carries an L1 weight
:math:`w_j` (its group weight folded in), a block of several a group weight :math:`v_g > 0` alone (the
lasso, elastic net, group lasso and group elastic net; a singleton is a group of size 1).

:math:`\sum_i a_i = 1`. With the intercept eliminated (:math:`b = \bar y - \bar x^\top\beta`, the
weighted means) the datafit is :math:`\tfrac12\beta^\top Q\beta - c^\top\beta + \tfrac12 s_{yy}` with the
centred Gram matrix :math:`Q = X^\top AX - \bar x\bar x^\top`, :math:`c = X^\top A(y - \bar y)` and
:math:`s_{yy} = \sum_i a_i (y_i - \bar y)^2` (no centring without an intercept). :class:`GaussianPath`
keeps, across the strengths of a path, a working set of blocks, a copy of their columns and
:math:`Q` restricted to them (a new block costs one product :math:`X_{ws}^\top A X_g` of
:math:`n|ws||g|` multiply-adds, batched in one ``dgemm``; a group's eigen-decomposition of
:math:`Q_{gg}` is formed once, when it enters), and runs one strength per call of
:meth:`GaussianPath.solve`:

1. *Strong rule* (Tibshirani et al., 2012): from the exact gradient at the previous solution, the
   blocks whose dual norm :math:`t_g(-\nabla_g F)` (:math:`|\nabla_j F|/\omega_j`, or
   :math:`\|\nabla_g F\|/\omega_g` for a group) is at least :math:`2\lambda - \lambda_{\text{prev}}` join
   the working set (:math:`\omega` the weight at strength 1); coordinates without weight are in it from
   the start.
2. *Start on the line* through the last two solutions (:meth:`GaussianPath._extrapolate`, from a path's
   third strength on): exact while no sign changes (the lasso's solution is affine in :math:`\lambda` on a
   face), taken only where it lowers the objective at the new strength.
3. *Block coordinate descent on the working set* with the gradient :math:`g = Q\beta - c` kept on it (one
   axpy of a Gram column per moved coordinate): a coordinate's exact minimiser, a group's exact minimiser
   (:func:`normpen.linear.solvers._common._exact_block`: Newton's method on the secular equation in the
   eigenbasis of :math:`Q_{gg}`; with positivity, or if it fails, a proximal gradient step with
   :math:`L_g = \lambda_{\max}(Q_{gg})`), epochs until the epoch's largest objective decrease
   :math:`Q_{jj}\delta_j^2` and, with the Gram matrix, the working set's own duality gap (from Gram
   quantities, :math:`O(|ws|)`) are below a fraction of the target (without it, past a first full epoch,
   the nonzero blocks alone; the check then decides, as that gap would cost the pass over the working
   set's columns the check makes): at least one epoch, so no strength is returned at its warm start.
   Newton steps on the face of the signs of the single coordinates once epochs have cost as much; a
   working set of single coordinates still unsolved after :data:`_SWEEP_EPOCHS` epochs (correlated
   columns) goes to coordinate descent's compiled model solve
   (:func:`normpen.linear.solvers._coordinate_solve.minimize_coordinates`: Anderson extrapolation,
   its face steps and polish), with the same stop test.
4. *Check*: the residual (:math:`X_{ws}\beta_{ws}`), the full gradient :math:`X^\top A r` (one
   ``dgemv``, or the working set's part and bounds for the rest: :meth:`GaussianPath._settle`) and the
   duality gap of :meth:`normpen.linear.problem.Problem.duality_gap` (the same dual
   point: the residual, projected onto the unpenalized columns' constraints, rescaled into the dual ball
   by the largest block dual norm, or with the ridge part's conjugate), with the stop rule of
   :func:`normpen.linear.solvers.cd._stops` (the gap below ``max(tol P_0, 64 eps |P|)``; below the
   certifiable tolerance also every block's prox-gradient residual at the gradient's rounding). Blocks
   that violate the optimality conditions join the working set; with none left the working-set target is
   tightened tenfold.
"""

cimport cython
from libc.float cimport DBL_EPSILON
from libc.math cimport INFINITY, fabs, sqrt
from libc.string cimport memcpy
from scipy.linalg import cython_blas, cython_lapack

import numpy as np

from normpen.linear.solvers._common cimport _dgemv_t, _exact_block, _exported, _soft
from normpen.linear.solvers._coordinate_solve import GAP, minimize_coordinates

ctypedef void (*_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*, double*,
                          double*, int*) noexcept nogil
ctypedef void (*_daxpy_t)(int*, double*, double*, int*, double*, int*) noexcept nogil
ctypedef double (*_ddot_t)(int*, double*, int*, double*, int*) noexcept nogil
ctypedef void (*_dpstrf_t)(char*, int*, double*, int*, int*, int*, double*, double*, int*) noexcept nogil
ctypedef void (*_dpotrs_t)(char*, int*, int*, double*, int*, double*, int*, int*) noexcept nogil

cdef _dgemv_t dgemv = <_dgemv_t>_exported(cython_blas, "dgemv")
cdef _dgemm_t dgemm = <_dgemm_t>_exported(cython_blas, "dgemm")
cdef _daxpy_t daxpy = <_daxpy_t>_exported(cython_blas, "daxpy")
cdef _ddot_t ddot = <_ddot_t>_exported(cython_blas, "ddot")
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
#: Share of the columns outside the working set past which a check's exact gradients (:meth:`_settle`) are
#: formed in one full ``dgemv`` (which also renews the bounds' reference) rather than column by column.
#: Replaying the checks of issue 15's paths (50 strengths, tol 1e-3; cost in full gradients, those
#: column by column counted by their share): lasso 1000 x 5000 (a) 33.7 / 32.4 / 32.0 of 50 at 0.2 / 0.3
#: / 0.5, elastic net (b) 35.3, lasso 200 x 1000 (a200) 39.5, 200 x 100,000 (h) 27.7 at 0.3.
cdef double _SETTLE_SHARE = 0.5
#: Share of the tolerance (:math:`\mathrm{tol}\,P_0`) by which the datafit read from the kept residual may
#: be off (:meth:`GaussianPath._point`).
cdef double _KEPT_SHARE = 1e-3
#: Bound on the rounding of one update of the residual, :math:`|G_i + \Delta_i|` computed with at most
#: three roundings (a scaled column added; :math:`\gamma_3 = 3u/(1 - 3u)` with :math:`u = \epsilon/2`),
#: relative to :math:`|G_i| + |\Delta_i|`.
cdef double _ROUNDING = 2 * DBL_EPSILON


@cython.final  # its cdef methods called directly (no vtable), the small ones inlined
cdef class GaussianPath:
    """The state of one path: coefficients, the working set of blocks, their columns and Gram matrix.

    Parameters
    ----------
    X : float64 ndarray (n, p), Fortran order
    y, a : float64 ndarray (n,)
        The target and the sample weights (summing to 1).
    means : float64 ndarray (p,)
        :math:`\\bar x` (zeros without an intercept).
    target : float64 ndarray (p,)
        :math:`c = X^\\top A(y - \\bar y)`.
    order, starts : intp ndarray (p,), (n_blocks + 1,)
        The coordinates listed block after block, and where each block starts in ``order`` (then ``p``).
    unit : float64 ndarray (p,)
        :math:`w_j` at strength 1: a single coordinate's L1 weight (its group weight included), 0 in a group.
    group : float64 ndarray (n_blocks,)
        :math:`v_g` at strength 1: a group's weight, 0 for a single coordinate.
    gram_limit : int
        The most working-set coordinates whose columns and Gram matrix are kept (``n |ws| + |ws|^2``
        floats); a wider working set drops them and its gradient is read from the residual instead.
    lipschitz : callable
        Returns the blocks' :math:`L_g` (:meth:`normpen.linear.problem.Problem.block_lipschitz`, floored
        at 1), read by the checks' bounds (:meth:`_settle`) and the stop rule below the certifiable
        tolerance.
    eigen : callable
        ``eigen(rows)``: ``eigh`` of the centred Gram blocks of the features ``rows`` ``(blocks, size)``
        (:meth:`normpen.linear.problem.Problem.centred_eigen`, whose Gram cache keeps them: ``lipschitz``
        and the working set's groups share one decomposition of each block).
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
    cdef const double[::1] y, a, means, target, unit, group
    cdef const Py_ssize_t[::1] order, starts
    cdef double[::1] beta, z, G, grad, work, weight, blip
    cdef double ybar, syy, unit_ridge, b, lam_prev
    cdef bint positive, intercept, has_free
    cdef int n, p, nb, cap, width
    cdef public int ws_n, ws_nb
    cdef Py_ssize_t[::1] ws, wsb, wstart, bpos, found, iota
    cdef double[::1, :] Xws, Q
    cdef double[::1] beta_ws, g_ws, wlip, diag
    cdef public int gram_limit
    cdef bint uniform
    cdef public bint gram
    cdef double[:, ::1] values, b2, g2
    cdef double[:, :, ::1] vectors, bwork
    cdef double *stepped  # bwork[1]: a block's new coefficients
    cdef double *change  # bwork[0]: their changes
    cdef object free, model, lipschitz, eigen
    cdef bint settled
    cdef public double primal, dual
    cdef public int n_iter, n_epochs, n_gradients
    cdef double[::1] ref, G_ref, reach
    cdef unsigned char[::1] known
    cdef double drift, margin
    cdef bint bounded, solved
    cdef double[::1] previous, G_before, G_last  # the last two solutions' beta and G (extrapolation)
    # the kept residual (without the Gram matrix, _point), in the norm ||v|| = sqrt(sum_i v_i^2 / a_i): bounds
    # on how far G and G_before are from the exact residuals of their points (the rounding of the updates
    # since the last exact point), on the difference of these two errors, and on ||G|| during a solve; the
    # bound on the datafit read from G at the last point, and the most it may be
    cdef readonly double residual_error
    cdef double residual_error_before, residual_change, residual_reach, loss_error, allowance, lam_now
    cdef readonly int n_points
    cdef bint weights_positive
    cdef double lam_before
    cdef bint has_previous

    def __init__(
        self, X, y, a, means, target, order, starts, unit, group, gram_limit, lipschitz, eigen, unit_ridge,
        positive, fit_intercept, free, model
    ):
        self.X = X
        self.y, self.a, self.means, self.target = y, a, means, target
        self.order, self.starts, self.unit, self.group = order, starts, unit, group
        self.n, self.p, self.nb = X.shape[0], X.shape[1], group.shape[0]
        sizes = np.diff(starts)
        self.width = int(sizes.max(initial=1))
        # a block's weight in its dual norm: w_j for a single coordinate, v_g for a group
        self.weight = np.where(sizes > 1, group, np.asarray(unit)[np.asarray(order)[np.asarray(starts)[:-1]]])
        self.lipschitz, self.blip, self.eigen = lipschitz, None, eigen
        self.gram_limit, self.gram = gram_limit, True
        self.unit_ridge, self.positive, self.intercept = unit_ridge, positive, fit_intercept
        self.uniform = bool(np.all(np.asarray(a) == a[0]))
        self.weights_positive = bool(np.all(np.asarray(a) > 0))
        self.residual_error, self.residual_error_before, self.residual_change = 0.0, 0.0, 0.0
        self.residual_reach = 0.0
        self.allowance, self.loss_error, self.n_points, self.lam_now = 0.0, 0.0, 0, 0.0
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
        self.iota = np.arange(self.p, dtype=np.intp)
        self.bpos = np.full(self.nb, -1, dtype=np.intp)
        self.wsb = np.zeros(self.nb, dtype=np.intp)
        self.wstart = np.zeros(self.nb + 1, dtype=np.intp)
        self.ws = np.zeros(self.p, dtype=np.intp)
        self.found = np.zeros(self.p, dtype=np.intp)
        self.ref, self.G_ref, self.reach = np.zeros(self.p), np.zeros(self.n), None
        self.previous, self.lam_before, self.has_previous = np.zeros(self.p), 0.0, False
        self.G_before, self.G_last = np.zeros(self.n), np.zeros(self.n)
        self.known = np.ones(self.nb, dtype=np.uint8)
        self.drift, self.bounded = 0.0, False
        # the residual's move and the blocks' L_g (sums of n squares; an eigenvalue of a group's Gram block)
        # are within a relative (n + 2) eps of theirs (Higham's gamma_n, a square root and a product);
        # twice that again over covers both factors of a bound
        self.margin = 1.0 + 4.0 * (self.n + 2) * np.finfo(np.float64).eps
        self.bwork = np.zeros((2, self.width, 1))
        self.stepped, self.change = &self.bwork[1, 0, 0], &self.bwork[0, 0, 0]
        self.ws_n, self.ws_nb, self.cap = 0, 0, 0
        self._grow(16)

    def coef(self):
        """The coefficients (a view: copy before the next solve)."""
        return np.asarray(self.beta)

    def point(self):
        """``(z, b)``: the predictor :math:`X\\beta + b` and the intercept at the last check."""
        return np.asarray(self.z), self.b

    def start(self, const double[::1] beta, double lam_prev):
        """Move to ``beta`` (a warm start or a restart): the working set becomes the blocks of its support
        and the coordinates without weight, and the point is checked (residual and gradient)."""
        cdef int t
        for t in range(self.ws_nb):
            self.bpos[self.wsb[t]] = -1
        self.ws_n, self.ws_nb = 0, 0
        if not self.gram:
            self.gram, self.cap = True, 0
            self._grow(16)
        self.beta[:] = beta
        order, starts = np.asarray(self.order), np.asarray(self.starts)[:-1]
        held = np.add.reduceat((np.asarray(beta) != 0)[order], starts) if self.nb < self.p else np.asarray(beta)[order] != 0
        self._add(np.flatnonzero(held | (np.asarray(self.weight) == 0)).astype(np.intp))
        self._point(True)
        self._full_gradient()
        self.lam_prev, self.solved, self.has_previous = lam_prev, False, False

    cdef void _grow(self, int need):
        """Room for ``need`` working-set coordinates (doubling; with the Gram matrix at most ``gram_limit``),
        the held entries copied over; without it, its columns and Gram matrix are dropped."""
        cdef int cap = max(need, 2 * self.cap)
        cdef int k = self.ws_n
        if cap > self.p:
            cap = self.p
        if self.gram and cap > self.gram_limit:
            cap = max(self.gram_limit, need)
        if cap <= self.cap:
            return
        if self.gram:
            Xws = np.empty((self.n, cap), order="F")
            Q = np.empty((cap, cap), order="F")
            Xws[:, :k] = np.asarray(self.Xws)[:, :k] if k else 0.0
            Q[:k, :k] = np.asarray(self.Q)[:k, :k] if k else 0.0
        else:
            Xws, Q = np.empty((1, 1), order="F"), np.empty((1, 1), order="F")
        beta_ws, g_ws, wlip, diag = np.zeros(cap), np.zeros(cap), np.zeros(cap), np.zeros(cap)
        values, vectors = np.zeros((1, cap)), np.zeros((1, cap, self.width))
        if k:
            beta_ws[:k] = np.asarray(self.beta_ws)[:k]
            g_ws[:k] = np.asarray(self.g_ws)[:k]
            wlip[: self.ws_nb] = np.asarray(self.wlip)[: self.ws_nb]
            diag[:k] = np.asarray(self.diag)[:k]
            values[:, :k] = np.asarray(self.values)[:, :k]
            vectors[:, :k] = np.asarray(self.vectors)[:, :k]
        self.Xws, self.Q, self.beta_ws, self.g_ws, self.wlip, self.cap = Xws, Q, beta_ws, g_ws, wlip, cap
        self.diag = diag
        self.b2, self.g2 = beta_ws.reshape(cap, 1), g_ws.reshape(cap, 1)  # the layout of _exact_block
        self.values, self.vectors = values, vectors

    def _add(self, Py_ssize_t[::1] new):
        """Append the blocks ``new`` to the working set: their columns, their Gram rows and columns (one
        ``dgemm`` of :math:`X_{ws}^\\top A X_{new}`), coefficients and gradient entries, and each block's
        curvature (a coordinate's :math:`Q_{jj}`, a group's eigen-decomposition of :math:`Q_{gg}`)."""
        cdef int old = self.ws_n, total = old, i, c, t, j, r, k, g, groups = 0
        cdef double one = 1.0, zero = 0.0
        if new.shape[0] == 0:
            return
        for t in range(new.shape[0]):
            total += self.starts[new[t] + 1] - self.starts[new[t]]
        if self.gram and total > self.gram_limit:
            self.gram, self.cap = False, 0  # too wide for the Gram matrix: the residual's gradient from now
            self._reach()  # (at an exact point: the last one was formed with the Gram matrix)
            self._grow(total)
        if total > self.cap:
            self._grow(total)
        k = total - old
        scaled = np.empty((self.n, k if self.gram else 1), order="F")
        cdef double[::1, :] S = scaled
        t = old
        for r in range(new.shape[0]):
            g = new[r]
            self.bpos[g] = self.ws_nb
            self.wsb[self.ws_nb] = g
            self.wstart[self.ws_nb] = t
            self.ws_nb += 1
            groups += self.starts[g + 1] - self.starts[g] > 1
            for i in range(self.starts[g], self.starts[g + 1]):
                j = self.order[i]
                self.ws[t] = j
                if self.gram:
                    memcpy(&self.Xws[0, t], &self.X[0, j], self.n * sizeof(double))
                    for c in range(self.n):
                        S[c, t - old] = self.a[c] * self.X[c, j]
                else:  # the centred square norm
                    self.diag[t] = -self.means[j] * self.means[j]
                    for c in range(self.n):
                        self.diag[t] += self.a[c] * self.X[c, j] * self.X[c, j]
                self.beta_ws[t] = self.beta[j]
                self.g_ws[t] = self.grad[j]
                t += 1
        self.wstart[self.ws_nb] = total
        self.ws_n = total
        if self.gram:
            dgemm("T", "N", &total, &k, &self.n, &one, &self.Xws[0, 0], &self.n, &S[0, 0], &self.n, &zero,
                  &self.Q[0, old], &self.cap)
            if self.intercept:
                for t in range(k):
                    for i in range(total):
                        self.Q[i, old + t] -= self.means[self.ws[i]] * self.means[self.ws[old + t]]
            for t in range(k):  # the new rows of the old columns, by symmetry
                for i in range(old):
                    self.Q[old + t, i] = self.Q[i, old + t]
            for t in range(old, total):
                self.diag[t] = self.Q[t, t]
        for t in range(self.ws_nb - new.shape[0], self.ws_nb):
            self.wlip[t] = self.diag[self.wstart[t]]
        if groups:
            self._eigen(self.ws_nb - new.shape[0])

    def _eigen(self, int first):
        """The eigen-decompositions of the diagonal Gram blocks of the working set's groups from the
        ``first``-th on (the ``eigen`` callable's, one call per size; eigenvalues clamped at 0: the blocks
        are positive semi-definite), and their :math:`L_g`, the largest eigenvalue."""
        wstart = np.asarray(self.wstart)[first : self.ws_nb + 1]
        sizes = np.diff(wstart)
        for size in np.unique(sizes[sizes > 1]):
            slots = wstart[:-1][sizes == size, None] + np.arange(size)
            d, V = self.eigen(np.asarray(self.ws)[slots])
            d = np.maximum(d, 0.0)
            np.asarray(self.values)[0, slots] = d
            np.asarray(self.vectors)[0, slots, :size] = V
            np.asarray(self.wlip)[first + np.flatnonzero(sizes == size)] = d[:, -1]

    cdef void _residual(self):
        r"""The exact point (:meth:`_point`) and its gradient: from a path's second strength on, without
        unpenalized coordinates (whose projection of the dual point moves every block's gradient),
        formed where it is needed (:meth:`_settle`, on the working set always: no rounding is carried
        from the epochs' updates) and bounded elsewhere; else the full :math:`X^\top G` (a single fit's
        first check is far from its start: the blocks' :math:`L_g`, a pass over ``X``, would buy nothing
        there)."""
        cdef int i
        cdef double d = 0.0
        self._point(False)
        if self.has_free or (self.reach is None and not self.solved):
            self._full_gradient()
            return
        if self.reach is None:
            self.reach = np.sqrt(self._lipschitz()) * self.margin
        for i in range(self.n):
            if self.a[i] > 0:  # (a zero weight's G_i is 0 at every point)
                d += (self.G[i] - self.G_ref[i]) * (self.G[i] - self.G_ref[i]) / self.a[i]
        self.drift = sqrt(d) * self.margin
        memcpy(&self.grad[0], &self.ref[0], self.p * sizeof(double))
        self.known[:] = 0
        self.bounded = True

    cdef void _full_gradient(self) noexcept nogil:
        """The full gradient :math:`X^\top G` at the current point (one ``dgemv``), the working set's
        gradient reset to it, and the bounds' reference moved here."""
        cdef int k, one_i = 1
        cdef double one = 1.0, zero = 0.0
        dgemv("T", &self.n, &self.p, &one, <double*>&self.X[0, 0], &self.n, &self.G[0], &one_i, &zero,
              &self.grad[0], &one_i)
        for k in range(self.ws_n):
            self.g_ws[k] = self.grad[self.ws[k]]
        memcpy(&self.ref[0], &self.grad[0], self.p * sizeof(double))
        memcpy(&self.G_ref[0], &self.G[0], self.n * sizeof(double))
        self.drift, self.bounded = 0.0, False
        self.n_gradients += 1

    def _lipschitz(self):
        """The blocks' :math:`L_g` (the ``lipschitz`` callable's, formed on first use)."""
        if self.blip is None:
            self.blip = np.ascontiguousarray(self.lipschitz(), dtype=np.float64)
        return self.blip

    cdef void _settle(self, double level) noexcept nogil:
        r"""Make exact the gradient of the working set and of every block outside it whose magnitude
        (:meth:`_magnitude`) may reach ``level`` times its weight.

        Between full gradients a block's gradient is known from the reference point's,
        :math:`\nabla_g F = X_g^\top G_{\text{ref}} + X_g^\top(G - G_{\text{ref}})`, to within
        :math:`\rho_g = \sqrt{L_g}\,\|A^{-1/2}(G - G_{\text{ref}})\|` (Cauchy-Schwarz in the weighted norm:
        :math:`G = A(z - y)`, :math:`L_g = \|A^{1/2}(X_g - \mathbf 1\bar x_g^\top)\|_2^2` the block's Lipschitz
        constant of :meth:`~normpen.linear.problem.Problem.block_lipschitz`, its centring free with an
        intercept, where :math:`\sum_i(G - G_{\text{ref}})_i = 0`; the magnitude, a norm or a positive part
        of one, is 1-Lipschitz); a block whose bound stays below the level cannot reach it, and its
        stale entries (the reference's) read below the level too, so the strong rule, the optimality
        check and the certificate's dual norm (whose blocks below the dual ball's boundary count for
        nothing) are those of the exact gradient, to its rounding. The others are formed column by
        column (the working set's in one ``dgemv`` of its kept columns), or, past :data:`_SETTLE_SHARE` of
        the columns outside the working set, all at once (:meth:`_full_gradient`).
        """
        cdef int g, t, k, count = 0, columns = 0, i, j, one_i = 1
        cdef double one = 1.0, zero = 0.0
        if not self.bounded:
            return
        for g in range(self.nb):
            if self.known[g] or self.bpos[g] >= 0:
                continue
            if (self._magnitude(&self.grad[0], &self.order[self.starts[g]], self.starts[g + 1] - self.starts[g])
                    + self.reach[g] * self.drift >= level * self.weight[g]):
                self.found[count] = g
                count += 1
                columns += self.starts[g + 1] - self.starts[g]
        if columns > _SETTLE_SHARE * (self.p - self.ws_n):
            self._full_gradient()
            return
        if self.ws_nb and not self.known[self.wsb[0]]:
            if self.gram:
                dgemv("T", &self.n, &self.ws_n, &one, &self.Xws[0, 0], &self.n, &self.G[0], &one_i, &zero,
                      &self.g_ws[0], &one_i)
            else:
                self._gradient(0, self.ws_n)
            for k in range(self.ws_n):
                self.grad[self.ws[k]] = self.g_ws[k]
            for t in range(self.ws_nb):
                self.known[self.wsb[t]] = 1
        for i in range(count):
            g = self.found[i]
            for j in range(self.starts[g], self.starts[g + 1]):
                self.grad[self.order[j]] = ddot(&self.n, <double*>&self.X[0, self.order[j]], &one_i, &self.G[0],
                                                &one_i)
            self.known[g] = 1

    cdef void _point(self, bint exact) noexcept nogil:
        r"""The point of the working set's coefficients: :math:`z = X_{ws}\beta_{ws} + b` with the intercept
        refitted, :math:`b = \bar y - \bar x^\top\beta`, and :math:`G = A(z - y)`.

        Without the Gram matrix the epochs keep :math:`G` (:meth:`_move`), and unless ``exact`` the point
        is read from it, :math:`z = y + A^{-1}G` (every sample weight positive), where that is accurate
        enough: else it is formed anew (an ``axpy`` a nonzero column; on (d)'s late strengths 1,900
        columns of the 15,000 a strength reads). The kept residual is off by the rounding of its updates,
        at most :math:`E` in the norm :math:`\|v\| = (\sum_i v_i^2/a_i)^{1/2}` (accumulated in
        :meth:`_move` and :meth:`_extrapolate`); the datafit :math:`F = \tfrac12\|G\|^2` read from it is
        then off by at most :math:`E(R + E/2)`, :math:`R \ge \|G\|` the solve's bound. That is allowed
        up to :data:`_KEPT_SHARE` of :math:`\mathrm{tol}\,P_0`, so the certificate moves by a thousandth
        of its tolerance at most (the dual is that of the dual point the kept :math:`G` gives, exact).
        """
        cdef int i, k, one_i = 1
        cdef double one = 1.0, zero = 0.0, shift = 0.0
        cdef double loss_error = self.residual_error * (self.residual_reach + 0.5 * self.residual_error)
        for k in range(self.ws_n):
            self.beta[self.ws[k]] = self.beta_ws[k]
        if not (exact or self.gram) and self.weights_positive and loss_error <= self.allowance:
            if self.intercept:
                shift = self.ybar
                for k in range(self.ws_n):
                    shift -= self.means[self.ws[k]] * self.beta_ws[k]
            self.b = shift
            for i in range(self.n):
                self.z[i] = self.y[i] + self.G[i] / self.a[i]
            self.loss_error = loss_error
            return
        self.residual_error, self.residual_change, self.loss_error = 0.0, self.residual_error_before, 0.0
        self.n_points += 1
        if self.ws_n and self.gram:
            dgemv("N", &self.n, &self.ws_n, &one, &self.Xws[0, 0], &self.n, &self.beta_ws[0], &one_i, &zero,
                  &self.z[0], &one_i)
        else:
            for i in range(self.n):
                self.z[i] = 0.0
            for k in range(self.ws_n):
                if not self.gram and self.beta_ws[k] != 0:
                    daxpy(&self.n, &self.beta_ws[k], <double*>&self.X[0, self.ws[k]], &one_i, &self.z[0], &one_i)
        if self.intercept:
            for i in range(self.n):
                shift += self.a[i] * (self.y[i] - self.z[i])
        self.b = shift
        for i in range(self.n):
            self.z[i] += shift
            self.G[i] = self.a[i] * (self.z[i] - self.y[i])

    cdef void _reach(self) noexcept nogil:
        r"""The bound :math:`R` on the kept residual's norm for the rest of the solve, set where the residual
        starts to be kept (a solve without the Gram matrix, a switch from it): the objective only falls in
        the epochs without the Gram matrix (exact block steps; a start on the line is taken only where it
        is lower), so the datafit :math:`\tfrac12\|G\|^2` stays below the objective now (plus the
        residual's error)."""
        cdef double objective = self._residual_loss() + self._penalty(self.lam_now, &self.beta_ws[0])
        self.residual_reach = sqrt(2 * objective) + self.residual_error

    def solve(self, double lam, double tol, double scale, double eps, int max_iter, int max_epochs):
        """Solve at strength ``lam`` from the current point; returns ``(gap, threshold)``.

        The working set is solved before the first check (``max_iter = 0``: the current point is only
        checked). ``scale`` is :math:`P_0`, ``eps`` the rounding unit of ``X``'s dtype; ``primal``,
        ``dual``, ``n_iter`` (working-set rounds), ``n_epochs``, ``n_gradients`` (full gradients formed)
        and ``n_points`` (points formed anew, :meth:`_point`) are left on the object.
        """
        cdef double fraction = _INNER_FRACTION, gap, threshold, target, error, change
        cdef int rounds = 0, epochs = 0, found, sweep
        cdef bint coordinates
        self.n_gradients, self.n_points, self.lam_now = 0, 0, lam
        self.allowance = _KEPT_SHARE * tol * scale
        self._add(self.found[:self._outside(2 * lam - self.lam_prev, False)])
        if not self.gram:
            self._reach()
        if self.solved:
            memcpy(&self.G_last[0], &self.G[0], self.n * sizeof(double))
            error, change = self.residual_error, self.residual_change
            self.residual_change = 0.0  # (G is the snapshot G_before becomes, unless it moves on the line)
            if self.has_previous and self.lam_prev != self.lam_before:
                self._extrapolate(lam, change)
            memcpy(&self.previous[0], &self.beta[0], self.p * sizeof(double))
            self.G_before, self.G_last = self.G_last, self.G_before
            self.residual_error_before = error
            self.lam_before, self.has_previous = self.lam_prev, True
        while True:
            if rounds < max_iter and epochs < max_epochs:
                target = fraction * max(tol * scale, 64 * eps * fabs(self.primal))
                coordinates = self.gram and self.ws_n == self.ws_nb  # the model solve's: Q, single coordinates
                sweep = min(max_epochs - epochs, _SWEEP_EPOCHS if coordinates else max_epochs)
                epochs += self._epochs(lam, target, sweep)
                if not self.settled and coordinates and epochs < max_epochs:
                    epochs += self._model_solve(lam, target, max_epochs - epochs)
                rounds += 1
                self._residual()
            gap, threshold = self._check(lam, tol, scale, eps)
            if rounds >= max_iter or epochs >= max_epochs:
                break
            if self._stops(lam, tol, scale, eps, gap, threshold):
                break
            found = self._outside(lam, True)
            if found:
                self._add(self.found[:found])
            else:
                fraction *= _TIGHTEN
        self.lam_prev, self.solved = lam, True
        self.n_iter, self.n_epochs = rounds, epochs
        return gap, threshold

    cdef void _extrapolate(self, double lam, double change_bound):
        r"""Move the working set's coefficients along the line through the last two solutions to strength
        ``lam`` where that lowers the objective at ``lam``.

        On a face of fixed signs the solution is affine in :math:`\lambda` (the lasso's
        :math:`\beta_S = Q_{SS}^{-1}(c_S - \lambda w_S s)`), so the step
        :math:`\delta = t(\beta_1 - \beta_0)`, :math:`t = (\lambda - \lambda_1)/(\lambda_1 - \lambda_0)`,
        lands on the next solution while no sign changes (``cd._extrapolate``'s start, in the kernel). With
        the Gram matrix the datafit changes by :math:`\delta^\top(g + \tfrac12 Q\delta)` and the gradient by
        :math:`Q\delta` (one product of :math:`|ws|^2`); without it the residual moves on its own line,
        :math:`G_1 + t(G_1 - G_0)` (affine in the coefficients, the refitted intercept's too: no pass over
        the columns), and the datafit is :math:`\tfrac12\sum_i G_i^2/a_i`, the residual put back
        when the step is refused.
        """
        cdef int k, i, one_i = 1, n = self.ws_n
        cdef double step = (lam - self.lam_prev) / (self.lam_prev - self.lam_before), change = 0.0
        cdef double one = 1.0, zero = 0.0
        cdef bint moves = False
        steps = np.zeros(n)
        cdef double[::1] delta = steps
        for k in range(n):
            delta[k] = step * (self.beta[self.ws[k]] - self.previous[self.ws[k]])
            moves = moves or delta[k] != 0
        if not moves:
            return
        products, coefficients = np.zeros(n), np.empty(n)
        cdef double[::1] Qd = products, moved = coefficients
        if self.gram:
            dgemv("N", &n, &n, &one, &self.Q[0, 0], &self.cap, &delta[0], &one_i, &zero, &Qd[0], &one_i)
            for k in range(n):
                change += delta[k] * (self.g_ws[k] + 0.5 * Qd[k])
        else:
            memcpy(&self.work[0], &self.G[0], self.n * sizeof(double))
            change = -self._residual_loss()
            for i in range(self.n):
                self.G[i] += step * (self.G[i] - self.G_before[i])
            change += self._residual_loss()
        for k in range(n):
            moved[k] = self.beta_ws[k] + delta[k]
        change += self._penalty(lam, &moved[0]) - self._penalty(lam, &self.beta_ws[0])
        if not change < 0:  # (an infinite or undefined change too)
            if not self.gram:
                memcpy(&self.G[0], &self.work[0], self.n * sizeof(double))
            return
        if not self.gram:
            # G1 + t(G1 - G0) is off by e1 + t(e1 - e0) (``change_bound`` bounds e1 - e0) and rounds each
            # entry by at most _ROUNDING (|G_i| + 2|t (G1 - G0)_i|): 5 R in norm (a move of at most 2 R)
            self.residual_change = fabs(step) * change_bound + 5 * _ROUNDING * self.residual_reach
            self.residual_error += self.residual_change
        for k in range(n):
            self.beta_ws[k] = moved[k]
            if self.gram:
                self.g_ws[k] += Qd[k]

    cdef double _residual_loss(self) noexcept nogil:
        r"""The datafit from the kept residual,
        :math:`\tfrac12\sum_i a_i(z_i - y_i)^2 = \tfrac12\sum_i G_i^2/a_i`."""
        cdef int i
        cdef double total = 0.0
        for i in range(self.n):
            if self.a[i] > 0:
                total += self.G[i] * self.G[i] / self.a[i]
        return 0.5 * total

    cdef double _penalty(self, double lam, const double *beta) noexcept nogil:
        """The penalty at strength ``lam`` of coefficients ``beta`` on the working set's slots (infinite where
        positivity is violated)."""
        cdef int t, k
        cdef double total = 0.0, norm, b, mu = lam * self.unit_ridge
        for t in range(self.ws_nb):
            norm = 0.0
            for k in range(self.wstart[t], self.wstart[t + 1]):
                b = beta[k]
                if self.positive and b < 0:
                    return INFINITY
                total += lam * self.unit[self.ws[k]] * fabs(b) + 0.5 * mu * b * b
                norm += b * b
            if self.group[self.wsb[t]] > 0:
                total += lam * self.group[self.wsb[t]] * sqrt(norm)
        return total

    cdef int _outside(self, double level, bint strict) noexcept nogil:
        """Write into ``found`` the blocks outside the working set whose gradient reaches ``level`` times
        their weight (strictly: violators of the optimality conditions at zero; else the sequential
        strong rule's level :math:`2\\lambda - \\lambda_{\\text{prev}}`); returns how many."""
        cdef int g, count = 0
        cdef double excess
        self._settle(level)
        for g in range(self.nb):
            if self.bpos[g] >= 0:
                continue
            excess = self._magnitude(&self.grad[0], &self.order[self.starts[g]],
                                     self.starts[g + 1] - self.starts[g]) - level * self.weight[g]
            if excess > 0 or (excess == 0 and not strict):
                self.found[count] = g
                count += 1
        return count

    cdef inline double _magnitude(self, const double *V, const Py_ssize_t *rows, int size) noexcept nogil:
        """A block's magnitude in its dual norm (the dual norm is it over the block's weight): for one
        coordinate :math:`|V_j|` (:math:`-V_j` with positivity), for a group :math:`\\|V_g\\|`
        (:math:`\\|(-V_g)_+\\|`)."""
        cdef int r
        cdef double v, total = 0.0
        if size == 1:
            return -V[rows[0]] if self.positive else fabs(V[rows[0]])
        for r in range(size):
            v = -V[rows[r]]
            if v > 0 or not self.positive:
                total += v * v
        return sqrt(total)

    cdef inline double _dual_part(self, double magnitude, double weight, double mu, double *kappa) noexcept nogil:
        """One block's part of the dual: with :math:`\\mu > 0` its conjugate's term
        :math:`(m - w)_+^2` (returned; divided by :math:`2\\mu` by the caller), else 0 with ``kappa``
        raised to its dual norm :math:`m / w` (a penalized block)."""
        if mu > 0:
            return (magnitude - weight) * (magnitude - weight) if magnitude > weight else 0.0
        if weight > 0 and magnitude > kappa[0] * weight:
            kappa[0] = magnitude / weight
        return 0.0

    cdef int _model_solve(self, double lam, double target, int max_epochs):
        """The working set (single coordinates) solved by ``minimize_coordinates`` from the current point to
        the working-set gap ``target`` (:class:`normpen.linear.solvers.cd._LeastSquaresGap`'s test, whose
        unpenalized coordinates need the pseudo-inverse of their Gram block); returns the epochs used."""
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

    cdef inline void _block_step(self, int t, double lam, double mu) noexcept nogil:
        r"""The new coefficients of the working set's ``t``-th block into ``bwork[1]``: a group's exact
        minimiser of the model over it (:func:`_exact_block`, without positivity), else the proximal step
        :math:`S_{v_g}(S_{w}(L\beta_g - g_g)) / (L + \mu)` with :math:`L = L_g` (for one coordinate,
        :math:`L = Q_{jj}`, its exact minimiser)."""
        cdef int s = self.wstart[t], size = self.wstart[t + 1] - self.wstart[t], r
        cdef double v = lam * self.group[self.wsb[t]], L = self.wlip[t], u, norm = 0.0, shrink
        if v == 0:  # a single coordinate: its soft-thresholded step, exact
            self.stepped[0] = _soft(L * self.beta_ws[s] - self.g_ws[s], lam * self.unit[self.ws[s]],
                                        self.positive) / (L + mu)
            return
        if not self.positive and _exact_block(
            self.values, self.vectors, self.g2, self.b2, s, size, True, v, mu, self.bwork
        ):
            return
        for r in range(size):
            u = _soft(L * self.beta_ws[s + r] - self.g_ws[s + r], lam * self.unit[self.ws[s + r]], self.positive)
            self.stepped[r] = u
            norm += u * u
        norm = sqrt(norm)
        shrink = _soft(norm, v, False) / norm if norm > 0 else 0.0
        for r in range(size):
            self.stepped[r] = self.stepped[r] * shrink / (L + mu)

    cdef int _epochs(self, double lam, double target, int max_epochs):
        """Cyclic epochs over the working set's blocks until an epoch's largest decrease and (with the Gram
        matrix) the working set's gap are at most ``target`` (at least one epoch); returns the epochs run.

        After an epoch that changed no coordinate's zero pattern, once the epochs since the last face
        step have cost (in multiply-adds, times :data:`_FACE_SPEED`) what a face step costs, a face step
        (:meth:`_face_step`) is taken; and once at the stop when it costs less than an epoch (small
        supports then end on their face, exactly, as coordinate descent's support polish).

        Without the Gram matrix a zero block's visit costs a gradient (:math:`n|g|`, where with it a
        zero coordinate costs one comparison), so after a full epoch the epochs visit the nonzero blocks
        alone until their decrease is at most ``target`` (the active-set cycling of glmnet and adelie).
        Then the check decides (:meth:`solve`), not the working set's gap: formed from the residual, that
        gap costs a pass over the working set's columns, the very pass the check's gradient makes
        (:meth:`_settle`), and a check that finds the working set unsolved (no block outside violating,
        the gap above the tolerance) tightens the target and returns here. On (d) at tol 1.7e-3 the
        working-set gap missed at a few strengths where the check would have passed (epochs 84 -> 79,
        checks 50 both), and dropping it took 195 / 191 / 192 / 208 to 166 / 176 / 161 / 172 ms (4
        interleaved rounds, best of 5, one thread, 2026-12-07).
        """
        cdef int t, k, r, s, size, epochs = 0, one_i = 1, n = self.ws_n, active, i
        cdef bint switched, polished = False, full = True
        cdef double mu = lam * self.unit_ridge, old, new, delta, moved, decrease, work = 0.0, face
        self.settled = False
        while epochs < max_epochs:
            epochs += 1
            moved = 0.0
            switched = False
            active = 0
            for t in range(self.ws_nb):
                if self.wlip[t] <= 0:
                    continue
                s, size = self.wstart[t], self.wstart[t + 1] - self.wstart[t]
                if not full and self._zero(s, s + size):
                    continue
                if not self.gram:
                    self._gradient(s, s + size)
                self._block_step(t, lam, mu)
                decrease = 0.0
                for r in range(size):
                    k = s + r
                    old, new = self.beta_ws[k], self.stepped[r]
                    self.change[r] = new - old
                    if new != old:
                        delta = new - old
                        self.beta_ws[k] = new
                        if self.gram:
                            daxpy(&n, &delta, &self.Q[0, k], &one_i, &self.g_ws[0], &one_i)
                        work += n
                        switched = switched or old == 0 or new == 0
                        decrease += self.diag[k] * delta * delta
                    if new != 0 and size == 1 and self.gram:  # face steps need the Gram matrix
                        active += 1
                if decrease > 0 and not self.gram:
                    self._move(s, size)
                if decrease > moved:
                    moved = decrease
            face = active * (active * active / 3.0 + n)
            if not full:  # (without the Gram matrix) the nonzero blocks, until they settle
                if moved <= target:
                    self.settled = True
                    break
                continue
            full = self.gram
            # without the Gram matrix a call's first epoch that changed the zero pattern (blocks entering
            # from the strong rule) is not taken as the last: on the group lasso (d) at tol 1.7e-3 the
            # working set was unsolved after such an epoch at 18 of 19 strengths
            if self.gram:
                self.settled = moved <= target and self._working_gap(lam) <= target
            else:
                self.settled = moved <= target and not switched
            if self.settled:
                if polished or switched or active == 0 or face > _FACE_SPEED * active * n:
                    break
                polished = True  # a face step cheaper than an epoch: small supports end on their face
                self._face_step(lam)
            elif active and _FACE_SPEED * work >= face:
                self._face_step(lam)
                work = 0.0
        return epochs

    cdef inline bint _zero(self, int first, int last) noexcept nogil:
        """Whether the working set's coefficients on the slots ``first`` to ``last`` are all zero."""
        cdef int k
        for k in range(first, last):
            if self.beta_ws[k] != 0:
                return False
        return True

    cdef void _gradient(self, int first, int last) noexcept nogil:
        """Without the Gram matrix: the working set's gradient on the slots ``first`` to ``last`` from the
        residual, :math:`x_j^\top G` (:math:`G` sums to 0 with an intercept, so the centring drops out; a
        dot product a column: a group's adjacent columns in one ``dgemv`` took 1.75 against 1.42 us for
        five columns of 1,000, gradient and move)."""
        cdef int k, one_i = 1
        for k in range(first, last):
            self.g_ws[k] = ddot(&self.n, <double*>&self.X[0, self.ws[k]], &one_i, &self.G[0], &one_i)

    cdef void _move(self, int first, int size) noexcept nogil:
        """Without the Gram matrix: the block on the slots ``first`` to ``first + size`` moved by the
        changes in ``bwork[0]``, the residual follows, :math:`G \mathrel{+}= A\sum_j\delta_j(x_j - \bar x_j)`
        (with equal sample weights :math:`a_0`: an axpy a moved column, and one axpy of :math:`a` for the
        centring); the bounds on the kept residual's error grow by these updates' rounding
        (:meth:`_point`)."""
        cdef int i, r, j, one_i = 1, updates = 1
        cdef double shift = 0.0, step, moved_norm = 0.0, m, rounding
        cdef double *G = &self.G[0]
        cdef const double *x
        cdef const double *a = &self.a[0]
        for r in range(size):
            m = self.means[self.ws[first + r]]
            shift -= self.change[r] * m
            if self.change[r] != 0:  # its update's norm: |delta| (sum_i a_i x_i^2)^(1/2)
                moved_norm += fabs(self.change[r]) * sqrt(max(self.diag[first + r] + m * m, 0.0))
                updates += 1
        # each update rounds G's entries by at most _ROUNDING (|G_i| + |Delta_i|), G at most R plus the moves
        rounding = _ROUNDING * updates * (self.residual_reach + 2 * (moved_norm + fabs(shift)))
        self.residual_error += rounding
        self.residual_change += rounding
        if self.uniform:
            for r in range(size):
                step = self.change[r] * a[0]
                if step != 0:
                    daxpy(&self.n, &step, <double*>&self.X[0, self.ws[first + r]], &one_i, G, &one_i)
            if shift != 0:
                daxpy(&self.n, &shift, <double*>a, &one_i, G, &one_i)
            return
        for r in range(size):
            j = self.ws[first + r]
            x = &self.X[0, j]
            step = self.change[r]
            if step != 0:
                for i in range(self.n):
                    G[i] += a[i] * step * x[i]
        for i in range(self.n):
            G[i] += a[i] * shift

    cdef void _face_step(self, double lam):
        r"""A Newton step on the face of the current signs of the single coordinates (the groups held): on
        their nonzero coordinates :math:`A`, with :math:`H = Q_{AA} + \mu I` and
        :math:`\nabla_A = g_A + \mu\beta_A + w_A\operatorname{sign}\beta_A`, :math:`d = -H^{-1}\nabla_A` on
        the coordinates of a pivoted Cholesky factor of :math:`H`'s numerical rank (``dpstrf``; the others
        keep their values: with more coordinates than samples :math:`H` is singular), shortened to the
        first coordinate it would take through zero (set to zero there). The model is quadratic on the
        face and decreases along :math:`d` up to :math:`t = 1`, so every step taken lowers it."""
        cdef int k, i, c, t, m = 0, rank = 0, info = 0, one_i = 1, n = self.ws_n, blocked = -1
        cdef double mu = lam * self.unit_ridge, step_t = 1.0, b, step, cutoff = -1.0
        for t in range(self.ws_nb):
            k = self.wstart[t]
            if self.wstart[t + 1] - k == 1 and self.beta_ws[k] != 0:
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
            if b * dv[i] < 0 and -b / dv[i] < step_t:
                step_t, blocked = -b / dv[i], i
        for i in range(m):
            k = self.found[i]
            step = -self.beta_ws[k] if i == blocked else step_t * dv[i]
            if step != 0:
                self.beta_ws[k] = 0.0 if i == blocked else self.beta_ws[k] + step
                daxpy(&n, &step, &self.Q[0, k], &one_i, &self.g_ws[0], &one_i)

    cdef double _working_gap(self, double lam) noexcept nogil:
        r"""With the Gram matrix: the duality gap of the problem restricted to the working set, from Gram
        quantities: :math:`F = \tfrac12(\beta^\top g - c^\top\beta + s_{yy})` and
        :math:`\sum_i a_i u_i y_i = c^\top\beta - s_{yy}` for :math:`u = X_c\beta - y_c`."""
        cdef int k, t, s
        cdef double bg = 0.0, cb = 0.0, kappa = 1.0, conj = 0.0, loss, pen
        cdef double mu = lam * self.unit_ridge
        for t in range(self.ws_nb):
            s = self.wstart[t]
            for k in range(s, self.wstart[t + 1]):
                bg += self.beta_ws[k] * self.g_ws[k]
                cb += self.target[self.ws[k]] * self.beta_ws[k]
            conj += self._dual_part(
                self._magnitude(&self.g_ws[0], &self.iota[s], self.wstart[t + 1] - s),
                lam * self.weight[self.wsb[t]], mu, &kappa,
            )
        loss = 0.5 * (bg - cb + self.syy)
        if mu > 0:
            conj /= 2 * mu
        pen = self._penalty(lam, &self.beta_ws[0])
        return loss + pen + (cb - self.syy) / kappa + loss / (kappa * kappa) + conj

    cdef tuple _check(self, double lam, double tol, double scale, double eps):
        """The gap of :meth:`Problem.duality_gap` at the current point, plus the bound on the datafit's error
        where the point was read from the kept residual (:meth:`_point`), and its threshold."""
        cdef int i, j, g, r
        cdef double loss = 0.0, pen = 0.0, kappa = 1.0, conj = 0.0, dual = 0.0, rr, u, norm
        cdef double mu = lam * self.unit_ridge
        cdef double[::1] V, U = self.work
        self._settle(lam)
        V = self.grad
        for i in range(self.n):
            rr = self.z[i] - self.y[i]
            loss += self.a[i] * 0.5 * rr * rr
        for j in range(self.p):
            pen += lam * self.unit[j] * fabs(self.beta[j])
            if mu > 0:
                pen += 0.5 * mu * self.beta[j] * self.beta[j]
        for g in range(self.nb if self.nb < self.p else 0):  # (no groups: no group norms)
            if self.group[g] > 0:
                norm = 0.0
                for r in range(self.starts[g], self.starts[g + 1]):
                    norm += self.beta[self.order[r]] * self.beta[self.order[r]]
                pen += lam * self.group[g] * sqrt(norm)
        if self.has_free:  # the projection of Problem.free_projection (normpen.linear.problem.project_free)
            residual = np.asarray(self.z) - np.asarray(self.y)
            projected, correction = _project(self.free, residual)
            V = np.asarray(self.grad) - correction
            U = projected
        else:
            for i in range(self.n):
                U[i] = self.z[i] - self.y[i]
        for g in range(self.nb):
            conj += self._dual_part(
                self._magnitude(&V[0], &self.order[self.starts[g]], self.starts[g + 1] - self.starts[g]),
                lam * self.weight[g], mu, &kappa,
            )
        if mu > 0:
            conj /= 2 * mu
        for i in range(self.n):
            u = U[i] / kappa
            dual -= self.a[i] * (u * self.y[i] + 0.5 * u * u)
        self.primal = loss + pen
        self.dual = dual - conj
        threshold = max(tol * scale, 64 * eps * fabs(self.primal))
        return self.primal - self.dual + self.loss_error, threshold

    cdef bint _stops(self, double lam, double tol, double scale, double eps, double gap, double threshold):
        """:func:`normpen.linear.solvers.cd._stops`: the gap at ``threshold``, and below the certifiable
        tolerance every block's prox-gradient residual :math:`L_g\\|\\beta_g - \\operatorname{prox}(
        \\beta_g - \\nabla_g F/L_g)\\|` at the gradient's rounding :math:`64\\epsilon\\max|\\nabla F|`."""
        cdef int g, r, j
        cdef double L, u, moved, norm, shrink, v, worst = 0.0, largest = 0.0, mu = lam * self.unit_ridge
        if gap > threshold:
            return False
        if scale <= 0 or tol >= 64 * eps * fabs(self.primal) / scale:
            return True
        if self.bounded:  # every block's residual is read
            self._full_gradient()
        cdef double[::1] lip = self._lipschitz()
        for g in range(self.nb):
            L = lip[g]
            v = lam * self.group[g] / L
            norm = 0.0
            for r in range(self.starts[g], self.starts[g + 1]):  # the shrunk point, then the group scaling
                j = self.order[r]
                u = _soft(self.beta[j] - self.grad[j] / L, lam * self.unit[j] / L, self.positive)
                self.work[r] = u
                norm += u * u
            shrink = 1.0
            if v > 0:
                norm = sqrt(norm)
                shrink = _soft(norm, v, False) / norm if norm > 0 else 0.0
            norm = 0.0
            for r in range(self.starts[g], self.starts[g + 1]):
                j = self.order[r]
                moved = self.beta[j] - self.work[r] * shrink / (1 + mu / L)
                norm += moved * moved
                largest = max(largest, fabs(self.grad[j]))
            worst = max(worst, L * sqrt(norm))
        return worst <= 64 * eps * largest


def _project(free, residual):
    """``normpen.linear.problem.project_free`` (imported here, not at the module's import)."""
    from normpen.linear.problem import project_free

    return project_free(free, residual)
