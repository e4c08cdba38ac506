"""GroupLasso: group soft thresholding and the weighted L2,1 ball checked against scipy and closed forms.

The reference for every operation is a plain loop over the groups written
with ``numpy.linalg.norm`` (one group at a time), or a scipy.optimize
minimisation of the defining problem.

Tolerances: the tiers of :mod:`cases` (``SAME_FORMULA`` to ``FINITE_DIFFERENCE``), named at each site.
Beyond them: SLSQP's epigraph form (variables ``(z, t)`` with ``t_g >= ||z_g||``) is
not strongly convex in ``t`` and ends up to 1e-8 relative outside the ball (measured, issue 12): its
point is first scaled into the ball, and compared to ``atol=1e-4`` (distance measured over 5 seeds
of every layout: at most 1.7e-5), while our point must be at least as close to ``x`` up to our own rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

from normpen.penalties.group_lasso import GroupLasso
from penalties.cases import (
    ARRAY_KINDS,
    CERTIFICATE,
    CHAIN,
    FINITE_DIFFERENCE,
    SAME_FORMULA,
    SUM_OF_TERMS,
    assert_methods_agree,
    every_method,
)

# ---- references -----------------------------------------------------------------------------------


def axis_groups(shape, groups):
    """The explicit index arrays (into x.reshape(-1)) that ``groups="rows"`` or ``"cols"`` stands for."""
    index = np.arange(math.prod(shape)).reshape(shape)
    if groups == "rows":
        return [index[i].reshape(-1) for i in range(shape[0])]
    return [index[:, j].reshape(-1) for j in range(shape[1])]


def default_weights(groups):
    return np.sqrt([g.size for g in groups])


def group_norms(x, groups):
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.array([np.linalg.norm(flat[g]) for g in groups])


def group_map(x, groups, new_group):
    """``x`` with every group ``x_g`` replaced by ``new_group(x_g, g_position)``; other entries kept."""
    out = np.array(x, dtype=np.float64).reshape(-1)
    for i, g in enumerate(groups):
        out[g] = new_group(out[g], i)
    return out.reshape(np.shape(x))


def l21(z, groups, weights):
    return float(weights @ group_norms(z, groups))


def slsqp_group_problem(x, groups, weights, step=None, radius=None):
    """Epigraph form over (z, t), t_g^2 >= ||z_g||^2, t >= 0, solved by SLSQP.

    With ``step``: minimise 1/2||z - x||^2 + step * sum_g w_g t_g (the prox).
    With ``radius``: minimise 1/2||z - x||^2 subject to sum_g w_g t_g <= radius (the projection).
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    n, count = flat.size, len(groups)
    penalty = step if step is not None else 0.0

    def objective(v):
        return 0.5 * np.sum((v[:n] - flat) ** 2) + penalty * weights @ v[n:]

    def gradient(v):
        return np.concatenate([v[:n] - flat, penalty * weights])

    constraints = [
        {
            "type": "ineq",
            "fun": lambda v: np.array([v[n + i] ** 2 - v[g] @ v[g] for i, g in enumerate(groups)]),
        }
    ]
    if radius is not None:
        constraints.append({"type": "ineq", "fun": lambda v: radius - weights @ v[n:]})
    start = np.concatenate([flat, group_norms(x, groups)]) * (0.5 if radius is not None else 1.0)
    result = minimize(
        objective,
        start,
        jac=gradient,
        constraints=constraints,
        method="SLSQP",
        bounds=[(None, None)] * n + [(0, None)] * count,
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return result.x[:n].reshape(np.shape(x))


# ---- prox ----------------------------------------------------------------------------------------------

#: (shape, groups, weights): axis groups, N-d axis groups, and explicit groups of several sizes with a
#: zero weight and free (ungrouped) coordinates.
LAYOUTS = [
    ((3, 2), "rows", None),
    ((2, 4), "cols", None),
    ((2, 2, 2), "rows", [0.5, 1.5]),
    ((2, 3), [[0, 4], [1], [2, 5, 3]], [1.0, 0.0, 0.8]),
    ((7,), [[6], [0, 2, 4]], None),
]


def explicit(shape, groups):
    return axis_groups(shape, groups) if isinstance(groups, str) else [np.asarray(g) for g in groups]


@pytest.mark.parametrize(("shape", "groups", "weights"), LAYOUTS)
def test_prox_matches_scipy_minimisation(shape, groups, weights, rng):
    x = rng.normal(size=shape) * 1.5
    step = 0.9
    pen = GroupLasso(1.1, groups, weights)
    index = explicit(shape, groups)
    w = default_weights(index) if weights is None else np.asarray(weights)
    ours = pen.prox(x, step)
    numeric = slsqp_group_problem(x, index, w, step=step * pen.lam)

    def objective(z):
        return 0.5 * np.sum((z - x) ** 2) + step * pen.lam * l21(z, index, w)

    # Ours is at least as good as the numerical minimiser, and (strong convexity) as close as its accuracy.
    assert objective(ours) <= objective(numeric) + 1e-12
    np.testing.assert_allclose(ours, numeric, atol=1e-4)


@pytest.mark.parametrize(("shape", "groups", "weights"), LAYOUTS)
def test_prox_satisfies_group_optimality_exactly(shape, groups, weights, rng):
    # z = prox(x) iff for every group x_g - z_g = t w_g z_g / ||z_g|| when z_g != 0, else ||x_g|| <= t w_g.
    x = rng.normal(size=shape)
    pen = GroupLasso(0.7, groups, weights)
    index = explicit(shape, groups)
    w = default_weights(index) if weights is None else np.asarray(weights)
    threshold = 0.8 * pen.lam * w
    z = pen.prox(x, 0.8)
    flat_x, flat_z = x.reshape(-1), z.reshape(-1)
    for g, t in zip(index, threshold, strict=True):
        norm = np.linalg.norm(flat_z[g])
        if norm == 0:
            assert np.linalg.norm(flat_x[g]) <= t * (1 + CERTIFICATE)
        else:
            np.testing.assert_allclose(flat_x[g] - flat_z[g], t * flat_z[g] / norm, atol=CHAIN)
    free = np.setdiff1d(np.arange(x.size), np.concatenate(index))
    np.testing.assert_array_equal(flat_z[free], flat_x[free])


def test_prox_zeroes_whole_groups_exactly(rng):
    x = rng.normal(size=(6, 3))
    x[[1, 4]] *= 1e-3  # two rows far below the threshold
    z = GroupLasso(0.5, "rows").prox(x, 1.0)
    assert np.all(z[[1, 4]] == 0)
    zero_rows = np.linalg.norm(x, axis=1) <= 0.5 * math.sqrt(3)
    np.testing.assert_array_equal(np.all(z == 0, axis=1), zero_rows)


def test_conv_kernel_rows_are_filters_and_cols_are_input_channels(rng):
    kernel = rng.normal(size=(4, 3, 2, 2))
    z = GroupLasso(0.0, "rows").with_lam(1.5).prox(kernel, 1.0)
    filter_norms = np.linalg.norm(kernel.reshape(4, -1), axis=1)
    expected = kernel * np.maximum(1 - 1.5 * math.sqrt(12) / filter_norms, 0)[:, None, None, None]
    np.testing.assert_allclose(z, expected, rtol=CHAIN, atol=SAME_FORMULA)
    channel_norms = np.linalg.norm(kernel.transpose(1, 0, 2, 3).reshape(3, -1), axis=1)
    np.testing.assert_allclose(GroupLasso(1.0, "cols").norm(kernel), math.sqrt(16) * channel_norms.sum())


# ---- explicit groups, validation, free coordinates -------------------------------------------------------


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_explicit_groups_equal_rows_and_cols(axis, rng):
    shape = (3, 4, 2)
    x = rng.normal(size=shape)
    x[1] = 0.0  # a zero row (and zero entries in every column)
    weights = rng.uniform(0.2, 1.5, size=shape[0] if axis == "rows" else shape[1])
    order = rng.permutation(len(weights))
    index = axis_groups(shape, axis)
    by_axis = GroupLasso(0.4, axis, weights)
    by_index = GroupLasso(0.4, [index[i] for i in order], weights[order])
    for method in ("value", "norm", "dual_norm", "grad"):
        np.testing.assert_allclose(
            getattr(by_index, method)(x), getattr(by_axis, method)(x), rtol=SUM_OF_TERMS
        )
    for method, arg in (("prox", 0.7), ("project", 1.3), ("project_dual", 0.2)):
        np.testing.assert_allclose(
            getattr(by_index, method)(x, arg), getattr(by_axis, method)(x, arg), rtol=SUM_OF_TERMS, atol=1e-16
        )
    assert by_index.lambda_max(x) == pytest.approx(by_axis.lambda_max(x), rel=SUM_OF_TERMS)


def test_groups_of_many_sizes_match_the_loop_reference(rng):
    # Sizes 1..21 fall in several size classes (padded blocks); 13 coordinates stay free.
    sizes = [1, 2, 3, 4, 5, 8, 9, 16, 17, 21, 1, 3]
    order = rng.permutation(sum(sizes) + 13)
    index = np.split(order[: sum(sizes)], np.cumsum(sizes)[:-1])
    x = rng.normal(size=order.size)
    pen = GroupLasso(0.3, index)
    w = default_weights(index)
    norms = group_norms(x, index)
    np.testing.assert_allclose(pen.norm(x), w @ norms, rtol=SUM_OF_TERMS)
    np.testing.assert_allclose(
        pen.prox(x, 1.0),
        group_map(x, index, lambda v, i: v * max(1 - 0.3 * w[i] / norms[i], 0)),
        atol=SAME_FORMULA,
    )
    covered = np.zeros_like(x)
    covered[order[: sum(sizes)]] = x[order[: sum(sizes)]]  # project_dual zeroes the free coordinates
    np.testing.assert_allclose(
        pen.project_dual(x, 0.25),
        group_map(covered, index, lambda v, i: v * min(1, 0.25 * w[i] / norms[i])),
        atol=SAME_FORMULA,
    )


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([[0, 1], [2, 1]], r"index 1 appears in groups\[0\] and groups\[1\]"),
        ([[0, 3, 0]], r"index 0 appears twice in groups\[0\]"),
        ([[0], []], r"groups\[1\] is empty"),
        ([[0], [-1]], r"groups\[1\] contains the negative index -1"),
        ("diagonal", r"groups must be 'rows', 'cols'"),
    ],
)
def test_bad_groups_raise_value_error_naming_the_problem(groups, message):
    with pytest.raises(ValueError, match=message):
        GroupLasso(0.1, groups)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([0, 0, 1, 1], r"groups\[0\] must be a 1-D array .* one group label per coordinate"),
        ([[True, False]], r"groups\[0\] must hold integer indices.*flatnonzero"),
        ([[0.0, 1.0]], r"groups\[0\] must hold integer indices"),
        (3, r"groups must be 'rows', 'cols' or a sequence"),
    ],
)
def test_bad_group_types_raise_type_error(groups, message):
    with pytest.raises(TypeError, match=message):
        GroupLasso(0.1, groups)


