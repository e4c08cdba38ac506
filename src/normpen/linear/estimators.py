r"""scikit-learn estimators for penalized linear models, and their cross-validated twins.

Every estimator minimises a datafit averaged over the samples plus a penalty
(conventions of :mod:`normpen.linear.datafits` and :mod:`normpen.penalties`),
with an unpenalized intercept, sample weights, dense or scipy.sparse ``X`` in
float32 or float64, and reports ``dual_gap_`` (the duality gap reached,
absolute; the solve stops when it is below ``tol`` times the objective at
:math:`w = 0`) and ``n_iter_``.

Penalties added to the averaged datafit, and the scikit-learn equivalents:

- ``Lasso(lam)``: :math:`\lambda\|w\|_1`, scikit-learn's ``Lasso(alpha=lam)``;
- ``ElasticNet(lam, l1_ratio=rho)``: :math:`\lambda(\rho\|w\|_1 + \frac{1-\rho}2\|w\|^2)`,
  ``ElasticNet(alpha=lam, l1_ratio=rho)``;
- ``Ridge(lam)``: :math:`\frac\lambda2\|w\|^2`, ``Ridge(alpha=n*lam)``;
- ``GroupLasso``: :math:`\lambda\sum_g\omega_g\|w_g\|` (no scikit-learn equivalent);
- ``SparseGroupLasso``: :math:`\lambda(\rho\|w\|_1 + (1-\rho)\sum_g\omega_g\|w_g\|)` (none);
- ``LogisticRegression(lam, penalty=...)``: any penalty on the logistic (two classes) or
  cross-entropy datafit, ``LogisticRegression(C=1/(n*lam))``;
- ``LinearSVC(lam)``: :math:`\frac\lambda2\|w\|^2` on the (squared) hinge, ``LinearSVC(C=1/(n*lam))``.

The regressors' datafit is :math:`\frac1{2n}\|y - Xw - b\|^2`.

(scikit-learn's ``Ridge``, ``LogisticRegression`` and ``LinearSVC`` sum the
losses instead of averaging them, hence the factor :math:`n`; liblinear also
penalizes the intercept, normpen never does.) ``PenalizedLinearModel(datafit,
penalty)`` takes any datafit and penalty; the named estimators are presets of
it: each fixes the datafit and the penalty (named in
:mod:`normpen.penalties.names`) and exposes the parameters that matter for
them. Every parameter is checked at fit time against one table,
:data:`PARAMETER_CONSTRAINTS`, and a fit that fails leaves the estimator as it
was. With ``warm_start=True`` a fit starts from the previous ``coef_`` and
``intercept_`` (scikit-learn's ``warm_start``). The ``*CV`` twins choose
:math:`\lambda` by K-fold cross-validation along a warm-started path
(:class:`LassoCV` etc.), report the :math:`\lambda` of least mean held-out
error and the largest :math:`\lambda` within one standard error of it, and
refit on all the data with the one ``selection`` names.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from normpen.linear._validation import (
    ARRAY_LIKE,
    FLAG,
    NONE,
    Constraint,
    decreasing_lams,
    integer,
    options,
    real,
    validate_params,
)
from normpen.linear.datafits import Hinge, Logistic, Multinomial, MultitaskQuadratic, Quadratic, SquaredHinge
from normpen.linear.datafits.base import Datafit
from normpen.linear.path import Path, lambda_grid, lambda_max, path
from normpen.linear.problem import Problem, Solution
from normpen.penalties import names
from normpen.penalties.base import Penalty

__all__ = [
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
    "PARAMETER_CONSTRAINTS",
]

_DATAFITS = {
    "quadratic": Quadratic,
    "multitask_quadratic": MultitaskQuadratic,
    "logistic": Logistic,
    "multinomial": Multinomial,
    "squared_hinge": SquaredHinge,
}
_DTYPES = [np.float64, np.float32]


# ---- the parameters: one table of what each accepts --------------------------------------------

_PENALTY_NAME = Constraint(
    lambda value: isinstance(value, str) and value in names.spellings(),
    "a penalty name ("
    + ", ".join(f"{entry.name} or {'/'.join(entry.aliases)}" for entry in names.PENALTIES.values())
    + ")",
)
_SPLITTER = Constraint(
    lambda value: hasattr(value, "split") or (isinstance(value, Iterable) and not isinstance(value, str)),
    "a splitter such as KFold(5) or an iterable of (train, test) index pairs",
)

#: Every parameter of every estimator here, and what it accepts; checked at the start of each fit
#: (:func:`normpen.linear._validation.validate_params`), which raises an ``InvalidParameterError`` (a
#: ``ValueError`` and a ``TypeError``) naming the estimator, the parameter and the values it takes.
PARAMETER_CONSTRAINTS = {
    "lam": real(0, example="0.1"),
    "l1_ratio": real(0, 1, example="0.5"),
    "weights": NONE | ARRAY_LIKE,
    "groups": NONE | ARRAY_LIKE,
    "fit_intercept": FLAG,
    "positive": FLAG,
    "hard_margin": FLAG,
    "warm_start": FLAG,
    "tol": real(0, open_low=True, example="1e-4"),
    "max_iter": NONE | integer(1),
    "solver": options("auto", "cd", "fista", "lbfgs"),
    "loss": options("squared_hinge", "hinge"),
    "random_state": NONE
    | integer(0)
    | Constraint(lambda value: isinstance(value, np.random.Generator), "a numpy Generator"),
    "penalty": _PENALTY_NAME
    | Constraint(
        lambda value: isinstance(value, Penalty), "a normpen penalty object such as normpen.L1(1.0)"
    ),
    "datafit": options(*_DATAFITS)
    | Constraint(lambda value: isinstance(value, Datafit), "a Datafit object such as Quadratic()"),
    "lams": NONE | ARRAY_LIKE,
    "n_lams": integer(1),
    "eps": real(0, 1, open_low=True, open_high=True, example="1e-3"),
    "cv": NONE | integer(2) | _SPLITTER,
    "selection": options("min", "1se"),
    "n_jobs": NONE
    | Constraint(
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value != 0,
        "a nonzero integer (-1: every core)",
    ),
}


# ---- shared machinery ---------------------------------------------------------------


def _unchanged_on_error(fit):
    """``fit`` that leaves every attribute of the estimator as it was when it raises (nothing half-fitted)."""

    @functools.wraps(fit)
    def guarded(self, *args, **kwargs):
        before = dict(vars(self))
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    return guarded


def _init_storing(defaults, positional):
    """An ``__init__`` that stores each parameter of ``defaults`` (name -> default) under its name.

    Its signature is the explicit one scikit-learn reads (``get_params``,
    ``clone``, ``repr``): ``self``, the ``positional`` names, then the others
    keyword-only, each group in the order of ``defaults``.
    """
    order = sorted(defaults, key=lambda name: name not in positional)
    signature = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                inspect.Parameter(
                    name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD
                    if name in positional
                    else inspect.Parameter.KEYWORD_ONLY,
                    default=defaults[name],
                )
                for name in order
            ),
        ]
    )

    def __init__(self, *args, **kwargs):
        given = signature.bind(self, *args, **kwargs)
        given.apply_defaults()
        for name in defaults:
            setattr(self, name, given.arguments[name])

    __init__.__signature__ = signature
    return __init__


def _groups_or_singletons(groups, n_features):
    """``groups`` as given, or one group per feature when it is None."""
    if groups is None:
        return [np.array([j]) for j in range(n_features)]
    return groups


class _LinearModel(BaseEstimator):
    """Fit = a one-strength path; the CV twins reuse the path.

    A subclass is a preset: ``_params`` (name -> default, in signature order;
    ``_positional`` of them may be given by position) makes its ``__init__``,
    and ``_fixed`` names the datafit and the penalty when they are not
    parameters. Subclasses give the target handling (:class:`_RegressorCore`
    or :class:`_ClassifierCore`).
    """

    _params = {}
    _positional = ("lam",)
    _fixed = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_params" in cls.__dict__:
            cls.__init__ = _init_storing(cls._params, cls._positional)

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` (dense or sparse, float32/float64) and ``y``, with optional ``sample_weight``.

        With ``warm_start=True`` and a previous fit on data of the same width
        (and the same classes), the solver starts from its ``coef_`` and
        ``intercept_``.
        """
        self._validate_params()
        previous = self._previous_solution()
        X, y_enc, sample_weight = self._validate_training(X, y, sample_weight)
        init = {} if previous is None else {"init": self._check_warm_start(previous, X, y_enc)}
        result = self._fit_path(X, y_enc, sample_weight, np.array([self._strength()]), **init)
        self._set_solution(result, 0)
        return self

    def fit_path(self, X, y, lams=None, sample_weight=None):
        r"""Warm-started solutions on ``(X, y)`` along a grid of strengths; the estimator stays as it was.

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.
        lams : array-like of float, optional
            The strengths, solved from the largest down. Default: the grid
            ``lams_`` a fitted ``*CV`` estimator chose from.

        Returns
        -------
        Path
            Coefficients, intercepts, duality gaps and iteration counts per
            strength (:class:`~normpen.linear.path.Path`; ``.plot()`` draws it).
        """
        self._validate_params()
        if lams is None:
            if not hasattr(self, "lams_"):
                raise ValueError(
                    f"lams is required: {type(self).__name__} has no grid of its own "
                    "(a fitted *CV estimator uses its lams_)"
                )
            lams = self.lams_
        lams = decreasing_lams(lams)
        fitted = dict(vars(self))  # validation records n_features_in_, classes_, ...: put them back after
        try:
            X, y_enc, sample_weight = self._validate_training(X, y, sample_weight)
            return self._fit_path(X, y_enc, sample_weight, lams)
        finally:
            vars(self).clear()
            vars(self).update(fitted)

    def _validate_params(self):
        """Check every parameter against :data:`PARAMETER_CONSTRAINTS` (and the class's own entries)."""
        validate_params(type(self).__name__, self.get_params(deep=False), self._constraints())

    @classmethod
    def _constraints(cls):
        return PARAMETER_CONSTRAINTS

    def _setting(self, name, default=None):
        """The preset's fixed value of ``name``, else the parameter's, else ``default`` (not a parameter)."""
        if name in self._fixed:
            return self._fixed[name]
        return getattr(self, name) if name in self._params else default

    # hooks

    def _strength(self):
        return float(self.lam)

    def _solver_options(self):
        options = {"tol": self.tol}
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter
        return options

    def _datafit_object(self):
        datafit = self._setting("datafit")
        if isinstance(datafit, Datafit):
            return datafit
        validate_params(type(self).__name__, {"datafit": datafit}, PARAMETER_CONSTRAINTS)
        return _DATAFITS[datafit]()

    def _is_classifier(self):
        return isinstance(self._datafit_object(), Logistic | Multinomial | SquaredHinge | Hinge)

    def _datafit(self, y_enc):
        """The preset's datafit in the form the target needs (several targets, two or more classes)."""
        datafit = self._datafit_object()
        if isinstance(datafit, Hinge):
            raise ValueError("the hinge is not differentiable: use LinearSVC(loss='hinge')")
        if self._is_classifier() and not _is_binary(y_enc):
            if isinstance(datafit, SquaredHinge):
                raise ValueError(
                    "the squared hinge is binary: use LinearSVC for one-vs-rest with more classes"
                )
            return Multinomial()
        if self._is_classifier() and isinstance(datafit, Multinomial):
            return Logistic()
        if isinstance(datafit, Quadratic):  # one or several targets: the least squares of their shape
            return MultitaskQuadratic() if y_enc.ndim == 2 else Quadratic()
        return datafit

    def _penalty(self, n_features):
        """The preset's penalty at strength 1: a penalty object as given, or one built from its name."""
        penalty = self._setting("penalty")
        if isinstance(penalty, Penalty):
            return penalty.with_lam(1.0)
        weights = self._setting("weights")
        groups = _groups_or_singletons(self.groups, n_features) if "groups" in self._params else None
        return names.make_penalty(
            penalty,
            1.0,
            l1_ratio=self._setting("l1_ratio"),
            groups=groups,
            weights=None if weights is None else np.asarray(weights, dtype=np.float64),
        )

    def _fit_path(self, X, y_enc, sample_weight, lams, init=None):
        """Warm-started solutions at ``lams`` (a :class:`~normpen.linear.path.Path`); the first starts
        from ``init``, ``(coef, intercept)``, when given."""
        return path(
            X,
            y_enc,
            self._datafit(y_enc),
            self._penalty(X.shape[1]),
            lams,
            sample_weight=sample_weight,
            fit_intercept=self.fit_intercept,
            positive=self._setting("positive", False),
            solver=self._setting("solver", "auto"),
            init=init,
            **self._solver_options(),
        )

    def _previous_solution(self):
        """``(coef, intercept, n_features, classes)`` of the last fit when ``warm_start`` is on, else None."""
        if not self._setting("warm_start", False) or not hasattr(self, "coef_"):
            return None
        coef, intercept = self._path_coef()
        return coef, intercept, self.n_features_in_, getattr(self, "classes_", None)

    def _check_warm_start(self, previous, X, y_enc):
        """The previous ``(coef, intercept)`` if it fits this problem (same width, outputs and classes)."""
        coef, intercept, n_features, classes = previous
        expected = (X.shape[1], *y_enc.shape[1:])
        same_classes = classes is None or np.array_equal(classes, self.classes_)
        if coef.shape != expected or not same_classes:
            raise ValueError(
                f"warm_start=True starts from the previous fit ({n_features} features"
                + ("" if classes is None else f", classes {list(classes)}")
                + f") but this fit has {X.shape[1]} features"
                + ("" if classes is None else f" and classes {list(self.classes_)}")
                + ": fit data of the same columns (and classes), or set warm_start=False"
            )
        return coef, intercept

    def _default_lams(self, X, y_enc, sample_weight, n_lams, eps):
        r"""From :math:`\lambda_{\max}` down to ``eps`` times it; for a penalty that never zeroes the
        solution (ridge), from :math:`10L` with :math:`L` the Lipschitz constant of the datafit's gradient."""
        datafit = self._datafit(y_enc)
        lam_max = lambda_max(
            X,
            y_enc,
            datafit,
            self._penalty(X.shape[1]),
            sample_weight=sample_weight,
            fit_intercept=self.fit_intercept,
            positive=self._setting("positive", False),
        )
        if not math.isfinite(lam_max):
            lam_max = 10 * datafit.lipschitz(X, sample_weight, self.fit_intercept)
        return lambda_grid(lam_max, n_lams, eps)

    def _set_solution(self, result, index):
        self._set_coef(result.coefs[index], result.intercepts[index])
        self.dual_gap_ = float(result.dual_gaps[index])
        self.n_iter_ = int(result.n_iters[index])

    def _held_out_loss(self, X, y_enc, sample_weight, coef, intercept):
        """Weighted mean held-out datafit loss (for least squares: the mean squared error)."""
        datafit = self._datafit(y_enc)
        y_enc = datafit.encode_target(y_enc)
        z = np.asarray(safe_sparse_dot(X, coef), dtype=np.float64) + intercept
        weights = (
            np.full(X.shape[0], 1.0 / X.shape[0])
            if sample_weight is None
            else sample_weight / sample_weight.sum()
        )
        loss = float(datafit.value(y_enc, z, weights))
        return 2 * loss if isinstance(datafit, Quadratic) else loss


