"""``path`` and ``lambda_max`` on torch tensors: FISTA on the tensors' device, the same path as on numpy."""

import numpy as np
import pytest

import normpen as npn
from normpen.linear import Hinge, Logistic, MultitaskQuadratic, Quadratic, path
from normpen.linear.path import SOLVERS, lambda_max

torch = pytest.importorskip("torch")

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 15))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.standard_normal(60)
    return X, y


def _tensors(X, y, dtype=torch.float64):
    return torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype)


def test_only_fista_takes_tensors():
    assert [entry.name for entry in SOLVERS.values() if entry.tensors] == ["fista"]


@pytest.mark.parametrize("datafit", [Quadratic(), Logistic()], ids=["quadratic", "logistic"])
def test_lasso_path_on_tensors_matches_numpy_within_the_gaps(data, datafit):
    X, y = data
    y = y if isinstance(datafit, Quadratic) else np.sign(y)
    options = {"tol": 1e-6, "max_iter": 5000}
    on_numpy = path(X, y, datafit, npn.L1(1.0), n_lams=8, eps=1e-2, solver="fista", **options)
    # the same strengths (the default grids differ by lambda_max's rounding, tested below)
    on_tensors = path(*_tensors(X, y), datafit, npn.L1(1.0), on_numpy.lams, **options)
    assert isinstance(on_tensors.coefs, np.ndarray) and on_tensors.coefs.dtype == np.float64
    assert on_tensors.converged.all()
    # Each objective is within its own gap above the optimum P*, so two of them differ by at most the
    # larger gap; each is a sum computed to 64 eps |P| (Problem.objective_rounding).
    bound = (
        on_numpy.dual_gaps
        + on_tensors.dual_gaps
        + 64 * EPS64 * (np.abs(on_numpy.objectives) + np.abs(on_tensors.objectives))
    )
    assert np.all(np.abs(on_tensors.objectives - on_numpy.objectives) <= bound)


def test_elastic_net_path_on_tensors_is_within_the_strong_convexity_radius(data):
    X, y = data
    l1_ratio = 0.5
    on_numpy = path(X, y, Quadratic(), npn.ElasticNet(1.0, l1_ratio), n_lams=8, solver="fista", tol=1e-6)
    on_tensors = path(*_tensors(X, y), Quadratic(), npn.ElasticNet(1.0, l1_ratio), on_numpy.lams, tol=1e-6)
    assert on_tensors.converged.all()
    # W -> min_b F(W, b) + P(W) is mu-strongly convex with mu = lam (1 - l1_ratio) (the ridge part; the
    # partial minimum over b of a convex function stays convex), so a point with gap g is within
    # sqrt(2 g / mu) of the minimiser; the two paths are within the sum of their radii, plus the
    # coefficients' own rounding 64 eps max|W|. A gap is never below zero but for rounding (at W = 0,
    # where primal and dual agree), so a negative one counts as zero.
    mu = on_numpy.lams * (1 - l1_ratio)
    gaps = np.maximum(on_numpy.dual_gaps, 0), np.maximum(on_tensors.dual_gaps, 0)
    radius = np.sqrt(2 * gaps[0] / mu) + np.sqrt(2 * gaps[1] / mu)
    distance = np.linalg.norm(on_tensors.coefs - on_numpy.coefs, axis=1)
    assert np.all(distance <= radius + 64 * EPS64 * np.abs(on_numpy.coefs).max())


def test_lambda_max_on_tensors_equals_numpy_to_rounding(data):
    X, y = data
    on_numpy = lambda_max(X, y, Quadratic(), npn.L1(1.0))
    on_tensors = lambda_max(*_tensors(X, y), Quadratic(), npn.L1(1.0))
    # lambda_max = max_j |x_j^T (y - ybar)| / n; a sum of n products (and the mean, n more terms) is
    # computed to (2n) eps |x_j|^T |y - ybar| (Higham's gamma_n, first order), on each side.
    n = X.shape[0]
    scale = np.max(np.abs(X).T @ np.abs(y - y.mean())) / n
    assert abs(on_tensors - on_numpy) <= 2 * (2 * n) * EPS64 * scale


