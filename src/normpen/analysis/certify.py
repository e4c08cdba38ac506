r"""Certified L2 robustness from a Lipschitz bound, and a strong PGD attack to test it.

If every logit difference of a network :math:`f` moves by at most
:math:`\sqrt2\,L\,\|\delta\|_2` when the input moves by :math:`\delta` (true
when :math:`f` is :math:`L`-Lipschitz in L2, because
:math:`|(e_i - e_j)^\top (f(x+\delta) - f(x))| \le \|e_i - e_j\|_2\, L \|\delta\|_2`),
a prediction whose top-two margin :math:`m(x) = f_{(1)}(x) - f_{(2)}(x)` exceeds
:math:`\sqrt2 L\varepsilon` cannot change within the ball of radius
:math:`\varepsilon` (Tsuzuku et al., NeurIPS 2018): the certified radius is
:math:`m(x)/(\sqrt2 L)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import torch

from normpen._array import check_nonnegative, check_positive
from normpen.analysis.lipschitz import LipschitzBound, lipschitz_bound
from normpen.analysis.operator_norm import check_iterations

__all__ = ["certified_radius", "certified_accuracy", "pgd_attack", "AttackResult", "empirical_radius"]


def _lipschitz_value(model, input_shape, lipschitz):
    if lipschitz is None:
        return lipschitz_bound(model, input_shape).bound
    if isinstance(lipschitz, LipschitzBound):
        return lipschitz.bound
    return check_positive(lipschitz, "lipschitz")


def _check_batch(x, name="x"):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(
            f"{name} must be a floating torch tensor with a batch dimension, shape (B, *input_shape); "
            f"got {type(x).__name__}{'' if not isinstance(x, torch.Tensor) else tuple(x.shape)}"
        )


def _check_labels(y, n_samples, n_classes, name="y"):
    """Raise unless ``y`` is an integer tensor of ``n_samples`` class indices in ``[0, n_classes)``."""
    if not isinstance(y, torch.Tensor) or y.shape != (n_samples,) or y.is_floating_point() or y.is_complex():
        raise ValueError(
            f"{name} must be an integer tensor of {n_samples} class indices, one per row of X; got "
            f"{type(y).__name__}{'' if not isinstance(y, torch.Tensor) else f' {tuple(y.shape)} {y.dtype}'}"
        )
    if n_samples and not (0 <= int(y.min()) and int(y.max()) < n_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes}) for a model with {n_classes} logits; got "
            f"values from {int(y.min())} to {int(y.max())}: map the labels to 0..{n_classes - 1}"
        )


def _check_logits(logits):
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"the model must output logits of shape (B, n_classes) with n_classes >= 2, got "
            f"{tuple(logits.shape)}"
        )


def certified_radius(model, x, *, lipschitz=None):
    r"""Radius :math:`m(x)/(\sqrt2 L)` of the L2 ball around each input where the prediction cannot change.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``(B, n_classes)``; in eval mode.
    x : torch.Tensor
        Inputs, shape ``(B, *input_shape)``.
    lipschitz : float or LipschitzBound, optional
        An upper bound :math:`L` of the model's L2 Lipschitz constant; by default
        :func:`~normpen.analysis.lipschitz.lipschitz_bound` on ``x.shape[1:]``.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``: every perturbation with :math:`\|\delta\|_2` *below*
        the radius keeps the predicted class (ties at the top give radius 0).
    """
    _check_batch(x)
    bound = _lipschitz_value(model, tuple(x.shape[1:]), lipschitz)
    with torch.no_grad():
        logits = model(x)
    _check_logits(logits)
    top = torch.topk(logits, 2, dim=1).values
    return (top[:, 0] - top[:, 1]) / (math.sqrt(2.0) * bound)


def certified_accuracy(model, X, y, eps, *, lipschitz=None, batch_size=1024):
    r"""Fraction of samples predicted correctly with certified radius above ``eps`` (L2).

    Each counted sample keeps its correct prediction under every perturbation
    with :math:`\|\delta\|_2 \le \varepsilon`. ``eps = 0`` gives the clean
    accuracy minus exact ties. The Lipschitz bound is computed once.
    """
    _check_batch(X, "X")
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one sample: the accuracy of an empty set is undefined")
    eps = check_nonnegative(eps, "eps")
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}; use e.g. batch_size=1024")
    with torch.no_grad():
        n_classes = model(X[:1]).shape[-1]
    _check_labels(y, X.shape[0], n_classes)
    bound = _lipschitz_value(model, tuple(X.shape[1:]), lipschitz)
    certified = 0
    for start in range(0, X.shape[0], batch_size):
        xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        with torch.no_grad():
            correct = model(xb).argmax(dim=1) == yb
        radius = certified_radius(model, xb, lipschitz=bound)
        certified += int((correct & (radius > eps)).sum())
    return certified / X.shape[0]


@dataclass(frozen=True)
class AttackResult:
    """Outcome of :func:`pgd_attack`: the strongest point found per sample and whether it is misclassified."""

    x_adv: torch.Tensor
    success: torch.Tensor
    margin: torch.Tensor


def _margin(logits, y, target=None):
    r"""Margin :math:`f_y - \max_{j \ne y} f_j` (negative: misclassified), or :math:`f_y - f_t` (target)."""
    true = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        return true - logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return true - logits.gather(1, target[:, None])[:, 0]


def _per_sample(v, x):
    """A ``(B,)`` vector reshaped to broadcast against the batch ``x``."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _project_ball(delta, radius):
    """``delta`` scaled onto the balls of the given radii where it lies outside; norms in float64 so that
    the scaled ``delta`` overshoots its radius by at most the rounding of one product, ε/2 relative."""
    norms = torch.linalg.vector_norm(delta.flatten(1).double(), dim=1)
    radius = radius.double()
    scale = torch.where(norms > radius, radius / torch.where(norms > 0, norms, 1.0), 1.0)
    return delta * _per_sample(scale, delta).to(delta.dtype)


