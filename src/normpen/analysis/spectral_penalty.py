r"""Spectral-norm regularisation: the penalty :math:`\lambda\sum_l\|W_l\|_2` and the spectral ball.

Both keep one :class:`~normpen.analysis.operator_norm.PowerIteration` per
layer, so each training step costs a few matrix-vector products (a forward
and a backward convolution for a conv layer) and the singular-vector
estimates improve as training goes. For a conv layer the norm is that of the
*operator* at the layer's input shape, not of the reshaped kernel. Both are
model-level rules of :class:`normpen.torch.Regularizer`, which keeps their
vectors in its ``state_dict``:

>>> reg = Regularizer(model, [Rule(SpectralPenalty(model, 1e-2, (1, 8, 8)), mode="coupled")])
>>> reg = Regularizer(model, [Rule(SpectralConstraint(model, 1.0, (1, 8, 8)), mode="constrained")])
"""

from __future__ import annotations

import torch
from torch import nn

from normpen._array import check_nonnegative, check_positive
from normpen.analysis.operator_norm import (
    PowerIteration,
    _check_shape,
    check_iterations,
    is_layer,
    layer_input_shapes,
    operator_norm_bound,
)

__all__ = ["SpectralPenalty", "SpectralConstraint"]


def _power_iterations(model, input_shape, names, seed):
    """One persistent :class:`PowerIteration` per Linear/Conv layer of ``model`` (or of ``names``)."""
    layers = {name: m for name, m in model.named_modules() if is_layer(m)}
    if names is not None:
        if isinstance(names, str):
            raise TypeError(f"names must be a list of layer names, e.g. [{names!r}]")
        missing = sorted(set(names) - set(layers))
        if missing:
            raise ValueError(f"no Linear/Conv layer named {missing} in the model; layers: {sorted(layers)}")
        layers = {name: layers[name] for name in names}
    if not layers:
        raise ValueError("the model has no Linear, Conv1d or Conv2d layer to regularise")
    convs = [name for name, m in layers.items() if type(m) is not nn.Linear]
    shapes = {}
    if convs:
        if input_shape is None:
            raise ValueError(
                f"input_shape is required: conv layers {convs} have operator norms that depend on the "
                "input size; pass the shape of one model input, e.g. (C, H, W)"
            )
        shapes = layer_input_shapes(model, _check_shape(input_shape, "input_shape"))
        unreached = [name for name in convs if name not in shapes]
        if unreached:
            raise ValueError(f"conv layers {unreached} are not used by the model's forward on {input_shape}")
    return {
        name: PowerIteration(m, None if type(m) is nn.Linear else shapes[name], seed=seed + i)
        for i, (name, m) in enumerate(layers.items())
    }


def _unwrap(model):
    """The module inside a DataParallel / DistributedDataParallel wrapper (names are the inner ones)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


class _SpectralState:
    """The persistent per-layer power iterations shared by the penalty and the constraint."""

    def __init__(self, model, input_shape, names, n_iter, seed):
        model = _unwrap(model)
        self.model = model
        self.n_iter = check_iterations(n_iter)
        self.iterations = _power_iterations(model, input_shape, names, seed)

    def _check_model(self, model):
        if _unwrap(model) is not self.model:
            raise ValueError(
                f"{type(self).__name__} was built for another model; build one per model "
                "(its singular vectors belong to that model's layers)"
            )

    def estimates(self):
        """Current detached estimate of each layer's spectral norm, ``{name: 0-d tensor}``."""
        return {name: it.step(0) for name, it in self.iterations.items()}

    def state_dict(self):
        """Persistent singular vectors of every layer, ``{name: {"u": ..., "v": ...}}`` (tensors)."""
        return {name: it.state_dict() for name, it in self.iterations.items()}

    def load_state_dict(self, state):
        """Restore vectors saved by :meth:`state_dict` (all checked before any is replaced)."""
        if set(state) != set(self.iterations):
            raise ValueError(f"state has layers {sorted(state)}, expected {sorted(self.iterations)}")
        backup = self.state_dict()
        try:
            for name, it in self.iterations.items():
                it.load_state_dict(state[name])
        except ValueError:
            for name, it in self.iterations.items():
                it.load_state_dict(backup[name])
            raise


