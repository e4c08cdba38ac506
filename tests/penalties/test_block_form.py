"""Every registered penalty's declarations agree with its own methods.

Solvers and training kernels read a penalty's :meth:`~normpen.penalties.base.Penalty.block_form` and
its flags instead of its class, so a declaration that disagrees with the penalty would silently solve
another problem. Each check rebuilds the value and the prox from the form alone (numpy, float64) and
compares them with the penalty's own ``value`` and ``prox``.

Tolerances (tiers of :mod:`cases`, entries of order one, at most 6 of them, magnitudes up to 3):

- value: a sum of at most 6 terms, each a product or a norm of at most 6 entries, on both sides in
  another order (the penalty scales its norms, numpy does not): (n + 2) eps per side, the
  ``SUM_OF_TERMS`` tier, relative to the value;
- prox: a group norm, a subtraction, a division and a product on both sides (the penalty divides by the
  old norm then multiplies by the new, the form's prox multiplies by their ratio): a few eps times the
  largest entry, within the ``CHAIN`` tier relative to it (the subtraction ``n - t`` may cancel, so the
  error is absolute in the entries' scale, not relative to each result).

Measured over 40 penalties per (case, shape) and 8 inputs each: value <= 7.4e-16 relative, prox
<= 2.9e-16 of the largest entry; a form off by 1e-7 in one strength or default weight fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import CASES, CHAIN, SHAPES, SUM_OF_TERMS, to_numpy

from normpen._array import group_soft_threshold_scale, soft_threshold

#: Random inputs per (case, shape): enough to land on both sides of every threshold at these scales.
DRAWS = 8
STEP = 0.7


def _params():
    return [pytest.param(case, shape, id=f"{case}-{shape}") for case in CASES for shape in SHAPES[case.kind]]


def _group_index(form, shape):
    """One integer array per group of ``form`` into ``x.reshape(-1)`` for an ``x`` of ``shape``."""
    if form.axis is None:
        return list(form.groups)
    grid = np.arange(int(np.prod(shape))).reshape(shape)
    return [np.take(grid, i, axis=form.axis).reshape(-1) for i in range(shape[form.axis])]


def _parts(form, shape):
    """The form's arrays for inputs of ``shape``: L1 weights, anchor, Fisher weights (float64 numpy)."""
    l1 = form.l1 * (np.ones(shape) if form.l1_weights is None else form.l1_weights)
    anchor = np.zeros(shape) if form.anchor is None else to_numpy(form.anchor)
    fisher = np.ones(shape) if form.fisher is None else to_numpy(form.fisher)
    return l1, anchor, fisher


def implied_value(form, x):
    r""":math:`P(x)` as the form writes it (:class:`~normpen.penalties.base.BlockForm`)."""
    l1, anchor, fisher = _parts(form, x.shape)
    total = np.sum(l1 * np.abs(x)) + form.ridge / 2 * np.sum(fisher * (x - anchor) ** 2)
    if form.groups is not None:
        flat = x.reshape(-1)
        norms = np.array([np.linalg.norm(flat[g]) for g in _group_index(form, x.shape)])
        if form.group_lam:
            total += form.group_lam * np.sum(form.group_weights * norms)
        if form.max_norm is not None and norms.size and norms.max() > form.max_norm:
            total = np.inf
    return total


def implied_prox(form, x, step):
    r""":math:`\operatorname{prox}_{sP}(x)` from the form alone.

    An anchored quadratic alone: :math:`a + (x - a)/(1 + s\mu F)`. A max-norm constraint alone: each
    group projected onto its ball. Otherwise (L1, groups, ridge at 0 with :math:`F = 1`): soft
    thresholding, then group soft thresholding, then the ridge's shrinkage (exact for this sum of
    terms; see :mod:`normpen.linear.blocks`).
    """
    l1, anchor, fisher = _parts(form, x.shape)
    if form.anchor is not None or form.fisher is not None:
        assert form.l1 == 0 and form.groups is None, "no prox formula for this mix: extend the test"
        return anchor + (x - anchor) / (1 + step * form.ridge * fisher)
    z = soft_threshold(x, step * l1).reshape(-1)
    if form.groups is not None:
        for i, g in enumerate(_group_index(form, x.shape)):
            norm = np.linalg.norm(z[g])
            if form.max_norm is not None:
                z[g] = z[g] * min(1.0, form.max_norm / norm) if norm > 0 else z[g]
            else:
                z[g] = z[g] * group_soft_threshold_scale(norm, step * form.group_lam * form.group_weights[i])
    return z.reshape(x.shape) / (1 + step * form.ridge)


def _draws(shape, seed):
    """Inputs of ``shape`` at three scales (inside and outside every threshold), some entries zero."""
    rng = np.random.default_rng(seed)
    for i in range(DRAWS):
        x = rng.standard_normal(shape) * (0.1, 1.0, 3.0)[i % 3]
        yield np.where(rng.random(shape) < 0.2, 0.0, x)


@pytest.mark.parametrize(("case", "shape"), _params())
def test_the_form_implies_the_penalty_value_and_prox(case, shape):
    pen = case.make(shape, np.random.default_rng(0))
    form = pen.block_form(shape)
    if form is None:
        pytest.skip(f"{case} is not block-separable: solvers use its prox kernels")
    for x in _draws(shape, 1):
        value = float(pen.value(x))
        expected = implied_value(form, x)
        assert value == pytest.approx(expected, rel=SUM_OF_TERMS, abs=SUM_OF_TERMS), case
        scale = max(1.0, float(np.max(np.abs(x))))
        np.testing.assert_allclose(
            pen.prox(x, STEP), implied_prox(form, x, STEP), rtol=0, atol=CHAIN * scale, err_msg=str(case)
        )


@pytest.mark.parametrize(("case", "shape"), _params())
def test_the_form_without_a_shape_is_the_same_form(case, shape):
    """Kernels read ``block_form()`` to pick themselves: it differs only by weights that need the shape."""
    pen = case.make(shape, np.random.default_rng(0))
    full, bare = pen.block_form(shape), pen.block_form()
    if full is None:
        assert bare is None
        return
    for field in ("l1", "l1_weights", "ridge", "anchor", "fisher", "groups", "group_lam", "max_norm"):
        assert getattr(bare, field) is getattr(full, field) or getattr(bare, field) == getattr(full, field)
    if bare.group_weights is None:
        assert full.group_weights is None or full.axis is not None  # only "rows"/"cols" defaults need it
    else:
        np.testing.assert_array_equal(bare.group_weights, full.group_weights)


@pytest.mark.parametrize(("case", "shape"), _params())
def test_the_flags_hold(case, shape):
    """``norm_squared``: value = lam/2 norm^2 with a homogeneous norm; ``is_constraint``: value 0 or inf,
    gradient 0; ``is_norm`` and ``norm_squared`` exclude each other. Tolerances: the value tier above."""
    pen = case.make(shape, np.random.default_rng(0))
    assert not (pen.is_norm and pen.norm_squared)
    for x in _draws(shape, 2):
        if pen.norm_squared:
            norm = float(pen.norm(x))
            assert float(pen.value(x)) == pytest.approx(pen.lam / 2 * norm**2, rel=SUM_OF_TERMS)
            assert float(pen.norm(2 * x)) == pytest.approx(2 * norm, rel=SUM_OF_TERMS)
        if pen.is_constraint:
            assert float(pen.value(x)) in (0.0, np.inf)
            assert not np.any(pen.grad(x))