def test_out_of_range_index_is_rejected_once_the_shape_is_known():
    pen = GroupLasso(0.1, [[0, 1], [2, 9]])
    with pytest.raises(ValueError, match=r"groups\[1\] contains index 9 but x has only 6 entries"):
        pen.prox(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match="grad0 has only 6 entries"):
        pen.lambda_max(np.ones(6))


@pytest.mark.parametrize(
    ("kwargs", "x", "message"),
    [
        ({"groups": "rows", "weights": [1.0, -1.0]}, None, "weights must be finite and >= 0"),
        ({"groups": "rows", "weights": [1.0, np.nan]}, None, "weights must be finite and >= 0"),
        ({"groups": [[0], [1]], "weights": [1.0]}, None, "weights has 1 entries but there are 2 groups"),
        ({"groups": "rows", "weights": [[1.0]]}, None, "weights must be a 1-D sequence"),
        (
            {"groups": "rows", "weights": [1.0, 2.0]},
            np.ones((3, 2)),
            "weights has 2 entries but x has 3 rows",
        ),
        ({"groups": "cols"}, np.ones(4), "groups='cols' needs x with at least 2 dimension"),
    ],
)
def test_bad_weights_and_shapes_raise(kwargs, x, message):
    with pytest.raises(ValueError, match=message):
        pen = GroupLasso(0.1, **kwargs)
        pen.value(x)


