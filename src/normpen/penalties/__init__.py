"""Norm penalties: one file per penalty, each fulfilling :class:`normpen.penalties.base.Penalty`."""

from normpen.penalties.base import Penalty
from normpen.penalties.l1 import L1

__all__ = ["Penalty", "L1"]
