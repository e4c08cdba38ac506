"""Penalized linear models: datafits, solvers, paths, cross-validation and scikit-learn estimators.

``path(X, y, datafit, penalty, lams)`` gives warm-started solutions along a
grid of strengths; the estimators (``Lasso``, ``ElasticNet``, ``Ridge``,
``GroupLasso``, ``SparseGroupLasso``, ``LogisticRegression``, ``LinearSVC``,
``PenalizedLinearModel`` and their ``*CV`` twins) follow scikit-learn's API.
Solvers live in :mod:`normpen.linear.solvers`, one per file.
"""

from normpen.linear.datafits import (
    Datafit,
    Hinge,
    Logistic,
    Multinomial,
    MultitaskQuadratic,
    Quadratic,
    SquaredHinge,
)
from normpen.linear.estimators import (
    ElasticNet,
    ElasticNetCV,
    GroupLasso,
    GroupLassoCV,
    Lasso,
    LassoCV,
    LinearSVC,
    LinearSVCCV,
    LogisticRegression,
    LogisticRegressionCV,
    PenalizedLinearModel,
    PenalizedLinearModelCV,
    Ridge,
    RidgeCV,
    SparseGroupLasso,
    SparseGroupLassoCV,
)
from normpen.linear.path import Path, lambda_grid, lambda_max, path
from normpen.penalties.sparse_group_lasso import SparseGroupLasso as SparseGroupLassoPenalty

__all__ = [
    "Datafit",
    "Quadratic",
    "MultitaskQuadratic",
    "Logistic",
    "Multinomial",
    "Hinge",
    "SquaredHinge",
    "SparseGroupLassoPenalty",
    "path",
    "Path",
    "lambda_max",
    "lambda_grid",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "Ridge",
    "RidgeCV",
    "GroupLasso",
    "GroupLassoCV",
    "SparseGroupLasso",
    "SparseGroupLassoCV",
    "LogisticRegression",
    "LogisticRegressionCV",
    "LinearSVC",
    "LinearSVCCV",
    "PenalizedLinearModel",
    "PenalizedLinearModelCV",
]