def _rounding_safe_radius(x, radius):
    r"""Radii of the balls whose points, added to ``x`` in its dtype, stay within ``radius`` of ``x``.

    Rounding :math:`x + \delta` moves each coordinate by at most half an ulp,
    :math:`\tfrac\epsilon2|x_i + \delta_i|`, so the stored point by at most
    :math:`\tfrac\epsilon2(\|x\| + r)`; the ball is shrunk by twice that,
    :math:`\epsilon(\|x\| + r)`, which also covers the ε/2 relative overshoot of
    :func:`_project_ball` (ε the dtype's machine epsilon; 0 where nothing is left).
    """
    eps = torch.finfo(x.dtype).eps
    norms = torch.linalg.vector_norm(x.flatten(1).double(), dim=1)
    radius = radius.double()
    return torch.clamp(radius - eps * (norms + radius), min=0.0)


def _random_in_ball(x, radius, generator):
    """Points uniform in the L2 balls of the given radii around zero."""
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    direction = direction / _per_sample(torch.linalg.vector_norm(direction.flatten(1), dim=1), direction)
    dim = math.prod(x.shape[1:])
    r = torch.rand(x.shape[0], generator=generator, dtype=torch.float64) ** (1.0 / dim)
    return _project_ball((direction * _per_sample(r * radius.double(), direction)).to(x), radius)


