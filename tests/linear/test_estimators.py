"""The estimators: scikit-learn's checks, equivalence with scikit-learn's models, and clear errors."""

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import linear_model, svm
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_estimator

from normpen.linear import estimators
from normpen.linear._validation import InvalidParameterError
from normpen.linear.datafits import Quadratic
from normpen.linear.estimators import (
    ElasticNet,
    GroupLasso,
    Lasso,
    LassoCV,
    LinearSVC,
    LogisticRegression,
    PenalizedLinearModel,
    Ridge,
    RidgeCV,
    SparseGroupLasso,
)
from normpen.linear.solvers.svm import NotSeparableError
from normpen.penalties.group_lasso import GroupLasso as GroupLassoPenalty
from normpen.penalties.nuclear import Nuclear

#: scikit-learn marks the same check as an expected failure for its own LinearSVC: the dual
#: coordinate descent visits samples in a random order, so weights and repetitions take different routes.
_RANDOM = "dual coordinate descent visits samples in random order"
RANDOM_ORDER = {
    "check_sample_weight_equivalence_on_dense_data": _RANDOM,
    "check_sample_weight_equivalence_on_sparse_data": _RANDOM,
}

ESTIMATORS = [
    Lasso(),
    ElasticNet(),
    Ridge(),
    GroupLasso(),
    SparseGroupLasso(),
    LogisticRegression(),
    LogisticRegression(penalty="l1"),
    LinearSVC(),
    PenalizedLinearModel(),
    PenalizedLinearModel("logistic", "elasticnet", lam=0.01),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_scikit_learn_estimator_checks(estimator):
    expected = RANDOM_ORDER if isinstance(estimator, LinearSVC) else {}
    check_estimator(estimator, expected_failed_checks=expected)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 8))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.2 * rng.standard_normal(50) + 3.0
    return X, y


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 5))
    labels = np.argmax(X[:, :3] + 0.8 * rng.standard_normal((90, 3)), axis=1)
    return X, np.array(["a", "b", "c"])[labels]


def test_ridge_is_scikit_learns_with_alpha_n_lam(regression):
    X, y = regression
    ours = Ridge(lam=0.05).fit(X, y)
    reference = linear_model.Ridge(alpha=0.05 * len(y)).fit(X, y)
    # two direct solves at cond ~2 on 50 samples, magnitudes <= 3: ~n eps |w| ~ 3e-14 (measured <= 1.2e-15)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-13)
    assert ours.intercept_ == pytest.approx(reference.intercept_, abs=1e-13)
    # a closed form's gap is P's rounding, n eps P0 ~ 2e-14
    assert ours.dual_gap_ <= 1e-12 and ours.n_iter_ == 1


