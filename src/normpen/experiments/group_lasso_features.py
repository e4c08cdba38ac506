r"""Group lasso on the first layer drops whole input features; L1 scatters its zeros.

Seed 004 ("Group Sparsity: The L2,1 Norm"): penalising
:math:`\sum_j \omega_j\|w_{:,j}\|_2` over the weights leaving each input feature
makes whole groups exactly zero (group soft thresholding), so irrelevant
input features are removed from the network; L1 zeroes single weights.
(PyTorch stores a layer's weight as ``(out, in)``, so an input feature's
weights are a *column*, ``groups="cols"``; the seed's :math:`d \times m`
matrix has them as rows.)

Set-up
------
The digits, standardised, with pure-noise features appended (independent
:math:`N(0, 1)`, no relation to the label); the irrelevant features are those
and the three pixels that are 0 in every image. A one-hidden-layer ReLU MLP
is trained full batch by proximal gradient descent with heavy-ball momentum:
an SGD step (momentum :math:`\beta`), then
:math:`W_1 \leftarrow \operatorname{prox}_{\eta P}(W_1)`
(``Rule(P, mode="proximal", select="0.weight")``), with
:math:`P = \lambda_r\sum_j \sqrt{h}\,\|w_{:,j}\|_2` (group lasso, :math:`h` hidden units)
or :math:`P = \lambda_r\|W_1\|_1` (L1, the same :math:`\lambda_r`; by Cauchy-Schwarz
:math:`\sqrt h\|w\|_2 \ge \|w\|_1`, so the group penalty is the larger one), and
without penalty as the reference.

At a fixed point the velocity is :math:`v = \nabla L/(1-\beta)`, so
:math:`W_1 = \operatorname{prox}_{\eta P}(W_1 - \eta\nabla L/(1-\beta))`: the stationarity
conditions of :math:`L + (1-\beta)P`, the same :math:`(1-\beta)` as decoupled decay under
momentum (experiment ``coupled-decoupled``). The rule's strength is therefore
:math:`\lambda_r = \lambda/(1-\beta)` for the target :math:`\lambda`.

Checks
------
- the group lasso drops every irrelevant feature (count, exact) and none of
  the ten most informative pixels (ANOVA F on the training set, scikit-learn's
  ``f_classif``), at a validation accuracy no more than 0.02 below the
  unregularised network's (slack 0.03: the ~20 weak pixels it also drops cost a little).
  The two counts are *empirical*: a column is zero exactly while its gradient
  stays below :math:`\lambda\omega_j`, and a noise feature the network has
  fitted on the training set, or a top pixel its neighbours make redundant,
  can cross that line (pass rates over the 30-seed quick sweep: 1.0 and 0.9;
  full mode keeps 2 noise features at seed 9);
- its zeros come in whole columns: the share of zero weights lying in an
  all-zero column is 1 (slack 0.01);
- optimality of every zero column: at a fixed point a column stays 0 exactly
  when :math:`\|\nabla_{w_{:,j}} L\|_2 \le \lambda\omega_j`, checked with a fresh gradient
  at the final weights (ratio at most 1, slack 0.05 for the unfinished run);
- L1 at the same strength zeroes at least as many weights, yet at most half of
  its zeros lie in all-zero columns and it keeps some irrelevant feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.feature_selection import f_classif

from normpen._threads import single_threaded
from normpen.experiments.base import Check, Experiment, Result, Verdict
from normpen.experiments.common import DigitsSplit, digits_split, mlp
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.torch import Regularizer, Rule

__all__ = [
    "EXPERIMENT",
    "PENALTIES",
    "with_noise_features",
    "informative_pixels",
    "train_first_layer",
    "column_gradient_ratio",
    "run",
]

#: Target strength λ of the stationarity conditions; the rule gets λ / (1 − β).
LAM = 8e-3
LR = 0.05
MOMENTUM = 0.9
HIDDEN = 32
N_NOISE = 16
N_INFORMATIVE = 10
N_PIXELS = 64
#: The three first-layer penalties compared, by name.
PENALTIES = {
    "none": None,
    "group lasso": GroupLasso(LAM / (1 - MOMENTUM), groups="cols"),
    "L1": L1(LAM / (1 - MOMENTUM)),
}
#: The group lasso's accuracy may fall this far below the unregularised one (measured ≥ −0.024, 30 seeds).
_ACCURACY_SLACK = 0.03
#: Its zeros lie in whole columns (measured share exactly 1 over 30 seeds).
_SHARE_SLACK = 0.01
#: Zero columns' ‖∇_j L‖/(λω_j) ≤ 1 at a fixed point; the unfinished run reaches ≤ 1.005 (30 seeds).
_STATIONARITY_SLACK = 0.05
#: Pass rate over the 30-seed quick sweep of "no top-10 pixel dropped": on 3 seeds the group lasso drops
#: one of them (ANOVA F ranks pixels one at a time; a pixel its neighbours make redundant can go).
_TOP_PIXELS_RATE = 27 / 30
#: Pass rate of "every irrelevant feature dropped" over the 30-seed quick sweep: it passes on all of them,
#: but it is an effect of the draw: a noise column stays 0 only while ‖∇_j L‖ ≤ λω_j, and a network that
#: fits its training noise longer (full mode, 400 steps) keeps 2 of 20 at seed 9 (1 of 10 full-mode seeds).
_IRRELEVANT_RATE = 30 / 30


@dataclass(frozen=True)
class _Size:
    n_steps: int


_SIZES = {True: _Size(n_steps=200), False: _Size(n_steps=400)}
_N_TRAIN = 1200


def with_noise_features(split: DigitsSplit, n_noise: int, seed: int) -> DigitsSplit:
    """Pixels standardised on the training set (constant pixels stay 0), then ``n_noise`` N(0, 1) columns."""
    mean = split.X_train.mean(dim=0)
    std = split.X_train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    generator = torch.Generator().manual_seed(seed)

    def augment(X):
        noise = torch.randn(X.shape[0], n_noise, generator=generator, dtype=X.dtype)
        return torch.cat([(X - mean) / std, noise], dim=1)

    return DigitsSplit(augment(split.X_train), split.y_train, augment(split.X_val), split.y_val)


def informative_pixels(split: DigitsSplit, k: int) -> np.ndarray:
    """The ``k`` pixels with the largest ANOVA F statistic for the label on the training set."""
    pixels = split.X_train[:, :N_PIXELS].numpy()
    informative = pixels.std(axis=0) > 0
    scores = np.full(N_PIXELS, -np.inf)
    scores[informative] = f_classif(pixels[:, informative], split.y_train.numpy())[0]
    return np.argsort(scores)[::-1][:k]


def train_first_layer(split, penalty, n_steps, seed):
    """Proximal gradient descent on the MLP, ``penalty`` (or none) on the first layer; returns the model."""
    model = mlp((split.X_train.shape[1], HIDDEN, 10), seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    if penalty is not None:
        Regularizer(model, [Rule(penalty, mode="proximal", select="0.weight")]).wrap(optimizer)
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(split.X_train), split.y_train).backward()
        optimizer.step()
    return model


def column_gradient_ratio(model, split, lam):
    r"""Largest :math:`\|\nabla_{w_{:,j}} L\|_2 / (\lambda\omega_j)` over the zero columns of the first layer.

    With :math:`\omega_j = \sqrt h`. At a stationary point of
    :math:`L + \lambda\sum_j\omega_j\|w_{:,j}\|_2` this is at most 1 (0 when no column is zero).
    """
    weight = model[0].weight
    (grad,) = torch.autograd.grad(
        torch.nn.functional.cross_entropy(model(split.X_train), split.y_train), weight
    )
    zero = (weight == 0).all(dim=0)
    if not bool(zero.any()):
        return 0.0
    threshold = lam * math.sqrt(weight.shape[0])
    return float(torch.linalg.vector_norm(grad[:, zero], dim=0).max()) / threshold


def _accuracy(model, split):
    with torch.no_grad():
        return float((model(split.X_val).argmax(dim=1) == split.y_val).double().mean())


@dataclass(frozen=True)
class _Summary:
    weight: np.ndarray
    accuracy: float

    @property
    def zero_columns(self):
        return np.all(self.weight == 0, axis=0)

    @property
    def n_zero(self):
        return int(np.sum(self.weight == 0))

    @property
    def share_in_zero_columns(self):
        """Share of the zero weights that lie in an all-zero column (1 when there is no zero)."""
        if self.n_zero == 0:
            return 1.0
        return float(np.sum(self.weight[:, self.zero_columns] == 0)) / self.n_zero


def _checks(summaries, irrelevant, top_pixels, kkt_ratio):
    none, group, l1 = summaries["none"], summaries["group lasso"], summaries["L1"]
    return [
        Check.equal(
            "group lasso: irrelevant features dropped (all-zero columns)",
            int(np.sum(group.zero_columns[irrelevant])),
            int(irrelevant.size),
            pass_rate=_IRRELEVANT_RATE,
        ),
        Check.equal(
            f"group lasso: top-{top_pixels.size} informative pixels dropped",
            int(np.sum(group.zero_columns[top_pixels])),
            0,
            pass_rate=_TOP_PIXELS_RATE,
        ),
        Check.at_least(
            "group lasso: val accuracy − unregularised val accuracy",
            group.accuracy - none.accuracy,
            0.0,
            atol=_ACCURACY_SLACK,
        ),
        Check.at_least(
            "group lasso: share of zero weights in all-zero columns",
            group.share_in_zero_columns,
            1.0,
            atol=_SHARE_SLACK,
        ),
        Check.at_most(
            "group lasso: max ‖∇_j L‖/(λω_j) over zero columns",
            kkt_ratio,
            1.0,
            atol=_STATIONARITY_SLACK,
        ),
        Check.at_least("L1 / group lasso: zero weights", l1.n_zero / max(group.n_zero, 1), 1.0),
        Check.at_most("L1: share of zero weights in all-zero columns", l1.share_in_zero_columns, 0.5),
        Check.at_least(
            "L1: irrelevant features kept (a nonzero weight)",
            int(np.sum(~l1.zero_columns[irrelevant])),
            1,
        ),
    ]


def _figure(summaries, irrelevant):
    """Top: |W₁| per penalty (white = exact 0). Bottom: column norms, and the pixels kept."""
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    top = fig.subfigures(2, 1, height_ratios=(1.0, 1.1))
    axes = top[0].subplots(1, 3, sharey=True)
    scale = max(float(np.abs(s.weight).max()) for s in summaries.values())
    for ax, (name, summary) in zip(axes, summaries.items(), strict=True):
        shown = np.ma.masked_equal(np.abs(summary.weight), 0.0)
        image = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=0, vmax=scale, interpolation="nearest")
        ax.axvline(N_PIXELS - 0.5, color="red", lw=1.0)
        ax.set_title(
            f"{name}: {summary.n_zero / summary.weight.size:.0%} zeros, "
            f"{int(summary.zero_columns.sum())} features dropped",
            fontsize=10,
        )
        ax.set_xlabel("input feature (pixels | noise →)")
    axes[0].set_ylabel("hidden unit")
    top[0].colorbar(image, ax=axes, label="|weight| (white: exactly 0)", shrink=0.9)
    bottom = top[1].subplots(1, 3, width_ratios=(2.4, 1, 1))
    features = np.arange(summaries["none"].weight.shape[1])
    for k, (name, summary) in enumerate(summaries.items()):
        norms = np.linalg.norm(summary.weight, axis=0)
        bottom[0].semilogy(features, np.where(norms > 0, norms, np.nan), "o", ms=3, color=f"C{k}", label=name)
    for j in irrelevant:
        bottom[0].axvspan(j - 0.5, j + 0.5, color="gray", alpha=0.15, lw=0)
    bottom[0].set_xlabel("input feature (gray: irrelevant; dropped columns not drawn)")
    bottom[0].set_ylabel("column norm ‖w_{:,j}‖₂")
    bottom[0].legend(frameon=False, fontsize=8)
    for ax, name in zip(bottom[1:], ("group lasso", "L1"), strict=True):
        kept = ~summaries[name].zero_columns[:N_PIXELS]
        ax.imshow(kept.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{name}: pixels kept (black)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def run(quick: bool, seed: int) -> Result:
    """Train with no penalty, group lasso and L1 on the first layer; check which features are dropped."""
    split = with_noise_features(digits_split(_N_TRAIN, seed), N_NOISE, seed)
    n_steps = _SIZES[bool(quick)].n_steps
    summaries = {}
    with single_threaded():
        for name, penalty in PENALTIES.items():
            model = train_first_layer(split, penalty, n_steps, seed)
            summaries[name] = _Summary(model[0].weight.detach().numpy().copy(), _accuracy(model, split))
            if name == "group lasso":
                kkt_ratio = column_gradient_ratio(model, split, LAM)
    constant = np.flatnonzero(split.X_train[:, :N_PIXELS].std(dim=0).numpy() == 0)
    irrelevant = np.concatenate([constant, N_PIXELS + np.arange(N_NOISE)])
    top_pixels = informative_pixels(split, N_INFORMATIVE)
    notes = (
        f"{split.y_train.numel()} training / {split.y_val.numel()} validation digits, standardised, plus "
        f"{N_NOISE} N(0, 1) noise features; irrelevant: the noise and the constant pixels "
        f"{', '.join(map(str, constant))}. MLP {split.X_train.shape[1]}-{HIDDEN}-10, {n_steps} full-batch "
        f"proximal gradient steps (SGD lr {LR:g}, momentum β = {MOMENTUM:g}, prox on the first layer), "
        f"λ = {LAM:g} (rule strength λ/(1−β)), ω_j = √{HIDDEN}. "
        f"Val accuracy: none {summaries['none'].accuracy:.3f}, group lasso "
        f"{summaries['group lasso'].accuracy:.3f}, L1 {summaries['L1'].accuracy:.3f}."
    )
    return Result(
        checks=_checks(summaries, irrelevant, top_pixels, kkt_ratio),
        figures={"first-layer": _figure(summaries, irrelevant)},
        notes=notes,
    )


EXPERIMENT = Experiment(
    name="group-lasso-features",
    title="Group lasso drops whole input features; L1 scatters zeros",
    seed_section="004 Group Sparsity: The L2,1 Norm",
    claim=(
        "A group lasso on the columns of an MLP's first layer (one group per input feature) sets whole "
        "columns to zero and drops every irrelevant input feature while keeping the informative ones; L1 at "
        "the same strength zeroes more weights but scattered, dropping far fewer features."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "confirmed",
        "Group soft thresholding zeroes whole columns: every irrelevant input feature is dropped, every "
        "zero column meets its optimality condition, and L1 at the same strength scatters its zeros. The "
        "ten most informative pixels (by ANOVA F, one pixel at a time) all survive on 27 of 30 seeds.",
    ),
)
