r"""Path norms of ReLU networks, and rebalancing to the smallest L2 norm with the same function.

A ReLU network is unchanged when the incoming weights (and bias) of a hidden
unit are multiplied by :math:`\alpha > 0` and its outgoing weights divided by
:math:`\alpha`, since :math:`\operatorname{relu}(\alpha z) = \alpha\operatorname{relu}(z)`.
The L2 norm of the weights is not invariant under this rescaling; the path
norm is (Neyshabur, Tomioka and Srebro, COLT 2015):

.. math::

    \phi_q(\theta) = \Big(\sum_{p \in \text{paths}} \prod_{e \in p} |w_e|^q\Big)^{1/q},

the sum over every path from an input unit, or from the constant input of a
bias, through one unit per later layer to an output unit (a convolution at a
given input shape counts as its unrolled matrix: one edge per kernel tap and
position). Every rescaling multiplies the in- and out-edge of a path through
the unit by :math:`\alpha` and :math:`1/\alpha`, so each product is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from normpen._array import check_nonnegative, check_positive
from normpen.analysis.operator_norm import _check_shape, is_layer

__all__ = ["path_norm", "rebalance", "PathNormPenalty"]

#: Modules that commute with a positive rescaling of each unit (and carry no parameters).
_HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)
_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}


def _chain(model, name=""):
    """The modules of ``model`` in order (nested ``nn.Sequential`` flattened), each with its name."""
    if type(model) is nn.Sequential:
        items = []
        for child_name, child in model.named_children():
            items.extend(_chain(child, f"{name}.{child_name}" if name else child_name))
        return items
    if is_layer(model):
        if type(model) is not nn.Linear and model.padding_mode != "zeros":
            raise ValueError(
                f"{name or 'the model'} uses padding_mode={model.padding_mode!r}: a padded entry copies "
                "an input entry, so the unrolled network has no simple paths; use padding_mode='zeros'"
            )
        return [(name, model)]
    if type(model) in _HOMOGENEOUS:
        return [(name, model)]
    supported = ", ".join(t.__name__ for t in (nn.Sequential, nn.Linear, nn.Conv1d, nn.Conv2d) + _HOMOGENEOUS)
    raise TypeError(
        f"{name or 'the model'} ({type(model).__name__}) is not supported by path norms: they need a "
        f"chain of linear layers and positively homogeneous activations; supported: {supported}"
    )


def _weight_layers(model):
    layers = [(name, m) for name, m in _chain(model) if is_layer(m)]
    if not layers:
        raise ValueError("the model has no Linear or Conv layer, so no path")
    return layers


def path_norm(model, q=2, input_shape=None):
    r"""The path norm :math:`\phi_q` of a network of Linear/Conv layers and ReLUs, in one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        ``nn.Sequential`` (nested allowed) of Linear, Conv1d, Conv2d (zero
        padding) layers, ReLU/LeakyReLU, Identity, Flatten and dropout.
        Activations are positively homogeneous, so they do not enter the sum.
    q : float
        Exponent :math:`q \ge 1` (``q=2`` is the :math:`\ell_2` path norm).
    input_shape : sequence of int, optional
        One sample's shape; required when the first layer is a convolution.

    Returns
    -------
    torch.Tensor
        0-d tensor, differentiable in the weights and biases.

    Notes
    -----
    With every weight and bias replaced by :math:`|w|^q` and all activations
    removed, the network maps the all-ones input to outputs whose sum is
    :math:`\sum_p \prod_{e\in p}|w_e|^q`: by induction on layers, unit
    :math:`j`'s value is the sum over the paths ending at :math:`j` (its
    bias term :math:`|b_j|^q` being the path that starts at :math:`j`'s
    constant input). Zero padding only removes edges. The :math:`1/q`-th
    power of that sum is :math:`\phi_q`.
    """
    q = check_positive(q, "q")
    if q < 1:
        raise ValueError(f"q must be >= 1 for the path norm to be a norm of the path vector, got {q}")
    chain = _chain(model)
    first = _weight_layers(model)[0][1]
    if input_shape is None:
        if type(first) is not nn.Linear:
            raise ValueError("input_shape is required when the first layer is a convolution, e.g. (C, H, W)")
        input_shape = (first.in_features,)
    input_shape = _check_shape(input_shape, "input_shape")
    h = torch.ones((1, *input_shape), dtype=first.weight.dtype, device=first.weight.device)
    for _, module in chain:
        if is_layer(module):
            weight = module.weight.abs() ** q
            bias = None if module.bias is None else module.bias.abs() ** q
            if type(module) is nn.Linear:
                h = F.linear(h, weight, bias)
            else:
                h = _CONV[type(module)](
                    h, weight, bias, module.stride, module.padding, module.dilation, module.groups
                )
        elif type(module) is nn.Flatten:
            h = module(h)
    return h.sum() ** (1.0 / q)


@dataclass(frozen=True)
class PathNormPenalty:
    r"""The training penalty :math:`\lambda\,\phi_q(\theta)`: a callable ``model -> scalar tensor``.

    Use it as a coupled term of the loss (``loss + penalty(model)``) or as
    the penalty of a ``normpen.torch.Rule``. Its gradient is that of
    :func:`path_norm`; it is invariant under the ReLU rescalings, so it
    regularises the function rather than its parametrisation.
    """

    lam: float
    q: float = 2.0
    input_shape: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "lam", check_nonnegative(self.lam, "lam"))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", _check_shape(self.input_shape, "input_shape"))

    def __call__(self, model):
        return self.lam * path_norm(model, self.q, self.input_shape)


# ---- rebalancing ----------------------------------------------------------------------------------


def _units(layer):
    return layer.out_features if type(layer) is nn.Linear else layer.out_channels


def _in_channel_view(layer, channels, name):
    """``layer.weight`` viewed as ``(groups, out/groups, in/groups, rest)``: input channel ``c`` of
    the previous layer's ``channels`` is ``[c // (in/groups), :, c % (in/groups), :]``."""
    weight = layer.weight
    if type(layer) is nn.Linear:
        if layer.in_features % channels:
            raise ValueError(
                f"{name} has in_features={layer.in_features}, not a multiple of the {channels} units "
                "before it; the layers do not chain"
            )
        return weight.reshape(1, layer.out_features, channels, layer.in_features // channels)
    if layer.in_channels != channels:
        raise ValueError(
            f"{name} has in_channels={layer.in_channels} but the layer before has {channels} units"
        )
    groups = layer.groups
    return weight.reshape(groups, layer.out_channels // groups, channels // groups, -1)


def _squared_links(view):
    r"""Dense ``(out, in)`` matrix of :math:`\sum w^2` over the taps linking each output to each input."""
    return torch.block_diag(*view.detach().double().pow(2).sum(-1))


def _balanced_log_scales(links, bias_sq, tol, max_sweeps):
    r"""Block coordinate descent on :math:`\beta_l = \log\alpha_l` for the hidden layers.

    The rescaled :math:`\sum\|W\|^2` is
    :math:`\sum_l \sum_{j,c} S_l[j,c]\,e^{2\beta_{l,j} - 2\beta_{l-1,c}}
    + \sum_l\sum_j B_{l,j} e^{2\beta_{l,j}}`,
    convex in :math:`\beta` (input and output units fixed at :math:`\beta = 0`).
    Units of one layer do not interact, so a whole layer is minimised
    exactly at once: with :math:`a_j` its incoming and :math:`c_j` its
    outgoing total at :math:`\beta_j = 0`,
    :math:`a_j e^{2\beta_j} + c_j e^{-2\beta_j}` is smallest at
    :math:`\beta_j = \tfrac14\log(c_j/a_j)`, where incoming and outgoing
    norms are equal (the balanced form). A unit with zero incoming or
    outgoing total has no finite minimiser and keeps :math:`\beta = 0`.
    """
    betas = [torch.zeros(1, dtype=torch.float64)]
    betas += [torch.zeros(s.shape[0], dtype=torch.float64) for s in links[:-1]]
    betas.append(torch.zeros(links[-1].shape[0], dtype=torch.float64))
    for _ in range(max_sweeps):
        change = 0.0
        for l in range(1, len(links)):
            incoming = links[l - 1] @ torch.exp(-2 * betas[l - 1]) + bias_sq[l - 1]
            outgoing = links[l].T @ torch.exp(2 * betas[l + 1])
            ok = (incoming > 0) & (outgoing > 0)
            new = torch.where(ok, (torch.log(outgoing) - torch.log(incoming)) / 4, 0.0)
            change = max(change, float((new - betas[l]).abs().max()))
            betas[l] = new
        if change <= tol:
            break
    return betas[1:-1]


def rebalance(model, *, include_bias=False, tol=1e-12, max_sweeps=10_000):
    r"""Rescale hidden units in place: same function, smallest :math:`\sum_l \|W_l\|_F^2`.

    Multiplies hidden unit :math:`j`'s incoming weights and bias by
    :math:`\alpha_j > 0` and its outgoing weights by :math:`1/\alpha_j`,
    choosing all :math:`\alpha` to minimise the sum of squared weights (and
    squared biases with ``include_bias=True``) over the whole network. At the
    optimum every hidden unit is balanced, its incoming and outgoing squared
    norms are equal: the form that L2-regularised training converges to. For
    a conv layer a unit is an output channel, and after a ``Flatten`` its
    outgoing weights are the next layer's columns of that channel.

    Parameters
    ----------
    model : torch.nn.Module
        As for :func:`path_norm`: a chain of Linear/Conv layers and
        positively homogeneous activations. Modified in place (all
        parameters are written at the end, after every check has passed).
    include_bias : bool
        Count the biases in the objective (normpen's weight decay leaves them
        out, hence the default). They are rescaled either way.
    tol : float
        Stop when no :math:`\log\alpha` moves by more than ``tol`` in a sweep.
    max_sweeps : int

    Returns
    -------
    list of torch.Tensor
        The scales :math:`\alpha` of each hidden layer (float64).

    Notes
    -----
    The objective is convex in :math:`\log\alpha` and each sweep minimises it
    exactly over one layer's scales at a time (see
    :func:`_balanced_log_scales`). The function is preserved up to rounding
    of the two multiplications per weight.
    """
    tol = check_nonnegative(tol, "tol")
    layers = _weight_layers(model)
    if len(layers) < 2:
        return []
    views = [None] + [
        _in_channel_view(layer, _units(prev), name)
        for (_, prev), (name, layer) in zip(layers[:-1], layers[1:], strict=True)
    ]
    links = [
        layers[0][1].weight.detach().double().reshape(_units(layers[0][1]), -1).pow(2).sum(1, keepdim=True)
    ]
    links += [_squared_links(view) for view in views[1:]]
    bias_sq = [
        layer.bias.detach().double() ** 2 if include_bias and layer.bias is not None else 0.0
        for _, layer in layers[:-1]
    ]
    scales = [torch.exp(b) for b in _balanced_log_scales(links, bias_sq, tol, max_sweeps)]
    updates = {}
    for l, (_, layer) in enumerate(layers):
        weight = layer.weight.detach()
        if l < len(scales):
            alpha = scales[l].to(weight)
            weight = weight * alpha.reshape(-1, *([1] * (weight.ndim - 1)))
            if layer.bias is not None:
                updates[layer.bias] = layer.bias.detach() * alpha
        if l > 0:
            view = _in_channel_view(layer, _units(layers[l - 1][1]), "")
            shape = (view.shape[0], 1, view.shape[2], 1)
            inverse = (1.0 / scales[l - 1]).to(weight).reshape(shape)
            weight = (weight.reshape(view.shape) * inverse).reshape(layer.weight.shape)
        updates[layer.weight] = weight
    with torch.no_grad():
        for param, value in updates.items():
            param.copy_(value)
    return scales
