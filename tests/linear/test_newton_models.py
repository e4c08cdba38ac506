"""Newton models of non-quadratic datafits (:class:`normpen.linear.solvers.cd._QuadraticModel`).

A dense design's model Gram :math:`X_r^\\top HX_r` (centred with an intercept) is formed in float32
(:meth:`Problem.weighted_gram` with ``single``): the model only proposes steps, which the Armijo search
and the duality gap, both computed from ``X`` in its own dtype, judge.
"""

import numpy as np
import pytest

from normpen.linear.datafits import Logistic, Multinomial, Quadratic
from normpen.linear.problem import Problem
from normpen.linear.solvers import cd
from normpen.linear.solvers.cd import coordinate_descent
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1


def _gamma(terms, dtype):
    """Higham's :math:`\\gamma_m = mu / (1 - mu)`, :math:`u` the unit roundoff of ``dtype`` (half its eps)."""
    u = np.finfo(dtype).eps / 2
    return terms * u / (1 - terms * u)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_single_gram_is_the_centred_weighted_gram(fit_intercept):
    """Columns offset by 1,000 (means 1e3 times their spread): with an intercept the float32 product is
    of the centred columns, so its error scales with the centred entries, not with the means' squares."""
    rng = np.random.default_rng(0)
    n, p = 300, 40
    X = np.asfortranarray(rng.standard_normal((n, p)) + 1e3 * rng.random(p))
    h = rng.uniform(0.0, 0.25, n)  # a logistic curvature's range
    rows = np.sort(rng.choice(p, 25, replace=False))
    problem = Problem(X, np.zeros(n), Quadratic(), fit_intercept=fit_intercept)
    single = problem.weighted_gram(rows, h, cached=False, single=True)
    mean = X[:, rows].T @ h / h.sum() if fit_intercept else np.zeros(rows.size)
    centred = X[:, rows] - mean
    exact = centred.T @ (h[:, None] * centred)
    magnitude = np.abs(centred).T @ (h[:, None] * np.abs(centred))
    # An entry of S^T S, S = H^(1/2) X_c, rounded to float32: each entry of S carries the roundings of
    # X_c's and sqrt(h)'s conversions and of their product (3 u_32), the float32 dot product n more, so
    # the entry is within gamma_32(n + 6) of magnitude (Higham, Lemma 3.1 and (3.5)). The reference
    # `exact` is within gamma_64(n + 2) of it, and the float64 means are off by at most
    # d = gamma_64(n) |X|^T h / sum h, which moves the centred Gram by sum h d d^T (the Gram of columns
    # shifted by d is the centred one plus sum h d d^T): second order, under 1e-20 of magnitude here.
    shift = _gamma(n, np.float64) * np.abs(X[:, rows]).T @ h / h.sum() if fit_intercept else 0 * mean
    bound = (_gamma(n + 6, np.float32) + _gamma(n + 2, np.float64)) * magnitude
    bound += h.sum() * np.outer(shift, shift)
    assert single.dtype == np.float64 and single.shape == (rows.size, rows.size)
    np.testing.assert_array_less(np.abs(single - exact), bound)


def _double_models(monkeypatch):
    """Every Newton model's Gram in the design's dtype (the reference the float32 models are held to)."""
    weighted_gram = Problem.weighted_gram
    monkeypatch.setattr(Problem, "weighted_gram", lambda *a, **k: weighted_gram(*a, **{**k, "single": False}))


@pytest.mark.parametrize(
    ("datafit", "fit_intercept"),
    [("logistic", False), ("logistic", True), ("multinomial", True)],
)
def test_single_models_reach_the_double_models_optimum(datafit, fit_intercept, monkeypatch):
    """Float32 and float64 model Grams: both certified, objectives within the two gaps of each other."""
    rng = np.random.default_rng(3)
    n, p = 150, 60
    X = np.asfortranarray(rng.standard_normal((n, p)) + 2.0 * rng.random(p))
    score = X[:, :3] - X[:, :3].mean(axis=0) + 0.5 * rng.standard_normal((n, 3))
    if datafit == "logistic":
        y, loss, penalty = np.where(score[:, 0] > 0, 1.0, -1.0), Logistic(), L1(0.01)
    else:  # blocks of several rows: the per-output Gram model (_QuadraticModel with one Q per output)
        y, loss, penalty = np.argmax(score, axis=1), Multinomial(), GroupLasso(0.01, "rows")
    options = dict(tol=1e-10, fit_intercept=fit_intercept)
    single = coordinate_descent(X, y, loss, penalty, **options)
    _double_models(monkeypatch)
    double = coordinate_descent(X, y, loss, penalty, **options)
    assert single.converged and double.converged
    assert single.dual_gap <= 1e-10 * single.gap_scale
    # each within its gap of P*, so of each other; plus the objectives' rounding (64 eps |P|, P ~ 1)
    bound = single.dual_gap + double.dual_gap + 64 * np.finfo(np.float64).eps * abs(double.objective)
    assert abs(single.objective - double.objective) <= bound


def test_a_shortened_step_forms_the_next_model_in_double(monkeypatch):
    """After an Armijo step below 1 the working set's next models are formed in float64, before in float32."""
    rng = np.random.default_rng(4)
    X = np.asfortranarray(rng.standard_normal((120, 30)))
    y = np.where(X[:, 0] + 0.3 * rng.standard_normal(120) > 0, 1.0, -1.0)
    armijo, newton_model, init = cd._armijo, cd._newton_model, cd._QuadraticModel.__init__
    last_step, formed = [], []

    def halved(*args, **kwargs):  # half of an accepted step: the objective is convex along it, still lower
        return armijo(*args, **kwargs) / 2

    def model(problem, rows, X_ws, pen, z, previous, t, double):
        last_step.append(double)
        return newton_model(problem, rows, X_ws, pen, z, previous, t, double)

    def recorded(self, *args, single=False, **kwargs):
        formed.append((last_step[-1], single))
        init(self, *args, single=single, **kwargs)

    monkeypatch.setattr(cd, "_armijo", halved)
    monkeypatch.setattr(cd, "_newton_model", model)
    monkeypatch.setattr(cd._QuadraticModel, "__init__", recorded)
    result = coordinate_descent(X, y, Logistic(), L1(0.02), tol=1e-8, max_iter=5)
    assert np.isfinite(result.dual_gap)
    assert {single for _, single in formed} == {False, True}
    for double, single in formed:
        assert single == (not double)