def test_free_coordinates_are_unpenalized(rng):
    x = rng.normal(size=8)
    groups, free = [[0, 5], [2, 3, 7]], [1, 4, 6]
    pen = GroupLasso(2.0, groups)
    for z in (pen.prox(x, 10.0), pen.project(x, 0.1)):
        np.testing.assert_array_equal(z[free], x[free])
    np.testing.assert_array_equal(
        pen.prox(x, 10.0)[[0, 5, 2, 3, 7]], 0.0
    )  # the groups themselves are crushed
    np.testing.assert_array_equal(pen.grad(x)[free], 0.0)
    assert pen.norm(x) == pytest.approx(
        math.sqrt(2) * np.linalg.norm(x[[0, 5]]) + math.sqrt(3) * np.linalg.norm(x[[2, 3, 7]])
    )
    assert pen.dual_norm(x) == np.inf and pen.lambda_max(x) == np.inf
    np.testing.assert_array_equal(pen.project_dual(x, 1.0)[free], 0.0)
    x[free] = 0.0
    assert pen.dual_norm(x) == pytest.approx(
        max(np.linalg.norm(x[[0, 5]]) / math.sqrt(2), np.linalg.norm(x[[2, 3, 7]]) / math.sqrt(3))
    )
    assert GroupLasso(1.0, []).norm(x) == 0.0


