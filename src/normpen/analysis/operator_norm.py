r"""Spectral norms of layer operators: power-iteration estimates and certified upper bounds.

For a ``Linear`` layer the operator is :math:`x \mapsto Wx` and its spectral norm
is :math:`\sigma_{\max}(W)`. For ``Conv1d``/``Conv2d`` it is the linear map the
layer applies to an input of a given shape (channels and spatial size, padding,
stride, dilation and groups included, bias excluded): the norm of that
*operator*, not of the kernel reshaped into a matrix, which can be larger or
smaller (a 3-tap averaging kernel: 0.577 reshaped, about 1 as an operator).

Three ways to get it:

- :func:`operator_norm_bound`: a **certified upper bound**, never below the
  true value (Gram iteration on the Fourier symbol, see its docstring for the
  argument); cheap, differentiable, no host synchronisation.
- :class:`PowerIteration`: persistent singular-vector estimates updated by a
  few power iterations per call; its value is a **lower bound** that converges
  to the norm, and its gradient is :math:`u v^\top` (the gradient of
  :math:`\sigma_{\max}`).
- :func:`operator_norm_exact`: the dense matrix of the operator and its SVD,
  for small shapes (tests, benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LayerOperator",
    "PowerIteration",
    "gram_iteration_bound",
    "operator_norm_bound",
    "operator_norm_estimate",
    "operator_norm_exact",
    "layer_input_shapes",
]

#: Layers whose operator norm normpen computes (exact types: a subclass may change ``forward``).
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
#: Largest dense operator matrix :func:`operator_norm_exact` builds (entries).
_MAX_DENSE_ENTRIES = 50_000_000


def is_layer(module):
    """Whether ``module`` is a Linear, Conv1d or Conv2d layer (exact type)."""
    return type(module) in LAYER_TYPES


class LayerOperator:
    r"""The linear part :math:`x \mapsto W * x` of a Linear/Conv1d/Conv2d layer at one input shape.

    Parameters
    ----------
    module : torch.nn.Linear, torch.nn.Conv1d or torch.nn.Conv2d
        The layer; its bias is left out (it does not change the Lipschitz constant).
    input_shape : sequence of int, optional
        Shape of one input sample, without the batch dimension: ``(C, L)`` for
        Conv1d, ``(C, H, W)`` for Conv2d. Required for convolutions; a Linear
        layer acts on its last dimension and its norm does not depend on the
        others, so it defaults to ``(in_features,)``.

    Notes
    -----
    The convolution is written as explicit padding followed by a valid
    convolution, :math:`A = V P`: :math:`P` pads (zeros, reflect, replicate or
    circular, per the layer's ``padding_mode``; ``padding="same"`` puts the odd
    extra element on the right, as PyTorch does) and :math:`V` is the strided,
    dilated, grouped valid convolution of the padded input.
    """

    def __init__(self, module, input_shape=None):
        if not is_layer(module):
            raise TypeError(
                f"expected a torch.nn.Linear, Conv1d or Conv2d layer, got {type(module).__name__}; "
                "other layers have no operator norm here"
            )
        self.module = module
        self.is_linear = type(module) is nn.Linear
        if input_shape is None:
            if not self.is_linear:
                raise ValueError(
                    f"input_shape is required for {type(module).__name__}: the norm of a convolution "
                    "depends on the input size; pass the shape of one sample, e.g. (C, H, W)"
                )
            input_shape = (module.in_features,)
        self.input_shape = _check_shape(input_shape, "input_shape")
        if self.is_linear:
            if self.input_shape[-1] != module.in_features:
                raise ValueError(
                    f"input_shape {self.input_shape} does not end with in_features={module.in_features}"
                )
            self.pads = self.torch_pads = ()
            self.output_shape = self.input_shape[:-1] + (module.out_features,)
            return
        spatial_dims = module.weight.ndim - 2
        if len(self.input_shape) != spatial_dims + 1 or self.input_shape[0] != module.in_channels:
            raise ValueError(
                f"input_shape {self.input_shape} does not fit {type(module).__name__} with "
                f"in_channels={module.in_channels}; give (in_channels, *spatial) with {spatial_dims} "
                "spatial size(s)"
            )
        self.pads = _conv_pads(module)
        #: The same padding in ``torch.nn.functional.pad``'s order (last dimension first).
        self.torch_pads = tuple(p for pair in reversed(self.pads) for p in pair)
        out = []
        for n, (left, right), k, s, d in zip(
            self.input_shape[1:], self.pads, module.kernel_size, module.stride, module.dilation, strict=True
        ):
            reach = d * (k - 1) + 1
            if n + left + right < reach:
                raise ValueError(
                    f"input_shape {self.input_shape} is smaller than the kernel's reach {reach} "
                    f"of {type(module).__name__}; use a larger input"
                )
            out.append((n + left + right - reach) // s + 1)
        self.output_shape = (module.out_channels, *out)

    @property
    def padded_size(self):
        """Spatial size of the padded input (convolutions only)."""
        return tuple(
            n + left + right for n, (left, right) in zip(self.input_shape[1:], self.pads, strict=True)
        )

    def apply(self, x, weight=None):
        """The operator on a batch ``x`` of shape ``(B, *input_shape)``; the layer's weight by default."""
        module = self.module
        weight = module.weight if weight is None else weight
        if self.is_linear:
            return F.linear(x, weight)
        padded = F.pad(x, self.torch_pads, mode=_PAD_MODES[module.padding_mode])
        return _CONV[type(module)](padded, weight, None, module.stride, 0, module.dilation, module.groups)

    def padding_gain(self):
        r"""The norm of the padding map :math:`P`, :math:`\sqrt{\max_j (P^\top P)_{jj}}`.

        Every padded entry is a copy of one input entry (or a zero), so the
        columns of :math:`P` have disjoint supports, :math:`P^\top P` is
        diagonal with the number of copies of each input entry, and
        :math:`\|P\|_2` is the square root of the largest count: 1 for zero
        padding, more for reflect, replicate and circular padding.
        """
        if self.is_linear or self.module.padding_mode == "zeros":
            return 1.0
        ones = torch.ones((1, 1, *self.input_shape[1:]), dtype=torch.float64)
        mode = _PAD_MODES[self.module.padding_mode]
        padded, pullback = torch.func.vjp(lambda z: F.pad(z, self.torch_pads, mode=mode), ones)
        (counts,) = pullback(torch.ones_like(padded))
        return math.sqrt(float(counts.max()))


