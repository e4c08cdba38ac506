"""The penalties :meth:`BlockPenalty.scaled` and :meth:`BlockPenalty.restrict` build without the
constructor's checks carry the same derived fields as the checked constructor builds from their
weights (exact: the same integer and boolean computations, and weights copied or multiplied once).
"""

import numpy as np
import pytest

from normpen.linear.blocks import BlockPenalty, as_block_penalty
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

GROUPS = [np.array([0, 1, 2]), np.array([5, 3]), np.array([6])]  # feature 4 is in no group

PENALTIES = {
    "l1": L1(0.7),
    "weighted_l1": L1(0.7, weights=np.array([0.0, 1, 2, 0.5, 1, 3, 1])),
    "elastic_net": ElasticNet(0.7, 0.3),
    "group_lasso": GroupLasso(0.7, GROUPS),
    "weighted_group_lasso": GroupLasso(0.7, GROUPS, weights=[1.0, 0.0, 2.0]),
    "sparse_group_lasso": SparseGroupLasso(0.7, GROUPS, 0.4),
}


def _checked(penalty):
    """The same penalty through the checked constructor."""
    return BlockPenalty(
        penalty.l1,
        penalty.row_order,
        penalty.block_starts,
        penalty.group_weights,
        penalty.ridge,
        penalty.positive,
    )


def _assert_same(built, checked):
    for name in ("l1", "row_order", "block_starts", "group_weights", "block_of_row", "block_sizes"):
        np.testing.assert_array_equal(getattr(built, name), getattr(checked, name))
    np.testing.assert_array_equal(built.penalized, checked.penalized)
    np.testing.assert_array_equal(built.free_rows, checked.free_rows)
    assert (built.ridge, built.positive, built.singletons) == (
        checked.ridge,
        checked.positive,
        checked.singletons,
    )
    assert built.structure_key == checked.structure_key
    W = np.random.default_rng(0).standard_normal(built.shape)
    assert built.value(W) == checked.value(W)


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("positive", [False, True])
def test_scaled_and_restricted_match_the_checked_constructor(name, positive):
    block = as_block_penalty(PENALTIES[name], (7,), positive)
    for factor in (0.0, 0.3, 2.0):
        _assert_same(block.scaled(factor), _checked(block.scaled(factor)))
    for blocks in (np.arange(block.n_blocks), np.array([0, 2]), np.array([block.n_blocks - 1, 0])):
        local, rows = block.restrict(blocks)
        _assert_same(local, _checked(local))
        np.testing.assert_array_equal(local.l1, block.l1[rows])
