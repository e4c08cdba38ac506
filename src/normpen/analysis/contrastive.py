r"""InfoNCE and the split of its gradient into a radial (norm) and a tangential (direction) part.

For an anchor embedding :math:`x \in \mathbb R^d`, keys :math:`k_1, \dots, k_N` of
which :math:`k_+` is its positive, and a temperature :math:`\tau > 0`, InfoNCE is
the cross-entropy of the positive under a softmax over similarity logits
:math:`s_i`:

.. math::

    L(x) = -\log \frac{e^{s_+}}{\sum_i e^{s_i}}, \qquad p_i = \frac{e^{s_i}}{\sum_j e^{s_j}} .

Where the :math:`L_2` norm enters decides what the gradient does to
:math:`\|x\|` (``normalize`` below; :math:`\hat v = v/\|v\|`, :math:`\cos_i = \hat x^\top \hat k_i`):

- ``"both"`` (SimCLR, CLIP): :math:`s_i = \hat x^\top \hat k_i/\tau`. Then
  :math:`\nabla_x L = \frac{1}{\tau\|x\|}(I - \hat x\hat x^\top)\big(\sum_i p_i \hat k_i - \hat k_+\big)`:
  orthogonal to :math:`x` (the radial part is exactly 0, the loss does not see
  :math:`\|x\|`) and proportional to :math:`1/\|x\|`.
- ``"keys"``: :math:`s_i = x^\top \hat k_i/\tau = \|x\|\cos_i/\tau`, so
  :math:`\|x\|/\tau` acts as an inverse temperature. Then
  :math:`\nabla_x L = \frac1\tau\big(\sum_i p_i \hat k_i - \hat k_+\big)` and its radial part is

  .. math::

      -\frac{\partial L}{\partial \|x\|} = -\hat x^\top\nabla_x L
          = \frac{\cos_+ - \sum_i p_i \cos_i}{\tau},

  positive whenever the positive is the most similar key (the model is
  right: a larger norm sharpens a correct softmax) and negative when the
  softmax puts its weight on keys more similar than the positive (the model
  is confused: a smaller norm softens it). Along :math:`\|x\|` at a fixed
  direction, :math:`L` is convex (:math:`\partial^2 L/\partial\|x\|^2 = \operatorname{Var}_p(\cos)/\tau^2`).
- ``"none"``: :math:`s_i = x^\top k_i/\tau`, :math:`\nabla_x L = \frac1\tau\big(\sum_i p_i k_i - k_+\big)`.

Keys are given once for all anchors, shape ``(N, d)`` (in-batch negatives:
keys = the other view, ``positives = arange(B)``), or per anchor, shape
``(B, N, d)`` (a positive and its own negatives). Everything is torch,
differentiable, float32 or float64.
"""

from __future__ import annotations

import torch

from normpen._array import check_positive

__all__ = [
    "NORMALIZATIONS",
    "info_nce",
    "info_nce_probabilities",
    "info_nce_grad",
    "radial_tangential",
    "norm_force",
]

#: Where the L2 normalisation enters the logits: anchors and keys, keys only, or nowhere.
NORMALIZATIONS = ("both", "keys", "none")


def _check_inputs(anchors, keys, positives, temperature, normalize, anchor_direction=False):
    """Validate the arguments of every function here; returns the temperature as a float.

    ``anchor_direction``: the caller divides by the anchors' norms even if the logits do not.
    """
    for name, t in (("anchors", anchors), ("keys", keys), ("positives", positives)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; use torch.as_tensor")
    if anchors.ndim != 2 or not anchors.dtype.is_floating_point:
        raise ValueError(
            f"anchors must be a 2-D floating tensor (B, d), got shape {tuple(anchors.shape)} "
            f"and dtype {anchors.dtype}"
        )
    batch, dim = anchors.shape
    if keys.ndim not in (2, 3) or keys.shape[-1] != dim or (keys.ndim == 3 and keys.shape[0] != batch):
        raise ValueError(
            f"keys must have shape (N, {dim}) or ({batch}, N, {dim}) to match anchors "
            f"{tuple(anchors.shape)}, got {tuple(keys.shape)}"
        )
    if keys.dtype != anchors.dtype:
        raise TypeError(f"keys ({keys.dtype}) and anchors ({anchors.dtype}) must have the same dtype")
    if positives.shape != (batch,) or positives.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"positives must be an integer tensor of shape ({batch},) holding each anchor's "
            f"key index, got shape {tuple(positives.shape)} and dtype {positives.dtype}"
        )
    n_keys = keys.shape[-2]
    if batch and (int(positives.min()) < 0 or int(positives.max()) >= n_keys):
        raise ValueError(f"positives must lie in [0, {n_keys - 1}] (there are {n_keys} keys)")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not bool(torch.isfinite(anchors).all() and torch.isfinite(keys).all()):
        raise ValueError("anchors and keys must be finite; remove NaN or infinite embeddings first")
    zero_anchor = (normalize == "both" or anchor_direction) and bool((anchors.abs().amax(dim=1) == 0).any())
    zero_key = normalize != "none" and bool((keys.abs().amax(dim=-1) == 0).any())
    if zero_anchor or zero_key:
        raise ValueError(
            f"normalize={normalize!r} divides by the norms, and a zero embedding has no "
            "direction; drop it or use normalize='none'"
        )
    return check_positive(temperature, "temperature")


