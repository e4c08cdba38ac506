"""Tables as design matrices: standardisation, one-hot groups, original units, missing values, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normpen.tabular import TableError, TabularEncoder, fit_encoder, read_table, training_data


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = 30
    return pd.DataFrame(
        {
            "size": rng.normal(50.0, 10.0, n),
            "age": rng.integers(1, 90, n),
            "color": rng.choice(["red", "green", "blue"], n),
            "flag": rng.choice([True, False], n),
            "y": rng.normal(size=n),
        }
    )


def test_numeric_columns_are_standardised_and_categories_one_hot(frame):
    encoder = fit_encoder(frame, "y")
    X, y = training_data(frame, encoder, "regression")
    assert encoder.numeric == ("size", "age")
    assert encoder.categorical == ("color", "flag")
    np.testing.assert_allclose(X[:, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X[:, :2].std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(X[:, 0], (frame["size"] - frame["size"].mean()) / frame["size"].std(ddof=0))
    assert encoder.feature_names[2:] == ["color=blue", "color=green", "color=red", "flag=False", "flag=True"]
    np.testing.assert_array_equal(X[:, 4], (frame["color"] == "red").to_numpy())
    np.testing.assert_array_equal(y, frame["y"].to_numpy())


def test_each_categorical_variable_is_one_group(frame):
    encoder = fit_encoder(frame, "y")
    X = encoder.transform(frame)
    groups = encoder.groups
    assert [g.tolist() for g in groups] == [[0], [1], [2, 3, 4], [5, 6]]
    for group in groups[2:]:
        np.testing.assert_array_equal(X[:, group].sum(axis=1), 1.0)


def test_categorical_option_turns_codes_into_levels(frame):
    frame = frame.assign(code=np.arange(len(frame)) % 3 + 1)
    encoder = fit_encoder(frame, "y", categorical=["code"])
    assert "code" in encoder.categorical
    assert encoder.levels[encoder.categorical.index("code")] == ("1", "2", "3")
    # a float column (as a file with missing values makes it) matches the same integer codes
    as_float = frame.assign(code=frame["code"].astype(float))
    np.testing.assert_array_equal(encoder.transform(as_float), encoder.transform(frame))


@given(st.integers(0, 2**32 - 1))
def test_original_units_give_the_same_linear_function(seed):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {"a": rng.normal(3.0, 7.0, 12), "b": rng.exponential(100.0, 12), "c": rng.choice(["u", "v"], 12)}
    ).assign(y=0.0)
    encoder = fit_encoder(table, "y")
    X = encoder.transform(table)
    coef, intercept = rng.normal(size=(3, X.shape[1])), rng.normal(size=3)
    original, original_intercept = encoder.original_units(coef, intercept)
    raw = np.column_stack([table["a"], table["b"], X[:, 2:]])
    in_original_units = raw @ original.T + original_intercept
    np.testing.assert_allclose(in_original_units, X @ coef.T + intercept, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(original[:, 2:], coef[:, 2:])


def test_encoder_survives_json_and_transforms_new_rows_identically(frame):
    encoder = fit_encoder(frame, "y")
    again = TabularEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert again == encoder
    new_rows = frame.drop(columns="y").iloc[::-1]
    np.testing.assert_array_equal(again.transform(new_rows), encoder.transform(new_rows))


def test_missing_values_are_refused_by_default_naming_the_column_and_the_options(frame):
    frame.loc[3, "size"] = np.nan
    with pytest.raises(TableError, match=r"'size' has 1 missing.*--drop-na.*--impute"):
        fit_encoder(frame, "y")


def test_drop_na_drops_the_incomplete_rows(frame):
    frame.loc[[3, 7], "size"] = np.nan
    frame.loc[5, "color"] = None
    encoder = fit_encoder(frame, "y", na="drop")
    X, y = training_data(frame, encoder, "regression")
    complete = frame.drop(index=[3, 5, 7])
    assert X.shape[0] == len(complete)
    np.testing.assert_array_equal(y, complete["y"].to_numpy())
    assert encoder.means[0] == pytest.approx(complete["size"].mean())


def test_impute_fills_the_training_mean_and_most_frequent_level(frame):
    frame.loc[3, "size"] = np.nan
    frame.loc[5, "color"] = None
    encoder = fit_encoder(frame, "y", na="impute")
    X = encoder.transform(frame)
    assert X.shape[0] == len(frame)
    assert X[3, 0] == 0.0  # the mean, standardised
    mode = frame["color"].value_counts().idxmax()
    assert encoder.feature_names[2 + int(np.argmax(X[5, 2:5]))] == f"color={mode}"


def test_missing_target_needs_drop_na(frame):
    frame.loc[2, "y"] = np.nan
    with pytest.raises(TableError, match="target column 'y' has 1 missing.*--drop-na"):
        fit_encoder(frame, "y", na="impute")
    encoder = fit_encoder(frame, "y", na="drop")
    X, y = training_data(frame, encoder, "regression")
    assert X.shape[0] == y.shape[0] == len(frame) - 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(const=4.0), r"'const' is constant.*--exclude const"),
        (lambda f: f.assign(kind="same"), r"'kind' is constant"),
        (lambda f: f[["y"]], "no feature column"),
    ],
)
def test_unusable_columns_are_named(frame, change, message):
    with pytest.raises(TableError, match=message):
        fit_encoder(change(frame), "y")


def test_excluded_constant_column_is_accepted(frame):
    encoder = fit_encoder(frame.assign(const=4.0), "y", exclude=["const"])
    assert "const" not in encoder.feature_names


def test_missing_target_and_unknown_columns_are_named(frame):
    with pytest.raises(TableError, match=r"target column 'price' is not in the file.*--target"):
        fit_encoder(frame, "price")
    with pytest.raises(TableError, match="--exclude column 'nope'"):
        fit_encoder(frame, "y", exclude=["nope"])


def test_text_target_is_refused_for_regression_and_kept_for_classification(frame):
    frame["label"] = np.where(frame["y"] > 0, "up", "down")
    encoder = fit_encoder(frame, "label", exclude=["y"])
    with pytest.raises(TableError, match="not numeric.*logistic-l1"):
        training_data(frame, encoder, "regression")
    _, labels = training_data(frame, encoder, "classification")
    assert set(labels) == {"up", "down"}


def test_transform_refuses_unseen_levels_and_absent_columns(frame):
    encoder = fit_encoder(frame, "y")
    with pytest.raises(TableError, match="'color' holds level 'purple', not seen in training"):
        encoder.transform(frame.assign(color="purple"))
    with pytest.raises(TableError, match=r"\['age'\] are missing"):
        encoder.transform(frame.drop(columns="age"))
    with pytest.raises(TableError, match="'size' is numeric in training but holds 'big'"):
        encoder.transform(frame.assign(size="big"))


def test_read_table_csv_and_parquet_agree(frame, tmp_path):
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    from_csv, from_parquet = read_table(tmp_path / "t.csv"), read_table(tmp_path / "t.parquet")
    encoder = fit_encoder(from_csv, "y")
    np.testing.assert_allclose(encoder.transform(from_parquet), encoder.transform(from_csv), rtol=1e-14)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("header.csv", "a,b,y\n", "no data rows"),
        ("table.xlsx", "a\n1\n", "unknown file type"),
    ],
)
def test_read_table_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(TableError, match=message):
        read_table(tmp_path / name)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(TableError, match="no such file"):
        read_table(tmp_path / "absent.csv")


def test_from_dict_rejects_what_is_not_an_encoder():
    with pytest.raises(TableError, match="not a normpen table encoder"):
        TabularEncoder.from_dict({"target": "y"})
    bad = fit_encoder(pd.DataFrame({"a": [1.0, 2.0], "y": [0.0, 1.0]}), "y").to_dict() | {"scales": [0.0]}
    with pytest.raises(TableError, match="scale"):
        TabularEncoder.from_dict(bad)
