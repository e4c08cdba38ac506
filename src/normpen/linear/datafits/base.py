r"""The Datafit contract: the smooth (or hinge) loss term of a penalized linear model.

A datafit is the sample-weighted mean of a per-sample loss of the linear
predictor :math:`z_i = x_i^\top w + b`:

.. math::

    F(w, b) = \sum_{i=1}^n a_i\, \ell(y_i, z_i), \qquad
    a_i = \frac{s_i}{\sum_k s_k},

with :math:`s` the sample weights (all ones by default, so :math:`a_i = 1/n`).
Single-output datafits have :math:`z_i \in \mathbb{R}` and coefficients
``w`` of shape ``(p,)``; multi-output ones (multinomial, multitask quadratic)
have :math:`z_i \in \mathbb{R}^m` and ``w`` of shape ``(p, m)``.

A datafit object is a stateless description (it holds no data, so estimators
can clone it). Everything is written against the array API, so the same
methods take numpy arrays or torch tensors. The methods come in three layers:

Per-sample kernels (subclasses implement them; ``y`` is the *encoded* target
returned by :meth:`Datafit.encode_target`):

- ``loss(y, z)``: :math:`\ell(y_i, z_i)` for every sample, shape ``(n,)``;
- ``derivative(y, z)``: :math:`\partial \ell / \partial z_i`, shape of ``z``
  (a subgradient for the hinge);
- ``second_derivative(y, z)``: the diagonal of :math:`\partial^2 \ell / \partial z_i^2`,
  shape of ``z`` (used by Newton steps; not defined for the hinge);
- ``conjugate(y, u)``: the Fenchel conjugate :math:`\ell_i^*(u_i) = \sup_z u_i z - \ell(y_i, z)`
  for every sample (``inf`` outside its domain), shape ``(n,)``.

Weighted aggregates written once here (``weights`` are the normalised
:math:`a`, from :func:`normalize_weights`):

- ``value(y, z, weights)`` :math:`= \sum_i a_i \ell(y_i, z_i)`;
- ``raw_gradient(y, z, weights)`` :math:`= (a_i\, \partial\ell/\partial z_i)_i`, so that
  :math:`\nabla_w F = X^\top G` and :math:`\partial_b F = \sum_i G_i`;
- ``dual(y, u, weights)`` :math:`= -\sum_i a_i \ell_i^*(u_i)`, the dual objective at
  the dual point :math:`\theta_i = -a_i u_i`;
- ``fit_intercept(y, z, weights)``: the intercept shift that minimises :math:`F`
  with ``w`` fixed (Newton's method; exact in one step for the quadratic).

Design-level helpers (what a solver outside this package needs; ``y`` encoded):

- ``objective(X, y, w, b=0, sample_weight=None)``: :math:`F(w, b)`;
- ``gradient(X, y, w, b=0, sample_weight=None)``: ``(grad_w, grad_b)``;
- ``lipschitz(X, sample_weight=None, fit_intercept=True)``: a Lipschitz constant of
  :math:`\nabla F` in :math:`(w, b)`, :math:`c\,\|A^{1/2}[X, 1]\|_2^2` with
  :math:`c = \sup \ell''` the class attribute ``curvature``.

Duality. With :math:`\Omega` a norm, the problem
:math:`\min_{w,b} F(w, b) + \lambda\Omega(w)` has the dual

.. math::

    \max_u\; D(u) = -\sum_i a_i \ell_i^*(u_i) \quad \text{s.t.} \quad
    \Omega^*(X^\top A u) \le \lambda,\ \ \textstyle\sum_i a_i u_i = 0 \text{ (with an intercept)},

and the primal point gives the dual candidate :math:`u = \ell'(z)/\kappa`
(rescaled by :math:`\kappa \ge 1` until feasible), so
:math:`P(w, b) - D(u) \ge P - P^\star \ge 0` is a certificate. Because
:math:`\ell^*` is :math:`1/c`-strongly convex, :math:`D` is strongly concave and
:math:`\sum_i a_i (u_i - u_i^\star)^2 \le 2c\,(P - D)`: the radius of the
gap-safe screening tests.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import array_api_compat
import numpy as np

from normpen._array import namespace

__all__ = ["Datafit", "MarginDatafit", "float_target", "normalize_weights", "row_sum", "xlogx"]


def normalize_weights(sample_weight, n_samples, like):
    r"""Sample weights :math:`s` turned into :math:`a = s / \sum s` (all :math:`1/n` when ``None``).

    ``like`` is an array whose kind, dtype and device the result takes.
    Raises ``ValueError`` if the weights are not one finite nonnegative number
    per sample with a positive sum.
    """
    xp = namespace(like)
    if sample_weight is None:
        return xp.full((n_samples,), 1.0 / n_samples, dtype=like.dtype, device=array_api_compat.device(like))
    s = (
        np.asarray(sample_weight, dtype=np.float64)
        if isinstance(sample_weight, (list, tuple))
        else sample_weight
    )
    s = xp.asarray(s, dtype=like.dtype, device=array_api_compat.device(like))
    if s.ndim != 1 or s.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), one weight per sample, got {tuple(s.shape)}"
        )
    if not bool(xp.all(xp.isfinite(s))) or bool(xp.any(s < 0)):
        raise ValueError("sample_weight must be finite and >= 0; give 0 to drop a sample")
    total = xp.sum(s)
    if not float(total) > 0:
        raise ValueError("sample_weight sums to 0: at least one sample needs a positive weight")
    return s / total


def xlogx(t):
    r""":math:`t \log t` elementwise for :math:`t \ge 0`, with :math:`0 \log 0 = 0` (the logarithm of 1 taken
    there)."""
    xp = namespace(t)
    return t * xp.log(xp.where(t > 0, t, 1.0))


def float_target(y, ndim, owner):
    """``y`` as a finite real floating array with ``ndim`` dimensions (integers are converted).

    ``owner`` names the datafit in the error messages.
    """
    xp = namespace(y)
    if y.ndim != ndim:
        hint = (
            "use MultitaskQuadratic or Multinomial for 2-D targets"
            if ndim == 1
            else "give one column per output"
        )
        raise ValueError(f"{owner} needs a {ndim}-D target, got shape {tuple(y.shape)}; {hint}")
    if not xp.isdtype(y.dtype, "real floating"):
        y = xp.astype(y, xp.float64)
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError("y contains NaN or infinite values; remove or impute them first")
    return y


def row_sum(x):
    """Sum over the last axis of a 2-D array; a 1-D array is returned unchanged."""
    return x if x.ndim == 1 else namespace(x).sum(x, axis=1)


def _weights_column(weights, z):
    """``weights`` shaped to broadcast against ``z`` (a column for multi-output ``z``)."""
    xp = namespace(z)
    return weights if z.ndim == 1 else xp.reshape(weights, (-1, 1))


class Datafit(ABC):
    """Base class of the datafits; the module docstring states the contract."""

    #: :math:`\\sup_z \\ell''(z)` (largest eigenvalue of the per-sample Hessian); ``None``
    #: for a datafit that is not differentiable (the hinge).
    curvature: ClassVar[float | None] = 1.0
    #: The linear predictor of a sample is a vector (``w`` has shape ``(p, m)``).
    multi_output: ClassVar[bool] = False

    # ---- target -----------------------------------------------------------------

    @abstractmethod
    def encode_target(self, y):
        """Validate ``y`` and return it in the float form the kernels take.

        Raises ``ValueError`` naming what is wrong (NaN, wrong values, wrong
        number of dimensions) and how to fix it.
        """

    def n_outputs(self, y):
        """Number of columns :math:`m` of the linear predictor for the encoded ``y`` (1 if single)."""
        return y.shape[1] if self.multi_output else 1

    # ---- per-sample kernels -----------------------------------------------------

    @abstractmethod
    def loss(self, y, z):
        """Per-sample loss :math:`\\ell(y_i, z_i)`, shape ``(n,)``."""

    @abstractmethod
    def derivative(self, y, z):
        """Per-sample derivative :math:`\\partial\\ell/\\partial z_i`, the shape of ``z``."""

    @abstractmethod
    def second_derivative(self, y, z):
        """Diagonal of the per-sample Hessian :math:`\\partial^2\\ell/\\partial z_i^2`, the shape of ``z``."""

    @abstractmethod
    def conjugate(self, y, u):
        """Per-sample Fenchel conjugate :math:`\\ell_i^*(u_i)`, shape ``(n,)``; ``inf`` off its domain."""

    def hessian_factors(self, y, z, weights):
        r"""``(D, V)`` with :math:`a_i \nabla^2_z \ell(y_i, z_i) = \operatorname{diag}(D_i) - V_i V_i^\top`.

        Both are ``(n, m)`` arrays (``(n, 1)`` for a single output). ``V`` is
        ``None`` where the Hessian is diagonal across outputs (every datafit but
        the multinomial): then ``D`` is :math:`a_i \ell''(z_i)` and a Newton model
        splits into one model per output. Solvers read this declaration to pick
        the Newton model; they never ask which datafit they hold.
        """
        xp = namespace(z)
        D = _weights_column(weights, z) * self.second_derivative(y, z)
        return (D if D.ndim == 2 else xp.reshape(D, (-1, 1))), None

    def intercept_terms(self, y, z, weights):
        r"""What :meth:`fit_intercept` needs at ``z``: :math:`F`, its gradient and Hessian in the intercept.

        Returns the value :math:`\sum_i a_i\ell(y_i, z_i)`, the gradient
        :math:`\sum_i a_i\nabla_z\ell(y_i, z_i)` (``(m,)``) and the Hessian
        :math:`\sum_i a_i\nabla^2_z\ell(y_i, z_i)` (``(m, m)``). The default assumes
        a Hessian that is diagonal across outputs; the multinomial overrides it
        with its coupled one, from one softmax.
        """
        xp = namespace(z)
        m = 1 if z.ndim == 1 else z.shape[1]
        grad = xp.reshape(xp.sum(self.raw_gradient(y, z, weights), axis=0), (m,))
        h = self.second_derivative(y, z)
        hess = (
            xp.reshape(xp.sum(weights * h), (1, 1))
            if z.ndim == 1
            else _diag(xp.sum(_weights_column(weights, z) * h, axis=0))
        )
        return self.value(y, z, weights), grad, hess

    def canonical_intercept(self, b):
        """The intercept a solver returns (the multinomial's is only defined up to a constant shift)."""
        return b

    # ---- weighted aggregates ----------------------------------------------------

    def value(self, y, z, weights):
        r""":math:`F = \sum_i a_i \ell(y_i, z_i)`, a 0-d array.

        The sum is the arrays' own method (numpy's and torch's), which promotes dtypes as ``*`` does;
        the array API's ``sum`` through ``array_api_compat`` adds about 2 microseconds a call, which a
        path pays twice a strength (issue 15's 200 x 1000 problems: about 80 calls a path).
        """
        return (weights * self.loss(y, z)).sum()

    def raw_gradient(self, y, z, weights):
        r"""Raw gradient :math:`G_i = a_i \partial\ell/\partial z_i`.

        Then :math:`\nabla_w F = X^\top G` and :math:`\partial_b F = \sum_i G_i`.
        """
        return _weights_column(weights, z) * self.derivative(y, z)

    def dual(self, y, u, weights):
        r"""Dual objective :math:`D(u) = -\sum_i a_i \ell_i^*(u_i)` (``-inf`` off the domain).

        Samples with zero weight contribute nothing whatever their :math:`u_i`: their conjugates are
        replaced by 0 before the product (a zero weight times an infinite conjugate would be ``nan``,
        and numpy would warn), which the common case, every weight positive, skips (summed as in
        :meth:`value`).
        """
        conj = self.conjugate(y, u)
        if weights.min() > 0:
            return -(weights * conj).sum()
        xp = namespace(u)
        return -xp.sum(weights * xp.where(weights > 0, conj, 0.0))

    def fit_intercept(self, y, z, weights, max_iter=50):
        r"""Shift :math:`\delta` minimising :math:`\delta \mapsto \sum_i a_i \ell(y_i, z_i + \delta)`.

        Damped Newton's method on the 1-D (or :math:`m`-D) convex problem,
        stopped when the gradient :math:`\sum_i a_i \ell'(y_i, z_i + \delta)`
        is at rounding level (or, once the decrease is too small for the objective
        to resolve, after one last full Newton step); exact in one step for the
        quadratic datafit.
        The multinomial Hessian is singular along :math:`(1, \dots, 1)` (the
        softmax is shift-invariant): the step uses its pseudo-inverse. Returns
        a 0-d array (single output) or an ``(m,)`` array. Raises
        ``ValueError`` for a datafit whose loss is not differentiable.
        """
        if self.curvature is None:
            raise ValueError(
                f"{type(self).__name__} is not differentiable: fit its intercept with its solver"
            )
        xp = namespace(z)
        m = 1 if z.ndim == 1 else z.shape[1]
        shift = xp.zeros((m,), dtype=z.dtype, device=array_api_compat.device(z))
        eps = float(xp.finfo(z.dtype).eps)
        # a constant added to every output is an exact null direction of the multinomial's Hessian; its
        # computed eigenvalue is the rounding of a sum over the samples, which the pseudo-inverse must cut
        cutoff = 16 * z.shape[0] * eps
        current, grad, hess = self.intercept_terms(y, z, weights)
        for _ in range(max_iter):
            if float(xp.max(xp.abs(grad))) <= 10 * eps * max(1.0, float(xp.max(xp.abs(shift)))):
                break
            step = -(xp.linalg.pinv(hess, rtol=cutoff) @ grad)
            decrease = float(xp.sum(step * grad))
            if not decrease < -4 * eps * abs(float(current)):
                # the decrement is below what the objective can resolve: a line search cannot
                # judge the step, but the full Newton step still squares the gradient's size
                shift = shift + step
                break
            t = 1.0
            while t > 1e-10:
                trial = shift + t * step
                terms = self.intercept_terms(y, _shifted(z, trial), weights)
                if float(terms[0]) <= float(current) + 1e-4 * t * decrease:
                    break
                t *= 0.5
            else:
                break
            shift, (current, grad, hess) = trial, terms
        return shift[0] if z.ndim == 1 else shift

    # ---- design-level helpers ---------------------------------------------------

    def objective(self, X, y, w, b=0.0, sample_weight=None):
        r""":math:`F(w, b)` for the design ``X`` (dense or scipy.sparse) and encoded target ``y``."""
        z = linear_predictor(X, w, b)
        return float(self.value(y, z, normalize_weights(sample_weight, z.shape[0], z)))

    def gradient(self, X, y, w, b=0.0, sample_weight=None):
        r"""``(grad_w, grad_b)``: :math:`X^\top G` and :math:`\sum_i G_i` with :math:`G` the raw gradient."""
        z = linear_predictor(X, w, b)
        G = self.raw_gradient(y, z, normalize_weights(sample_weight, z.shape[0], z))
        xp = namespace(G)
        return X.T @ G, xp.sum(G, axis=0)

    def lipschitz(self, X, sample_weight=None, fit_intercept=True):
        r"""Lipschitz constant :math:`c\,\|A^{1/2}[X, 1]\|_2^2` of :math:`\nabla F` in :math:`(w, b)`.

        The squared spectral norm comes from a few hundred steps of the
        power method on :math:`[X, 1]^\top A [X, 1]`, then inflated by 1%
        so that it is a safe upper bound (numpy or scipy.sparse ``X``).
        """
        if self.curvature is None:
            raise ValueError(f"{type(self).__name__} is not differentiable: it has no Lipschitz gradient")
        like = X if _is_tensor(X) else np.zeros(1)
        a = normalize_weights(sample_weight, X.shape[0], like)
        return self.curvature * squared_spectral_norm(X, a, fit_intercept)


def _is_tensor(X):
    return type(X).__module__.startswith("torch")


def _diag(v):
    xp = namespace(v)
    m = v.shape[0]
    eye = xp.eye(m, dtype=v.dtype, device=array_api_compat.device(v))
    return eye * xp.reshape(v, (1, m))


def _shifted(z, shift):
    return z + shift[0] if z.ndim == 1 else z + shift


def linear_predictor(X, w, b=0.0):
    """:math:`z = Xw + b` for a dense array, torch tensor or scipy.sparse matrix ``X``."""
    z = X @ w
    return z + b


def squared_spectral_norm(X, weights, fit_intercept, n_iter=300, seed=0):
    r""":math:`\|A^{1/2}[X, 1]\|_2^2`, largest eigenvalue of :math:`[X,1]^\top A [X,1]`, inflated by 1%.

    Power iteration from a seeded random start, written against the array
    API: ``X`` is a numpy array, a scipy.sparse matrix or a torch tensor and
    ``weights`` (:math:`a`) an array of the same kind; ``fit_intercept=False``
    drops the column of ones.
    """
    xp = namespace(weights)
    start = np.random.default_rng(seed).standard_normal(X.shape[1] + 1)
    v = xp.asarray(start[:-1], dtype=weights.dtype, device=array_api_compat.device(weights))
    c = float(start[-1]) if fit_intercept else 0.0
    estimate = 0.0
    for _ in range(n_iter):
        norm = math.sqrt(float(xp.sum(v * v)) + c * c) or 1.0
        v, c = v / norm, c / norm
        u = (X @ v + c) * weights
        v = X.T @ u
        c = float(xp.sum(u)) if fit_intercept else 0.0
        previous, estimate = estimate, math.sqrt(float(xp.sum(v * v)) + c * c)
        if abs(estimate - previous) <= 1e-8 * estimate:
            break
    return 1.01 * estimate


class MarginDatafit(Datafit):
    r"""A loss of the margin, :math:`\ell(y, z) = \varphi(y z)` with :math:`y \in \{-1, +1\}`.

    Subclasses give :math:`\varphi`, :math:`\varphi'`, :math:`\varphi''` and the
    conjugate :math:`\varphi^*`; then :math:`\partial\ell/\partial z = y\varphi'(yz)`,
    :math:`\partial^2\ell/\partial z^2 = \varphi''(yz)` and
    :math:`\ell^*(u) = \varphi^*(yu)`.
    """

    def encode_target(self, y):
        xp = namespace(y)
        y = float_target(y, 1, type(self).__name__)
        if not bool(xp.all((y == 1) | (y == -1))):
            raise ValueError(
                f"{type(self).__name__} needs labels in {{-1, +1}}; map the two classes to -1 and +1 "
                "(the estimators do this for you)"
            )
        return y

    @abstractmethod
    def phi(self, t):
        """The margin loss :math:`\\varphi(t)`."""

    @abstractmethod
    def phi_derivative(self, t):
        """:math:`\\varphi'(t)`."""

    @abstractmethod
    def phi_second_derivative(self, t):
        """:math:`\\varphi''(t)`."""

    @abstractmethod
    def phi_conjugate(self, s):
        """:math:`\\varphi^*(s) = \\sup_t st - \\varphi(t)` (``inf`` off its domain)."""

    def loss(self, y, z):
        return self.phi(y * z)

    def derivative(self, y, z):
        return y * self.phi_derivative(y * z)

    def second_derivative(self, y, z):
        return self.phi_second_derivative(y * z)

    def conjugate(self, y, u):
        return self.phi_conjugate(y * u)
