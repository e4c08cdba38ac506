r"""The Penalty contract every norm penalty in normpen fulfils.

A penalty :math:`P(x) = \lambda\,\Omega(x)` is one object that serves every role
the theory gives it:

- ``value(x)``: :math:`P(x)`, a term in the loss;
- ``grad(x)``: :math:`\nabla P(x)`, the minimum-norm subgradient where :math:`P`
  is not differentiable;
- ``prox(x, step)``: :math:`\operatorname{argmin}_z \tfrac12\|z-x\|^2 + \text{step}\cdot P(z)`,
  the proximal step that produces exact zeros;
- ``norm(x)``: :math:`\Omega(x)`, the regulariser without :math:`\lambda`
  (a norm for every penalty except elastic net and anchored L2, whose
  docstrings say what it is there);
- ``project(x, radius)``: the Euclidean projection onto
  :math:`\{z : \Omega(z) \le \text{radius}\}`;
- ``dual_norm(x)``: :math:`\Omega^*(x) = \max_{\Omega(z)\le1} \langle z, x\rangle`;
- ``project_dual(x, radius)``: the Euclidean projection onto the dual-norm ball
  :math:`\{z : \Omega^*(z) \le \text{radius}\}`;
- ``lambda_max(grad0)``: the smallest :math:`\lambda` at which :math:`w=0`
  minimises :math:`F(w) + \lambda\Omega(w)`, given :math:`\nabla F(0)`.

For a norm penalty the Moreau identity ties three of them together:
:math:`\operatorname{prox}_{s\lambda\Omega}(x) = x - \Pi_{s\lambda B^*}(x)`,
with :math:`B^*` the unit dual-norm ball, and :math:`\lambda_{\max} = \Omega^*(\nabla F(0))`.

Every public method validates its input once (kind, dtype, finiteness, shape)
and then calls the unchecked kernel of the same name with a leading
underscore (``_value``, ``_prox``, ...). Subclasses implement the kernels;
training loops that must not synchronise with the device call the kernels
directly on tensors they already trust.

Every kernel a subclass defines is wrapped once (:func:`_widened`): float16 and
bfloat16 inputs are computed in float32, and a step or radius too large for the
input's dtype in float64, the result cast back to the input's dtype. The test
is on the dtype and on Python floats only, so it never synchronises.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from numbers import Real
from typing import ClassVar

from normpen._array import check_array, check_nonnegative, check_positive, namespace

__all__ = ["Penalty"]

#: The kernels that every subclass implements; :func:`_widened` wraps each of them.
_KERNELS = ("_value", "_grad", "_prox", "_norm", "_project", "_dual_norm", "_project_dual")
#: A scalar argument (step times strength, radius) above this fraction of the dtype's largest float
#: is computed in float64: the kernels multiply it by small factors (2, the weights) in the input's dtype.
_SCALAR_HEADROOM = 1 / 16


#: Per input dtype: whether it is narrower than float32, and the largest scalar it computes with.
_DTYPE_LIMITS = {}


def _dtype_limits(x):
    """``(narrow, largest)`` for ``x``'s dtype, looked up once per dtype (the wrapper runs every step)."""
    limits = _DTYPE_LIMITS.get(x.dtype)
    if limits is None:
        xp = namespace(x)
        narrow = xp.finfo(x.dtype).bits < 32
        largest = float(xp.finfo(xp.float32 if narrow else x.dtype).max) * _SCALAR_HEADROOM
        limits = _DTYPE_LIMITS[x.dtype] = (narrow, largest)
    return limits


def _wider_dtype(x, scalars, lam):
    """The dtype a kernel must compute in for ``x`` and its scalar arguments, or None for ``x``'s own.

    Narrower than float32 (float16, bfloat16: no SVD, no sort on every device, and 3 digits):
    float32. A scalar (times ``lam`` when ``lam > 1``, as a prox step meets it) beyond
    :data:`_SCALAR_HEADROOM` of the dtype's largest float: float64, where it is an ordinary number.
    """
    narrow, largest = _dtype_limits(x)
    if any(isinstance(s, Real) and s * max(lam, 1.0) > largest for s in scalars):
        return namespace(x).float64
    return namespace(x).float32 if narrow else None


def _widened(kernel):
    """``kernel`` computed in the dtype of :func:`_wider_dtype` when it is wider, the result cast back."""

    @functools.wraps(kernel)
    def run(self, x, *scalars):
        wide = _wider_dtype(x, scalars, self.lam)
        if wide is None:
            return kernel(self, x, *scalars)
        xp = namespace(x)
        return xp.astype(kernel(self, xp.astype(x, wide), *scalars), x.dtype)

    return run


