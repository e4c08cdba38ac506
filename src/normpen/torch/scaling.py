r"""Learning rate and weight decay: the rules that tie them together.

Decoupled decay shrinks a weight by the factor :math:`1 - \eta\lambda` per
step, so the per-step shrink is set by the product :math:`\eta\lambda`. Whether
that product is *all* that matters depends on the weights:

- for weights the loss sees only through their direction (a layer followed by
  batch or layer normalisation, a normalised classifier), training at
  :math:`(\eta', \lambda\eta/\eta')` is training at :math:`(\eta, \lambda)` with the
  weights rescaled, for SGD and AdamW alike, so :func:`rescale_weight_decay`
  keeps the training the same (the ``lr-wd-scaling`` experiment: equal losses
  to rounding);
- for ordinary weights it does not: :math:`\lambda` alone sets the fixed point
  of :math:`\nabla L + \lambda w = 0`, so halving :math:`\lambda` while doubling
  :math:`\eta` keeps the per-step shrink but changes the solution (in that
  experiment's softmax regression the full-data loss moves by about a third,
  with SGD and with AdamW).

Two consequences for the rules here:

- changing the learning rate from :math:`\eta` to :math:`\eta'` keeps the same
  per-step decay only if :math:`\lambda' = \lambda\,\eta/\eta'`
  (:func:`rescale_weight_decay`; the same training only for scale-invariant
  weights);
- under a learning-rate schedule the decay either follows the schedule (the
  AdamW convention: :math:`\eta_t\lambda` per step, ``schedule="follow"``) or
  stays at the product for the base learning rate (:math:`\eta_0\lambda` per
  step, ``schedule="fixed"``), chosen per :class:`~normpen.torch.Rule`.
"""

from __future__ import annotations

from normpen._array import check_nonnegative, check_positive

__all__ = ["SCHEDULES", "rescale_weight_decay", "base_lr", "rule_lr"]

#: How a rule's step size relates to the optimizer's learning rate.
SCHEDULES = ("follow", "fixed")


def rescale_weight_decay(weight_decay, lr_from, lr_to):
    r"""The decay that keeps :math:`\eta\lambda` constant when the learning rate changes.

    .. math:: \lambda_{\text{to}} = \lambda_{\text{from}}\,\frac{\eta_{\text{from}}}{\eta_{\text{to}}}

    Doubling the learning rate halves the decay, so the per-step shrink factor
    :math:`1 - \eta\lambda` of decoupled decay is unchanged. For scale-invariant
    weights that leaves the training unchanged up to a rescaling of the weights;
    for ordinary weights it does not keep the regularised solution, which
    depends on :math:`\lambda` alone (see the module docstring).

    Parameters
    ----------
    weight_decay : float
        The tuned decay :math:`\lambda_{\text{from}} \ge 0`.
    lr_from, lr_to : float
        The learning rate it was tuned for and the new one (both > 0).
    """
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    lr_from = check_positive(lr_from, "lr_from")
    lr_to = check_positive(lr_to, "lr_to")
    return weight_decay * lr_from / lr_to


def base_lr(group):
    """The learning rate a ``schedule="fixed"`` rule keeps for a param group.

    A torch LR scheduler records the learning rate it started from as
    ``group["initial_lr"]``; without a scheduler it is the group's current
    ``lr`` (read when the optimizer is wrapped).
    """
    return group.get("initial_lr", group["lr"])


def rule_lr(group, schedule, captured_lr):
    """The step size of a rule in this optimizer step: current lr (``"follow"``) or base lr (``"fixed"``).

    ``captured_lr`` is :func:`base_lr` read when the optimizer was wrapped;
    a scheduler attached later still wins through its ``initial_lr``.
    """
    if schedule == "follow":
        return group["lr"]
    return group.get("initial_lr", captured_lr)
