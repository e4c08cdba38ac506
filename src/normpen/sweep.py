r"""A training sweep over :math:`\lambda`: one small network per strength, and the fit diagnosis in words.

Seed 004's recipe: train the same model (same initial weights, same batches)
on :math:`J(\theta) = L(\theta) + P_\lambda(W)` for a log-spaced grid of
:math:`\lambda`, record the training and validation loss after every epoch,
take :math:`\lambda^\star` with the lowest final validation loss, and read the
two failure modes off the curves:

- **overfitting** (:math:`\lambda < \lambda^\star`): the gap between validation
  and training loss exceeds the gap at :math:`\lambda^\star` by more than
  ``OVERFIT_GAP`` times :math:`\text{val}(\lambda^\star)`, or the validation loss
  ends more than ``OVERFIT_RISE`` (relative) above its minimum over the epochs;
- **underfitting** (:math:`\lambda > \lambda^\star`): the training loss
  exceeds :math:`\text{train}(\lambda^\star)` by more than ``UNDERFIT_CLIMB``
  times :math:`\text{val}(\lambda^\star)`: the penalty keeps the model from
  fitting even the data it sees;
- every λ is compared with the best constant prediction (all weights 0:
  the entropy of the class frequencies for classification, the variance of
  the standardised target, 1, for regression): a λ whose training loss is
  not ``BASELINE_MARGIN`` below it **underfits** whatever its place in the
  grid, and the diagnosis says so when even :math:`\lambda^\star` does not
  beat it on the validation rows.

Training that blows up is no result to diagnose: a non-finite loss, or a
training loss above ``DIVERGENCE_FACTOR`` times the constant prediction's,
raises :class:`TrainingDiverged` naming the λ and the epoch.

The penalty is applied to the weight matrices (never the biases) by a
:class:`normpen.torch.Rule` in the chosen mode: ``l2`` is
:math:`\frac\lambda2\|W\|^2`, ``l1`` :math:`\lambda\|W\|_1`, ``group``
:math:`\lambda\sum_i \sqrt{n_{in}}\|W_{i,:}\|_2`, one group per unit (a row of
each weight matrix), which prunes whole units. Their names (and aliases:
``ridge``, ``lasso``, ``group_lasso``) come from :mod:`normpen.penalties.names`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normpen.penalties import names
from normpen.penalties.names import SWEEP_PENALTIES

__all__ = [
    "PENALTIES",
    "MODELS",
    "OVERFIT_GAP",
    "OVERFIT_RISE",
    "UNDERFIT_CLIMB",
    "BASELINE_MARGIN",
    "DIVERGENCE_FACTOR",
    "TrainingDiverged",
    "SweepData",
    "SweepResult",
    "parse_lambdas",
    "make_penalty",
    "train_sweep",
    "constant_loss",
    "digits_data",
    "table_data",
    "plain_log_ticks",
]

#: The penalties a sweep applies (canonical names of :mod:`normpen.penalties.names`, which also takes their
#: aliases: ``ridge``, ``lasso``, ``group_lasso``, ...).
PENALTIES = SWEEP_PENALTIES
MODELS = ("mlp", "linear")
#: Excess of the validation-training gap over the gap at λ*, relative to val(λ*), that signals overfitting.
OVERFIT_GAP = 0.1
#: Relative rise of the validation loss above its minimum over the epochs that signals overfitting.
OVERFIT_RISE = 0.05
#: Rise of the training loss above train(λ*), relative to val(λ*), that signals underfitting.
UNDERFIT_CLIMB = 0.5
#: Relative margin below the constant prediction's loss a training loss needs to count as learning something.
BASELINE_MARGIN = 0.02
#: Training loss, in multiples of the constant prediction's, beyond which training has diverged.
DIVERGENCE_FACTOR = 100.0


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite, or exceeded ``DIVERGENCE_FACTOR`` times the constant prediction's."""


