r"""Linear SVMs: the soft margin by dual coordinate descent and an interior point, the hard margin exactly.

Soft margin (:func:`linear_svm`), in normpen's convention (datafits averaged
over samples, L2 as :math:`\tfrac\lambda2\|w\|^2`), with labels
:math:`y_i \in \{-1, +1\}`, sample weights :math:`s_i` and :math:`a_i = s_i/\sum_k s_k`:

.. math::

    \min_{w, b}\; P(w, b) = \frac\lambda2\|w\|^2 + \sum_i a_i\, \varphi\big(y_i(x_i^\top w + b)\big),
    \qquad \varphi(t) = \max(0, 1-t) \text{ (hinge) or } \max(0, 1-t)^2 \text{ (squared hinge)}.

Dividing by :math:`\lambda` gives liblinear's :math:`\tfrac12\|w\|^2 + \sum_i C_i\varphi(\cdot)`
with :math:`C_i = a_i/\lambda`; without weights that is scikit-learn's
``LinearSVC(C=1/(n*lam))`` (with ``sample_weight=s``: ``C = 1/(lam*sum(s))``),
except for the intercept, which liblinear penalizes and normpen does not.

The dual, in liblinear's scale (:math:`\alpha_i = \beta_i/\lambda`), is the QP

.. math::

    \min_{\alpha}\; \tfrac12 \alpha^\top(ZZ^\top + D)\alpha - \textstyle\sum_i \alpha_i
    \quad\text{s.t.}\quad 0 \le \alpha_i \le U_i,\qquad y^\top\alpha = 0 \text{ (with an intercept)},

with :math:`Z = \operatorname{diag}(y)X`, :math:`U_i = C_i, D = 0` (hinge) or
:math:`U_i = \infty, D_{ii} = 1/(2C_i)` (squared hinge), and :math:`w = Z^\top\alpha`.
The unpenalized intercept is the multiplier of the equality; it is what makes
the hinge SVM hard for coordinate methods (a single coordinate step cannot keep
:math:`y^\top\alpha = 0`: liblinear penalizes :math:`b` instead, libsvm updates pairs).

**Interior point** (when the smaller side of the data, samples of positive
weight or features, is at most ``_DIRECT_LIMIT`` and an iteration costs at most
``_FLOP_LIMIT`` flops, after coordinate descent under a budget: "Routing"
below). Mehrotra's
predictor-corrector on this QP, the linear-SVM method of Ferris and Munson
(SIAM J. Optim. 2002): each iteration solves the Newton system
:math:`(ZZ^\top + M)\Delta\alpha + y\,\Delta b = r`, :math:`y^\top\Delta\alpha = -y^\top\alpha`
(:math:`M` diagonal) by one Cholesky factorization of the smaller side,
:math:`I + Z^\top M^{-1}Z` (:math:`p+1`-square, Woodbury) or :math:`ZZ^\top + M`
(:math:`n`-square), so an iteration costs :math:`O(n\,p\min(n, p))` flops in
BLAS 3 and the number of iterations (10 to 25 here) barely depends on
:math:`C` or the accuracy asked. The equality holds at every iterate, so every
iterate is a feasible dual point. Once the gap is small the iterate names the
active set (:math:`\alpha_i` at 0, at :math:`U_i`, or free), and a crossover
solves the free samples' KKT equations (they lie exactly on the margin) with
the intercept: that lands on the exact solution, accepted when its
certificate says so. When the dual solution is not unique (more free samples
than :math:`p + 1`, e.g. :math:`w^\star = 0`) those equations are singular, the
Newton systems grow ill-conditioned as :math:`\mu \to 0` and rounding stalls
the iterates near a gap of :math:`10^{-9}` of :math:`P_0`; the crossover then takes
the solution nearest the iterate (least squares), retried as the iterate comes
closer, and the best certified iterate is the one returned.

**Float64 floor.** The certified gap cannot fall below the rounding of the
certificate at the exact solution: the float64 :math:`\alpha` nearest it, and the
margins :math:`y_i(x_i^\top w + b)` computed from it, carry relative errors of
order :math:`\varepsilon` times :math:`\|\,|Z|^\top\alpha\|` and :math:`|x_i|^\top|w| + |b|`, which
exceed :math:`P` by orders of magnitude at large :math:`C`. Measured: :math:`1.4\cdot10^{-10}`
of :math:`P` on 120 samples at :math:`C = 10^4`, :math:`1.2\cdot10^{-12}` on 5000 x 500 at
:math:`C = 1`; a crossover refined with residuals in extended precision ends at the same order.
A ``tol`` below it cannot be met, and past it the interior point only drives
:math:`\mu \to 0`: its Newton systems become singular to float64 (on the Woodbury
side the factorization loses every digit, the iterates wander, and the
factorization fails; on the :math:`n` side :math:`S/\alpha` overflows). So the iterations
stop when :math:`S/\alpha` overflows, when a factorization fails, or when the
iterate's own gap :math:`\lambda(\alpha^\top s + (U - \alpha)^\top t)` is below
:math:`\varepsilon\min(P_0, P)`, and the best certified point is returned with a warning
giving the accuracy reached. On the 5000 x 500 problem the wandering takes 65
iterations after the best point (85 in all, against 17 to it); where the
factorization keeps succeeding it can last until ``max_iter``.

**Squared hinge with fewer features than samples** (first on a dense design, after the
screening below on a sparse one, in place of the interior point): Newton
steps on the primal with exact line searches (:func:`_finite_newton`, Keerthi and
DeCoste's modified finite Newton method): the primal is a convex piecewise
quadratic, each step minimises the quadratic of the current active set exactly
(one :math:`p`-square Cholesky factorization of a matrix kept across steps and
updated by the samples that join or leave the margin), and the exact line search
moves to the piece where the objective is lowest along the step, so the steps end
on the optimal piece after finitely many (1 to 24 measured), where the gap is the
rounding of :math:`P`. Each iterate is certified through the dual point
:math:`\alpha_i = 2a_i\xi_i/\lambda` it names. A solve that stops short (``max_iter``,
a step that no longer lowers :math:`P`, a system float64 cannot factorize) hands its
best point to the route below as a warm start where its gap is below that of the point
it started from (those certificates scale with :math:`1/\lambda` until the last steps).
(:func:`_newton_stage` has the measurements behind the choice.)

**Routing.** A problem whose interior-point iteration fits goes first to dual
coordinate descent under a work budget, ``_SCREEN_FRACTION`` (0.15) of the
interior point's estimated cost (:func:`_interior_point_ns`, a cost model in
nanoseconds whose constants were measured; coordinate descent counts its own
work in the same units, so the budget is a count, not a clock, and the iterates
depend on ``random_state`` alone). If it certifies the gap within the budget
that is the answer; otherwise its dual point is handed to the interior point,
which certifies it at once when it can and otherwise starts halfway between it
and the box's centre. Measured on 32 problems (dense and sparse, hinge and
squared hinge, :math:`C` from 0.01 to 1000, with and without intercept), the
work coordinate descent needed was either under 0.11 of the estimate (sparse
problems at small or moderate :math:`C`: 6 to 50 times faster than the
interior point) or above 0.4 (mostly above 1: dense designs, large :math:`C`),
so 0.15 takes every case of the first kind with a margin of 35% while a
problem of the second kind pays about 15% of an interior-point solve (more
where the estimate exceeds the measured time; ``docs/linear.md``). Larger
problems, whose interior-point iteration does not fit, go to dual coordinate
descent alone.

**Dual coordinate descent** (screening, and larger problems): the algorithm of Hsieh, Chang,
Lin, Keerthi and Sundararajan (ICML 2008), liblinear's, with :math:`w`
kept up to date so a coordinate step costs one sparse row (the epoch is compiled,
:mod:`normpen.linear.solvers._dual_sweeps`), a fresh random
permutation every epoch, and variables stuck at a bound shrunk as in the
paper's Algorithm 3. The equality is kept by the method of multipliers: each
outer step minimises
:math:`\tfrac12\alpha^\top\bar Q\alpha - \sum\alpha_i + \beta_k\, y^\top\alpha + \tfrac\rho2 (y^\top\alpha)^2`
by coordinate descent (the coordinate gradient is the hinge's with the running
intercept :math:`b = \beta_k + \rho\, y^\top\alpha`), then sets
:math:`\beta_{k+1} = \beta_k + \rho\, y^\top\alpha`: the proximal-point method on
the intercept, with inner solves to a projected-gradient tolerance that
shrinks tenfold per outer step. The design is centred implicitly,
:math:`\tilde x_i = x_i - \bar x` with :math:`\bar x = \sum_i a_i x_i`, which decouples
the intercept from :math:`w`, and :math:`\rho = 0.1\,\overline{\|\tilde x_i\|^2} + 4\lambda`:
the :math:`4\lambda` lets the intercept move by :math:`O(1)` per outer step at
small :math:`C`, where :math:`y^\top\alpha \le \sum_i C_i = 1/\lambda` is small
(with :math:`\rho` from the data alone the intercept crawled there).

**Certificate** (both methods). The gap :math:`P(w, b) - D(\tilde\alpha)`, where
:math:`\tilde\alpha` is :math:`\alpha` clipped to the box with the heavier class
scaled down so that :math:`y^\top\tilde\alpha = 0` (a feasible dual point). The
interior point takes :math:`w = Z^\top\tilde\alpha` and :math:`b` the exact best
intercept for :math:`w` (a weighted median for the hinge, whose optimal
:math:`b` can be a whole interval); coordinate descent its running
:math:`(w, b)`. :math:`D` is the dual objective in our
scale, from the datafit's conjugate
(:meth:`normpen.linear.datafits.base.Datafit.dual`) at
:math:`u_i = -\lambda\tilde\alpha_i y_i / a_i`. The solve stops when the gap is
at most ``tol`` times :math:`\min(P_0, P)`, :math:`P_0` the objective at
:math:`w = 0` (with the best constant intercept) and :math:`P` the current one,
and warns with the gap it reached otherwise. The second term matters at large
:math:`C`: there :math:`P^\star \ll P_0` (:math:`P_0 \approx 1`,
:math:`P^\star \approx 10^{-5}` at :math:`C = 1000` on separable data), and a gap
of ``tol`` times :math:`P_0` alone left the objective :math:`10^{-6}` above the
optimum *relative to it* and the coefficients :math:`10^{-3}` off at ``tol=1e-10``.

Hard margin (:func:`hard_margin_svm`), seed 004's "minimise the norm subject to
the margin":

.. math::

    \min_{w,b}\; \tfrac12\|w\|^2 \quad\text{s.t.}\quad y_i(x_i^\top w + b) \ge 1 \;\; \forall i .

Separability is decided first by a linear program (HiGHS through
:func:`scipy.optimize.linprog`): the constraints are feasible exactly when the
data are strictly linearly separable, and an infeasible program raises
:class:`NotSeparableError`. From the feasible point of that program a primal
active-set method (Nocedal and Wright, Algorithm 16.3) solves the QP exactly: on
a working set :math:`W` of constraints held at equality the minimiser follows
from the small linear system

.. math::

    \begin{pmatrix} K_{WW} & y_W \\ y_W^\top & 0\end{pmatrix}
    \begin{pmatrix} \alpha_W \\ b \end{pmatrix} = \begin{pmatrix} 1 \\ 0 \end{pmatrix},
    \qquad K_{ij} = y_iy_j x_i^\top x_j,\quad w = \textstyle\sum_{i\in W}\alpha_i y_i x_i,

a ratio test adds the first constraint that blocks the step, and a negative
multiplier drops its constraint. At exit every KKT condition holds to rounding:
the residuals are returned as a certificate.
"""