class _RegressorCore(RegressorMixin):
    """Target handling of the regressors: float ``y``, 1-D or (when ``_multi_output``) 2-D."""

    _multi_output = True

    def _validate_training(self, X, y, sample_weight):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse="csc",
            dtype=_DTYPES,
            order="F",
            multi_output=self._multi_output,
            y_numeric=True,
        )
        y = np.asarray(y, dtype=np.float64)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        return X, y, sample_weight

    def _datafit(self, y_enc):
        return MultitaskQuadratic() if y_enc.ndim == 2 else Quadratic()

    def _set_coef(self, coef, intercept):
        self.coef_ = coef.T.copy() if coef.ndim == 2 else coef
        self.intercept_ = intercept

    def _path_coef(self):
        """``coef_`` and ``intercept_`` in the path's shapes (the inverse of ``_set_coef``)."""
        return (self.coef_.T if self.coef_.ndim == 2 else self.coef_), self.intercept_

    def predict(self, X):
        """:math:`Xw + b` (shape ``(n,)``, or ``(n, m)`` for a 2-D target)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=True, dtype=_DTYPES, reset=False)
        return np.asarray(safe_sparse_dot(X, self.coef_.T), dtype=np.float64) + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = self._multi_output
        return tags


class _ClassifierCore(ClassifierMixin):
    """Target handling of the classifiers: labels of any kind, binary (-1/+1) or multiclass (0..K-1)."""

    def _validate_training(self, X, y, sample_weight):
        X, y = validate_data(self, X, y, accept_sparse="csc", dtype=_DTYPES, order="F")
        check_classification_targets(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        present = np.unique(y_idx if sample_weight is None else y_idx[sample_weight > 0])
        if present.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least two classes (with positive weight); "
                f"got 1 class, {self.classes_[present[0]]!r}"
            )
        if self.classes_.size == 2:
            return X, np.where(y_idx == 1, 1.0, -1.0), sample_weight
        return X, np.eye(self.classes_.size)[y_idx], sample_weight

    def _datafit(self, y_enc):
        return Logistic() if _is_binary(y_enc) else Multinomial()

    def _set_coef(self, coef, intercept):
        self.coef_ = coef.reshape(1, -1) if coef.ndim == 1 else coef.T.copy()
        self.intercept_ = np.atleast_1d(np.asarray(intercept, dtype=np.float64))

    def _path_coef(self):
        """``coef_`` and ``intercept_`` in the path's shapes (the inverse of ``_set_coef``)."""
        if self.coef_.shape[0] == 1:
            return self.coef_[0], float(self.intercept_[0])
        return self.coef_.T, self.intercept_

    def decision_function(self, X):
        """Scores :math:`Xw + b`: ``(n,)`` for two classes (positive: ``classes_[1]``), else ``(n, K)``."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=True, dtype=_DTYPES, reset=False)
        scores = np.asarray(safe_sparse_dot(X, self.coef_.T), dtype=np.float64) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        """The class of largest score."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _is_binary(y_enc):
    """Encoded classification targets: -1/+1 labels (binary) or a one-hot matrix (multiclass)."""
    return y_enc.ndim == 1


