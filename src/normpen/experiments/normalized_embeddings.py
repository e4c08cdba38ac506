r"""L2-normalized embeddings: what the norm of an embedding does under InfoNCE, checked by autograd.

Seed 000 ("Beyond Weight Decay: L2 in Modern Representation Learning") says
that with :math:`\hat x = x/\|x\|` inside InfoNCE the gradient on :math:`x`
has a rotational part and a radial part that grows :math:`\|x\|` when the
model is right and shrinks it when it is confused, so the norm becomes a
confidence. In the set-up the text describes (the loss computed from
:math:`\hat x`) this is false, and gradient descent does the opposite of what it
says; the text's picture holds only when the norm enters the logits. Both
cases (formulas in :mod:`normpen.analysis.contrastive`):

1. **Full normalization**, logits :math:`\hat x^\top\hat k_i/\tau`: the loss
   does not depend on :math:`\|x\|` at all, so the gradient is orthogonal to
   :math:`x` (radial part exactly 0) and scales as :math:`1/\|x\|`:
   :math:`\nabla L(cx) = \nabla L(x)/c`. No force acts on the norm; a large
   norm only slows the rotation down. With discrete steps
   :math:`x \leftarrow x - \eta\nabla L`, orthogonality gives
   :math:`\|x - \eta\nabla L\|^2 = \|x\|^2 + \eta^2\|\nabla L\|^2`: *every* step
   grows the norm, and the confused anchors, whose softmax misses the positive
   and whose gradients are therefore larger, grow fastest. This is the
   counterexample to the text: confused anchors' norms rise, never fall.
2. **The norm enters the logits**, :math:`x^\top\hat k_i/\tau`: now
   :math:`\|x\|/\tau` is an inverse temperature and
   :math:`-\partial L/\partial\|x\| = (\cos_+ - \sum_i p_i\cos_i)/\tau`,
   positive whenever the positive key is the most similar (the model is
   right) and negative when the softmax weight sits on keys more similar than
   the positive (confused), exactly as the seed describes. Along the norm the
   loss is convex, so a confused anchor's norm falls to the finite
   :math:`r^*` where the force vanishes, while a right anchor's norm grows
   without bound.

Set-up and checks
-----------------
Seeded unit keys in :math:`\mathbb R^{32}` and anchors whose directions mix
their positive key with noise (some right, some confused), with norms
log-uniform over four decades, float64. Autograd on
:func:`~normpen.analysis.contrastive.info_nce` gives the gradients; the checks
compare them with the closed forms to :math:`10^{-12}` (relative): case 1,
the radial part over the gradient norm, :math:`c\nabla L(cx) = \nabla L(x)`
for :math:`c = 10^{\pm3}`, and the closed-form gradient; case 2, the radial
part against :math:`(\cos_+ - \sum p_i\cos_i)/\tau` computed from cosines
alone. Signs: no right anchor has a negative force at any norm of the grid
(beyond rounding: it tends to 0 where the softmax is one-hot), and at
:math:`\|x\| = R\tau`, :math:`R = 10^3`, no confused anchor has a force
:math:`\ge 0` once its most similar key beats the positive by a cosine gap
:math:`\delta \ge \delta^* = W(N/e)/R` (:math:`W` Lambert's function, :math:`N` keys):
the force is :math:`\sum_i p_i(\cos_+ - \cos_i)`; the keys less similar than the
positive add at most :math:`p_+ u e^{-Ru} \le p_+/(eR)` each, the top key takes
:math:`p_+ e^{R\delta}\delta`, and :math:`R\delta e^{R\delta} > N/e` makes the sum negative
(near-ties below :math:`\delta^*` need a larger norm and are left out). The
convexity along the norm is checked on a grid of norms per anchor.

The counterexample: every anchor, put at norm 1, takes :data:`_N_STEPS` steps
of gradient descent (:math:`\eta` = :data:`_LR`) on its fully normalised InfoNCE
term. Checks: :math:`\|x_{t+1}\|^2 - \|x_t\|^2 = \eta^2\|\nabla L\|^2` to float64
rounding (relative :math:`10^{-12}`); no confused anchor ends with a norm at or
below 1 (the text predicts all of them); the mean norm growth of the confused
anchors is at least that of the right ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import lambertw

from normpen._threads import single_threaded
from normpen.analysis.contrastive import info_nce, info_nce_grad, norm_force, radial_tangential
from normpen.experiments.base import Check, Experiment, Result, Verdict

__all__ = ["EXPERIMENT", "Embeddings", "make_embeddings", "autograd_gradient", "descend", "run"]

TEMPERATURE = 0.1
_DIM, _N_KEYS = 32, 16
#: Relative slack of comparisons between autograd and a closed form (float64 rounding).
_ROUNDOFF = 1e-12
#: Norm, in units of τ, at which a confused anchor's softmax has collapsed on its most similar key.
_SHARP = 1e3
#: Cosine gap (top key over the positive) beyond which the force at ‖x‖ = _SHARP·τ is provably < 0.
_TIE_GAP = float(lambertw(_N_KEYS / np.e).real) / _SHARP
#: Learning rate and number of the gradient-descent steps of the counterexample (anchors start at norm 1).
_LR, _N_STEPS = 0.02, 20


@dataclass(frozen=True)
class _Size:
    n_anchors: int
    n_norms: int


_SIZES = {True: _Size(n_anchors=256, n_norms=25), False: _Size(n_anchors=4096, n_norms=81)}


@dataclass(frozen=True)
class Embeddings:
    """Anchors, shared keys and each anchor's positive, float64.

    Attributes
    ----------
    anchors : Tensor of shape (B, d)
    keys : Tensor of shape (N, d), unit rows
    positives : Tensor of shape (B,), int64
    """

    anchors: torch.Tensor
    keys: torch.Tensor
    positives: torch.Tensor

    @property
    def right(self) -> torch.Tensor:
        """Anchors whose most similar key is their positive."""
        return (self.anchors @ self.keys.T).argmax(dim=1) == self.positives


def make_embeddings(n_anchors: int, seed: int) -> Embeddings:
    r"""Seeded keys and anchors :math:`x = r\,(\hat k_+ + \eta)/\|\hat k_+ + \eta\|`.

    :math:`\eta \sim N(0, s^2 I/d)` with a noise level :math:`s` drawn per anchor
    from :math:`U[0.5, 8]` (from clearly right to confused) and norms :math:`r`
    log-uniform on :math:`[10^{-2}, 10^{2}]`.
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    keys = draw(_N_KEYS, _DIM)
    keys = keys / torch.linalg.vector_norm(keys, dim=1, keepdim=True)
    positives = torch.randint(0, _N_KEYS, (n_anchors,), generator=generator)
    noise_level = 0.5 + 7.5 * torch.rand(n_anchors, 1, generator=generator, dtype=torch.float64)
    direction = keys[positives] + noise_level * draw(n_anchors, _DIM) / _DIM**0.5
    direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    norms = 10.0 ** (4.0 * torch.rand(n_anchors, 1, generator=generator, dtype=torch.float64) - 2.0)
    return Embeddings(anchors=norms * direction, keys=keys, positives=positives)


