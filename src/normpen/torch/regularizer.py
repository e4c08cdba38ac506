r"""The :class:`Regularizer`: rules bound to a model, riding on any ``torch.optim`` optimizer.

The user keeps their optimizer object, its param groups, schedulers and
``state_dict``: :meth:`Regularizer.wrap` only registers the optimizer's own
step hooks. Per optimizer step:

.. code-block:: text

    pre-step hook   checks (raise before anything is modified), then
                    decoupled:    theta <- theta - lr * grad P(theta)   (AdamW's place)
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
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref

import torch

from normpen.penalties.anchored import Anchored
from normpen.penalties.l2 import L2
from normpen.torch.distributed import all_reduce_mean_, unwrap_model
from normpen.torch.kernels import Bucket, Slot, as_penalty_input, kernel_for, work_dtype
from normpen.torch.report import Report, RuleReport, tensor_report
from normpen.torch.rules import VALUE_MODES, Rule, parameter_entries, select_entries
from normpen.torch.scaling import base_lr, rule_lr

__all__ = ["Regularizer"]

#: Modes whose work is done by the optimizer hooks, in the order the post hook runs them.
STEP_MODES = ("decoupled", "proximal", "constrained")
#: The kernel operation of each step mode.
METHODS = {"decoupled": "decay", "proximal": "prox", "constrained": "project"}
_FORMAT = "normpen.torch.Regularizer/1"


@dataclasses.dataclass(eq=False)
class _Action:
    """One bucket's work in a step: the rule (mode, step rule) and the bucket."""

    rule: Rule
    bucket: Bucket
    group_index: int

    def argument(self, base_lrs):
        """The rule's radius (constrained), else its step: the group's lr now, or its base lr (``fixed``)."""
        if self.rule.mode == "constrained":
            return self.rule.radius
        return rule_lr(self.bucket.group, self.rule.schedule, base_lrs[self.group_index])