def _labels(y_enc):
    """Class labels of an encoded target, for stratified folds (the values themselves for regression)."""
    return y_enc.argmax(axis=1) if y_enc.ndim == 2 else y_enc


def _probabilities(scores):
    """Class probabilities from logistic (1-D) or softmax (2-D) scores."""
    if scores.ndim == 1:
        p = np.exp(-np.logaddexp(0, -scores))
        return np.column_stack([1 - p, p])
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


# ---- regressors -----------------------------------------------------------------------

#: Parameters of every path-based preset: the solve and its start.
_SOLVE = {"fit_intercept": True, "positive": False, "tol": 1e-4, "max_iter": None, "warm_start": False}


class Lasso(_RegressorCore, _LinearModel):
    r"""Lasso :math:`\min_{w,b} \frac1{2n}\|y - Xw - b\|^2 + \lambda\|w\|_1` (scikit-learn's ``Lasso``).

    With sample weights :math:`s`: :math:`\sum_i s_i(\cdot)^2/(2\sum_i s_i)`. A 2-D
    target fits one lasso per column. Solved by working-set coordinate descent
    (:mod:`normpen.linear.solvers.cd`).

    Parameters
    ----------
    lam : float, default 0.1
        :math:`\lambda \ge 0`.
    weights : array-like of shape (p,), optional
        Per-feature weights of the weighted (adaptive) lasso; 0 leaves a feature unpenalized.
    fit_intercept : bool, default True
    positive : bool, default False
        Constrain the coefficients to be nonnegative.
    tol : float, default 1e-4
        Relative duality-gap tolerance.
    max_iter : int, optional
        Outer-iteration cap of the solver (its default when None).
    warm_start : bool, default False
        Start each fit from the previous ``coef_`` and ``intercept_`` (the data
        must have the same columns), e.g. to refit at a nearby ``lam``.

    Attributes
    ----------
    coef_ : ndarray of shape (p,) or (m, p)
    intercept_ : float or ndarray of shape (m,)
    dual_gap_ : float
    n_iter_ : int
    """

    _params = {"lam": 0.1, "weights": None, **_SOLVE}
    _fixed = {"datafit": "quadratic", "penalty": "l1"}

    def _datafit(self, y_enc):
        if y_enc.ndim == 2 and self.weights is not None:
            raise ValueError("weights give one weight per feature: fit a 1-D target, or drop weights")
        return super()._datafit(y_enc)


