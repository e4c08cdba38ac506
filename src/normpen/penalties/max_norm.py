r"""The max-norm constraint :math:`\max_g \|w_g\|_2 \le c` on the rows or the columns of a matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from normpen._array import check_positive, max_or_zero, namespace, project_l2_ball
from normpen.penalties.base import BlockForm, Penalty
from normpen.penalties.group_lasso import _AxisGroups
from normpen.penalties.l1 import project_l1_ball

__all__ = ["MaxNorm"]


@dataclass(frozen=True, eq=False)
class MaxNorm(Penalty):
    r"""Max-norm constraint: every row (or column) of ``W`` inside the L2 ball of radius ``c``.

    The constraint of Srivastava et al. (2014) used with dropout: the set
    :math:`\{W : \|W\|_{2,\infty} \le c\}` with
    :math:`\|W\|_{2,\infty} = \max_g \|w_g\|_2` over the rows
    (``axis="rows"``: for a Linear weight ``(out, in)`` the incoming weights
    of one unit) or the columns (``axis="cols"``). It is a constraint, not a
    penalty: its "value" is the indicator of the set. ``W`` must be a matrix;
    reshape a conv kernel with ``w.reshape(w.shape[0], -1)`` so that each row
    is one filter.

    Parameters
    ----------
    c : float
        Radius :math:`c > 0` of every row's (column's) ball.
    axis : {"rows", "cols"}
        Which slices are bounded.
    lam : float, keyword-only
        Unused by the constraint (value, prox and projection do not depend on
        it; scaling an indicator by :math:`\lambda > 0` leaves it unchanged).
        Kept so that the Penalty API (``with_lam``) works as for every penalty.

    Notes
    -----
    - value: :math:`\iota(W) = 0` if :math:`\|W\|_{2,\infty} \le c` and
      :math:`+\infty` otherwise. A slice norm may exceed :math:`c` by the
      rounding of its computation, :math:`2(\log_2 d + 4)\,\varepsilon`
      relative (a pairwise sum of :math:`d` squares, the scaling and the
      square root; :math:`d` the slice length), so projected matrices count
      as feasible.
    - grad: zeros. The indicator has no gradient to follow; a constraint is
      enforced by ``prox`` (the projection) after each step, never through
      the loss.
    - prox: the projection onto the set, for every ``step`` (the prox of an
      indicator is the projection): slices with :math:`\|w_g\| > c` are
      rescaled to norm :math:`c`, the others are unchanged.
    - norm: :math:`\|W\|_{2,\infty}`; ``project(W, r)`` rescales the slices
      above :math:`r` onto :math:`r`.
    - dual norm: :math:`\|W\|_{2,1} = \sum_g \|w_g\|_2`; ``project_dual``
      projects onto its ball (the group norms onto the L1 ball).
    - lambda_max: a constraint has no strength, so no :math:`\lambda` makes
      :math:`W = 0` optimal unless :math:`\nabla F(0) = 0`: ``inf``, else 0
      (the base rule). The strength at which the *penalty*
      :math:`\lambda\|W\|_{2,\infty}` zeroes the solution is ``dual_norm(grad0)``.
    """

    sign_invariant: ClassVar[bool] = True

    c: float
    axis: str = "rows"
    lam: float = field(default=0.0, kw_only=True)
    _partition: Any = field(init=False, repr=False)

    matrix_only: ClassVar[bool] = True
    is_norm: ClassVar[bool] = False
    is_constraint: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "c", check_positive(self.c, "c"))
        if self.axis not in ("rows", "cols"):
            raise ValueError(f"axis must be 'rows' or 'cols', got {self.axis!r}")
        object.__setattr__(self, "_partition", _AxisGroups(("rows", "cols").index(self.axis)))

    def block_form(self, shape=None):
        """The :class:`BlockForm`: the slices along ``axis`` constrained to radius :math:`c`."""
        return BlockForm(groups=self.axis, max_norm=self.c)

    def _norm(self, x):
        return max_or_zero(self._partition.norms(x))

    def _value(self, x):
        xp = namespace(x)
        length = math.prod(x.shape) // max(x.shape[self._partition.axis], 1)
        slack = 2 * (math.log2(max(length, 1)) + 4) * xp.finfo(x.dtype).eps
        norm = self._norm(x)
        return xp.where(norm <= self.c * (1 + slack), 0 * norm, xp.inf)  # 0 * norm: a zero autograd path

    def _grad(self, x):
        return namespace(x).zeros_like(x)

    def _prox(self, x, step):
        return self._project(x, self.c)

    def _project(self, x, radius):
        return project_l2_ball(x, radius, axis=1 - self._partition.axis)

    def _dual_norm(self, x):
        return namespace(x).sum(self._partition.norms(x))

    def _project_dual(self, x, radius):
        if math.prod(x.shape) == 0:
            return x
        xp = namespace(x)
        norms = self._partition.norms(x)
        return self._partition.rescale(x, norms, project_l1_ball(norms, xp.ones_like(norms), radius))
