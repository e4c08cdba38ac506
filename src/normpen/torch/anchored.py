r"""Anchored penalties for fine-tuning and continual learning: L2-SP, EWC and the Fisher diagonal.

Both pull the weights toward an anchor :math:`a` (the pre-trained weights, or
the weights after an earlier task) with the penalty
:math:`\tfrac{\lambda}{2}\sum_i F_i(\theta_i - a_i)^2`
(:class:`~normpen.penalties.anchored.Anchored`, one per tensor):

- L2-SP (Li et al., 2018): :math:`F = 1`, :func:`l2_sp`;
- EWC (Kirkpatrick et al., 2017): :math:`F` the diagonal of the Fisher
  information of the earlier task, :func:`fisher_diagonal` and :func:`ewc`.

Both give a :class:`~normpen.torch.Rule`, coupled (the term in the loss),
decoupled (the pull :math:`\theta \leftarrow \theta - \eta\lambda F(\theta - a)`
before each step) or proximal (:math:`a + (\theta - a)/(1 + \eta\lambda F)`
after it). :meth:`~normpen.torch.Regularizer.state_dict` carries the anchors
and Fisher weights, so a resumed run keeps the original anchor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from rich.progress import Progress
from torch.func import functional_call, grad, vmap

from normpen._array import check_nonnegative
from normpen.penalties.anchored import Anchored
from normpen.torch.distributed import all_reduce_sum_, unwrap_model
from normpen.torch.kernels import in_layout
from normpen.torch.rules import Rule, choose_entries, layout_of, parameter_entries

__all__ = ["fisher_diagonal", "l2_sp", "ewc", "VARIANTS"]

#: How :func:`fisher_diagonal` forms the squared gradients.
VARIANTS = ("per_sample", "batch")


def fisher_diagonal(
    model,
    data,
    loss_fn,
    *,
    select=None,
    candidates="weights",
    variant="per_sample",
    max_batches=None,
    progress=True,
):
    r"""Diagonal of the empirical Fisher information of ``model`` on ``data``.

    .. math:: F_i = \frac1N \sum_{n=1}^N
                    \Big(\frac{\partial \ell(f_\theta(x_n), y_n)}{\partial\theta_i}\Big)^2
       \quad (\texttt{"per\_sample"}), \qquad
       F_i = \frac1B \sum_{b=1}^B \Big(\frac{\partial \bar\ell_b}{\partial\theta_i}\Big)^2
       \quad (\texttt{"batch"})

    ``"per_sample"`` is the empirical Fisher of EWC, from per-sample gradients
    (``torch.func.vmap`` over ``torch.func.grad``, one batched pass per
    batch). ``"batch"`` squares the gradient of each mini-batch's mean loss
    :math:`\bar\ell_b`: one ordinary gradient per batch, cheaper, but an
    estimate of :math:`(\mathbb E\,g)^2 + \operatorname{Var}(g)/|b|` rather than
    :math:`\mathbb E\,g^2`, so it is smaller by about the batch size when the
    per-sample gradients disagree; tune :math:`\lambda` accordingly.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated in ``eval()`` mode (batch-norm statistics frozen, no
        dropout) and restored to its mode afterwards; its parameters are not
        modified and no ``.grad`` is touched.
    data : iterable of (inputs, targets)
        Batches, at least one sample in all; ``inputs`` is a tensor or a
        tuple of tensors with the batch on dimension 0, ``targets`` a tensor. Labels are the given ones (the
        *empirical* Fisher); for the true Fisher pass targets sampled from
        the model.
    loss_fn : callable
        ``loss_fn(outputs, targets) -> 0-d tensor``, the mean over the batch
        (e.g. ``torch.nn.CrossEntropyLoss()``); for ``"per_sample"`` it is
        called on batches of one.
    select, candidates :
        Which parameters get a Fisher diagonal, as in :class:`~normpen.torch.Rule`.
    variant : {"per_sample", "batch"}
    max_batches : int, optional
        Stop after this many batches.
    progress : bool
        Show a rich progress bar.

    Returns
    -------
    dict
        Qualified parameter name -> Fisher diagonal (the parameter's shape,
        dtype and device). Under ``torch.distributed`` the sums and counts are
        reduced over all ranks, so every rank gets the Fisher of the union of
        their data.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    model = unwrap_model(model)
    entries = choose_entries(parameter_entries(model), select, candidates, "fisher_diagonal")
    chosen = {e.name: e.param.detach() for e in entries}
    fixed = {name: p.detach() for name, p in model.named_parameters() if name not in chosen}
    fixed.update(model.named_buffers())
    squared = _squared_gradients(model, chosen, fixed, loss_fn, variant)

    sums = {name: torch.zeros_like(p) for name, p in chosen.items()}
    count = torch.zeros((), dtype=torch.float64, device=next(iter(chosen.values())).device)
    was_training = model.training
    model.eval()
    try:
        with Progress(transient=True, disable=not progress) as bar:
            total = min(len(data), max_batches or len(data)) if hasattr(data, "__len__") else max_batches
            task = bar.add_task("Fisher diagonal", total=total)
            for index, (inputs, targets) in enumerate(data):
                if max_batches is not None and index >= max_batches:
                    break
                inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
                batch, weight = squared(inputs, targets)
                torch._foreach_add_(list(sums.values()), [batch[name] for name in sums])
                count += weight
                bar.advance(task)
    finally:
        model.train(was_training)
    all_reduce_sum_(list(sums.values()) + [count])
    if float(count) == 0:
        raise ValueError(
            "fisher_diagonal: data gave no sample (an empty iterable, or empty batches on every rank); "
            "pass at least one batch of (inputs, targets)"
        )
    return {name: (s / count.to(s.dtype)).to(chosen[name].dtype) for name, s in sums.items()}