def test_nuclear_path_on_tensors_matches_numpy(data):
    """A penalty without a block form: lambda_max is its own dual norm of the gradient at zero."""
    X, _ = data
    Y = X[:, :3] @ np.random.default_rng(1).standard_normal((3, 4))
    on_numpy = path(X, Y, MultitaskQuadratic(), npn.Nuclear(1.0), n_lams=4, tol=1e-8)
    on_tensors = path(*_tensors(X, Y), MultitaskQuadratic(), npn.Nuclear(1.0), on_numpy.lams, tol=1e-8)
    assert on_tensors.coefs.shape == on_numpy.coefs.shape and on_tensors.converged.all()
    bound = (
        on_numpy.dual_gaps
        + on_tensors.dual_gaps
        + 64 * EPS64 * (np.abs(on_numpy.objectives) + np.abs(on_tensors.objectives))
    )  # as for the lasso above
    assert np.all(np.abs(on_tensors.objectives - on_numpy.objectives) <= bound)
    # lambda_max = ||X^T (Y - Ybar)||_2 / n: each entry of the gradient is within
    # (2n) eps |X|^T |Y - Ybar| / n of its value on each side (as for the lasso), the spectral norm moves
    # by at most the Frobenius norm of that error, and the SVD adds its backward error, a small multiple
    # of eps ||G||_2 (64 here).
    n = X.shape[0]
    entrywise = 2 * n * EPS64 * (np.abs(X).T @ np.abs(Y - Y.mean(axis=0))) / n
    tolerance = 2 * (np.linalg.norm(entrywise) + 64 * EPS64 * on_numpy.lambda_max)
    on_device = lambda_max(*_tensors(X, Y), MultitaskQuadratic(), npn.Nuclear(1.0))
    assert abs(on_device - on_numpy.lambda_max) <= tolerance


def test_float32_tensors_reach_their_tol(data):
    X, y = data
    tol = 1e-4
    result = path(*_tensors(X, y, torch.float32), Quadratic(), npn.ElasticNet(1.0, 0.7), n_lams=6, tol=tol)
    assert result.coefs.dtype == np.float32 and result.converged.all()
    # The stopping rule (Problem.gap_threshold): gap <= max(tol P0, 64 eps32 |P|).
    threshold = np.maximum(tol * result.gap_scale, 64 * EPS32 * np.abs(result.objectives))
    assert np.all(result.dual_gaps <= threshold)


def test_warm_start_init_as_tensors(data):
    X, y = data
    Xt, yt = _tensors(X, y)
    first = path(Xt, yt, Quadratic(), npn.L1(1.0), [0.05], tol=1e-8)
    again = path(
        Xt, yt, Quadratic(), npn.L1(1.0), [0.05], tol=1e-8, init=(torch.tensor(first.coefs[0]), None)
    )
    assert again.converged.all() and again.n_iters[0] <= first.n_iters[0]


def test_unpenalized_columns_on_tensors_need_a_grid(data):
    X, y = data
    weights = np.ones(X.shape[1])
    weights[0] = 0.0
    Xt, yt = _tensors(X, y)
    with pytest.raises(ValueError, match=r"lambda_max of torch tensors .* lams="):
        lambda_max(Xt, yt, Quadratic(), npn.L1(1.0, weights=weights))
    result = path(Xt, yt, Quadratic(), npn.L1(1.0, weights=weights), [0.5, 0.1])
    assert result.converged.all()


def test_auto_names_fista_when_it_does_not_take_the_problem(data):
    with pytest.raises(ValueError, match=r"no solver takes Hinge with L2 on torch tensors: fista takes"):
        path(*_tensors(data[0], np.sign(data[1])), Hinge(), npn.L2(1.0), [0.1])


@pytest.mark.parametrize("solver", ["cd", "lbfgs", "svm", "ridge"])
def test_host_solvers_refuse_tensors_by_name(data, solver):
    penalty = npn.L1(1.0) if solver == "cd" else npn.L2(1.0)
    with pytest.raises(TypeError, match=rf"path\(solver='{solver}'\) takes numpy arrays .* solver='fista'"):
        path(*_tensors(*data), Quadratic(), penalty, [0.1], solver=solver)
