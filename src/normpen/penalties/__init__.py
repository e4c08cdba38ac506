"""Norm penalties: one file per penalty, each fulfilling :class:`normpen.penalties.base.Penalty`."""

from normpen.penalties.anchored import Anchored
from normpen.penalties.base import Penalty
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso
from normpen.penalties.spectral import Spectral

__all__ = [
    "Penalty",
    "L2",
    "L1",
    "ElasticNet",
    "GroupLasso",
    "SparseGroupLasso",
    "Spectral",
    "Nuclear",
    "Anchored",
    "MaxNorm",
]
