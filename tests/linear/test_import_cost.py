"""``import normpen.linear`` and a first fit leave out what only some calls need (issue 15: cold start).

A cold first fit (fresh process, import included) should not pay for scoring,
cross-validation, progress bars, plots, torch or the solvers it does not use. Checked deterministically in
a fresh interpreter through ``sys.modules``, never by timing; the timings are
in ``benchmarks/cold_start.py``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, r2_score

from normpen.linear import PenalizedLinearModel

# module -> the calls that import it on use
LAZY = {
    "sklearn.metrics": "PenalizedLinearModel.score",
    "sklearn.model_selection": "the *CV estimators' fit",
    "rich": "path(..., progress=True)",
    "matplotlib": "the plot methods",
    "torch": "fits on torch tensors",
    "normpen.linear.solvers.fista": "penalties coordinate descent does not take",
    "normpen.linear.solvers.svm": "the SVMs",
    "normpen.linear.solvers.ridge": "Ridge, RidgeCV and path(..., solver='ridge')",
}

CHILD = """
import json, sys
import numpy as np
loaded = {}
import normpen.linear
loaded["import normpen.linear"] = sorted(sys.modules)
from normpen.linear import ElasticNet, Lasso, LogisticRegression
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 8))
y = X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(40)
Lasso(0.05).fit(X, y)
ElasticNet(0.05).fit(X, y)
LogisticRegression().fit(X, np.sign(y))
loaded["first fits"] = sorted(sys.modules)
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded():
    """Modules loaded in a fresh interpreter after the import, and after a first fit of each estimator."""
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    return {stage: set(modules) for stage, modules in json.loads(out.stdout).items()}


@pytest.mark.parametrize("stage", ["import normpen.linear", "first fits"])
def test_modules_imported_on_use_stay_unloaded(loaded, stage):
    assert {module for module in LAZY if module in loaded[stage]} == set()


def test_score_with_its_import_on_use_is_scikit_learns_metric():
    # the same function on the same predictions: equal exactly
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 4))
    y = X[:, 0] + 0.1 * rng.standard_normal(30)
    regressor = PenalizedLinearModel("quadratic", "l1", lam=0.01).fit(X, y)
    assert regressor.score(X, y) == r2_score(y, regressor.predict(X))
    labels = np.sign(y)
    classifier = PenalizedLinearModel("logistic", "l2", lam=0.01).fit(X, labels)
    assert classifier.score(X, labels) == accuracy_score(labels, classifier.predict(X))