from __future__ import annotations

import itertools
import math
import warnings
from functools import cached_property, partial
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg import LinAlgError, cho_factor, cho_solve, lstsq
from scipy.linalg.blas import dsyrk as syrk
from scipy.optimize import linprog
from sklearn.exceptions import ConvergenceWarning

from normpen._array import check_positive
from normpen.linear._validation import check_count, check_tol
from normpen.linear.datafits.hinge import Hinge
from normpen.linear.datafits.squared_hinge import SquaredHinge
from normpen.linear.problem import Problem, Solution, relative_stop
from normpen.linear.solvers._dual_sweeps import epoch_dense, epoch_sparse

__all__ = [
    "NotSeparableError",
    "LinearSVMResult",
    "HardMarginResult",
    "linear_svm",
    "hard_margin_svm",
    "solve",
]

_DATAFITS = {"hinge": Hinge(), "squared_hinge": SquaredHinge()}
_TO_BOUNDARY = 0.99  # fraction of the step to the boundary of the positive orthant
_RHO_SCALE, _RHO_LAM = 0.1, 4.0  # coordinate descent: rho = 0.1 mean ||x_i - c||^2 + 4 lam
_POLISH_FROM = 1e-3  # crossover and refined solves once the gap is below this fraction of P(0)
_CROSSOVER_LIMIT = 3000  # largest number of free variables the crossover solves for
_RETRY_GAIN = 100.0  # the crossover retries a guess once the gap has fallen this many times
_DIRECT_LIMIT = 3000  # largest smaller side (samples or features) the interior point factorizes
_FLOP_LIMIT = 2e10  # largest work per interior-point iteration; coordinate descent beyond
_SCREEN_FRACTION = 0.15  # dual CD runs first for this fraction of the interior point's estimated cost
# the cost model of that budget, in nanoseconds of one core (_interior_point_ns, _DualCoordinateDescent)
_IP_ITERATIONS, _CROSSOVER_ATTEMPTS = 12, 4  # typical counts of an interior-point solve
_NS_IP_STEP, _NS_IP_ROW = 250e3, 300.0  # an interior-point iteration's fixed cost and cost per sample
_NS_FLOP = 0.025  # a dense BLAS-3 or LAPACK flop of its factorizations
_NS_PAIR, _NS_OUTPUT = 2.5, 20.0  # a sparse product's (csr_matmat) per product of nonzeros, per output
_NS_LSTSQ = 0.08  # per m^3 of the crossover's least squares over m free samples (gelsy)
_NS_ENTRY = {False: 0.7, True: 1.0}  # a nonzero that a coordinate step reads twice, dense or sparse X
_NS_ROW = 25.0  # a coordinate step's own cost (its permutation entry, the bound tests)
_NS_EPOCH = 10e3  # an epoch's fixed cost
_EPS = float(np.finfo(np.float64).eps)


class NotSeparableError(ValueError):
    """The classes cannot be split by a hyperplane, so the hard-margin SVM has no solution."""


class _NewtonFloor(ArithmeticError):
    """The interior point's Newton system is singular to float64 (:meth:`_DualQP.factorize`)."""


#: The soft- and hard-margin solvers return :class:`~normpen.linear.problem.Solution`; these
#: names of its earlier, separate result types are kept for code that imports them.
LinearSVMResult = HardMarginResult = Solution


def _check_labels(problem):
    """``(X, y, a)`` of a validated problem, its labels in {-1, +1} with both classes of positive weight."""
    y, a = np.asarray(problem.y, dtype=np.float64), problem.weights
    weighted = a > 0
    if not (np.any(y[weighted] > 0) and np.any(y[weighted] < 0)):
        raise ValueError(
            "y must contain both classes -1 and +1 among the samples of positive weight; "
            "a classifier needs two classes"
        )
    return problem.X, y, a


def _loss_name(datafit):
    """``"hinge"`` or ``"squared_hinge"`` for the SVM datafits; ValueError for others."""
    for name, known in _DATAFITS.items():
        if type(datafit) is type(known):
            return name
    raise ValueError(f"the SVM solver takes the Hinge or SquaredHinge datafit, got {type(datafit).__name__}")


def _row_sq_norms(X):
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", X, X)


def _dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _starting_point(qp, dual_init):
    r"""A strictly interior, equality-feasible start: the box's centre (hinge) or
    :math:`1/(\overline{\|z_i\|^2} + D_{ii})` (squared hinge), averaged with ``dual_init`` when
    given, then the heavier class scaled down so that :math:`y^\top\alpha = 0`.
    """
    centre = 0.5 * qp.alpha_scale if np.isfinite(qp.upper).all() else qp.alpha_scale
    if dual_init is not None:
        centre = 0.5 * (centre + np.clip(dual_init[qp.weighted], 0, qp.upper))
    return qp.feasible(centre)


class _DualQP:
    r"""The dual QP of the soft-margin SVM on the samples of positive weight, and its certificate.

    :math:`\min_\alpha \tfrac12\alpha^\top(ZZ^\top + D)\alpha - 1^\top\alpha` over
    :math:`0 \le \alpha \le U` (and :math:`y^\top\alpha = 0` with an intercept), with
    :math:`Z = \operatorname{diag}(y)X`; ``X`` is kept in float64 (dense or CSR).
    """

    def __init__(self, X, y, a, lam, loss, fit_intercept, gap_scale):
        self.X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        self.y, self.a, self.lam, self.fit_intercept = y.astype(np.float64), a, lam, fit_intercept
        self.datafit = _DATAFITS[loss]
        self.weighted = np.flatnonzero(a > 0)
        Z = self.X[self.weighted]
        self.Z = sp.diags(self.y[self.weighted]) @ Z if sp.issparse(Z) else self.y[self.weighted, None] * Z
        a_w = a[self.weighted]
        self.upper = a_w / lam if loss == "hinge" else np.full(a_w.shape, np.inf)
        self.extra_diag = np.zeros_like(a_w) if loss == "hinge" else lam / (2 * a_w)
        mean_sq_norm = float(_row_sq_norms(self.Z).mean())
        unbounded_scale = 1.0 / (mean_sq_norm + self.extra_diag)
        self.alpha_scale = np.where(np.isfinite(self.upper), self.upper, unbounded_scale)
        self.gap_scale = gap_scale

    @cached_property
    def gram(self):
        r""":math:`ZZ^\top` when the :math:`n` side is the smaller (it is factorized), else None; formed
        on first use, so that a solve certified before the first iteration never pays for it."""
        n, p = self.Z.shape
        return _dense(self.Z @ self.Z.T) if n <= p else None

    def weights(self, alpha):
        r""":math:`w = Z^\top\alpha = \sum_i \alpha_i y_i x_i`."""
        return np.asarray(self.Z.T @ alpha).ravel()

    def hessian_product(self, alpha):
        r""":math:`(ZZ^\top + D)\alpha`."""
        return np.asarray(self.Z @ self.weights(alpha)).ravel() + self.extra_diag * alpha

    def factorize(self, diagonal, refine):
        r"""A solver of :math:`Ku = r`, :math:`K = M + ZZ^\top`, :math:`M` = ``diagonal`` positive diagonal.

        With :math:`n \le p` the :math:`n`-square matrix is factorized; otherwise
        Woodbury's identity
        :math:`(M + ZZ^\top)^{-1} = M^{-1} - M^{-1}Z(I + Z^\top M^{-1}Z)^{-1}Z^\top M^{-1}`
        needs one :math:`p`-square Cholesky factorization, of a matrix formed by one
        symmetric rank-:math:`n` update (BLAS ``syrk``). Near the solution the diagonal
        spans many orders of magnitude, so there (``refine``) each solve is followed
        by a step of iterative refinement against the exact product.

        As :math:`\mu \to 0` that range outgrows :math:`1/\varepsilon` and :math:`K` becomes
        singular to float64: :class:`_NewtonFloor` is raised when :math:`M` overflows or
        the Cholesky factorization fails. (A solve's residual is no such test: on badly
        scaled problems solves whose residual exceeds the right-hand side still led
        the iterates to the optimum.)
        """
        if not np.isfinite(diagonal).all():
            raise _NewtonFloor("its diagonal S/alpha + T/(U - alpha) overflowed")
        try:
            if self.gram is not None:
                factor = cho_factor(self.gram + np.diag(diagonal))
                approximate = partial(cho_solve, factor)
            else:
                inverse = 1 / diagonal
                root = np.sqrt(inverse)
                scaled = sp.diags(root) @ self.Z if sp.issparse(self.Z) else root[:, None] * self.Z
                inner = _dense(scaled.T @ scaled) if sp.issparse(scaled) else syrk(1.0, scaled.T, lower=1)
                inner[np.diag_indices_from(inner)] += 1.0
                factor = cho_factor(inner, lower=True)

                def approximate(r):
                    projected = np.asarray(scaled.T @ (root * r)).ravel()
                    return inverse * r - root * np.asarray(scaled @ cho_solve(factor, projected)).ravel()

        except LinAlgError as error:
            raise _NewtonFloor(f"its Cholesky factorization failed: {error}") from error

        if not refine:
            return approximate

        def solve(r):
            u = approximate(r)
            return u + approximate(r - diagonal * u - np.asarray(self.Z @ self.weights(u)).ravel())

        return solve

    def full(self, alpha_weighted):
        """:math:`\\alpha` on all samples (zero where the weight is zero)."""
        alpha = np.zeros_like(self.a)
        alpha[self.weighted] = alpha_weighted
        return alpha

    def feasible(self, alpha):
        r""":math:`\alpha` with the heavier class scaled down so that :math:`y^\top\alpha = 0` exactly."""
        if not self.fit_intercept:
            return alpha
        y = self.y[self.weighted]
        positive, negative = alpha[y > 0].sum(), alpha[y < 0].sum()
        if max(positive, negative) == 0:
            return alpha
        heavy = y > 0 if positive > negative else y < 0
        return np.where(heavy, min(positive, negative) / max(positive, negative) * alpha, alpha)

    def primal(self, w, b):
        """:math:`P(w, b)`."""
        z = np.asarray(self.X @ w).ravel() + b
        return 0.5 * self.lam * float(w @ w) + float(self.datafit.value(self.y, z, self.a))

    def certificate(self, alpha):
        r""":class:`_Certified` ``(gap, objective, w, b, alpha)`` at :math:`\alpha` made feasible.

        :math:`w = Z^\top\alpha`, :math:`b` the best intercept for it (exact),
        and the gap :math:`P(w, b) - D(\alpha)` with :math:`D` from the
        datafit's conjugate at :math:`u_i = -\lambda\alpha_i y_i / a_i`.
        """
        alpha = self.feasible(np.clip(alpha, 0, self.upper))
        w = self.weights(alpha)
        b = (
            _best_intercept(self.datafit, self.y, np.asarray(self.X @ w).ravel(), self.a)
            if self.fit_intercept
            else 0.0
        )
        full = self.full(alpha)
        weighted = self.a > 0
        u = np.where(weighted, -self.lam * full * self.y / np.where(weighted, self.a, 1.0), 0.0)
        dual = float(self.datafit.dual(self.y, u, self.a)) - 0.5 * self.lam * float(w @ w)
        primal = self.primal(w, b)
        return _Certified(primal - dual, primal, w, b, full)


