r"""Certified Lipschitz upper bounds of networks in the L2 norm.

A composition :math:`f = f_L \circ \dots \circ f_1` has
:math:`\operatorname{Lip}(f) \le \prod_l \operatorname{Lip}(f_l)`, and a
residual block :math:`x \mapsto s(x) + g(x)` has
:math:`\operatorname{Lip} \le \operatorname{Lip}(s) + \operatorname{Lip}(g)`
(1 + :math:`\operatorname{Lip}(g)` for the identity shortcut).
:func:`lipschitz_bound` walks a model built of ``nn.Sequential`` and
:class:`Residual` blocks and multiplies certified per-layer constants; a layer
it has no proven constant for is an error that names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from torch import nn

from normpen.analysis.operator_norm import (
    _check_shape,
    gram_iteration_bound,
    is_layer,
    operator_norm_bound,
    operator_norm_exact,
)

__all__ = ["Residual", "LayerFactor", "LipschitzBound", "lipschitz_bound", "GELU_LIPSCHITZ"]

#: Lipschitz constant of the exact GELU :math:`x\Phi(x)`: the largest slope,
#: :math:`\Phi(\sqrt2) + \sqrt2\,\varphi(\sqrt2) = (1 + \operatorname{erf} 1)/2 + 1/(e\sqrt\pi)`
#: :math:`\approx 1.1289`.
#: The slope :math:`\Phi(x) + x\varphi(x)` has derivative :math:`\varphi(x)(2 - x^2)`,
#: zero at :math:`\pm\sqrt2`; its smallest value, at :math:`-\sqrt2`, is
#: :math:`\approx -0.1289`, smaller in magnitude.
GELU_LIPSCHITZ = (1.0 + math.erf(1.0)) / 2.0 + 1.0 / (math.e * math.sqrt(math.pi))


class Residual(nn.Module):
    r"""Residual block :math:`x \mapsto s(x) + g(x)`: ``body`` is :math:`g`, ``shortcut`` :math:`s`.

    ``shortcut=None`` is the identity (:math:`\operatorname{Lip} \le 1 + \operatorname{Lip}(g)`);
    a projection shortcut (e.g. a strided 1x1 conv) adds its own constant.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + self.body(x)


@dataclass(frozen=True)
class LayerFactor:
    """One factor of the product: a layer (or residual block) and its Lipschitz constant."""

    name: str
    kind: str
    factor: float
    input_shape: tuple
    output_shape: tuple


@dataclass(frozen=True)
class LipschitzBound:
    """Upper bound of a network's L2 Lipschitz constant and the factors it is the product of."""

    bound: float
    factors: tuple

    def __float__(self):
        return self.bound


def _gelu_tanh_lipschitz():
    r"""Largest slope of the tanh approximation :math:`\tfrac x2(1 + \tanh(c(x + 0.044715x^3)))`.

    The slope is smooth with one maximum near :math:`x = 1.5`; a bounded
    scalar search locates it to 1e-10 in :math:`x`, which fixes the maximum
    value to rounding (the error is quadratic in the location error). The
    smallest slope, near :math:`x = -1.5`, is smaller in magnitude.
    """
    c = math.sqrt(2.0 / math.pi)

    def negative_slope(x):
        inner = c * (x + 0.044715 * x**3)
        t = math.tanh(inner)
        return -(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x**2))

    result = minimize_scalar(negative_slope, bounds=(0.0, 4.0), method="bounded", options={"xatol": 1e-10})
    return -float(result.fun) * (1.0 + 1e-12)


def _activation_constant(module):
    kind = type(module)
    if kind is nn.LeakyReLU:
        return max(1.0, abs(module.negative_slope))
    if kind is nn.GELU:
        return GELU_LIPSCHITZ if module.approximate == "none" else _gelu_tanh_lipschitz()
    if kind is nn.Sigmoid:
        return 0.25
    return 1.0  # ReLU, Tanh, Identity, Flatten, Unflatten: slopes in [0, 1], or an isometry


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.Identity, nn.Flatten, nn.Unflatten)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)


