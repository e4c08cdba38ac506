"""Saved linear models: JSON + npz round trips, refusal of anything that is not plain data or does not fit.

The command-line side (``normpen predict`` on damaged or hostile model
directories, exit codes, files left as they were) is in tests/test_files.py.
Round trips compare exactly: the float64 arrays come back bit for bit and predict runs the same code on them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from normpen._files import sha256_hex
from normpen.linear import GroupLassoCV, Lasso, LassoCV, LinearSVCCV, LogisticRegressionCV, RidgeCV
from normpen.model_io import (
    MODEL_ARRAYS,
    MODEL_JSON,
    ModelFileError,
    OutputExistsError,
    load_model,
    model_files,
    save_model,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    y = X @ np.array([1.5, 0.0, -2.0, 0.0, 0.5]) + 0.3 * rng.normal(size=40)
    return X, y


def _save(estimator, directory, metadata=None):
    save_model(directory, estimator, metadata)
    return load_model(directory)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LassoCV(cv=3, n_lams=8),
        lambda: RidgeCV(n_lams=8),
        lambda: GroupLassoCV(groups=[np.array([0, 1]), np.array([2]), np.array([3, 4])], cv=3, n_lams=8),
        lambda: Lasso(0.05),
    ],
)
def test_regressor_round_trip_predicts_identically(make, data, tmp_path):
    X, y = data
    estimator = make().fit(X, y)
    saved = _save(estimator, tmp_path, {"note": "ok"})
    assert type(saved.estimator) is type(estimator)
    assert saved.metadata == {"note": "ok"}
    np.testing.assert_array_equal(saved.estimator.predict(X), estimator.predict(X))
    np.testing.assert_array_equal(saved.estimator.coef_, estimator.coef_)
    for name in ("lam_min_", "lam_1se_", "lams_", "cv_mean_"):
        if hasattr(estimator, name):
            np.testing.assert_array_equal(getattr(saved.estimator, name), getattr(estimator, name))


@pytest.mark.parametrize("labels", [np.array(["no", "yes"]), np.array([3, 7]), np.array(["a", "b", "c"])])
def test_classifier_round_trip_keeps_labels_and_probabilities(labels, data, tmp_path):
    X, y = data
    bins = np.quantile(y, np.linspace(0, 1, len(labels) + 1)[1:-1])
    target = labels[np.digitize(y, bins)]
    estimator = LogisticRegressionCV(cv=3, n_lams=5).fit(X, target)
    saved = _save(estimator, tmp_path).estimator
    np.testing.assert_array_equal(saved.classes_, estimator.classes_)
    assert saved.classes_.dtype.kind == estimator.classes_.dtype.kind
    np.testing.assert_array_equal(saved.predict(X), estimator.predict(X))
    np.testing.assert_array_equal(saved.predict_proba(X), estimator.predict_proba(X))


def test_svm_round_trip(data, tmp_path):
    X, y = data
    estimator = LinearSVCCV(cv=3, n_lams=5).fit(X, y > 0)
    np.testing.assert_array_equal(_save(estimator, tmp_path).estimator.predict(X), estimator.predict(X))


def test_files_are_json_and_a_plain_npz(data, tmp_path):
    X, y = data
    files = model_files(LassoCV(cv=3, n_lams=5).fit(X, y))
    assert set(files) == {MODEL_JSON, MODEL_ARRAYS}
    document = json.loads(files[MODEL_JSON])
    assert document["estimator"] == "LassoCV"
    assert document["params"]["cv"] == 3
    assert document["arrays_sha256"] == sha256_hex(files[MODEL_ARRAYS])
    save_model(tmp_path / "m", LassoCV(cv=3, n_lams=5).fit(X, y))
    with np.load(tmp_path / "m" / MODEL_ARRAYS, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == document["arrays"]
        assert "coef_" in arrays.files


def test_splitter_parameter_is_saved_as_its_fold_count(data, tmp_path):
    from sklearn.model_selection import KFold

    X, y = data
    saved = _save(LassoCV(cv=KFold(4, shuffle=True, random_state=0), n_lams=5).fit(X, y), tmp_path)
    assert saved.estimator.cv == 4


def test_unsavable_estimators_and_parameters_raise_type_error(data):
    from sklearn.linear_model import Lasso as SklearnLasso

    X, y = data
    with pytest.raises(TypeError, match="only normpen.linear estimators"):
        model_files(SklearnLasso().fit(X, y))
    estimator = Lasso(0.1).fit(X, y)
    estimator.weights = object()
    with pytest.raises(TypeError, match="weights=.*cannot be saved as data"):
        model_files(estimator)


@pytest.fixture
def saved_dir(data, tmp_path):
    X, y = data
    return save_model(tmp_path / "model", Lasso(0.1).fit(X, y))


def _edit_json(directory, **changes):
    document = json.loads((directory / MODEL_JSON).read_text())
    document.update(changes)
    (directory / MODEL_JSON).write_text(json.dumps(document))


def _replace_arrays(directory, **arrays):
    """Rewrite model.npz with ``arrays`` changed and record its new hash, as a forger who edits both would."""
    with np.load(directory / MODEL_ARRAYS) as saved:
        content = {name: saved[name] for name in saved.files} | arrays
    np.savez(directory / MODEL_ARRAYS, **content)
    _edit_json(
        directory, arrays=sorted(content), arrays_sha256=sha256_hex((directory / MODEL_ARRAYS).read_bytes())
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimator": "system"}, "names no normpen estimator: 'system'"),
        ({"estimator": "Datafit"}, "names no normpen estimator"),
        ({"format": "pickle"}, "not a normpen linear model"),
        ({"format_version": 1}, "format version 1"),
        ({"params": {"no_such_parameter": 1}}, "malformed"),
        ({"params": {"lam": [[[0.1]]]}}, "malformed: parameter 'lam'"),
        ({"params": {"lam": {"__class__": "x"}}}, "malformed: parameter 'lam'"),
        ({"attributes": {"__class__": 1}}, "malformed"),
        ({"attributes": {"lam_": {"labels": [[1, 2]]}}}, "malformed: attribute 'lam_'"),
        ({"arrays": ["coef_", "lams_"]}, "model.json lists"),
        ({"arrays": "coef_"}, "malformed: arrays"),
        ({"arrays_sha256": None}, "malformed: arrays_sha256"),
        ({"metadata": []}, "malformed: metadata"),
    ],
)
def test_tampered_model_json_is_refused(saved_dir, changes, message):
    _edit_json(saved_dir, **changes)
    with pytest.raises(ModelFileError, match=message):
        load_model(saved_dir)


def test_npz_from_another_fit_is_refused(data, saved_dir, tmp_path):
    X, y = data
    other = save_model(tmp_path / "other", Lasso(0.5).fit(X, y))
    (saved_dir / MODEL_ARRAYS).write_bytes((other / MODEL_ARRAYS).read_bytes())
    with pytest.raises(ModelFileError, match="SHA-256 differ.*another fit"):
        load_model(saved_dir)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"coef_": np.zeros((1, 5))}, r"coef_ of shape \(1, 5\).*needs \(5,\)"),
        ({"coef_": np.zeros(4)}, r"coef_ of shape \(4,\)"),
        ({"coef_": np.arange(5)}, "no finite float coef_"),
        ({"coef_": np.array([0.0, np.nan, 0, 0, 0])}, "no finite float coef_"),
        ({"coef_": np.array([object()] * 5)}, "not plain numbers"),
        ({"coef_": np.zeros(5, dtype=[("a", "<f8")])}, "not plain numbers"),
    ],
)
def test_arrays_of_the_wrong_shape_or_dtype_are_refused(saved_dir, arrays, message):
    _replace_arrays(saved_dir, **arrays)
    with pytest.raises(ModelFileError, match=message):
        load_model(saved_dir)


def test_classifier_coefficients_must_match_the_classes(data, tmp_path):
    X, y = data
    directory = save_model(tmp_path / "m", LogisticRegressionCV(cv=3, n_lams=3).fit(X, y > 0))
    _replace_arrays(directory, coef_=np.zeros((3, 5)))
    with pytest.raises(ModelFileError, match=r"coef_ of shape \(3, 5\).*needs \(1, 5\)"):
        load_model(directory)


def test_missing_files_are_named(saved_dir, tmp_path_factory):
    with pytest.raises(ModelFileError, match="holds no model.json"):
        load_model(tmp_path_factory.mktemp("empty"))
    with pytest.raises(ModelFileError, match="model.npz holds no model.json"):
        load_model(saved_dir / MODEL_ARRAYS)
    (saved_dir / MODEL_ARRAYS).unlink()
    with pytest.raises(ModelFileError, match="model.npz is missing"):
        load_model(saved_dir / MODEL_JSON)
    (saved_dir / MODEL_JSON).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(saved_dir)


def test_existing_models_are_replaced_only_with_force(data, tmp_path):
    X, y = data
    directory = save_model(tmp_path / "m", Lasso(0.1).fit(X, y))
    before = (directory / MODEL_JSON).read_bytes()
    with pytest.raises(OutputExistsError, match="already holds .* output.*--force"):
        save_model(directory, Lasso(0.5).fit(X, y))
    assert (directory / MODEL_JSON).read_bytes() == before
    save_model(directory, Lasso(0.5).fit(X, y), force=True)
    assert load_model(directory).estimator.lam == 0.5


def test_a_directory_with_other_files_is_never_replaced(data, tmp_path):
    X, y = data
    (tmp_path / "keep.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="did not write.*keep.txt"):
            save_model(tmp_path, Lasso(0.1).fit(X, y), force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_output_that_is_a_file_is_refused(data, tmp_path):
    X, y = data
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        save_model(target, Lasso(0.1).fit(X, y), force=True)
    assert target.read_text() == "x"