class _Certified(NamedTuple):
    """A certified point: its gap and objective, :math:`w`, :math:`b` and :math:`\alpha`."""

    gap: float
    objective: float
    w: np.ndarray
    b: float
    alpha: np.ndarray


def _interior_point(qp, alpha, stop, max_iter):
    r"""Mehrotra's predictor-corrector on the dual QP from the interior point ``alpha``.

    Returns ``(certified, n_iter, floor)`` at the first iterate whose certified gap is
    at most ``stop(objective)``; otherwise the best certified point after ``max_iter``
    iterations (``floor`` None), or when the Newton system has become singular to
    float64 or the iterate's complementarity below the rounding of :math:`P` (``floor``
    says which). These end a solve whose target lies below the float64 floor of the
    certificate (module docstring); without them the iterates wandered off once the
    solves had lost every digit, until a Cholesky factorization failed
    (``LinAlgError``), :math:`S/\alpha` overflowed, or ``max_iter`` ran out.
    """
    y = qp.y[qp.weighted] if qp.fit_intercept else None
    bounded = np.isfinite(qp.upper)
    room = qp.upper - alpha  # U - alpha, carried apart so that it stays positive; inf where unbounded
    lower_mult = np.ones_like(alpha)  # s, the multipliers of alpha >= 0
    upper_mult = np.where(bounded, 1.0, 0.0)  # t, of alpha <= U (none where U is infinite)
    n_iter, tried, tried_gap, best = 0, None, math.inf, None
    while True:
        certificate = qp.certificate(alpha)
        late = certificate.gap <= _POLISH_FROM * qp.gap_scale  # the active set shows
        guess = _guess_active_set(qp, alpha, room, lower_mult, upper_mult) if late else None
        # a new guess is tried at once; the same one again from an iterate _RETRY_GAIN times closer
        # (the crossover takes the solution nearest the iterate, which may have left the box before)
        if late and (not np.array_equal(guess, tried) or certificate.gap * _RETRY_GAIN <= tried_gap):
            tried, tried_gap, polished = guess, certificate.gap, _crossover(qp, alpha, *guess)
            if polished is not None:
                certificate = min(certificate, qp.certificate(polished), key=lambda c: c.gap)
        # rounding can undo late progress on a degenerate problem: return the best point certified
        best = certificate if best is None or certificate.gap < best.gap else best
        if best.gap <= stop(best.objective) or n_iter == max_iter:
            return best, n_iter, None
        # the iterate's own gap lam (alpha's + (U - alpha)'t) below the rounding of P*: the steps
        # to the boundary (a fraction of alpha, s, t) are below rounding too, the iterate is stuck
        complementarity = qp.lam * (alpha @ lower_mult + _finite_dot(room, upper_mult))
        rounding = _EPS * min(qp.gap_scale, abs(best.objective))  # of P*, at most min(P0, P)
        if complementarity <= rounding:
            floor = f"the iterate's complementarity {complementarity:.1e} is below eps min(P0, P) = "
            return best, n_iter, floor + f"{rounding:.1e}: its steps can no longer move it"
        try:
            step = _mehrotra_step(qp, y, alpha, room, lower_mult, upper_mult, refine=late)
        except _NewtonFloor as floor:
            return best, n_iter, f"the Newton system is singular to float64 ({floor})"
        n_iter += 1
        length = _step_length(alpha, room, lower_mult, upper_mult, step, fraction=_TO_BOUNDARY)
        step_alpha, _, step_s, step_t = step
        alpha = alpha + length * step_alpha
        room = room - length * step_alpha
        lower_mult = lower_mult + length * step_s
        upper_mult = upper_mult + length * step_t


def _mehrotra_step(qp, y, alpha, room, lower_mult, upper_mult, refine):
    r"""Mehrotra's direction :math:`(\Delta\alpha, \Delta b, \Delta s, \Delta t)` from one factorization.

    The predictor targets complementarity 0; the corrector targets
    :math:`\sigma\mu` with :math:`\sigma = (\mu_{\text{aff}}/\mu)^3`, less the predictor's
    second-order terms. Raises :class:`_NewtonFloor` when the Newton system is
    singular to float64.
    """
    gradient = qp.hessian_product(alpha) - 1.0
    solve = qp.factorize(qp.extra_diag + lower_mult / alpha + upper_mult / room, refine=refine)
    solved_y = None if y is None else solve(y)
    newton = partial(_newton_step, solve, y, solved_y, alpha, room, gradient, lower_mult, upper_mult)
    n_pairs = alpha.size + int(np.isfinite(room).sum())
    mu = (alpha @ lower_mult + _finite_dot(room, upper_mult)) / n_pairs
    affine = newton(0.0, 0.0)
    length = _step_length(alpha, room, lower_mult, upper_mult, affine, fraction=1.0)
    step_alpha, _, step_s, step_t = affine
    mu_affine = (
        (alpha + length * step_alpha) @ (lower_mult + length * step_s)
        + _finite_dot(room - length * step_alpha, upper_mult + length * step_t)
    ) / n_pairs
    centring = (mu_affine / mu) ** 3 * mu
    return newton(centring - step_alpha * step_s, centring + step_alpha * step_t)


def _guess_active_set(qp, alpha, room, lower_mult, upper_mult):
    r"""``(at_upper, free)``: the partition an interior iterate suggests.

    A variable is taken at its upper bound when :math:`(U_i - \alpha_i)/U_i < t_i`, at
    its lower bound when :math:`\alpha_i/\bar\alpha_i < s_i` (:math:`\bar\alpha_i` the
    variable's scale), and free otherwise: the complementary pair whose member
    is relatively smaller is the one going to zero.
    """
    bounded = np.isfinite(qp.upper)
    at_upper = bounded & (room < upper_mult * np.where(bounded, qp.upper, 0.0))
    return np.stack([at_upper, ~at_upper & ~(alpha / qp.alpha_scale < lower_mult)])


def _crossover(qp, alpha, at_upper, free):
    r"""The exact solution for an active set (:func:`_guess_active_set`) nearest ``alpha``, or None.

    The variables ``at_upper`` are set to :math:`U`, the others not ``free`` to 0,
    and the free ones :math:`F` solve the equality-constrained QP

    .. math::

        \begin{pmatrix} H_{FF} & y_F \\ y_F^\top & 0\end{pmatrix}
        \begin{pmatrix} \alpha_F \\ b \end{pmatrix} =
        \begin{pmatrix} 1 - H_{FV} U_V \\ -y_V^\top U_V\end{pmatrix},

    (:math:`V` the variables at their upper bound), i.e. the free samples sit
    exactly on the margin. For the hinge :math:`H_{FF} = Z_FZ_F^\top` has rank at most
    :math:`p`, so with more than :math:`p + 1` free samples (a dual solution that is
    not unique, e.g. :math:`w^\star = 0`) the system is singular and its solutions form
    an affine set; the one taken is the nearest to the iterate, :math:`\alpha_F` plus
    the minimum-norm least-squares correction (a complete orthogonal factorization,
    LAPACK ``gelsy``), which stays inside the box when the iterate is close. The
    certificate judges the result, so a wrong guess costs one solve and nothing else.
    """
    F = np.flatnonzero(free)
    if F.size > _CROSSOVER_LIMIT:
        return None
    candidate = np.where(at_upper, qp.upper, 0.0)
    ZF = qp.Z[F]
    rhs = 1.0 - np.asarray(ZF @ qp.weights(candidate)).ravel()
    system = _dense(ZF @ ZF.T) + np.diag(qp.extra_diag[F])
    start = alpha[F]
    if qp.fit_intercept:
        y = qp.y[qp.weighted]
        system = np.block([[system, y[F, None]], [y[None, F], np.zeros((1, 1))]])
        rhs = np.append(rhs, -float(y @ candidate))
        start = np.append(start, 0.0)
    # singular values below the rounding of the factorization, size * eps of the largest, are zero
    cutoff = system.shape[0] * np.finfo(np.float64).eps
    residual = rhs - system @ start
    correction = lstsq(system, residual, cond=cutoff, lapack_driver="gelsy", check_finite=False)[0]
    candidate[F] = np.clip(start[: F.size] + correction[: F.size], 0, qp.upper[F])
    return candidate


