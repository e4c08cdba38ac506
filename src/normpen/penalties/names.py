r"""One registry of penalty names: the spellings the estimators, ``normpen fit`` and ``normpen sweep`` accept.

Every penalty has one canonical name and the aliases other libraries use for
it (``"lasso"`` for ``"l1"``, ``"enet"`` for ``"elasticnet"``, ...);
:func:`canonical` resolves any of them and :func:`make_penalty` builds the
penalty object with the options that penalty reads (``l1_ratio``, ``groups``,
``weights``).

``normpen fit`` names *models*, a datafit with a penalty (:data:`MODELS`):
``"lasso"`` is least squares with ``"l1"``, ``"logistic-l1"`` the logistic loss
with it. A model is also reached by every spelling of its penalty
(``"elasticnet"`` is ``"enet"``, ``"logistic-lasso"`` is ``"logistic-l1"``);
:func:`model` resolves them.

This module imports only the penalties, so that the command line can build its
choices without importing the solvers.
"""

from __future__ import annotations

from dataclasses import dataclass

from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

__all__ = [
    "PenaltyName",
    "Model",
    "PENALTIES",
    "MODELS",
    "SWEEP_PENALTIES",
    "canonical",
    "spellings",
    "make_penalty",
    "model",
]


@dataclass(frozen=True)
class PenaltyName:
    """A penalty's canonical name, its aliases, its formula (for help texts) and the options it reads."""

    name: str
    aliases: tuple[str, ...]
    formula: str
    options: tuple[str, ...]
    factory: type

    @property
    def spellings(self) -> tuple[str, ...]:
        """The canonical name, then the aliases."""
        return (self.name, *self.aliases)


#: Canonical name -> :class:`PenaltyName`. The formulas use the conventions of DESIGN.md (ρ = ``l1_ratio``,
#: ω_g = √|g| by default).
PENALTIES = {
    entry.name: entry
    for entry in (
        PenaltyName("l1", ("lasso",), "λ‖w‖₁", ("weights",), L1),
        PenaltyName("l2", ("ridge",), "λ/2 ‖w‖²", (), L2),
        PenaltyName(
            "elasticnet",
            ("enet", "elastic_net", "elastic-net"),
            "λ(ρ‖w‖₁ + (1−ρ)/2 ‖w‖²)",
            ("l1_ratio",),
            ElasticNet,
        ),
        PenaltyName(
            "group", ("group_lasso", "group-lasso"), "λ Σ_g ω_g ‖w_g‖₂", ("groups", "weights"), GroupLasso
        ),
        PenaltyName(
            "sparse_group",
            ("sgl", "sparse_group_lasso", "sparse-group-lasso"),
            "λ(ρ‖w‖₁ + (1−ρ) Σ_g ω_g ‖w_g‖₂)",
            ("groups", "l1_ratio", "weights"),
            SparseGroupLasso,
        ),
    )
}

#: The penalties ``normpen sweep`` applies to a network's weight matrices (groups: one per unit, "rows").
SWEEP_PENALTIES = ("l2", "l1", "group")

_BY_SPELLING = {spelling: entry.name for entry in PENALTIES.values() for spelling in entry.spellings}


def spellings(names=None) -> tuple[str, ...]:
    """Every accepted spelling of the penalties ``names`` (canonical names; default: all of them)."""
    names = PENALTIES if names is None else names
    return tuple(spelling for name in names for spelling in PENALTIES[name].spellings)


def canonical(name, *, among=None, argument="penalty") -> str:
    """The canonical name of the penalty spelled ``name``; ``among`` limits the penalties accepted.

    Raises ``ValueError`` naming ``argument`` and listing the accepted names.
    """
    allowed = PENALTIES if among is None else among
    if isinstance(name, str) and _BY_SPELLING.get(name) in allowed:
        return _BY_SPELLING[name]
    listed = ", ".join(f"{entry} ({', '.join(PENALTIES[entry].aliases)})" for entry in allowed)
    raise ValueError(f"{argument} must be one of {listed} (aliases in brackets), got {name!r}")


