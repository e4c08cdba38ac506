r"""Diagnosing model fit: a λ sweep of an MLP on digits, from overfitting to underfitting.

Seed 004 ("Diagnosing Model Fit with L2 Regularization"): with
:math:`J(\theta) = L(\theta) + \tfrac\lambda2\|W\|^2`, a very small :math:`\lambda`
lets a high-capacity model memorise the training set while its validation loss
first falls and then rises (a growing train/validation gap), a very large
:math:`\lambda` makes both losses high, and the best :math:`\lambda` is the one with the
lowest validation loss.

Set-up
------
A one-hidden-layer ReLU MLP on a small stratified training set of the
digits, one copy per :math:`\lambda` of a log-spaced grid, all from the same
initial weights, each trained full batch with Adam on its own coupled L2
penalty (``Rule(L2(λ), mode="coupled")``, weight matrices only, biases free).

What theory fixes
-----------------
- **Large λ, closed form.** When the penalty dominates, every weight matrix
  is 0 and the network outputs its last bias :math:`b`; the best constant
  logits are the log class frequencies :math:`\pi` of the training set, so the
  training loss is the entropy :math:`H(\pi) = -\sum_k \pi_k\log\pi_k` and the
  validation loss the cross-entropy :math:`-\sum_k q_k\log\pi_k` of the
  validation frequencies :math:`q`. Checked to :math:`2\cdot10^{-3}`.
- **Small λ.** The model interpolates: training loss below 0.02, and the
  validation loss rises by at least 5 % after its minimum during training,
  the overfitting signature; and the gap (validation minus training loss)
  grows as :math:`\lambda` shrinks: it never rises by more than 0.01 from one grid
  point to the next larger one.
- **The chosen λ.** :math:`\lambda^\star = \arg\min` validation loss beats both
  ends of the grid by at least 10 % (:math:`\text{val}(\lambda^\star)/\text{val}(\text{end}) \le 0.9`).
- **Monotone in λ.** For exact minimisers of :math:`J`, the data loss is
  nondecreasing and :math:`\|W\|^2` nonincreasing in :math:`\lambda` (compare
  :math:`J_{\lambda_1}` and :math:`J_{\lambda_2}` at both minimisers). The
  trained models are checked to follow both orders up to a slack of
  :math:`10^{-3}` (loss) and 1 % (norm) between neighbouring grid points, the
  norm's relative to :math:`\max(\|W\|^2, P\eta^2)` with :math:`P` weights and
  learning rate :math:`\eta`: where every weight is 0 in theory Adam hovers
  within about :math:`\eta` of it, and the ratio of two such noise norms (up to
  :math:`10^6` measured) says nothing.
- **Empirical.** The overfitting signature (the rise of the validation
  loss), the growing gap and :math:`\lambda^\star` beating the smallest
  :math:`\lambda` by 10 % are effects of one draw; they are labelled with their
  pass rates over the 30-seed sweep (0.97, 0.97, 0.90).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import xlogy

from normpen._threads import single_threaded
from normpen.experiments.base import Check, Experiment, Result, Verdict
from normpen.experiments.common import cross_entropy, digits_split, mlp
from normpen.penalties.l2 import L2
from normpen.torch import Regularizer, Rule

__all__ = [
    "EXPERIMENT",
    "constant_prediction_losses",
    "Sweep",
    "train_sweep",
    "run",
]


def constant_prediction_losses(y_train, y_val, n_classes):
    r"""Train and validation loss of the best constant prediction, the training class frequencies.

    :math:`H(\pi) = -\sum_k \pi_k \log \pi_k` and :math:`-\sum_k q_k \log \pi_k`, with
    :math:`\pi` and :math:`q` the class frequencies of the training and validation labels.
    """
    pi = np.bincount(y_train.numpy(), minlength=n_classes) / y_train.numel()
    q = np.bincount(y_val.numpy(), minlength=n_classes) / y_val.numel()
    # xlogy: 0 log 0 = 0, and a validation class unseen in training makes the cross-entropy infinite
    return float(-xlogy(pi, pi).sum()), float(-xlogy(q, pi).sum())


@dataclass(frozen=True)
class _Size:
    n_train: int
    hidden: int
    n_steps: int
    n_lams: int
    record_every: int


_SIZES = {
    True: _Size(n_train=150, hidden=48, n_steps=200, n_lams=7, record_every=10),
    False: _Size(n_train=150, hidden=64, n_steps=400, n_lams=11, record_every=10),
}
#: The λ grid: log-spaced from the smallest (overfitting) to the largest (all weights 0).
LAMBDA_RANGE = (1e-5, 1.0)
_LR = 1e-2
#: Slack of the closed forms at large λ (Adam hovers within ~lr of the zero weights; measured ≤ 1e-7).
_CLOSED_FORM_TOL = 2e-3
#: Memorised: training cross-entropy ≤ 0.02 (measured 0.001-0.002 over 30 seeds).
_INTERPOLATION_LOSS = 0.02
#: Empirical effects of one draw of data and weights, with their pass rates over the 30-seed quick sweep.
_VAL_RISE, _VAL_RISE_RATE = 0.05, 29 / 30
_BEAT_ENDS, _BEAT_SMALLEST_RATE = 0.9, 27 / 30
_MONOTONE_GAP_TOL, _MONOTONE_GAP_RATE = 0.01, 29 / 30
#: The trained models are not exact minimisers: slack 1e-3 (the drop measured ≤ 4e-5 over 30 seeds).
_MONOTONE_LOSS_TOL = 1e-3
#: Relative slack of the norm order (rises measured ≤ −10 % over 30 seeds) ...
_MONOTONE_NORM_RTOL = 0.01
#: ... relative to ‖W‖² floored at P·lr²: at large λ every weight is 0 in theory and Adam hovers within
#: about lr of it, so ‖W‖² is noise of that size and a ratio of two such norms means nothing.


@dataclass(frozen=True)
class Sweep:
    """Training records of the λ sweep.

    Attributes
    ----------
    lams : ndarray of shape (K,)
        The grid, increasing.
    steps : ndarray of shape (T,)
        The steps at which the losses were recorded.
    train_curves, val_curves : ndarray of shape (T, K)
        Training and validation cross-entropy of each model along training.
    sq_norms : ndarray of shape (K,)
        Final :math:`\\|W\\|^2` (weight matrices) of each model.
    """

    lams: np.ndarray
    steps: np.ndarray
    train_curves: np.ndarray
    val_curves: np.ndarray
    sq_norms: np.ndarray

    @property
    def train(self):
        """Final training loss per λ."""
        return self.train_curves[-1]

    @property
    def val(self):
        """Final validation loss per λ."""
        return self.val_curves[-1]

    @property
    def best(self):
        """Index of :math:`\\lambda^\\star`, the smallest final validation loss."""
        return int(np.argmin(self.val))


def train_sweep(split, widths, lams, n_steps, record_every, seed):
    r"""Train one MLP per :math:`\lambda` (same initial weights), each on :math:`L + \tfrac\lambda2\|W\|^2`.

    The copies live in one ``ModuleList``, with one coupled L2 rule per copy,
    and are trained together: Adam acts elementwise and the losses are summed,
    so this is exactly ``len(lams)`` independent full-batch runs.
    """
    template = mlp(widths, seed)
    models = torch.nn.ModuleList([copy.deepcopy(template) for _ in lams])
    rules = [Rule(L2(float(lam)), mode="coupled", select=f"{k}.*") for k, lam in enumerate(lams)]
    reg = Regularizer(models, rules)
    optimizer = reg.wrap(torch.optim.Adam(models.parameters(), lr=_LR))
    steps, train_curves, val_curves = [], [], []
    for step in range(n_steps + 1):
        if step % record_every == 0 or step == n_steps:
            steps.append(step)
            train_curves.append([cross_entropy(m, split.X_train, split.y_train) for m in models])
            val_curves.append([cross_entropy(m, split.X_val, split.y_val) for m in models])
        if step == n_steps:
            break
        optimizer.zero_grad(set_to_none=True)
        losses = [torch.nn.functional.cross_entropy(m(split.X_train), split.y_train) for m in models]
        (sum(losses) + reg.penalty()).backward()
        optimizer.step()
    sq_norms = [sum(float(p.detach().square().sum()) for p in m.parameters() if p.ndim == 2) for m in models]
    return Sweep(
        np.asarray(lams), np.array(steps), np.array(train_curves), np.array(val_curves), np.array(sq_norms)
    )


def _checks(sweep, constant_train, constant_val, n_weights):
    best, last = sweep.best, len(sweep.lams) - 1
    hover = n_weights * _LR**2
    small_curve = sweep.val_curves[:, 0]
    gap = sweep.val - sweep.train
    return [
        Check.close(
            "largest λ: train loss − H(π_train) (all weights 0)",
            sweep.train[last] - constant_train,
            0.0,
            atol=_CLOSED_FORM_TOL,
        ),
        Check.close(
            "largest λ: val loss − cross-entropy(q_val, π_train)",
            sweep.val[last] - constant_val,
            0.0,
            atol=_CLOSED_FORM_TOL,
        ),
        Check.at_most("smallest λ: train loss (memorised)", sweep.train[0], _INTERPOLATION_LOSS),
        Check.at_least(
            "smallest λ: rise of val loss after its minimum in training (relative)",
            small_curve[-1] / small_curve.min() - 1.0,
            _VAL_RISE,
            pass_rate=_VAL_RISE_RATE,
        ),
        Check.at_most(
            "largest rise of the gap (val − train) as λ grows",
            float(np.max(gap[1:] - gap[:-1])),
            0.0,
            atol=_MONOTONE_GAP_TOL,
            pass_rate=_MONOTONE_GAP_RATE,
        ),
        Check.at_most(
            "val(λ*) / val(smallest λ)",
            sweep.val[best] / sweep.val[0],
            _BEAT_ENDS,
            pass_rate=_BEAT_SMALLEST_RATE,
        ),
        # measured 0.09-0.16 over 30 seeds: λ* beats the all-zero network by a factor 6
        Check.at_most("val(λ*) / val(largest λ)", sweep.val[best] / sweep.val[last], _BEAT_ENDS),
        Check.at_most(
            "largest drop of train loss as λ grows (nondecreasing in theory)",
            float(np.max(sweep.train[:-1] - sweep.train[1:])),
            0.0,
            atol=_MONOTONE_LOSS_TOL,
        ),
        Check.at_most(
            "largest rise of ‖W‖² as λ grows / max(‖W‖², P·lr²) (nonincreasing in theory)",
            float(np.max(np.diff(sweep.sq_norms) / np.maximum(sweep.sq_norms[:-1], hover))),
            0.0,
            atol=_MONOTONE_NORM_RTOL,
        ),
    ]


def _figure(sweep, constant_train, constant_val):
    """Left: final train/val loss against λ. Right: validation loss along training at three λ."""
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    best = sweep.best
    left.plot(sweep.lams, sweep.train, "o-", color="C0", label="train loss")
    left.plot(sweep.lams, sweep.val, "s-", color="C1", label="validation loss")
    left.axhline(constant_train, color="C0", ls=":", lw=1.0, label="H(π_train): all weights 0")
    left.axhline(constant_val, color="C1", ls=":", lw=1.0, label="val loss of π_train")
    left.axvline(sweep.lams[best], color="black", ls="--", lw=1.0, label=f"λ* = {sweep.lams[best]:.2g}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("λ")
    left.set_ylabel("cross-entropy")
    left.set_title("overfit (small λ) ← → underfit (large λ)", fontsize=10)
    left.legend(frameon=False, fontsize=8)
    shown = ((0, "smallest λ"), (best, "λ*"), (len(sweep.lams) - 1, "largest λ"))
    for i, (k, label) in enumerate(shown):
        color = f"C{i + 2}"
        right.plot(
            sweep.steps, sweep.val_curves[:, k], color=color, label=f"val, {label} = {sweep.lams[k]:.2g}"
        )
        right.plot(sweep.steps, sweep.train_curves[:, k], color=color, ls="--", lw=1.0)
    right.plot([], [], color="gray", ls="--", lw=1.0, label="train (dashed)")
    right.set_yscale("log")
    right.set_xlabel("Adam step (full batch)")
    right.set_ylabel("cross-entropy")
    right.set_title("learning curves: the val loss of the smallest λ turns up", fontsize=10)
    right.legend(frameon=False, fontsize=8)
    return fig


def run(quick: bool, seed: int) -> Result:
    """Train the λ sweep on digits and check the three regimes against theory."""
    size = _SIZES[bool(quick)]
    split = digits_split(size.n_train, seed)
    lams = np.geomspace(*LAMBDA_RANGE, size.n_lams)
    with single_threaded():
        sweep = train_sweep(split, (64, size.hidden, 10), lams, size.n_steps, size.record_every, seed)
    constant_train, constant_val = constant_prediction_losses(split.y_train, split.y_val, 10)
    notes = (
        f"MLP 64-{size.hidden}-10 (ReLU), {split.y_train.numel()} training and {split.y_val.numel()} "
        f"validation digits (stratified), {size.n_steps} full-batch Adam steps (lr {_LR:g}) on "
        f"CE + λ/2‖W‖² for {size.n_lams} log-spaced λ in [{LAMBDA_RANGE[0]:g}, {LAMBDA_RANGE[1]:g}], "
        f"same initial weights; λ* = {sweep.lams[sweep.best]:.3g}."
    )
    return Result(
        checks=_checks(sweep, constant_train, constant_val, 64 * size.hidden + size.hidden * 10),
        figures={"lambda-sweep": _figure(sweep, constant_train, constant_val)},
        notes=notes,
    )


EXPERIMENT = Experiment(
    name="diagnosing-fit",
    title="Diagnosing fit: a λ sweep from overfitting to underfitting",
    seed_section="004 Diagnosing Model Fit with L2 Regularization",
    claim=(
        "A small λ lets an MLP memorise the training set with a growing train/validation gap, a large λ "
        "drives every weight to 0 so both losses reach the constant-prediction values, and the λ with the "
        "lowest validation loss beats both ends."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "confirmed",
        "The largest λ reaches the constant-prediction losses exactly, the smallest memorises the training "
        'set, and λ* beats both; the text\'s "might" is apt: the validation loss of the smallest λ turns '
        "up on 29 of 30 seeds, and the gap grows monotonically as λ shrinks on 29 of 30.",
    ),
)
