"""Tables as design matrices: standardisation, one-hot groups, original units, missing values, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normpen.tabular import OTHER_LEVEL, TableError, TabularEncoder, fit_encoder, read_table, training_data


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
    # z-scores: n-term sums of values <= ~3, ~n eps * 3 ~ 1e-14 (absolute and relative)
    np.testing.assert_allclose(X[:, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X[:, :2].std(axis=0), 1, rtol=1e-12)
    expected = (frame["size"] - frame["size"].mean()) / frame["size"].std(ddof=0)
    np.testing.assert_allclose(X[:, 0], expected, rtol=1e-13, atol=1e-13)
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
    # a few terms of size (|x - mean| / sd) |coef| <= ~40 each side: ~5 eps * 40 ~ 4e-14
    np.testing.assert_allclose(in_original_units, X @ coef.T + intercept, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(original[:, 2:], coef[:, 2:])


def test_encoder_survives_json_and_transforms_new_rows_identically(frame):
    encoder = fit_encoder(frame, "y")
    again = TabularEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert again == encoder
    new_rows = frame.drop(columns="y").iloc[::-1]
    np.testing.assert_array_equal(again.transform(new_rows), encoder.transform(new_rows))


def test_missing_values_are_refused_by_default_naming_the_column_and_the_options(frame):
    frame.loc[3, "size"] = np.nan
    with pytest.raises(TableError, match=r"'size' has 1 missing.*--missing impute.*--missing drop"):
        fit_encoder(frame, "y")


def test_drop_na_drops_the_incomplete_rows(frame):
    frame.loc[[3, 7], "size"] = np.nan
    frame.loc[5, "color"] = None
    encoder = fit_encoder(frame, "y", na="drop")
    X, y = training_data(frame, encoder, "regression")
    complete = frame.drop(index=[3, 5, 7])
    assert X.shape[0] == len(complete)
    np.testing.assert_array_equal(y, complete["y"].to_numpy())
    assert encoder.means[0] == pytest.approx(complete["size"].mean(), rel=1e-13)  # n-term sums: n eps


def test_impute_fills_the_training_mean_and_most_frequent_level(frame):
    frame.loc[3, "size"] = np.nan
    frame.loc[5, "color"] = None
    encoder = fit_encoder(frame, "y", na="impute")
    X = encoder.transform(frame)
    assert X.shape[0] == len(frame)
    assert X[3, 0] == 0.0  # the mean, standardised
    mode = frame["color"].value_counts().idxmax()
    assert encoder.feature_names[2 + int(np.argmax(X[5, 2:5]))] == f"color={mode}"


@pytest.mark.parametrize("na", ["error", "impute"])
def test_rows_with_a_missing_target_are_dropped_and_said_while_features_are_imputed(frame, na):
    frame.loc[2, "y"] = np.nan
    frame.loc[4, "size"] = np.nan if na == "impute" else frame.loc[4, "size"]
    encoder = fit_encoder(frame, "y", na=na)
    X, y = training_data(frame, encoder, "regression")
    assert X.shape[0] == y.shape[0] == len(frame) - 1
    actions = {(d.column, d.action) for d in encoder.decisions}
    assert ("(rows)", "dropped 1 of 30 rows") in actions
    assert (("size", "imputed 1 missing values (3%)") in actions) == (na == "impute")


def test_many_missing_values_are_a_warning_when_dropping_rows_and_imputing_a_column(frame):
    frame.loc[:9, "size"] = np.nan  # 10 of 30 rows: over MISSING_WARNING = 20%
    warned = {
        na: [d for d in fit_encoder(frame, "y", na=na).decisions if d.warn] for na in ("drop", "impute")
    }
    assert [(d.column, d.action) for d in warned["drop"]] == [("(rows)", "dropped 10 of 30 rows")]
    assert [(d.column, d.action) for d in warned["impute"]] == [("size", "imputed 10 missing values (33%)")]
    frame.loc[:9, "size"] = 1.0
    frame.loc[0, "size"] = np.nan  # 1 of 30: no warning
    assert not any(d.warn for d in fit_encoder(frame, "y", na="impute").decisions)


def test_constant_and_empty_columns_are_left_out_with_a_note(frame):
    encoder = fit_encoder(frame.assign(const=4.0, kind="same", empty=np.nan), "y")
    assert (
        "const" not in encoder.numeric
        and "kind" not in encoder.categorical
        and "empty" not in encoder.numeric
    )
    reasons = {d.column: d.reason for d in encoder.decisions}
    assert reasons["const"].startswith("constant") and reasons["kind"].startswith("constant")
    assert reasons["empty"].startswith("empty")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f[["y"]], "no feature column"),
        (lambda f: f[["y"]].assign(a=1.0, b="x"), "every feature column of the table is constant"),
        (lambda f: f.iloc[:1], "1 row"),
    ],
)
def test_unusable_tables_are_refused_once_naming_the_problem(frame, change, message):
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
    from_csv, from_parquet = read_table(tmp_path / "t.csv").frame, read_table(tmp_path / "t.parquet").frame
    encoder = fit_encoder(from_csv, "y")
    # CSV writes each float64 with round-trip digits: the same numbers, the same z-scores up to an ulp or two
    np.testing.assert_allclose(encoder.transform(from_parquet), encoder.transform(from_csv), rtol=1e-14)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("header.csv", "a,b,y\n", "no data rows"),
        ("table.json", "a\n1\n", "unknown file type"),
        ("table.xlsx", "a\n1\n", "openpyxl"),
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


def _numbers_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return read_table(path)


@pytest.mark.parametrize(
    ("name", "text", "sep", "decimal", "thousands"),
    [
        ("us.csv", 'a,b,y\n"3,078.5",x,1\n"12.25",z,2\n"1,000,000",x,3\n', ",", ".", ","),
        ("eu.csv", "a;b;y\n3.078,5;x;1\n12,25;z;2\n1.000.000;x;3\n", ";", ",", "."),
        ("eu.tsv", "a\tb\ty\n3.078,5\tx\t1\n12,25\tz\t2\n1.000.000\tx\t3\n", "\t", ",", "."),
        ("plain.txt", "a|b|y\n3078.5|x|1\n12.25|z|2\n1000000|x|3\n", "|", ".", None),
    ],
)
def test_separators_and_number_formats_are_detected_and_said(tmp_path, name, text, sep, decimal, thousands):
    read = _numbers_file(tmp_path, name, text)
    assert list(read.frame.columns) == ["a", "b", "y"]
    np.testing.assert_array_equal(read.frame["a"].to_numpy(), [3078.5, 12.25, 1e6])
    assert read.options == {"sep": sep, "decimal": decimal, "thousands": thousands}
    said = " ".join(d.action for d in read.decisions)
    assert (f"thousands {thousands!r}" in said) == (thousands is not None)


def test_explicit_number_format_wins_over_detection(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a;y\n1,234;1\n2,5;2\n")
    read = read_table(path, sep=";", decimal=",", thousands=None)
    np.testing.assert_array_equal(read.frame["a"].to_numpy(), [1.234, 2.5])
    assert read.decisions == ()


def test_ambiguous_numbers_follow_the_separator(tmp_path):
    # "1,234" is 1234 (comma thousands) or 1.234 (decimal comma): ';' files use decimal commas
    assert _numbers_file(tmp_path, "c.csv", 'a,y\n"1,234",1\n"5,678",2\n').frame["a"].tolist() == [1234, 5678]
    assert _numbers_file(tmp_path, "s.csv", "a;y\n1,234;1\n5,678;2\n").frame["a"].tolist() == [1.234, 5.678]


@pytest.mark.parametrize("compression", ["gzip", "bz2", "xz", "zip"])
def test_compressed_text_reads_as_the_plain_file(frame, tmp_path, compression):
    suffix = {"gzip": "gz"}.get(compression, compression)
    frame.to_csv(tmp_path / "t.csv", sep=";", index=False)
    frame.to_csv(tmp_path / f"t.csv.{suffix}", sep=";", index=False, compression=compression)
    plain, packed = read_table(tmp_path / "t.csv"), read_table(tmp_path / f"t.csv.{suffix}")
    pd.testing.assert_frame_equal(packed.frame, plain.frame)
    assert packed.options["sep"] == ";"


def test_identifiers_are_left_out_and_dates_become_days(frame):
    n = len(frame)
    frame = frame.assign(
        name=[f"person {i}" for i in range(n)],
        index=np.arange(n),
        day=pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
    )
    encoder = fit_encoder(frame, "y")
    assert "name" not in encoder.feature_names and "index" not in encoder.feature_names
    assert encoder.dates == ("day",) and "day" in encoder.numeric
    X, _ = training_data(frame, encoder, "regression")
    j = encoder.numeric.index("day")
    # consecutive days standardised: the centred day count over the scale, exact up to float64 rounding
    # values <= n / 2 rounded twice (divide, multiply): ~2 eps * n / 2
    np.testing.assert_allclose(X[:, j] * encoder.scales[j], np.arange(n) - (n - 1) / 2, atol=1e-12)
    reasons = {d.column: d.reason for d in encoder.decisions}
    assert reasons["name"].startswith("identifier") and reasons["index"].startswith("identifier")
    later = frame.assign(day="2021-06-30")  # a date never seen in training still has a number
    assert np.isfinite(encoder.transform(later)).all()


def test_many_levels_are_grouped_and_unseen_levels_join_the_group(frame):
    rng = np.random.default_rng(1)
    frame = pd.concat([frame] * 10, ignore_index=True)
    frame["shop"] = [f"shop {k}" for k in rng.integers(0, 80, len(frame))]
    encoder = fit_encoder(frame, "y", max_levels=20)
    shop = encoder.levels[encoder.categorical.index("shop")]
    assert len(shop) == 20 and OTHER_LEVEL in shop
    assert any(d.column == "shop" and "grouped" in d.action for d in encoder.decisions)
    X = encoder.transform(frame.assign(shop="a new shop"))
    other = encoder.feature_names.index(f"shop={OTHER_LEVEL}")
    assert (X[:, other] == 1).all()


def test_sparse_design_equals_the_dense_one(frame):
    encoder = fit_encoder(frame, "y")
    dense, sparse = encoder.transform(frame), encoder.transform(frame, sparse=True)
    np.testing.assert_array_equal(sparse.toarray(), dense)


def test_infinite_values_are_refused_and_huge_ones_standardised(frame):
    with pytest.raises(TableError, match="'size' holds 1 infinite"):
        fit_encoder(frame.assign(size=frame["size"].where(frame.index != 2, np.inf)), "y")
    huge = frame.assign(size=frame["size"] * 1e306)  # values near the float64 limit of 1.8e308
    encoder = fit_encoder(huge, "y")
    X, _ = training_data(huge, encoder, "regression")
    assert np.isfinite(X).all()
    # the same z-scores as the unscaled column: scaling by 1e306 rounds each value once (1e-16 relative)
    np.testing.assert_allclose(X[:, 0], fit_encoder(frame, "y").transform(frame)[:, 0], rtol=1e-12)
    with pytest.raises(TableError, match="infinite"):
        training_data(frame.assign(y=np.inf), encoder, "regression")


def test_ambiguous_thousands_follow_the_decimal_points_of_the_other_columns(tmp_path):
    # ';' alone would suggest decimal commas, but 14.23 shows decimal points: 1,065 is one thousand and 65
    read = _numbers_file(tmp_path, "wine.csv", 'a;p;y\n14.23;1,065;1\n13.2;"1,050";2\n')
    assert read.frame["p"].tolist() == [1065, 1050] and read.frame["a"].tolist() == [14.23, 13.2]


def test_a_file_that_writes_numbers_both_ways_is_refused(tmp_path):
    with pytest.raises(TableError, match="both like.*--decimal and --thousands"):
        _numbers_file(tmp_path, "mixed.csv", "a;p;y\n14.23;3.078,5;1\n13.2;12,5;2\n")


def test_a_file_read_as_one_column_points_to_sep(tmp_path):
    read = _numbers_file(tmp_path, "colon.csv", "a:b:y\n1:2:3\n4:5:6\n")  # ':' is no candidate separator
    assert list(read.frame.columns) == ["a:b:y"]
    with pytest.raises(TableError, match="read as one column.*--sep"):
        fit_encoder(read.frame, "y")


def test_a_few_non_numeric_marks_in_a_numeric_column_are_read_as_missing(tmp_path):
    rows = "\n".join(
        f"{v};{'?' if v % 10 == 3 else v * 1.5};{'-' if v == 7 else 'red'};{v}" for v in range(20)
    )
    read = _numbers_file(tmp_path, "marks.csv", "a;b;c;y\n" + rows + "\n")
    assert read.frame["b"].isna().sum() == 2 and read.frame["b"].dtype.kind == "f"
    assert read.frame["c"].tolist().count("-") == 1  # a text column keeps its '-' level
    assert [(d.column, d.action) for d in read.decisions[1:]] == [("b", "read '?' as missing")]


def test_levels_are_also_bounded_by_a_tenth_of_the_rows():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"shop": [f"s{k}" for k in rng.integers(0, 30, 100)], "y": rng.normal(size=100)})
    encoder = fit_encoder(frame, "y")  # max_levels 50, but 10% of 100 rows is 10 levels
    assert len(encoder.levels[0]) == 10 and OTHER_LEVEL in encoder.levels[0]
    assert encoder.decisions[0].reason.endswith("more than 10% of the 100 rows")
