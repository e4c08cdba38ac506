"""Bad input, over the registry and per constructor: a clear ValueError or TypeError naming the argument.

Every refusal must name what was wrong (the message contains the argument's name as a word), and
a refused call must leave the penalty and the input as they were.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from normpen.penalties.anchored import Anchored
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.max_norm import MaxNorm
from penalties.cases import ARRAY_KINDS, CASES, SHAPES, to_numpy

#: Every method with the argument name its input goes by, and a valid extra argument.
METHODS = {
    "value": ("x", ()),
    "grad": ("x", ()),
    "prox": ("x", (1.0,)),
    "norm": ("x", ()),
    "project": ("x", (1.0,)),
    "dual_norm": ("x", ()),
    "project_dual": ("x", (1.0,)),
    "lambda_max": ("grad0", ()),
}
ALL_CASES = pytest.mark.parametrize("case", CASES, ids=str)


def names(argument):
    """A regex matching ``argument`` as a whole word of an error message."""
    return rf"(?<![\w.]){argument}\b"


def setting(case):
    """The penalty of ``case`` for its first test shape, and a valid standard normal input."""
    shape = SHAPES[case.kind][0]
    rng = np.random.default_rng(0)
    return case.make(shape, rng), rng.standard_normal(shape)


def unrefused(pen, x, error):
    """The methods that fail to refuse ``x`` with ``error`` naming their input argument, with why."""
    failures = []
    for method, (argument, extra) in METHODS.items():
        try:
            getattr(pen, method)(x, *extra)
        except error as err:
            if not re.search(names(argument), str(err)):
                failures.append(f"{method}: the message does not name {argument}: {err}")
        else:
            failures.append(f"{method}: accepted")
    return failures


# ---- strengths, steps and radii -------------------------------------------------------------------


@ALL_CASES
@pytest.mark.parametrize("lam", [-1.0, -1e-300, math.nan, math.inf])
def test_negative_or_non_finite_lam_is_refused(case, lam):
    pen, _ = setting(case)
    with pytest.raises(ValueError, match=names("lam")):
        pen.with_lam(lam)


@ALL_CASES
@pytest.mark.parametrize("lam", ["0.1", None, True, 1j])
def test_lam_that_is_not_a_real_number_is_refused(case, lam):
    pen, _ = setting(case)
    with pytest.raises(TypeError, match=names("lam")):
        pen.with_lam(lam)


@ALL_CASES
@pytest.mark.parametrize("step", [-0.5, math.nan, math.inf])
def test_negative_or_non_finite_step_is_refused(case, step):
    pen, x = setting(case)
    with pytest.raises(ValueError, match=names("step")):
        pen.prox(x, step)


@ALL_CASES
@pytest.mark.parametrize("method", ["project", "project_dual"])
@pytest.mark.parametrize("radius", [-1.0, math.nan, math.inf])
def test_negative_or_non_finite_radius_is_refused(case, method, radius):
    pen, x = setting(case)
    with pytest.raises(ValueError, match=names("radius")):
        getattr(pen, method)(x, radius)


@ALL_CASES
def test_zero_radius_is_refused_by_project(case):
    # The dual ball of radius 0 is the point 0 (the Moreau identity at step 0 needs it); the
    # primal ball of radius 0 is refused: its projection is 0 and a positive radius was meant.
    pen, x = setting(case)
    with pytest.raises(ValueError, match=names("radius")):
        pen.project(x, 0.0)


# ---- the input --------------------------------------------------------------------------------------


@ALL_CASES
@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_infinite_input_is_refused_and_left_unchanged(case, kind, bad):
    pen, x = setting(case)
    x.flat[-1] = bad
    x = kind.asarray(x)
    before, state = to_numpy(x), repr(pen)
    assert not unrefused(pen, x, ValueError)
    np.testing.assert_array_equal(to_numpy(x), before)
    assert repr(pen) == state


@ALL_CASES
@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.int64),
        lambda x: x > 0,
        lambda x: x.astype(np.complex128),
        lambda x: torch.from_numpy(x.astype(np.int32)),
        lambda x: torch.from_numpy(x).to(torch.complex64),
    ],
    ids=["numpy-int64", "numpy-bool", "numpy-complex128", "torch-int32", "torch-complex64"],
)
def test_non_real_floating_input_is_refused(case, convert):
    pen, x = setting(case)
    assert not unrefused(pen, convert(x), TypeError)


@ALL_CASES
@pytest.mark.parametrize("convert", [lambda x: x.tolist(), lambda x: float(x.flat[0])], ids=["list", "float"])
def test_python_list_or_number_input_is_refused(case, convert):
    pen, x = setting(case)
    assert not unrefused(pen, convert(x), TypeError)


@pytest.mark.parametrize("case", [c for c in CASES if setting(c)[0].matrix_only], ids=str)
@pytest.mark.parametrize("shape", [(), (6,), (2, 3, 1)], ids=str)
def test_matrix_penalty_refuses_other_dimensions(case, shape):
    pen, _ = setting(case)
    assert not unrefused(pen, np.ones(shape), ValueError)


@ALL_CASES
def test_penalties_are_immutable(case):
    pen, _ = setting(case)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pen.lam = 1.0


# ---- per constructor ----------------------------------------------------------------------------------


@pytest.mark.parametrize("l1_ratio", [-0.1, 1.5, math.nan, math.inf])
def test_l1_ratio_outside_the_unit_interval_is_refused(l1_ratio):
    with pytest.raises(ValueError, match=names("l1_ratio")):
        ElasticNet(0.1, l1_ratio=l1_ratio)


@pytest.mark.parametrize(
    ("groups", "error"),
    [
        ([[0, 1], [1, 2]], ValueError),  # overlapping
        ([[0, 1, 0]], ValueError),  # an index twice in one group
        ([[0, -1]], ValueError),  # negative
        ([[]], ValueError),  # empty group
        ([[0.0, 1.0]], TypeError),  # not integers
        ("diagonal", ValueError),
    ],
    ids=["overlap", "repeat", "negative", "empty", "floats", "unknown-name"],
)
def test_bad_groups_are_refused(groups, error):
    with pytest.raises(error, match=names("groups")):
        GroupLasso(0.1, groups)


def test_groups_indexing_outside_the_input_are_refused():
    pen = GroupLasso(0.1, [np.array([0, 1]), np.array([2, 6])])
    with pytest.raises(ValueError, match=names("groups")):
        pen.value(np.ones(6))


@pytest.mark.parametrize(
    ("make", "x", "argument"),
    [
        (lambda: L1(0.1, weights=np.ones(4)), np.ones(5), "weights"),
        (lambda: GroupLasso(0.1, "rows", weights=np.ones(3)), np.ones((2, 2)), "weights"),
        (lambda: Anchored(0.1, np.zeros(4)), np.ones(5), "anchor"),
    ],
    ids=["L1-weights", "GroupLasso-weights", "Anchored-anchor"],
)
def test_input_of_another_shape_than_the_parameters_is_refused(make, x, argument):
    with pytest.raises(ValueError, match=names(argument)):
        make().prox(x, 1.0)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: L1(0.1, weights=[1.0, -1.0]), "weights"),
        (lambda: L1(0.1, weights=[1.0, math.nan]), "weights"),
        (lambda: GroupLasso(0.1, "rows", weights=[1.0, -2.0]), "weights"),
        (lambda: Anchored(0.1, [0.0, math.nan]), "anchor"),
        (lambda: Anchored(0.1, [0.0, 1.0], fisher=[1.0, -1.0]), "fisher"),
        (lambda: Anchored(0.1, [0.0, 1.0], fisher=[1.0, 1.0, 1.0]), "fisher"),
        (lambda: MaxNorm(0.0), "c"),
        (lambda: MaxNorm(-1.0), "c"),
        (lambda: MaxNorm(math.inf), "c"),
        (lambda: MaxNorm(1.0, axis="diagonal"), "axis"),
    ],
    ids=[
        "L1-negative-weight",
        "L1-nan-weight",
        "GroupLasso-negative-weight",
        "Anchored-nan-anchor",
        "Anchored-negative-fisher",
        "Anchored-fisher-shape",
        "MaxNorm-zero-c",
        "MaxNorm-negative-c",
        "MaxNorm-infinite-c",
        "MaxNorm-axis",
    ],
)
def test_bad_constructor_argument_is_refused(make, argument):
    with pytest.raises(ValueError, match=names(argument)):
        make()
