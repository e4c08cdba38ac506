r"""The :class:`Regularizer`: rules bound to a model, riding on any ``torch.optim`` optimizer.

The user keeps their optimizer object, its param groups, schedulers and
``state_dict``: :meth:`Regularizer.wrap` only registers the optimizer's own
step hooks. Per optimizer step:

.. code-block:: text

    pre-step hook   checks (raise before anything is modified), then
                    decoupled:    theta <- theta - lr * grad P(theta)   (AdamW's place:
                                  after the closure when step(closure) is called)
    optimizer.step  the user's update (coupled and lagrangian terms arrive through the loss)
    post-step hook  proximal:     theta <- prox_{lr P}(theta)
                    constrained:  theta <- project(theta, radius)
                                  then model-level constraints: constraint.project_(model)
                    lagrangian:   mu <- max(0, mu + dual_lr * (P(theta) - budget))

``lr`` is the param group's learning rate at that step (or its base learning
rate for ``schedule="fixed"``). All per-step work is foreach (multi-tensor)
operations with no host synchronisation, on buckets and buffers built when
the optimizer is wrapped (rebuilt when its param groups change): no Python
work per tensor per step beyond the kernels' own calls.

A step that raises changes nothing: every hyperparameter the update reads is
checked before the first tensor is modified, a closure runs before the
decoupled decay, and the decay keeps the values it overwrites (one buffer per
decayed tensor, one foreach copy per bucket and step): when the closure or the
optimizer's own update raises, ``optimizer.step`` (an instance-level wrapper
that :meth:`Regularizer.wrap` installs) copies them back and puts back the
step's records (the constraint values and the coupled term seen by the
closure) before it re-raises.

The regularizer's state rides in ``optimizer.state_dict()``: a parameter's
tensors (residual, anchors, Fisher weights) in that parameter's state, beside
Adam's ``exp_avg``, under keys that begin with :data:`ENTRY_PREFIX`; its own
state (multipliers, model-level states, a fingerprint of the rules) the same
way in the state of the optimizer's first regularized parameter; the tensors
of another optimizer's parameters and the rules under :data:`STATE_KEY` in the
first param group. So any framework that checkpoints the optimizer checkpoints
the regularizer too, and ``torch.distributed.checkpoint`` names, shards and
reshards those tensors as it does the optimizer's own. Its flattened optimizer
state dict loads only the keys the live optimizer's state has, so once a
parameter's state is not empty (after the optimizer's first step for it, a
load, or DCP's initialisation) the live state holds the same entries:
references to the regularizer's own tensors, which the optimizer's step does
not read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import math
import numbers
import operator
import sys
import types
import warnings
import weakref

import torch

from normpen.penalties.base import Penalty
from normpen.torch._norm_kernels import record_dtype, restore_, scale_recording_
from normpen.torch.distributed import (
    all_reduce_mean_,
    check_row_sharded,
    is_sharded,
    unwrap_model,
    whole_tensor,
)
from normpen.torch.kernels import (
    Bucket,
    Slot,
    as_penalty_input,
    decays_like_weight_decay,
    is_anchored,
    kernel_for,
    local_piece,
    work_dtype,
)
from normpen.torch.report import Report, RuleReport, Summary, tensor_report
from normpen.torch.rules import (
    VALUE_MODES,
    Rule,
    exclusion_reason,
    layout_of,
    parameter_entries,
    select_entries,
)
from normpen.torch.scaling import base_lr, rule_lr

__all__ = ["ENTRY_PREFIX", "Regularizer", "STATE_KEY"]

#: Modes whose work is done by the optimizer hooks, in the order the post hook runs them.
STEP_MODES = ("decoupled", "proximal", "constrained")
#: The kernel operation of each step mode.
METHODS = {"decoupled": "decay", "proximal": "prox", "constrained": "project"}
_FORMAT = "normpen.torch.Regularizer/1"
#: The key of the regularizer's state that its entries in the parameters' states do not hold (the rules,
#: the tensors of another optimizer's parameters) inside the first param group of a wrapped optimizer's
#: ``state_dict()``.
STATE_KEY = "normpen_regularizer"
#: What the keys of the regularizer's entries in a parameter's optimizer state begin with:
#: ``normpen.residual``, ``normpen.anchor.<rule>`` and ``normpen.fisher.<rule>``, and in the carrier
#: parameter's ``normpen.rules``, ``normpen.multiplier.<rule>`` and ``normpen.model.<rule>.<path>``.
ENTRY_PREFIX = "normpen."
#: The entry name of a parameter's residual (``residuals`` of :meth:`Regularizer.state_dict`,
#: ``{name: tensor}``) and of its tensors under a rule (``{rule: {name: tensor}}``).
_RESIDUAL = "residual"
_PER_RULE = {"anchors": "anchor", "fisher": "fisher"}
_PER_PARAMETER = ("residuals", *_PER_RULE)
#: The entry names of the regularizer's own state in the carrier parameter's optimizer state: a
#: fingerprint of the rules (``normpen.rules``), rule ``i``'s multiplier (``normpen.multiplier.i``) and
#: each tensor of rule ``i``'s model-level state (``normpen.model.i.<path>``).
_RULES, _MULTIPLIER, _MODEL = "rules", "multiplier", "model"


@dataclasses.dataclass(eq=False)
class _Action:
    r"""One bucket's work in a step: the rule (mode, step rule) and the bucket.

    A decoupled action with ``atomic_decay`` also keeps what undoes its
    decay (:meth:`decay_undoably_`, :meth:`undo_`), exactly. A decay that
    only scales (a ridge alone) contiguous CPU float32 tensors by a Python
    number, with :math:`1 - c \le 9.8 \times 10^{-4}`, is made by a compiled
    kernel that writes, in the same pass, each entry's move in float32 steps
    (one byte an entry for :math:`1 - c \le 3.8 \times 10^{-6}`, else two:
    :func:`~normpen.torch._norm_kernels.scale_recording_`). Any other decay
    copies what it writes (the bucket's tensors, then its residuals) into one
    buffer per tensor first. On ``benchmarks/torch_step.py``'s MLP weights,
    after an ``Adam(foreach=True)`` step (30 interleaved rounds, 2 threads,
    CPU time), AdamW's decay plus Adam cost 1.000, the copy and decay 1.129,
    the two-byte record 1.036 and the one-byte record 1.015.
    """

    rule: Rule
    bucket: Bucket
    group_index: int
    written: list = dataclasses.field(default_factory=list)
    saved: list = dataclasses.field(default_factory=list)
    #: Per tensor, the record buffers of each record type, made on first use.
    record_buffers: dict = dataclasses.field(default_factory=dict)
    #: (tensor, record) pairs of the last recorded decay; None where the last decay copied.
    records: list | None = None

    def argument(self, base_lrs):
        """The rule's radius (constrained), else its step: the group's lr now, or its base lr (``fixed``)."""
        if self.rule.mode == "constrained":
            return self.rule.radius
        return rule_lr(self.bucket.group, self.rule.schedule, base_lrs[self.group_index])

    def decay_undoably_(self, step):
        """The decay, keeping what undoes it: a record written by the decay's own pass where it can be
        (see the class), else a copy of what it writes first."""
        factor = self.bucket.recordable_factor(step)
        record = None if factor is None else record_dtype(factor)
        if record is None:
            self.records = None
            self.save()
            self.bucket.apply_(step)
            return
        live = self.bucket.live()
        self.records = [] if live is None else [(t, self._record_buffer(t, record)) for t in live[0]]
        with torch.no_grad():
            for tensor, buffer in self.records:
                scale_recording_(tensor, factor, buffer)

    def _record_buffer(self, tensor, dtype):
        """``tensor``'s record buffer of ``dtype``: made on first use, reused at every step."""
        key = (id(tensor), dtype)
        if key not in self.record_buffers:
            self.record_buffers[key] = (tensor, torch.empty(tensor.shape, dtype=dtype))
        return self.record_buffers[key][1]

    def save(self):
        """Copy the tensors the decay writes into :attr:`saved` (one foreach copy; the buffers are
        allocated on the first copy, reused at every step)."""
        if not self.saved:
            self.written = self.bucket.tensors + (self.bucket.residuals or [])
            self.saved = [torch.empty_like(t) for t in self.written]
        with torch.no_grad():
            torch._foreach_copy_(self.saved, self.written)

    def undo_(self):
        """The tensors back to their values before the last decay, bit for bit (a signalling NaN comes
        back quiet from a record)."""
        with torch.no_grad():
            if self.records is None:
                torch._foreach_copy_(self.written, self.saved)
                return
            for tensor, buffer in self.records:
                restore_(tensor, buffer)


@dataclasses.dataclass(eq=False)
class _Wrapped:
    """What the regularizer keeps per wrapped optimizer."""

    optimizer: torch.optim.Optimizer
    handles: list
    base_lrs: list
    layout: tuple = ()
    penalty_seen: bool = False
    pending_state: dict | None = None
    initialising: bool = False
    live: dict = dataclasses.field(default_factory=dict)
    missing: list = dataclasses.field(default_factory=list)
    pre: list = dataclasses.field(default_factory=list)
    post: list = dataclasses.field(default_factory=list)
    model_constraints: list = dataclasses.field(default_factory=list)
    dual_rules: list = dataclasses.field(default_factory=list)
    decayed: list = dataclasses.field(default_factory=list)
    handed: list = dataclasses.field(default_factory=list)
    handed_back: list = dataclasses.field(default_factory=list)
    checked: dict = dataclasses.field(default_factory=dict)
    step: types.MethodType | None = None


class Regularizer:
    r"""Rules bound to a model: the coupled loss term, the optimizer hooks, reports and state.

    Parameters
    ----------
    model : torch.nn.Module
        The model (a DDP or DataParallel wrapper is unwrapped: names and
        globs are those of ``model.module``).
    rules : Rule or sequence of Rule
        See :class:`~normpen.torch.Rule`. A parameter may be under several
        rules of different modes (say a decoupled L2 and a proximal L1), never
        under two rules of the same mode.
    atomic_decay : bool, default True
        Whether the decoupled decay keeps the values it overwrites so that an
        optimizer update that raises after it (Adam refusing a sparse
        gradient, a line search's closure failing at its second evaluation)
        leaves the weights bit-identical. The price is memory for one copy of
        the decayed tensors and one foreach copy per step (about 7 to 15% of
        an optimizer-bound CPU step, docs/torch.md). ``False`` skips the
        copy, decoupled L2 then costs what AdamW's own decay costs, and such a
        failure leaves the weights decayed once; a closure that raises at its
        first evaluation and a bad hyperparameter change nothing either way
        (both are met before the decay). A param group handed to the
        optimizer's own decoupled decay (a group wholly under one decoupled
        L2 rule on ``Adam``, ``AdamW``, ``NAdam`` or ``RAdam``; see
        :meth:`param_groups`) needs no copy either way: that decay runs after
        the optimizer's checks.

    Examples
    --------
    >>> reg = Regularizer(model, [Rule(L2(1e-2), mode="decoupled"),
    ...                           Rule(GroupLasso(1e-4, "cols"), mode="proximal", select="encoder.*")])
    >>> opt = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-3))
    >>> loss = task_loss + reg.penalty()   # the coupled and lagrangian terms
    >>> loss.backward(); opt.step()        # decoupled before, proximal after the update

    Notes
    -----
    Under DistributedDataParallel build the regularizer on every rank; the
    coupled term's gradient is averaged by DDP like the loss's, so it counts
    once, and the constraint value of a lagrangian rule is averaged across
    ranks before each dual step, so the multipliers stay identical.
    """

    def __init__(self, model, rules, *, atomic_decay=True):
        if not isinstance(atomic_decay, bool):
            raise TypeError(f"atomic_decay must be True or False, got {atomic_decay!r}")
        self.atomic_decay = atomic_decay
        self.model = unwrap_model(model)
        rules = [rules] if isinstance(rules, Rule) else list(rules)
        if not rules:
            raise ValueError("rules is empty; give at least one Rule")
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{i}] must be a normpen.torch.Rule, got {type(rule).__name__}")
        if len({id(r) for r in rules}) != len(rules):
            raise ValueError("the same Rule object appears twice in rules; create one Rule per use")
        self.rules = tuple(rules)
        self._slots = self._bind_slots()
        self._warn_left_out()
        self._check_model_constraints()
        self._claim_rules()
        self._residuals = self._make_residuals()
        self._wrapped = []
        self._constraint_values = {}
        self._coverage_checked = False

    # ---- binding ------------------------------------------------------------------

    def _bind_slots(self):
        """One list of :class:`Slot` per rule; checks selections, claims and penalty shapes."""
        entries = parameter_entries(self.model)
        claims = {}
        all_slots = []
        sharded = [e.name for e in entries if is_sharded(e.param)]
        for rule in self.rules:
            if rule.is_model_level and sharded:
                raise TypeError(
                    f"rule {rule.describe()!r}: a model-level penalty or constraint on FSDP2 (fully_shard) "
                    f"parameters ({sharded[:3]}...) is not supported; build it without fully_shard, or use "
                    "tensor penalties"
                )
            slots, kernels = [], {}
            for entry in select_entries(rule, entries):
                claimed = claims.setdefault((rule.mode, id(entry.param)), rule)
                if claimed is not rule:
                    raise ValueError(
                        f"parameter {entry.name!r} is claimed by two {rule.mode} rules: "
                        f"{claimed.describe()!r} and {rule.describe()!r}; narrow one rule's select (or "
                        "merge the penalties into one rule)"
                    )
                penalty = rule.penalty[entry.name] if rule.is_per_tensor else rule.penalty
                _check_fits(penalty, entry, rule)
                cls = kernel_for(penalty)
                if is_sharded(entry.param):
                    _check_row_shardable(cls, penalty, entry, rule)
                kernel = kernels.setdefault((cls, cls.bucket_key(penalty)), cls(penalty))
                slots.append(Slot(entry.name, entry.param, penalty, kernel, layout_of(entry)))
            all_slots.append(slots)
        return all_slots

    def _left_out(self, rule):
        """``(entry, reason)`` of the model's >=2-D parameters that a default-pool rule does not take."""
        if rule.is_model_level or rule.is_per_tensor or rule.candidates != "weights":
            return []
        reasons = ((e, exclusion_reason(e, rule.embeddings)) for e in parameter_entries(self.model))
        return [(e, why) for e, why in reasons if why is not None and e.param.ndim >= 2]

    def _warn_left_out(self):
        """Warn, naming them, when a default selection leaves out >10% of the trainable >=2-D weights."""
        trainable = sum(
            e.param.numel()
            for e in parameter_entries(self.model)
            if e.param.ndim >= 2 and e.param.requires_grad
        )
        for rule in self.rules:
            if rule.select is not None:
                continue
            left = [(e, why) for e, why in self._left_out(rule) if e.param.requires_grad]
            count = sum(e.param.numel() for e, _ in left)
            if trainable and count > 0.1 * trainable:
                named = "; ".join(f"{e.name} {tuple(e.param.shape)}: {why}" for e, why in left[:10])
                warnings.warn(
                    f"rule {rule.describe()!r} leaves out {count} of the model's {trainable} trainable "
                    f"weights with 2 or more dimensions ({100 * count / trainable:.0f}%): {named}; "
                    "if they should be regularized, say so with embeddings='all' or candidates='all' and "
                    "select (reg.summary() lists every choice)",
                    UserWarning,
                    stacklevel=3,
                )

    def summary(self):
        """What each rule took and who applies it, and for the default pool the >=2-D parameters it left
        out and why.

        Returns a :class:`~normpen.torch.report.Summary`: a rich table when
        printed, plain data from ``to_dict()``. A tensor of a decoupled L2 rule
        whose param group is handed to a wrapped optimizer's own decoupled decay
        (:meth:`param_groups`) is applied by that optimizer's ``weight_decay``;
        every other one by normpen. Nothing is read from the tensors' values
        (shapes only).
        """
        handed = {
            id(p): f"{type(w.optimizer).__name__}'s weight_decay"
            for w in self._wrapped
            for group, _ in w.handed
            for p in group["params"]
        }
        rows = []
        for rule, slots in zip(self.rules, self._slots, strict=True):
            taken = [
                (
                    s.name,
                    tuple(s.param.shape),
                    handed.get(id(s.param), "normpen") if rule.mode == "decoupled" else "normpen",
                )
                for s in slots
            ]
            left = [(e.name, tuple(e.param.shape), why) for e, why in self._left_out(rule)]
            rows.append((rule.describe(), rule.mode, taken, left))
        return Summary(rows)

    def _check_model_constraints(self):
        """Each model-level constraint accepts this model (its ``norm``), so no step fails half-way."""
        for rule in self.rules:
            if rule.is_model_constraint:
                try:
                    rule.penalty.norm(self.model)
                except (TypeError, ValueError) as err:
                    raise type(err)(f"rule {rule.describe()!r}: {err}") from err

    def _claim_rules(self):
        """Tie the rules to this regularizer and give lagrangian rules their multiplier."""
        for rule in self.rules:
            owner = getattr(rule, "_owner", None)
            if owner is not None and owner() is not None and owner() is not self:
                raise ValueError(
                    f"rule {rule.describe()!r} already belongs to another Regularizer (it holds that one's "
                    "multiplier); create a new Rule"
                )
            rule._owner = weakref.ref(self)
            if rule.mode == "lagrangian":
                rule.multiplier = torch.tensor(rule.multiplier_init, dtype=torch.float64)
        self._place_multipliers()

    def _place_multipliers(self):
        """Each multiplier on its rule's first tensor's device, in that tensor's working dtype."""
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.multiplier is not None:
                like = slots[0].param if slots else next(self.model.parameters(), None)
                device = like.device if like is not None else torch.device("cpu")
                dtype = work_dtype(like.dtype) if like is not None else torch.get_default_dtype()
                rule.multiplier = rule.multiplier.detach().to(device=device, dtype=dtype)

    def _rebind(self):
        """Look every rule's tensors up again by name in the model as it is now.

        Follows casts (``.to(dtype)``, ``.half()``), moves and replaced
        parameter objects. Each rule must still select the same names: if not,
        a ``ValueError`` names the rule and both lists. The float32 residuals
        follow the parameters' dtypes (kept where a parameter stays low
        precision with the same shape), the multipliers their device.
        """
        slots = self._bind_slots()
        for rule, old, new in zip(self.rules, self._slots, slots, strict=True):
            before, now = [s.name for s in old], [s.name for s in new]
            if before != now:
                raise ValueError(
                    f"the model changed after the Regularizer was built: rule {rule.describe()!r} selected "
                    f"{before[:6]} then and {now[:6]} now; build the Regularizer on the model you train"
                )
        self._slots = slots
        residuals = self._make_residuals()
        for name, residual in residuals.items():
            kept = self._residuals.get(name)
            if kept is not None and kept.shape == residual.shape:
                residual.copy_(kept)
        self._residuals = residuals
        self._place_multipliers()
        for wrapped in self._wrapped:
            self._build_actions(wrapped)

    def _make_residuals(self):
        """float32 residuals of the float16/bfloat16 parameters that the step hooks update."""
        residuals = {}
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.mode in STEP_MODES:
                for s in slots:
                    if work_dtype(s.param.dtype) != s.param.dtype and s.name not in residuals:
                        residuals[s.name] = torch.zeros_like(s.local, dtype=torch.float32)
        return residuals

    def _follow_replaced_parameters(self):
        """Rebind when the model's parameters were replaced since binding (``fully_shard``, a swapped
        module): one parameter is looked up, so no per-tensor work per call."""
        probe = next((s for slots in self._slots for s in slots), None)
        if probe is None:
            return
        try:
            current = self.model.get_parameter(probe.name)
        except AttributeError:
            current = None
        if current is not probe.param:
            self._rebind()

    def _slots_by_name(self):
        """``{name: slot}`` of every parameter under some rule (one slot of several: the same tensor)."""
        return {s.name: s for slots in self._slots for s in slots}

    def names(self, rule):
        """The qualified names of the parameters ``rule`` acts on, in model order."""
        return [s.name for s in self._slots[self._rule_index(rule)]]

    def param_groups(self):
        """The model's parameters as optimizer param groups: each decoupled L2 rule's tensors, then the rest.

        One group per decoupled rule whose decay is ``torch.optim``'s own
        decoupled decay (an L2 rule), holding its tensors, then one group of
        every other parameter, each in model order (the decay / no-decay
        groups transformers' Trainer and timm build). On an optimizer with a
        decoupled decay of its own (``Adam``, ``AdamW``, ``NAdam``,
        ``RAdam``), :meth:`wrap` hands each rule's group to that decay: the
        same update bit for bit, AdamW's cost, and no copy of the weights kept
        to undo a refused update (a group mixing decayed and undecayed tensors
        needs one). Plain dicts: set per-group options on them before building
        the optimizer.

        Examples
        --------
        >>> opt = reg.wrap(torch.optim.Adam(reg.param_groups(), lr=1e-3))
        """
        rule_of = {
            s.name: i
            for i, (rule, slots) in enumerate(zip(self.rules, self._slots, strict=True))
            if rule.mode == "decoupled"
            for s in slots
            if s.kernel.weight_decay() is not None
        }
        rest = len(self.rules)
        groups = [[] for _ in range(rest + 1)]
        for name, param in self.model.named_parameters():
            groups[rule_of.get(name, rest)].append(param)
        return [{"params": params} for params in groups if params]

    def _rule_index(self, rule):
        for i, r in enumerate(self.rules):
            if r is rule:
                return i
        raise ValueError(f"rule {rule.describe()!r} is not one of this regularizer's rules")

    # ---- the coupled term -------------------------------------------------------------

    def penalty(self):
        r"""The sum of the coupled terms, to add to the loss: :math:`\sum P(\theta) + \sum \mu P(\theta)`.

        Coupled rules give their value, lagrangian rules :math:`\mu P(\theta)`
        with the current multiplier (a constant for autograd), and record
        :math:`P(\theta)` for the next dual step. A 0-d tensor, 0 when there
        is no such rule. Gradients are the penalties' own (the minimum-norm
        subgradient where a norm is not differentiable, e.g. at a zero row).
        """
        self._follow_replaced_parameters()
        terms = []
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.mode not in VALUE_MODES:
                continue
            value = self._rule_value(rule, slots)
            if rule.mode == "lagrangian":
                self._constraint_values[rule] = value.detach()
                value = rule.multiplier * value
            terms.append(value)
        for wrapped in self._wrapped:
            wrapped.penalty_seen = True
        if not terms:
            like = next(self.model.parameters(), None)
            return torch.zeros((), device=None if like is None else like.device)
        return sum(terms[1:], terms[0])

    def _rule_value(self, rule, slots):
        if rule.is_model_level:
            value = rule.penalty(self.model)
            if not (isinstance(value, torch.Tensor) and value.ndim == 0):
                raise TypeError(
                    f"the model-level penalty of rule {rule.describe()!r} must return a 0-d tensor, got "
                    f"{type(value).__name__} {getattr(value, 'shape', '')}"
                )
            return value
        by_kernel = {}
        for slot in slots:
            by_kernel.setdefault(slot.kernel, []).append(slot)
        values = [kernel.total(group) for kernel, group in by_kernel.items()]
        return sum(values[1:], values[0])

    # ---- optimizer hooks --------------------------------------------------------------

    def wrap(self, optimizer):
        """Attach the rules to ``optimizer`` through its step and state-dict hooks; return the same object.

        The rules' tensors are looked up again by name in the model as it is
        now, so a model cast (``.to(torch.bfloat16)``, ``.half()``), moved or
        compiled after the regularizer was built is followed. Every parameter
        of a decoupled, proximal or constrained rule must be in some wrapped
        optimizer (checked at the first step, so several optimizers can be
        wrapped one after the other); its param group's ``lr`` is the step.
        Warns when a parameter under an L2 rule also gets the optimizer's own
        ``weight_decay`` (it would be decayed twice).

        ``optimizer.step`` becomes an instance-level wrapper (over the one
        already there, a learning-rate scheduler's say) that, when the closure
        or the optimizer's update raises, undoes the decoupled decay and
        forgets what the closure recorded: a failed step changes nothing. The
        decay keeps the values it overwrites in buffers the size of the
        decayed parameters.

        ``optimizer.state_dict()`` then holds this regularizer's
        :meth:`state_dict` (each parameter's tensors in that parameter's
        state, the multipliers and model-level states in the state of the
        first regularized parameter, the rest under :data:`STATE_KEY`), and
        ``optimizer.load_state_dict()`` restores it (checked before the
        optimizer loads anything), so checkpoints written by Lightning,
        transformers' Trainer, accelerate or ``torch.distributed.checkpoint``
        (flattened or not) carry it. A parameter's live optimizer state holds
        the same entries, references to the regularizer's tensors, once it
        is not empty: DCP's flattened load keeps only the keys it has.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any(w.optimizer is optimizer for w in self._wrapped):
            raise ValueError("this optimizer is already wrapped by this regularizer")
        self._rebind()
        wrapped = _Wrapped(optimizer, [], [base_lr(g) for g in optimizer.param_groups])
        self._build_actions(wrapped)
        self._warn_double_decay(optimizer)
        wrapped.handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
            optimizer.register_state_dict_post_hook(self._save_into_optimizer_state),
            optimizer.register_load_state_dict_pre_hook(self._take_from_optimizer_state),
            optimizer.register_load_state_dict_post_hook(self._apply_taken_state),
        ]
        self._install_undoing_step(wrapped)
        self._wrapped.append(wrapped)
        self._coverage_checked = False
        return optimizer

    def unwrap(self, optimizer):
        """Remove the hooks from ``optimizer``; it steps as if never wrapped.

        The undoing ``step`` :meth:`wrap` installed is removed too, unless
        something wrapped it since (a scheduler built after :meth:`wrap`):
        it then stays in the chain, with nothing to undo.
        """
        wrapped = self._find(optimizer)
        for handle in wrapped.handles:
            handle.remove()
        if wrapped.step is not None and optimizer.__dict__.get("step") is wrapped.step:
            optimizer.__dict__.pop("step")
            if wrapped.step.previous is not None:
                optimizer.step = wrapped.step.previous
        wrapped.live, wrapped.missing = {}, []
        self._set_live_entries(wrapped)
        self._wrapped.remove(wrapped)

    def _install_undoing_step(self, wrapped):
        """``optimizer.step`` as a bound method that undoes the step's work when the step raises.

        It calls the step that was there (an instance attribute such as a
        learning-rate scheduler's counting wrapper, whose attributes it
        takes, or the class's step with its hooks). A bound method, so that
        a scheduler built later can wrap it in turn; after :meth:`unwrap`
        under such a wrapper it stays, with no hooks left and so no decay to
        undo.
        """
        optimizer = wrapped.optimizer
        inner = optimizer.step

        def step(optimizer, *args, **kwargs):
            records = dict(self._constraint_values), wrapped.penalty_seen
            wrapped.decayed = []
            try:
                return inner(*args, **kwargs)
            except BaseException:
                self._undo_step(wrapped, records)
                raise

        functools.update_wrapper(step, inner)
        step.previous = optimizer.__dict__.get("step")
        wrapped.step = types.MethodType(step, optimizer)
        optimizer.step = wrapped.step

    def _undo_step(self, wrapped, records):
        """The decayed tensors back as they were before this step's decay (the last decayed first), and
        the per-step ``records`` (constraint values, coupled term seen) as they were before the step."""
        for action in reversed(wrapped.decayed):
            action.undo_()
        wrapped.decayed = []
        _take_back_decay(wrapped)
        self._constraint_values, wrapped.penalty_seen = records

    def _find(self, optimizer):
        for wrapped in self._wrapped:
            if wrapped.optimizer is optimizer:
                return wrapped
        raise ValueError("this optimizer is not wrapped by this regularizer; call reg.wrap(optimizer)")

    def _build_actions(self, wrapped):
        """Buckets of this optimizer's parameters: per rule, param group, device, dtype and kernel."""
        groups = wrapped.optimizer.param_groups
        wrapped.base_lrs += [base_lr(g) for g in groups[len(wrapped.base_lrs) :]]
        group_of = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
        wrapped.layout = _layout(groups)
        wrapped.pre, wrapped.post, wrapped.handed = [], [], []
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.mode not in STEP_MODES:
                continue
            buckets = {}
            for s in slots:
                if id(s.param) in group_of:
                    key = (s.kernel, group_of[id(s.param)], s.param.device, s.param.dtype)
                    buckets.setdefault(key, []).append(s)
            for (kernel, index, _, dtype), bucket_slots in buckets.items():
                low_precision = work_dtype(dtype) != dtype
                residuals = [self._residuals[s.name] for s in bucket_slots] if low_precision else None
                bucket = Bucket(kernel, bucket_slots, groups[index], METHODS[rule.mode], residuals)
                action = _Action(rule, bucket, index)
                if rule.mode == "decoupled":
                    decay = _optimizer_decay(action, groups[index])
                    if decay is not None:
                        wrapped.handed.append((groups[index], decay))
                        continue
                    wrapped.pre.append(action)
                else:
                    wrapped.post.append(action)
        wrapped.post.sort(key=lambda a: STEP_MODES.index(a.rule.mode))
        others = [w for w in self._wrapped if w is not wrapped]
        wrapped.model_constraints = [
            rule
            for rule in self.rules
            if rule.is_model_constraint and not any(rule in w.model_constraints for w in others)
        ]
        wrapped.dual_rules = [
            rule
            for rule, slots in zip(self.rules, self._slots, strict=True)
            if rule.mode == "lagrangian"
            and (not slots or id(slots[0].param) in group_of)
            and not any(rule in w.dual_rules for w in others)
        ]
        self._refresh_live_entries(wrapped)

    def _refresh_live_entries(self, wrapped):
        """The entries of each regularized parameter's live optimizer state, as references to the
        regularizer's tensors as they are now (after a rebinding, a load, new param groups)."""
        regularized = self._regularized(wrapped.optimizer)
        keys = {name: p for name, p in regularized}
        carrier = keys.get(_carrier(regularized))
        _, wrapped.live = _split_per_parameter(self._state(copy=False), keys, carrier)
        self._set_live_entries(wrapped)

    def _regularized(self, optimizer):
        """``(name, parameter)`` of the parameters of ``optimizer`` that some rule acts on, in its order."""
        names = {id(s.param): s.name for slots in self._slots for s in slots}
        params = (p for g in optimizer.param_groups for p in g["params"])
        return [(names[id(p)], p) for p in params if id(p) in names]

    def _set_live_entries(self, wrapped):
        """Each parameter's live optimizer state: stale entries out, :attr:`_Wrapped.live` in where not
        empty (an empty one is the optimizer's lazy start: Adam initialises it when ``len(state) == 0``)."""
        state = wrapped.optimizer.state
        for p in [p for g in wrapped.optimizer.param_groups for p in g["params"]]:
            own = state.get(p, {})  # state[p] would add an empty entry to the defaultdict
            for entry in [e for e in own if _is_entry(e) and e not in wrapped.live.get(p, ())]:
                del own[entry]
        wrapped.missing = list(wrapped.live)
        self._insert_live_entries(wrapped)

    def _insert_live_entries(self, wrapped):
        """The missing entries into the live states that are no longer empty; nothing when none is missing."""
        state = wrapped.optimizer.state
        wrapped.missing = [p for p in wrapped.missing if not _insert(state.get(p), wrapped.live[p])]

    def _warn_double_decay(self, optimizer):
        decayed = {
            id(p): g["weight_decay"]
            for g in optimizer.param_groups
            for p in g["params"]
            if g.get("weight_decay", 0)
        }
        for rule, slots in zip(self.rules, self._slots, strict=True):
            for s in slots:
                if decays_like_weight_decay(s.penalty) and id(s.param) in decayed:
                    warnings.warn(
                        f"parameter {s.name!r} is under the L2 rule {rule.describe()!r} and its optimizer "
                        f"group also has weight_decay={decayed[id(s.param)]}: it is decayed twice; set the "
                        "optimizer's weight_decay=0",
                        UserWarning,
                        stacklevel=3,
                    )
                    return

    def _pre_step(self, optimizer, args, kwargs):
        """Checks, then the decoupled decay: now, or right after the closure's first call."""
        wrapped = self._find(optimizer)
        self._check_structure(wrapped)
        wrapped.initialising = _initialises_state(optimizer)
        if wrapped.initialising:
            return None
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if closure is None:
            self._begin_update(wrapped)
            return None
        return args[:1], {**kwargs, "closure": self._closure_then_decay(wrapped, closure)}

    def _closure_then_decay(self, wrapped, closure):
        """``closure`` that, after its first call, checks the step and applies the decoupled decay.

        ``optimizer.step(closure)`` evaluates the loss (and so
        ``reg.penalty()``) inside the step; AdamW decays after that first
        evaluation, and so does this. When a call raises, the undoing step
        (:meth:`_install_undoing_step`) puts back what came before.
        """
        first_call = True

        def closure_then_decay():
            nonlocal first_call
            loss = closure()
            if first_call:
                first_call = False
                self._begin_update(wrapped)
            return loss

        return closure_then_decay

    def _begin_update(self, wrapped):
        """The checks that need this step's loss, then the decoupled decay (AdamW's place), each bucket
        recorded once decayed: the step's wrapper undoes those if the step raises before its end.

        The param groups handed to the optimizer's own decay (:func:`_optimizer_decay`) get their
        ``weight_decay`` and ``decoupled_weight_decay`` for this step; the post-step hook (or the
        step's wrapper, if the step raises) gives them back their own values.
        """
        self._check_values(wrapped)
        wrapped.decayed = []
        for action in wrapped.pre:
            step = action.argument(wrapped.base_lrs)
            if self.atomic_decay:
                wrapped.decayed.append(action)
                action.decay_undoably_(step)
            else:
                action.bucket.apply_(step)
        wrapped.handed_back = [(g, g["weight_decay"], g["decoupled_weight_decay"]) for g, _ in wrapped.handed]
        for group, decay in wrapped.handed:
            group["weight_decay"], group["decoupled_weight_decay"] = decay, True

    def _post_step(self, optimizer, args, kwargs):
        wrapped = self._find(optimizer)
        wrapped.decayed = []  # the update is done: its decay stays
        _take_back_decay(wrapped)
        if wrapped.initialising:  # DCP builds its template from the live states right after this step
            wrapped.initialising = False
            self._insert_live_entries(wrapped)
            return
        for action in wrapped.post:
            action.bucket.apply_(action.argument(wrapped.base_lrs))
        for rule in wrapped.model_constraints:
            rule.penalty.project_(self.model)
        for rule in wrapped.dual_rules:
            self._dual_step(rule)
        wrapped.penalty_seen = False
        if wrapped.missing:
            self._insert_live_entries(wrapped)

    def _dual_step(self, rule):
        r"""Dual ascent :math:`\mu \leftarrow \max(0, \mu + \eta_\mu (\bar P - C))`, mean over ranks."""
        value = self._constraint_values.pop(rule).to(rule.multiplier, copy=True)  # not the graph's tensor
        all_reduce_mean_([value])
        with torch.no_grad():
            rule.multiplier.add_(value.sub_(rule.budget), alpha=rule.dual_lr).clamp_(min=0)

    def _check_structure(self, wrapped):
        """What can fail before the loss is known, checked before any tensor is modified.

        Param groups changed since the last step (rebuild the buckets), the
        model cast or moved since the wrap (look the tensors up again), every
        parameter covered, and every group's hyperparameters of the types the
        optimizer's defaults have (so the optimizer cannot fail half-way
        through an update the regularizer has begun).
        """
        if any(action.bucket.is_stale() for action in wrapped.pre + wrapped.post):
            self._rebind()
        if _layout(wrapped.optimizer.param_groups) != wrapped.layout or not _still_handed(wrapped):
            self._build_actions(wrapped)
            self._coverage_checked = False
        if not self._coverage_checked:
            self._check_coverage()
        _check_hyperparameters(wrapped.optimizer, wrapped.checked)

    def _check_values(self, wrapped):
        """The lagrangian rules have this step's constraint value; warn when the coupled term is missing."""
        missing = [r.describe() for r in wrapped.dual_rules if r not in self._constraint_values]
        if missing:
            raise RuntimeError(
                f"lagrangian rules {missing} have no constraint value for this step: add reg.penalty() to "
                "the loss before loss.backward() and optimizer.step()"
            )
        coupled = [] if wrapped.penalty_seen else [r.describe() for r in self.rules if r.mode == "coupled"]
        if coupled:
            warnings.warn(
                f"optimizer.step() without reg.penalty() since the last step: the coupled rules {coupled} "
                "are not in this update; add reg.penalty() to the loss",
                UserWarning,
                stacklevel=5,
            )

    def _check_coverage(self):
        held = {id(p) for w in self._wrapped for g in w.optimizer.param_groups for p in g["params"]}
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.mode in STEP_MODES:
                outside = [s.name for s in slots if id(s.param) not in held]
                if outside:
                    raise ValueError(
                        f"rule {rule.describe()!r} acts on parameters that no wrapped optimizer updates: "
                        f"{outside[:10]}; add them to the optimizer (or wrap their optimizer too), or narrow "
                        "the rule's select"
                    )
        for rule in self.rules:
            if rule.mode == "lagrangian" and not any(rule in w.dual_rules for w in self._wrapped):
                raise ValueError(
                    f"lagrangian rule {rule.describe()!r}: none of its parameters is in a wrapped optimizer, "
                    "so its multiplier would never be updated; wrap the optimizer that updates them"
                )
        self._coverage_checked = True

    # ---- reports and state ------------------------------------------------------------

    def report(self):
        """Per rule and per tensor: norm, lambda, value, exact zeros, zeroed rows/columns, multiplier.

        Returns a :class:`~normpen.torch.report.Report` (a rich table when
        printed, ``to_dict()`` for data, ``plot()`` for a figure). Reads the
        tensors to the host: for logging, not for every step. Under FSDP2
        each parameter is gathered whole in turn (a collective: call it on
        every rank); every rank gets the same report.
        """
        rules = []
        with torch.no_grad():
            for rule, slots in zip(self.rules, self._slots, strict=True):
                tensors = [
                    tensor_report(s.name, whole_tensor(s.param), _whole_arrays(s.penalty), s.layout)
                    for s in slots
                ]
                if rule.is_model_constraint:
                    value = float(rule.penalty.norm(self.model))
                elif rule.is_model_level:
                    value = float(self._model_value(rule))
                else:
                    value = sum(t.value for t in tensors)
                multiplier = None if rule.multiplier is None else float(rule.multiplier)
                rules.append(RuleReport(rule.describe(), rule.mode, value, multiplier, rule.budget, tensors))
        return Report(rules)

    def _model_value(self, rule):
        """A model-level penalty's value with its state (power-iteration vectors) put back afterwards."""
        saved = rule.penalty.state_dict() if hasattr(rule.penalty, "state_dict") else None
        value = self._rule_value(rule, [])
        if saved is not None:
            rule.penalty.load_state_dict(saved)
        return value

    def state_dict(self):
        """The regularizer's learned and reference state, as tensors and plain data (no pickle needed).

        Multipliers of lagrangian rules, anchors and Fisher weights of anchored
        penalties, the float32 residuals of float16/bfloat16 parameters, and
        the ``state_dict()`` of model-level penalties and constraints that
        have one (the power-iteration vectors of the spectral rules).
        Save it next to the model's and the optimizer's (``torch.save``, then
        ``torch.load(..., weights_only=True)``): a resumed run then ends bit
        for bit where an uninterrupted one does.

        A tensor that belongs to a parameter (anchor, Fisher weights,
        residual) has the parameter's shape. The residual of an FSDP2
        parameter is a DTensor with the parameter's mesh and placements, each
        rank holding its rows (as is an anchor taken from the parameter), so
        ``torch.distributed.checkpoint`` saves and loads every rank's piece
        as it does the parameter's.
        """
        return self._state(copy=True)

    def _state(self, copy):
        """:meth:`state_dict`, its tensors copies (``copy``) or the regularizer's own: the residuals of
        FSDP2 parameters then this rank's rows, the model-level states what their ``state_dict`` gives."""
        slots = self._slots_by_name()
        take = _tensor if copy else torch.as_tensor  # as_tensor: the tensor itself, a numpy array's memory
        residuals = self._residuals.items()
        state = {
            "format": _FORMAT,
            "rules": [{"mode": r.mode, "names": self.names(r)} for r in self.rules],
            "multipliers": {},
            "anchors": {},
            "fisher": {},
            "residuals": {name: _shaped_like(r, slots[name].param) if copy else r for name, r in residuals},
            "model_level": {str(i): r.penalty.state_dict() for i, r in self._stateful_model_rules()},
        }
        for i, (rule, slots) in enumerate(zip(self.rules, self._slots, strict=True)):
            if rule.multiplier is not None:
                state["multipliers"][str(i)] = take(rule.multiplier)
            anchored = [s for s in slots if is_anchored(s.penalty)]
            if anchored:
                state["anchors"][str(i)] = {s.name: take(s.penalty.anchor) for s in anchored}
                state["fisher"][str(i)] = {
                    s.name: take(s.penalty.fisher) for s in anchored if s.penalty.fisher is not None
                }
        return state

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`: the whole state is checked first, then applied; nothing half-loaded.

        The rules must be the same (modes and selected names, in order);
        multipliers 0-d, finite and nonnegative; residuals, anchors and Fisher
        weights of their parameters' shapes and finite (Fisher nonnegative).
        Raises ``ValueError`` (``TypeError`` for a value that is not a tensor)
        naming the first problem, with the regularizer unchanged.
        """
        self._check_state(state)
        self._apply_state(state)

    def _apply_state(self, state):
        """Apply a state :meth:`_check_state` accepted (only the model-level loads can fail, undone)."""
        penalties = {
            i: _with_anchors(rule.penalty, state["anchors"][str(i)], state["fisher"].get(str(i), {}))
            for i, rule in enumerate(self.rules)
            if str(i) in state["anchors"]
        }
        slots = self._slots_by_name()
        self._load_model_level(state.get("model_level", {}))
        with torch.no_grad():
            for i, rule in enumerate(self.rules):
                if rule.multiplier is not None:
                    rule.multiplier.copy_(state["multipliers"][str(i)])
            for name, residual in state["residuals"].items():
                self._residuals[name].copy_(local_piece(residual, slots[name], torch.float32))
        for i, penalty in penalties.items():
            self.rules[i].penalty = penalty
        self._slots = self._bind_slots()
        for wrapped in self._wrapped:
            self._build_actions(wrapped)

    def _save_into_optimizer_state(self, optimizer, state_dict):
        """Optimizer state-dict post hook: copies of :meth:`state_dict`'s tensors as :data:`ENTRY_PREFIX`
        entries of the parameters' states (the regularizer's own in the carrier's), the rest under
        :data:`STATE_KEY` of the first param group.

        In the parameters' states, ``torch.distributed.checkpoint`` keys them by the parameter's
        name, flattens them and reshards them (they are DTensors like an FSDP2 parameter) as it does
        Adam's ``exp_avg``. The entries are the regularizer's tensors as they are now, not the live
        states' references (a framework may have moved or replaced those), and a parameter's entry is
        a new dict: the live state is left as it is. The tensors of the parameters another optimizer
        updates stay under :data:`STATE_KEY`.
        """
        regularized = self._regularized(optimizer)
        keys = self._keys_by_name(optimizer, state_dict["param_groups"])
        remainder, entries = _split_per_parameter(self.state_dict(), keys, keys.get(_carrier(regularized)))
        states = state_dict["state"]
        for key, state in states.items():
            if any(_is_entry(e) for e in state):
                states[key] = _without_entries(state)
        for key, entry in entries.items():
            states[key] = {**states.get(key, {}), **entry}
        state_dict["param_groups"][0][STATE_KEY] = remainder
        return state_dict

    def _keys_by_name(self, optimizer, groups):
        """``{name: key}``: the key in an optimizer state dict (a number, or DCP's parameter name) of each
        regularized parameter of ``optimizer``, matched by position in the state dict's param ``groups``
        as ``optimizer.load_state_dict`` matches them. ``None`` when the groups' sizes are not the
        optimizer's (its load refuses them)."""
        live = [g["params"] for g in optimizer.param_groups]
        saved = [g.get("params", ()) for g in groups]
        if [len(params) for params in saved] != [len(params) for params in live]:
            return None
        name_of = {id(s.param): s.name for slots in self._slots for s in slots}
        return {
            name_of[id(p)]: key
            for keys, params in zip(saved, live, strict=True)
            for key, p in zip(keys, params, strict=True)
            if id(p) in name_of
        }

    def _take_from_optimizer_state(self, optimizer, state_dict):
        """Optimizer load pre hook: check the regularizer's state and keep it until the optimizer has loaded.

        The :data:`ENTRY_PREFIX` entries of the parameters' states and :data:`STATE_KEY` of the first
        param group are taken out (of copies: the caller's dict is left as it is), so the optimizer
        loads its own state and groups as they were. With :data:`STATE_KEY` the state is joined from
        both (a checkpoint written before the entries moved to the parameters' states has all of it
        there). Without it (DCP's flattened state dict: its unflattening keeps only the live param
        groups' keys) the entries replace the regularizer's tensors they name, the rest stays as it
        is, and the carrier's entries must all be there. A checkpoint with neither (written before
        the optimizer was wrapped) leaves the regularizer as it is.
        """
        wrapped = self._find(optimizer)
        wrapped.pending_state = None
        groups = state_dict.get("param_groups") or [{}]
        states = state_dict.get("state", {})
        # DCP's flattened load gives {} for a key of the live state that the checkpoint does not have
        entries = {k: _entries(s) for k, s in states.items()}
        entries = {k: e for k, e in entries.items() if e}
        keys = self._keys_by_name(optimizer, groups)
        if keys is None or (STATE_KEY not in groups[0] and not entries):
            # the optimizer's own load raises on the sizes of the groups; or nothing of the regularizer's
            return _without_regularizer_state(state_dict)
        current = self._state(copy=False)
        carrier = keys.get(_carrier(self._regularized(optimizer)))
        _, layout = _split_per_parameter(current, keys, carrier)
        _check_entries(entries, layout, carrier, flattened=STATE_KEY not in groups[0])
        if STATE_KEY in groups[0]:
            base = groups[0][STATE_KEY]
            _check_layout(base)
        else:
            base = self.state_dict()
        state = _join_per_parameter(base, entries, keys, current["model_level"])
        self._check_state(state)
        wrapped.pending_state = state
        return _without_regularizer_state(state_dict)

    def _apply_taken_state(self, optimizer):
        """Optimizer load post hook: apply the state the pre hook checked; the entries into the live
        states the optimizer's load replaced."""
        wrapped = self._find(optimizer)
        state, wrapped.pending_state = wrapped.pending_state, None
        if state is not None:
            self._apply_state(state)
        self._refresh_live_entries(wrapped)

    def _stateful_model_rules(self):
        """``(index, rule)`` of the model-level rules whose penalty or constraint has a state dict."""
        rules = enumerate(self.rules)
        return [(i, r) for i, r in rules if r.is_model_level and hasattr(r.penalty, "state_dict")]

    def _load_model_level(self, states):
        """Load every model-level state, or none: a failed load puts back the ones already loaded."""
        rules = self._stateful_model_rules()
        backups = [rule.penalty.state_dict() for _, rule in rules]
        try:
            for i, rule in rules:
                rule.penalty.load_state_dict(states[str(i)])
        except (ValueError, KeyError, RuntimeError) as err:
            for (_, rule), backup in zip(rules, backups, strict=True):
                rule.penalty.load_state_dict(backup)
            raise ValueError(f"a model-level rule's state does not fit: {err}") from err

    def _check_state(self, state):
        """Everything :meth:`_apply_state` needs is there, fits this regularizer and is finite."""
        _check_layout(state)
        saved = state["rules"]
        mine = [{"mode": r.mode, "names": self.names(r)} for r in self.rules]
        if len(saved) != len(mine):
            raise ValueError(f"the state has {len(saved)} rules, this regularizer has {len(mine)}")
        for i, (a, b) in enumerate(zip(saved, mine, strict=True)):
            if a != b:
                raise ValueError(
                    f"rule {i} differs: the state has {a['mode']} on {a['names'][:5]}, this regularizer "
                    f"{b['mode']} on {b['names'][:5]}"
                )
        slots = self._slots_by_name()
        for name, residual in state["residuals"].items():
            if name not in self._residuals:
                raise ValueError(f"residual {name!r} does not match a low-precision parameter here")
            _check_state_tensor(residual, f"residual {name!r}", slots[name].param.shape)
        stateful = {str(i) for i, _ in self._stateful_model_rules()}
        if set(state.get("model_level", {})) != stateful:
            raise ValueError(
                f"the state has model-level states for rules {sorted(state.get('model_level', {}))}, "
                f"this regularizer's stateful model-level rules are {sorted(stateful)}"
            )
        for i, rule in enumerate(self.rules):
            if (str(i) in state["multipliers"]) != (rule.multiplier is not None):
                raise ValueError(f"rule {i}: a multiplier is in only one of the state and the rule")
            if rule.multiplier is not None:
                multiplier = state["multipliers"][str(i)]
                _check_state_tensor(multiplier, f"rule {i}'s multiplier", (), nonnegative=True)
            self._check_anchored_state(i, state)

    def _check_anchored_state(self, i, state):
        """Rule ``i``'s saved anchors (all of its anchored tensors) and Fisher weights fit and are finite."""
        anchored = {s.name: s for s in self._slots[i] if is_anchored(s.penalty)}
        for key in ("anchors", "fisher"):
            given = state[key].get(str(i), {})
            for name, tensor in given.items():
                if name not in anchored:
                    raise ValueError(f"rule {i}: the {key} for {name!r} does not fit an anchored tensor here")
                _check_state_tensor(
                    tensor, f"rule {i}'s {key} of {name!r}", anchored[name].param.shape, key == "fisher"
                )
            if key == "anchors" and str(i) in state[key] and set(given) != set(anchored):
                raise ValueError(
                    f"rule {i}: the state's anchors cover {sorted(given)}, not {sorted(anchored)}"
                )


def _check_layout(state):
    """``state`` is a :meth:`Regularizer.state_dict` by its format and the kinds of its entries."""
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"not a Regularizer state dict (expected format {_FORMAT!r})")
    for key, kind in (("rules", list), ("multipliers", dict), *((key, dict) for key in _PER_PARAMETER)):
        if not isinstance(state.get(key), kind):
            raise ValueError(f"the state's {key!r} must be a {kind.__name__}, got {type(state.get(key))}")
    for key in _PER_RULE:
        for rule, tensors in state[key].items():
            if not isinstance(tensors, dict):
                raise ValueError(f"the state's {key!r} of rule {rule} must be a dict, got {type(tensors)}")


def _is_entry(key):
    """``key`` of a parameter's optimizer state is one of the regularizer's."""
    return isinstance(key, str) and key.startswith(ENTRY_PREFIX)


def _entries(parameter_state):
    """The regularizer's entries of one parameter's optimizer state, but for empty dicts: what DCP's
    flattened load gives for a key of the live state that the checkpoint does not have."""
    return {
        key: value
        for key, value in parameter_state.items()
        if _is_entry(key) and not (isinstance(value, dict) and not value)
    }


def _without_entries(parameter_state):
    """A copy of one parameter's optimizer state without the regularizer's entries."""
    return {key: value for key, value in parameter_state.items() if not _is_entry(key)}


def _field(entry):
    """``(field, rest)`` of an entry name: ``("anchor", "2")`` for ``normpen.anchor.2``."""
    field, _, rest = entry[len(ENTRY_PREFIX) :].partition(".")
    return field, rest


def _insert(parameter_state, entries):
    """``entries`` into a live optimizer state that is not empty (or ``None``); whether they are in."""
    if not parameter_state:
        return False
    parameter_state.update(entries)
    return True


def _carrier(regularized):
    """The name of the parameter whose optimizer state carries the regularizer's own entries: the first
    of ``regularized`` (``(name, parameter)`` in the optimizer's order) that DCP keeps the state of (it
    requires a gradient); ``None`` if there is none."""
    return next((name for name, p in regularized if p.requires_grad), None)


def _fingerprint(rules):
    """A number naming the rules (each one's mode and selected names): 56 bits of their SHA-256."""
    text = json.dumps(rules, sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def _leaves(tree, path=()):
    """``(path, leaf)`` of each leaf of nested dicts, depth first in the dicts' order."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def _model_entries(model_level):
    """``{entry: (rule, path, leaf)}``: an entry ``normpen.model.<rule>.<path joined by dots>`` per leaf of
    each model-level state (``{rule: nested dict}`` of :meth:`Regularizer.state_dict`)."""
    entries = {}
    for rule, tree in model_level.items():
        for path, leaf in _leaves(tree):
            entry = f"{ENTRY_PREFIX}{_MODEL}.{rule}." + ".".join(map(str, path))
            if entry in entries:
                raise ValueError(
                    f"rule {rule}'s model-level state has two tensors named {entry!r} once their keys are "
                    "joined by dots; its state_dict() must give keys that stay apart"
                )
            entries[entry] = (rule, path, leaf)
    return entries


def _split_per_parameter(state, keys, carrier=None):
    """``(remainder, entries)``: the tensors of :meth:`Regularizer.state_dict` ``state`` that belong to
    the parameters in ``keys`` (``{name: key}``) as ``entries[key][entry]``, the regularizer's own
    (a fingerprint of the rules, multipliers, model-level states) as ``entries[carrier]`` unless
    ``carrier`` is ``None``, the rest as it was.

    The entry of a residual is ``normpen.residual``, of rule ``i``'s anchor and Fisher weights
    ``normpen.anchor.i`` and ``normpen.fisher.i``, of its multiplier ``normpen.multiplier.i``, of its
    model-level state's tensors ``normpen.model.i.<path>``, and the fingerprint ``normpen.rules``.
    :func:`_join_per_parameter` undoes it.
    """
    entries = {}

    def keep(tensors, entry):
        kept = {}
        for name, tensor in tensors.items():
            if name in keys:
                entries.setdefault(keys[name], {})[ENTRY_PREFIX + entry] = tensor
            else:
                kept[name] = tensor
        return kept

    remainder = {**state, "residuals": keep(state["residuals"], _RESIDUAL)}
    for key, entry in _PER_RULE.items():
        remainder[key] = {rule: keep(tensors, f"{entry}.{rule}") for rule, tensors in state[key].items()}
    if carrier is not None:
        own = entries.setdefault(carrier, {})
        own[ENTRY_PREFIX + _RULES] = _fingerprint(state["rules"])
        for rule, multiplier in state["multipliers"].items():
            own[f"{ENTRY_PREFIX}{_MULTIPLIER}.{rule}"] = multiplier
        for entry, (_, _, leaf) in _model_entries(state["model_level"]).items():
            own[entry] = leaf
        remainder["multipliers"], remainder["model_level"] = {}, {}
    return remainder, entries


def _check_entries(entries, layout, carrier, flattened):
    """The entries of a checkpoint's parameter states (``{key: {entry: value}}``) are among those the
    regularizer writes there (``layout``, from :func:`_split_per_parameter`); the carrier's own entries
    all there, or (but for a flattened checkpoint) none; model-level tensors of their shapes.

    Raises ``ValueError`` naming the parameter and the entries."""
    for key, own in entries.items():
        unexpected = sorted(set(own) - set(layout.get(key, ())))
        if unexpected:
            raise ValueError(
                f"the optimizer state of parameter {key!r} has the regularizer's entries {unexpected}, "
                f"but this regularizer keeps {sorted(layout.get(key, ()))} there (entries of another "
                "regularizer, or a damaged checkpoint)"
            )
    expected = {e for e in layout.get(carrier, ()) if _field(e)[0] in (_RULES, _MULTIPLIER, _MODEL)}
    given = {e for e in entries.get(carrier, ()) if e in expected}
    if given != expected and (given or flattened):
        raise ValueError(
            f"the optimizer state of parameter {carrier!r} has the regularizer's own entries "
            f"{sorted(given)}, not {sorted(expected)}: the checkpoint was written by another regularizer or "
            "an earlier normpen; save reg.state_dict() beside it and restore it with reg.load_state_dict()"
        )
    for entry in given:
        if _field(entry)[0] == _MODEL and isinstance(layout[carrier][entry], torch.Tensor):
            _check_state_tensor(entries[carrier][entry], entry, layout[carrier][entry].shape)


def _join_per_parameter(remainder, entries, keys, model_level):
    """The state :func:`_split_per_parameter` split into ``remainder`` and ``entries``, put back by name
    (``keys``: ``{name: key}``); ``model_level`` is a model-level state of the same layout (its leaves
    are not read). ``entries`` are checked by :func:`_check_entries`; a fingerprint that is not of
    ``remainder``'s rules raises ``ValueError``.
    """
    name_of = {key: name for name, key in keys.items()}
    paths = _model_entries(model_level)
    state = {
        **remainder,
        "residuals": dict(remainder["residuals"]),
        "multipliers": dict(remainder["multipliers"]),
        "model_level": _copy_dicts(remainder.get("model_level", {})),
    }
    for key in _PER_RULE:
        state[key] = {rule: dict(tensors) for rule, tensors in remainder[key].items()}
    field_of = {entry: key for key, entry in _PER_RULE.items()}
    for key, own in entries.items():
        for entry, value in own.items():
            field, rest = _field(entry)
            if field == _RESIDUAL:
                state["residuals"][name_of[key]] = value
            elif field in field_of:
                state[field_of[field]].setdefault(rest, {})[name_of[key]] = value
            elif field == _MULTIPLIER:
                state["multipliers"][rest] = value
            elif field == _MODEL:
                rule, path, _ = paths[entry]
                _set_leaf(state["model_level"].setdefault(rule, {}), path, value)
            elif value != _fingerprint(state["rules"]):
                raise ValueError(
                    f"the optimizer state of parameter {key!r} has the regularizer's entries of other rules "
                    f"(modes and selected names; fingerprint {value}, this regularizer's "
                    f"{_fingerprint(state['rules'])}); build the regularizer with the rules it was saved with"
                )
    return state


def _copy_dicts(tree):
    """Nested dicts copied, their leaves shared."""
    return {key: _copy_dicts(value) if isinstance(value, dict) else value for key, value in tree.items()}


def _set_leaf(tree, path, value):
    """``tree[path[0]][path[1]]... = value``, making the dicts on the way."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _without_regularizer_state(state_dict):
    """A copy of an optimizer state dict without the regularizer's entries and :data:`STATE_KEY`, or
    ``None`` when it has neither. A parameter's state that held only entries is left out (the
    optimizer then starts it lazily, as Adam does when it has none)."""
    groups = state_dict.get("param_groups") or []
    states = state_dict.get("state", {})
    marked = [key for key, state in states.items() if any(_is_entry(e) for e in state)]
    in_group = bool(groups) and STATE_KEY in groups[0]
    if not marked and not in_group:
        return None
    own = dict(states)
    for key in marked:
        kept = _without_entries(states[key])
        if kept:
            own[key] = kept
        else:
            del own[key]
    if in_group:
        groups = [{key: value for key, value in groups[0].items() if key != STATE_KEY}, *groups[1:]]
    return {**state_dict, "state": own, "param_groups": groups}


def _check_state_tensor(value, what, shape, nonnegative=False):
    """A saved tensor: a tensor of ``shape``, finite, and ``>= 0`` where asked."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} in the state must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{what} in the state has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} in the state is not finite (NaN or inf); the checkpoint is damaged")
    if nonnegative and bool((value < 0).any()):
        raise ValueError(f"{what} in the state is negative; it must be >= 0")


def _check_hyperparameters(optimizer, checked):
    """Every param group's hyperparameters are of the kind of the optimizer's defaults, its ``lr`` >= 0.

    Checked before the regularizer modifies anything, so that the optimizer
    does not fail half-way through the step (``betas="bad"``, a group with
    ``lr="0.1"``): a failed step then changes nothing.

    ``checked`` (a dict, updated) holds what earlier calls found valid: per
    group, the group and its values of the defaults' keys, under the
    defaults as they were. A value identical to the one found valid there
    and immutable (a number, a string, a tuple of them) is not checked
    again, so an unchanged group costs one read of its values and a learning
    rate scheduler's new ``lr`` is the one value checked.
    """
    defaults = {"lr": _ABSENT, **optimizer.defaults}  # lr checked even where the defaults have none
    keys, values = tuple(defaults), tuple(defaults.values())
    if not _all_same(keys + values, checked.get("defaults", ())):
        checked.clear()
        checked["defaults"] = keys + values
    defaults = values
    for index, group in enumerate(optimizer.param_groups):
        values = tuple(map(group.get, keys, itertools.repeat(_ABSENT)))
        seen_group, seen = checked.get(index, (None, None))
        if seen_group is not group:
            seen = (_ABSENT,) * len(keys)
        elif _all_same(values, seen):
            continue
        for key, default, value, old in zip(keys, defaults, values, seen, strict=True):
            if value is not old and value is not _ABSENT and not _same_kind(value, default):
                raise TypeError(
                    f"param group {index} of {type(optimizer).__name__} has {key}={value!r}, not of "
                    f"the kind of its default {default!r}; fix the group (this step changed nothing)"
                )
        lr = values[0]  # keys[0] is "lr"
        if isinstance(lr, numbers.Real) and not (math.isfinite(lr) and lr >= 0):
            raise ValueError(
                f"param group {index} has lr={lr!r}; a learning rate is finite and >= 0 (this step changed "
                "nothing)"
            )
        checked[index] = group, tuple(v if _immutable(v) else _ABSENT for v in values)


#: a group's value for a key it does not have (and a value never taken as already checked)
_ABSENT = object()


def _all_same(values, seen):
    """Every one of ``values`` is the object at its place in ``seen`` (of the same length)."""
    return len(values) == len(seen) and all(map(operator.is_, values, seen))


def _immutable(value):
    """``value`` cannot change in place: a number, a string, ``None`` or a tuple of them."""
    if isinstance(value, tuple):
        return all(map(_immutable, value))
    return value is None or type(value) in (bool, int, float, str)


def _initialises_state(optimizer):
    """The step is ``torch.distributed.checkpoint``'s state initialisation, which the regularizer sits out.

    ``get_optimizer_state_dict`` and ``set_optimizer_state_dict`` create the
    state of an optimizer that has none by a step at learning rate 0 on zero
    gradients (``_init_optim_state``), which moves nothing; the regularizer's
    work (a projection, a dual step, a decay at a ``fixed`` learning rate)
    would. Recognised by that function among the callers, looked for only
    when the optimizer has no state and every group's ``lr`` is 0 (a user's
    own step at lr 0, say to test a projection, is a step like any other).
    """
    groups = optimizer.param_groups
    if optimizer.state or any(float(g.get("lr", 1.0)) != 0 for g in groups):
        return False
    return _dcp_caller("_init_optim_state") is not None


def _dcp_caller(name):
    """The frame of ``torch.distributed.checkpoint.state_dict``'s function ``name`` among the callers,
    or ``None`` (not called from there, or DCP not imported)."""
    function = getattr(sys.modules.get("torch.distributed.checkpoint.state_dict"), name, None)
    if function is None:
        return None
    code = inspect.unwrap(function).__code__  # some are wrapped by torch.no_grad()
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    return frame


def _same_kind(value, default):
    """``value`` may stand where ``default`` does: bool for bool, a number (or 1-element tensor) for a
    number, a sequence of the same length for a sequence; anything for other defaults."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, numbers.Real):
        if isinstance(value, torch.Tensor):
            return value.numel() == 1
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return (
            isinstance(value, (tuple, list))
            and len(value) == len(default)
            and all(_same_kind(v, d) for v, d in zip(value, default, strict=True))
        )
    return True


def _with_anchors(penalty, anchors, fishers):
    """``penalty`` (an Anchored or a mapping of them) with the saved anchors and Fisher weights."""
    if isinstance(penalty, Penalty):
        name, anchor = next(iter(anchors.items()))  # one shared penalty: every tensor has its anchor
        return _replace_anchor(penalty, anchor, fishers.get(name))
    return {
        name: _replace_anchor(p, anchors[name], fishers.get(name)) if name in anchors else p
        for name, p in penalty.items()
    }


def _replace_anchor(penalty, anchor, fisher):
    like = penalty.anchor
    fisher = None if fisher is None else _like(fisher, like)
    return dataclasses.replace(penalty, anchor=_like(anchor, like), fisher=fisher)


def _optimizer_decay(action, group):
    r"""The ``weight_decay`` with which the optimizer's own decoupled decay is ``action``'s, or None.

    Where the optimizer decays by itself (its groups have ``decoupled_weight_decay``: torch's
    ``Adam``, ``AdamW``, ``NAdam`` and ``RAdam``), a decoupled action whose decay is
    :math:`x \leftarrow (1 - \eta\mu)x` at the group's current learning rate (an L2 rule
    following the schedule, on weights without float32 residuals: :meth:`Kernel.weight_decay`)
    and that covers its whole param group, whose own ``weight_decay`` is 0, is handed to the
    optimizer for each step (``weight_decay = mu``, ``decoupled_weight_decay = True``, its own
    values back after the step). The same multiply on the same tensors, so the same update bit for
    bit; but inside the optimizer's update, after its own checks, so a refused update changes
    nothing with no copy to undo, and the step costs what AdamW's costs. A group mixing decayed and
    undecayed tensors (``Adam(model.parameters())``) keeps the regularizer's own decay.
    """
    decay = action.bucket.kernel.weight_decay()
    whole = len(action.bucket.params) == len(group["params"])  # (the bucket's tensors are the group's)
    own = action.rule.schedule == "follow" and action.bucket.residuals is None
    if decay is None or not (whole and own and "decoupled_weight_decay" in group and _no_decay(group)):
        return None
    return decay


def _no_decay(group):
    """The group's own ``weight_decay`` is the number 0."""
    decay = group.get("weight_decay")
    return isinstance(decay, (int, float)) and decay == 0


def _still_handed(wrapped):
    """Every group handed to the optimizer's decay still has no decay of its own (a ``weight_decay``
    set since then sends the decay back to the regularizer, :meth:`Regularizer._build_actions`)."""
    return all(_no_decay(group) for group, _ in wrapped.handed)


def _take_back_decay(wrapped):
    """The handed groups' own ``weight_decay`` and ``decoupled_weight_decay`` back after a step."""
    for group, decay, decoupled in wrapped.handed_back:
        group["weight_decay"], group["decoupled_weight_decay"] = decay, decoupled
    wrapped.handed_back = []


def _layout(groups):
    """What the buckets depend on in the param groups, read per group, not per tensor.

    The group dicts (``optimizer.load_state_dict`` replaces them), their
    ``params`` lists and their lengths: ``add_param_group``, a replaced or
    resized list all change it; swapping one tensor for another inside the
    same list does not (no torch.optim API does that).
    """
    return tuple((id(g), id(g["params"]), len(g["params"])) for g in groups)


def _check_row_shardable(kernel_class, penalty, entry, rule):
    """An FSDP2 parameter: sharded by rows, and the rule's operation right on the rows a rank holds."""
    check_row_sharded(entry.param, entry.name)
    method = METHODS.get(rule.mode, "value")  # coupled and lagrangian rules need the penalty's value
    if method not in kernel_class.row_shard_methods:
        raise TypeError(
            f"rule {rule.describe()!r} on the FSDP2 (fully_shard) parameter {entry.name!r}: {rule.mode} "
            f"{type(penalty).__name__} is not supported on sharded parameters (it needs the whole tensor: "
            "a spectrum or a ball's global threshold); supported: coupled and lagrangian L2, L1, elastic "
            "net, anchored and group lasso on rows or columns; decoupled L2, L1, elastic net and anchored; "
            "proximal L1, elastic net, anchored, group lasso on rows or columns and max-norm; constrained "
            f"max-norm. Leave {entry.name!r} out of this rule (select=...) and regularize it with a "
            "supported penalty, or train with DistributedDataParallel"
        )


def _check_fits(penalty, entry, rule):
    """The penalty accepts the tensor (shape, matrix, finite): checked once, at construction."""
    layout = layout_of(entry)
    if layout == "stacked" and penalty.matrix_only:
        raise ValueError(
            f"rule {rule.describe()!r} on parameter {entry.name!r}: a stack of expert matrices "
            f"{tuple(entry.param.shape)} has one spectrum per expert, which this matrix penalty does not "
            "sum; use a row/column group or elementwise penalty on it, or leave it out with select"
        )
    tensor = entry.param.detach()
    tensor = whole_tensor(tensor)  # every rank builds: a collective
    try:
        penalty._check(as_penalty_input(penalty, tensor, layout), entry.name)
    except (TypeError, ValueError) as err:
        raise type(err)(f"rule {rule.describe()!r} on parameter {entry.name!r}: {err}") from err


def _whole_arrays(penalty):
    """``penalty`` with its DTensor fields (the anchor of an L2-SP rule built under FSDP2) gathered whole."""
    sharded = {
        f.name: whole_tensor(getattr(penalty, f.name))
        for f in dataclasses.fields(penalty)
        if f.init and is_sharded(getattr(penalty, f.name))
    }
    return dataclasses.replace(penalty, **sharded) if sharded else penalty


def _shaped_like(local, param):
    """A copy of ``local``, this rank's piece of a tensor shaped like ``param``, as that tensor: a DTensor
    with the mesh and placements of an FSDP2 ``param``, else the copy itself."""
    if not is_sharded(param):
        return local.clone()
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local.clone(),
        param.device_mesh,
        param.placements,
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    )


def _tensor(array):
    return array.detach().clone() if isinstance(array, torch.Tensor) else torch.as_tensor(array).clone()


def _like(tensor, like):
    """``tensor`` on the device and dtype of ``like`` (a tensor or numpy array)."""
    if isinstance(like, torch.Tensor):
        return tensor.to(device=like.device, dtype=like.dtype)
    return tensor.cpu().numpy().astype(like.dtype)