def parse_lambdas(text: str) -> np.ndarray:
    """``"a:b:n"``: ``n`` log-spaced strengths from ``a`` to ``b`` (both > 0, ``n`` >= 2), increasing.

    Raises ``ValueError`` naming the expected form otherwise.
    """
    parts = text.split(":")
    try:
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"{text!r} is not a:b:n; write e.g. 1e-5:1:7 (7 λ from 1e-5 to 1)") from None
    if not (0 < low < high and math.isfinite(high) and count >= 2):
        raise ValueError(f"{text!r}: need 0 < a < b and n >= 2, e.g. 1e-5:1:7")
    return np.geomspace(low, high, count)


def make_penalty(name: str, lam: float):
    """The penalty object of ``name`` or an alias of it (see the module docstring) at strength ``lam``;
    a group penalty has one group per unit (a row of the weight matrix)."""
    return names.make_penalty(names.canonical(name, among=PENALTIES), lam, groups="rows")


@dataclass(frozen=True)
class SweepData:
    """A train/validation split as torch tensors: float64 features; int64 classes or float64 targets.

    ``task`` is ``"classification"`` (``n_outputs`` classes) or
    ``"regression"`` (one output, standardised target). ``decisions`` are
    what reading and encoding the table did (:class:`normpen.tabular.Decision`).
    """

    X_train: object
    y_train: object
    X_val: object
    y_val: object
    task: str
    n_outputs: int
    decisions: tuple = ()


def _as_sweep_data(X_train, y_train, X_val, y_val, task, n_outputs, decisions=()) -> SweepData:
    import torch

    target_dtype = torch.int64 if task == "classification" else torch.float64
    features = [torch.as_tensor(X, dtype=torch.float64) for X in (X_train, X_val)]
    targets = [torch.as_tensor(y, dtype=target_dtype) for y in (y_train, y_val)]
    return SweepData(features[0], targets[0], features[1], targets[1], task, n_outputs, tuple(decisions))


def digits_data(val_fraction=0.25, seed=0) -> SweepData:
    """scikit-learn's bundled digits (8x8 images, 10 classes), pixels divided by 16, split stratified."""
    from sklearn.model_selection import train_test_split

    from normpen.datasets import load

    digits = load("digits")
    X_train, X_val, y_train, y_val = train_test_split(
        digits.X / 16.0,
        digits.y.astype(np.int64),
        test_size=val_fraction,
        stratify=digits.y,
        random_state=seed,
    )
    return _as_sweep_data(X_train, y_train, X_val, y_val, "classification", 10)


def table_data(
    frame,
    target,
    task,
    *,
    val_fraction=0.25,
    seed=0,
    na="error",
    categorical=(),
    exclude=(),
    max_levels=50,
    decisions=(),
):
    """A user's table split into training and validation rows (stratified for classification).

    The :class:`~normpen.tabular.TabularEncoder` is learned on the training
    rows only and applied to both; a regression target is standardised with
    the training mean and deviation; class labels become indices 0..K-1.
    ``decisions`` (what reading the file did) come first in the result's,
    then the encoder's. Raises :class:`~normpen.tabular.TableError` as
    :func:`~normpen.tabular.fit_encoder` does, and ``ValueError`` when a
    split leaves too few rows.
    """
    from sklearn.model_selection import train_test_split

    from normpen.tabular import _target_rows, fit_encoder, training_data

    if target in frame.columns:
        dropped = []
        frame = frame[_target_rows(frame[target], dropped)]
        decisions = (*decisions, *dropped)
    labels = frame[target] if task == "classification" and target in frame.columns else None
    try:
        train, val = train_test_split(frame, test_size=val_fraction, random_state=seed, stratify=labels)
    except ValueError as err:
        raise ValueError(f"cannot split {len(frame)} rows into training and validation: {err}") from None
    encoder = fit_encoder(
        train, target, na=na, categorical=categorical, exclude=exclude, max_levels=max_levels
    )
    hint = "for class labels pass --task classification (or leave --task auto)"
    X_train, y_train = training_data(train, encoder, task, hint=hint)
    X_val, y_val = training_data(val, encoder, task, hint=hint)
    decisions = (*decisions, *encoder.decisions)
    if task == "classification":
        classes, y_train = np.unique(y_train.astype(str), return_inverse=True)
        if not np.isin(y_val.astype(str), classes).all():
            raise ValueError("a class of the validation rows has no training row; add rows of that class")
        y_val = np.searchsorted(classes, y_val.astype(str))
        return _as_sweep_data(X_train, y_train, X_val, y_val, task, len(classes), decisions)
    mean, scale = y_train.mean(), y_train.std()
    if not scale > 0:
        raise ValueError(f"the target {target!r} is constant on the training rows; nothing to learn")
    return _as_sweep_data(
        X_train, (y_train - mean) / scale, X_val, (y_val - mean) / scale, task, 1, decisions
    )