# ---- projections, dual norm, gradient, lambda_max -------------------------------------------------------


@pytest.mark.parametrize(("shape", "groups", "weights"), LAYOUTS)
def test_projection_matches_scipy_slsqp(shape, groups, weights, rng):
    x = rng.normal(size=shape) * 2
    pen = GroupLasso(1.0, groups, weights)
    index = explicit(shape, groups)
    w = default_weights(index) if weights is None else np.asarray(weights)
    radius = 0.4 * l21(x, index, w)
    ours = pen.project(x, radius)
    numeric = slsqp_group_problem(x, index, w, radius=radius)
    numeric = numeric * min(
        1.0, radius / l21(numeric, index, w)
    )  # SLSQP ends up to 1e-8 outside: scale it in
    assert l21(ours, index, w) == pytest.approx(radius, rel=CERTIFICATE)
    # ours is within 8 eps ||x|| of the projection (a few roundings): squared distance within 16 eps ||x||^2
    assert np.sum((ours - x) ** 2) <= np.sum((numeric - x) ** 2) + 16 * np.finfo(float).eps * np.sum(x**2)
    np.testing.assert_allclose(ours, numeric, atol=1e-4)


def test_projection_leaves_inside_points_unchanged(rng):
    x = rng.normal(size=(4, 3))
    pen = GroupLasso(1.0, "cols", [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(pen.project(x, pen.norm(x) * 1.001), x)


def test_project_dual_clips_every_group(rng):
    x = rng.normal(size=(5, 2))
    weights = np.array([0.5, 1.0, 2.0, 0.1, 1.0])
    pen = GroupLasso(1.0, "rows", weights)
    norms = np.linalg.norm(x, axis=1)
    expected = x * np.minimum(1, 0.8 * weights / norms)[:, None]
    np.testing.assert_allclose(pen.project_dual(x, 0.8), expected, rtol=SUM_OF_TERMS)
    assert pen.dual_norm(pen.project_dual(x, 0.8)) <= 0.8 * (1 + SUM_OF_TERMS)


def test_dual_norm_is_the_maximum_over_the_unit_ball(rng):
    x = rng.normal(size=(4, 3))
    weights = np.array([0.5, 1.0, 2.0, 1.5])
    pen = GroupLasso(1.0, "rows", weights)
    ratios = np.linalg.norm(x, axis=1) / weights
    assert pen.dual_norm(x) == pytest.approx(ratios.max(), rel=SUM_OF_TERMS)
    # Hoelder: <z, x> <= norm(z) dual_norm(x), with equality at the unit direction of the best group.
    for z in rng.normal(size=(200, 4, 3)):
        assert np.sum(z * x) <= pen.norm(z) * pen.dual_norm(x) * (1 + CERTIFICATE)
    best = np.argmax(ratios)
    z = np.zeros_like(x)
    z[best] = x[best] / np.linalg.norm(x[best]) / weights[best]
    assert pen.norm(z) == pytest.approx(1.0, rel=SUM_OF_TERMS)
    assert np.sum(z * x) == pytest.approx(pen.dual_norm(x), rel=SUM_OF_TERMS)


def test_grad_matches_finite_differences_and_is_zero_on_zero_groups(rng):
    x = rng.normal(size=(4, 3))
    pen = GroupLasso(0.6, "cols", [1.0, 0.3, 2.0])
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = (pen.value(x + e) - pen.value(x - e)) / (2 * eps)
    np.testing.assert_allclose(pen.grad(x), numeric, atol=FINITE_DIFFERENCE)
    x[:, 1] = 0.0
    g = pen.grad(x)
    np.testing.assert_array_equal(g[:, 1], 0.0)
    np.testing.assert_allclose(np.linalg.norm(g, axis=0), [0.6 * 1.0, 0.0, 0.6 * 2.0])


def test_lambda_max_is_where_zero_becomes_optimal(rng):
    # F(w) = 1/2 ||w - y||^2: grad F(0) = -y, minimiser prox_{lam P}(y), zero exactly when lam >= lambda_max.
    y = rng.normal(size=(5, 3))
    pen = GroupLasso(1.0, [[0, 1, 2], [3, 7], [4, 5, 6, 8, 9, 10, 11, 12, 13, 14]], [1.0, 2.0, 0.5])
    lam_max = pen.lambda_max(-y)
    assert np.all(pen.with_lam(lam_max * (1 + CERTIFICATE)).prox(y, 1.0) == 0)  # exact zeros past it
    assert np.any(pen.with_lam(0.99 * lam_max).prox(y, 1.0) != 0)


def test_with_lam_shares_the_validated_groups():
    pen = GroupLasso(0.1, [[0, 1], [2]], [1.0, 2.0])
    assert repr(pen) == "GroupLasso(lam=0.1, groups=<2 index arrays>, weights=<2 weights>)"
    assert repr(GroupLasso(0.5, "cols")) == "GroupLasso(lam=0.5, groups='cols', weights=None)"
    twin = pen.with_lam(0.5)
    assert twin.lam == 0.5 and pen.lam == 0.1
    assert twin._partition is pen._partition
    with pytest.raises(ValueError, match="lam must be >= 0"):
        pen.with_lam(-1.0)


# ---- array kinds and magnitudes ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ARRAY_KINDS, ids=str)
@pytest.mark.parametrize("groups", ["rows", "cols", [[0, 5, 6], [2], [8, 9, 10, 11]]])
def test_numpy_and_torch_float32_and_float64_agree(kind, groups, rng):
    x64 = rng.normal(size=(3, 4))
    x64[2] = 0.0
    pen = GroupLasso(0.3, groups)
    assert_methods_agree(pen, x64, kind, every_method(0.9, 0.7, 0.2), rtol=kind.rtol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device(rng):
    x64 = rng.normal(size=(64, 32))
    x = torch.as_tensor(x64, device="cuda")
    for pen in (GroupLasso(0.1, "rows"), GroupLasso(0.1, [np.arange(0, 2048, 7), np.arange(1, 40)])):
        for out, ref in (
            (pen.prox(x, 1.0), pen.prox(x64, 1.0)),
            (pen.project(x, 3.0), pen.project(x64, 3.0)),
            (pen.grad(x), pen.grad(x64)),
        ):
            assert out.device == x.device
            np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=CERTIFICATE, atol=SUM_OF_TERMS)


small_arrays = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4),
    elements=st.one_of(st.just(0.0), st.floats(1e-3, 10), st.floats(-10, -1e-3)),
)