def _newton_step(solve, y, solved_y, alpha, room, gradient, lower_mult, upper_mult, target_s, target_t):
    r"""Newton direction :math:`(\Delta\alpha, \Delta b, \Delta s, \Delta t)` of the perturbed KKT system.

    With :math:`g = U - \alpha`, :math:`H = ZZ^\top + D` and the targets
    :math:`c_s, c_t` of :math:`s\Delta\alpha + \alpha\Delta s = c_s - \alpha s` and
    :math:`-t\Delta\alpha + g\Delta t = c_t - g t`, eliminating :math:`\Delta s, \Delta t` leaves

    .. math::

        (H + S/\alpha + T/g)\,\Delta\alpha + y\,\Delta b = -(H\alpha - 1 + b y) + c_s/\alpha - c_t/g,
        \qquad y^\top\Delta\alpha = -y^\top\alpha,

    by one product with :math:`K^{-1} = (H + S/\alpha + T/g)^{-1}` (``solve``) and
    :math:`K^{-1}y` (``solved_y``), shared by the predictor and the corrector:
    :math:`\Delta b = (y^\top K^{-1}r + y^\top\alpha)/(y^\top K^{-1}y)`. The intercept
    :math:`b` is the multiplier of :math:`y^\top\alpha = 0`; it is left out of the
    right-hand side because the certificate recomputes it exactly from :math:`w`.
    """
    rhs = -gradient + target_s / alpha - np.where(np.isfinite(room), target_t / room, 0.0)
    step_b = 0.0
    if y is None:
        step_alpha = solve(rhs)
    else:
        solved_rhs = solve(rhs)
        step_b = (float(y @ solved_rhs) + float(y @ alpha)) / float(y @ solved_y)
        step_alpha = solved_rhs - step_b * solved_y
    step_s = (target_s - lower_mult * step_alpha) / alpha - lower_mult
    step_t = np.where(np.isfinite(room), (target_t + upper_mult * step_alpha) / room - upper_mult, 0.0)
    return step_alpha, step_b, step_s, step_t


def _finite_dot(u, v):
    """``u @ v`` over the entries where ``u`` is finite (the bounded variables)."""
    finite = np.isfinite(u)
    return float(u[finite] @ v[finite])


def _step_length(alpha, room, lower_mult, upper_mult, step, fraction):
    r"""``fraction`` times the longest step in :math:`[0, 1/\text{fraction}]` keeping
    :math:`\alpha, U-\alpha, s, t > 0`."""
    step_alpha, _, step_s, step_t = step
    longest = 1.0 / fraction
    for value, change in (
        (alpha, step_alpha),
        (room, -step_alpha),
        (lower_mult, step_s),
        (upper_mult, step_t),
    ):
        shrinking = (change < 0) & np.isfinite(value) & (value > 0)
        if shrinking.any():
            longest = min(longest, float((-value[shrinking] / change[shrinking]).min()))
    return fraction * longest


def _best_intercept(datafit, y, z, a):
    r"""The :math:`b` minimising :math:`\sum_i a_i \varphi(y_i(z_i + b))`, exactly; needs both classes.

    Hinge: the objective is piecewise linear in :math:`b`, with breakpoints
    :math:`t_i = y_i - z_i` and slope :math:`\sum_{y_i<0,\,t_i<b} a_i - \sum_{y_i>0,\,t_i>b} a_i`
    just right of :math:`b`, nondecreasing (one sort). The minimisers form the
    interval from the first breakpoint where that slope is :math:`\ge 0` to the
    first where it is :math:`> 0` (a weighted median, or a flat stretch); its
    midpoint is returned, the canonical choice that libsvm also makes when no
    sample is strictly inside the margin's box. Squared hinge: the datafit's own
    Newton solve (:meth:`~normpen.linear.datafits.base.Datafit.fit_intercept`).
    """
    if not isinstance(datafit, Hinge):
        return float(datafit.fit_intercept(y, z, a))
    breakpoints = y - z
    order = np.argsort(breakpoints, kind="stable")
    positive, weight = y[order] > 0, a[order]
    slope_right = np.cumsum(weight * ~positive) - (weight[positive].sum() - np.cumsum(weight * positive))
    flat = 1e-12 * float(a.sum())  # slopes this small are zero but for rounding
    sorted_breakpoints = breakpoints[order]
    left, right = np.argmax(slope_right >= -flat), np.argmax(slope_right > flat)
    return float(0.5 * (sorted_breakpoints[left] + sorted_breakpoints[right]))


def _newton_stage(loss, X, n_weighted, warm):
    r"""Where Newton steps on the primal (:func:`_finite_newton`) come in :func:`_direct_route`: ``"first"``,
    ``"after screening"`` or ``None``.

    The squared hinge with fewer features than samples of positive weight takes them, first on a dense
    design from a cold start and after the screening on a sparse one or from a ``warm`` start (a path's
    previous solution, which the screening often certifies at once), in place of the interior point unless
    they stop short. ``LinearSVCCV`` on a dense 2000 x 200 (5 folds, 20 strengths, then the refit; six
    interleaved rounds, medians): 1.13 s with the route below alone, 0.98 s so, 1.1-1.8 s with Newton
    first from warm starts too. Cold starts, measured (issue 15, one thread, tol 1e-6, C from 0.01 to
    1000, with and without intercept): on dense designs Newton reached the optimum itself in 0.003-0.21 s
    where the screening and the interior point took 0.002-2.0 s (breast cancer 569 x 30 alike, 2000 x 200
    1.1-2.0 s -> 0.013-0.027 s, 5000 x 500 0.55-0.99 s -> 0.12-0.21 s); on sparse designs the screening
    certifies small and moderate :math:`C` in a fraction of Newton's time (20000 x 2000, 1% nonzero:
    0.06-0.37 s against 0.64-1.27 s at C = 0.01 and 1); at C = 100, where the screening does not certify,
    Newton after it took 2.5-3.1 s against the interior point's 3.1-3.3 s (5000 x 1000: 0.31-0.36 against
    0.35-0.46 s), ending on the optimum itself. With more features than samples the interior point's
    :math:`n`-square systems are the smaller (400 x 2000: 0.08-0.11 s).
    """
    if loss != "squared_hinge" or X.shape[1] >= n_weighted:
        return None
    return "after screening" if sp.issparse(X) or warm else "first"


def _direct_route(qp, args, alpha, stop, max_iter, shrinking, random_state, newton):
    r"""The solve of a problem whose interior-point iteration fits, stage by stage from the dual point
    ``alpha`` (or None): ``(certified, n_iter, n_epochs, floor, method)``.

    Each stage hands its point to the next; the first that certifies ``stop`` ends the solve: the
    handed point itself (a path's warm start), dual coordinate descent under a work budget (the
    screening: ``_SCREEN_FRACTION`` of :func:`_interior_point_ns`), the interior point; with ``newton``
    (:func:`_newton_stage`) Newton steps on the primal first or after the screening.
    """
    if newton == "first":
        certified, n_iter, done = _finite_newton(qp, alpha, stop, max_iter)
        if done:
            return certified, n_iter, 0, None, "Newton steps"
        alpha = alpha if certified is None else certified.alpha
    if alpha is not None:
        handed = qp.certificate(alpha[qp.weighted])
        if handed.gap <= stop(handed.objective):
            return handed, 0, 0, None, "coordinate-descent epochs"
    n_epochs = 0
    if _SCREEN_FRACTION > 0:  # dual CD first, under a budget; its dual point is handed over
        cd = _DualCoordinateDescent(*args, alpha)
        rng = np.random.default_rng(0 if random_state is None else random_state)
        budget_ns = _SCREEN_FRACTION * _interior_point_ns(qp.X, qp.a > 0)
        dual, n_epochs, done = _run_dual_cd(cd, stop, math.inf, shrinking, rng, budget_ns)
        if done:
            return _coordinate_descent_point(cd, dual), n_epochs, n_epochs, None, "coordinate-descent epochs"
        alpha = cd.alpha
    if newton == "after screening":
        certified, n_iter, done = _finite_newton(qp, alpha, stop, max_iter)
        if done:
            return certified, n_iter, n_epochs, None, "Newton steps"
        alpha = alpha if certified is None else certified.alpha
    certified, n_iter, floor = _warm_interior_point(qp, alpha, stop, max_iter)
    return certified, n_iter, n_epochs, floor, "interior-point iterations"


def _interior_point_fits(X, n_weighted):
    r"""Whether one interior-point iteration fits: its factorized side (samples or features) is at
    most ``_DIRECT_LIMIT`` and forming it costs at most ``_FLOP_LIMIT`` flops
    (:math:`n\,p\min(n, p)` dense, :math:`\sum_i \mathrm{nnz}(x_i)^2` sparse, plus the factorization).
    """
    n, p = n_weighted, X.shape[1]
    side = min(n, p)
    if sp.issparse(X):
        row_nnz = np.diff(sp.csr_matrix(X).indptr)
        work = float(row_nnz @ row_nnz) if side == p else float(X.nnz) * side
    else:
        work = float(n) * p * side
    return side <= _DIRECT_LIMIT and work + side**3 / 3 <= _FLOP_LIMIT