def constant_loss(data: SweepData) -> float:
    r"""Training loss of the best constant prediction: :math:`H(\pi)` of the class frequencies, or the
    variance of the training target (the mean squared error of predicting its mean)."""
    if data.task == "regression":
        return float(data.y_train.var(unbiased=False))
    counts = np.bincount(data.y_train.numpy(), minlength=data.n_outputs)
    freq = counts[counts > 0] / counts.sum()
    return float(-(freq * np.log(freq)).sum())


@dataclass(frozen=True)
class SweepResult:
    """Loss curves of the sweep.

    Attributes
    ----------
    lams : ndarray of shape (K,)
        The strengths, increasing.
    epochs : ndarray of shape (T,)
        0 (initial weights), 1, ..., the number of epochs.
    train_curves, val_curves : ndarray of shape (T, K)
        Training and validation data loss (no penalty) after each epoch, per λ.
    baseline : float
        Training loss of the best constant prediction (:func:`constant_loss`).
    loss : str
        The loss's name.
    """

    lams: np.ndarray
    epochs: np.ndarray
    train_curves: np.ndarray
    val_curves: np.ndarray
    baseline: float
    loss: str

    @property
    def train(self) -> np.ndarray:
        """Final training loss per λ."""
        return self.train_curves[-1]

    @property
    def val(self) -> np.ndarray:
        """Final validation loss per λ."""
        return self.val_curves[-1]

    @property
    def best(self) -> int:
        """Index of λ*, the least final validation loss."""
        return int(np.argmin(self.val))

    @property
    def learned(self) -> np.ndarray:
        """Per λ: whether the training loss is ``BASELINE_MARGIN`` below the constant prediction's."""
        return self.train < (1 - BASELINE_MARGIN) * self.baseline

    def verdicts(self) -> list[str]:
        """Per λ: ``"overfits"``, ``"underfits"`` or ``"fits"`` (criteria in the module docstring)."""
        best = self.best
        gap = self.val - self.train
        rise = self.val / self.val_curves.min(axis=0) - 1.0
        climb = (self.train - self.train[best]) / self.val[best]
        verdicts = []
        for k in range(len(self.lams)):
            if not self.learned[k] or (k > best and climb[k] > UNDERFIT_CLIMB):
                verdicts.append("underfits")
            elif k < best and (gap[k] - gap[best] > OVERFIT_GAP * self.val[best] or rise[k] > OVERFIT_RISE):
                verdicts.append("overfits")
            else:
                verdicts.append("fits")
        return verdicts

    def diagnosis(self) -> list[str]:
        """The diagnosis in sentences: λ*, where the model overfits and where it underfits, with numbers."""
        best, verdicts = self.best, self.verdicts()
        lines = [
            f"λ* = {self.lams[best]:.3g} has the lowest validation {self.loss} ({self.val[best]:.4g}; "
            f"training {self.train[best]:.4g})."
        ]
        over = [k for k, v in enumerate(verdicts) if v == "overfits"]
        under = [k for k, v in enumerate(verdicts) if v == "underfits" and k > best]
        stalled = [k for k, v in enumerate(verdicts) if v == "underfits" and k <= best]
        gap = self.val - self.train
        if over:
            k = over[0]
            rise = 100 * (self.val[k] / self.val_curves[:, k].min() - 1)
            lines.append(
                f"It overfits for λ ≤ {self.lams[over[-1]]:.3g}: at λ = {self.lams[k]:.3g} the training loss "
                f"is {self.train[k]:.4g} but the validation loss {self.val[k]:.4g} (gap {gap[k]:.3g} against "
                f"{gap[best]:.3g} at λ*), and the validation loss ends {rise:.0f}% above its best epoch."
            )
        else:
            lines.append("No λ of the grid overfits: extend the grid to smaller λ or train longer to see it.")
        if under:
            k = under[-1]
            lines.append(
                f"It underfits for λ ≥ {self.lams[under[0]]:.3g}: at λ = {self.lams[k]:.3g} even the "
                f"training loss is {self.train[k]:.4g}, against {self.train[best]:.4g} at λ* and "
                f"{self.baseline:.4g} for the best constant prediction (all weights 0)."
            )
        else:
            lines.append("No λ larger than λ* underfits: extend the grid to larger λ to see it.")
        if stalled:
            shown = ", ".join(f"{self.lams[k]:.3g}" for k in stalled)
            lines.append(
                f"At λ = {shown} the training loss is not {BASELINE_MARGIN:.0%} below the best constant "
                f"prediction's {self.baseline:.4g}, so these underfit too although λ is not larger than λ*."
            )
        if not self.val[best] < self.baseline:
            lines.append(
                f"Even λ* does no better on the validation rows ({self.val[best]:.4g}) than the best "
                f"constant prediction ({self.baseline:.4g}): the features may not predict the target, or "
                "training needs more --epochs or another --lr."
            )
        if best in (0, len(self.lams) - 1):
            end = "smallest" if best == 0 else "largest"
            lines.append(f"λ* is the {end} λ of the grid: the best λ may lie beyond it; extend the grid.")
        return lines

    def to_dict(self) -> dict:
        """The curves, λ*, verdicts and diagnosis as JSON-ready data."""
        return {
            "lams": self.lams.tolist(),
            "epochs": self.epochs.tolist(),
            "train_curves": self.train_curves.tolist(),
            "val_curves": self.val_curves.tolist(),
            "loss": self.loss,
            "baseline": self.baseline,
            "best_lam": float(self.lams[self.best]),
            "best_val_loss": float(self.val[self.best]),
            "verdicts": self.verdicts(),
            "diagnosis": self.diagnosis(),
        }

    def figure(self):
        """Left: final train and validation loss against λ, with the verdicts shaded. Right: validation
        (solid) and training (dashed) loss against the epoch, one colour per λ."""
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        colours = {"overfits": "tab:red", "underfits": "tab:blue"}
        for lam, verdict in zip(self.lams, self.verdicts(), strict=True):
            if verdict in colours:
                left.axvspan(lam / 1.25, lam * 1.25, color=colours[verdict], alpha=0.12, lw=0)
        left.plot(self.lams, self.train, "o-", label="train")
        left.plot(self.lams, self.val, "s-", label="validation")
        left.axhline(self.baseline, color="gray", ls=":", label="constant prediction (train)")
        left.axvline(self.lams[self.best], color="k", ls="--", label=f"λ* = {self.lams[self.best]:.3g}")
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_xlabel("λ")
        left.set_ylabel(self.loss)
        left.set_title("overfits (red) ← λ → underfits (blue)", fontsize=10)
        left.legend(frameon=False, fontsize=8)
        plain_log_ticks(left)
        for k, lam in enumerate(self.lams):
            colour = colormaps["viridis"](k / max(len(self.lams) - 1, 1))
            right.plot(self.epochs, self.val_curves[:, k], color=colour, label=f"λ = {lam:.2g}")
            right.plot(self.epochs, self.train_curves[:, k], color=colour, ls="--", lw=0.8)
        right.set_yscale("log")
        right.set_xlabel("epoch")
        right.set_ylabel(self.loss)
        right.set_title("validation (solid) and training (dashed) loss", fontsize=10)
        right.legend(frameon=False, fontsize=7, ncol=2)
        plain_log_ticks(right)
        return fig


