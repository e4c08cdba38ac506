"""Data and models shared by several experiments and by ``normpen sweep``: a digits split and a seeded MLP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from normpen.datasets import load

__all__ = ["DigitsSplit", "digits_split", "mlp", "cross_entropy"]


@dataclass(frozen=True)
class DigitsSplit:
    """A stratified train/validation split of the digits, pixels scaled to [0, 1], as torch tensors.

    Attributes
    ----------
    X_train, X_val : torch.Tensor of shape (n, 64), float64
    y_train, y_val : torch.Tensor of shape (n,), int64
        Class indices 0..9.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor


def digits_split(train_size, seed, *, classes=None):
    r"""The digits (optionally only ``classes``), pixels divided by 16, split in a stratified way.

    Parameters
    ----------
    train_size : int or float
        Training samples (an int) or fraction (a float), as in
        :func:`sklearn.model_selection.train_test_split`; the rest is validation.
    seed : int
        Seed of the split.
    classes : sequence of int, optional
        Keep only these digits (labels stay 0..9).
    """
    data = load("digits")
    X, y = data.X / 16.0, data.y.astype(np.int64)
    if classes is not None:
        keep = np.isin(y, classes)
        X, y = X[keep], y[keep]
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, train_size=train_size, stratify=y, random_state=seed
    )
    return DigitsSplit(*(torch.from_numpy(a) for a in (X_train, y_train, X_val, y_val)))


def mlp(widths, seed, dtype=torch.float64):
    """``Linear -> ReLU -> ... -> Linear`` of the given widths, with PyTorch's default init from ``seed``."""
    layers = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if k:
                layers.append(torch.nn.ReLU())
            layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
    return torch.nn.Sequential(*layers)


def cross_entropy(model, X, y):
    """Mean cross-entropy of ``model``'s logits on ``(X, y)``, a float (no gradient)."""
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(X), y))