@dataclasses.dataclass(eq=False)
class _Wrapped:
    """What the regularizer keeps per wrapped optimizer."""

    optimizer: torch.optim.Optimizer
    handles: list
    base_lrs: list
    layout: tuple = ()
    penalty_seen: bool = False
    pre: list = dataclasses.field(default_factory=list)
    post: list = dataclasses.field(default_factory=list)
    model_constraints: list = dataclasses.field(default_factory=list)
    dual_rules: list = dataclasses.field(default_factory=list)


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

    def __init__(self, model, rules):
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
        for rule in self.rules:
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
                kernel = kernels.setdefault((cls, cls.bucket_key(penalty)), cls(penalty))
                slots.append(Slot(entry.name, entry.param, penalty, kernel))
            all_slots.append(slots)
        return all_slots

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
        for rule, slots in zip(self.rules, self._slots, strict=True):
            owner = getattr(rule, "_owner", None)
            if owner is not None and owner() is not None and owner() is not self:
                raise ValueError(
                    f"rule {rule.describe()!r} already belongs to another Regularizer (it holds that one's "
                    "multiplier); create a new Rule"
                )
            rule._owner = weakref.ref(self)
            if rule.mode == "lagrangian":
                like = slots[0].param if slots else next(self.model.parameters(), None)
                device = like.device if like is not None else torch.device("cpu")
                dtype = work_dtype(like.dtype) if like is not None else torch.get_default_dtype()
                rule.multiplier = torch.tensor(rule.multiplier_init, dtype=dtype, device=device)

    def _make_residuals(self):
        """float32 residuals of the float16/bfloat16 parameters that the step hooks update."""
        residuals = {}
        for rule, slots in zip(self.rules, self._slots, strict=True):
            if rule.mode in STEP_MODES:
                for s in slots:
                    if work_dtype(s.param.dtype) != s.param.dtype and s.name not in residuals:
                        residuals[s.name] = torch.zeros_like(s.param, dtype=torch.float32)
        return residuals

    def names(self, rule):
        """The qualified names of the parameters ``rule`` acts on, in model order."""
        return [s.name for s in self._slots[self._rule_index(rule)]]

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
        values = [k.value([s.param for s in group], group) for k, group in by_kernel.items()]
        return sum(values[1:], values[0])

    # ---- optimizer hooks --------------------------------------------------------------

    def wrap(self, optimizer):
        """Attach the rules to ``optimizer`` through its step hooks and return the same object.

        Every parameter of a decoupled, proximal or constrained rule must be in
        some wrapped optimizer (checked at the first step, so several
        optimizers can be wrapped one after the other); its param group's
        ``lr`` is the step. Warns when a parameter under an L2 rule also gets
        the optimizer's own ``weight_decay`` (it would be decayed twice).
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any(w.optimizer is optimizer for w in self._wrapped):
            raise ValueError("this optimizer is already wrapped by this regularizer")
        wrapped = _Wrapped(optimizer, [], [base_lr(g) for g in optimizer.param_groups])
        self._build_actions(wrapped)
        self._warn_double_decay(optimizer)
        wrapped.handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        self._wrapped.append(wrapped)
        self._coverage_checked = False
        return optimizer

    def unwrap(self, optimizer):
        """Remove the hooks from ``optimizer``; it steps as if never wrapped."""
        wrapped = self._find(optimizer)
        for handle in wrapped.handles:
            handle.remove()
        self._wrapped.remove(wrapped)

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
        wrapped.pre, wrapped.post = [], []
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
                actions = wrapped.pre if rule.mode == "decoupled" else wrapped.post
                actions.append(_Action(rule, bucket, index))
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

    def _warn_double_decay(self, optimizer):
        decayed = {
            id(p): g["weight_decay"]
            for g in optimizer.param_groups
            for p in g["params"]
            if g.get("weight_decay", 0)
        }
        for rule, slots in zip(self.rules, self._slots, strict=True):
            for s in slots:
                if isinstance(s.penalty, L2) and id(s.param) in decayed:
                    warnings.warn(
                        f"parameter {s.name!r} is under the L2 rule {rule.describe()!r} and its optimizer "
                        f"group also has weight_decay={decayed[id(s.param)]}: it is decayed twice; set the "
                        "optimizer's weight_decay=0",
                        UserWarning,
                        stacklevel=3,
                    )
                    return

    def _pre_step(self, optimizer, args, kwargs):
        wrapped = self._find(optimizer)
        self._check_step(wrapped)
        for action in wrapped.pre:
            action.bucket.apply_(action.argument(wrapped.base_lrs))

    def _post_step(self, optimizer, args, kwargs):
        wrapped = self._find(optimizer)
        for action in wrapped.post:
            action.bucket.apply_(action.argument(wrapped.base_lrs))
        for rule in wrapped.model_constraints:
            rule.penalty.project_(self.model)
        for rule in wrapped.dual_rules:
            self._dual_step(rule)
        wrapped.penalty_seen = False

    def _dual_step(self, rule):
        r"""Dual ascent :math:`\mu \leftarrow \max(0, \mu + \eta_\mu (\bar P - C))`, mean over ranks."""
        value = self._constraint_values.pop(rule).to(rule.multiplier, copy=True)  # not the graph's tensor
        all_reduce_mean_([value])
        with torch.no_grad():
            rule.multiplier.add_(value.sub_(rule.budget), alpha=rule.dual_lr).clamp_(min=0)

    def _check_step(self, wrapped):
        """Everything that can fail, checked before the first parameter is modified (Python state only)."""
        if _layout(wrapped.optimizer.param_groups) != wrapped.layout:
            self._build_actions(wrapped)
            self._coverage_checked = False
        if not self._coverage_checked:
            self._check_coverage()
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
                stacklevel=4,
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
        tensors to the host: for logging, not for every step.
        """
        rules = []
        with torch.no_grad():
            for rule, slots in zip(self.rules, self._slots, strict=True):
                tensors = [tensor_report(s.name, s.param, s.penalty) for s in slots]
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
        """
        state = {
            "format": _FORMAT,
            "rules": [{"mode": r.mode, "names": self.names(r)} for r in self.rules],
            "multipliers": {},
            "anchors": {},
            "fisher": {},
            "residuals": {name: r.clone() for name, r in self._residuals.items()},
            "model_level": {str(i): r.penalty.state_dict() for i, r in self._stateful_model_rules()},
        }
        for i, (rule, slots) in enumerate(zip(self.rules, self._slots, strict=True)):
            if rule.multiplier is not None:
                state["multipliers"][str(i)] = rule.multiplier.detach().clone()
            anchored = [s for s in slots if isinstance(s.penalty, Anchored)]
            if anchored:
                state["anchors"][str(i)] = {s.name: _tensor(s.penalty.anchor) for s in anchored}
                state["fisher"][str(i)] = {
                    s.name: _tensor(s.penalty.fisher) for s in anchored if s.penalty.fisher is not None
                }
        return state

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`; everything is checked (and built) before anything changes.

        The rules must be the same (modes and selected names, in order).
        Raises ``ValueError`` naming the first mismatch.
        """
        self._check_state(state)
        penalties = {
            i: _with_anchors(rule.penalty, state["anchors"][str(i)], state["fisher"].get(str(i), {}))
            for i, rule in enumerate(self.rules)
            if str(i) in state["anchors"]
        }
        self._load_model_level(state.get("model_level", {}))
        with torch.no_grad():
            for i, rule in enumerate(self.rules):
                if rule.multiplier is not None:
                    rule.multiplier.copy_(state["multipliers"][str(i)])
            for name, residual in state["residuals"].items():
                self._residuals[name].copy_(residual)
        for i, penalty in penalties.items():
            self.rules[i].penalty = penalty
        self._slots = self._bind_slots()
        for wrapped in self._wrapped:
            self._build_actions(wrapped)

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
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"not a Regularizer state dict (expected format {_FORMAT!r})")
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
        for name, residual in state["residuals"].items():
            if name not in self._residuals or residual.shape != self._residuals[name].shape:
                raise ValueError(f"residual {name!r} does not match a low-precision parameter here")
        stateful = {str(i) for i, _ in self._stateful_model_rules()}
        if set(state.get("model_level", {})) != stateful:
            raise ValueError(
                f"the state has model-level states for rules {sorted(state.get('model_level', {}))}, "
                f"this regularizer's stateful model-level rules are {sorted(stateful)}"
            )
        for i, rule in enumerate(self.rules):
            if (str(i) in state["multipliers"]) != (rule.multiplier is not None):
                raise ValueError(f"rule {i}: a multiplier is in only one of the state and the rule")
            anchored = {s.name: s for s in self._slots[i] if isinstance(s.penalty, Anchored)}
            for key in ("anchors", "fisher"):
                given = state[key].get(str(i), {})
                for name, tensor in given.items():
                    if name not in anchored or tuple(tensor.shape) != tuple(anchored[name].param.shape):
                        raise ValueError(
                            f"rule {i}: the {key} for {name!r} does not fit an anchored tensor here"
                        )
                if key == "anchors" and str(i) in state[key] and set(given) != set(anchored):
                    raise ValueError(
                        f"rule {i}: the state's anchors cover {sorted(given)}, not {sorted(anchored)}"
                    )


