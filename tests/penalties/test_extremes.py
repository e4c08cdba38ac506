"""Extreme inputs (issue 13, items 7-10, 13 and 15): huge and tiny radii and steps, float16,
``numpy.matrix``, malformed weights and group indices; and the rule they instantiate, as a
hypothesis property over the whole registry: where the true prox or projection is finite, the
result is finite and within the dtype's rounding of the exact answer.

The exact answer is computed in 128-bit mpmath from the definitions (``exact.py``); the elastic
net's projection, which has the most delicate closed form, is also checked against a 60-digit
bisection on random problems. Every projection onto a ball must in addition land on its sphere to the dtype's
relative rounding, which is what rules out the zeros of a radius below the rounding step of x.
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import normpen as npn
import normpen.torch
from normpen.penalties.anchored import Anchored
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso
from normpen.penalties.spectral import Spectral
from penalties.cases import CASES, SHAPES, to_numpy
from penalties.exact import exact

# ---- the repros of issue 13 ----------------------------------------------------------------------


def test_float32_radius_beyond_the_dtype_projects_exactly():
    """Item 7: a radius of 1e39 (no float32) leaves a float32 vector inside unchanged, not NaN."""
    x = torch.randn(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ElasticNet(0.1, 0.5).project(x, 1e39), x)
    far = torch.full((3,), 1e38)  # Omega = 0.5 * 3e38 + 0.25 * 3e76: outside even a radius of 1e39
    projected = ElasticNet(0.1, 0.5).project(far, 1e39)
    reference = ElasticNet(0.1, 0.5).project(far.double(), 1e39)
    # one float32 rounding of the float64 answer: relative 2^-24
    torch.testing.assert_close(projected.double(), reference, rtol=2.0**-23, atol=0)


def test_constrained_rule_with_a_radius_beyond_float32_keeps_the_weights():
    """Item 7 through training: Rule(ElasticNet, constrained, radius=1e39) must not make NaN weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reg = npn.torch.Regularizer(model, npn.torch.Rule(ElasticNet(0.1, 0.5), mode="constrained", radius=1e39))
    opt = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(1, 3)).sum().backward()
    before = [p.detach().clone() - 0.1 * p.grad for p in model.parameters()]
    opt.step()
    for p, expected in zip(model.parameters(), before, strict=True):  # the SGD step alone: inside the set
        torch.testing.assert_close(p.detach(), expected)


def test_sparse_group_lasso_projection_of_the_issue_is_on_the_sphere():
    """Item 8: these float32 digits gave NaN; the answer lies on the sphere Omega = r."""
    x = torch.tensor(
        [
            [0.0, 0.0, 0.013121560215950012],
            [-0.008635304868221283, 0.0005725606461055577, -0.032212693244218826],
        ]
    )
    pen = SparseGroupLasso(1.0, "rows", 0.16)
    z = pen.project(x, 1.89e-9)
    reference = pen.project(x.double(), 1.89e-9)
    assert bool(torch.isfinite(z).all())
    # float32 rounding of the float64 answer (relative 2^-24 of its largest entry, doubled)
    torch.testing.assert_close(z.double(), reference, rtol=0, atol=2.0**-23 * float(reference.abs().max()))
    assert float(pen.norm(reference)) == pytest.approx(1.89e-9, rel=1e-14)  # a few float64 roundings


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ratio_exponent", [8, 12, 17, 30, 100])
def test_sparse_group_lasso_projection_far_below_the_rounding_step(dtype, ratio_exponent, rng):
    """Item 8 at large: ||x||_1 / r from 1e8 to 1e100, the result finite and on the sphere."""
    pen = SparseGroupLasso(1.0, "rows", 0.16)
    for _ in range(20):
        x = (rng.standard_normal((2, 3)) * (rng.random((2, 3)) < 0.7)).astype(dtype)
        radius = float(np.abs(x).sum()) / 10.0**ratio_exponent
        if not 1e-300 < radius:
            continue
        z = pen.project(x, radius)
        assert np.isfinite(z).all()
        # Omega(z) of the float64 copy: the rounding to dtype of a point on the sphere, 8 ulps of dtype
        assert float(pen.norm(z.astype(np.float64))) == pytest.approx(
            radius, rel=8 * float(np.finfo(dtype).eps)
        )