class ElasticNet(_RegressorCore, _LinearModel):
    r"""Elastic net :math:`\frac1{2n}\|y - Xw - b\|^2 + \lambda(\rho\|w\|_1 + \frac{1-\rho}2\|w\|^2)`.

    scikit-learn's ``ElasticNet(alpha=lam, l1_ratio=l1_ratio)`` and glmnet's
    (``lambda``, ``alpha``). Parameters as :class:`Lasso` (``warm_start`` too),
    plus ``l1_ratio`` :math:`\rho \in [0, 1]` (default 0.5).
    """

    _params = {"lam": 0.1, "l1_ratio": 0.5, **_SOLVE}
    _fixed = {"datafit": "quadratic", "penalty": "elasticnet"}


class GroupLasso(_RegressorCore, _LinearModel):
    r"""Group lasso :math:`\frac1{2n}\|y - Xw - b\|^2 + \lambda\sum_g \omega_g\|w_g\|_2` (block CD).

    Parameters
    ----------
    lam : float, default 0.1
    groups : sequence of int arrays, optional
        Disjoint feature indices; features in no group are unpenalized. None:
        one group per feature (the lasso).
    weights : array-like, optional
        :math:`\omega_g`, default :math:`\sqrt{|g|}`.
    fit_intercept, positive, tol, max_iter, warm_start
        As for :class:`Lasso`.
    """

    _multi_output = False
    _params = {"lam": 0.1, "groups": None, "weights": None, **_SOLVE}
    _fixed = {"datafit": "quadratic", "penalty": "group"}