def _batchnorm_constant(module):
    r"""Batch norm in eval mode: :math:`x_c \mapsto \gamma_c (x_c - \mu_c)/\sqrt{v_c+\epsilon} + \beta_c`."""
    scale = torch.rsqrt(module.running_var.detach().double() + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().double().abs()
    return float(scale.max())


def _windows(size, out, module, dim):
    """Index lists of the pooling windows along one spatial dimension (PyTorch's rules)."""
    if "Adaptive" in type(module).__name__:
        return [range((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]
    kernel, stride, padding, dilation = (
        _per_dim(getattr(module, attr, 1), dim) for attr in ("kernel_size", "stride", "padding", "dilation")
    )
    return [
        [p for p in range(i * stride - padding, i * stride - padding + dilation * (kernel - 1) + 1, dilation)]
        for i in range(out)
    ]


def _per_dim(value, dim):
    return value[dim] if isinstance(value, tuple | list) else value


def _max_pool_constant(module, in_shape, out_shape):
    r"""Max pooling: :math:`\sqrt m`, with :math:`m` the most windows any input entry lies in.

    :math:`\sum_w (\max_{i\in w} x_i - \max_{i \in w} y_i)^2 \le \sum_w \max_{i\in w}(x_i - y_i)^2
    \le \sum_w \sum_{i\in w} (x_i-y_i)^2 \le m\|x-y\|^2`; windows are products
    of per-dimension windows, so :math:`m` is the product of per-dimension counts.
    """
    count = 1
    for dim, (size, out) in enumerate(zip(in_shape[1:], out_shape[1:], strict=True)):
        hits = [0] * size
        for window in _windows(size, out, module, dim):
            for p in window:
                if 0 <= p < size:
                    hits[p] += 1
        count *= max(hits)
    return math.sqrt(count)


def _avg_pool_matrix(size, out, module, dim):
    """The 1-D averaging matrix along one dimension (divisors as PyTorch's kernels compute them)."""
    matrix = torch.zeros((out, size), dtype=torch.float64)
    adaptive = "Adaptive" in type(module).__name__
    for i, window in enumerate(_windows(size, out, module, dim)):
        inside = [p for p in window if 0 <= p < size]
        if not inside:
            continue
        if getattr(module, "divisor_override", None):
            divisor = 1  # the indicator; the caller divides by the override
        elif adaptive or not module.count_include_pad:
            divisor = len(inside)
        else:  # the window's extent, padding included, clipped at the end of the padded input
            padding = _per_dim(module.padding, dim)
            divisor = min(window[-1] + 1, size + padding) - window[0]
        matrix[i, inside] = 1.0 / divisor
    return matrix


def _avg_pool_constant(module, in_shape, out_shape):
    r"""Average pooling is linear and separable, :math:`A = A_1 \otimes A_2`: :math:`\|A\| = \prod_i \|A_i\|`.

    Each small 1-D matrix :math:`A_i` gets the certified Gram bound. With
    ``divisor_override`` :math:`c` the entries are :math:`1/c`, i.e. the
    window indicator matrices times :math:`1/c`.
    """
    norm = 1.0
    override = getattr(module, "divisor_override", None)
    for dim, (size, out) in enumerate(zip(in_shape[1:], out_shape[1:], strict=True)):
        norm *= float(gram_iteration_bound(_avg_pool_matrix(size, out, module, dim), n_iter=12))
    return norm / override if override else norm


def _check_leaf(module, name, constants):
    """Raise, before anything runs, for a layer without a proven constant or in a mode with none."""
    kind = type(module)
    label = f"{name or 'the model'} ({kind.__name__})"
    if kind in constants:
        return
    if kind in _DROPOUT and module.training:
        raise ValueError(f"{label} is in training mode; call model.eval() first")
    if kind in _BATCHNORM and (module.training or module.running_var is None):
        raise ValueError(
            f"{label} normalises with batch statistics, which is no fixed map; "
            "call model.eval() and keep track_running_stats=True"
        )
    if kind in _POOLS and getattr(module, "return_indices", False):
        raise ValueError(f"{label} returns indices besides its output; set return_indices=False")
    if not (is_layer(module) or kind in _ACTIVATIONS + _DROPOUT + _BATCHNORM + _POOLS):
        supported = ", ".join(
            t.__name__
            for t in (nn.Sequential, Residual, nn.Linear, nn.Conv1d, nn.Conv2d)
            + _ACTIVATIONS
            + _DROPOUT
            + _BATCHNORM
            + _POOLS
        )
        raise TypeError(
            f"lipschitz_bound has no proven Lipschitz constant for {label}; supported: {supported}. "
            f"Pass constants={{{kind.__name__}: L}} if you know one"
        )


def _leaf_factor(module, in_shape, out_shape, exact, n_iter, constants):
    """Lipschitz constant of a layer :func:`_check_leaf` accepted."""
    kind = type(module)
    if kind in constants:
        return float(constants[kind])
    if is_layer(module):
        shape = (module.in_features,) if kind is nn.Linear else in_shape
        if exact:
            return float(operator_norm_exact(module, shape))
        return float(operator_norm_bound(module, shape, n_iter=n_iter))
    if kind in _BATCHNORM:
        return _batchnorm_constant(module)
    if kind in _POOLS:
        if "Max" in kind.__name__:
            return _max_pool_constant(module, in_shape, out_shape)
        return _avg_pool_constant(module, in_shape, out_shape)
    if kind in _DROPOUT:
        return 1.0
    return _activation_constant(module)


def _output_shape(module, name, in_shape, reference):
    try:
        return tuple(module(torch.zeros((1, *in_shape), **reference)).shape[1:])
    except RuntimeError as err:
        raise ValueError(
            f"{name or 'the model'} ({type(module).__name__}) fails on inputs of shape {in_shape}: {err}; "
            "check input_shape (one sample, no batch dimension)"
        ) from err


def _join(name, child):
    return f"{name}.{child}" if name else child


def _chain(module, name, in_shape, ctx):
    """Factors of ``module`` applied to one sample of shape ``in_shape``, and its output shape."""
    if type(module) is nn.Sequential:
        factors, shape = [], in_shape
        for child_name, child in module.named_children():
            child_factors, shape = _chain(child, _join(name, child_name), shape, ctx)
            factors.extend(child_factors)
        return factors, shape
    if type(module) is Residual:
        body, out_shape = _chain(module.body, _join(name, "body"), in_shape, ctx)
        skip = []
        if module.shortcut is not None:
            skip, _ = _chain(module.shortcut, _join(name, "shortcut"), in_shape, ctx)
        factor = math.prod(f.factor for f in body) + math.prod(f.factor for f in skip)
        return [LayerFactor(name, "Residual", factor, in_shape, out_shape)], out_shape
    exact, n_iter, constants = ctx["leaf"]
    _check_leaf(module, name, constants)
    out_shape = _output_shape(module, name, in_shape, ctx["reference"])
    factor = _leaf_factor(module, in_shape, out_shape, exact, n_iter, constants)
    return [LayerFactor(name, type(module).__name__, factor, in_shape, out_shape)], out_shape


def lipschitz_bound(model, input_shape, *, exact=False, n_iter=10, constants=None):
    r"""Certified upper bound of the L2 Lipschitz constant of ``model`` on inputs of one shape.

    Parameters
    ----------
    model : torch.nn.Module
        ``nn.Sequential`` and :class:`Residual` blocks (nested freely) of
        Linear, Conv1d, Conv2d, ReLU, LeakyReLU, Tanh, GELU, Sigmoid,
        Identity, Flatten, Unflatten, max/average pooling (plain and
        adaptive), dropout (eval mode) and batch norm (eval mode).
    input_shape : sequence of int
        Shape of one input sample, without the batch dimension.
    exact : bool
        Use the exact operator norms of Linear/Conv layers (dense matrix SVD,
        small layers only) instead of the certified Gram-iteration bounds.
        The product is an upper bound either way; ``exact`` only removes the
        per-layer slack.
    n_iter : int
        Gram steps of :func:`~normpen.analysis.operator_norm.operator_norm_bound`.
    constants : mapping of module type to float, optional
        Lipschitz constants for further layer types (your proof, your claim).

    Returns
    -------
    LipschitzBound
        ``bound`` (float) and ``factors``: one :class:`LayerFactor` per layer
        of the composition chain (nested ``Sequential`` flattened, each
        residual block one factor :math:`L_s + \prod L_{g}`), whose product is
        ``bound``.

    Notes
    -----
    Constants used: Linear/Conv, the operator norm at the layer's input shape;
    ReLU, Tanh, Identity, Flatten, dropout in eval mode: 1; LeakyReLU:
    :math:`\max(1, |a|)`; Sigmoid: 1/4; GELU: :data:`GELU_LIPSCHITZ`
    (:math:`\approx 1.1289`, exact), its tanh approximation by maximising its
    slope; batch norm in eval mode: :math:`\max_c |\gamma_c|/\sqrt{\hat v_c+\epsilon}`;
    max pooling: :math:`\sqrt m` with :math:`m` the most windows sharing an
    input entry (1 without overlap); average pooling: its operator norm.
    """
    input_shape = _check_shape(input_shape, "input_shape")
    constants = {} if constants is None else constants
    if not isinstance(constants, Mapping) or not all(isinstance(k, type) for k in constants):
        raise TypeError("constants must map module types (e.g. nn.SiLU) to Lipschitz constants")
    reference = next(model.parameters(), None)
    ctx = {
        "reference": {} if reference is None else {"device": reference.device, "dtype": reference.dtype},
        "leaf": (exact, n_iter, constants),
    }
    with torch.no_grad():
        factors, _ = _chain(model, "", input_shape, ctx)
    return LipschitzBound(math.prod(f.factor for f in factors), tuple(factors))