def _interior_point_ns(X, weighted):
    r"""The interior point's estimated cost on the samples ``weighted``, in nanoseconds of one core.

    The screening budget of :func:`linear_svm` is a fraction of it. The model,
    with constants measured on the benchmarks' machine (one BLAS thread, 2026;
    only its ratio to :meth:`_DualCoordinateDescent.epoch_ns`, measured on the
    same machine, matters):

    - ``_IP_ITERATIONS`` iterations, each a fixed ``_NS_IP_STEP`` (about a
      hundred numpy calls), ``_NS_IP_ROW`` per sample (vector operations, the
      certificate's sort), and forming and factorizing the smaller side:
      :math:`n_w p^2 + p^3/3` dense flops at ``_NS_FLOP`` each on the Woodbury
      side of a dense design; on a sparse one :math:`p^3/3` flops, and the sparse
      product :math:`Z^\top M^{-1}Z`: ``_NS_PAIR`` per product of two nonzeros of a
      row (:math:`\sum_i \mathrm{nnz}(x_i)^2`) and ``_NS_OUTPUT`` per entry of the
      (nearly dense) result; on the :math:`n` side :math:`n_w^3/3` flops and two
      products with :math:`Z`, its Gram matrix formed once (:math:`n_w^2 p` flops
      dense, the same sparse product costs over columns sparse);
    - ``_CROSSOVER_ATTEMPTS`` crossovers, a least-squares solve (LAPACK
      ``gelsy``, ``_NS_LSTSQ`` per :math:`m^3`) over :math:`m` free samples, taken
      as :math:`\min(n_w, p + 1, \text{_CROSSOVER_LIMIT})`: the samples on the
      margin of a hinge solution whose dual is unique.

    The number of iterations (7 to 18 measured at ``tol=1e-6``) and of crossovers
    (4 to 7) is not known in advance, nor the size of a squared hinge's free set,
    so the estimate is within a factor of about two of the measured time
    (``docs/linear.md``, "Linear SVMs").
    """
    n, p = int(np.count_nonzero(weighted)), X.shape[1]
    side = min(n, p)
    flops, sparse_step, once = side**3 / 3, 0.0, 0.0
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if side == p:  # Z^T M^-1 Z by a sparse product every iteration
            row_nnz = np.diff(X.indptr)[weighted].astype(np.float64)
            sparse_step = _NS_PAIR * float(row_nnz @ row_nnz) + _NS_OUTPUT * p * p
        else:  # Z Z^T once, then two products with Z an iteration
            Xw = X[weighted]
            col_nnz = np.bincount(Xw.indices, minlength=p).astype(np.float64)
            once = _NS_PAIR * float(col_nnz @ col_nnz) + _NS_OUTPUT * n * n
            flops += 4.0 * Xw.nnz
    elif side == p:
        flops += float(n) * p * p
    else:
        once = _NS_FLOP * float(n) * n * p
        flops += 4.0 * n * p
    step = _NS_IP_STEP + _NS_IP_ROW * n + _NS_FLOP * flops + sparse_step
    free = min(n, p + 1, _CROSSOVER_LIMIT)
    return once + _IP_ITERATIONS * step + _CROSSOVER_ATTEMPTS * _NS_LSTSQ * float(free) ** 3


def _objective_at_zero(datafit, y, a, fit_intercept):
    """:math:`P(0, b_0)`: the loss with the best constant intercept (with :math:`b = 0` without one)."""
    zero = np.zeros_like(y)
    b = _best_intercept(datafit, y, zero, a) if fit_intercept else 0.0
    return float(datafit.value(y, zero + b, a))


def linear_svm(
    X,
    y,
    lam,
    *,
    loss="hinge",
    sample_weight=None,
    fit_intercept=True,
    tol=1e-4,
    max_iter=1000,
    shrinking=True,
    random_state=None,
    dual_init=None,
):
    r"""Soft-margin linear SVM: dual coordinate descent, then an interior point with crossover if needed
    (the squared hinge with fewer features than samples: Newton steps on the primal instead).

    Minimises :math:`\frac\lambda2\|w\|^2 + \sum_i a_i\varphi(y_i(x_i^\top w + b))`; this
    is scikit-learn's ``LinearSVC(C=1/(n*lam))`` objective divided by :math:`nC`,
    with an unpenalized intercept (scikit-learn's ``SVC(kernel="linear", C=1/(n*lam))``
    for the hinge). Problems whose interior-point iteration fits
    (:func:`_interior_point_fits`: the smaller side, samples of positive weight or
    features, at most ``_DIRECT_LIMIT``, and at most ``_FLOP_LIMIT`` flops) go to
    dual coordinate descent under a budget of 15% of the interior point's
    estimated cost, then, if it has not certified the gap, to the interior point
    from its dual point; the others to dual coordinate descent alone (see the
    module docstring, "Routing"). The squared hinge with fewer features than
    samples takes Newton steps on the primal (:func:`_finite_newton`, ending on the
    exact optimum) first on a dense design and in place of the interior point on a
    sparse one.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like of shape (n,)
        Labels in {-1, +1}.
    lam : float
        :math:`\lambda > 0`.
    loss : {"hinge", "squared_hinge"}
    sample_weight : array-like of shape (n,), optional
        Nonnegative weights; only their ratios matter.
    fit_intercept : bool
        Fit an unpenalized intercept (the constraint :math:`y^\top\alpha = 0` of the dual).
    tol : float
        Stop when the duality gap is at most ``tol`` times :math:`\min(P_0, P)`:
        ``tol`` is the gap relative to :math:`P_0`, the objective at :math:`w = 0` with
        the best constant intercept, and, once the objective :math:`P` has fallen below
        :math:`P_0`, relative to :math:`P` as well, so that at large :math:`C`
        (:math:`P^\star \ll P_0`) the objective is still within a factor
        :math:`1 + \text{tol}` of the optimum
        (:func:`~normpen.linear.problem.relative_stop`).
    max_iter : int
        Maximum number of Newton steps (the squared hinge's first route) and
        of interior-point iterations where the interior point fits; the
        coordinate descent that runs before it is bounded by its work
        budget instead (so ``n_iter``, its epochs when it certifies, may exceed
        ``max_iter``). On larger problems, the number of coordinate-descent epochs.
    shrinking : bool
        Coordinate descent only: shrink variables stuck at a bound (Hsieh et al., Algorithm 3).
    random_state : int, numpy Generator or None
        Coordinate descent only: seeds the coordinate permutations. Where the
        interior point fits, None means seed 0, so those solves stay deterministic.
    dual_init : array-like of shape (n,), optional
        Warm start :math:`\alpha`, clipped to the box :math:`[0, U_i]`: along a
        path, the previous solution's ``dual_coef``. If its certified gap is small
        enough it is returned at once (``n_iter`` 0); otherwise coordinate descent
        starts there.

    Returns
    -------
    Solution
        ``coef``, ``intercept``, ``objective``, ``dual_gap``, ``gap_scale`` (:math:`P_0`),
        ``n_iter`` (the Newton steps if they certified, else the interior
        point's iterations if it ran, else the coordinate-descent epochs),
        ``n_epochs`` (the coordinate-descent epochs, 0 if none ran),
        ``converged``, and ``dual_coef`` (:math:`\alpha`, with
        :math:`0 \le \alpha_i \le C_i = a_i/\lambda` for the hinge and
        :math:`w = \sum_i \alpha_i y_i x_i`) with ``support``, the samples of
        :math:`\alpha_i > 0`.

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        If ``max_iter`` iterations end with the gap above the target, or the interior point
        reaches the float64 floor above it (``tol`` below the rounding of the certificate,
        module docstring); the message gives the gap and, at the floor, the ``tol`` it meets.
    """
    if loss not in _DATAFITS:
        raise ValueError(f"loss must be one of {sorted(_DATAFITS)}, got {loss!r}")
    problem = Problem(X, y, _DATAFITS[loss], sample_weight, fit_intercept)
    return solve(
        problem,
        lam,
        tol=tol,
        max_iter=max_iter,
        shrinking=shrinking,
        random_state=random_state,
        dual_init=dual_init,
    )


def solve(
    problem,
    lam,
    *,
    tol=1e-4,
    max_iter=1000,
    shrinking=True,
    random_state=None,
    dual_init=None,
    warn=True,
):
    """:func:`linear_svm` on a :class:`~normpen.linear.problem.Problem` (Hinge or SquaredHinge datafit)."""
    loss = _loss_name(problem.datafit)
    X, y, a = _check_labels(problem)
    lam = check_positive(lam, "lam")
    tol = check_tol(tol)
    max_iter = check_count(max_iter, "max_iter")
    if dual_init is not None:
        dual_init = np.asarray(dual_init, dtype=np.float64)
        if dual_init.shape != (X.shape[0],) or not np.all(np.isfinite(dual_init)):
            raise ValueError(f"dual_init must be a finite vector of shape ({X.shape[0]},), one per sample")
    gap_scale = _objective_at_zero(_DATAFITS[loss], y, a, problem.fit_intercept)
    stop = partial(relative_stop, tol, gap_scale)
    weighted = a > 0
    args = (X, y, a, lam, loss, problem.fit_intercept)
    n_weighted = int(np.count_nonzero(weighted))
    if _interior_point_fits(X, n_weighted):
        certified, n_iter, n_epochs, floor, method = _direct_route(
            _DualQP(*args, gap_scale),
            args,
            dual_init,
            stop,
            max_iter,
            shrinking,
            random_state,
            _newton_stage(loss, X, n_weighted, dual_init is not None),
        )
    else:
        cd = _DualCoordinateDescent(*args, dual_init)
        dual, n_iter, _ = _run_dual_cd(cd, stop, max_iter, shrinking, np.random.default_rng(random_state))
        certified, n_epochs = _coordinate_descent_point(cd, dual), n_iter
        floor, method = None, "coordinate-descent epochs"
    gap, w, b, alpha = certified.gap, certified.w, certified.b, certified.alpha
    z = np.asarray(X @ w).ravel() + b
    objective = 0.5 * lam * float(w @ w) + float(_DATAFITS[loss].value(y, z, a))
    gap = max(gap, 0.0)  # a gap is >= 0 but for rounding
    target = stop(objective)
    if warn and gap > target:
        advice = "raise max_iter or tol"
        if floor is not None:
            # the gap reached is the tol that would have been met: gap / min(P0, P)
            advice = (
                f"{floor}; the best certified point is returned, its gap "
                f"{gap / min(gap_scale, abs(objective)):.1e} of min(P(0), P) is the accuracy this "
                "problem reaches in float64: ask for a tol above it"
            )
        warnings.warn(
            f"linear_svm stopped after {n_iter} {method} with duality gap {gap:.3e} > "
            f"tol * min(P(0), P) = {target:.3e}: {advice}",
            ConvergenceWarning,
            stacklevel=2,
        )
    return Solution(
        coef=w.astype(X.dtype),
        intercept=float(b),
        objective=objective,
        dual_gap=gap,
        gap_scale=gap_scale,
        n_iter=n_iter,
        converged=gap <= target,
        n_epochs=n_epochs,
        dual_coef=alpha,
        support=np.flatnonzero(alpha > 0),
    )


