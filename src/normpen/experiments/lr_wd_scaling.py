r"""Harmonizing hyperparameters: for scale-invariant weights only the product :math:`\alpha\lambda` matters.

Seed 000 ("Harmonizing Hyperparameters") says that doubling the learning rate
:math:`\alpha` and halving the weight decay :math:`\lambda` keeps the same
effective regularisation, for SGD and for AdamW alike. This module states when
that is exactly true, and checks it.

When it holds
-------------
Take weights :math:`w` on which the loss depends only through their direction,
:math:`L(cw) = L(w)` for all :math:`c > 0`: a layer followed by batch or layer
normalisation, or, here, a softmax classifier with normalised weights,

.. math:: L(W) = \operatorname{CE}\big(\tau\,X W / \|W\|_F,\; y\big).

Then :math:`\nabla L(cw) = \nabla L(w)/c` and :math:`\langle \nabla L(w), w\rangle = 0`.
One step of SGD with weight decay, :math:`w \leftarrow (1-\alpha\lambda)w - \alpha\nabla L(w)`,
written for :math:`w' = w/c`, reads
:math:`w' \leftarrow (1-\alpha\lambda)w' - (\alpha/c^2)\nabla L(w')`: the run
:math:`(\alpha, \lambda)` from :math:`w_0` *is* the run
:math:`(\alpha/c^2, \lambda c^2)` from :math:`w_0/c`, scaled by :math:`c`. Only
the product :math:`\alpha\lambda` survives. AdamW's step
:math:`\hat m/(\sqrt{\hat v} + \epsilon)` does not change when the gradient is
scaled (exactly for :math:`\epsilon = 0`, which we use; to a relative
:math:`\epsilon/\sqrt{\hat v}` otherwise),
so there the run is :math:`(\alpha/c, \lambda c)` on :math:`w/c`. In both
cases, with :math:`\alpha' = 2\alpha` and :math:`\lambda' = \lambda/2`:

.. math::

    w_k^{(2\alpha,\,\lambda/2)} = s\,w_k^{(\alpha,\,\lambda)} \text{ for every step } k
    \text{ when started from } s\,w_0, \qquad
    s = 2^{1/(1+q)} = \begin{cases}\sqrt2 & \text{SGD } (q = 1)\\ 2 & \text{AdamW } (q = 0)\end{cases}

with :math:`q` the degree of the step in the gradient. The losses agree at
every step, and the weight norms agree in the unit the learning rate sets,
:math:`\|w\|/\alpha^{1/(1+q)}`; the raw norms differ by exactly :math:`s`, so the
claim "matching weight norms" is true in that unit and not otherwise. The pair
:math:`(2\alpha, \lambda)` doubles :math:`\alpha\lambda` and lands elsewhere.

From the *same* :math:`w_0`, the decay :math:`(1-\alpha\lambda)^k` forgets the
initial scale within a few multiples of :math:`1/(\alpha\lambda)` steps, and on
the same minibatches the two runs then meet the same trajectory: their losses
match at the end and their norms stand in the ratio :math:`s`.

It fails when the weights are not scale invariant (the usual unnormalised
layer: then :math:`\lambda` alone sets the fixed point of
:math:`\nabla L + \lambda w = 0`), when the decay does not scale with the
learning rate, and for Adam with an L2 term in the gradient (which is not
scaled like the data gradient), which is why AdamW's decoupled decay matters.
The text says the rule "holds with surprising generality across optimizers";
it holds across optimizers only for scale-invariant weights. The experiment
shows the failure on ordinary weights: the same classifier without the
normalisation, logits :math:`\tau XW`
(:func:`ordinary_softmax_losses`), trained at :math:`(\alpha, \lambda)` and
:math:`(2\alpha, \lambda/2)` from the same :math:`w_0` on the same minibatches, ends
at a different loss: the fixed point of :math:`\nabla L + \lambda w = 0` is set by
:math:`\lambda`, and halving it lets the weights grow and fit the training data
more closely.

Checks (per optimizer)
----------------------
From :math:`s\,w_0`: the largest relative loss difference over all steps and
the largest deviation of the norm ratio from :math:`s` are 0 up to rounding
(:math:`10^{-8}`). From the same :math:`w_0`: the end losses (mean over the
last quarter of the steps) differ by at most 1 %, and the end norm ratio
(mean over the last tenth) is :math:`s` within 2 %; the run :math:`(2\alpha, \lambda)` ends with a loss that
differs from :math:`(\alpha, \lambda)`'s by at least 5 standard errors
(paired, batch means over the last quarter). Ordinary weights: the full-data
loss of the iterate average (weights averaged over the last quarter of the
steps, which removes most of the minibatch noise) of :math:`(2\alpha, \lambda/2)`
differs from :math:`(\alpha, \lambda)`'s by more than the 1 % within which the
scale-invariant runs agree (measured: 26 % to 38 % for SGD, 34 % to 39 % for
AdamW over seeds 0–29).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from normpen._threads import single_threaded
from normpen.datasets import load
from normpen.experiments.base import Check, Experiment, Result, Verdict
from normpen.torch.scaling import rescale_weight_decay

__all__ = [
    "EXPERIMENT",
    "OPTIMIZERS",
    "OptimizerSetting",
    "Runs",
    "equivalent_scale",
    "normalized_softmax_losses",
    "ordinary_softmax_losses",
    "train_runs",
    "run",
]

#: Inverse temperature :math:`\tau` of the normalised softmax classifier.
TEMPERATURE = 2.0
_BATCH = 64
#: Slack of the exact-equivalence checks (float64 rounding accumulated over the run).
_ROUNDOFF = 1e-8
#: Relative end-loss difference allowed between runs of the same :math:`\alpha\lambda` from the same start.
_MATCH = 0.01
#: Relative deviation of the end norm ratio from :math:`s` allowed from the same start.
_NORM_MATCH = 0.02
#: Standard errors by which :math:`(2\alpha, \lambda)` must differ from :math:`(\alpha, \lambda)`.
_SEPARATION = 5.0


@dataclass(frozen=True)
class OptimizerSetting:
    r"""An optimizer and the base :math:`(\alpha, \lambda)` it is run at.

    Attributes
    ----------
    factory : callable
        ``factory(param_groups)`` builds the optimizer; each group has its own ``lr`` and ``weight_decay``.
    lr, weight_decay : float
        The base pair :math:`(\alpha, \lambda)`.
    gradient_degree : int
        Degree :math:`q` of the step in the gradient (1 for SGD, 0 for Adam-type steps).
    """

    factory: object
    lr: float
    weight_decay: float
    gradient_degree: int


def _adamw(groups):
    r"""AdamW with :math:`\epsilon = 0`, so its step is exactly invariant to the gradient's scale."""
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=0.0)


