"""Rule (b) of issue 13: a public call that raises leaves its inputs and the objects it was given alone.

Files (the CLI, the report) and training (the optimizer step, ``reg.load_state_dict``) have their own
tests (tests/test_files.py, tests/test_report.py, tests/torch/); here: the penalties' methods on arrays
they refuse, and a failing refit of every linear estimator after a successful fit.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from normpen.linear import (
    ElasticNet,
    GroupLasso,
    Lasso,
    LassoCV,
    LinearSVC,
    LogisticRegression,
    Ridge,
    RidgeCV,
)
from penalties.cases import CASES

METHODS = ("value", "grad", "prox", "norm", "project", "dual_norm", "project_dual", "lambda_max")

#: Arguments a penalty method refuses: a step or a radius that is negative, NaN or not a number.
BAD_SCALARS = (-1.0, math.nan, "1", None)


def _call(penalty, method, x, scalar):
    if method in ("prox",):
        return penalty.prox(x, scalar)
    if method in ("project", "project_dual"):
        return getattr(penalty, method)(x, scalar)
    return getattr(penalty, method)(x)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@given(
    data=st.data(),
    kind=st.sampled_from(["numpy", "torch"]),
    corrupt=st.sampled_from(["nan", "inf", "scalar", "shape"]),
)
def test_a_refused_penalty_call_leaves_its_input_as_it_was(case, data, kind, corrupt):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (2, 3)
    penalty = case.make(shape, rng)
    x = rng.standard_normal(shape)
    method = data.draw(st.sampled_from(METHODS))
    scalar = 0.5
    if corrupt in ("nan", "inf"):
        where = (data.draw(st.integers(0, 1)), data.draw(st.integers(0, 2)))
        x[where] = math.nan if corrupt == "nan" else math.inf
    elif corrupt == "scalar":
        if method not in ("prox", "project", "project_dual"):
            method = data.draw(st.sampled_from(["prox", "project", "project_dual"]))
        scalar = data.draw(st.sampled_from(BAD_SCALARS))
    else:
        x = rng.standard_normal((3, 2, 2))  # 3-D: refused by the matrix penalties, taken by the others
    array = torch.from_numpy(x) if kind == "torch" else x
    before = x.copy()
    try:
        _call(penalty, method, array, scalar)
    except (ValueError, TypeError):
        pass
    np.testing.assert_array_equal(np.asarray(array), before)


def _estimators():
    return [
        Lasso(lam=0.1),
        ElasticNet(lam=0.1),
        Ridge(lam=0.1),
        GroupLasso(lam=0.1, groups=[[0, 1], [2, 3], [4]]),
        LogisticRegression(lam=0.01),
        LinearSVC(lam=0.01),
        LassoCV(cv=3, n_lams=4),
        RidgeCV(n_lams=4),
    ]


def _bad_refits(X, y):
    """Refits that must raise: NaN in X, an X whose products overflow, and one of another width that
    passes scikit-learn's validation (which records ``n_features_in_``) and fails after it."""
    nan = X.copy()
    nan[0, 0] = np.nan
    wide = np.column_stack([X, X[:, :1]]) * 1e200
    return [(nan, y), (X * 1e200, y), (wide, y)]


def _attributes(estimator):
    return {name: np.array(value, dtype=object) for name, value in vars(estimator).items()}


@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_a_failing_refit_leaves_the_fitted_estimator_as_it_was(estimator):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = X @ np.arange(5.0) + rng.standard_normal(40)
    if isinstance(estimator, LogisticRegression | LinearSVC):
        y = (y > 0).astype(int)
    estimator.fit(X, y)
    before = _attributes(estimator)
    for bad_X, bad_y in _bad_refits(X, y):
        with pytest.raises(ValueError):
            estimator.fit(bad_X, bad_y)
        after = _attributes(estimator)
        assert after.keys() == before.keys()
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    np.testing.assert_array_equal(estimator.predict(X).shape, (40,))