class SpectralPenalty(_SpectralState):
    r"""The penalty :math:`\lambda\sum_l \sigma_{\max}(A_l)` on a model's layers: ``model -> tensor``.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose Linear/Conv1d/Conv2d layers are penalised.
    lam : float
        Strength :math:`\lambda \ge 0`.
    input_shape : sequence of int, optional
        Shape of one model input (no batch dimension); required when the
        model has conv layers: one dummy forward records each layer's input
        shape.
    names : iterable of str, optional
        Only these layers (names from ``model.named_modules()``); all by default.
    n_iter : int
        Power iterations per call (1 is the usual choice in training: the
        vectors persist between steps).
    seed : int
        Seed of the starting vectors.

    Notes
    -----
    Each call runs ``n_iter`` power iterations without gradient, then
    returns :math:`\lambda\sum_l \langle u_l, A_{W_l} v_l\rangle` with the
    vectors held fixed. Its gradient with respect to a Linear layer's
    weight is :math:`\lambda u_l v_l^\top`, the gradient of
    :math:`\lambda\sigma_{\max}(W_l)` at convergence; for a conv layer it is
    the same quantity pulled back through the convolution. The value is a
    lower bound of the true sum (see
    :func:`~normpen.analysis.operator_norm.operator_norm_bound` for a
    certified upper bound).
    """

    def __init__(self, model, lam, input_shape=None, *, names=None, n_iter=1, seed=0):
        self.lam = check_nonnegative(lam, "lam")
        super().__init__(model, input_shape, names, n_iter, seed)

    def __call__(self, model):
        self._check_model(model)
        total = 0.0
        for it in self.iterations.values():
            it.step(self.n_iter)
            total = total + it.sigma()
        return self.lam * total


class SpectralConstraint(_SpectralState):
    r"""In-place projection of every layer onto the spectral ball :math:`\{W : \sigma_{\max}(A_W) \le r\}`.

    A model-level constraint: ``Rule(constraint, mode="constrained")`` has
    :class:`~normpen.torch.Regularizer` call :meth:`project_` after every
    optimizer step (or call it yourself). Each call runs ``n_iter`` power
    iterations per layer, then

    - ``mode="rescale"``: :math:`W \leftarrow W\min(1, r/\hat\sigma)`, any layer;
    - ``mode="clip"``: :math:`W \leftarrow W - \max(\hat\sigma - r, 0)\,u v^\top`,
      Linear layers only: the top singular value is clipped to :math:`r` and
      the others are kept, which is the Euclidean (Frobenius) projection
      onto the ball when only the top singular value exceeds :math:`r`. A
      convolution's singular vectors live in the unrolled operator, which no
      kernel change of rank one reproduces, so conv layers need ``"rescale"``.

    With ``certified=True`` (rescale only), :math:`\hat\sigma` is the
    certified upper bound of
    :func:`~normpen.analysis.operator_norm.operator_norm_bound` (the power
    iterations are skipped), and every layer is inside the ball afterwards,
    up to the rounding of one multiplication in the weight's dtype; the power-iteration
    estimate (default) is a lower bound, so the ball is reached as the
    iteration converges. Everything stays on the device: no host
    synchronisation.
    """

    def __init__(
        self,
        model,
        radius,
        input_shape=None,
        *,
        mode="rescale",
        certified=False,
        names=None,
        n_iter=1,
        seed=0,
    ):
        self.radius = check_positive(radius, "radius")
        if mode not in ("rescale", "clip"):
            raise ValueError(f"mode must be 'rescale' or 'clip', got {mode!r}")
        if certified and mode != "rescale":
            raise ValueError(
                "certified=True needs mode='rescale': only rescaling is driven by an upper bound"
            )
        super().__init__(model, input_shape, names, n_iter, seed)
        convs = [name for name, it in self.iterations.items() if not it.operator.is_linear]
        if mode == "clip" and convs:
            raise ValueError(
                f"mode='clip' works on Linear layers only; conv layers {convs} need mode='rescale' "
                "(or leave them out with names=...)"
            )
        self.mode = mode
        self.certified = certified

    def project_(self, model):
        """Project every layer of ``model`` (the one it was built for) onto the ball, in place."""
        self._check_model(model)
        with torch.no_grad():
            for it in self.iterations.values():
                weight = it.operator.module.weight
                sigma = self._bound(it) if self.certified else it.step(self.n_iter)
                if self.mode == "rescale":
                    weight.mul_(torch.clamp(self.radius / sigma, max=1.0))
                else:
                    excess = torch.clamp(sigma - self.radius, min=0.0)
                    weight.sub_(excess * torch.outer(it.u.reshape(-1), it.v.reshape(-1)))

    def norm(self, model):
        """The largest layer norm as the projection sees it, a detached 0-d tensor; runs no iteration.

        The certified bound with ``certified=True``, else the current
        power-iteration estimates (lower bounds): what a report shows
        against the radius.
        """
        self._check_model(model)
        with torch.no_grad():
            sigmas = [self._bound(it) if self.certified else it.step(0) for it in self.iterations.values()]
        return torch.stack([s.to(sigmas[0]) for s in sigmas]).max()

    @staticmethod
    def _bound(iteration):
        return operator_norm_bound(iteration.operator.module, iteration.operator.input_shape)
