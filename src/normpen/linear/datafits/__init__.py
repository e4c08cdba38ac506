"""Datafits of penalized linear models; :mod:`normpen.linear.datafits.base` states the contract."""

from normpen.linear.datafits.base import Datafit
from normpen.linear.datafits.hinge import Hinge
from normpen.linear.datafits.logistic import Logistic
from normpen.linear.datafits.multinomial import Multinomial
from normpen.linear.datafits.multitask_quadratic import MultitaskQuadratic
from normpen.linear.datafits.quadratic import Quadratic
from normpen.linear.datafits.squared_hinge import SquaredHinge

__all__ = ["Datafit", "Hinge", "Logistic", "Multinomial", "MultitaskQuadratic", "Quadratic", "SquaredHinge"]