#: The optimizers the claim is checked for; :math:`\alpha\lambda = 0.02` for both.
OPTIMIZERS = {
    "SGD": OptimizerSetting(torch.optim.SGD, lr=0.5, weight_decay=0.04, gradient_degree=1),
    "AdamW": OptimizerSetting(_adamw, lr=0.02, weight_decay=1.0, gradient_degree=0),
}


@dataclass(frozen=True)
class _Size:
    n_steps: int


_SIZES = {True: _Size(n_steps=600), False: _Size(n_steps=2500)}


def equivalent_scale(lr_ratio: float, gradient_degree: int) -> float:
    r"""The factor :math:`s = (\alpha'/\alpha)^{1/(1+q)}` between equivalent runs of scale-invariant weights.

    The run :math:`(\alpha', \lambda\alpha/\alpha')` started from :math:`s w_0`
    equals :math:`s` times the run :math:`(\alpha, \lambda)` from :math:`w_0`
    when the optimizer's step has degree :math:`q` in the gradient (SGD: 1,
    Adam: 0); see the module docstring.
    """
    return float(lr_ratio) ** (1.0 / (1.0 + gradient_degree))


def normalized_softmax_losses(weights: torch.Tensor, X: torch.Tensor, y: torch.Tensor, temperature: float):
    r"""Mean cross-entropy of :math:`\tau X W_r/\|W_r\|_F` for a stack of weight matrices :math:`W_r`.

    ``weights`` has shape ``(R, d, K)``; returns the ``R`` losses. Each is
    invariant to the scale of its :math:`W_r`.
    """
    directions = weights / torch.linalg.vector_norm(weights, dim=(1, 2), keepdim=True)
    logits = temperature * torch.einsum("bd,rdk->rbk", X, directions)
    per_sample = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.repeat(weights.shape[0]), reduction="none"
    )
    return per_sample.view(weights.shape[0], -1).mean(dim=1)