class SparseGroupLasso(_RegressorCore, _LinearModel):
    r"""Sparse-group lasso: least squares plus :math:`\lambda(\rho\|w\|_1 + (1-\rho)\sum\omega_g\|w_g\|)`.

    Parameters as :class:`GroupLasso`, plus ``l1_ratio`` :math:`\rho` (default 0.5).
    """

    _multi_output = False
    _params = {"lam": 0.1, "groups": None, "l1_ratio": 0.5, "weights": None, **_SOLVE}
    _fixed = {"datafit": "quadratic", "penalty": "sparse_group"}


class Ridge(_RegressorCore, _LinearModel):
    r"""Ridge :math:`\frac1{2n}\|y - Xw - b\|^2 + \frac\lambda2\|w\|^2`, closed form through one SVD.

    scikit-learn's ``Ridge(alpha=a)`` is ``Ridge(lam=a/n)`` (``a / sum(sample_weight)``
    with weights). ``dual_gap_`` is the duality gap of the closed-form solution
    (rounding level) and ``n_iter_`` is 1.

    Parameters
    ----------
    lam : float, default 0.01
    fit_intercept : bool, default True
    """

    _params = {"lam": 0.01, "fit_intercept": True}
    _fixed = {"datafit": "quadratic", "penalty": "l2"}

    def _fit_path(self, X, y_enc, sample_weight, lams):
        return _ridge_as_path(X, y_enc, sample_weight, lams, self.fit_intercept)


def _ridge_as_path(X, y, sample_weight, lams, fit_intercept):
    """F2's SVD ridge path, a :class:`Path` with the duality gap of every solution."""
    # imported on use, not by every `import normpen.linear` (cold start, issue 15)
    from normpen.linear.solvers.ridge import ridge_path

    return ridge_path(X, y, lams, sample_weight=sample_weight, fit_intercept=fit_intercept)


# ---- classifiers --------------------------------------------------------------------------


class LogisticRegression(_ClassifierCore, _LinearModel):
    r"""Penalized logistic regression, binary or multinomial.

    Minimises :math:`\frac1n\sum_i \log(1 + e^{-y_i(x_i^\top w + b)}) + P_\lambda(w)`
    (two classes) or the mean cross-entropy of the softmax with ``W`` of shape
    ``(p, K)`` (more classes). Our ``lam`` is scikit-learn's
    ``C = 1/(n*lam)``; the intercept is never penalized.

    Parameters
    ----------
    lam : float, default 0.01
    penalty : str or penalty object, default "l2"
        A name of :mod:`normpen.penalties.names` without groups (``"l2"``,
        ``"l1"``, ``"elasticnet"`` or an alias such as ``"lasso"``, ``"enet"``).
        A penalty object (for example ``GroupLasso(1, groups="rows")`` to select
        features across classes) keeps its structure; ``lam`` sets its strength.
    l1_ratio : float, default 0.5
        For ``"elasticnet"``.
    fit_intercept : bool, default True
    solver : {"auto", "cd", "fista", "lbfgs"}, default "auto"
        ``"auto"``: L-BFGS for ``"l2"`` (smooth objective, no coefficient zero),
        coordinate descent for the other names, FISTA for penalty objects without
        a block form.
    tol : float, default 1e-4
    max_iter : int, optional
    warm_start : bool, default False
        Start each fit from the previous ``coef_`` and ``intercept_`` (same
        columns and classes), as scikit-learn's ``warm_start``.

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray of shape (1, p) or (K, p)
    intercept_ : ndarray of shape (1,) or (K,)
    dual_gap_, n_iter_
    """

    _params = {
        "lam": 0.01,
        "penalty": "l2",
        "l1_ratio": 0.5,
        "fit_intercept": True,
        "solver": "auto",
        "tol": 1e-4,
        "max_iter": None,
        "warm_start": False,
    }
    _fixed = {"datafit": "logistic"}

    def predict_proba(self, X):
        """Class probabilities, shape ``(n, K)`` (columns in the order of ``classes_``)."""
        return _probabilities(self.decision_function(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))