def _finite_newton(qp, alpha, stop, max_iter):
    r"""The squared hinge's primal by Newton steps with exact line searches: ``(certified, n_iter, done)``.

    :math:`P(w, b) = \tfrac\lambda2\|w\|^2 + \sum_i a_i\xi_i^2` with
    :math:`\xi_i = \max(0, 1 - y_i(x_i^\top w + b))` is a convex piecewise quadratic whose
    pieces are the active sets :math:`A = \{i : \xi_i > 0\}`. On the current piece the Newton
    step minimises the quadratic exactly: the system
    :math:`(\lambda I + 2X_A^\top\operatorname{diag}(a_A)X_A)\Delta w + 2X_A^\top a_A\,\Delta b = -g_w`,
    :math:`2a_A^\top X_A\Delta w + 2\textstyle\sum_A a_i\,\Delta b = -g_b`, one symmetric
    rank-:math:`|A|` update and one Cholesky factorization of :math:`p` (the intercept
    eliminated by its Schur complement, which centres :math:`X_A` on its :math:`a`-weighted
    mean). The step along :math:`(\Delta w, \Delta b)` is the exact minimiser
    (:func:`_exact_step`): the method of Keerthi and DeCoste (JMLR 2005, "modified finite
    Newton"), which ends on the optimal piece after finitely many steps, where the step is
    exact. Its cost does not grow with :math:`C` as dual coordinate descent's does: on the benchmark's
    5000 x 500 at :math:`C = 1` (``benchmarks/svm_problem.py``, g3) 0.12-0.14 s to the optimum itself,
    where dual coordinate descent and the interior point took 0.55-0.70 s to tol 1e-6 and liblinear's
    trust-region Newton 0.59-0.81 s.

    Each iterate is certified through the dual point it names,
    :math:`\alpha_i = 2a_i\xi_i/\lambda` (the optimality condition
    :math:`w = \sum_i\alpha_i y_ix_i`), by :meth:`_DualQP.certificate`; ``alpha``, a
    handed dual point (a path's warm start), gives the first iterate, :math:`w = Z^\top\alpha`
    and its best intercept. ``done`` says that a certificate met ``stop``; otherwise (``max_iter``
    steps, a step that no longer lowers :math:`P`, or a system that float64 cannot factorize: where
    :math:`\lambda` is below the rounding of the curvature's entries, as at :math:`C = 10^{14}` or
    with features scaled by :math:`10^8`) the best certified point is returned where its gap is below
    that of the start (``alpha``'s, or :math:`P_0` for :math:`\alpha = 0` when None), else None: the
    first certificate, :math:`\alpha = 2a\xi/\lambda` at the start, is far from any solution at tiny
    :math:`\lambda` (:math:`C = 10^{14}`: gap :math:`10^{31} P_0`, where the route below, started at 0,
    ends near :math:`P_0`).
    """
    X, y, a, lam = qp.X, qp.y, qp.a, qp.lam
    if alpha is None:
        w = np.zeros(X.shape[1])
        b = _best_intercept(qp.datafit, y, np.zeros(y.shape), a) if qp.fit_intercept else 0.0
        start_gap = qp.gap_scale
    else:
        start = qp.certificate(alpha[qp.weighted])
        w, b, start_gap = start.w, start.b, start.gap
    z = np.asarray(X @ w).ravel() + b
    best, previous, hessian = None, math.inf, _PieceHessian(X, a)
    weighted = a > 0
    for n_iter in range(max_iter + 1):
        margin = 1 - y * z
        slack = np.maximum(margin, 0) * weighted
        certified = qp.certificate(2 * (a * slack)[qp.weighted] / lam)
        best = certified if best is None or certified.gap < best.gap else best
        if certified.gap <= stop(certified.objective):
            return best, n_iter, True
        objective = 0.5 * lam * float(w @ w) + float(a @ slack**2)
        if n_iter == max_iter or objective >= previous:
            break
        previous = objective
        try:
            dw, db = _newton_direction(qp, hessian, w, slack)
        except LinAlgError:  # lam below the rounding of the curvature: the system is singular in float64
            break
        dz = np.asarray(X @ dw).ravel() + db
        t = _exact_step(lam, w, dw, a, margin, y * dz)
        w, b, z = w + t * dw, b + t * db, z + t * dz
    return (best if best.gap < start_gap else None), n_iter, False


class _PieceHessian:
    r"""The squared hinge's curvature on a piece, :math:`X_A^\top\operatorname{diag}(2a_A)X_A`, kept
    across pieces (its lower triangle: BLAS ``syrk`` on a dense ``X``, a sparse product on a CSR one).

    The weights :math:`2a_i` do not depend on the point, so the matrix of the next active set is
    this one plus the rank-one terms of the samples that joined, minus those of the samples that
    left: :math:`(|A_+| + |A_-|)p^2` multiply-adds against :math:`|A|p^2` to form it anew, which
    it does when the change is the larger (the first step, from :math:`w = 0` where every sample
    is active, and steps that move much of the margin). With an intercept it also keeps
    :math:`X_A^\top 2a_A` and :math:`\sum_A 2a_i`, from which :meth:`system` forms the Schur
    complement that eliminates the intercept.
    """

    def __init__(self, X, a):
        self.X, self.weight = X, 2 * a
        self.active = np.zeros(a.shape, dtype=bool)
        self.matrix = np.zeros((X.shape[1], X.shape[1]))
        self.column_sums, self.total = np.zeros(X.shape[1]), 0.0

    def _add(self, rows, sign):
        X_r, weight = self.X[rows], self.weight[rows]
        if sp.issparse(X_r):
            self.matrix += sign * _dense(X_r.T @ sp.diags(weight) @ X_r)
        else:
            self.matrix += sign * syrk(1.0, (np.sqrt(weight)[:, None] * X_r).T, lower=1)
        self.column_sums += sign * np.asarray(X_r.T @ weight).ravel()
        self.total += sign * float(weight.sum())

    def move_to(self, active):
        """Move to the piece of the mask ``active``."""
        joined, left = np.flatnonzero(active & ~self.active), np.flatnonzero(self.active & ~active)
        if joined.size + left.size > np.count_nonzero(active):
            self.matrix[:], self.column_sums[:], self.total = 0.0, 0.0, 0.0
            joined, left = np.flatnonzero(active), left[:0]
        if joined.size:
            self._add(joined, 1.0)
        if left.size:
            self._add(left, -1.0)
        self.active = active

    def system(self, lam, intercept):
        r""":math:`\lambda I` plus the curvature, less the intercept's part (its Schur complement) with
        ``intercept``; its lower triangle is what a Cholesky factorization reads."""
        system = self.matrix.copy()
        if intercept:
            system -= np.outer(self.column_sums, self.column_sums / self.total)
        system[np.diag_indices_from(system)] += lam
        return system


def _newton_direction(qp, hessian, w, slack):
    r"""The Newton step :math:`(\Delta w, \Delta b)` of the squared hinge's primal, on the piece of ``slack``
    (``hessian``, a :class:`_PieceHessian`, moved there)."""
    X, y, a, lam = qp.X, qp.y, qp.a, qp.lam
    hessian.move_to(slack > 0)
    residual = 2 * a * y * slack  # the datafit's gradient in w is -X^T residual
    g_w = lam * w - np.asarray(X.T @ residual).ravel()
    g_b = -float(residual.sum())
    intercept = qp.fit_intercept and hessian.total > 0
    mean = hessian.column_sums / hessian.total if intercept else None
    rhs = -g_w + mean * g_b if intercept else -g_w
    dw = cho_solve(cho_factor(hessian.system(lam, intercept), lower=True, overwrite_a=True), rhs)
    db = -(g_b / hessian.total + mean @ dw) if intercept else 0.0
    return dw, db


def _exact_step(lam, w, dw, a, margin, rate):
    r"""The :math:`t \ge 0` minimising :math:`P` along the step: the root of its piecewise linear derivative.

    With the slacks :math:`m_i - te_i` (``margin`` :math:`m = 1 - y\circ z`, ``rate``
    :math:`e = y\circ\Delta z`),
    :math:`P'(t) = \lambda(w^\top\Delta w + t\|\Delta w\|^2) + \sum_{m_i - te_i > 0} 2a_i(e_i^2 t - e_im_i)`,
    nondecreasing and continuous; a sample joins or leaves the sum at :math:`t_i = m_i/e_i`. The
    breakpoints are sorted once, the sum's coefficients accumulated over them, and the root taken in
    the first stretch where :math:`P'` reaches 0.
    """
    weighted = a > 0
    m, e, a = margin[weighted], rate[weighted], a[weighted]
    on = (m > 0) | ((m == 0) & (e < 0))  # in the sum just right of t = 0
    constant, linear = -2 * a * e * m, 2 * a * e * e  # a sample's term of P'(t) while in the sum
    slope0 = lam * float(w @ dw) + float(np.sum(constant[on]))
    slope1 = lam * float(dw @ dw) + float(np.sum(linear[on]))
    with np.errstate(divide="ignore", invalid="ignore"):
        at = m / e
    moves = (e != 0) & (at > 0)
    order = np.argsort(at[moves])
    at, sign = at[moves][order], np.where(on[moves], -1.0, 1.0)[order]  # leaving (on) or joining
    c0 = slope0 + np.concatenate([[0.0], np.cumsum(sign * constant[moves][order])])
    c1 = slope1 + np.concatenate([[0.0], np.cumsum(sign * linear[moves][order])])
    # stretch k runs from at[k-1] to at[k] with P'(t) = c0[k] + c1[k] t: the root lies in the first
    # whose end has P' >= 0
    reached = np.flatnonzero(c0[:-1] + c1[:-1] * at >= 0)
    k = int(reached[0]) if reached.size else at.size  # (the last stretch has no end)
    if c1[k] > 0:
        return max(float(-c0[k] / c1[k]), 0.0)
    return float(at[k - 1]) if k else 0.0  # P' constant on the stretch: 0 there (a zero step)