def test_lasso_reports_its_gap_and_handles_sparse_and_float32(regression):
    X, y = regression
    dense = Lasso(0.05, tol=1e-10).fit(X, y)
    # tol's contract: gap <= tol P0
    assert 0 <= dense.dual_gap_ <= 1e-10 * 0.5 * np.var(y) and dense.n_iter_ >= 1
    sparse = Lasso(0.05, tol=1e-10).fit(sp.csr_matrix(X), y)
    with pytest.warns(UserWarning, match="below the relative duality gap float32 can certify"):
        single = Lasso(0.05, tol=1e-8).fit(X.astype(np.float32), y)
    # The certificate ||w - w*|| <= sqrt(2 gap / mu) (gap 1e-10 P0, P0 = 2.1, mu = 0.47) allows 3e-5 per fit;
    # CD lands on the exact support and then converges linearly, far inside it. Measured, not derived: the
    # sparse route repeats the dense sweeps up to rounding (5.5e-17 against 1e-10); scikit-learn's CD agrees
    # to 2.4e-15 against 1e-8; float32 data move w by ~n eps32 |w| ~ 50 * 6e-8 * 2 = 6e-6 at most (measured
    # 1.0e-7, 1e-4).
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-10)
    np.testing.assert_allclose(single.coef_, dense.coef_, atol=1e-4)
    reference = linear_model.Lasso(alpha=0.05, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(dense.coef_, reference.coef_, atol=1e-8)


def test_two_dimensional_targets_fit_one_model_per_column(regression):
    X, y = regression
    Y = np.column_stack([y, -2 * y + 1])
    both = ElasticNet(0.05, tol=1e-10).fit(X, Y)
    assert both.coef_.shape == (2, 8) and both.predict(X).shape == (50, 2)
    # each fit certified to a gap of 1e-10 (P0_1 + P0_2 = 10.6): ||w - w*|| <= sqrt(2e-10 * 10.6 / mu 0.47)
    # = 6.7e-5, so 2 * 6.7e-5 (measured 1.3e-6, which a picked 1e-5 left 8x room)
    np.testing.assert_allclose(both.coef_[1], ElasticNet(0.05, tol=1e-10).fit(X, Y[:, 1]).coef_, atol=1.5e-4)


def test_multinomial_logistic_matches_scikit_learn(classification):
    X, y = classification
    ours = LogisticRegression(lam=0.01, tol=1e-10).fit(X, y)
    reference = linear_model.LogisticRegression(C=1 / (0.01 * len(y)), tol=1e-12, max_iter=10_000).fit(X, y)
    # ours: gap 1e-10 log 3 with mu = lam = 0.01 (the Hessian's smallest eigenvalue off the softmax's shift
    # direction) gives ||W - W*|| <= 1.5e-4, so |z| moves <= 1.5e-4 * max ||(x, 1)|| 4.3 and p by half that,
    # 3.2e-4; lbfgs's gradient 1e-12 costs 1e-10. Predictions are then certified: the top two probabilities
    # differ by >= 2.9e-3. (measured 4e-7, which a picked 1e-6 left 2.5x room)
    np.testing.assert_allclose(ours.predict_proba(X), reference.predict_proba(X), atol=4e-4)
    np.testing.assert_array_equal(ours.classes_, ["a", "b", "c"])
    np.testing.assert_array_equal(ours.predict(X), reference.predict(X))


def test_linear_svc_matches_liblinear_without_intercept(classification):
    X, y = classification
    binary = np.where(y == "a", 1, 0)
    lam = 0.02
    ours = LinearSVC(lam, fit_intercept=False, tol=1e-10, random_state=0).fit(X, binary)
    reference = svm.LinearSVC(C=1 / (lam * len(X)), fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
        X, binary
    )
    # ours: gap 1e-10 P0 (P0 = 1) and mu = lam = 0.02 give ||w - w*|| <= sqrt(2e-10 / 0.02) = 1e-4;
    # liblinear's
    # dual at tol 1e-12 is far closer (measured distance 1.8e-9)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-4)


def test_hard_margin_separates_or_says_it_cannot():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.standard_normal((20, 2)) + 4, rng.standard_normal((20, 2)) - 4])
    y = np.repeat([1, 0], 20)
    model = LinearSVC(hard_margin=True).fit(X, y)
    margins = (2 * y - 1) * model.decision_function(X)
    # the crossover solves the support vectors' equalities exactly up to rounding: ~eps |x| |w| ~ 1e-14
    # (measured 2.2e-16); margin_ is the same norm computed again
    assert margins.min() == pytest.approx(1.0, abs=1e-12)
    assert model.margin_[0] == pytest.approx(1 / np.linalg.norm(model.coef_), rel=1e-14)
    with pytest.raises(NotSeparableError, match="linear_svm"):
        LinearSVC(hard_margin=True).fit(np.vstack([X, [[4.0, 4.0]]]), np.append(y, 0))


