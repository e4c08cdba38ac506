"""FISTA against coordinate descent, scikit-learn, closed forms and optimality conditions; numpy and torch.

Tolerances: two solutions with certified gaps g1, g2 have objectives within g1 + g2 (each is >= P* and <=
P* + its gap), plus the objective's rounding (50 terms: 64 eps P0 is FISTA's own floor, 1e-13 P0 here), and
coefficients within sqrt(2 g1 / mu) + sqrt(2 g2 / mu): at gap 1e-10 P0 that is 4.1e-5 for the squared loss
(P0 = 2.75, mu = 0.32, the smallest eigenvalue of Xc^T Xc / n), 1.9e-4 for the logistic one (P0 = log 2,
mu = 0.0038 at the solution) and 2.1e-4 for the multinomial (P0 = log 3, mu >= lam (1 - rho) = 0.005).
Where a test allows less, the comparison repeats the same iterations up to rounding: measured tolerances.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import minimize
from sklearn import linear_model
from sklearn.exceptions import ConvergenceWarning

from normpen.linear.datafits import Hinge, Logistic, Multinomial, MultitaskQuadratic, Quadratic
from normpen.linear.solvers.cd import coordinate_descent
from normpen.linear.solvers.fista import fista
from normpen.penalties.anchored import Anchored
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

GROUPS = [np.arange(i, i + 4) for i in range(0, 16, 4)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 16))
    y = X[:, :3] @ np.array([1.5, -2.0, 1.0]) + 0.5 * rng.standard_normal(50) + 0.7
    return X, y, np.where(y > np.median(y), 1.0, -1.0), np.digitize(y, np.quantile(y, [0.33, 0.66]))


CASES = {
    "lasso": (Quadratic(), L1(0.05), 1),
    "elastic_net": (Quadratic(), ElasticNet(0.1, 0.4), 1),
    "group_lasso": (Quadratic(), GroupLasso(0.1, GROUPS), 1),
    "group_lasso_free_features": (Quadratic(), GroupLasso(0.1, GROUPS[:2]), 1),
    "sparse_group_lasso": (Quadratic(), SparseGroupLasso(0.1, GROUPS, 0.5), 1),
    "logistic_l1": (Logistic(), L1(0.01), 2),
    "multinomial_elastic_net": (Multinomial(), ElasticNet(0.01, 0.5), 3),
}


def _target(data, kind):
    X, y, binary, labels = data
    return {1: y, 2: binary, 3: labels}[kind]


@pytest.mark.parametrize("name", CASES)
def test_fista_and_coordinate_descent_agree(data, name):
    datafit, penalty, kind = CASES[name]
    X, y = data[0], _target(data, kind)
    reference = coordinate_descent(X, y, datafit, penalty, tol=1e-12)
    ours = fista(X, y, datafit, penalty, tol=1e-10, max_iter=50_000)
    assert ours.converged and ours.dual_gap <= 1e-10 * ours.gap_scale
    certified = ours.dual_gap + reference.dual_gap + 1e-13 * ours.gap_scale  # module docstring
    assert abs(ours.objective - reference.objective) <= certified
    # the certificate of the module docstring at the smallest mu of these cases: 2.1e-4 + 2.1e-5 (measured
    # 1.1e-5 for the multinomial, which a picked 1e-4 left 9x room)
    np.testing.assert_allclose(ours.coef, reference.coef, atol=3e-4)


def test_fista_takes_sparse_designs(data):
    X, y = data[0], data[1]
    dense = fista(X, y, Quadratic(), L1(0.05), tol=1e-10, max_iter=20_000)
    sparse = fista(sp.csr_matrix(X), y, Quadratic(), L1(0.05), tol=1e-10, max_iter=20_000)
    # measured: the same 50 iterations up to the kernels' rounding (2.2e-16); the certificate allows 8e-5
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_tensors_give_the_numpy_solution(data, dtype):
    X, y = data[0], data[2]
    reference = fista(X, y, Logistic(), L1(0.01), tol=1e-10, max_iter=20_000)
    ours = fista(
        torch.tensor(X, dtype=dtype),
        torch.tensor(y, dtype=dtype),
        Logistic(),
        L1(0.01),
        tol=1e-10 if dtype == torch.float64 else 1e-5,
        max_iter=20_000,
    )
    assert isinstance(ours.coef, torch.Tensor) and ours.coef.dtype == dtype
    # float64: the same iterations in torch (measured 4.4e-15; the certificate allows 3.8e-4). float32 at its
    # gap 9.4e-6 P0 the certificate gives sqrt(2 * 9.4e-6 * log 2 / 0.0038) = 0.06; measured 1.1e-4, 2e-2
    # leaves 180x
    np.testing.assert_allclose(
        ours.coef.numpy(), reference.coef, atol=1e-6 if dtype == torch.float64 else 2e-2
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fista_runs_on_the_gpu(data):
    X, y = data[0], data[1]
    reference = fista(X, y, Quadratic(), GroupLasso(0.1, GROUPS), tol=1e-10, max_iter=20_000)
    device = torch.device("cuda")
    ours = fista(
        torch.tensor(X, device=device),
        torch.tensor(y, device=device),
        Quadratic(),
        GroupLasso(0.1, GROUPS),
        tol=1e-10,
        max_iter=20_000,
    )
    assert ours.coef.device.type == "cuda"
    # the same iterations in another order of sums (float64): rounding only; the certificate allows 8e-5
    np.testing.assert_allclose(ours.coef.cpu().numpy(), reference.coef, atol=1e-6)


def test_nuclear_norm_solution_satisfies_its_optimality_conditions(data):
    r"""Optimality: :math:`\|G\|_2 \le \lambda` and :math:`\langle -G, W\rangle = \lambda\|W\|_*`."""
    X = data[0]
    rng = np.random.default_rng(1)
    Y = X @ rng.standard_normal((16, 2)) @ rng.standard_normal((2, 5)) + 0.3 * rng.standard_normal((50, 5))
    lam = 0.3
    ours = fista(X, Y, MultitaskQuadratic(), Nuclear(lam), tol=1e-11, max_iter=50_000)
    residual = Y - X @ ours.coef - ours.intercept
    gradient = -(X.T @ residual) / len(X)
    singular = np.linalg.svd(ours.coef, compute_uv=False)
    # gap <= 1e-11 P0 (P0 = 80) and mu = 0.32 give ||W - W*||_F <= r = 7.1e-5; the gradient moves by <= L r
    # with L = 2.22 (the top eigenvalue of Xc^T Xc / n): 5.2e-4 lam. <-G, W> moves by <= L r ||W||_* + 2 lam
    # sqrt(5) r, 5.4e-4 of lam ||W||_* = 4.6 (measured 2.5e-11 and 3.9e-11; the picked 1e-4 and 1e-5 were
    # below the bound)
    assert np.linalg.norm(gradient, 2) <= lam * (1 + 6e-4)
    assert np.sum(-gradient * ours.coef) == pytest.approx(lam * singular.sum(), rel=6e-4)
    # the prox zeroes singular values exactly, up to the SVD's rounding 10 * eps ~ 2e-15; the kept ones are >=
    # 5
    assert np.sum(singular > 1e-8) < 5  # the nuclear norm lowers the rank


def test_penalty_without_certificate_stops_on_the_step_and_reports_no_gap(data):
    """Anchored L2 has a closed form: (Xc'Xc/n + lam I) w = Xc'yc/n + lam a."""
    X, y = data[0], data[1]
    anchor = np.linspace(-1, 1, 16)
    lam = 0.2
    ours = fista(X, y, Quadratic(), Anchored(lam, anchor), tol=1e-12, max_iter=50_000)
    Xc, yc = X - X.mean(0), y - y.mean()
    exact = np.linalg.solve(Xc.T @ Xc / 50 + lam * np.eye(16), Xc.T @ yc / 50 + lam * anchor)
    # the stop is a move <= tol max(||w||, 1) ~ 3e-12; the gradient mapping bounds ||w - w*|| by (2L / mu)
    # times a step, 2 * 2.42 / 0.52 ~ 9.3: 3e-11 (measured 2.2e-13)
    np.testing.assert_allclose(ours.coef, exact, atol=1e-10)
    assert np.isnan(ours.dual_gap) and ours.converged


def test_fista_warns_with_the_gap_when_it_stops_early(data):
    X, y = data[0], data[1]
    with pytest.warns(ConvergenceWarning, match="duality gap"):
        result = fista(X, y, Quadratic(), L1(0.01), tol=1e-14, max_iter=20)
    assert not result.converged and result.n_iter == 20


def test_fista_refuses_the_hinge(data):
    with pytest.raises(ValueError, match="differentiable"):
        fista(data[0], data[2], Hinge(), L1(0.1))


def test_torch_input_is_validated():
    with pytest.raises(ValueError, match="NaN"):
        fista(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.tensor([1.0, 2.0]), Quadratic(), L1(0.1))
    with pytest.raises(ValueError, match="samples"):
        fista(
            torch.ones((3, 2), dtype=torch.float64), torch.ones(2, dtype=torch.float64), Quadratic(), L1(0.1)
        )


# ---- positivity ------------------------------------------------------------------------------

SIGN_INVARIANT = {
    "lasso": L1(0.05),
    "weighted_lasso": L1(0.05, weights=np.linspace(0.0, 2.0, 16)),
    "elastic_net": ElasticNet(0.1, 0.4),
    "group_lasso": GroupLasso(0.1, GROUPS),
    "sparse_group_lasso": SparseGroupLasso(0.1, GROUPS, 0.5),
}


def _orthant_prox_minimum(penalty, x, step, starts):
    r"""Smallest :math:`\tfrac12\|z - x\|^2 + sP(z)` over :math:`z \ge 0` Nelder-Mead finds (as max(v, 0))."""

    def objective(v):
        z = np.maximum(v, 0).reshape(x.shape)
        return 0.5 * np.sum((z - x) ** 2) + step * float(penalty._value(z))

    options = {"xatol": 1e-10, "fatol": 1e-14, "adaptive": True, "maxfev": 20_000}
    return min(minimize(objective, s.ravel(), method="Nelder-Mead", options=options).fun for s in starts)


@pytest.mark.parametrize(
    "penalty",
    [
        L1(0.6, weights=np.array([0.0, 1.0, 2.0, 0.5, 1.0, 1.5])),
        ElasticNet(0.6, 0.3),
        GroupLasso(0.6, [np.array([0, 1, 2]), np.array([4, 3])]),
        SparseGroupLasso(0.6, [np.array([0, 1, 2]), np.array([4, 3])], 0.4),
    ],
    ids=repr,
)
def test_prox_with_positivity_is_the_prox_of_the_positive_part(penalty):
    """The identity FISTA's positive=True rests on, for each kind of sign-invariant penalty."""
    x = 1.5 * np.random.default_rng(2).standard_normal(6)
    ours = penalty.prox(np.maximum(x, 0), 1.1)
    assert np.all(ours >= 0)
    objective = 0.5 * np.sum((ours - x) ** 2) + 1.1 * float(penalty.value(ours))
    best = _orthant_prox_minimum(penalty, x, 1.1, (np.abs(x), ours + 0.05, np.zeros_like(x)))
    # the objective's rounding: 6 terms, ~10 eps relative (measured 0)
    assert objective <= best + 1e-12 * abs(best)


def test_max_norm_with_positivity_projects_onto_both_sets():
    """Max-norm indicator plus positivity: the nearest point with every row in the ball and z >= 0."""
    x = 1.5 * np.random.default_rng(2).standard_normal((2, 3))
    ours = MaxNorm(0.8).prox(np.maximum(x, 0), 1.0)
    reference = minimize(
        lambda z: 0.5 * np.sum((z - x.ravel()) ** 2),
        np.zeros(6),
        jac=lambda z: z - x.ravel(),
        bounds=[(0, None)] * 6,
        constraints={"type": "ineq", "fun": lambda z: 0.64 - np.sum(z.reshape(2, 3) ** 2, axis=1)},
        method="SLSQP",
        options={"ftol": 1e-15},
    )
    # SLSQP stops on ftol 1e-15 in an objective of curvature 1: x to sqrt(2 * 1e-15) ~ 4.5e-8 (measured
    # 1.7e-9)
    np.testing.assert_allclose(ours.ravel(), reference.x, atol=1e-7)


def test_prox_of_the_positive_part_fails_for_the_nuclear_norm():
    """Why FISTA refuses such penalties: a sign flip changes the singular values, and the identity breaks."""
    penalty, x = Nuclear(0.3), np.array([[1.0, -0.8], [0.9, 1.0]])
    ours = penalty.prox(np.maximum(x, 0), 1.0)
    objective = 0.5 * np.sum((ours - x) ** 2) + float(penalty.value(ours))
    # Nelder-Mead finds a point 0.09 lower; 1e-3 is far above its accuracy (fatol 1e-14) and far below that
    assert _orthant_prox_minimum(penalty, x, 1.0, (np.abs(x), ours)) < objective - 1e-3


@pytest.mark.parametrize("name", SIGN_INVARIANT)
def test_positive_fista_agrees_with_positive_coordinate_descent(data, name):
    X, y = data[0], data[1] - 0.4 * data[0][:, 5]  # a negative effect, zeroed by the constraint
    penalty = SIGN_INVARIANT[name]
    reference = coordinate_descent(X, y, Quadratic(), penalty, positive=True, tol=1e-12)
    ours = fista(X, y, Quadratic(), penalty, positive=True, tol=1e-10, max_iter=50_000)
    assert ours.converged and ours.dual_gap <= 1e-10 * ours.gap_scale
    assert np.all(ours.coef >= 0) and ours.coef[5] == 0
    certified = ours.dual_gap + reference.dual_gap + 1e-13 * ours.gap_scale  # module docstring
    assert abs(ours.objective - reference.objective) <= certified
    # the squared loss's certificate (module docstring): 4.1e-5 + 4.1e-6 (measured 6.3e-7 for the elastic net)
    np.testing.assert_allclose(ours.coef, reference.coef, atol=5e-5)


def test_positive_fista_is_scikit_learns_positive_lasso(data):
    X, y = data[0], data[1] - 0.4 * data[0][:, 5]
    ours = fista(X, y, Quadratic(), L1(0.05), positive=True, tol=1e-12, max_iter=50_000)
    reference = linear_model.Lasso(alpha=0.05, positive=True, tol=1e-12, max_iter=100_000).fit(X, y)
    # both at gap 1e-12 P0: sqrt(2e-12 * 2.75 / 0.32) = 4.1e-6 each, and b = mean(y) - mean(x) w moves by less
    # (|mean(x)| <= 0.3); measured 3e-13
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-5)
    assert ours.intercept == pytest.approx(reference.intercept_, abs=1e-5)


def test_positive_logistic_fista_on_torch_gives_the_numpy_solution(data):
    X, y = data[0], data[2]
    reference = fista(X, y, Logistic(), L1(0.01), positive=True, tol=1e-10, max_iter=20_000)
    X_t, y_t = torch.tensor(X), torch.tensor(y)
    ours = fista(X_t, y_t, Logistic(), L1(0.01), positive=True, tol=1e-10, max_iter=20_000)
    assert bool((ours.coef >= 0).all())
    # the same iterations in torch: rounding only (measured 4.4e-16); the certificate allows 3.8e-4
    np.testing.assert_allclose(ours.coef.numpy(), reference.coef, atol=1e-6)


@pytest.mark.parametrize("penalty", [Nuclear(0.1), Anchored(0.1, np.ones(16))], ids=repr)
def test_positivity_is_refused_where_the_prox_identity_fails(data, penalty):
    X, Y = data[0], data[1] if isinstance(penalty, Anchored) else np.column_stack([data[1], data[1]])
    datafit = Quadratic() if isinstance(penalty, Anchored) else MultitaskQuadratic()
    with pytest.raises(TypeError, match=f"positive=True needs .* {type(penalty).__name__} is not one"):
        fista(X, Y, datafit, penalty, positive=True)