def _coordinate_descent_point(cd, dual):
    r""":class:`_Certified` at the coordinate descent's running :math:`w` with its best intercept.

    The best intercept for :math:`w` (the midpoint of an optimal interval) can only
    lower :math:`P`, and the gap :math:`P - D` with it; ``dual`` is :math:`D` at the
    final :math:`\alpha` (:func:`_run_dual_cd`).
    """
    w = cd.coef
    z = np.asarray(cd.X @ w).ravel()
    b = _best_intercept(cd.datafit, cd.y, z, cd.a) if cd.rho else 0.0
    objective = cd.primal(w, b)
    return _Certified(objective - dual, objective, w, b, cd.alpha)


def _warm_interior_point(qp, alpha, stop, max_iter):
    r"""The interior point handed the dual point ``alpha`` (or None): ``(certified, n_iter, floor)``.

    ``alpha`` made feasible is certified first and returned at once (0 iterations)
    when that meets ``stop``; otherwise the iterations start halfway between it and
    the box's centre (:func:`_starting_point`; at the centre without ``alpha``), and
    the better certified of the two ends is returned (the interior point's best
    iterate can be worse than a good handed-over point when it stops at the
    float64 floor or at ``max_iter``).
    """
    handed = None if alpha is None else qp.certificate(alpha[qp.weighted])
    if handed is not None and handed.gap <= stop(handed.objective):
        return handed, 0, None
    certified, n_iter, floor = _interior_point(qp, _starting_point(qp, alpha), stop, max_iter)
    return min(filter(None, (certified, handed)), key=lambda c: c.gap), n_iter, floor