def _squared_gradients(model, chosen, fixed, loss_fn, variant):
    """``(inputs, targets) -> ({name: sum of squared gradients}, number of terms)`` for one batch."""

    def loss(params, inputs, targets):
        return loss_fn(functional_call(model, {**fixed, **params}, inputs), targets)

    if variant == "batch":
        batch_grad = grad(loss)

        def squared(inputs, targets):
            g = batch_grad(chosen, inputs, targets)
            return {name: v.detach() ** 2 for name, v in g.items()}, 1

        return squared

    def sample_loss(params, inputs, target):
        batch_of_one = tuple(x.unsqueeze(0) for x in inputs)
        return loss(params, batch_of_one, target.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")

    def squared(inputs, targets):
        g = per_sample(chosen, inputs, targets)
        return {name: (v.detach() ** 2).sum(dim=0) for name, v in g.items()}, targets.shape[0]

    return squared


def l2_sp(model, lam, *, mode="decoupled", select=None, candidates="weights", schedule="follow", label=None):
    r"""L2-SP: a rule pulling the selected weights toward their current values.

    .. math:: P(\theta) = \frac{\lambda}{2}\sum_{\text{tensors}} \|\theta - \theta^0\|^2

    Call it on the pre-trained model before fine-tuning: the anchor
    :math:`\theta^0` is a snapshot (a copy) of each selected weight now. L2-SP
    keeps plain L2 for the new layers (the head): give those a separate
    ``Rule(L2(beta), ..., select="head.*")`` and exclude them here with ``select``.

    Returns
    -------
    Rule
        Per-tensor :class:`~normpen.penalties.anchored.Anchored` penalties,
        ``mode`` ``"decoupled"`` (default), ``"coupled"`` or ``"proximal"``.
    """
    return _anchored_rule(model, lam, None, mode, select, candidates, schedule, label or f"{mode} L2-SP")


def ewc(model, fisher, lam, *, mode="coupled", schedule="follow", label=None):
    r"""EWC: a rule pulling each parameter of ``fisher`` toward its current value, weighted by the Fisher.

    .. math:: P(\theta) = \frac{\lambda}{2}\sum_i F_i(\theta_i - \theta^*_i)^2

    Call it right after training on the earlier task, with
    ``fisher = fisher_diagonal(model, task_data, loss_fn)``: :math:`\theta^*`
    is a snapshot of the current weights. For several earlier tasks, merge
    them into one running Fisher (online EWC, ``F = gamma * F_old + F_new``,
    anchored at the latest weights): two rules of the same mode may not
    claim one tensor.

    Parameters
    ----------
    fisher : mapping
        Qualified parameter name -> nonnegative Fisher diagonal of that
        parameter's shape; its keys are the selection.
    mode : {"coupled", "decoupled", "proximal"}
    """
    if not isinstance(fisher, Mapping) or not fisher:
        raise TypeError("fisher must be a non-empty mapping name -> tensor, as fisher_diagonal returns")
    return _anchored_rule(model, lam, fisher, mode, None, "all", schedule, label or f"{mode} EWC")


def _anchored_rule(model, lam, fisher, mode, select, candidates, schedule, label):
    check_nonnegative(lam, "lam")
    if mode not in ("coupled", "decoupled", "proximal"):
        raise ValueError(f"an anchored rule is 'coupled', 'decoupled' or 'proximal', got mode={mode!r}")
    entries = parameter_entries(unwrap_model(model))
    if fisher is None:
        chosen = choose_entries(entries, select, candidates, "l2_sp")
    else:
        by_name = {e.name: e for e in entries}
        unknown = [name for name in fisher if name not in by_name]
        if unknown:
            raise ValueError(f"fisher has entries for parameters the model does not have: {unknown[:10]}")
        chosen = [by_name[name] for name in fisher]
    penalties = {
        e.name: Anchored(
            lam,
            anchor=_as_seen(e, e.param.detach()),
            fisher=None if fisher is None else _as_seen(e, fisher[e.name]),
        )
        for e in chosen
    }
    return Rule(penalties, mode=mode, schedule=schedule, label=label)


def _as_seen(entry, tensor):
    """``tensor``, shaped like ``entry``'s parameter, in the layout the regularizer hands the parameter's
    penalty (:func:`~normpen.torch.rules.layout_of`): a transformers ``Conv1D`` weight ``(in, out)``
    transposed, fused experts stacked; so an anchor or a Fisher weight meets its own entry."""
    return in_layout(tensor, layout_of(entry))
