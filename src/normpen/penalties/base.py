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

The kernels are a contract
--------------------------
Code outside :mod:`normpen.penalties` (training hooks in :mod:`normpen.torch`,
solvers in :mod:`normpen.linear`) calls ``_value``, ``_grad``, ``_prox``,
``_norm``, ``_project``, ``_dual_norm``, ``_project_dual`` and ``_lambda_max``
directly, on arrays it already trusts: same arguments as the public method,
no validation, no host synchronisation where the math allows (the spectral
and projection searches are the exceptions), the input's kind, dtype, device
and shape out. ``_check(x, name)`` is the validation the public methods run.

Declarations
------------
A penalty also *declares* what solvers and training kernels need from it, and
they read only the declarations, never the penalty's class:

- :meth:`Penalty.block_form` returns a :class:`BlockForm`: the penalty as
  plain numbers and host arrays (per-coordinate L1 weights, the smooth
  quadratic part, groups with their weights, a max-norm radius), or ``None``
  where it is not block-separable (spectral, nuclear: solvers then use the
  prox kernels, FISTA);
- class flags: ``is_norm``, ``norm_squared``, ``smooth``, ``sign_invariant``,
  ``matrix_only`` and ``is_constraint`` (see their comments below).

A form must agree with the penalty's own methods: the value it implies is
``value`` (``tests/penalties/test_block_form.py`` checks every registered
penalty), and its ``prox`` is the penalty's prox.

Adding a penalty
----------------
Write one file in ``normpen/penalties/``: a frozen dataclass subclassing
:class:`Penalty` that implements the seven kernels, sets the flags that hold,
and returns its :class:`BlockForm` from ``block_form`` if it has one (the
default is ``None``). Add one line to ``CASES`` in ``tests/penalties/cases.py``,
which runs every contract test (and the form check) over it, and export the
name in ``normpen/penalties/__init__.py`` (and ``normpen/__init__.py`` for the
top-level name); to spell it by name in the estimators, ``normpen fit`` and
``normpen sweep``, add its entry to :mod:`normpen.penalties.names`. Nothing in
the solvers or the training code names penalties:
a block-separable penalty gets coordinate descent and the fast training
kernels from its form, any other penalty FISTA and the generic kernel.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any, ClassVar

from normpen._array import check_array, check_nonnegative, check_positive, namespace

__all__ = ["Penalty", "BlockForm"]

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
class BlockForm:
    r"""A block-separable penalty as plain numbers and host arrays, the declaration solvers read.

    .. math::

        P(x) = \lambda_1 \sum_i \omega_i |x_i|
             + \lambda_G \sum_g \omega_g \|x_g\|_2
             + \frac{\mu}{2} \sum_i F_i (x_i - a_i)^2
             \;\big[+\ \iota\{\max_g \|x_g\|_2 \le c\}\big]

    Every field is a Python float, ``None`` or an array the penalty stores (a
    reference, never a copy: do not write to it). A reader computes a weight as
    the strength times the unit weight (``l1 * l1_weights``,
    ``group_lam * group_weights``), in that order.

    Parameters
    ----------
    l1 : float
        :math:`\lambda_1 \ge 0`, the strength of the L1 part (0: none).
    l1_weights : numpy array or None
        :math:`\omega_i \ge 0`, one per entry of ``x`` (its shape); ``None``: all ones.
    ridge : float
        :math:`\mu \ge 0`, the strength of the quadratic part.
    anchor : numpy array, torch tensor or None
        :math:`a`, of ``x``'s shape; ``None``: 0.
    fisher : numpy array, torch tensor or None
        :math:`F \ge 0`, of ``x``'s shape; ``None``: all ones.
    groups : {"rows", "cols"}, tuple of int64 arrays, or None
        The groups :math:`g`: the slices ``x[i, ...]`` (``"rows"``), ``x[:, j, ...]``
        (``"cols"``), or disjoint index arrays into ``x.reshape(-1)`` (coordinates in
        no group are outside the group term); ``None``: no group term.
    group_lam : float
        :math:`\lambda_G \ge 0`, the strength of the group term.
    group_weights : numpy array or None
        :math:`\omega_g \ge 0`, one per group in the order of ``groups`` (the slice
        order for ``"rows"``/``"cols"``). ``None`` only where the default
        :math:`\sqrt{|g|}` needs the shape and none was given to ``block_form``.
    max_norm : float or None
        :math:`c`: every group constrained to :math:`\|x_g\|_2 \le c` (a constraint,
        the indicator term); ``None``: no constraint.
    """

    l1: float = 0.0
    l1_weights: Any = None
    ridge: float = 0.0
    anchor: Any = None
    fisher: Any = None
    groups: Any = None
    group_lam: float = 0.0
    group_weights: Any = None
    max_norm: float | None = None

    @property
    def axis(self):
        """0 for ``"rows"`` groups, 1 for ``"cols"``, None for index groups or none."""
        return ("rows", "cols").index(self.groups) if isinstance(self.groups, str) else None

    @property
    def elementwise(self):
        """No group term and no constraint: every term acts on one coordinate."""
        return self.groups is None

    @property
    def ridge_only(self):
        r"""Nothing but :math:`\tfrac{\mu}{2}\|x\|_2^2`: its decoupled decay is the linear
        :math:`x \leftarrow (1 - \eta\mu)x` of ``torch.optim``'s ``weight_decay``."""
        plain_l1 = self.l1 == 0 and self.l1_weights is None
        return self.elementwise and plain_l1 and self.anchor is None and self.fisher is None


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
    #: ``value = lam / 2 * norm**2`` with ``norm`` a norm (L2): the constrained form's ball is a norm ball,
    #: and the penalty's strength at a constraint multiplier ``mu`` on ``norm <= r`` is ``mu / r``.
    norm_squared: ClassVar[bool] = False
    #: ``value`` is the indicator of a set (0 or inf) and ``grad`` zero: a constraint enforced by ``prox``
    #: (the projection), never through the loss.
    is_constraint: ClassVar[bool] = False

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

    def block_form(self, shape=None):
        """The penalty as a :class:`BlockForm` for inputs of ``shape``; None where not block-separable.

        With ``shape`` the weights whose default depends on it are filled in (the
        :math:`\\sqrt{|g|}` of ``"rows"``/``"cols"`` groups); without it they may be
        ``None``. The form is not checked against ``shape``: a reader checks what it
        relies on. The base class declares no form; a block-separable penalty returns its own.
        """
        return None

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