@pytest.mark.parametrize(
    ("pen", "expected"),
    [
        (L1(1e20, weights=[0, 1, 1, 1]), [1, 0, 0, 0]),
        (GroupLasso(1e20, [[1, 2], [3]]), [1, 0, 0, 0]),
        (SparseGroupLasso(1e20, [[1, 2], [3]], l1_ratio=0.0), [1, 0, 0, 0]),
        (Anchored(1e20, np.zeros(4), fisher=[0, 1, 1, 1]), [1, 2e-40, 3e-40, 4e-40]),  # x / (1 + 1e40)
    ],
    ids=["L1", "GroupLasso", "SparseGroupLasso", "Anchored"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_step_leaves_unpenalised_coordinates_alone(pen, expected, dtype):
    """Item 9: step * lam = 1e40 (beyond float32) must not make 0 * inf = NaN on a free coordinate."""
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    out = pen.prox(x, 1e20)
    assert out.dtype == dtype
    # one rounding of the exact answer; float32's 2e-40 is subnormal: 4 steps of 2^-149 absolute
    np.testing.assert_allclose(out, expected, rtol=4 * float(np.finfo(dtype).eps), atol=4 * 2.0**-149)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_dual_radius_clips_free_coordinates_to_zero_and_keeps_the_rest(dtype):
    """Item 9: project_dual with radius 1e39 (float32) or 1e308: the box |z_i| <= r w_i, exactly."""
    radius = 1e39 if dtype == np.float32 else 1e308
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    expected = np.array([0.0, 2.0, 3.0, 4.0], dtype=dtype)
    np.testing.assert_array_equal(L1(1.0, weights=[0, 1, 1, 1]).project_dual(x, radius), expected)
    np.testing.assert_array_equal(GroupLasso(1.0, [[1, 2], [3]]).project_dual(x, radius), expected)


@pytest.mark.parametrize(
    "pen",
    [L1(1.0), GroupLasso(1.0, [[0], [1]]), ElasticNet(1.0, 1.0), Nuclear(1.0)],
    ids=["L1", "GroupLasso", "ElasticNet-lasso", "Nuclear"],
)
def test_radius_below_the_rounding_step_gives_the_point_on_the_sphere(pen):
    """Item 10: [1, 0.5] onto radius 1e-17 is [1e-17, 0] (the top coordinate), not zeros."""
    x = np.array([[1.0, 0.0], [0.0, 0.5]]) if isinstance(pen, Nuclear) else np.array([1.0, 0.5])
    expected = np.array([[1e-17, 0.0], [0.0, 0.0]]) if isinstance(pen, Nuclear) else np.array([1e-17, 0.0])
    # the closed form is exact; the computation rounds a few times: 4 ulps, and SVD's eps * sigma_max absolute
    np.testing.assert_allclose(pen.project(x, 1e-17), expected, rtol=4 * np.finfo(float).eps, atol=1e-32)


def test_elastic_net_radius_below_the_rounding_step():
    """Item 10: with rho = 1/2, Omega([t, 0]) = t/2 + t^2/4 = 1e-17 at t = 2e-17 (to 1e-33 relative)."""
    z = ElasticNet(1.0, 0.5).project(np.array([1.0, 0.5]), 1e-17)
    np.testing.assert_allclose(z, [2e-17, 0.0], rtol=4 * np.finfo(float).eps, atol=0)


def test_anchored_projection_far_below_the_rounding_step():
    """Item 10: F = [0, 2]: coordinate 0 is free, coordinate 1 goes to 1e-100 / sqrt(2)."""
    z = Anchored(1.0, np.zeros(2), fisher=[0.0, 2.0]).project(np.array([1e300, 1e143]), 1e-100)
    np.testing.assert_allclose(z, [1e300, 1e-100 / math.sqrt(2)], rtol=4 * np.finfo(float).eps)
    z32 = Anchored(1.0, np.zeros(2, dtype=np.float32)).project(
        np.array([1e30, -1e30], dtype=np.float32), 1e-30
    )
    expected = np.array([1e-30, -1e-30]) / math.sqrt(2)
    np.testing.assert_allclose(z32, expected, rtol=4 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "pen", [Spectral(1.0), Nuclear(1.0), L1(1.0), SparseGroupLasso(1.0, "rows")], ids=str
)
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(pen, dtype):
    """Item 13: float16/bfloat16 gave linalg errors; the results match float32's, rounded to the dtype."""
    x = torch.tensor([[1.0, 2.0, 0.5], [-0.25, 3.0, 1.0]])
    for method, args in (
        ("value", ()),
        ("grad", ()),
        ("prox", (0.5,)),
        ("project", (1.0,)),
        ("project_dual", (1.0,)),
    ):
        out = getattr(pen, method)(x.to(dtype), *args)
        reference = getattr(pen, method)(x, *args)
        assert out.dtype == dtype, method
        # one rounding to the half dtype of the float32 result (x itself is exact in both)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(out.float(), reference, rtol=eps, atol=eps * float(reference.abs().max()))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # numpy's own warning on building a matrix
def test_numpy_matrix_is_refused_with_the_fix():
    """Item 13: numpy.matrix multiplies as a matrix; it is refused with the conversion to use."""
    with pytest.raises(TypeError, match=r"numpy.matrix.*numpy.asarray\(x\)"):
        Nuclear(1.0).project(np.matrix([[1.0, 2.0], [3.0, 4.0]]), 0.5)


def test_group_indices_beyond_int64_are_refused_not_wrapped():
    """Item 15: a uint64 index >= 2**63 used to wrap to a negative index."""
    with pytest.raises(ValueError, match=r"groups\[0\] contains the index 9223372036854775809"):
        GroupLasso(1.0, [np.array([2**63 + 1], dtype=np.uint64)])


@pytest.mark.parametrize(
    "make",
    [
        lambda: L1(1.0, weights=["a", "b"]),
        lambda: GroupLasso(1.0, "rows", weights=["a", "b"]),
        lambda: SparseGroupLasso(1.0, "rows", weights=["a", "b"]),
        lambda: Anchored(1.0, ["a", "b"]),
    ],
    ids=["L1", "GroupLasso", "SparseGroupLasso", "Anchored"],
)
def test_string_weights_name_the_argument(make):
    """Item 15: "could not convert string to float" now names the argument and the fix."""
    with pytest.raises(TypeError, match=r"(weights|anchor) must hold real numbers.*dtype=float"):
        make()


# ---- the elastic net's float64 kernel against mpmath ----------------------------------------------


def elastic_net_projection_mpmath(x, rho, radius):
    """Projection onto {rho ||z||_1 + (1 - rho)/2 ||z||^2 <= r} by bisection on mu, at 60 digits."""
    with mpmath.workdps(60):
        a = [mpmath.mpf(abs(float(v))) for v in x]
        c = 1 - mpmath.mpf(rho)

        def omega(mu):
            z = [max(ai - mu * rho, 0) / (1 + mu * c) for ai in a]
            return rho * sum(z) + c / 2 * sum(zi**2 for zi in z)

        if omega(0) <= radius:
            return np.asarray(x, dtype=float)
        low, high = mpmath.mpf(0), max(a) / rho
        for _ in range(400):  # 400 halvings: far below 60 digits of mu
            mid = (low + high) / 2
            low, high = (mid, high) if omega(mid) > radius else (low, mid)
        return np.array(
            [float(np.sign(v) * max(ai - low * rho, 0) / (1 + low * c)) for v, ai in zip(x, a, strict=True)]
        )


@given(
    x=hnp.arrays(np.float64, 5, elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
    rho=st.floats(0.05, 1.0),
    ratio=st.floats(-20, 1),
)
def test_elastic_net_projection_matches_mpmath(x, rho, ratio):
    size = float(np.sum(np.abs(x)))
    if size == 0:
        return
    radius = size * 10.0**ratio
    z = ElasticNet(1.0, rho).project(x, radius)
    expected = elastic_net_projection_mpmath(x, rho, radius)
    # relative to the largest entry: a sort, cumulative sums of 5 terms, a square root (measured <= 5e-16)
    np.testing.assert_allclose(z, expected, rtol=0, atol=16 * np.finfo(float).eps * np.max(np.abs(expected)))


# ---- property (a): finite, and within the dtype's rounding of the exact answer ------------------------

#: Decimal exponents of the inputs: 1e-30..1e30 in float32, 1e-300..1e300 in float64.
DECADES = {np.float32: 30, np.float64: 300}
METHODS = {"prox": "norm", "project": "norm", "project_dual": "dual_norm"}


@st.composite
def extreme_problem(draw, case):
    """A penalty, a dtype, an input with entries spread over a decade window, a method and its scalar."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = SHAPES[case.kind][0]
    pen = case.make(shape, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    top = DECADES[dtype]
    low = draw(st.integers(-top, top))
    high = draw(st.integers(low, top))
    mantissa = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    exponent = draw(hnp.arrays(np.int64, shape, elements=st.integers(low, high)))
    x = (mantissa * 10.0 ** exponent.astype(float)).astype(dtype)
    method = draw(st.sampled_from(sorted(METHODS)))
    # the scalar: anywhere in the dtype's range, or (float32) up to 1e300, beyond it (items 7 and 9)
    scalar = 10.0 ** draw(st.floats(-top, 300 if dtype == np.float32 else top))
    return pen, dtype, x, method, scalar


def rounding_scale(pen, x, out):
    """The magnitude the computation rounds at: the largest entry of x, of the result and of the anchor."""
    anchor = np.abs(to_numpy(pen.anchor)) if isinstance(pen, Anchored) else 0.0
    return float(np.max(np.abs(x.astype(float)) + np.abs(out) + anchor, initial=0.0))


@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_results_are_finite_and_within_the_rounding_of_the_exact_answer(case, data):
    """Property (a): for every penalty, dtype and magnitude the result is finite and exact to rounding.

    - the result equals the 128-bit mpmath answer (``exact.py``) to ``(n + 16) eps`` of the rounding
      scale: the kernels are backward stable (a sort, sums of at most n terms, a bounded number of
      other roundings, each at most eps of the largest magnitude involved, and the projections and
      proxes are 1-Lipschitz, so those input errors are not amplified);
    - every projection of a point outside lands on its sphere, to ``(n + 16) eps`` relative, plus
      the rounding of ``z - a`` for an anchored penalty (whose measure is the distance to the anchor)
      and of the singular values (absolute, eps times the largest), plus ``n`` times the smallest
      normal number (results that underflow). This is what tells a point on the sphere from the
      zeros of a radius below the rounding step of ``x``, which the first check cannot see.
    """
    pen, dtype, x, method, scalar = data.draw(extreme_problem(case))
    out = to_numpy(getattr(pen, method)(x, scalar))
    assert np.isfinite(out).all(), method
    eps, size = float(np.finfo(dtype).eps), x.size
    tolerance = (size + 16) * eps
    tiny = size * float(np.finfo(dtype).smallest_normal)
    expected = exact(pen, method, x, scalar)
    np.testing.assert_allclose(
        out, expected, rtol=0, atol=tolerance * rounding_scale(pen, x, expected) + tiny
    )
    if method == "prox":
        return
    measure = getattr(pen, METHODS[method])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the measure itself may overflow (elastic net's ||x||^2 / 2): no sphere then
        before = float(measure(x.astype(np.float64)))
    if before <= scalar or not math.isfinite(before):
        return
    after = float(measure(out))
    slack = tolerance * scalar + tiny
    if isinstance(pen, Anchored):  # z - a is rounded at eps (|z| + |a|) per coordinate
        slack += tolerance * float(measure(np.abs(out) + np.abs(to_numpy(pen.anchor)) + to_numpy(pen.anchor)))
    if isinstance(pen, (Spectral, Nuclear)):  # singular values are accurate to eps sigma_max (absolute)
        slack += tolerance * size * float(np.max(np.abs(out)))
    assert abs(after - scalar) <= slack, (method, after, scalar)
