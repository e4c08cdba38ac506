"""InfoNCE and its gradient split: against cross-entropy written out, autograd and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normpen.analysis.contrastive import (
    NORMALIZATIONS,
    info_nce,
    info_nce_grad,
    info_nce_probabilities,
    norm_force,
    radial_tangential,
)


def _problem(rng, batch=5, n_keys=7, dim=4, per_anchor=False, scale=1.0, dtype=torch.float64):
    anchors = torch.as_tensor(scale * rng.standard_normal((batch, dim)), dtype=dtype)
    shape = (batch, n_keys, dim) if per_anchor else (n_keys, dim)
    keys = torch.as_tensor(rng.standard_normal(shape), dtype=dtype)
    positives = torch.as_tensor(rng.integers(0, n_keys, batch))
    return anchors, keys, positives


def _written_out(anchors, keys, positives, tau, normalize):
    """−log softmax of the positive, with numpy and loops: the definition, not the implementation."""
    a, k = anchors.numpy(), keys.numpy()
    losses = []
    for b in range(a.shape[0]):
        x = a[b] / np.linalg.norm(a[b]) if normalize == "both" else a[b]
        kb = k if k.ndim == 2 else k[b]
        if normalize != "none":
            kb = kb / np.linalg.norm(kb, axis=1, keepdims=True)
        s = kb @ x / tau
        losses.append(-(s[positives[b]] - s.max() - math.log(np.exp(s - s.max()).sum())))
    return np.array(losses)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("per_anchor", [False, True])
def test_info_nce_is_the_cross_entropy_of_the_positive(rng, normalize, per_anchor):
    anchors, keys, positives = _problem(rng, per_anchor=per_anchor)
    loss = info_nce(anchors, keys, positives, 0.2, normalize=normalize, reduction="none")
    # float64 throughout: logits of 4-term dots, a logsumexp of 7 terms, each a few eps relative (~1e-15)
    np.testing.assert_allclose(
        loss.numpy(), _written_out(anchors, keys, positives, 0.2, normalize), rtol=1e-13
    )
    mean = info_nce(anchors, keys, positives, 0.2, normalize=normalize)
    total = info_nce(anchors, keys, positives, 0.2, normalize=normalize, reduction="sum")
    assert float(mean) == pytest.approx(float(loss.mean()), rel=1e-14)
    assert float(total) == pytest.approx(float(loss.sum()), rel=1e-14)
    p = info_nce_probabilities(anchors, keys, positives, 0.2, normalize=normalize)
    np.testing.assert_allclose(p.sum(dim=1).numpy(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(-torch.log(p[torch.arange(5), positives]).numpy(), loss.numpy(), rtol=1e-12)


def test_simclr_in_batch_negatives_are_shared_keys_with_positives_on_the_diagonal(rng):
    z1, z2 = (torch.from_numpy(rng.standard_normal((6, 3))) for _ in range(2))
    expected = torch.nn.functional.cross_entropy(
        torch.nn.functional.normalize(z1) @ torch.nn.functional.normalize(z2).T / 0.5, torch.arange(6)
    )
    torch.testing.assert_close(info_nce(z1, z2, torch.arange(6), 0.5), expected, rtol=1e-14, atol=0)


def test_shared_keys_and_the_same_keys_repeated_per_anchor_agree(rng):
    anchors, keys, positives = _problem(rng)
    repeated = keys.expand(anchors.shape[0], *keys.shape)
    for normalize in NORMALIZATIONS:
        torch.testing.assert_close(
            info_nce_grad(anchors, keys, positives, 0.3, normalize=normalize),
            info_nce_grad(anchors, repeated, positives, 0.3, normalize=normalize),
        )


def _autograd(anchors, keys, positives, tau, normalize):
    x = anchors.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(info_nce(x, keys, positives, tau, normalize=normalize, reduction="sum"), x)
    return g


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 6),
    n_keys=st.integers(1, 8),
    dim=st.integers(1, 6),
    log_scale=st.floats(-3, 3),
    tau=st.sampled_from([0.05, 0.5, 2.0]),
    per_anchor=st.booleans(),
    normalize=st.sampled_from(NORMALIZATIONS),
)
def test_closed_form_gradient_equals_autograd(
    seed, batch, n_keys, dim, log_scale, tau, per_anchor, normalize
):
    rng = np.random.default_rng(seed)
    scale = 10.0**log_scale if normalize != "none" else 1.0
    anchors, keys, positives = _problem(rng, batch, n_keys, dim, per_anchor, scale)
    expected = _autograd(anchors, keys, positives, tau, normalize)
    got = info_nce_grad(anchors, keys, positives, tau, normalize=normalize)
    # the size of the gradient before any cancellation: |k| / τ, divided by ‖x‖ when x is normalised
    scale = float(keys.abs().max()) / tau
    if normalize == "both":
        scale /= float(torch.linalg.vector_norm(anchors, dim=1).min())
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12 * scale)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), log_scale=st.floats(-4, 4), c=st.floats(1e-3, 1e3))
def test_full_normalization_gradient_is_tangential_and_scales_as_one_over_the_norm(seed, log_scale, c):
    rng = np.random.default_rng(seed)
    anchors, keys, positives = _problem(rng, scale=10.0**log_scale)
    g = _autograd(anchors, keys, positives, 0.1, "both")
    radial, tangential = radial_tangential(anchors, g)
    norms = torch.linalg.vector_norm(g, dim=1)
    assert torch.all(radial.abs() <= 1e-13 * norms)
    torch.testing.assert_close(tangential, g, rtol=1e-12, atol=1e-14 * float(norms.max()))
    torch.testing.assert_close(c * _autograd(c * anchors, keys, positives, 0.1, "both"), g, rtol=1e-9, atol=0)


def test_the_norm_force_is_minus_the_radial_autograd_gradient_and_positive_when_right(rng):
    anchors, keys, positives = _problem(rng, batch=200, n_keys=5, dim=3)
    g = _autograd(anchors, keys, positives, 0.3, "keys")
    radial, _ = radial_tangential(anchors, g)
    force = norm_force(anchors, keys, positives, 0.3)
    torch.testing.assert_close(force, -radial, rtol=1e-12, atol=1e-14)
    unit_keys = torch.nn.functional.normalize(keys)
    right = (anchors @ unit_keys.T).argmax(dim=1) == positives
    assert right.any() and (~right).any()
    assert torch.all(force[right] >= -1e-15)
    # a confused anchor with a sharp softmax (large norm) is pushed to a smaller norm
    sharp = norm_force(1e4 * torch.nn.functional.normalize(anchors), keys, positives, 0.3)
    assert torch.all(sharp[~right] < 0)


def test_the_loss_is_convex_along_the_norm_with_second_derivative_the_cosine_variance(rng):
    anchors, keys, positives = _problem(rng, batch=4)
    direction = torch.nn.functional.normalize(anchors)
    unit_keys = torch.nn.functional.normalize(keys)
    tau, r, h = 0.2, 1.7, 1e-4

    def loss(radius):
        return info_nce(radius * direction, keys, positives, tau, normalize="keys", reduction="none")

    second = (loss(r + h) - 2 * loss(r) + loss(r - h)) / h**2
    p = info_nce_probabilities(r * direction, keys, positives, tau, normalize="keys")
    cosines = direction @ unit_keys.T
    variance = (p * cosines**2).sum(1) - (p * cosines).sum(1) ** 2
    # central second difference: truncation h^2 f4 / 12 ~ 1e-9 f4 (f4 the fourth derivative) and rounding
    # 4 eps |f| / h^2 ~ 1e-7 (|f| <= ~10); rtol 1e-5 of the second derivative (variance / tau^2) covers both
    torch.testing.assert_close(second, variance / tau**2, rtol=1e-5, atol=1e-8)
    first = (loss(r + h) - loss(r - h)) / (2 * h)
    # central first difference: truncation h^2 f3 / 6 ~ 2e-9 f3 and rounding eps |f| / h ~ 2e-11 |f|
    torch.testing.assert_close(-first, norm_force(r * direction, keys, positives, tau), rtol=1e-7, atol=1e-10)


def test_float32_in_float32_out(rng):
    anchors, keys, positives = _problem(rng, dtype=torch.float32)
    assert info_nce(anchors, keys, positives).dtype == torch.float32
    g = info_nce_grad(anchors, keys, positives)
    assert g.dtype == torch.float32
    reference = info_nce_grad(anchors.double(), keys.double(), positives)
    # float32: dots of 4 terms, a softmax of 7, a weighted sum of 7 keys: ~ (4 + 7 + 7) * 2**-24 ~ 1e-6
    # relative to |k| / tau (~ 10 here, so ~1e-5 absolute); rtol 1e-4, atol 1e-5 is that with 2-10x room
    torch.testing.assert_close(g.double(), reference, rtol=1e-4, atol=1e-5)


def test_radial_tangential_rebuilds_g_with_an_orthogonal_tangential_part(rng):
    x, g = (torch.from_numpy(rng.standard_normal((8, 5))) for _ in range(2))
    radial, tangential = radial_tangential(x, g)
    torch.testing.assert_close(radial[:, None] * torch.nn.functional.normalize(x) + tangential, g)
    torch.testing.assert_close(
        (tangential * x).sum(1), torch.zeros(8, dtype=torch.float64), atol=1e-14, rtol=0
    )


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"anchors": np.ones((3, 2))}, TypeError, "anchors must be a torch.Tensor"),
        ({"anchors": torch.ones(3, 2, 1, dtype=torch.float64)}, ValueError, "2-D floating"),
        ({"keys": torch.ones(4, 5, dtype=torch.float64)}, ValueError, r"keys must have shape \(N, 2\)"),
        ({"keys": torch.ones(4, 2, dtype=torch.float32)}, TypeError, "same dtype"),
        ({"positives": torch.tensor([0, 1, 4])}, ValueError, r"positives must lie in \[0, 3\]"),
        ({"positives": torch.tensor([0.0, 1.0, 2.0])}, ValueError, "integer tensor"),
        ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ({"normalize": "anchors"}, ValueError, "normalize must be one of"),
        (
            {"anchors": torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)},
            ValueError,
            "zero",
        ),
        ({"anchors": torch.tensor([[1.0, float("nan")]] * 3, dtype=torch.float64)}, ValueError, "finite"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(change, error, match):
    args = {
        "anchors": torch.ones(3, 2, dtype=torch.float64),
        "keys": torch.eye(4, 2, dtype=torch.float64) + 0.1,
        "positives": torch.tensor([0, 1, 2]),
        "temperature": 0.1,
        "normalize": "both",
    }
    args.update(change)
    normalize = args.pop("normalize")
    with pytest.raises(error, match=match):
        info_nce(*args.values(), normalize=normalize)


def test_bad_reduction_and_zero_rows_in_the_split_are_refused():
    x = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="reduction"):
        info_nce(x, x, torch.tensor([0, 1]), reduction="max")
    with pytest.raises(ValueError, match="zero row"):
        radial_tangential(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="zero"):
        norm_force(torch.zeros(2, 3, dtype=torch.float64), x, torch.tensor([0, 1]))