class LinearSVC(_ClassifierCore, _LinearModel):
    r"""Linear SVM :math:`\frac1n\sum_i\varphi(y_i(x_i^\top w + b)) + \frac\lambda2\|w\|^2` (one-vs-rest).

    :math:`\varphi` is the hinge or the squared hinge (scikit-learn's
    ``LinearSVC(C=1/(n*lam), loss=...)``, but with an unpenalized intercept),
    solved by dual coordinate descent under a work budget, then, where it did not
    certify the gap, an interior-point method with crossover from its dual point
    (problems too large for the interior point: coordinate descent alone;
    :func:`normpen.linear.solvers.svm.linear_svm`).
    With ``hard_margin=True`` it solves seed 004's
    :math:`\min \frac12\|w\|^2` s.t. :math:`y_i(x_i^\top w + b) \ge 1` exactly and
    raises :class:`~normpen.linear.solvers.svm.NotSeparableError` (a
    ``ValueError``) when the classes are not separable; ``lam`` is then unused.

    Parameters
    ----------
    lam : float, default 0.01
    loss : {"squared_hinge", "hinge"}, default "squared_hinge"
    hard_margin : bool, default False
    fit_intercept : bool, default True
    tol : float, default 1e-4
    max_iter : int, optional
        Iteration cap of the SVM solver: interior-point iterations, or the epochs
        of dual coordinate descent on problems too large for the interior point
        (the coordinate descent run before the interior point is capped by its
        work budget).
    random_state : int or None
        Seeds the coordinate order of dual coordinate descent.

    Attributes
    ----------
    classes_, coef_ (1 or K rows), intercept_, dual_gap_ (summed over the
    one-vs-rest problems: it certifies the sum of their objectives), n_iter_
    (largest), margin_ (hard margin only:
    :math:`1/\|w\|` per problem).
    """

    _params = {
        "lam": 0.01,
        "loss": "squared_hinge",
        "hard_margin": False,
        "fit_intercept": True,
        "tol": 1e-4,
        "max_iter": None,
        "random_state": None,
    }
    _fixed = {"penalty": "l2"}

    def _datafit_object(self):
        return Hinge() if self.loss == "hinge" else SquaredHinge()

    def _fit_path(self, X, y_enc, sample_weight, lams):
        targets = [y_enc] if _is_binary(y_enc) else [np.where(column > 0, 1.0, -1.0) for column in y_enc.T]
        per_class = [self._binary_path(X, target, sample_weight, lams) for target in targets]
        if self.hard_margin:
            self.margin_ = np.array([solutions[0].margin for solutions in per_class])
        # one-vs-rest: the problems are independent, so their summed gaps certify the summed objective
        joint = [Solution.side_by_side(parts) for parts in zip(*per_class, strict=True)]
        return Path.from_solutions(lams, joint)

    def _binary_path(self, X, y, sample_weight, lams):
        """The solutions of one two-class problem along ``lams``, warm-started."""
        # imported on use, not by every `import normpen.linear` (cold start, issue 15)
        from normpen.linear.solvers.svm import hard_margin_svm, linear_svm

        if self.hard_margin:
            return [hard_margin_svm(X, y, fit_intercept=self.fit_intercept)] * len(lams)
        options = {"tol": self.tol, "random_state": self.random_state}
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter
        results, dual, previous = [], None, None
        for lam in lams:
            init = None if dual is None else dual * previous / lam
            result = linear_svm(
                X,
                y,
                float(lam),
                loss=self.loss,
                sample_weight=sample_weight,
                fit_intercept=self.fit_intercept,
                dual_init=init,
                **options,
            )
            results.append(result)
            dual, previous = result.dual_coef, float(lam)
        return results

    def _default_lams(self, X, y_enc, sample_weight, n_lams, eps):
        r"""Grid from :math:`\|X_c^\top A y\|_2` (where :math:`\|w\|` becomes small) down by ``eps``."""
        y = y_enc if _is_binary(y_enc) else np.where(y_enc[:, 0] > 0, 1.0, -1.0)
        problem = Problem(X, y, Quadratic(), sample_weight, self.fit_intercept)
        return lambda_grid(float(np.linalg.norm(problem.gradient_at_zero())), n_lams, eps)

    def _held_out_loss(self, X, y_enc, sample_weight, coef, intercept):
        """Held-out misclassification rate (weighted)."""
        scores = np.asarray(safe_sparse_dot(X, coef), dtype=np.float64) + intercept
        predicted = np.where(scores > 0, 1.0, -1.0) if scores.ndim == 1 else scores.argmax(axis=1)
        wrong = (predicted != _labels(y_enc)).astype(float)
        return float(np.average(wrong, weights=sample_weight))


# ---- generic --------------------------------------------------------------------------------