def _unit(v):
    """``v / ‖v‖`` along the last axis."""
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _keys_used(keys, normalize):
    return keys if normalize == "none" else _unit(keys)


def _logits(anchors, keys, temperature, normalize):
    """Similarities :math:`s_i` of every anchor with every key, shape ``(B, N)``."""
    x = _unit(anchors) if normalize == "both" else anchors
    k = _keys_used(keys, normalize)
    similarity = x @ k.T if k.ndim == 2 else torch.einsum("bd,bnd->bn", x, k)
    return similarity / temperature


def info_nce(anchors, keys, positives, temperature=0.1, *, normalize="both", reduction="mean"):
    r"""InfoNCE :math:`-\log p_+` of each anchor, reduced by ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Parameters
    ----------
    anchors : Tensor of shape (B, d)
    keys : Tensor of shape (N, d) or (B, N, d)
    positives : integer Tensor of shape (B,)
        Index of each anchor's positive among its keys.
    temperature : float
        :math:`\tau > 0`.
    normalize : {"both", "keys", "none"}
        Where the L2 normalisation enters the logits (module docstring).
    reduction : {"mean", "sum", "none"}
    """
    temperature = _check_inputs(anchors, keys, positives, temperature, normalize)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    logits = _logits(anchors, keys, temperature, normalize)
    return torch.nn.functional.cross_entropy(logits, positives.long(), reduction=reduction)


def info_nce_probabilities(anchors, keys, positives, temperature=0.1, *, normalize="both"):
    r"""The softmax :math:`p_i` over each anchor's keys, shape ``(B, N)``."""
    temperature = _check_inputs(anchors, keys, positives, temperature, normalize)
    return torch.softmax(_logits(anchors, keys, temperature, normalize), dim=1)


def info_nce_grad(anchors, keys, positives, temperature=0.1, *, normalize="both"):
    r"""Closed-form gradient of each anchor's own loss :math:`\nabla_x L`, shape ``(B, d)``.

    :math:`\frac1\tau(\sum_i p_i k_i - k_+)` with the keys as the logits use them
    (unit keys unless ``normalize="none"``), and for ``normalize="both"`` that
    vector projected orthogonally to :math:`x` and divided by :math:`\|x\|`.
    The gradient of ``info_nce(..., reduction="mean")`` is this divided by B.
    """
    temperature = _check_inputs(anchors, keys, positives, temperature, normalize)
    p = torch.softmax(_logits(anchors, keys, temperature, normalize), dim=1)
    k = _keys_used(keys, normalize)
    rows = torch.arange(anchors.shape[0])
    if k.ndim == 2:
        expected, positive = p @ k, k[positives.long()]
    else:
        expected, positive = torch.einsum("bn,bnd->bd", p, k), k[rows, positives.long()]
    gradient = (expected - positive) / temperature
    if normalize != "both":
        return gradient
    _, tangential = radial_tangential(anchors, gradient)
    return tangential / torch.linalg.vector_norm(anchors, dim=1, keepdim=True)


def radial_tangential(x, g):
    r"""Split ``g`` at ``x``, row by row: the radial part :math:`g^\top \hat x` and the tangential part.

    Returns ``(radial, tangential)`` of shapes ``(B,)`` and ``(B, d)`` with
    :math:`g = \text{radial}\,\hat x + \text{tangential}` and
    :math:`\text{tangential} \perp x`. ``x`` must have nonzero rows.
    """
    for name, t in (("x", x), ("g", g)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.shape != g.shape or x.ndim != 2:
        raise ValueError(f"x and g must both have shape (B, d), got {tuple(x.shape)} and {tuple(g.shape)}")
    if bool((x.abs().amax(dim=1) == 0).any()):
        raise ValueError("x has a zero row, which has no direction to split g along; drop that row")
    direction = _unit(x)
    radial = (g * direction).sum(dim=1)
    return radial, g - radial[:, None] * direction


def norm_force(anchors, keys, positives, temperature=0.1):
    r"""The force on each anchor's norm when it enters the logits, :math:`(\cos_+ - \sum_i p_i\cos_i)/\tau`.

    This is :math:`-\partial L/\partial\|x\|` for ``normalize="keys"``, written
    with cosines only (no gradient is taken): positive when the positive key
    is the most similar one, negative when the softmax puts its weight on
    keys more similar than the positive. Shape ``(B,)``.
    """
    temperature = _check_inputs(anchors, keys, positives, temperature, "keys", anchor_direction=True)
    p = torch.softmax(_logits(anchors, keys, temperature, "keys"), dim=1)
    cosines = _logits(_unit(anchors), keys, 1.0, "keys")
    positive = cosines.gather(1, positives.long()[:, None])[:, 0]
    return (positive - (p * cosines).sum(dim=1)) / temperature