def _with_anchors(penalty, anchors, fishers):
    """``penalty`` (an Anchored or a mapping of them) with the saved anchors and Fisher weights."""
    if isinstance(penalty, Anchored):
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


def _layout(groups):
    """What the buckets depend on in the param groups, read per group, not per tensor.

    The group dicts (``optimizer.load_state_dict`` replaces them), their
    ``params`` lists and their lengths: ``add_param_group``, a replaced or
    resized list all change it; swapping one tensor for another inside the
    same list does not (no torch.optim API does that).
    """
    return tuple((id(g), id(g["params"]), len(g["params"])) for g in groups)


def _check_fits(penalty, entry, rule):
    """The penalty accepts the tensor (shape, matrix, finite): checked once, at construction."""
    try:
        penalty._check(as_penalty_input(penalty, entry.param.detach()), entry.name)
    except (TypeError, ValueError) as err:
        raise type(err)(f"rule {rule.describe()!r} on parameter {entry.name!r}: {err}") from err


def _tensor(array):
    return array.detach().clone() if isinstance(array, torch.Tensor) else torch.as_tensor(array).clone()


def _like(tensor, like):
    """``tensor`` on the device and dtype of ``like`` (a tensor or numpy array)."""
    if isinstance(like, torch.Tensor):
        return tensor.to(device=like.device, dtype=like.dtype)
    return tensor.cpu().numpy().astype(like.dtype)