class PenalizedLinearModel(_LinearModel):
    r"""Any datafit with any penalty: :math:`\min_{W,b} F(XW + b) + P_\lambda(W)`.

    A regressor for the quadratic datafits and a classifier for the logistic,
    multinomial and squared-hinge ones (``"logistic"`` switches to the
    multinomial for more than two classes). The named estimators
    (:class:`Lasso`, :class:`LogisticRegression`, ...) are presets of it.

    Parameters
    ----------
    datafit : str or Datafit, default "quadratic"
        ``"quadratic"``, ``"multitask_quadratic"``, ``"logistic"``,
        ``"multinomial"``, ``"squared_hinge"``, or a datafit object.
    penalty : str or penalty object, default "l1"
        A name of :mod:`normpen.penalties.names` without groups (``"l1"``,
        ``"l2"``, ``"elasticnet"`` or an alias such as ``"lasso"``,
        ``"enet"``), or any normpen penalty (group, sparse-group, nuclear, ...).
    lam : float, optional
        Strength; None keeps the penalty object's own (0.1 for a name).
    l1_ratio : float, default 0.5
        For ``"elasticnet"``.
    fit_intercept : bool, default True
    positive : bool, default False
        Constrain the coefficients to be nonnegative (coordinate descent, or FISTA for penalties
        unchanged by sign flips).
    solver : {"auto", "cd", "fista", "lbfgs"}, default "auto"
        L-BFGS for the L2 penalty alone (smooth datafits), coordinate descent for
        the other penalties it supports, FISTA otherwise.
    tol : float, default 1e-4
    max_iter : int, optional
    warm_start : bool, default False
        Start each fit from the previous ``coef_`` and ``intercept_``.
    """

    _multi_output = True
    _positional = ("datafit", "penalty")
    _params = {
        "datafit": "quadratic",
        "penalty": "l1",
        "lam": None,
        "l1_ratio": 0.5,
        "fit_intercept": True,
        "positive": False,
        "solver": "auto",
        "tol": 1e-4,
        "max_iter": None,
        "warm_start": False,
    }

    @classmethod
    def _constraints(cls):
        return {**PARAMETER_CONSTRAINTS, "lam": NONE | PARAMETER_CONSTRAINTS["lam"]}

    def _core(self):
        return _ClassifierCore if self._is_classifier() else _RegressorCore

    def _strength(self):
        if self.lam is not None:
            return float(self.lam)
        return 0.1 if isinstance(self.penalty, str) else float(self.penalty.lam)

    def _validate_training(self, X, y, sample_weight):
        return self._core()._validate_training(self, X, y, sample_weight)

    def _set_coef(self, coef, intercept):
        self._core()._set_coef(self, coef, intercept)

    def _path_coef(self):
        return self._core()._path_coef(self)

    def predict(self, X):
        """Predictions: :math:`XW + b` for a regressor, the class of largest score for a classifier."""
        return self._core().predict(self, X)

    @available_if(lambda self: self._is_classifier())
    def decision_function(self, X):
        """Scores of a classifier (see :class:`LogisticRegression`)."""
        return _ClassifierCore.decision_function(self, X)

    @available_if(lambda self: isinstance(self._datafit_object(), Logistic | Multinomial))
    def predict_proba(self, X):
        """Class probabilities of a logistic or multinomial model."""
        return _probabilities(self.decision_function(X))

    def score(self, X, y, sample_weight=None):
        """Accuracy for a classifier, :math:`R^2` for a regressor."""
        # imported on use, not by every `import normpen.linear` (cold start, issue 15)
        from sklearn.metrics import accuracy_score, r2_score

        metric = accuracy_score if self._is_classifier() else r2_score
        return metric(y, self.predict(X), sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        if self._is_classifier():
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
            tags.target_tags.multi_output = False
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        return tags


# ---- cross-validation -------------------------------------------------------------------------


def _fold_errors(estimator, X, y_enc, sample_weight, train, test, lams):
    """Held-out error of every strength of a path fitted on one fold."""
    sw_train = None if sample_weight is None else sample_weight[train]
    sw_test = None if sample_weight is None else sample_weight[test]
    result = estimator._fit_path(X[train], y_enc[train], sw_train, lams)
    return np.array(
        [
            estimator._held_out_loss(X[test], y_enc[test], sw_test, coef, intercept)
            for coef, intercept in zip(result.coefs, result.intercepts, strict=True)
        ]
    )


class _CrossValidated:
    r"""K-fold choice of :math:`\lambda` along a warm-started path; mixed in before the estimator it tunes.

    Fitted attributes: ``lams_`` (the grid, decreasing), ``cv_errors_``
    (``(K, L)`` held-out errors), ``cv_mean_`` and ``cv_se_`` (mean and
    standard error over the folds), ``lam_min_`` (least mean error),
    ``lam_1se_`` (largest :math:`\lambda` whose mean error is within one
    standard error of the minimum, Breiman's rule), ``lam_`` (the one
    ``selection`` picks, used for the final refit on all the data), and the
    refit's ``coef_``, ``intercept_``, ``dual_gap_``, ``n_iter_``.
    """

    _positional = ()

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None, *, on_fold=None):
        """Cross-validate the grid, then refit at the selected strength.

        ``on_fold(done, total)``, if given, is called as each fold's path
        finishes (in fold order), e.g. to advance a progress bar.
        """
        self._validate_params()
        X, y_enc, sample_weight = self._validate_training(X, y, sample_weight)
        if X.shape[0] < 2:
            raise ValueError(f"cross-validation needs at least 2 samples, got n_samples={X.shape[0]}")
        if self.lams is None:
            lams = self._default_lams(X, y_enc, sample_weight, self.n_lams, self.eps)
        else:
            lams = decreasing_lams(self.lams)
        # imported on use, not by every `import normpen.linear` (cold start, issue 15)
        from sklearn.model_selection import check_cv

        splitter = check_cv(self.cv, _labels(y_enc), classifier=is_classifier(self))
        folds = list(splitter.split(X, _labels(y_enc)))
        errors = []
        for fold_errors in Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(_fold_errors)(self, X, y_enc, sample_weight, train, test, lams) for train, test in folds
        ):
            errors.append(fold_errors)
            if on_fold is not None:
                on_fold(len(errors), len(folds))
        self._select(lams, np.array(errors), np.full(len(folds), 1.0 / len(folds)))
        result = self._fit_path(X, y_enc, sample_weight, np.array([self.lam_]))
        self._set_solution(result, 0)
        return self

    def _select(self, lams, errors, weights):
        r"""Set ``lams_``, ``cv_errors_``, ``cv_mean_``, ``cv_se_``, ``lam_min_``, ``lam_1se_`` and ``lam_``.

        ``errors`` has one row per held-out part (a fold, or a sample for
        leave-one-out) and ``weights`` :math:`v` (summing to 1) weighs the
        rows. The mean is :math:`m = \sum_k v_k e_k` and its standard error
        :math:`\sqrt{\sum_k v_k^2 (e_k - m)^2 / (1 - \sum_k v_k^2)}`, for equal
        weights :math:`\operatorname{std}(e)/\sqrt K` with ``ddof=1``; 0 with a
        single part.
        """
        self.lams_, self.cv_errors_ = lams, errors
        self.cv_mean_ = weights @ errors
        finite = np.isfinite(self.cv_mean_)  # not where a sample has leverage 1 (ridge at lam = 0)
        deviations = np.where(finite, errors - np.where(finite, self.cv_mean_, 0), 0)
        spread = 1 - float(weights @ weights)
        se = np.sqrt((weights**2) @ deviations**2 / spread) if spread > 0 else 0 * lams
        self.cv_se_ = np.where(finite, se, np.inf)
        best = int(np.argmin(self.cv_mean_))
        within = np.flatnonzero(self.cv_mean_ <= self.cv_mean_[best] + self.cv_se_[best])
        self.lam_min_ = float(lams[best])
        self.lam_1se_ = float(lams[within.min()])
        self.lam_ = self.lam_min_ if self.selection == "min" else self.lam_1se_

    def plot(self, ax=None):
        """Mean held-out error with one-standard-error bars against :math:`\\lambda`; returns the Figure."""
        from matplotlib.figure import Figure

        check_is_fitted(self)
        if ax is None:
            ax = Figure(figsize=(6, 4)).add_subplot()
        ax.errorbar(self.lams_, self.cv_mean_, yerr=self.cv_se_, fmt="o-", markersize=3, capsize=2)
        ax.axvline(self.lam_min_, linestyle="--", color="k", label=r"$\lambda_{\min}$")
        ax.axvline(self.lam_1se_, linestyle=":", color="k", label=r"$\lambda_{1se}$")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(r"$\lambda$")
        ax.set_ylabel("held-out error")
        ax.legend()
        return ax.figure


