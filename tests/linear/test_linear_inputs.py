"""Bad arguments to the linear models: each raises before any work, naming the argument and the fix."""

import re

import numpy as np
import pytest

import normpen as npn
from normpen.linear import Lasso, LogisticRegression, Quadratic, Ridge, path
from normpen.linear.path import lambda_max


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5))
    return X, X @ np.arange(5.0) + rng.standard_normal(50)


def test_path_refuses_a_penalty_name_and_a_missing_datafit(data):
    X, y = data
    with pytest.raises(TypeError, match=r"penalty must be a normpen penalty object such as normpen.L1"):
        path(X, y, Quadratic(), "l1")
    with pytest.raises(TypeError, match=r"penalty must be"):
        lambda_max(X, y, Quadratic(), "l1")
    with pytest.raises(TypeError, match=r"datafit must be a normpen.linear.datafits object such as"):
        path(X, y, None, npn.L1(1.0))


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None])
def test_booleans_are_validated_as_booleans(data, flag):
    X, y = data
    with pytest.raises(TypeError, match="fit_intercept must be True or False"):
        Lasso(lam=0.1, fit_intercept=flag).fit(X, y)
    with pytest.raises(TypeError, match="positive must be True or False"):
        path(X, y, Quadratic(), npn.L1(1.0), positive=flag)


def test_numpy_booleans_are_booleans(data):
    X, y = data
    assert Lasso(lam=0.1, fit_intercept=np.bool_(False)).fit(X, y).intercept_ == 0.0


def test_string_strengths_name_the_argument(data):
    X, y = data
    with pytest.raises(ValueError, match=r"lams must be a sequence of numbers"):
        path(X, y, Quadratic(), npn.L1(1.0), lams=["a", "b"])


@pytest.mark.parametrize(
    "make", [lambda: Lasso(lam=0.1), lambda: Ridge(lam=0.1), lambda: LogisticRegression(lam=0.01)]
)
@pytest.mark.parametrize("scale", [1e160, 1e200])
def test_a_design_whose_products_overflow_is_refused_not_fitted_to_zeros(data, make, scale):
    # 50 x 5 entries of size ~3: the limit sqrt(f_max / (n p)) = sqrt(1.8e308 / 250) ~ 8.5e152 lies below
    # 3e160; the solvers used to return all-zero coefficients with overflow warnings.
    X, y = data
    estimator = make()
    target = (y > 0).astype(int) if isinstance(estimator, LogisticRegression) else y
    with pytest.raises(ValueError, match=r"X has entries up to .*divide X by a power of ten"):
        estimator.fit(X * scale, target)
    assert not hasattr(estimator, "coef_")


def test_a_design_just_below_the_limit_gives_the_rescaled_solution(data):
    # Lasso(lam) on (X, y) and Lasso(c lam) on (c X, y) have solutions w and w / c: the data term depends on
    # c X w / c and (c lam) ||w / c||_1 = lam ||w||_1. With c a power of two the scaling itself is exact,
    # so the two fits differ only by the solver's stopping point: relative gap tol=1e-12 gives coefficients
    # to ~sqrt(1e-12) relative at worst; 1e-6 relative.
    X, y = data
    c = 2.0**500  # 3.3e150, below the limit 8.5e152
    small = Lasso(lam=0.1, tol=1e-12).fit(X, y).coef_
    large = Lasso(lam=0.1 * c, tol=1e-12).fit(X * c, y).coef_
    np.testing.assert_allclose(large * c, small, rtol=1e-6)


def test_a_target_whose_squares_overflow_is_refused(data):
    X, y = data
    with pytest.raises(ValueError, match=r"y has entries up to"):
        Lasso(lam=0.1).fit(X, y * 1e160)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_np_matrix_input_is_refused_with_the_fix(data):
    X, y = data
    with pytest.raises(TypeError, match=r"np.matrix is not supported.*np.asarray"):
        Lasso(lam=0.1).fit(np.asmatrix(X), y)
    with pytest.raises(TypeError, match=r"np.matrix is not supported.*np.asarray"):
        path(X=np.asmatrix(X), y=y, datafit=Quadratic(), penalty=npn.L1(1.0))


@pytest.mark.parametrize("entry", ["path(solver='cd')", "coordinate_descent"])
def test_torch_tensors_are_refused_with_the_way_out(data, entry):
    """The host solvers name the conversion and FISTA (which runs on tensors) instead of failing inside."""
    torch = pytest.importorskip("torch")
    from normpen.linear.solvers.cd import coordinate_descent

    X, y = (torch.tensor(a) for a in data[:2])
    call = {
        "path(solver='cd')": lambda: path(X, y, Quadratic(), npn.L1(1.0), [0.1], solver="cd"),
        "coordinate_descent": lambda: coordinate_descent(X, y, Quadratic(), npn.L1(0.1)),
    }[entry]
    with pytest.raises(
        TypeError, match=rf"{re.escape(entry)} takes numpy arrays .* normpen\.linear\.solvers\.fista\.fista"
    ):
        call()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("value", "message"), [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
def test_float_arrays_skip_check_array_with_the_same_results_and_errors(dtype, value, message):
    """``check_design`` and ``check_target_array`` take float numpy arrays without scikit-learn's
    ``check_array``: the same arrays (Fortran order, dtype kept) and, for a NaN or an infinity anywhere
    (one of the scale check's extremes then is not finite), ``check_array``'s errors."""
    from sklearn.utils import check_array

    from normpen.linear._validation import check_design, check_target_array

    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4)).astype(dtype)  # C order: made Fortran-ordered, as check_array does
    checked = check_design(X)
    reference = check_array(X, dtype=[np.float64, np.float32], order="F")
    assert checked.dtype == dtype and checked.flags.f_contiguous
    np.testing.assert_array_equal(checked, reference)  # a copy in another order: the same values exactly
    y = X[:, 0].copy()
    assert check_target_array(X, y) is y
    bad = X.copy()
    bad[3, 2] = value
    with pytest.raises(ValueError, match=f"Input X contains {message}"):
        check_design(bad)
    with pytest.raises(ValueError, match=f"Input y contains {message}"):
        check_target_array(X, bad[:, 2])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        check_target_array(X, y[:5])