def autograd_gradient(embeddings: Embeddings, anchors: torch.Tensor, normalize: str) -> torch.Tensor:
    """Gradient of every anchor's own InfoNCE term with respect to the anchor, by autograd."""
    x = anchors.detach().clone().requires_grad_(True)
    loss = info_nce(
        x, embeddings.keys, embeddings.positives, TEMPERATURE, normalize=normalize, reduction="sum"
    )
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def descend(embeddings: Embeddings, lr: float, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Gradient descent on each anchor's fully normalised InfoNCE term, every anchor started at norm 1.

    Returns the squared norms :math:`\|x_t\|^2`, shape ``(n_steps + 1, B)``, and
    the squared gradient norms :math:`\|\nabla L(x_t)\|^2`, shape ``(n_steps, B)``.
    """
    x = embeddings.anchors / torch.linalg.vector_norm(embeddings.anchors, dim=1, keepdim=True)
    squared_norms, squared_gradients = [x.square().sum(dim=1)], []
    for _ in range(n_steps):
        gradient = autograd_gradient(embeddings, x, "both")
        x = x - lr * gradient
        squared_norms.append(x.square().sum(dim=1))
        squared_gradients.append(gradient.square().sum(dim=1))
    return torch.stack(squared_norms), torch.stack(squared_gradients)


def _max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest row-wise ``‖a − b‖ / ‖b‖``."""
    return float((torch.linalg.vector_norm(a - b, dim=1) / torch.linalg.vector_norm(b, dim=1)).max())


def _full_normalization_checks(e: Embeddings) -> tuple[list[Check], torch.Tensor]:
    gradient = autograd_gradient(e, e.anchors, "both")
    radial, _ = radial_tangential(e.anchors, gradient)
    scaling_error = max(
        _max_relative(c * autograd_gradient(e, c * e.anchors, "both"), gradient) for c in (1e-3, 1e3)
    )
    closed_form = info_nce_grad(e.anchors, e.keys, e.positives, TEMPERATURE, normalize="both")
    checks = [
        Check.close(
            "x̂·k̂ logits: max |radial part| / ‖∇L‖",
            float((radial.abs() / torch.linalg.vector_norm(gradient, dim=1)).max()),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.close(
            "x̂·k̂ logits: max ‖c·∇L(cx) − ∇L(x)‖ / ‖∇L(x)‖, c = 10^±3 (∇L ∝ 1/‖x‖)",
            scaling_error,
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.close(
            "x̂·k̂ logits: max relative error of the closed-form gradient vs autograd",
            _max_relative(closed_form, gradient),
            0.0,
            atol=_ROUNDOFF,
        ),
    ]
    return checks, gradient


def _descent_checks(e: Embeddings, squared_norms, squared_gradients) -> list[Check]:
    growth = squared_norms[-1] - squared_norms[0]
    right = e.right
    return [
        Check.close(
            "x̂·k̂ logits, gradient descent: max |‖x_{t+1}‖² − ‖x_t‖² − η²‖∇L‖²| / ‖x_{t+1}‖²",
            float(
                (
                    (torch.diff(squared_norms, dim=0) - _LR**2 * squared_gradients).abs() / squared_norms[1:]
                ).max()
            ),
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.equal(
            f"x̂·k̂ logits, gradient descent: confused anchors whose norm did not grow in {_N_STEPS} steps",
            int((growth[~right] <= 0).sum()),
            0,
        ),
        Check.at_least(
            "x̂·k̂ logits, gradient descent: mean growth of ‖x‖², confused / right anchors",
            float(growth[~right].mean() / growth[right].mean()),
            1.0,
        ),
    ]


def _norm_sweep(e: Embeddings, radii: np.ndarray) -> torch.Tensor:
    """Force on the norm of every anchor's direction placed at each radius, shape ``(len(radii), B)``."""
    directions = e.anchors / torch.linalg.vector_norm(e.anchors, dim=1, keepdim=True)
    return torch.stack([norm_force(r * directions, e.keys, e.positives, TEMPERATURE) for r in radii])


def _norm_in_logits_checks(e: Embeddings, radii: np.ndarray) -> tuple[list[Check], torch.Tensor]:
    gradient = autograd_gradient(e, e.anchors, "keys")
    radial, _ = radial_tangential(e.anchors, gradient)
    force = norm_force(e.anchors, e.keys, e.positives, TEMPERATURE)
    sweep = _norm_sweep(e, radii)
    right = e.right
    directions = e.anchors / torch.linalg.vector_norm(e.anchors, dim=1, keepdim=True)
    cosines = directions @ e.keys.T
    gap = cosines.max(dim=1).values - cosines.gather(1, e.positives[:, None])[:, 0]
    sharp = norm_force(
        _SHARP * TEMPERATURE * e.anchors / torch.linalg.vector_norm(e.anchors, dim=1, keepdim=True),
        e.keys,
        e.positives,
        TEMPERATURE,
    )
    checks = [
        Check.close(
            "x·k̂ logits: max |(−∂L/∂‖x‖ by autograd) − (cos₊ − Σpᵢcosᵢ)/τ| · τ",
            float((-radial - force).abs().max()) * TEMPERATURE,
            0.0,
            atol=_ROUNDOFF,
        ),
        Check.equal(
            "x·k̂ logits: (right anchor, norm) pairs with a norm force < 0 beyond rounding",
            int((sweep[:, right] < -_ROUNDOFF / TEMPERATURE).sum()),
            0,
        ),
        Check.equal(
            f"x·k̂ logits: confused anchors (cosine gap ≥ W(N/e)/R) whose norm force is ≥ 0 at ‖x‖ = R·τ = "
            f"{_SHARP:g}τ",
            int((sharp[~right & (gap >= _TIE_GAP)] >= 0).sum()),
            0,
        ),
        Check.equal(
            "x·k̂ logits: (anchor, norm) pairs where the force grows with ‖x‖ (L not convex in ‖x‖)",
            int((torch.diff(sweep, dim=0) > _ROUNDOFF * sweep.abs().max()).sum()),
            0,
        ),
    ]
    return checks, sweep


def _figure(e, gradient_both, radii, sweep, squared_norms) -> Figure:
    """Case 1: gradient size, radial fraction, norm under gradient descent. Case 2: the norm force."""
    norms = torch.linalg.vector_norm(e.anchors, dim=1).numpy()
    gradient_norms = torch.linalg.vector_norm(gradient_both, dim=1).numpy()
    radial, _ = radial_tangential(e.anchors, gradient_both)
    right = e.right.numpy()
    fig = Figure(figsize=(14, 8.4), layout="constrained")
    (ax_size, ax_radial), (ax_descent, ax_force) = fig.subplots(2, 2)
    order = np.argsort(norms)
    ax_size.loglog(norms, gradient_norms, ".", ms=3, label="‖∇L‖ (autograd)")
    ax_size.loglog(norms[order], 1.0 / (TEMPERATURE * norms[order]), color="black", lw=1.0, label="1/(τ‖x‖)")
    ax_size.set_xlabel("‖x‖")
    ax_size.set_title("logits x̂·k̂/τ: ‖∇L‖ ∝ 1/‖x‖", fontsize=10)
    ax_size.legend(frameon=False, fontsize=9)
    eps = np.finfo(np.float64).eps
    fraction = np.maximum(radial.abs().numpy() / gradient_norms, eps / 100)
    ax_radial.loglog(norms, fraction, ".", ms=3, color="C3")
    ax_radial.axhline(eps, color="black", lw=0.8, ls="--", label="float64 ε")
    ax_radial.set_ylim(eps / 300, 1.0)
    ax_radial.set_xlabel("‖x‖")
    ax_radial.set_ylabel("|radial part| / ‖∇L‖ (exact 0 drawn at ε/100)")
    ax_radial.set_title("logits x̂·k̂/τ: ∇L ⊥ x, no force on ‖x‖", fontsize=10)
    ax_radial.legend(frameon=False, fontsize=9)
    steps = np.arange(squared_norms.shape[0])
    norms_along = np.sqrt(squared_norms.numpy())
    for is_right, color, label in ((True, "C2", "right"), (False, "C3", "confused")):
        idx = np.flatnonzero(right == is_right)
        ax_descent.plot(steps, norms_along[:, idx[:40]], color=color, lw=0.6, alpha=0.5)
        ax_descent.plot(steps, norms_along[:, idx].mean(axis=1), color=color, lw=2.5, label=f"{label}: mean")
    ax_descent.axhline(1.0, color="black", lw=0.7)
    ax_descent.set_xlabel(f"gradient-descent step (η = {_LR:g})")
    ax_descent.set_ylabel("‖x_t‖ (thin: 40 anchors of each kind)")
    ax_descent.set_title("logits x̂·k̂/τ, discrete steps: every norm grows, confused fastest", fontsize=10)
    ax_descent.legend(frameon=False, fontsize=9)
    scaled = radii / TEMPERATURE
    shown = {True: np.flatnonzero(right)[:12], False: np.flatnonzero(~right)[:12]}
    for is_right, idx in shown.items():
        color = "C2" if is_right else "C3"
        for n, j in enumerate(idx):
            label = ("right (cos₊ largest)" if is_right else "confused") if n == 0 else None
            ax_force.semilogx(scaled, sweep[:, j].numpy() * TEMPERATURE, color=color, lw=1.0, label=label)
    ax_force.axhline(0.0, color="black", lw=0.7)
    ax_force.set_xlabel("‖x‖ / τ (inverse temperature of the softmax)")
    ax_force.set_ylabel("τ · (−∂L/∂‖x‖) = cos₊ − Σ pᵢ cosᵢ")
    ax_force.set_title("logits x·k̂/τ: the norm grows when right, shrinks when confused", fontsize=10)
    ax_force.legend(frameon=False, fontsize=9)
    return fig


def run(quick: bool, seed: int) -> Result:
    """Compute the gradients of both cases by autograd and check them against the closed forms."""
    size = _SIZES[bool(quick)]
    e = make_embeddings(size.n_anchors, seed)
    radii = TEMPERATURE * np.geomspace(1e-2, _SHARP, size.n_norms)
    with single_threaded():
        checks_both, gradient_both = _full_normalization_checks(e)
        squared_norms, squared_gradients = descend(e, _LR, _N_STEPS)
        checks_keys, sweep = _norm_in_logits_checks(e, radii)
    n_right = int(e.right.sum())
    notes = (
        f"{size.n_anchors} anchors ({n_right} right, {size.n_anchors - n_right} confused) and {_N_KEYS} unit "
        f"keys in R^{_DIM}, τ = {TEMPERATURE:g}, float64; anchor norms log-uniform on [0.01, 100]; the "
        f"norm force is also evaluated at {size.n_norms} norms from 0.01τ to {_SHARP:g}τ per direction; "
        f"gradient descent: {_N_STEPS} steps of η = {_LR:g} from norm 1."
    )
    return Result(
        checks=checks_both + _descent_checks(e, squared_norms, squared_gradients) + checks_keys,
        figures={"gradients": _figure(e, gradient_both, radii, sweep, squared_norms)},
        notes=notes,
    )


EXPERIMENT = Experiment(
    name="normalized-embeddings",
    title="L2-normalized embeddings: no force on the norm, unless the norm enters the logits",
    seed_section="000 Beyond Weight Decay: L2 in Modern Representation Learning",
    claim=(
        "With x̂ = x/‖x‖ inside InfoNCE the gradient is orthogonal to x and scales as 1/‖x‖; only when the "
        "norm enters the logits (x·k̂/τ) does a radial force (cos₊ − Σpᵢcosᵢ)/τ act, positive when the "
        "model is right and negative when it is confused."
    ),
    compute=run,
    seed=0,
    verdict=Verdict(
        "refuted",
        "In the set-up the text describes (InfoNCE computed from x̂ = x/‖x‖) the gradient has no radial part, "
        "and each discrete step adds η²‖∇L‖² to ‖x‖²: every norm grows and confused anchors, whose gradients "
        "are larger, grow fastest, the opposite of the text. Its picture (norm up when right, down when "
        "confused) holds only when the norm enters the logits, x·k̂/τ.",
        evidence=(
            "x̂·k̂ logits: max |radial part| / ‖∇L‖",
            "x̂·k̂ logits, gradient descent: max |‖x_{t+1}‖² − ‖x_t‖² − η²‖∇L‖²| / ‖x_{t+1}‖²",
            f"x̂·k̂ logits, gradient descent: confused anchors whose norm did not grow in {_N_STEPS} steps",
            "x̂·k̂ logits, gradient descent: mean growth of ‖x‖², confused / right anchors",
        ),
    ),
)
