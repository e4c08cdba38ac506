"""Training with norm penalties in PyTorch: one declaration, any ``torch.optim`` optimizer.

>>> from normpen.torch import Regularizer, Rule
>>> reg = Regularizer(model, [Rule(L2(1e-2), mode="decoupled")])
>>> opt = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-3))   # now AdamW, bit for bit

Modes: coupled, decoupled, proximal, constrained, lagrangian (see :class:`Rule`);
anchored penalties (:func:`l2_sp`, :func:`ewc`, :func:`fisher_diagonal`);
learning-rate rules (:func:`rescale_weight_decay`). Details in ``docs/torch.md``; with Lightning,
transformers' Trainer, accelerate, DDP, FSDP2 and torch.compile in ``docs/frameworks.md``.
"""

from normpen.torch.anchored import ewc, fisher_diagonal, l2_sp
from normpen.torch.regularizer import STATE_KEY, Regularizer
from normpen.torch.report import Report, Summary
from normpen.torch.rules import EMBEDDINGS, MODES, Rule
from normpen.torch.scaling import rescale_weight_decay

__all__ = [
    "Rule",
    "Regularizer",
    "Report",
    "Summary",
    "STATE_KEY",
    "MODES",
    "EMBEDDINGS",
    "rescale_weight_decay",
    "fisher_diagonal",
    "l2_sp",
    "ewc",
]