def plain_log_ticks(ax):
    """Label the log-scaled axes of ``ax`` with plain numbers ("0.62", "1e-06"), never "6.2×10⁻¹"."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _data_loss(task):
    import torch

    if task == "classification":
        return torch.nn.functional.cross_entropy
    return lambda output, target: torch.nn.functional.mse_loss(output[:, 0], target)


def _network(model, n_inputs, hidden, n_outputs, seed):
    from normpen.experiments.common import mlp

    widths = (n_inputs, n_outputs) if model == "linear" else (n_inputs, hidden, n_outputs)
    return mlp(widths, seed)


def train_sweep(
    data: SweepData,
    lams,
    *,
    penalty="l2",
    mode="coupled",
    model="mlp",
    hidden=64,
    epochs=30,
    batch_size=64,
    lr=1e-2,
    seed=0,
    on_epoch=None,
) -> SweepResult:
    r"""Train one network per λ of ``lams`` with Adam, mini-batches, the penalty ``penalty`` in ``mode``.

    Every λ starts from the same initial weights and sees the same batches
    (both drawn from ``seed``), so the runs differ only by λ. ``on_epoch(k, epoch)``
    is called after each epoch of the ``k``-th λ (for a progress bar). Runs on
    one thread: networks this small only lose time synchronising threads.
    Raises :class:`TrainingDiverged` when a loss becomes non-finite.
    """
    from normpen._threads import single_threaded

    if mode not in ("coupled", "decoupled", "proximal"):
        raise ValueError(f"mode must be coupled, decoupled or proximal, got {mode!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    with single_threaded():
        train_curves, val_curves = _train_each(
            data, lams, penalty, mode, model, hidden, epochs, batch_size, lr, seed, on_epoch
        )
    name = "cross-entropy" if data.task == "classification" else "mean squared error (standardised target)"
    return SweepResult(
        np.asarray(lams, dtype=np.float64),
        np.arange(epochs + 1),
        np.array(train_curves).T,
        np.array(val_curves).T,
        constant_loss(data),
        name,
    )


def _train_each(data, lams, penalty, mode, model, hidden, epochs, batch_size, lr, seed, on_epoch):
    """Loss curves ``(train, val)``, one list per λ, of the runs :func:`train_sweep` describes."""
    import torch

    from normpen.torch import Regularizer, Rule

    loss_fn = _data_loss(data.task)
    n = data.X_train.shape[0]
    ceiling = DIVERGENCE_FACTOR * constant_loss(data)
    train_curves, val_curves = [], []
    for k, lam in enumerate(lams):
        network = _network(model, data.X_train.shape[1], hidden, data.n_outputs, seed)
        reg = Regularizer(network, [Rule(make_penalty(penalty, float(lam)), mode=mode)])
        optimizer = reg.wrap(torch.optim.Adam(network.parameters(), lr=lr))
        batches = torch.Generator().manual_seed(seed)
        curve = [_losses(network, data, loss_fn)]
        for epoch in range(1, epochs + 1):
            for index in torch.randperm(n, generator=batches).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                (loss_fn(network(data.X_train[index]), data.y_train[index]) + reg.penalty()).backward()
                optimizer.step()
            curve.append(_losses(network, data, loss_fn))
            if not all(map(math.isfinite, curve[-1])):
                raise TrainingDiverged(f"non-finite loss at λ = {lam:.3g}, epoch {epoch}; lower --lr")
            if curve[-1][0] > ceiling:
                raise TrainingDiverged(
                    f"the training loss exploded at λ = {lam:.3g}, epoch {epoch}: {curve[-1][0]:.3g}, over "
                    f"{DIVERGENCE_FACTOR:g} times the constant prediction's "
                    f"{ceiling / DIVERGENCE_FACTOR:.3g}; "
                    "lower --lr"
                )
            if on_epoch is not None:
                on_epoch(k, epoch)
        train_curves.append([c[0] for c in curve])
        val_curves.append([c[1] for c in curve])
    return train_curves, val_curves


def _losses(network, data, loss_fn):
    import torch

    with torch.no_grad():
        train = loss_fn(network(data.X_train), data.y_train)
        return float(train), float(loss_fn(network(data.X_val), data.y_val))