def _cv_params(n_lams, eps, cv=5):
    """The parameters of the cross-validation, with the grid and folds of one twin."""
    return {"lams": None, "n_lams": n_lams, "eps": eps, "cv": cv, "selection": "min", "n_jobs": None}


def _twin_params(model, n_lams, eps):
    """A ``*CV`` twin's parameters: the cross-validation's, then ``model``'s without the ones it chooses
    (``lam``) or that do not apply to it (``warm_start``: every strength starts from the previous one)."""
    kept = {name: default for name, default in model._params.items() if name not in ("lam", "warm_start")}
    return {**_cv_params(n_lams, eps), **kept}


class LassoCV(_CrossValidated, Lasso):
    """:class:`Lasso` with :math:`\\lambda` chosen by K-fold cross-validation (mean squared error).

    Parameters as :class:`Lasso` (without ``lam`` and ``warm_start``), plus ``lams`` (grid; default
    ``n_lams`` values from :math:`\\lambda_{\\max}` down to ``eps`` times it),
    ``cv`` (folds: an int, a splitter or an iterable), ``selection``
    (``"min"`` or ``"1se"``) and ``n_jobs`` (folds in parallel through joblib,
    so any joblib backend, Dask or Ray included, works unchanged).
    """

    _params = _twin_params(Lasso, n_lams=100, eps=1e-3)


class ElasticNetCV(_CrossValidated, ElasticNet):
    """:class:`ElasticNet` with :math:`\\lambda` chosen by K-fold cross-validation (see :class:`LassoCV`)."""

    _params = _twin_params(ElasticNet, n_lams=100, eps=1e-3)


class GroupLassoCV(_CrossValidated, GroupLasso):
    """:class:`GroupLasso` with :math:`\\lambda` chosen by K-fold cross-validation (see :class:`LassoCV`)."""

    _params = _twin_params(GroupLasso, n_lams=100, eps=1e-3)


class SparseGroupLassoCV(_CrossValidated, SparseGroupLasso):
    """:class:`SparseGroupLasso` with :math:`\\lambda` chosen by K-fold CV (as :class:`LassoCV`)."""

    _params = _twin_params(SparseGroupLasso, n_lams=100, eps=1e-3)


class RidgeCV(_CrossValidated, Ridge):
    """:class:`Ridge` with :math:`\\lambda` chosen by K-fold cross-validation along the SVD path.

    With ``cv=None`` (the default) the error is the exact leave-one-out error
    of :func:`~normpen.linear.solvers.ridge.ridge_path`, free from the one SVD
    of the data: every sample is a held-out part, ``cv_errors_`` holds the
    squared leave-one-out residuals (``(n, L)``, averaged over the outputs of a
    2-D target), ``cv_mean_`` their (sample-weighted) mean and ``cv_se_`` its
    standard error, from which ``lam_1se_`` follows as for K-fold. Any other
    ``cv`` runs K-fold, one SVD per fold for the whole grid. Parameters as
    :class:`LassoCV`; the default grid runs from :math:`10\\sigma_{\\max}^2` (the
    Lipschitz constant of the gradient) down to ``eps`` times it.
    """

    _params = {**_cv_params(n_lams=100, eps=1e-6, cv=None), "fit_intercept": True}

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None, *, on_fold=None):
        """Exact leave-one-out (``cv=None``, one pass: ``on_fold`` is not called) or K-fold choice of
        :math:`\\lambda`, then the refit."""
        if self.cv is not None:
            return super().fit(X, y, sample_weight, on_fold=on_fold)
        # imported on use, not by every `import normpen.linear` (cold start, issue 15)
        from normpen.linear.solvers.ridge import ridge_path

        self._validate_params()
        X, y, sample_weight = self._validate_training(X, y, sample_weight)
        lams = (
            self._default_lams(X, y, sample_weight, self.n_lams, self.eps)
            if self.lams is None
            else decreasing_lams(self.lams)
        )
        result = ridge_path(
            X, y, lams, sample_weight=sample_weight, fit_intercept=self.fit_intercept, certify=False
        )
        errors = result.loo_errors if result.loo_errors.ndim == 2 else result.loo_errors.mean(axis=2)
        n = X.shape[0]
        weights = np.full(n, 1 / n) if sample_weight is None else sample_weight / sample_weight.sum()
        self._select(lams, np.asarray(errors, dtype=np.float64).T, weights)
        self._set_solution(self._fit_path(X, y, sample_weight, np.array([self.lam_])), 0)
        return self


class LogisticRegressionCV(_CrossValidated, LogisticRegression):
    """:class:`LogisticRegression` with :math:`\\lambda` chosen by stratified K-fold CV (log loss)."""

    _params = _twin_params(LogisticRegression, n_lams=30, eps=1e-3)


class LinearSVCCV(_CrossValidated, LinearSVC):
    """:class:`LinearSVC` with :math:`\\lambda` chosen by stratified K-fold CV (misclassification rate).

    The soft margin only: the hard margin has no :math:`\\lambda` to choose.
    """

    hard_margin = False
    _params = {
        name: default
        for name, default in _twin_params(LinearSVC, n_lams=20, eps=1e-2).items()
        if name != "hard_margin"
    }


class PenalizedLinearModelCV(_CrossValidated, PenalizedLinearModel):
    """:class:`PenalizedLinearModel` with :math:`\\lambda` chosen by K-fold CV (held-out datafit loss)."""

    _positional = ("datafit", "penalty")
    _params = _twin_params(PenalizedLinearModel, n_lams=50, eps=1e-3)