def make_penalty(name, lam=1.0, **options):
    r"""The penalty spelled ``name`` at strength ``lam``, given the ``options`` it reads.

    ``options`` may hold ``l1_ratio`` (:math:`\rho`), ``groups`` and
    ``weights``; those a penalty does not read are ignored, so that one call
    serves every name. A group penalty needs ``groups`` (index arrays,
    ``"rows"`` or ``"cols"``).
    """
    entry = PENALTIES[canonical(name)]
    chosen = {key: value for key, value in options.items() if key in entry.options}
    if "groups" in entry.options and chosen.get("groups") is None:
        raise ValueError(
            f"penalty {name!r} needs groups: give groups= (index arrays, 'rows' or 'cols'), or a penalty "
            "object such as normpen.GroupLasso(1.0, groups='rows')"
        )
    return entry.factory(lam, **chosen)


@dataclass(frozen=True)
class Model:
    """A datafit with a penalty, as ``normpen fit`` names it, and the cross-validated estimator fitting it.

    ``datafit`` is a name of :class:`normpen.linear.PenalizedLinearModel`'s; ``task``
    "regression" or "classification"; ``estimator`` the name of the ``*CV`` class of
    :mod:`normpen.linear`, with ``fixed`` parameters; ``error`` the held-out error it minimises.
    """

    name: str
    datafit: str
    penalty: str
    task: str
    estimator: str
    fixed: dict
    error: str

    @property
    def spellings(self) -> tuple[str, ...]:
        """The name, then one alias per spelling of the penalty (``logistic-`` prefixed for that datafit)."""
        prefix = "logistic-" if self.datafit == "logistic" else ""
        if self.datafit not in ("quadratic", "logistic"):
            return (self.name,)
        aliases = (prefix + spelling for spelling in PENALTIES[self.penalty].spellings)
        return (self.name, *(alias for alias in aliases if alias != self.name))

    def options(self, **available):
        """The entries of ``available`` that this model's penalty reads (``l1_ratio``, ``groups``, ...)."""
        return {key: value for key, value in available.items() if key in PENALTIES[self.penalty].options}


_SQUARED_ERROR = "mean squared error"
#: ``normpen fit``'s models, in the order of its help.
MODELS = {
    entry.name: entry
    for entry in (
        Model("ridge", "quadratic", "l2", "regression", "RidgeCV", {}, _SQUARED_ERROR),
        Model("lasso", "quadratic", "l1", "regression", "LassoCV", {}, _SQUARED_ERROR),
        Model("enet", "quadratic", "elasticnet", "regression", "ElasticNetCV", {}, _SQUARED_ERROR),
        Model("group", "quadratic", "group", "regression", "GroupLassoCV", {}, _SQUARED_ERROR),
        Model("sgl", "quadratic", "sparse_group", "regression", "SparseGroupLassoCV", {}, _SQUARED_ERROR),
        Model(
            "logistic-l1",
            "logistic",
            "l1",
            "classification",
            "LogisticRegressionCV",
            {"penalty": "l1"},
            "log loss",
        ),
        Model(
            "logistic-l2",
            "logistic",
            "l2",
            "classification",
            "LogisticRegressionCV",
            {"penalty": "l2"},
            "log loss",
        ),
        Model("svm", "squared_hinge", "l2", "classification", "LinearSVCCV", {}, "misclassification rate"),
    )
}

_MODEL_BY_SPELLING = {spelling: entry.name for entry in MODELS.values() for spelling in entry.spellings}


def model(name) -> Model:
    """The :class:`Model` spelled ``name`` (its name or an alias); ``ValueError`` listing them otherwise."""
    if isinstance(name, str) and name in _MODEL_BY_SPELLING:
        return MODELS[_MODEL_BY_SPELLING[name]]
    raise ValueError(
        f"the model must be one of {', '.join(MODELS)} (or an alias of its penalty), got {name!r}"
    )