def ordinary_softmax_losses(weights: torch.Tensor, X: torch.Tensor, y: torch.Tensor, temperature: float):
    r"""Mean cross-entropy of :math:`\tau X W_r` for a stack of weight matrices; not scale invariant.

    ``weights`` has shape ``(R, d, K)``; returns the ``R`` losses.
    """
    logits = temperature * torch.einsum("bd,rdk->rbk", X, weights)
    per_sample = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.repeat(weights.shape[0]), reduction="none"
    )
    return per_sample.view(weights.shape[0], -1).mean(dim=1)


#: The runs of each optimizer: label, learning-rate factor, weight-decay rule, start scaled by s?
_RUNS = (
    ("(α, λ)", 1.0, "same", False),
    ("(2α, λ/2) from s·w₀", 2.0, "rescaled", True),
    ("(2α, λ/2)", 2.0, "rescaled", False),
    ("(2α, λ)", 2.0, "same", False),
)
#: The runs on ordinary weights: the base pair and the rescaled pair from the same start.
_ORDINARY_RUNS = (_RUNS[0], _RUNS[2])


@dataclass(frozen=True)
class Runs:
    """Per-step minibatch losses and weight norms of the runs of one optimizer (by default :data:`_RUNS`).

    Attributes
    ----------
    losses, norms : ndarray of shape (n_steps, n_runs)
    lrs : ndarray of shape (n_runs,)
    scale : float
        The factor :math:`s` of :func:`equivalent_scale`.
    tail_weights : ndarray of shape (n_runs, d, K)
        Each run's weights averaged over the last quarter of the steps (the
        iterate average, which removes most of the minibatch noise).
    """

    losses: np.ndarray
    norms: np.ndarray
    lrs: np.ndarray
    scale: float
    tail_weights: np.ndarray


def _data():
    r"""Digits without their constant pixels, standardised, as float64 tensors.

    A constant pixel would give its weights a gradient that is exactly 0 at
    every step, and AdamW with :math:`\epsilon = 0` a 0/0 step.
    """
    data = load("digits")
    X = data.X[:, data.X.std(axis=0) > 0]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return torch.from_numpy(X), torch.from_numpy(data.y.astype(np.int64))


def _param_groups(setting, start, scale, runs):
    """One parameter group per run of ``runs``, with its learning rate, decay and start."""
    groups = []
    for _, lr_factor, decay_rule, scaled_start in runs:
        lr = setting.lr * lr_factor
        decay = setting.weight_decay
        if decay_rule == "rescaled":
            decay = rescale_weight_decay(decay, setting.lr, lr)
        param = torch.nn.Parameter(start * (scale if scaled_start else 1.0))
        groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return groups


def train_runs(settings, X, y, start, batches, loss_function, runs=_RUNS):
    r"""Train the ``runs`` of every optimizer on the same minibatches; a :class:`Runs` per optimizer.

    ``loss_function(weights, X, y, temperature)`` maps a stack of weight matrices to
    their minibatch losses (:func:`normalized_softmax_losses`,
    :func:`ordinary_softmax_losses`). All runs share one forward and backward
    pass per step (their losses are summed; each weight gets only its own
    gradient), each optimizer holds one parameter group per run.
    """
    optimizers, params = {}, []
    for name, setting in settings.items():
        groups = _param_groups(setting, start, equivalent_scale(2.0, setting.gradient_degree), runs)
        optimizers[name] = setting.factory(groups)
        params.extend(group["params"][0] for group in groups)
    n_steps, n_runs = batches.shape[0], len(params)
    losses = torch.empty(n_steps, n_runs, dtype=X.dtype)
    norms = torch.empty(n_steps, n_runs, dtype=X.dtype)
    tail_start = 3 * n_steps // 4
    tail_sum = torch.zeros(n_runs, *start.shape, dtype=X.dtype)
    for k, batch in enumerate(batches):
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        stacked = torch.stack(params)
        step_losses = loss_function(stacked, X[batch], y[batch], TEMPERATURE)
        step_losses.sum().backward()
        for optimizer in optimizers.values():
            optimizer.step()
        losses[k] = step_losses.detach()
        norms[k] = torch.linalg.vector_norm(torch.stack(params).detach(), dim=(1, 2))
        if k >= tail_start:
            tail_sum += torch.stack(params).detach()
    out, n = {}, len(runs)
    for i, (name, setting) in enumerate(settings.items()):
        cols = slice(i * n, (i + 1) * n)
        out[name] = Runs(
            losses=losses[:, cols].numpy(),
            norms=norms[:, cols].numpy(),
            lrs=np.array([g["lr"] for g in optimizers[name].param_groups]),
            scale=equivalent_scale(2.0, setting.gradient_degree),
            tail_weights=(tail_sum[cols] / (n_steps - tail_start)).numpy(),
        )
    return out