def pgd_attack(model, x, y, eps, *, steps=100, restarts=5, targets=3, step_size=0.5, seed=0):
    r"""L2 projected gradient descent on the margin, untargeted and multi-targeted, with random restarts.

    Minimises a margin over :math:`\|\delta\|_2 \le \varepsilon`: first the
    untargeted :math:`f_y(x+\delta) - \max_{j\ne y} f_j(x+\delta)` (the
    Carlini-Wagner objective), then, one run each, the targeted
    :math:`f_y - f_t` for the ``targets`` most likely wrong classes :math:`t`
    at the clean input (the untargeted margin is concave in :math:`\delta`
    for a linear model and its minimum over the ball is at one of several
    boundaries; a targeted run goes to each). Steps are normalised
    gradients of length
    :math:`\alpha_k = \text{step\_size}\cdot\varepsilon\,(1+\cos(\pi k/K))/2`
    (long first, annealed to zero), each followed by the projection onto the
    ball (shrunk by the rounding of :math:`x + \delta` in ``x``'s dtype, so that every
    returned point lies within ``eps`` of ``x`` exactly, not only up to that rounding:
    :func:`_rounding_safe_radius`). Every run starts once at :math:`\delta = 0` and ``restarts - 1``
    times at uniform random points of the ball; samples already broken are
    not attacked again. There is no clipping to a data range: the
    certificate holds in all of :math:`\mathbb R^d`, and so does the attack.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits; put it in eval mode.
    x, y : torch.Tensor
        Inputs ``(B, *input_shape)`` and their labels ``(B,)``.
    eps : float or torch.Tensor
        Radius, one for all or one per sample ``(B,)``.
    steps : int
        Gradient steps per run.
    restarts : int
        Starts per objective (the first at zero).
    targets : int
        Number of targeted objectives (capped at ``n_classes - 1``).
    step_size : float
        Initial step length as a fraction of ``eps``.
    seed : int
        Seed of the random starting points.

    Returns
    -------
    AttackResult
        ``x_adv``: per sample, the point of smallest (untargeted) margin
        found within the ball; ``margin``: that margin; ``success``:
        ``margin < 0``.
    """
    _check_batch(x)
    if not isinstance(eps, torch.Tensor):
        eps = torch.full((x.shape[0],), check_nonnegative(eps, "eps"), dtype=x.dtype, device=x.device)
    if eps.shape != x.shape[:1] or bool((eps < 0).any()):
        raise ValueError(f"eps must be a float or a tensor of {x.shape[0]} nonnegative radii")
    targets = check_iterations(targets, "targets")
    if check_iterations(steps, "steps") < 1 or check_iterations(restarts, "restarts") < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    step_size = check_positive(step_size, "step_size")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = model(x)
    _check_logits(logits)
    _check_labels(y, x.shape[0], logits.shape[1])
    best_margin = _margin(logits, y)
    best_x = x.clone()
    ranked = logits.scatter(1, y[:, None], -math.inf).argsort(dim=1, descending=True)
    objectives = [None] + [ranked[:, k] for k in range(min(targets, logits.shape[1] - 1))]
    for target in objectives:
        for restart in range(restarts):
            todo = torch.nonzero(best_margin >= 0).flatten()
            if todo.numel() == 0:
                return AttackResult(best_x, best_margin < 0, best_margin)
            xs, ys = x[todo], y[todo]
            radius = _rounding_safe_radius(xs, eps[todo])
            goal = None if target is None else target[todo]
            delta = torch.zeros_like(xs) if restart == 0 else _random_in_ball(xs, radius, generator)
            for k in range(steps + 1):
                delta.requires_grad_(True)
                logits = model(xs + delta)
                (grad,) = torch.autograd.grad(_margin(logits, ys, goal).sum(), delta)
                with torch.no_grad():
                    margin = _margin(logits, ys)
                    better = margin < best_margin[todo]
                    best_margin[todo] = torch.where(better, margin, best_margin[todo])
                    best_x[todo] = torch.where(_per_sample(better, xs), xs + delta, best_x[todo])
                    length = (step_size * radius * (1 + math.cos(math.pi * k / steps)) / 2).to(xs.dtype)
                    norms = torch.linalg.vector_norm(grad.flatten(1), dim=1)
                    direction = grad / _per_sample(torch.where(norms > 0, norms, 1.0), grad)
                    delta = _project_ball(delta - _per_sample(length, xs) * direction, radius)
    return AttackResult(best_x, best_margin < 0, best_margin)


def empirical_radius(model, x, y, *, eps_max, n_bisect=10, **attack):
    r"""Smallest L2 distance at which :func:`pgd_attack` finds a misclassified point, per sample.

    Attacks at ``eps_max``, then bisects each sample's radius ``n_bisect``
    times; every returned value is the norm of an actual adversarial example
    found, so it is an upper bound of the true minimal adversarial distance
    (and can be compared with the certified radius, a lower bound). 0 for
    samples already misclassified, ``inf`` where nothing was found within
    ``eps_max``. ``attack`` goes to :func:`pgd_attack`.
    """
    eps_max = check_positive(eps_max, "eps_max")
    n_bisect = check_iterations(n_bisect, "n_bisect")
    result = pgd_attack(model, x, y, eps_max, **attack)
    found = torch.where(result.success, _distance(result.x_adv, x), math.inf)
    lo = torch.zeros_like(found)
    for _ in range(n_bisect):
        idx = torch.nonzero(torch.isfinite(found) & (found > 0)).flatten()
        if idx.numel() == 0:
            break
        radius = (lo[idx] + found[idx]) / 2
        result = pgd_attack(model, x[idx], y[idx], radius, **attack)
        distance = torch.minimum(found[idx], _distance(result.x_adv, x[idx]))
        found[idx] = torch.where(result.success, distance, found[idx])
        lo[idx] = torch.where(result.success, lo[idx], radius)
    return found


def _distance(a, b):
    return torch.linalg.vector_norm((a - b).flatten(1), dim=1)
