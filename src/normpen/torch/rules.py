r"""Which parameter gets which penalty, and how: :class:`Rule` and parameter selection.

A :class:`Rule` pairs a penalty with a *mode* (how it enters training) and a
*selection* (which tensors it acts on). The default selection is decided by
structure, not by a list of layer types: every trainable parameter with two
or more dimensions (the weight of any module that applies a linear map:
``Linear``, convolutions, transformers' ``Conv1D``, fused 3-D expert tensors,
routers, embedding tables, a custom ``nn.Parameter`` matrix), except

- parameters of a normalisation layer (any module whose class name says
  norm: ``LayerNorm``, ``BatchNorm2d``, ``nn.RMSNorm``, ``LlamaRMSNorm``...);
- positional embeddings and class/register tokens (``wpe``,
  ``position_embeddings``, ``pos_embed``, ``cls_token``, the names a model's
  ``no_weight_decay()`` returns), unless ``embeddings="all"``;
- token embedding tables too with ``embeddings="none"``.

Biases, scales and gates (fewer than two dimensions) and frozen tensors
(``requires_grad=False``) are never taken. ``embeddings="all"`` is Hugging
Face Trainer's convention (decay everything but biases and norm layers);
the default ``"tokens"`` is timm's (no decay on positional embeddings and
class tokens). ``candidates="all"`` widens the pool to every trainable
parameter; ``select`` narrows it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from normpen._array import check_nonnegative, check_positive
from normpen.penalties.base import Penalty
from normpen.torch.scaling import SCHEDULES

__all__ = [
    "MODES",
    "CANDIDATES",
    "EMBEDDINGS",
    "Rule",
    "ParameterEntry",
    "parameter_entries",
    "exclusion_reason",
    "layout_of",
    "select_entries",
    "choose_entries",
]

#: How a penalty enters training (see :class:`Rule`).
MODES = ("coupled", "decoupled", "proximal", "constrained", "lagrangian")
#: The pool a rule selects from.
CANDIDATES = ("weights", "all")
#: Which embedding tensors the default selection takes (see :class:`Rule`).
EMBEDDINGS = ("tokens", "all", "none")
#: A name component of a positional embedding or a class/register token (timm's and Hugging Face's names).
_POSITIONAL = re.compile(
    r"wpe|.*pos(ition)?(al)?_?emb(ed|eds|edding|eddings)?|(cls|dist|reg|register|mask)_tokens?"
    r"|relative_position_bias_table"
)
#: Modes that take a tensor penalty's value into the loss (and so accept a
#: model-level callable too).
VALUE_MODES = ("coupled", "lagrangian")


@dataclass(eq=False)
class Rule:
    r"""One penalty, the tensors it acts on and the way it enters training.

    Parameters
    ----------
    penalty : Penalty, mapping or callable
        - a :class:`~normpen.penalties.base.Penalty`, applied to every selected
          tensor (the rule's penalty is the sum over them);
        - a mapping from qualified parameter names to penalties, one per tensor
          (how :func:`~normpen.torch.anchored.l2_sp` and
          :func:`~normpen.torch.anchored.ewc` attach an anchor per tensor);
          its keys are the selection;
        - a callable ``model -> 0-d tensor``, a model-level penalty such as a
          path norm or :class:`~normpen.analysis.SpectralPenalty`;
          differentiable, for ``mode="coupled"`` or ``"lagrangian"``;
        - a model-level constraint for ``mode="constrained"``: an object with
          ``project_(model)`` (in place, no host synchronisation) and
          ``norm(model)`` (the constrained quantity, for reports), carrying
          its own radius, such as :class:`~normpen.analysis.SpectralConstraint`
          (every layer's operator norm :math:`\le r`).

        A model-level penalty or constraint takes no ``select``; one with
        ``state_dict()``/``load_state_dict()`` (persistent power-iteration
        vectors) has that state saved in the regularizer's.
    mode : {"coupled", "decoupled", "proximal", "constrained", "lagrangian"}
        With :math:`\eta` the param group's learning rate in this step
        (see ``schedule``) and :math:`P` the penalty:

        - ``"coupled"``: :math:`P(\theta)` is part of ``Regularizer.penalty()``,
          which the user adds to the loss; autograd and the optimizer do the
          rest (L2 here is classic ``weight_decay``, scheme A of seed 004);
        - ``"decoupled"``: before each optimizer step,
          :math:`\theta \leftarrow \theta - \eta\nabla P(\theta)`, where AdamW
          applies its decay (scheme B): decoupled L2 on ``Adam`` *is* ``AdamW``;
        - ``"proximal"``: after each step,
          :math:`\theta \leftarrow \operatorname{prox}_{\eta P}(\theta)`
          (exact zeros for L1, elastic net and group lasso, exact low rank
          for nuclear);
        - ``"constrained"``: after each step,
          :math:`\theta \leftarrow \Pi_{\{\Omega \le r\}}(\theta)`, with
          :math:`\Omega` = ``penalty.norm`` and :math:`r` = ``radius``, per
          tensor; or a model-level constraint's ``project_(model)``;
        - ``"lagrangian"``: the budget form
          :math:`\min_\theta L(\theta)` s.t. :math:`\sum P(\theta) \le C`:
          ``Regularizer.penalty()`` contains :math:`\mu\,P(\theta)`, and after
          each step the multiplier does a projected dual-ascent step
          :math:`\mu \leftarrow \max(0, \mu + \eta_\mu(P(\theta) - C))`.
    select : str, module type, callable or a sequence of them, optional
        Narrows the candidates: a glob on the qualified parameter name
        (``"encoder.*"``), a module type (``nn.Conv2d``: tensors owned by such
        modules), or a predicate ``(name, param) -> bool``; a sequence is the
        union. ``None`` keeps every candidate.
    candidates : {"weights", "all"}
        ``"weights"`` (default): every trainable tensor with two or more
        dimensions that is not a normalisation layer's (see the module
        docstring and ``embeddings``); ``"all"``: every trainable parameter,
        biases and normalisation layers included.
    embeddings : {"tokens", "all", "none"}
        With ``candidates="weights"``: ``"tokens"`` (default, timm's
        convention) takes token embedding tables but not positional
        embeddings and class tokens; ``"all"`` (Hugging Face Trainer's
        convention) takes both; ``"none"`` takes neither.
    radius : float, optional
        The ball radius :math:`r > 0`; required by ``"constrained"`` with a
        tensor penalty, and only there (a model-level constraint has its own).
    budget : float, optional
        The budget :math:`C \ge 0`; required by ``"lagrangian"`` and only there.
    dual_lr : float, optional
        The dual step :math:`\eta_\mu > 0`; required by ``"lagrangian"``. The
        multiplier moves by ``dual_lr * (P - C)`` per step: scale it so that
        this is a small fraction of the multiplier you expect.
    multiplier_init : float
        The starting multiplier :math:`\mu_0 \ge 0` of ``"lagrangian"``.
    schedule : {"follow", "fixed"}
        The step :math:`\eta` of ``"decoupled"`` and ``"proximal"``: the
        group's current learning rate (``"follow"``, AdamW's convention), or
        its base learning rate, so :math:`\eta\lambda` stays fixed while a
        scheduler moves the learning rate (``"fixed"``).
    label : str, optional
        Name of the rule in reports, errors and state dicts.

    Attributes
    ----------
    multiplier : torch.Tensor or None
        The learned Lagrange multiplier :math:`\mu` (0-d, on the parameters'
        device) of a ``"lagrangian"`` rule, the shadow price of the budget:
        the loss decrease per unit of budget added. ``None`` for other modes
        and before the rule is given to a :class:`~normpen.torch.Regularizer`.
    """

    penalty: Any
    mode: str
    select: Any = None
    candidates: str = "weights"
    embeddings: str = "tokens"
    radius: float | None = None
    budget: float | None = None
    dual_lr: float | None = None
    multiplier_init: float = 0.0
    schedule: str = "follow"
    label: str | None = None
    multiplier: torch.Tensor | None = field(default=None, init=False, repr=False)
    #: A weak reference to the Regularizer the rule is bound to (it holds the multiplier's state).
    _owner: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {self.candidates!r}")
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings must be one of {EMBEDDINGS}, got {self.embeddings!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "fixed" and self.mode not in ("decoupled", "proximal"):
            raise ValueError(
                f"schedule='fixed' sets the step of decoupled and proximal rules; mode={self.mode!r} "
                "takes no learning rate, so leave schedule='follow'"
            )
        self._check_penalty()
        _check_select(self.select)
        self._check_mode_arguments()

    @property
    def is_model_level(self):
        """The penalty is a callable ``model -> scalar`` rather than tensor penalties."""
        return not isinstance(self.penalty, (Penalty, Mapping))

    @property
    def is_model_constraint(self):
        """The penalty is a model-level constraint (``project_(model)``), applied after each step."""
        return self.is_model_level and self.mode == "constrained"

    @property
    def is_per_tensor(self):
        """The penalty is a mapping from parameter names to one penalty each."""
        return isinstance(self.penalty, Mapping)

    def describe(self):
        """Short human-readable name: the label, else mode, penalty and the bound the mode applies
        (``radius=r`` of a constrained rule, ``budget=C`` of a lagrangian one: a constrained
        ``MaxNorm(3.0)`` with ``radius=2.0`` clips rows to 2, whatever its own ``c``)."""
        if self.label is not None:
            return self.label
        if self.is_per_tensor:
            kinds = sorted({type(p).__name__ for p in self.penalty.values()})
            what = f"{'/'.join(kinds)} on {len(self.penalty)} tensors"
        elif self.is_model_level:
            what = getattr(self.penalty, "__name__", type(self.penalty).__name__)
        else:
            what = repr(self.penalty)
        bound = "".join(
            f" {name}={value:g}"
            for name, value in (("radius", self.radius), ("budget", self.budget))
            if value is not None
        )
        return f"{self.mode} {what}{bound}"

    def _check_penalty(self):
        pen = self.penalty
        if isinstance(pen, Penalty):
            _check_constraint_mode(pen, self.mode)
            return
        if isinstance(pen, Mapping):
            bad = [k for k, v in pen.items() if not (isinstance(k, str) and isinstance(v, Penalty))]
            if bad or not pen:
                raise TypeError(
                    "a per-tensor penalty must be a non-empty mapping from parameter names (str) to "
                    f"Penalty objects; bad entries: {bad[:5]}"
                )
            if self.select is not None:
                raise ValueError("a per-tensor penalty mapping is its own selection: leave select=None")
            for value in pen.values():
                _check_constraint_mode(value, self.mode)
            return
        if self.select is not None:
            raise ValueError("a model-level penalty or constraint sees the whole model: leave select=None")
        if self.mode == "constrained":
            missing = [m for m in ("project_", "norm") if not callable(getattr(pen, m, None))]
            if missing:
                raise TypeError(
                    "mode='constrained' takes a normpen Penalty (with radius=r) or a model-level constraint "
                    f"with project_(model) and norm(model), such as normpen.analysis.SpectralConstraint; "
                    f"{type(pen).__name__} has no {' or '.join(missing)}"
                )
            return
        if not callable(pen):
            raise TypeError(
                "penalty must be a normpen Penalty, a mapping name -> Penalty, a callable "
                f"model -> scalar tensor or a model-level constraint; got {type(pen).__name__}"
            )
        if self.mode not in VALUE_MODES:
            raise ValueError(
                f"a model-level penalty (a callable) enters through the loss: use mode='coupled' or "
                f"'lagrangian', not {self.mode!r} (mode='constrained' takes an object with project_(model))"
            )

    def _check_mode_arguments(self):
        constrained = self.mode == "constrained" and not self.is_model_level
        lagrangian = self.mode == "lagrangian"
        if constrained != (self.radius is not None):
            raise ValueError(
                "mode='constrained' with a tensor penalty needs radius=r > 0 (the ball Omega(theta) <= r), "
                "and only it takes one; a model-level constraint carries its own radius"
            )
        if constrained:
            self.radius = check_positive(self.radius, "radius")
        if lagrangian != (self.budget is not None) or lagrangian != (self.dual_lr is not None):
            raise ValueError(
                "mode='lagrangian' needs budget=C >= 0 and dual_lr > 0 (the multiplier's step), and only "
                "it takes them; e.g. Rule(pen, mode='lagrangian', budget=1.0, dual_lr=0.1)"
            )
        if lagrangian:
            self.budget = check_nonnegative(self.budget, "budget")
            self.dual_lr = check_positive(self.dual_lr, "dual_lr")
        self.multiplier_init = check_nonnegative(self.multiplier_init, "multiplier_init")
        if self.multiplier_init and not lagrangian:
            raise ValueError("multiplier_init is the start of a Lagrange multiplier: mode='lagrangian' only")


def _check_constraint_mode(penalty, mode):
    if penalty.is_constraint and mode not in ("proximal", "constrained"):
        raise ValueError(
            f"{type(penalty).__name__} is a constraint (its value is an indicator, its gradient zero): use "
            f"mode='proximal' (its prox, the projection onto its own set) or mode='constrained' (onto "
            f"radius=r), not {mode!r}"
        )


def _check_select(select):
    if select is None:
        return
    items = select if isinstance(select, (list, tuple)) else [select]
    if not items:
        raise ValueError("select is an empty sequence; pass None to keep every candidate")
    for item in items:
        if isinstance(item, str):
            continue
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(f"select by type needs a torch.nn.Module subclass, got {item.__name__}")
            continue
        if not callable(item):
            raise TypeError(
                "select must be a glob (str), a module type, a predicate (name, param) -> bool, or a "
                f"list of those; got {type(item).__name__}"
            )


@dataclass(frozen=True, eq=False)
class ParameterEntry:
    """One distinct parameter of a model: its qualified name and the modules that own it.

    A tied parameter (one tensor registered by several modules) appears once,
    under its first name, with every owner listed. ``no_weight_decay``: the
    model's ``no_weight_decay()`` (timm's convention) names it.
    """

    name: str
    param: nn.Parameter
    owners: tuple[tuple[nn.Module, str], ...]
    no_weight_decay: bool = False

    def describe(self):
        """``name (Owner, shape (a, b))`` for error messages."""
        owner = type(self.owners[0][0]).__name__
        frozen = ", frozen" if not self.param.requires_grad else ""
        return f"{self.name} ({owner}, shape {tuple(self.param.shape)}{frozen})"


def exclusion_reason(entry, embeddings="tokens"):
    """Why the default selection (``candidates="weights"``) leaves ``entry`` out; None when it takes it."""
    if not entry.param.requires_grad:
        return "frozen"
    if entry.param.ndim < 2:
        return "fewer than 2 dimensions (a bias, a scale or a gate)"
    norm = next((type(m).__name__ for m, _ in entry.owners if "norm" in type(m).__name__.lower()), None)
    if norm is not None:
        return f"owned by a normalisation layer ({norm})"
    positional = entry.no_weight_decay or any(_POSITIONAL.fullmatch(c.lower()) for c in entry.name.split("."))
    if positional and embeddings != "all":
        return f"a positional embedding or class token (embeddings={embeddings!r}; 'all' takes it)"
    tables = (nn.Embedding, nn.EmbeddingBag)
    if embeddings == "none" and any(isinstance(m, tables) for m, _ in entry.owners):
        return "a token embedding table (embeddings='none')"
    return None


def layout_of(entry):
    """How ``entry`` stores its matrix, one of :data:`~normpen.torch.kernels.LAYOUTS`.

    ``"transposed"`` for transformers' ``Conv1D`` (``(in, out)``),
    ``"stacked"`` for a 3-D tensor that no convolution or ``Bilinear`` owns
    (fused experts ``(experts, out, in)``), ``"plain"`` otherwise (output
    units on axis 0). Row and column groups follow: the rows of a stacked
    tensor are each expert's rows.
    """
    owners = [m for m, _ in entry.owners]
    if entry.param.ndim == 2 and any(type(m).__name__ == "Conv1D" for m in owners):
        return "transposed"
    framed = (nn.modules.conv._ConvNd, nn.Bilinear)
    if entry.param.ndim == 3 and not any(isinstance(m, framed) for m in owners):
        return "stacked"
    return "plain"


def parameter_entries(model):
    """Every distinct parameter of ``model`` with its qualified name and owners, in registration order.

    Raises ``ValueError`` for a lazy module that has not been materialised
    (its shapes are unknown until the first forward pass).
    """
    no_decay = _no_weight_decay_names(model)
    entries = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for local, param in module.named_parameters(recurse=False):
            if isinstance(param, nn.parameter.UninitializedParameter):
                raise ValueError(
                    f"parameter {module_name}.{local} is not materialised (a lazy module): run one "
                    "forward pass before building the Regularizer"
                )
            name = f"{module_name}.{local}" if module_name else local
            if id(param) in entries:
                first = entries[id(param)]
                owners = first.owners + ((module, local),)
                entries[id(param)] = ParameterEntry(first.name, param, owners, first.no_weight_decay)
            else:
                named = name in no_decay or any(name.startswith(f"{n}.") for n in no_decay)
                entries[id(param)] = ParameterEntry(name, param, ((module, local),), named)
    return list(entries.values())


def _no_weight_decay_names(model):
    """The names a timm-style ``model.no_weight_decay()`` returns (an empty set without one)."""
    method = getattr(model, "no_weight_decay", None)
    return frozenset(method()) if callable(method) else frozenset()


def _matches(select, entry):
    items = select if isinstance(select, (list, tuple)) else [select]
    for item in items:
        if isinstance(item, str):
            hit = fnmatch.fnmatchcase(entry.name, item)
        elif isinstance(item, type):
            hit = any(isinstance(m, item) for m, _ in entry.owners)
        else:
            hit = bool(item(entry.name, entry.param))
        if hit:
            return True
    return False


def select_entries(rule, entries):
    """The entries ``rule`` acts on, in model order (none for a model-level penalty).

    Raises ``ValueError`` when the rule selects nothing, listing what it saw,
    and for per-tensor penalties naming a parameter the model does not have.
    """
    if rule.is_model_level:
        return []
    if rule.is_per_tensor:
        by_name = {e.name: e for e in entries}
        missing = [name for name in rule.penalty if name not in by_name]
        if missing:
            raise ValueError(
                f"rule {rule.describe()!r} names parameters the model does not have: {missing[:10]}; "
                f"it has {_listing(entries)}"
            )
        return [by_name[name] for name in rule.penalty]
    return choose_entries(entries, rule.select, rule.candidates, f"rule {rule.describe()!r}", rule.embeddings)


def choose_entries(entries, select=None, candidates="weights", who="the selection", embeddings="tokens"):
    """The trainable entries among ``candidates`` that ``select`` matches (see :class:`Rule`).

    Raises ``ValueError`` naming ``who`` when nothing is selected, with the
    list of what was seen.
    """
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    _check_select(select)
    if candidates == "all":
        pool = [e for e in entries if e.param.requires_grad]
    else:
        pool = [e for e in entries if exclusion_reason(e, embeddings) is None]
    chosen = pool if select is None else [e for e in pool if _matches(select, e)]
    if not chosen:
        pooled = {id(e) for e in pool}
        left_out = [e for e in entries if id(e) not in pooled and (select is None or _matches(select, e))]
        excluded = f"; matching but not candidates: {_listing(left_out, 10)}" if left_out and pool else ""
        hint = (
            "; biases, scales, normalisation layers (and positional embeddings unless embeddings='all') "
            "are candidates only with candidates='all', frozen ones never"
        )
        seen = pool if pool else entries
        what = "candidates" if pool else "parameters (none is a candidate)"
        raise ValueError(
            f"{who} with select={select!r} selected no parameter; it saw {len(seen)} {what}: "
            f"{_listing(seen)}{excluded}{hint}"
        )
    return chosen


def _listing(entries, limit=40):
    if not entries:
        return "nothing (the model has no parameters)"
    shown = ", ".join(e.describe() for e in entries[:limit])
    more = f", ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return shown + more