def _check_shape(shape, name):
    """``shape`` as a tuple of positive ints, or a clear error naming ``name``."""
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"{name} must be a tuple of ints (one sample, no batch dimension), got {shape!r}")
    if not shape or not all(isinstance(n, Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {tuple(shape)!r}")
    return tuple(int(n) for n in shape)


def check_iterations(n_iter, name="n_iter"):
    """``n_iter`` if it is a nonnegative int, else a ``ValueError`` naming ``name``."""
    if not isinstance(n_iter, Integral) or isinstance(n_iter, bool) or n_iter < 0:
        raise ValueError(f"{name} must be a nonnegative int, got {n_iter!r}")
    return int(n_iter)


def _conv_pads(module):
    """Per spatial dimension ``(left, right)`` padding of a conv layer, PyTorch's convention for 'same'."""
    if module.padding == "valid":
        return tuple((0, 0) for _ in module.kernel_size)
    if module.padding == "same":
        pads = []
        for k, d in zip(module.kernel_size, module.dilation, strict=True):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple((p, p) for p in module.padding)


# ---- certified bound ------------------------------------------------------------------------------


def _gram_iteration(matrices, n_iter):
    r"""Gram-iteration upper bound of :math:`\sigma_{\max}` for a batch of matrices (no rounding allowance).

    With :math:`G_0 = M` and :math:`G_{t+1} = G_t^* G_t`, the singular values
    of :math:`G_t` are :math:`\sigma_i(M)^{2^t}`, so
    :math:`\sigma_{\max}(M) = \sigma_{\max}(G_t)^{2^{-t}} \le \|G_t\|_F^{2^{-t}}`,
    a bound that decreases with :math:`t` to :math:`\sigma_{\max}` (its ratio
    to it is at most :math:`\operatorname{rank}^{2^{-t-1}}`). :math:`M` is
    first divided by its Frobenius norm :math:`r_0`; then each product
    :math:`N^*N` is divided by its Frobenius norm :math:`\rho_t \in [d^{-1/2}, 1]`,
    whose logarithms are accumulated:
    :math:`\sigma_{\max}(M) \le r_0 \exp(2^{-T}\sum_t 2^{T-t}\log\rho_t)`.
    Nothing overflows or underflows, and the logarithms stay small, so their
    rounding does too.
    """
    g = matrices
    if g.shape[-2] < g.shape[-1]:
        g = g.mH
    first = torch.linalg.matrix_norm(g)
    g = g / _nonzero(first)[..., None, None].to(g.dtype)
    log_scale = torch.zeros_like(first)
    for _ in range(n_iter):
        g = g.mH @ g
        fro = _nonzero(torch.linalg.matrix_norm(g))
        log_scale = 2 * log_scale + torch.log(fro)
        g = g / fro[..., None, None].to(g.dtype)
    last = _nonzero(torch.linalg.matrix_norm(g))
    return first * torch.exp(2.0**-n_iter * (log_scale + torch.log(last)))


def _nonzero(norms):
    """``norms`` with zeros replaced by ones (a zero matrix stays zero when divided by it)."""
    return torch.where(norms > 0, norms, torch.ones_like(norms))


def _rounding_allowance(dim, n_iter, fft_points, dtype):
    r"""Relative first-order rounding allowance of :func:`_gram_iteration` (and the FFT before it).

    In floating point with unit roundoff :math:`u`, one Gram product of
    :math:`d\times d` matrices has a Frobenius error at most
    :math:`\gamma_d\|G\|_F^2 \le \gamma_d\sqrt d\,\|G^*G\|_F`; an error made at
    step :math:`t` is raised to the power :math:`2^{-t}` by the final root, so
    the steps together change the bound by at most about
    :math:`2 d^{3/2} u`; normalisations add :math:`2u` per step, the
    accumulated logarithms (each at most :math:`\tfrac12\log d`) about
    :math:`(T+1)\log(d+1)\,u`, and an FFT on :math:`N` points
    :math:`5 u \log_2 N`. The returned factor doubles that sum.
    """
    u = torch.finfo(dtype).eps / 2
    terms = (
        2.0 * dim**1.5 + 2.0 * n_iter + (n_iter + 1) * math.log(dim + 1) + 5.0 * math.log2(max(fft_points, 2))
    )
    return 1.0 + 2.0 * u * (terms + 2.0)


def gram_iteration_bound(matrices, n_iter=10):
    r"""Certified upper bound of :math:`\sigma_{\max}` of each matrix in a batch, by Gram iteration.

    Parameters
    ----------
    matrices : torch.Tensor
        Real or complex tensor of shape ``(..., m, n)``.
    n_iter : int
        Number of Gram steps :math:`t`; the bound exceeds :math:`\sigma_{\max}`
        by a factor at most :math:`\operatorname{rank}^{2^{-t-1}}` (1.0034 for
        rank 1000 and :math:`t = 10`).

    Returns
    -------
    torch.Tensor
        Shape ``(...)``: :math:`\|G_t\|_F^{2^{-t}}` with :math:`G_{t+1} = G_t^* G_t`
        (Delattre et al., "Efficient Bound of Lipschitz Constant for
        Convolutional Layers by Gram Iteration", ICML 2023), times a
        first-order rounding allowance so that the floating-point result stays
        above the exact :math:`\sigma_{\max}`. Differentiable.
    """
    n_iter = check_iterations(n_iter)
    dim = min(matrices.shape[-2:])
    return _gram_iteration(matrices, n_iter) * _rounding_allowance(dim, n_iter, 1, matrices.real.dtype)


def _conv_symbol(operator, dtype):
    r"""Fourier symbol of the layer's convolution made circular: a batch of complex matrices.

    The kernel is dilated (zeros between taps), padded to a multiple of the
    stride and split into its polyphase components, so that the strided
    convolution on a circular signal of :math:`s M` points becomes a stride-1
    circular convolution on :math:`M` points with :math:`s` times more input
    channels; its matrix is block-diagonalised by the DFT into one
    ``(out/groups, in/groups * prod(stride))`` matrix per frequency and group.
    Returns the tensor of those matrices, shape ``(groups, *frequencies, rows, cols)``,
    and the number of frequencies of the full DFT.
    """
    module = operator.module
    weight = module.weight.to(dtype)
    stride, dilation = module.stride, module.dilation
    reach = [d * (k - 1) + 1 for k, d in zip(module.kernel_size, dilation, strict=True)]
    phases = [-(-r // s) for r, s in zip(reach, stride, strict=True)]
    grid = [-(-n // s) for n, s in zip(operator.padded_size, stride, strict=True)]
    out_ch, in_per_group = weight.shape[:2]
    kernel = weight.new_zeros((out_ch, in_per_group, *(a * s for a, s in zip(phases, stride, strict=True))))
    taps = tuple(slice(0, r, d) for r, d in zip(reach, dilation, strict=True))
    kernel[(slice(None), slice(None), *taps)] = weight
    split = [n for a, s in zip(phases, stride, strict=True) for n in (a, s)]
    dims = len(stride)
    kernel = kernel.reshape(out_ch, in_per_group, *split)
    kernel = kernel.permute(0, 1, *(3 + 2 * i for i in range(dims)), *(2 + 2 * i for i in range(dims)))
    kernel = kernel.reshape(out_ch, in_per_group * math.prod(stride), *phases)
    spectrum = torch.fft.rfftn(kernel, s=grid, dim=tuple(range(2, 2 + dims)))
    groups = module.groups
    spectrum = spectrum.reshape(groups, out_ch // groups, *spectrum.shape[1:])
    spectrum = spectrum.movedim((1, 2), (-2, -1))
    return spectrum, math.prod(grid)


def operator_norm_bound(module, input_shape=None, n_iter=10, dtype=torch.float64):
    r"""Certified upper bound of the spectral norm of a layer's operator; never below the true value.

    Parameters
    ----------
    module : torch.nn.Linear, torch.nn.Conv1d or torch.nn.Conv2d
    input_shape : sequence of int, optional
        One sample's shape (required for convolutions), see :class:`LayerOperator`.
    n_iter : int
        Gram steps; more steps tighten the bound (see :func:`gram_iteration_bound`).
    dtype : torch.dtype
        Computation precision (float64 by default; the rounding allowance
        follows it).

    Returns
    -------
    torch.Tensor
        0-d tensor on the weight's device, differentiable with respect to the
        weight; computed without host synchronisation.

    Notes
    -----
    *Linear*: :func:`gram_iteration_bound` on :math:`W`.

    *Convolution* (any stride, padding, padding mode, dilation, groups): write
    the layer as :math:`A = V P` (padding, then valid convolution on the
    :math:`N_i` padded points per spatial dimension) and let
    :math:`C` be the same strided convolution on a *circular* signal of
    :math:`N'_i = s_i \lceil N_i / s_i \rceil \ge N_i` points. Every valid
    output window of :math:`V` ends before :math:`N_i`, so never wraps
    around: appending zeros to the padded signal and keeping the valid
    outputs shows that :math:`V` is a submatrix of :math:`C` (rows and
    columns removed), hence :math:`\|A\|_2 \le \|C\|_2\,\|P\|_2`, with
    :math:`\|P\|_2 = 1` for zero padding (see
    :meth:`LayerOperator.padding_gain` for the other modes). The polyphase
    split turns :math:`C` into a stride-1 circular convolution with
    :math:`\prod_i s_i` times more input channels (exactly, no bound), whose
    matrix the DFT block-diagonalises (Sedghi et al., ICLR 2019):
    :math:`\|C\|_2 = \max_\omega \sigma_{\max}(\hat K(\omega))`, the largest
    over frequencies :math:`\omega` and groups of the symbol's singular
    values. Each :math:`\sigma_{\max}(\hat K(\omega))` is bounded by Gram
    iteration (Delattre et al., ICML 2023); the real kernel's conjugate
    symmetry halves the frequencies.
    """
    n_iter = check_iterations(n_iter)
    operator = LayerOperator(module, input_shape)
    if operator.is_linear:
        matrices, fft_points = module.weight.to(dtype), 1
    else:
        matrices, fft_points = _conv_symbol(operator, dtype)
    bounds = _gram_iteration(matrices, n_iter)
    allowance = _rounding_allowance(min(matrices.shape[-2:]), n_iter, fft_points, dtype)
    return bounds.max() * (allowance * operator.padding_gain())


# ---- power iteration ------------------------------------------------------------------------------


def _normalized(x, fallback):
    """``x / ||x||``, or ``fallback`` where ``x`` is zero (no host synchronisation)."""
    norm = torch.linalg.vector_norm(x)
    return torch.where(norm > 0, x / torch.where(norm > 0, norm, torch.ones_like(norm)), fallback)


class PowerIteration:
    r"""Persistent power iteration on a layer's operator :math:`A` and its adjoint.

    Keeps unit vectors :math:`u` (output space) and :math:`v` (input space).
    One step sets :math:`u \leftarrow Av/\|Av\|` then
    :math:`v \leftarrow A^\top u/\|A^\top u\|`, the adjoint coming from
    autograd (a vector-Jacobian product), so every padding mode, stride,
    dilation and group count is handled by the layer's own convolution.
    Between calls the vectors persist, so a few steps per training step track
    the top singular pair as the weights move (as in Miyato et al., 2018).

    Parameters
    ----------
    module : torch.nn.Linear, torch.nn.Conv1d or torch.nn.Conv2d
    input_shape : sequence of int, optional
        One sample's shape (required for convolutions).
    seed : int
        Seed of the random starting vector.

    Notes
    -----
    :meth:`sigma` is :math:`\hat\sigma = \langle u, A_W v\rangle = \|A^\top u\|`
    with :math:`u, v` held fixed: always :math:`\le \sigma_{\max}(A)` (a lower
    bound, equal at convergence), and linear in :math:`W`, with gradient
    :math:`u v^\top` for a Linear layer (the gradient of :math:`\sigma_{\max}`
    when the top singular value is simple) and its image through the
    convolution for a conv layer.
    """

    def __init__(self, module, input_shape=None, seed=0):
        self.operator = LayerOperator(module, input_shape)
        weight = module.weight
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn((1, *self.operator.input_shape), generator=generator, dtype=torch.float64)
        self.v = (v / torch.linalg.vector_norm(v)).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            out = self.operator.apply(self.v)
        self.u = _normalized(out, torch.zeros_like(out))

    def step(self, n_iter=1):
        """Run ``n_iter`` power iterations in place; return the current estimate (detached 0-d tensor)."""
        weight = self.operator.module.weight
        u, v = self.u.to(weight), self.v.to(weight)
        n_iter = check_iterations(n_iter)
        with torch.no_grad():
            if n_iter == 0:
                return (u * self.operator.apply(v)).sum()
            for _ in range(n_iter):
                image, pullback = torch.func.vjp(self.operator.apply, v)
                u = _normalized(image, u)
                (back,) = pullback(u)
                v = _normalized(back, v)
            self.u, self.v = u, v
            return torch.linalg.vector_norm(back)  # = <u, A v> for the new v

    def sigma(self):
        r"""Differentiable estimate :math:`\langle u, A_W v\rangle` of the norm, gradient :math:`u v^\top`."""
        return (self.u * self.operator.apply(self.v)).sum()

    def state_dict(self):
        """The persistent vectors, as tensors (save them with the model's state)."""
        return {"u": self.u.detach().clone(), "v": self.v.detach().clone()}

    def load_state_dict(self, state):
        """Restore vectors saved by :meth:`state_dict`; their shapes must match this layer's operator."""
        for key, current in (("u", self.u), ("v", self.v)):
            if key not in state or tuple(state[key].shape) != tuple(current.shape):
                raise ValueError(
                    f"state[{key!r}] must be a tensor of shape {tuple(current.shape)}; "
                    "it was saved for another layer or input shape"
                )
        self.u = state["u"].to(self.u).clone()
        self.v = state["v"].to(self.v).clone()


def operator_norm_estimate(module, input_shape=None, n_iter=100, seed=0):
    """Power-iteration estimate of a layer's operator norm after ``n_iter`` steps (a lower bound).

    A one-off use of :class:`PowerIteration`; returns a detached 0-d tensor.
    """
    return PowerIteration(module, input_shape, seed=seed).step(n_iter)


def operator_norm_exact(module, input_shape=None):
    """Spectral norm of the layer's dense operator matrix (built by autograd), by SVD in float64.

    For small shapes only (tests, benchmarks): raises ``ValueError`` when the
    matrix would exceed 5e7 entries; use :func:`operator_norm_bound` instead.
    """
    operator = LayerOperator(module, input_shape)
    n_in, n_out = math.prod(operator.input_shape), math.prod(operator.output_shape)
    if n_in * n_out > _MAX_DENSE_ENTRIES:
        raise ValueError(
            f"the dense operator would have {n_in} x {n_out} entries; "
            "use operator_norm_bound for layers of this size"
        )
    weight = module.weight.detach().to(torch.float64)
    basis = torch.eye(n_in, dtype=torch.float64, device=weight.device).reshape(n_in, *operator.input_shape)
    with torch.no_grad():
        columns = operator.apply(basis, weight).reshape(n_in, n_out)
    return torch.linalg.matrix_norm(columns.T, ord=2)


def layer_input_shapes(model, input_shape):
    """One sample's input shape for every Linear/Conv1d/Conv2d layer of ``model``, by one dummy forward.

    The forward runs in eval mode without gradients on zeros of shape
    ``(1, *input_shape)`` (the modes are restored afterwards, so batch-norm
    statistics are untouched). Returns ``{name: shape}`` for the layers the
    forward reaches; a layer applied to inputs of different shapes is an error.
    """
    input_shape = _check_shape(input_shape, "input_shape")
    shapes, hooks = {}, []

    def record(name):
        def hook(_module, args):
            shape = tuple(args[0].shape[1:])
            if shapes.setdefault(name, shape) != shape:
                raise ValueError(
                    f"layer {name!r} is applied to inputs of shapes {shapes[name]} and {shape}; "
                    "its operator norm depends on the shape, so share no conv layer across sizes"
                )

        return hook

    modes = {module: module.training for module in model.modules()}
    reference = next(model.parameters(), None)
    kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    try:
        for name, module in model.named_modules():
            if is_layer(module):
                hooks.append(module.register_forward_pre_hook(record(name)))
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), **kwargs))
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.train(training)
    return shapes