@dataclass(frozen=True, eq=False)
class Penalty(ABC):
    """Base class of normpen's penalties; see the module docstring for the contract.

    Parameters
    ----------
    lam : float
        Regularisation strength :math:`\\lambda \\ge 0`.
    """

    lam: float

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _KERNELS:
            if name in cls.__dict__:
                setattr(cls, name, _widened(cls.__dict__[name]))

    #: The input must be a matrix (2-D): spectral, nuclear, max-norm.
    matrix_only: ClassVar[bool] = False
    #: ``value = lam * norm`` with ``norm`` a norm: the Moreau identity holds and
    #: ``lambda_max`` is the dual norm of the gradient at zero.
    is_norm: ClassVar[bool] = True
    #: ``value`` is differentiable everywhere (finite-difference checks apply).
    smooth: ClassVar[bool] = False
    #: Flipping the sign of any coordinate leaves ``value`` unchanged and flips the same coordinate of
    #: ``prox`` (so the prox under ``x >= 0`` is the prox of ``max(x, 0)``: FISTA's positivity needs it).
    sign_invariant: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "lam", check_nonnegative(self.lam, "lam"))

    def with_lam(self, lam):
        """The same penalty with another strength ``lam``."""
        return replace(self, lam=lam)

    # ---- validated public API -------------------------------------------------

    def value(self, x):
        """Penalty value :math:`\\lambda\\,\\Omega(x)`, a 0-d array of the input's kind and dtype."""
        self._check(x)
        return self._value(x)

    def grad(self, x):
        """Gradient of the penalty; the minimum-norm subgradient where it is not smooth."""
        self._check(x)
        return self._grad(x)

    def prox(self, x, step):
        """Proximal operator :math:`\\arg\\min_z \\tfrac12\\|z-x\\|^2 + s\\,P(z)` with ``s = step``."""
        self._check(x)
        return self._prox(x, check_nonnegative(step, "step"))

    def norm(self, x):
        """The regulariser :math:`\\Omega(x)` without :math:`\\lambda`, the quantity ``project`` bounds."""
        self._check(x)
        return self._norm(x)

    def project(self, x, radius):
        """Euclidean projection of ``x`` onto :math:`\\{z : \\Omega(z) \\le \\text{radius}\\}`."""
        self._check(x)
        return self._project(x, check_positive(radius, "radius"))

    def dual_norm(self, x):
        """Dual norm :math:`\\Omega^*(x) = \\max_{\\Omega(z) \\le 1} \\langle z, x \\rangle`."""
        self._check(x)
        return self._dual_norm(x)

    def project_dual(self, x, radius):
        """Euclidean projection of ``x`` onto :math:`\\{z : \\Omega^*(z) \\le \\text{radius}\\}`."""
        self._check(x)
        return self._project_dual(x, check_nonnegative(radius, "radius"))

    def lambda_max(self, grad0):
        """Smallest :math:`\\lambda` for which :math:`w = 0` minimises :math:`F + \\lambda\\Omega`.

        ``grad0`` is the gradient of the datafit :math:`F` at :math:`w = 0`
        (with the intercept, if any, already fitted). For a norm penalty this
        is :math:`\\Omega^*(\\nabla F(0))`; a smooth penalty never zeroes the
        solution, so it returns ``inf`` unless ``grad0`` is zero.
        """
        self._check(grad0, "grad0")
        return self._lambda_max(grad0)

    # ---- kernels: no validation, subclasses implement ---------------------------

    @abstractmethod
    def _value(self, x): ...

    @abstractmethod
    def _grad(self, x): ...

    @abstractmethod
    def _prox(self, x, step): ...

    @abstractmethod
    def _norm(self, x): ...

    @abstractmethod
    def _project(self, x, radius): ...

    @abstractmethod
    def _dual_norm(self, x): ...

    @abstractmethod
    def _project_dual(self, x, radius): ...

    def _lambda_max(self, grad0):
        if self.is_norm:
            return float(self._dual_norm(grad0))
        xp = namespace(grad0)
        return 0.0 if not bool(xp.any(grad0 != 0)) else math.inf

    # ---- validation -----------------------------------------------------------

    def _check(self, x, name="x"):
        check_array(x, name)
        if self.matrix_only and x.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} needs a matrix: {name} must be 2-D, got shape "
                f"{tuple(x.shape)}; reshape a conv kernel with w.reshape(w.shape[0], -1)"
            )
        self._check_shape(x, name)

    def _check_shape(self, x, name):
        """Hook for penalties tied to a shape (weights, groups, anchor): raise if ``x`` does not fit."""
        return None