def test_generic_model_takes_any_datafit_and_penalty(regression, classification):
    X, y = regression
    rng = np.random.default_rng(3)
    Y = X @ np.outer(rng.standard_normal(8), rng.standard_normal(3)) + 0.5 * rng.standard_normal((50, 3))
    low_rank = PenalizedLinearModel("multitask_quadratic", Nuclear(0.3), tol=1e-8).fit(X, Y)
    # sigma: 13.2, then
    assert low_rank.coef_.shape == (3, 8) and np.linalg.matrix_rank(low_rank.coef_, tol=1e-6) < 3
    # the nuclear prox's exact zeros up to the SVD's rounding 13 * eps * 24 ~ 7e-14 (measured 5e-16)
    Xc, yc = classification
    selector = PenalizedLinearModel("logistic", GroupLassoPenalty(0.05, "rows"), tol=1e-8).fit(Xc, yc)
    assert selector.predict_proba(Xc).shape == (90, 3)
    assert np.all((selector.coef_ == 0).all(axis=0) | (selector.coef_ != 0).all(axis=0))
    as_lasso = PenalizedLinearModel(Quadratic(), "l1", lam=0.05, tol=1e-10).fit(X, y)
    # the same solver on the same problem: rounding only (measured bit-equal)
    np.testing.assert_allclose(as_lasso.coef_, Lasso(0.05, tol=1e-10).fit(X, y).coef_, atol=1e-13)


@pytest.mark.parametrize(
    ("model", "X", "y", "error", "message"),
    [
        (Lasso(), [[1.0, np.nan], [0.0, 1.0]], [1.0, 2.0], ValueError, "NaN"),
        (Lasso(), [[1.0, 2.0], [0.0, 1.0]], [1.0, np.inf], ValueError, "infinity"),
        (LogisticRegression(), [[1.0], [0.0], [2.0]], [0.1, 0.2, 0.3], ValueError, "Unknown label type"),
        (LogisticRegression(), [[1.0], [0.0]], [1, 1], ValueError, "1 class"),
        (
            GroupLasso(groups=[np.array([0, 5])]),
            [[1.0, 2.0], [0.0, 1.0]],
            [1.0, 2.0],
            ValueError,
            "do not fit X",
        ),
        (Lasso(lam=-1.0), [[1.0], [0.0]], [1.0, 2.0], ValueError, "lam must be"),
        (PenalizedLinearModel("hinge"), [[1.0], [0.0]], [1, 0], ValueError, "datafit must be one of"),
        (LogisticRegression(penalty="l3"), [[1.0], [0.0]], [1, 0], ValueError, "penalty must be"),
        (LinearSVC(loss="log"), [[1.0], [0.0]], [1, 0], ValueError, "loss must be"),
    ],
)
def test_bad_input_gets_a_clear_error(model, X, y, error, message):
    with pytest.raises(error, match=message):
        model.fit(np.asarray(X), np.asarray(y))


def test_fit_path_solves_the_cv_grid_on_all_the_data_and_leaves_the_estimator_as_it_was():
    from normpen.linear.estimators import LassoCV

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6)), rng.standard_normal(40)
    model = LassoCV(cv=3, n_lams=6).fit(X, y)
    coef = model.coef_.copy()
    result = model.fit_path(X, y)
    np.testing.assert_array_equal(model.coef_, coef)
    for lam, path_coef in zip(model.lams_, result.coefs, strict=True):
        reference = linear_model.Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(X, y)
        # our path certifies gaps <= 2e-16 P0 (sqrt(2 gap / mu) ~ 3e-8 at mu ~ 0.5); scikit-learn's tol 1e-12
        # certifies only ~2e-6, but its CD lands on the exact support too (measured distance 3.3e-14)
        np.testing.assert_allclose(path_coef, reference.coef_, atol=1e-6)
    with pytest.raises(ValueError, match="lams is required"):
        Lasso().fit_path(X, y)
    with pytest.raises(ValueError, match="finite strengths"):
        Lasso().fit_path(X, y, lams=[0.1, -1.0])


