"""Linear SVMs: the interior point and dual CD against libsvm, liblinear and scipy; the hard margin
against SVC and geometry."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from sklearn.datasets import load_breast_cancer, load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from normpen.datasets import separable_classification
from normpen.linear.solvers import svm
from normpen.linear.solvers.svm import NotSeparableError, hard_margin_svm, linear_svm


@pytest.fixture(scope="module")
def centred():
    """200 samples and 10 standardised features of the bundled breast-cancer data."""
    X, y = load_breast_cancer(return_X_y=True)
    rows = np.random.default_rng(0).choice(len(y), 200, replace=False)
    return StandardScaler().fit_transform(X)[rows][:, :10], np.where(y[rows] == 1, 1.0, -1.0)


@pytest.fixture(scope="module")
def cancer(centred):
    """The same, shifted off-centre: the intercept has work to do."""
    X, y = centred
    return X + 2.0, y


def primal(X, y, w, b, lam, loss, sample_weight=None):
    a = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    slack = np.clip(1 - y * (X @ w + b), 0, None)
    return 0.5 * lam * w @ w + a @ (slack if loss == "hinge" else slack**2) / a.sum()


def assert_solves(
    result, X, y, lam, loss, reference_w, reference_b, sample_weight=None, reference_accuracy=1e-6
):
    """Same objective as the reference up to our certified gap, and w within the strong-convexity bound.

    ``reference_accuracy``: how far above ours the reference's objective may be (None: any amount).
    """
    ours = primal(X, y, result.coef, result.intercept, lam, loss, sample_weight)
    ref = primal(X, y, reference_w, reference_b, lam, loss, sample_weight)
    # the same sum in another order: n <= 240 terms of size <= P round by n * eps ~ 5e-14 relative
    assert ours == pytest.approx(result.objective, rel=1e-12)
    assert result.dual_gap >= 0
    assert ours - ref <= result.dual_gap + 1e-12  # ref >= P*, ours - P* <= gap; 1e-12: that rounding of P
    if reference_accuracy is not None:
        assert ref - ours <= reference_accuracy  # the reference is accurate too
    ref_suboptimality = ref - ours + result.dual_gap  # >= P(ref) - P*
    # P is lam-strongly convex in w: lam/2 ||w - w*||^2 <= P(w) - P*
    radius = np.sqrt(2 * result.dual_gap / lam) + np.sqrt(2 * max(ref_suboptimality, 0) / lam)
    # + the square root of the 1e-12 rounding of P above, at the smallest lam of these tests (1e-6)
    assert np.linalg.norm(result.coef - reference_w) <= radius + np.sqrt(2e-12 / min(lam, 1e-6))


def optimal_intercepts(X, y, w, sample_weight=None, slack=1e-9):
    """The interval of b minimising the weighted hinge at fixed w, up to ``slack``, by brute force.

    The hinge is piecewise linear in b with breakpoints y_i - x_i.w, so its minimum is at one of them and
    the near-minimisers form an interval found by scanning a fine grid between the extreme breakpoints.
    """
    a = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    z = X @ w

    def loss(b):
        return np.clip(1 - y[:, None] * (z[:, None] + b), 0, None).T @ a / a.sum()

    breakpoints = y - z
    best = loss(breakpoints).min()
    grid = np.concatenate([breakpoints, np.linspace(breakpoints.min() - 1, breakpoints.max() + 1, 20_001)])
    near = grid[loss(grid) <= best + slack]
    return near.min(), near.max()


def assert_matches_libsvm(X, y, C, sample_weight=None, tol=1e-10):
    """Our hinge SVM with lam = 1/(C sum s) against SVC(kernel="linear", C) (libsvm's exact intercept).

    Always: our gap is certified, our objective is at most libsvm's (plus our gap), w lies within the
    strong-convexity radius of both suboptimalities, and our intercept minimises the hinge at our w
    (brute force; the hinge's optimal b may be a whole interval). Where libsvm itself is accurate
    (its objective within 1e-9 of ours: small C), w and b agree tightly as well.
    """
    s = np.ones(len(y)) if sample_weight is None else sample_weight
    lam = 1 / (C * s.sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = linear_svm(X, y, lam, sample_weight=sample_weight, tol=tol)
    ref = SVC(kernel="linear", C=C, tol=1e-12).fit(X, y, sample_weight=sample_weight)
    ref_w, ref_b = ref.coef_.ravel(), ref.intercept_[0]
    # converged: gap <= tol min(P0, P). At large C, tol P can lie below the float64 floor of the
    # certificate (svm.py's module docstring; measured 1.4e-10 P = 4.7e-14 at C = 1e4, weighted, below):
    # then the solver says so and returns its best point, whose gap is still far within tol P0 ~ 1e-10
    assert result.converged or any("float64" in str(w.message) for w in caught)
    assert result.dual_gap <= tol * result.gap_scale
    assert_solves(result, X, y, lam, "hinge", ref_w, ref_b, sample_weight, reference_accuracy=None)
    # near-minimisers within 1e-9 P0, 10x our tol = 1e-10; the grid's breakpoints are exact to 1e-9 relative
    low, high = optimal_intercepts(X, y, result.coef, sample_weight, slack=1e-9 * result.gap_scale)
    assert low - 1e-9 * (1 + abs(low)) <= result.intercept <= high + 1e-9 * (1 + abs(high))
    if primal(X, y, ref_w, ref_b, lam, "hinge", sample_weight) - result.objective <= 1e-9 * result.gap_scale:
        # then both are within 1e-9 P0 of P*, so |w - w_ref| <= 2 sqrt(2e-9 P0 / lam) <= 1e-5 (1 + |w|)
        # for the lam >= 1e-6 of these tests, up to the scale of w
        scale = 1 + np.abs(ref_w).max()
        np.testing.assert_allclose(result.coef, ref_w, atol=1e-5 * scale)
        assert low - 1e-5 * scale <= ref_b <= high + 1e-5 * scale
    return result, ref


def test_issue_4_small_c_with_intercept_matches_libsvm():
    """The reported case: C = 0.0121 on offset separable data, where the multiplier method crawled."""
    problem = separable_classification(20, 2, gap=1.0, offset=0.8, seed=4)
    result, ref = assert_matches_libsvm(problem.X, problem.y, 0.0121)
    np.testing.assert_allclose(result.coef, ref.coef_.ravel(), rtol=1e-8)  # libsvm is exact here
    # the optimal intercepts form an interval (no sample strictly inside the box): both take its midpoint
    low, high = optimal_intercepts(problem.X, problem.y, result.coef)
    assert high - low > 0.5
    assert result.intercept == pytest.approx(ref.intercept_[0], abs=1e-7)
    assert result.intercept == pytest.approx((low + high) / 2, abs=1e-4)
    assert result.n_iter <= 30


@pytest.mark.parametrize("C", [1e-4, 1e-2, 0.0121, 0.3, 3.0, 1e2, 1e4])
@pytest.mark.parametrize("weighted", [False, True])
def test_hinge_with_intercept_matches_libsvm_over_a_grid_of_c(cancer, C, weighted):
    X, y = cancer
    s = np.random.default_rng(3).uniform(0.2, 3.0, size=len(y)) if weighted else None
    result, ref = assert_matches_libsvm(X[:120], y[:120], C, None if s is None else s[:120])
    assert result.dual_gap <= 1e-12 * result.gap_scale  # the crossover lands on the exact solution


@pytest.mark.parametrize("C", [1e-3, 1.0, 1e3])
def test_more_features_than_samples_matches_libsvm(C):
    """p > n factorizes the n-side of the interior-point system."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(25, 60)) + 0.5
    y = np.where(rng.random(25) < 0.4, 1.0, -1.0)
    assert_matches_libsvm(X, y, C)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(4, 40),
    p=st.integers(1, 6),
    log_c=st.floats(-3, 3),
    offset=st.floats(-3, 3),
    weighted=st.booleans(),
)
def test_hinge_matches_libsvm_for_random_problems(seed, n, p, log_c, offset, weighted):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + offset
    y = np.where(rng.normal(size=n) + X[:, 0] - offset > 0, 1.0, -1.0)
    y[:2] = [1.0, -1.0]
    s = rng.uniform(0.1, 2.0, size=n) if weighted else None
    assert_matches_libsvm(X, y, 10.0**log_c, s)


@pytest.mark.parametrize(
    "seed, n, log_c, offset, weighted",
    [
        (26426, 5, 1.0237464881617822, 0.8831370694455005, False),  # stalled at gap 1.9 P0
        (18205, 32, 0.7889491035697, -0.8618127217405713, True),  # 6.4 P0
        (53068, 19, -0.370169770203157, 2.298468008975986, True),  # 0.28 P0
        (20946, 19, -2.2024696746624413, 0.7010029893083551, False),  # 1.1e-10 P0: needs the retry
    ],
)
def test_degenerate_dual_converges_instead_of_stalling(seed, n, log_c, offset, weighted):
    """One feature, and w* = 0: more samples on the margin than p + 1, so the dual solution is not unique,
    the crossover's system is singular and the Newton systems lose all accuracy as mu -> 0. These draws of
    test_hinge_matches_libsvm_for_random_problems ran into max_iter = 1000 before the crossover took the
    solution nearest the iterate. libsvm itself does not terminate on them at tol=1e-12, so the reference
    is w = 0 with its best intercept (brute force), the optimum up to our certified gap."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1)) + offset
    y = np.where(rng.normal(size=n) + X[:, 0] - offset > 0, 1.0, -1.0)
    y[:2] = [1.0, -1.0]
    s = rng.uniform(0.1, 2.0, size=n) if weighted else None
    lam = 1 / (10.0**log_c * (n if s is None else s.sum()))
    result = linear_svm(X, y, lam, sample_weight=s, tol=1e-10)
    assert result.converged and result.dual_gap <= 1e-10 * result.gap_scale
    low, high = optimal_intercepts(X, y, np.zeros(1), s)
    # w = 0 is optimal: the reference is within 1e-12 (rounding of P ~ 1) of our certified objective
    assert_solves(result, X, y, lam, "hinge", np.zeros(1), (low + high) / 2, s, reference_accuracy=1e-12)
    # measured: at most 13 iterations over 4500 draws of the random-problem test's distribution (both
    # OPENBLAS_CORETYPE=Haswell and this machine's kernels); 30 leaves room but fails a stall (1000)
    assert result.n_iter <= 30


@pytest.mark.parametrize(("n", "p"), [(300, 30), (40, 80), (30, 60)])
def test_tol_below_the_float64_floor_stops_at_the_best_point_and_says_so(monkeypatch, n, p):
    """benchmarks/svm_problem.py's reference solve (hinge with intercept, 5000 x 500, C = 1, tol=1e-12)
    raised LinAlgError: since the gap must reach tol * min(P0, P) (issue 15) the target, 3.4e-13, lay
    below what float64 certifies there (4e-13 to 7e-13, the rounding of the certificate at the exact
    solution), so the interior point drove mu to 0 until its Woodbury factorization failed. Found by
    lowering tol on smaller make_classification problems: 300 x 30 fails the same way at tol=1e-14
    (n > p, the Woodbury side); 40 x 80 and 30 x 60 (n <= p, the n side) overflowed S/alpha into a
    ValueError. Of 200 random problems (n 50-300, p 5-60) at tol=1e-12, 10 raised LinAlgError (now
    this warning) and 21 wander for max_iter = 1000 iterations (still: no sound test of a useless
    Newton direction was found, a solve's residual above its right-hand side stopped solvable ones).
    """
    X, labels = make_classification(n, p, n_informative=p // 2, flip_y=0.05, random_state=0)
    y, lam = 2.0 * labels - 1.0, 1.0 / n  # C = 1
    # the interior point's own floor, from its cold start: the coordinate-descent screening is turned
    # off (handed its dual point, the interior point reached 4e-15 to 7e-15 of min(P0, P) on 300 x 30,
    # so tol=1e-14 was met, and at tol=1e-15 wandered 24 to 52 iterations past it, by the budget)
    monkeypatch.setattr(svm, "_SCREEN_FRACTION", 0.0)
    reachable = linear_svm(X, y, lam, tol=1e-12)
    assert reachable.converged
    # the floor depends on the BLAS kernels: on 300 x 30 the gap stopped at 8.6e-15 to 1.2e-14 of
    # min(P0, P) over nine OpenBLAS core types (Prescott to Zen), so tol=1e-14 was met on some of them;
    # 1e-15 lies eight times below the lowest
    with pytest.warns(ConvergenceWarning, match="reaches in float64") as record:
        result = linear_svm(X, y, lam, tol=1e-15)
    assert not result.converged
    # the tol=1e-12 run's iterates, then more, and the best certified point is kept: the gap can only shrink
    assert result.dual_gap <= reachable.dual_gap
    # both objectives lie within their gaps above P*; + n eps P for the rounding of the sums of n terms
    eps = np.finfo(np.float64).eps
    assert abs(result.objective - reachable.objective) <= reachable.dual_gap + n * eps * reachable.objective
    # it stops within a few iterations past the floor: mu falls 10-100 times per iteration late, and
    # the floor is reached in at most 16 over these cases (measured); 30 leaves room but fails a wander
    assert result.n_iter <= 30
    # the accuracy the warning reports is met when asked for: the same iterates stop at the same best
    # point (2x covers the message's two digits and the recomputed P in the stopping rule)
    reported = float(re.search(r"its gap (\S+) of min", str(record[0].message)).group(1))
    assert linear_svm(X, y, lam, tol=2 * reported).converged


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_coordinate_descent_fallback_agrees_with_the_interior_point(cancer, monkeypatch, loss, fit_intercept):
    """Above _DIRECT_LIMIT the solver is dual CD; forced here, it reaches the same certified optimum."""
    X, y = cancer
    ipm = linear_svm(X, y, 0.02, loss=loss, fit_intercept=fit_intercept, tol=1e-10)
    monkeypatch.setattr(svm, "_DIRECT_LIMIT", 0)
    cd = linear_svm(
        X, y, 0.02, loss=loss, fit_intercept=fit_intercept, tol=1e-7, random_state=0, max_iter=20_000
    )
    assert cd.converged and ipm.converged
    assert abs(cd.objective - ipm.objective) <= cd.dual_gap + ipm.dual_gap + 1e-14
    np.testing.assert_allclose(
        cd.coef, ipm.coef, atol=np.sqrt(2 * (cd.dual_gap + ipm.dual_gap) / 0.02) + 1e-9
    )


def test_coordinate_descent_fallback_solves_the_issue_4_case(monkeypatch):
    problem = separable_classification(20, 2, gap=1.0, offset=0.8, seed=4)
    monkeypatch.setattr(svm, "_DIRECT_LIMIT", 0)
    lam = 1 / (20 * 0.0121)
    result = linear_svm(problem.X, problem.y, lam, tol=1e-10, random_state=0, max_iter=5000)
    ref = SVC(kernel="linear", C=0.0121, tol=1e-12).fit(problem.X, problem.y)
    assert result.converged
    assert_solves(result, problem.X, problem.y, lam, "hinge", ref.coef_.ravel(), ref.intercept_[0])


def test_unconverged_coordinate_descent_warns_with_the_gap(cancer, monkeypatch):
    X, y = cancer
    monkeypatch.setattr(svm, "_DIRECT_LIMIT", 0)
    with pytest.warns(ConvergenceWarning, match="coordinate-descent epochs with duality gap"):
        result = linear_svm(X, y, 1e-4, tol=1e-12, max_iter=3, random_state=0)
    assert not result.converged and result.dual_gap > 1e-12 * result.gap_scale


def _sparse_classification(seed, n=1000, p=200, density=0.03):
    """CSR data with 3% nonzero entries, labels from a random linear rule with 10% of them flipped."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", random_state=rng)
    y = np.where(np.asarray(X @ rng.normal(size=p)).ravel() > 0, 1.0, -1.0)
    y[rng.random(n) < 0.1] *= -1
    return X, y


def _without_newton(monkeypatch):
    """The squared hinge routed as the hinge is (dual coordinate descent, the interior point)."""
    monkeypatch.setattr(svm, "_newton_stage", lambda loss, X, n_weighted, warm: None)


def _spy_on_the_routing(monkeypatch):
    """Records the screening's final alpha and the point handed to the interior point."""
    seen = {"screened": [], "handed": []}
    run_dual_cd, warm_interior_point = svm._run_dual_cd, svm._warm_interior_point

    def screening(cd, *args, **kwargs):
        result = run_dual_cd(cd, *args, **kwargs)
        seen["screened"].append(cd.alpha.copy())
        return result

    def handed(qp, alpha, *args):
        seen["handed"].append(alpha.copy())
        return warm_interior_point(qp, alpha, *args)

    monkeypatch.setattr(svm, "_run_dual_cd", screening)
    monkeypatch.setattr(svm, "_warm_interior_point", handed)
    return seen


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_a_problem_the_screening_certifies_never_reaches_the_interior_point(monkeypatch, loss, fit_intercept):
    """Sparse 1000 x 200 at C = 0.01: dual CD certifies tol=1e-8 in 3 to 150 epochs, far inside its
    budget (a fifth of the interior point's estimated cost, about 1700 epochs here)."""
    X, y = _sparse_classification(0)
    lam = 1 / (len(y) * 0.01)

    def refuse(*args, **kwargs):
        raise AssertionError("the interior point ran")

    monkeypatch.setattr(svm, "_interior_point", refuse)
    _without_newton(monkeypatch)
    result = linear_svm(X, y, lam, loss=loss, fit_intercept=fit_intercept, tol=1e-8, random_state=0)
    assert result.converged and result.dual_gap <= 1e-8 * min(result.gap_scale, result.objective)
    assert result.n_iter == result.n_epochs >= 1  # n_iter counts the epochs of the method that certified
    assert np.all(result.dual_coef >= 0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_a_problem_the_screening_does_not_certify_is_handed_to_the_interior_point(monkeypatch, fit_intercept):
    """Dense 400 x 40 at C = 100: dual CD is far from tol=1e-8 when its budget (29 epochs) runs out; the
    interior point is handed its dual point, exactly, and certifies."""
    X, labels = make_classification(400, 40, n_informative=20, flip_y=0.05, random_state=0)
    y, lam = 2.0 * labels - 1.0, 1 / (400 * 100.0)
    seen = _spy_on_the_routing(monkeypatch)
    result = linear_svm(X, y, lam, fit_intercept=fit_intercept, tol=1e-8, random_state=0)
    assert len(seen["screened"]) == len(seen["handed"]) == 1
    np.testing.assert_array_equal(seen["handed"][0], seen["screened"][0])
    assert result.converged and result.dual_gap <= 1e-8 * min(result.gap_scale, result.objective)
    assert result.n_epochs >= 1 and result.n_iter >= 1  # both ran; n_iter counts the interior point's


@pytest.mark.parametrize(
    ("kind", "C", "loss", "fit_intercept"),
    [
        ("sparse", 0.01, "hinge", False),  # certified by the screening
        ("sparse", 0.01, "squared_hinge", True),
        ("dense", 100.0, "hinge", True),  # handed to the interior point
        ("dense", 1.0, "squared_hinge", False),
    ],
)
def test_the_routed_solution_agrees_with_the_interior_point_alone(monkeypatch, kind, C, loss, fit_intercept):
    if kind == "sparse":
        X, y = _sparse_classification(1)
    else:
        X, labels = make_classification(400, 40, n_informative=20, flip_y=0.05, random_state=1)
        y = 2.0 * labels - 1.0
    n, lam, eps = len(y), 1 / (len(y) * C), np.finfo(np.float64).eps
    routed = linear_svm(X, y, lam, loss=loss, fit_intercept=fit_intercept, tol=1e-8, random_state=0)
    monkeypatch.setattr(svm, "_SCREEN_FRACTION", 0.0)  # the interior point alone, from its cold start
    _without_newton(monkeypatch)
    alone = linear_svm(X, y, lam, loss=loss, fit_intercept=fit_intercept, tol=1e-8)
    assert routed.converged and alone.converged and alone.n_epochs == 0
    # each objective lies within its certified gap above P*, and each was summed over n terms (a
    # rounding of n eps P): their difference is at most the two gaps plus those roundings
    rounding = n * eps * max(routed.objective, alone.objective)
    assert abs(routed.objective - alone.objective) <= routed.dual_gap + alone.dual_gap + 2 * rounding
    # lam-strong convexity in w: lam/2 ||w - w*||^2 <= P(w) - P* <= gap (+ the rounding of the gap's P)
    radius = np.sqrt(2 * (routed.dual_gap + rounding) / lam) + np.sqrt(2 * (alone.dual_gap + rounding) / lam)
    assert np.linalg.norm(routed.coef - alone.coef) <= radius


def test_the_screening_is_deterministic_without_a_random_state(cancer):
    """The interior point's problems were deterministic before the screening and stay so: without a
    random_state the screening draws its permutations from seed 0."""
    X, y = cancer
    for tol in (1e-1, 1e-8):  # certified by the screening, and by the interior point
        first, second, seeded = (
            linear_svm(X, y, 0.01, tol=tol, random_state=state) for state in (None, None, 0)
        )
        for other in (second, seeded):
            np.testing.assert_array_equal(first.coef, other.coef)
            np.testing.assert_array_equal(first.dual_coef, other.dual_coef)
            assert (first.intercept, first.n_iter, first.n_epochs) == (
                other.intercept,
                other.n_iter,
                other.n_epochs,
            )


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("lam", [1e-1, 1e-2])
def test_no_intercept_matches_liblinear_with_c_map(centred, loss, lam):
    X, y = centred
    n = len(y)
    result = linear_svm(X, y, lam, loss=loss, fit_intercept=False, tol=1e-7, random_state=0, max_iter=5000)
    C = 1 / (n * lam)
    ref = LinearSVC(C=C, loss=loss, fit_intercept=False, tol=1e-12, max_iter=200_000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
    assert result.intercept == 0.0
    assert_solves(result, X, y, lam, loss, ref.coef_.ravel(), 0.0)


@pytest.mark.parametrize("lam", [1e-4, 1e-2, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_squared_hinge_with_intercept_matches_lbfgs_on_the_primal(cancer, lam, weighted):
    X, y = cancer
    a = np.random.default_rng(4).uniform(0.2, 3.0, size=len(y)) if weighted else np.ones(len(y))
    result = linear_svm(X, y, lam, loss="squared_hinge", sample_weight=a, tol=1e-12)

    def fun(z):
        w, b = z[:-1], z[-1]
        slack = np.clip(1 - y * (X @ w + b), 0, None)
        g = -2 * a * y * slack / a.sum()
        return 0.5 * lam * w @ w + a @ slack**2 / a.sum(), np.append(lam * w + X.T @ g, g.sum())

    ref = minimize(fun, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B", options={"gtol": 1e-13})
    assert_solves(result, X, y, lam, "squared_hinge", ref.x[:-1], ref.x[-1], a)
    slack = np.clip(1 - y * (X @ result.coef + result.intercept), 0, None)
    assert abs(a @ (y * slack)) / a.sum() <= 1e-10  # dP/db = 0: b is exact for our w


@given(
    n=st.integers(1, 40),
    lam=st.floats(1e-6, 1e2),
    seed=st.integers(0, 2**32 - 1),
    zero_rate=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_exact_step_is_the_minimiser_along_the_step(n, lam, seed, zero_rate):
    """_exact_step against the derivative it zeroes, and against every breakpoint and a grid of steps."""
    rng = np.random.default_rng(seed)
    p = 3
    w, dw = rng.normal(size=p), rng.normal(size=p)
    a, margin, rate = rng.uniform(0, 1, n), rng.normal(size=n), rng.normal(size=n)
    if zero_rate:
        rate[: n // 2] = 0.0

    def terms(t):  # the terms of P'(t): the ridge's, then each sample's
        return np.append(lam * (w @ dw + t * dw @ dw), -2 * a * rate * np.maximum(margin - t * rate, 0))

    def objective(t):
        return 0.5 * lam * (w + t * dw) @ (w + t * dw) + a @ np.maximum(margin - t * rate, 0) ** 2

    if terms(0.0).sum() > 0:  # a descent direction, as a Newton step is
        dw, rate = -dw, -rate
    t = svm._exact_step(lam, w, dw, a, margin, rate)
    assert t >= 0
    # P'(t) = c0 + c1 t = 0 up to the rounding of c0 and c1: sums of p + n terms each (accumulated over
    # the breakpoints), so within (n + p + 1) eps of the magnitudes they were summed from, times 4
    eps = np.finfo(np.float64).eps
    on = margin - t * rate > 0
    summed = lam * (np.abs(w * dw).sum() + t * (dw * dw).sum())
    summed += np.sum((2 * a * (np.abs(rate * margin) + rate**2 * t))[on])
    assert abs(terms(t).sum()) <= 4 * (n + p + 1) * eps * summed + 1e-300
    # no breakpoint and no step of a grid is lower (P is convex and P'(t) = 0); the objective's n terms
    # round by n eps of their sum
    with np.errstate(divide="ignore", invalid="ignore"):
        breakpoints = np.abs(margin / rate)[np.isfinite(margin / rate)]
    others = np.concatenate([breakpoints, np.linspace(0, 2 * t + 1, 101)])
    lowest = min(objective(other) for other in others)
    assert objective(t) <= lowest + 4 * (n + 1) * eps * max(abs(lowest), objective(0.0))


@pytest.mark.parametrize("sparse_design", [False, True])
@pytest.mark.parametrize("intercept", [False, True])
def test_piece_hessian_follows_the_active_set(sparse_design, intercept):
    """Updated by the samples that join and leave, the curvature equals the one formed on the piece."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 5)) + 1.0
    a = rng.uniform(0.1, 1.0, 60)
    hessian = svm._PieceHessian(sp.csr_matrix(X) if sparse_design else X, a)
    added = 0  # rows added or taken out so far: each adds its rounding to the entries
    for step in range(12):
        active = rng.random(60) < (0.9 if step == 0 else 0.5 + 0.04 * step)
        added += np.count_nonzero(active ^ hessian.active)
        hessian.move_to(active)
        X_A, weight = X[active], 2 * a[active]
        formed = X_A.T @ (weight[:, None] * X_A) + 0.3 * np.eye(5)
        if intercept:
            mean = X_A.T @ weight / weight.sum()
            formed -= weight.sum() * np.outer(mean, mean)
        lower = np.tril_indices(5)
        magnitude = np.abs(X).T @ (2 * a[:, None] * np.abs(X))  # the sum of the terms' magnitudes, all rows
        # each entry is a running sum of the rows' terms that joined or left (at most `added`, or the
        # rows of a fresh start), and the Schur term rounds within a few eps of that magnitude as well
        bound = (added + 60 + 8) * np.finfo(np.float64).eps * (magnitude + 0.3)
        difference = np.abs(hessian.system(0.3, intercept) - formed)
        assert np.all(difference[lower] <= bound[lower])


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0, 1e4])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_squared_hinge_newton_ends_on_the_optimal_piece(C, fit_intercept):
    """Fewer features than samples: Newton steps with exact line searches end on the optimal piece, where
    the step is exact: the certified gap is at the rounding of P itself (its n terms, n eps P), far
    below any tol, in at most 24 steps (the most measured on make_classification 300 x 200 and smaller
    problems, C from 0.01 to 1e4)."""
    X, labels = make_classification(300, 40, n_informative=20, flip_y=0.05, random_state=3)
    y, n, eps = 2.0 * labels - 1.0, 300, np.finfo(np.float64).eps
    result = linear_svm(X, y, 1 / (n * C), loss="squared_hinge", fit_intercept=fit_intercept, tol=1e-14)
    assert result.converged and result.n_epochs == 0 and 1 <= result.n_iter <= 24
    assert result.dual_gap <= n * eps * result.objective
    if fit_intercept:  # dP/db = 0 at the returned intercept, to the rounding of the n slacks' sum
        slack = np.maximum(1 - y * (X @ result.coef + result.intercept), 0)
        assert abs(y @ slack) <= 4 * n * eps * slack.sum()


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_a_sparse_squared_hinge_the_screening_leaves_goes_to_newton(monkeypatch, fit_intercept):
    """Sparse 1000 x 200 at C = 100: the screening's budget runs out; Newton steps from its dual point
    certify, the interior point never runs, and the answer is the interior point's (alone) within the
    two certified gaps."""
    X, y = _sparse_classification(0)
    n, lam = len(y), 1 / (len(y) * 100.0)
    interior_point = svm._interior_point

    def refuse(*args, **kwargs):
        raise AssertionError("the interior point ran")

    newton, finite_newton = [], svm._finite_newton

    def recorded_newton(*args):
        newton.append(finite_newton(*args))
        return newton[-1]

    monkeypatch.setattr(svm, "_interior_point", refuse)
    monkeypatch.setattr(svm, "_finite_newton", recorded_newton)
    options = {"loss": "squared_hinge", "fit_intercept": fit_intercept, "tol": 1e-8, "random_state": 0}
    routed = linear_svm(X, y, lam, **options)
    assert len(newton) == 1 and newton[0][2]  # after the screening, and it certified
    assert routed.converged and routed.n_epochs >= 1 and routed.n_iter == newton[0][1]
    monkeypatch.setattr(svm, "_interior_point", interior_point)
    _without_newton(monkeypatch)
    alone = linear_svm(X, y, lam, **options)
    rounding = n * np.finfo(np.float64).eps * max(routed.objective, alone.objective)  # P's n terms
    assert abs(routed.objective - alone.objective) <= routed.dual_gap + alone.dual_gap + 2 * rounding
    radius = np.sqrt(2 * (routed.dual_gap + rounding) / lam) + np.sqrt(2 * (alone.dual_gap + rounding) / lam)
    assert np.linalg.norm(routed.coef - alone.coef) <= radius


def test_a_newton_system_float64_cannot_factorize_leaves_the_route_as_it_was(monkeypatch):
    """Features scaled by 1e8 put lam below the rounding of the curvature: the first Cholesky fails, and
    the route below runs exactly as without Newton (from alpha = 0, not from Newton's first point,
    alpha = 2 a / lam, whose gap is 1e36 P0 here), warning as it did."""
    X, labels = make_classification(300, 20, n_informative=10, random_state=0)
    X, y = X * 1e8, 2.0 * labels - 1.0
    failures, newton_direction = [], svm._newton_direction

    def recorded(*args):
        try:
            return newton_direction(*args)
        except np.linalg.LinAlgError:
            failures.append(True)
            raise

    monkeypatch.setattr(svm, "_newton_direction", recorded)
    with pytest.warns(ConvergenceWarning):
        ours = linear_svm(X, y, 1e-3, loss="squared_hinge", tol=1e-8)
    assert failures == [True]
    _without_newton(monkeypatch)
    with pytest.warns(ConvergenceWarning):
        before = linear_svm(X, y, 1e-3, loss="squared_hinge", tol=1e-8)
    np.testing.assert_array_equal(ours.coef, before.coef)
    assert (ours.intercept, ours.dual_gap) == (before.intercept, before.dual_gap)


def test_a_warm_dense_squared_hinge_tries_the_screening_before_newton(monkeypatch):
    """From a path's previous solution (``dual_init``) the screening comes first, Newton after it: the
    warm start is often certified there at once (svm._newton_stage). Cold, Newton comes first."""
    X, labels = make_classification(400, 40, n_informative=20, flip_y=0.05, random_state=0)
    y, order = 2.0 * labels - 1.0, []
    run_dual_cd, finite_newton = svm._run_dual_cd, svm._finite_newton

    def screening(*args, **kwargs):
        order.append("screening")
        return run_dual_cd(*args, **kwargs)

    def newton(*args):
        order.append("newton")
        return finite_newton(*args)

    monkeypatch.setattr(svm, "_run_dual_cd", screening)
    monkeypatch.setattr(svm, "_finite_newton", newton)
    cold = linear_svm(X, y, 1 / 400, loss="squared_hinge", tol=1e-8)
    assert order == ["newton"] and cold.converged
    order.clear()
    warm = linear_svm(X, y, 0.9 / 400, loss="squared_hinge", tol=1e-8, dual_init=cold.dual_coef)
    assert order[0] == "screening" and warm.converged


def test_a_newton_solve_that_stalls_hands_its_point_on(monkeypatch):
    """A Newton step that does not lower P stops the steps; the best point certified so far, better than
    alpha = 0, is the warm start of the usual route (dual coordinate descent, then the interior point),
    which certifies. Here the third direction is made zero: two real steps (C = 0.01: the gap of their
    point is 7e-3 P0; a single step's is 5 P0), then the stall."""
    X, labels = make_classification(400, 40, n_informative=20, flip_y=0.05, random_state=0)
    y, lam = 2.0 * labels - 1.0, 1 / (400 * 0.01)
    directions, newton_direction = [], svm._newton_direction

    def one_real_step(qp, hessian, w, slack):
        directions.append(newton_direction(qp, hessian, w, slack))
        return directions[-1] if len(directions) <= 2 else (0 * w, 0.0)

    newton, started = [], []
    finite_newton, dual_cd = svm._finite_newton, svm._DualCoordinateDescent

    def recorded_newton(*args):
        newton.append(finite_newton(*args))
        return newton[-1]

    def recorded_start(*args):
        started.append(args[-1])
        return dual_cd(*args)

    monkeypatch.setattr(svm, "_newton_direction", one_real_step)
    monkeypatch.setattr(svm, "_finite_newton", recorded_newton)
    monkeypatch.setattr(svm, "_DualCoordinateDescent", recorded_start)
    result = linear_svm(X, y, lam, loss="squared_hinge", tol=1e-8, random_state=0)
    certified, n_iter, done = newton[0]
    assert not done and n_iter == 3  # two steps, a zero step, then P did not fall
    assert certified.gap < result.gap_scale  # better than alpha = 0
    np.testing.assert_array_equal(started[0], certified.alpha)
    assert result.converged and result.dual_gap <= 1e-8 * min(result.gap_scale, result.objective)
    assert result.n_epochs >= 1


def test_integer_weights_equal_duplicated_samples(cancer):
    X, y = cancer
    counts = np.random.default_rng(2).integers(1, 4, size=len(y))
    weighted = linear_svm(X, y, 0.05, sample_weight=counts, tol=1e-10, random_state=0)
    repeated = linear_svm(np.repeat(X, counts, axis=0), np.repeat(y, counts), 0.05, tol=1e-10, random_state=0)
    # the same problem solved twice: objectives within the two certified gaps (+ rounding of P, 1e-12),
    # coefficients within the strong-convexity radii sqrt(2 gap / lam) of the common optimum (+ 1e-9 for
    # the rounding of w, n eps |w| < 1e-12 here, with room)
    gaps = weighted.dual_gap + repeated.dual_gap
    assert abs(weighted.objective - repeated.objective) <= gaps + 1e-12
    radius = np.sqrt(2 * weighted.dual_gap / 0.05) + np.sqrt(2 * repeated.dual_gap / 0.05)
    assert np.linalg.norm(weighted.coef - repeated.coef) <= radius + 1e-9


def test_zero_weight_samples_are_ignored(cancer):
    X, y = cancer
    s = np.ones(len(y))
    s[:20] = 0
    flipped = y.copy()
    flipped[:20] *= -1
    a = linear_svm(X, y, 0.05, sample_weight=s, tol=1e-10, random_state=0)
    b = linear_svm(X, flipped, 0.05, sample_weight=s, tol=1e-10, random_state=0)
    c = linear_svm(X[20:], y[20:], 0.05, tol=1e-10, random_state=0)
    # the same problem three times: objectives within their certified gaps (+ 1e-12, the rounding of P)
    assert abs(a.objective - c.objective) <= a.dual_gap + c.dual_gap + 1e-12
    assert abs(b.objective - c.objective) <= b.dual_gap + c.dual_gap + 1e-12
    np.testing.assert_array_equal(a.dual_coef[:20], 0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_equals_dense_and_float32_keeps_dtype(cancer, fit_intercept):
    X, y = cancer
    X = np.where(np.abs(X - 2) > 1, X, 0.0)  # make it worth storing sparse
    dense = linear_svm(X, y, 0.05, fit_intercept=fit_intercept, tol=1e-10, random_state=0)
    sparse = linear_svm(sp.csr_matrix(X), y, 0.05, fit_intercept=fit_intercept, tol=1e-10, random_state=0)
    single = linear_svm(X.astype(np.float32), y, 0.05, fit_intercept=fit_intercept, tol=1e-6, random_state=0)
    # the same problem: objectives within the certified gaps, w within the strong-convexity radii (+ 1e-9
    # for the rounding of w, as above)
    assert abs(sparse.objective - dense.objective) <= sparse.dual_gap + dense.dual_gap + 1e-12
    radius = np.sqrt(2 * sparse.dual_gap / 0.05) + np.sqrt(2 * dense.dual_gap / 0.05)
    assert np.linalg.norm(sparse.coef - dense.coef) <= radius + 1e-9
    assert single.coef.dtype == np.float32 and dense.coef.dtype == np.float64
    # float32 X is another problem: X rounds by 2**-24 relative, moving each margin by at most
    # 2**-24 |x_i||w| (< 1e-6 here) and P by as much (the hinge is 1-Lipschitz), plus tol * P0 = 1e-6 P0
    # and the float32 rounding of w (1e-7 relative): 1e-5 relative covers it twice
    assert single.objective == pytest.approx(dense.objective, rel=1e-5)


def test_dual_coefficients_rebuild_w_and_stay_in_the_box(cancer):
    X, y = cancer
    lam = 0.05
    result = linear_svm(X, y, lam, tol=1e-10, random_state=0)
    alpha = result.dual_coef
    eps = np.finfo(np.float64).eps
    # alpha is clipped to U = a_i / lam, computed as (1/n)/lam here: 2 roundings of U
    assert np.all(alpha >= 0) and np.all(alpha <= 1 / (len(y) * lam) * (1 + 4 * eps))
    # the heavier class is scaled so that y.alpha = 0: exact but for the rounding of two sums of n terms
    assert abs(alpha @ y) <= 2 * len(y) * eps * alpha.sum()
    # the same sum in another order: n terms round by at most n eps sum |alpha_i x_i|
    assert np.all(np.abs(X.T @ (alpha * y) - result.coef) <= len(y) * eps * (np.abs(X).T @ alpha))


def test_gap_stopping_respects_tol_and_warm_start_is_cheap(cancer):
    X, y = cancer
    loose = linear_svm(X, y, 0.01, tol=1e-1, random_state=0)
    tight = linear_svm(X, y, 0.01, tol=1e-8, random_state=0)
    p0 = 2 * min((y > 0).mean(), (y < 0).mean())  # hinge at w = 0 with the best constant intercept
    # the stopping rule: the gap within tol of min(P0, P) (P ~ P0 / 10 here)
    assert loose.dual_gap <= 1e-1 * min(p0, loose.objective)
    assert tight.dual_gap <= 1e-8 * min(p0, tight.objective)
    assert tight.gap_scale == pytest.approx(p0) and tight.converged
    # the loose tol is certified by linear_svm's coordinate-descent screening (n_iter then counts its
    # epochs), sooner than the tight one's screening spends its budget and hands over to the interior point
    assert loose.n_iter == loose.n_epochs < tight.n_epochs
    warm = linear_svm(X, y, 0.01, tol=1e-8, random_state=0, dual_init=tight.dual_coef)
    assert warm.n_iter == 0  # the warm start is already certified
    assert warm.objective == pytest.approx(tight.objective, rel=1e-12)  # the same point: rounding of P
    nearby = linear_svm(X, y, 0.011, tol=1e-8, dual_init=tight.dual_coef)
    assert nearby.converged and nearby.n_iter <= tight.n_iter + 2


def test_unconverged_solve_warns_with_the_gap(cancer):
    X, y = cancer
    with pytest.warns(ConvergenceWarning, match="interior-point iterations with duality gap"):
        result = linear_svm(X, y, 1e-4, tol=1e-12, max_iter=3, random_state=0)
    assert result.n_iter == 3 and result.dual_gap > 1e-12 * result.gap_scale and not result.converged


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lam": 0.0}, ValueError, "lam"),
        ({"loss": "log"}, ValueError, "loss"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"dual_init": np.ones(3)}, ValueError, "dual_init"),
        ({"sample_weight": np.ones(3)}, ValueError, "sample_weight"),
    ],
)
def test_bad_arguments_raise_naming_them(cancer, kwargs, error, match):
    X, y = cancer
    args = {"lam": 0.1} | kwargs
    with pytest.raises(error, match=match):
        linear_svm(X, y, args.pop("lam"), **args)


def test_bad_labels_raise(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="-1, \\+1"):
        linear_svm(X, (y > 0).astype(float), 0.1)
    with pytest.raises(ValueError, match="both classes"):
        linear_svm(X, np.ones(len(y)), 0.1)
    with pytest.raises(ValueError, match="both classes"):
        linear_svm(X, y, 0.1, sample_weight=(y > 0).astype(float))


# ---- hard margin -------------------------------------------------------------------------------


def separable(n, p, seed, gap=0.3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    direction = rng.normal(size=p)
    score = X @ direction + 0.5
    keep = np.abs(score) > gap
    return X[keep], np.where(score[keep] > 0, 1.0, -1.0)


def test_hard_margin_one_dimension_closed_form():
    X = np.array([[-2.0], [-1.0], [3.0], [5.0]])
    y = np.array([-1.0, -1.0, 1.0, 1.0])
    result = hard_margin_svm(X, y)
    # the closest pair is -1 and 3: w = 2 / (3 - (-1)), boundary at their midpoint 1
    assert result.coef[0] == pytest.approx(0.5, abs=1e-12)
    assert result.intercept == pytest.approx(-0.5, abs=1e-12)
    assert result.margin == pytest.approx(2.0, abs=1e-12)
    np.testing.assert_array_equal(result.support, [1, 2])
    # alpha_2 = alpha_3 (sum alpha_i y_i = 0) and w = alpha_2 * 1 + alpha_3 * 3 = 0.5
    np.testing.assert_allclose(result.dual_coef, [0, 0.125, 0.125, 0], atol=1e-12)


@pytest.mark.parametrize("C", [1e8, 1e10])
@pytest.mark.parametrize(("n", "p"), [(60, 2), (80, 6), (25, 60)])
def test_hard_margin_matches_svc_with_huge_c(n, p, C):
    X, y = separable(n, p, seed=n + p)
    result = hard_margin_svm(X, y)
    ref = SVC(kernel="linear", C=C, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(result.coef, ref.coef_.ravel(), rtol=1e-5, atol=1e-6)
    assert result.intercept == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert result.margin == pytest.approx(1 / np.linalg.norm(ref.coef_), rel=1e-6)
    for name, value in result.kkt.items():
        assert value <= 1e-9, name
    assert abs(result.dual_gap) <= 1e-9 * result.coef @ result.coef
    margins = y * (X @ result.coef + result.intercept)
    assert margins.min() >= 1 - 1e-10
    np.testing.assert_allclose(margins[result.support], 1, atol=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_soft_margin_at_huge_c_is_the_hard_margin(fit_intercept):
    """Above the largest multiplier the soft margin's box is inactive: it solves the hard-margin QP."""
    problem = separable_classification(40, 3, gap=0.5, offset=0.7 if fit_intercept else 0.0, seed=2)
    hard = hard_margin_svm(problem.X, problem.y, fit_intercept=fit_intercept)
    lam = 0.5 / (len(problem.y) * hard.dual_coef.max())  # C_i = 1/(n lam) = 2 max alpha
    soft = linear_svm(problem.X, problem.y, lam, fit_intercept=fit_intercept, tol=1e-12)
    np.testing.assert_allclose(soft.coef, hard.coef, rtol=1e-7, atol=1e-9)
    assert soft.intercept == pytest.approx(hard.intercept, abs=1e-7)
    np.testing.assert_allclose(soft.dual_coef, hard.dual_coef, atol=1e-7 * hard.dual_coef.max())


@pytest.mark.parametrize("seed", range(3))
def test_overlapping_classes_raise_not_separable(seed):
    problem = separable_classification(30, 2, gap=1.0, offset=0.3, seed=seed)
    X, y = problem.X.copy(), problem.y.copy()
    y[np.argmax(y * (X @ problem.direction))] *= -1  # the point deepest in its class changes sides
    with pytest.raises(NotSeparableError, match="not linearly separable"):
        hard_margin_svm(X, y)


def test_hard_margin_without_intercept_and_sparse():
    X, y = separable(50, 4, seed=7)
    X = np.hstack([X, np.ones((len(y), 1))])  # a constant feature plays the (penalized) intercept
    dense = hard_margin_svm(X, y, fit_intercept=False)
    sparse = hard_margin_svm(sp.csr_matrix(X), y, fit_intercept=False)
    ref = SVC(kernel="linear", C=1e10, tol=1e-10).fit(X, y)  # libsvm always has an intercept: compare margins
    assert dense.intercept == 0.0
    assert dense.margin <= 1 / np.linalg.norm(ref.coef_) + 1e-9  # penalizing the offset can only shrink it
    assert np.min(y * (X @ dense.coef)) >= 1 - 1e-10
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-10)


def test_iris_setosa_versus_versicolor_is_separable_versicolor_versus_virginica_is_not():
    X, y = load_iris(return_X_y=True)
    first = y < 2
    result = hard_margin_svm(X[first], np.where(y[first] == 0, -1.0, 1.0))
    assert result.margin > 0 and result.kkt["primal_infeasibility"] <= 1e-10
    last = y > 0
    with pytest.raises(NotSeparableError, match="soft-margin") as info:
        hard_margin_svm(X[last], np.where(y[last] == 1, -1.0, 1.0))
    assert isinstance(info.value, ValueError)


def test_separable_only_with_an_offset_raises_without_intercept():
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([-1.0, -1.0, 1.0, 1.0])
    assert hard_margin_svm(X, y).margin == pytest.approx(0.5)
    with pytest.raises(NotSeparableError):
        hard_margin_svm(X, y, fit_intercept=False)


def test_duplicate_point_with_both_labels_is_not_separable():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(NotSeparableError):
        hard_margin_svm(X, np.array([1.0, -1.0, -1.0]))


@given(seed=st.integers(0, 2**16), n=st.integers(4, 30), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_hard_margin_beats_every_direction_in_the_plane(seed, n, scale):
    """In 2-D the best margin along direction u is (min_+ u.x - max_- u.x) / 2; ours is their maximum."""
    X, y = separable(n, 2, seed, gap=0.2)
    if len(np.unique(y)) < 2:
        return
    X = scale * X
    result = hard_margin_svm(X, y)
    step = 2 * np.pi / 20_000
    angles = np.arange(20_000) * step
    projected = X @ np.stack([np.cos(angles), np.sin(angles)])
    best = (projected[y > 0].min(axis=0) - projected[y < 0].max(axis=0)) / 2
    # the margin along u(theta) is R-Lipschitz in theta, R the largest norm of a sample
    lipschitz = np.linalg.norm(X, axis=1).max()
    assert result.margin >= best.max() * (1 - 1e-9)
    assert result.margin <= best.max() + lipschitz * step / 2 + 1e-12 * lipschitz
    for name, value in result.kkt.items():
        assert value <= 1e-8, name


def test_hard_margin_iteration_cap_is_validated_and_reported():
    X, y = separable(60, 3, seed=11)
    with pytest.raises(ValueError, match="max_iter"):
        hard_margin_svm(X, y, max_iter=0)
    with pytest.raises(RuntimeError, match="active-set iterations"):
        hard_margin_svm(X, y, max_iter=1)


@pytest.mark.parametrize("C", [100.0, 1000.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_large_c_reaches_tol_relative_to_the_objective(seed, C):
    """Issue 15: at C = 100-1000 the optimum P* ~ 1e-5 is far below P0 ~ 1, and a gap of tol * P0
    alone stopped 1e-6 above P* relative to it with the coefficients 1e-4-1e-3 off. The stopping
    rule gap <= tol * min(P0, P) brings the relative suboptimality to tol.

    Oracle: with p = 500 > n = 200 the classes are separable, and when every multiplier of the
    hard-margin SVM is below the box C_i = C (checked), the hard-margin solution satisfies the soft
    margin's KKT conditions: it is the soft-margin optimum, P* = lam/2 ||w_hm||^2 (no slack). The
    hard margin is solved by another algorithm (a linear program, then a primal active set).
    """
    rng = np.random.default_rng(seed)
    n = 200
    X = rng.standard_normal((n, 500))
    y = np.sign(X[:, 0] + 0.5 * rng.standard_normal(n))
    lam = 1 / (n * C)
    oracle = hard_margin_svm(X, y)
    assert oracle.dual_coef.max() <= C  # the premise: the box does not bind
    assert max(oracle.kkt.values()) <= 1e-12  # the oracle is exact to rounding (measured <= 1.2e-14)
    optimum = 0.5 * lam * float(oracle.coef @ oracle.coef)
    tol = 1e-10
    result = linear_svm(X, y, lam, tol=tol)
    assert result.converged and result.dual_gap <= tol * result.objective
    # P - P* <= gap <= tol * P; the oracle's P* is exact but for its rounding, 1e-12 relative
    # (its KKT residuals), and P rounds at 64 eps relative (the certificate's floor)
    assert result.objective - optimum <= tol * result.objective + 1e-12 * optimum
    # strong convexity lam/2 ||w - w*||^2 <= P - P* <= gap; the oracle's coefficients are exact to
    # its stationarity residual (1e-12 of ||w||_inf, above)
    radius = np.sqrt(2 * result.dual_gap / lam) + 1e-12 * np.abs(oracle.coef).max()
    assert np.linalg.norm(result.coef - oracle.coef) <= radius