def _float64_design(X):
    """``X`` in float64, C-ordered dense or canonical CSR: the layouts the compiled epoch reads."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        X.sum_duplicates()
        return X
    return np.ascontiguousarray(X, dtype=np.float64)


class _DualCoordinateDescent:
    r"""State of the dual coordinate descent on the centred design :math:`\tilde X = X - 1c^\top`.

    With an intercept, :math:`c = \sum_i a_i x_i`; the problem is unchanged
    (:math:`x_i^\top w + b = \tilde x_i^\top w + b'` with :math:`b = b' - c^\top w`),
    but the intercept decouples from :math:`w` and the multiplier iteration
    converges far faster on off-centre data. :math:`\tilde X` is never formed:
    :math:`w = u - (y^\top\alpha)\,c` with :math:`u = \sum_i \alpha_i y_i x_i` kept
    as liblinear keeps :math:`w`, and :math:`u^\top c`, :math:`Xc`, :math:`\|c\|^2`
    carried as numbers, so a step still costs one (sparse) row.
    """

    def __init__(self, X, y, a, lam, loss, fit_intercept, dual_init):
        self.X = _float64_design(X)
        self.y, self.a, self.lam = y.astype(np.float64), a, lam
        self.datafit = _DATAFITS[loss]
        weighted = a > 0
        self.c = np.asarray(self.X.T @ a).ravel() if fit_intercept else np.zeros(self.X.shape[1])
        self.xc = np.asarray(self.X @ self.c).ravel()
        self.cc = float(self.c @ self.c)
        sq_norms = np.clip(_row_sq_norms(self.X) - 2 * self.xc + self.cc, 0, None)  # ||x_i - c||^2
        self.rho = _RHO_SCALE * float(sq_norms[weighted].mean()) + _RHO_LAM * lam if fit_intercept else 0.0
        safe_a = np.where(weighted, a, 1.0)
        if loss == "hinge":
            self.upper = np.where(weighted, a / lam, 0.0)
            self.extra_diag = np.zeros_like(a)
        else:
            self.upper = np.where(weighted, np.inf, 0.0)
            self.extra_diag = np.where(weighted, lam / (2 * safe_a), 0.0)
        q_diag = sq_norms + self.rho + self.extra_diag
        # a zero row of the hinge without intercept has a linear dual: its step goes to the bound
        self.inv_q_diag = np.divide(1.0, q_diag, out=np.full_like(q_diag, np.inf), where=q_diag > 0)
        self.alpha = np.zeros_like(a) if dual_init is None else np.clip(dual_init, 0, self.upper)
        self.u = np.asarray(self.X.T @ (self.alpha * self.y)).ravel()
        self.uc = float(self.u @ self.c)
        self.y_alpha = float(self.alpha @ self.y)
        # the per-sample numbers of a coordinate step side by side, one row a sample (_dual_sweeps)
        shift = self.cc + self.rho - self.xc
        self._samples = np.column_stack(
            [self.y, self.upper, self.extra_diag, self.inv_q_diag, shift, self.xc]
        )
        if sp.issparse(self.X):
            self._epoch = partial(epoch_sparse, self.X.data, self.X.indices, self.X.indptr)
        else:
            self._epoch = partial(epoch_dense, self.X)
        # the cost model of the screening budget (_interior_point_ns): a step reads its row twice,
        # a gap check X twice (X w for the primal, X^T alpha for the dual)
        sparse = sp.issparse(self.X)
        row_nnz = np.diff(self.X.indptr) if sparse else np.full(len(a), self.X.shape[1])
        self.step_ns = _NS_ENTRY[sparse] * row_nnz + _NS_ROW
        self.check_ns = 2 * _NS_ENTRY[sparse] * float(row_nnz.sum()) + _NS_EPOCH
        # beta_k, the multiplier of y^T alpha = 0, set so that the running intercept starts
        # at the best one for the initial w (the best constant for a cold start)
        self.center = 0.0
        if fit_intercept:
            z = np.asarray(self.X @ self.coef).ravel() - float(self.c @ self.coef)
            self.center = _best_intercept(self.datafit, self.y, z, a) - self.rho * self.y_alpha

    @property
    def coef(self):
        r""":math:`w = u - (y^\top\alpha)\,c = \sum_i \alpha_i y_i \tilde x_i`."""
        return self.u - self.y_alpha * self.c

    @property
    def centred_intercept(self):
        r"""The running intercept :math:`b' = \beta_k + \rho\, y^\top\alpha` of the centred problem."""
        return self.center + self.rho * self.y_alpha

    @property
    def intercept(self):
        r"""The intercept :math:`b = b' - c^\top w` of the original problem."""
        return self.centred_intercept - float(self.c @ self.coef)

    def update_multiplier(self):
        r"""Method-of-multipliers step :math:`\beta_{k+1} = \beta_k + \rho\, y^\top\alpha`."""
        self.center = self.centred_intercept

    def epoch(self, order, shrink_above, shrink_below):
        r"""One pass over ``order`` (compiled: :mod:`normpen.linear.solvers._dual_sweeps`);
        returns ``(max PG, min PG, kept indices)``.

        A variable at its lower (upper) bound whose gradient exceeds
        ``shrink_above`` (is below ``shrink_below``) is left out of the kept
        indices: Hsieh et al.'s shrinking. ``alpha`` and ``u`` are updated in
        place, :math:`y^\top\alpha` and :math:`u^\top c` from the kernel's return.
        """
        pg_max, pg_min, kept, self.y_alpha, self.uc = self._epoch(
            self._samples,
            self.alpha,
            self.u,
            order,
            self.y_alpha,
            self.uc,
            self.center,
            shrink_above,
            shrink_below,
        )
        return pg_max, pg_min, kept

    def primal(self, w, b):
        """Primal :math:`P(w, b)`."""
        z = np.asarray(self.X @ w).ravel() + b
        return 0.5 * self.lam * float(w @ w) + float(self.datafit.value(self.y, z, self.a))

    def dual_objective(self):
        r"""Dual objective at :math:`\alpha` made feasible (heavier class scaled down, with an intercept)."""
        alpha = self.alpha
        if self.rho:
            positive, negative = alpha[self.y > 0].sum(), alpha[self.y < 0].sum()
            heavy = self.y > 0 if positive > negative else self.y < 0
            scale = min(positive, negative) / max(positive, negative) if max(positive, negative) > 0 else 1.0
            alpha = np.where(heavy, scale * alpha, alpha)
        w = np.asarray(self.X.T @ (alpha * self.y)).ravel()  # y^T alpha = 0: centring drops out
        weighted = self.a > 0
        u = np.where(weighted, -self.lam * alpha * self.y / np.where(weighted, self.a, 1.0), 0.0)
        return float(self.datafit.dual(self.y, u, self.a)) - 0.5 * self.lam * float(w @ w)


def _run_dual_cd(cd, stop, max_iter, shrinking, rng, budget_ns=math.inf, check_every=10):
    """Epochs with shrinking until the duality gap is at most ``stop(P)``; returns ``(D, epochs, certified)``.

    ``D`` is the dual objective at the last check (the final :math:`\alpha`'s).

    The gap is computed when the active problem is solved to the current
    projected-gradient tolerance (which then tightens tenfold, after a
    multiplier step for the intercept) and every ``check_every`` epochs. The
    run ends uncertified after ``max_iter`` epochs or once the estimated cost of
    its work (``cd.step_ns`` per coordinate step, ``_NS_EPOCH`` per epoch,
    ``cd.check_ns`` per gap check) exceeds ``budget_ns``: a count of the work done, not a
    clock, so that the iterates depend on ``rng`` alone.
    """
    everyone = np.flatnonzero(cd.a > 0)
    active, above, below = everyone, math.inf, -math.inf
    pg_tol, spent = 0.1, 0.0
    for n_iter in itertools.count(1):
        pg_max, pg_min, kept = cd.epoch(rng.permutation(active), above, below)
        spent += float(cd.step_ns[active].sum()) + _NS_EPOCH
        solved = pg_max - pg_min <= pg_tol
        if solved and len(kept) < len(everyone):  # the shrunk problem is solved: check everyone again
            active, above, below = everyone, math.inf, -math.inf
        else:
            if solved or n_iter % check_every == 0:
                spent += cd.check_ns
                primal, dual = cd.primal(cd.coef, cd.intercept), cd.dual_objective()
                if primal - dual <= stop(primal):
                    return dual, n_iter, True
            if solved:
                if cd.rho:
                    cd.update_multiplier()
                pg_tol = max(pg_tol / 10, 1e-14)
            active = kept if shrinking else everyone
            above = pg_max if (shrinking and pg_max > 0) else math.inf
            below = pg_min if (shrinking and pg_min < 0) else -math.inf
        if spent > budget_ns or n_iter == max_iter:
            return cd.dual_objective(), n_iter, False


def hard_margin_svm(X, y, *, fit_intercept=True, max_iter=None):
    r"""Hard-margin SVM :math:`\min \tfrac12\|w\|^2` s.t. :math:`y_i(x_i^\top w + b) \ge 1`, solved exactly.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n, p)
    y : array-like of shape (n,)
        Labels in {-1, +1}.
    fit_intercept : bool
        Include the (unpenalized) offset :math:`b`; without it the hyperplane
        passes through the origin.
    max_iter : int, optional
        Cap on active-set iterations (default ``10 * (n + p) + 100``).

    Returns
    -------
    Solution
        :math:`w`, :math:`b`, ``objective`` :math:`\tfrac12\|w\|^2` (also ``gap_scale``),
        ``dual_gap`` :math:`\tfrac12\|w\|^2 - (\sum_i\alpha_i - \tfrac12\|\sum_i\alpha_iy_ix_i\|^2)`
        (rounding), ``margin`` :math:`1/\|w\|`, ``support`` (the samples with
        :math:`\alpha_i > 0`), ``dual_coef`` :math:`\alpha \ge 0` with
        :math:`w = \sum_i \alpha_i y_i x_i` and :math:`\sum_i\alpha_i y_i = 0` (with an
        intercept), and ``kkt``, the KKT residuals, each relative to the size of the
        solution (with :math:`m_i = y_i(x_i^\top w+b)`): ``primal_infeasibility``
        :math:`\max_i (1 - m_i)_+`, ``dual_infeasibility`` :math:`\max_i(-\alpha_i)_+ / \max_i\alpha_i`,
        ``stationarity`` :math:`\max(\|w - \sum_i\alpha_iy_ix_i\|_\infty / \|w\|_\infty,
        |\sum_i\alpha_iy_i| / \sum_i\alpha_i)`, ``complementary_slackness``
        :math:`\max_i \alpha_i|m_i - 1| / \max_i\alpha_i`.

    Raises
    ------
    NotSeparableError
        If no hyperplane separates the classes (the linear program
        :math:`y_i(x_i^\top w + b) \ge 1` is infeasible): use the soft-margin
        :func:`linear_svm` instead.
    """
    X, y, _ = _check_labels(Problem(X, y, Hinge(), None, fit_intercept))
    X = X.tocsr().astype(np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n, p = X.shape
    max_iter = 10 * (n + p) + 100 if max_iter is None else check_count(max_iter, "max_iter")
    w, b = _separating_hyperplane(X, y, fit_intercept)
    w, b, working, multipliers, n_iter = _active_set(X, y, w, b, fit_intercept, max_iter)
    alpha = np.zeros(n)
    alpha[working] = multipliers
    return _hard_margin_result(X, y, w, b if fit_intercept else 0.0, alpha, n_iter)


def _active_set(X, y, w, b, fit_intercept, max_iter):
    """Primal active set from the feasible ``(w, b)``; returns ``(w, b, working, alpha_W, n_iter)``.

    Each iteration moves towards the minimiser with the working set held at
    equality (:func:`_equality_qp`) as far as the other constraints allow,
    adding the one that blocks; at that minimiser, a negative multiplier
    drops its constraint, and nonnegative ones prove optimality.
    """
    working = []
    for n_iter in range(1, max_iter + 1):
        multipliers, w_target, b_target = _equality_qp(X, y, working, fit_intercept, b)
        step_w, step_b = w_target - w, b_target - b
        scale = max(float(np.abs(w).max()), abs(b), float(np.abs(w_target).max(initial=0.0)))
        if max(float(np.abs(step_w).max()), abs(step_b)) <= 1e-13 * scale:
            if multipliers.size == 0 or multipliers.min() >= -1e-12 * float(np.abs(multipliers).max()):
                return w, b, working, multipliers, n_iter
            working.pop(int(np.argmin(multipliers)))
            continue
        t, blocking = _ratio_test(X, y, w, b, step_w, step_b, working)
        w, b = w + t * step_w, b + t * step_b
        if blocking is not None:
            working.append(blocking)
    raise RuntimeError(
        f"hard_margin_svm: no optimum after {max_iter} active-set iterations (degenerate cycling); "
        "raise max_iter or use linear_svm with a small lam"
    )


def _separating_hyperplane(X, y, fit_intercept):
    r"""A point of :math:`\{(w, b) : y_i(x_i^\top w + b) \ge 1\}`, or :class:`NotSeparableError`.

    Solves the feasibility linear program with HiGHS, then divides by the
    smallest margin so that the point is feasible to rounding.
    """
    n, p = X.shape
    ones = np.ones((n, int(fit_intercept)))
    if sp.issparse(X):
        constraints = sp.diags(-y) @ sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    else:
        constraints = -y[:, None] * np.hstack([X, ones])
    result = linprog(
        np.zeros(constraints.shape[1]),
        A_ub=constraints,
        b_ub=-np.ones(n),
        bounds=(None, None),
        method="highs",
    )
    if result.status == 2:
        raise NotSeparableError(
            "the classes are not linearly separable (no w, b with y_i (x_i.w + b) >= 1 for all i), "
            "so the hard-margin SVM has no solution; use the soft-margin SVM "
            "(normpen.linear.solvers.svm.linear_svm, or LinearSVC without hard_margin)"
        )
    if result.status != 0:
        raise RuntimeError(f"the separability linear program failed: {result.message}")
    z = result.x
    smallest = float((-(constraints @ z)).min())
    if smallest <= 0:
        raise NotSeparableError(
            "the classes are separable only to rounding (some margin is <= 0 at the linear program's "
            "solution); use the soft-margin SVM (normpen.linear.solvers.svm.linear_svm)"
        )
    z = z / min(smallest, 1.0)
    return z[:p], (float(z[p]) if fit_intercept else 0.0)


def _equality_qp(X, y, working, fit_intercept, b):
    r"""Minimiser of :math:`\tfrac12\|w\|^2` with the constraints in ``working`` held at equality.

    Returns ``(alpha_W, w, b)`` from the bordered system of the module
    docstring. With an empty working set the minimiser is :math:`w = 0` and
    :math:`b` is free, so the current ``b`` is kept.
    """
    if not working:
        return np.zeros(0), np.zeros(X.shape[1]), b
    rows = X[working]
    yw = y[working]
    gram = np.asarray((rows @ rows.T).todense() if sp.issparse(rows) else rows @ rows.T)
    K = yw[:, None] * gram * yw[None, :]
    m = len(working)
    if fit_intercept:
        system = np.block([[K, yw[:, None]], [yw[None, :], np.zeros((1, 1))]])
        rhs = np.append(np.ones(m), 0.0)
    else:
        system, rhs = K, np.ones(m)
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    alpha = solution[:m]
    w = np.asarray(rows.T @ (alpha * yw)).ravel()
    return alpha, w, (float(solution[m]) if fit_intercept else 0.0)


def _ratio_test(X, y, w, b, step_w, step_b, working):
    r"""Longest step :math:`t \le 1` keeping all constraints, and the constraint that blocks it (or None)."""
    slack = y * (np.asarray(X @ w).ravel() + b) - 1.0
    change = y * (np.asarray(X @ step_w).ravel() + step_b)
    change[working] = 0.0
    threshold = -1e-12 * (np.abs(change).max(initial=0.0) + 1.0)
    decreasing = np.flatnonzero(change < threshold)
    if decreasing.size == 0:
        return 1.0, None
    limits = np.clip(slack[decreasing], 0, None) / -change[decreasing]
    first = int(np.argmin(limits))
    if limits[first] >= 1.0:
        return 1.0, None
    return float(limits[first]), int(decreasing[first])


def _hard_margin_result(X, y, w, b, alpha, n_iter):
    """The :class:`Solution` with its KKT residuals and duality gap."""
    margins = y * (np.asarray(X @ w).ravel() + b)
    w_dual = np.asarray(X.T @ (alpha * y)).ravel()
    scale = float(alpha.max())
    kkt = {
        "primal_infeasibility": float(np.clip(1 - margins, 0, None).max()),
        "dual_infeasibility": float(np.clip(-alpha, 0, None).max()) / scale,
        "stationarity": max(
            float(np.abs(w - w_dual).max()) / float(np.abs(w).max()),
            abs(float(alpha @ y)) / float(alpha.sum()),
        ),
        "complementary_slackness": float((alpha * np.abs(margins - 1)).max()) / scale,
    }
    norm_sq = float(w @ w)
    return Solution(
        coef=w,
        intercept=float(b),
        objective=0.5 * norm_sq,
        dual_gap=0.5 * norm_sq - (float(alpha.sum()) - 0.5 * float(w_dual @ w_dual)),
        gap_scale=0.5 * norm_sq,
        n_iter=n_iter,
        converged=True,
        dual_coef=alpha,
        support=np.flatnonzero(alpha > 0),
        margin=1 / math.sqrt(norm_sq),
        kkt=kkt,
    )
