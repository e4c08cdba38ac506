"""Every estimator and every penalty used once: the fast subset that CI also runs with the oldest
dependency versions pyproject.toml allows (scripts/setup_min_versions.sh, build/venv-min; docs/testing.md).

A smoke test of the installed versions, not of the numerics (the rest of the suite checks those): each
fit must run, give finite coefficients and predict, and each penalty's value, prox and projection must
run on numpy and torch inputs and return their type back. In the main suite (numpy 2) the numpy inputs
also come as :class:`NumpyBeforeTwo`, arrays without numpy 2's ``.device``, so that a device lookup that
is not ``array_api_compat.device(x)`` fails there too, not only in build/venv-min.
"""

import numpy as np
import pytest
import torch

from normpen import linear
from normpen.linear.datafits import Hinge, Logistic, Quadratic, SquaredHinge
from normpen.penalties import (
    L1,
    L2,
    Anchored,
    ElasticNet,
    GroupLasso,
    MaxNorm,
    Nuclear,
    SparseGroupLasso,
    Spectral,
)


class NumpyBeforeTwo(np.ndarray):
    """A numpy array as numpy < 2 makes it: no ``.device`` (ufuncs and views keep the subclass)."""

    @property
    def device(self):
        raise AttributeError("'numpy.ndarray' object has no attribute 'device' (numpy < 2)")


@pytest.fixture(scope="module")
def data():
    """A small regression and a two-class problem (shared X), seeded."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    w = np.array([1.0, -2.0, 0.0, 0.0, 0.5, 0.0])
    y = X @ w + 0.1 * rng.normal(size=40)
    return X, y, np.where(y > 0, 1, 0)


BLOCKS = [[0, 1], [2, 3], [4, 5]]
CV = {"n_lams": 4, "cv": 3}
REGRESSORS = [
    linear.Lasso(0.05),
    linear.ElasticNet(0.05),
    linear.Ridge(0.1),
    linear.GroupLasso(0.05, groups=BLOCKS),
    linear.SparseGroupLasso(0.05, groups=BLOCKS),
    linear.PenalizedLinearModel("quadratic", "l1", lam=0.05),
    linear.LassoCV(**CV),
    linear.ElasticNetCV(**CV),
    linear.RidgeCV(),
    linear.GroupLassoCV(groups=BLOCKS, **CV),
    linear.SparseGroupLassoCV(groups=BLOCKS, **CV),
    linear.PenalizedLinearModelCV(**CV),
]
CLASSIFIERS = [
    linear.LogisticRegression(0.05),
    linear.LinearSVC(0.05),
    linear.LinearSVC(0.05, loss="hinge"),
    linear.LogisticRegressionCV(**CV),
    linear.LinearSVCCV(**CV),
]


@pytest.mark.parametrize("estimator", REGRESSORS, ids=lambda e: type(e).__name__)
def test_every_regressor_fits_and_predicts(estimator, data):
    X, y, _ = data
    fitted = estimator.fit(X.view(NumpyBeforeTwo), y.view(NumpyBeforeTwo))
    assert np.all(np.isfinite(fitted.coef_))
    assert fitted.predict(X).shape == y.shape


@pytest.mark.parametrize("estimator", CLASSIFIERS, ids=lambda e: f"{type(e).__name__}-{e.get_params()}")
def test_every_classifier_fits_and_predicts(estimator, data):
    X, _, labels = data
    fitted = estimator.fit(X.view(NumpyBeforeTwo), labels)
    assert np.all(np.isfinite(fitted.coef_))
    assert set(fitted.predict(X)) <= {0, 1}


def _penalties(anchor):
    """One of each penalty, for (6, 2) matrices; ``anchor`` of Anchored in the input's array type."""
    return [
        L1(0.1),
        L2(0.1),
        ElasticNet(0.1, 0.5),
        GroupLasso(0.1, "rows"),
        SparseGroupLasso(0.1, "rows", 0.5),
        Nuclear(0.1),
        Spectral(0.1),
        MaxNorm(1.0),
        Anchored(0.1, anchor),
    ]


@pytest.mark.parametrize("index", range(9), ids=lambda i: type(_penalties(np.zeros((6, 2)))[i]).__name__)
@pytest.mark.parametrize("kind", ["numpy", "numpy-before-2", "torch"])
def test_every_penalty_evaluates_proxes_and_projects(index, kind):
    x = np.random.default_rng(1).normal(size=(6, 2))
    if kind == "torch":
        x = torch.as_tensor(x)
    if kind == "numpy-before-2":
        x = x.view(NumpyBeforeTwo)
    penalty = _penalties(0 * x)[index]
    assert not np.isnan(float(penalty.value(x)))  # MaxNorm's value is an indicator: inf outside its ball
    for result in (penalty.prox(x, 0.5), penalty.project(x, 0.5)):
        assert isinstance(result, torch.Tensor if kind == "torch" else np.ndarray) and result.shape == x.shape
        assert np.all(np.isfinite(np.asarray(result)))


@pytest.mark.parametrize("datafit", [Quadratic(), Logistic(), Hinge(), SquaredHinge()], ids=type)
@pytest.mark.parametrize("kind", ["numpy", "numpy-before-2", "torch"])
def test_every_datafit_evaluates_its_terms(datafit, kind):
    """Each per-sample term a solver reads, on each kind of array: its type back, finite where it must be
    (the conjugate at the derivative lies in its domain). Written with the array API's Python scalars
    where the oldest array_api_compat allows them (it takes none in torch's maximum)."""
    rng = np.random.default_rng(2)
    y, z = np.where(rng.normal(size=8) > 0, 1.0, -1.0), 3 * rng.normal(size=8)
    if kind == "torch":
        y, z = torch.as_tensor(y), torch.as_tensor(z)
    if kind == "numpy-before-2":
        y, z = y.view(NumpyBeforeTwo), z.view(NumpyBeforeTwo)
    u = datafit.derivative(y, z) if datafit.curvature is not None else -0.5 * y
    for term in (datafit.loss(y, z), u, datafit.conjugate(y, u)):
        assert isinstance(term, torch.Tensor if kind == "torch" else np.ndarray) and term.shape == (8,)
        assert np.all(np.isfinite(np.asarray(term)))


@pytest.mark.parametrize("penalty", [GroupLasso(0.05, BLOCKS), SparseGroupLasso(0.05, BLOCKS, 0.5)])
def test_group_penalties_fit_through_the_generic_model(penalty, data):
    X, y, _ = data
    assert np.all(np.isfinite(linear.PenalizedLinearModel("quadratic", penalty).fit(X, y).coef_))


def test_nuclear_fits_a_multitask_model(data):
    X, y, _ = data
    Y = np.column_stack([y, -y, 2 * y])
    fitted = linear.PenalizedLinearModel("multitask_quadratic", Nuclear(0.1)).fit(X, Y)
    assert np.all(np.isfinite(fitted.coef_)) and fitted.predict(X).shape == Y.shape


def test_the_command_line_builds_and_every_command_has_help():
    """typer turns the annotations into click options at this call: an old typer fails here (0.12 to 0.15
    do, with click >= 8.2)."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from normpen.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for name in get_command(app).commands:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