def _batch_mean_z(difference: np.ndarray, n_blocks: int = 10) -> float:
    """Mean of a (correlated) series over its standard error, estimated from ``n_blocks`` batch means."""
    means = np.array([block.mean() for block in np.array_split(difference, n_blocks)])
    se = means.std(ddof=1) / math.sqrt(n_blocks)
    if se == 0:
        return math.inf if means.mean() != 0 else 0.0
    return float(abs(means.mean()) / se)


def _checks(name: str, runs: Runs) -> list[Check]:
    base, scaled, same_start, doubled = range(4)
    L, N, s = runs.losses, runs.norms, runs.scale
    tail = slice(3 * L.shape[0] // 4, None)
    last = slice(9 * L.shape[0] // 10, None)
    end = L[tail].mean(axis=0)
    return [
        Check.close(
            f"{name}: (2α, λ/2) from s·w₀, max relative loss difference over all steps",
            float(np.max(np.abs(L[:, scaled] - L[:, base]) / L[:, base])),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.close(
            f"{name}: (2α, λ/2) from s·w₀, max |‖w‖ ratio / s − 1|",
            float(np.max(np.abs(N[:, scaled] / N[:, base] / s - 1.0))),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.close(
            f"{name}: (2α, λ/2) from w₀, relative end-loss difference",
            float(abs(end[same_start] / end[base] - 1.0)),
            0.0,
            atol=_MATCH,
        ),
        Check.close(
            f"{name}: (2α, λ/2) from w₀, end ‖w‖ ratio / s",
            float(np.mean(N[last, same_start] / N[last, base]) / s),
            1.0,
            atol=_NORM_MATCH,
        ),
        Check.at_least(
            f"{name}: (2α, λ) from w₀, end-loss difference in standard errors",
            _batch_mean_z(L[tail, doubled] - L[tail, base]),
            _SEPARATION,
        ),
    ]


def _ordinary_checks(name: str, runs: Runs, X: torch.Tensor, y: torch.Tensor) -> list[Check]:
    base, rescaled = ordinary_softmax_losses(torch.from_numpy(runs.tail_weights), X, y, TEMPERATURE).numpy()
    return [
        Check.at_least(
            f"{name}, ordinary weights: (2α, λ/2) vs (α, λ), relative full-data loss gap (iterate average)",
            float(abs(rescaled / base - 1.0)),
            _MATCH,
        ),
    ]


def _smooth(series: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` steps along axis 0 (valid part only)."""
    kernel = np.ones(width) / width
    return np.stack([np.convolve(col, kernel, mode="valid") for col in series.T], axis=1)


def _figure(all_runs: dict[str, Runs], ordinary: dict[str, Runs]) -> Figure:
    """Loss, norm in learning-rate units, and the ordinary weights' loss; one column per optimizer."""
    fig = Figure(figsize=(12, 10), layout="constrained")
    axes = fig.subplots(3, len(all_runs), sharex=True, squeeze=False)
    styles = [
        {"lw": 2.4, "color": "C0"},
        {"lw": 1.0, "color": "black", "ls": "--"},
        {"lw": 1.4, "color": "C1"},
        {"lw": 1.4, "color": "C3"},
    ]
    for col, (name, runs) in enumerate(all_runs.items()):
        width = max(1, runs.losses.shape[0] // 40)
        steps = np.arange(runs.losses.shape[0])[width - 1 :]
        exponent = math.log(runs.scale) / math.log(2.0)
        lr_units = runs.norms / runs.lrs[None, :] ** exponent
        for j, (label, *_rest) in enumerate(_RUNS):
            axes[0, col].plot(steps, _smooth(runs.losses, width)[:, j], label=label, **styles[j])
            axes[1, col].plot(lr_units[:, j], label=label, **styles[j])
        axes[0, col].set_title(f"{name}: minibatch loss (moving average of {width} steps)", fontsize=10)
        axes[1, col].set_title(f"{name}: ‖W‖ / α^{exponent:g} (norm in learning-rate units)", fontsize=10)
        axes[1, col].set_yscale("log")
        plain = ordinary[name]
        for j, (label, *_rest) in enumerate(_ORDINARY_RUNS):
            style = styles[_RUNS.index(_ORDINARY_RUNS[j])]
            axes[2, col].plot(steps, _smooth(plain.losses, width)[:, j], label=label, **style)
        axes[2, col].set_title(f"{name}, ordinary weights (logits τ·XW): minibatch loss", fontsize=10)
        axes[2, col].set_xlabel("step")
    axes[0, 0].legend(frameon=False, fontsize=9)
    axes[2, 0].legend(frameon=False, fontsize=9)
    return fig


def run(quick: bool, seed: int) -> Result:
    """Train the four runs per optimizer on digits and check the αλ equivalence."""
    X, y = _data()
    generator = torch.Generator().manual_seed(seed)
    n_steps = _SIZES[bool(quick)].n_steps
    batches = torch.randint(0, X.shape[0], (n_steps, _BATCH), generator=generator)
    n_classes = int(y.max()) + 1
    start = torch.randn(X.shape[1], n_classes, generator=generator, dtype=X.dtype) / math.sqrt(X.shape[1])
    with single_threaded():
        all_runs = train_runs(OPTIMIZERS, X, y, start, batches, normalized_softmax_losses)
        ordinary = train_runs(OPTIMIZERS, X, y, start, batches, ordinary_softmax_losses, _ORDINARY_RUNS)
    checks = [check for name, runs in all_runs.items() for check in _checks(name, runs)]
    checks += [check for name, runs in ordinary.items() for check in _ordinary_checks(name, runs, X, y)]
    settings = "; ".join(f"{name}: α = {s.lr:g}, λ = {s.weight_decay:g}" for name, s in OPTIMIZERS.items())
    notes = (
        f"Softmax regression with normalised weights, logits τ·XW/‖W‖_F (τ = {TEMPERATURE:g}), on the "
        f"{X.shape[0]} standardised digits; {n_steps} minibatch steps of {_BATCH}, the same batches for "
        f"every run. {settings} (αλ = 0.02); s = √2 for SGD, 2 for AdamW. Ordinary weights: the same "
        "classifier with logits τ·XW, the same runs (α, λ) and (2α, λ/2)."
    )
    return Result(checks=checks, figures={"runs": _figure(all_runs, ordinary)}, notes=notes)


EXPERIMENT = Experiment(
    name="lr-wd-scaling",
    title="Harmonizing hyperparameters: only α·λ matters for scale-invariant weights",
    seed_section="000 Harmonizing Hyperparameters",
    claim=(
        "For weights the loss sees only through their direction, training at (2α, λ/2) is training at "
        "(α, λ) with the weights scaled by s (√2 for SGD, 2 for AdamW): equal losses and equal norms in "
        "learning-rate units at every step, while (2α, λ) ends elsewhere; for ordinary weights (2α, λ/2) "
        "ends elsewhere too."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "narrowed",
        "Only α·λ matters for weights the loss sees through their direction (a layer before batch or layer "
        "norm): there (2α, λ/2) is (α, λ) rescaled, for SGD and AdamW alike. For ordinary weights λ alone "
        "sets the fixed point of ∇L + λw = 0, and (2α, λ/2) ends at a full-data loss about a third away "
        "from (α, λ)'s, for both optimizers: the rule does not hold 'with surprising generality'.",
        evidence=(
            "SGD: (2α, λ/2) from w₀, relative end-loss difference",
            "AdamW: (2α, λ/2) from w₀, relative end-loss difference",
            "SGD, ordinary weights: (2α, λ/2) vs (α, λ), relative full-data loss gap (iterate average)",
            "AdamW, ordinary weights: (2α, λ/2) vs (α, λ), relative full-data loss gap (iterate average)",
        ),
    ),
)