def test_fit_path_on_other_data_leaves_the_fitted_attributes_as_they_were():
    # A path on 5 columns (and 2 of the 3 classes) must not re-record n_features_in_ or classes_: predict on
    # the 10-column training data raised before.
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((60, 10)), np.repeat([0, 1, 2], 20)
    model = LogisticRegression(lam=0.01).fit(X, labels)
    before = {name: np.copy(value) for name, value in vars(model).items() if name.endswith("_")}
    model.fit_path(X[:40, :5], labels[:40], lams=[0.1, 0.01])
    after = {name: value for name, value in vars(model).items() if name.endswith("_")}
    assert before.keys() == after.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)
    assert model.predict(X).shape == (60,)


# ---- parameters: one constraint table, presets over PenalizedLinearModel --------------------------------

ALL_CLASSES = [getattr(estimators, name) for name in estimators.__all__ if name != "PARAMETER_CONSTRAINTS"]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_parameter_is_in_the_one_constraint_table_and_the_signature_is_explicit(cls):
    params = cls().get_params()
    assert set(params) <= set(estimators.PARAMETER_CONSTRAINTS)
    signature = inspect.signature(cls)
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    positional = [name for name, kind in kinds.items() if kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional in ([], ["lam"], ["datafit", "penalty"])
    assert {name: p.default for name, p in signature.parameters.items()} == params
    assert clone(cls()).get_params() == params


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Lasso(tol=0.0), r"Lasso: tol must be a finite number in \(0, inf\) such as 1e-4; got 0.0"),
        (Lasso(max_iter=0), r"max_iter must be None or an integer >= 1; got 0"),
        (Lasso(fit_intercept="yes"), "fit_intercept must be True or False; got 'yes'"),
        (Lasso(warm_start=1), "warm_start must be True or False"),
        (ElasticNet(l1_ratio=1.5), r"l1_ratio must be a finite number in \[0, 1\]"),
        (
            LogisticRegression(solver="newton-cg"),
            "solver must be one of 'auto', 'cd', 'fista', 'lbfgs'; got 'newton-cg'",
        ),
        (
            LogisticRegression(penalty=3),
            r"penalty must be a penalty name \(l1 or lasso, .*or a normpen penalty",
        ),
        (LinearSVC(random_state=-1), "random_state must be None or an integer >= 0 or a numpy Generator"),
        (LassoCV(cv=1), "cv must be None or an integer >= 2 or a splitter"),
        (LassoCV(n_jobs=0), "n_jobs must be None or a nonzero integer"),
        (LassoCV(eps=1.0), r"eps must be a finite number in \(0, 1\)"),
        (RidgeCV(selection="best"), "selection must be one of 'min', '1se'"),
        (PenalizedLinearModel(lam=-1.0), r"lam must be None or a finite number in \[0, inf\)"),
    ],
)
def test_a_bad_parameter_is_named_with_what_it_accepts_and_the_fit_changes_nothing(model, message):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    y = np.where(X[:, 0] > 0, 1, 0)
    good = clone(model).set_params(**{name: value for name, value in type(model)().get_params().items()})
    good.fit(X, y)
    before = {name: np.copy(value) for name, value in vars(good).items() if name.endswith("_")}
    bad = good.set_params(**model.get_params())
    with pytest.raises(InvalidParameterError, match=message) as raised:
        bad.fit(X, y)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    after = {name: value for name, value in vars(bad).items() if name.endswith("_")}
    assert after.keys() == before.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_penalty_aliases_fit_the_same_model(regression, classification):
    X, y = classification
    # the same penalty object built from two spellings: the same operations (bit-equal)
    np.testing.assert_array_equal(
        LogisticRegression(0.05, penalty="lasso").fit(X, y).coef_,
        LogisticRegression(0.05, penalty="l1").fit(X, y).coef_,
    )
    X, y = regression
    np.testing.assert_array_equal(
        PenalizedLinearModel("quadratic", "enet", lam=0.05).fit(X, y).coef_,
        ElasticNet(0.05).fit(X, y).coef_,
    )
    with pytest.raises(ValueError, match="needs groups"):
        PenalizedLinearModel("quadratic", "group", lam=0.05).fit(X, y)