@given(x=small_arrays, exponent=st.integers(-990, 990), groups=st.sampled_from(["rows", "cols"]))
def test_every_operation_scales_with_the_input_from_1e_minus_300_to_1e300(x, exponent, groups):
    # Scaling x by 2^k (exact) scales norms, prox (with step), projections (with radius) by 2^k and
    # leaves the gradient unchanged: no overflow or underflow anywhere in between.
    c = 2.0**exponent
    pen = GroupLasso(0.5, groups)
    y = x * c
    assert pen.norm(y) == pytest.approx(pen.norm(x) * c, rel=SUM_OF_TERMS)
    assert pen.dual_norm(y) == pytest.approx(pen.dual_norm(x) * c, rel=SUM_OF_TERMS)
    np.testing.assert_allclose(pen.grad(y), pen.grad(x), rtol=SUM_OF_TERMS, atol=1e-300)
    for method, arg in (("prox", 0.8), ("project", 1.0), ("project_dual", 0.3)):
        scaled = getattr(pen, method)(y, arg * c)
        assert np.all(np.isfinite(scaled))
        np.testing.assert_allclose(scaled / c, getattr(pen, method)(x, arg), rtol=CHAIN, atol=1e-300)


@pytest.mark.parametrize(
    ("groups", "shape"),
    [([np.array([0, 4]), np.array([2]), np.array([5, 1, 3])], (6,)), ("rows", (3, 4)), ("cols", (3, 4))],
    ids=["index", "rows", "cols"],
)
def test_group_rows_and_weights_list_each_group_once_in_the_same_order(groups, shape):
    x = np.random.default_rng(5).standard_normal(shape)
    pen = GroupLasso(1.0, groups)
    rows = np.concatenate([np.linalg.norm(r, axis=1) for r in pen.group_rows(x)])
    if groups == "rows":
        expected = [x[i] for i in range(shape[0])]
    elif groups == "cols":
        expected = [x[:, j] for j in range(shape[1])]
    else:
        expected = [x[g] for g in groups]
    pairs = sorted(zip(pen.group_weights_like(x), rows, strict=True))  # index groups come by size class
    expected_pairs = sorted((np.sqrt(g.size), np.linalg.norm(g)) for g in expected)
    np.testing.assert_allclose(pairs, expected_pairs, rtol=SAME_FORMULA)
