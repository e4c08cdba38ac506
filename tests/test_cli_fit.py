"""``normpen fit`` and ``normpen predict`` driven as a user drives them, checked against the library API.

Tolerances: JSON keeps float64 exactly, so the command and the library differ only by the design's
rounding (the command standardises through its encoder: a few ulp). Strength grids and selections: 1e-12
(lambda_max is a 442-term sum, 442 eps ~ 1e-13; measured <= 4.4e-16). CV errors and coefficients: 1e-9 and
1e-7, measured 2.2e-16 and 1.7e-13 (CD, deterministic, maps a few-ulp change of the design to ~cond ulp while
it stops on the same epoch).
Printed values: 8 significant digits, a relative rounding of at most 5e-8.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from typer.testing import CliRunner

from normpen._files import MANIFEST
from normpen.cli import EXIT_BAD_INPUT, EXIT_FIT_FAILED, FIT_FILES, app
from normpen.datasets import load
from normpen.linear import ElasticNetCV, GroupLassoCV, LassoCV, LogisticRegressionCV, SparseGroupLassoCV
from normpen.model_io import load_model
from normpen.tabular import TabularEncoder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runner():
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def table():
    rng = np.random.default_rng(3)
    n = 60
    frame = pd.DataFrame(
        {
            "x1": rng.normal(5.0, 2.0, n),
            "x2": rng.normal(0.0, 10.0, n),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["y"] = 2 * frame.x1 - 0.1 * frame.x2 + np.where(frame.color == "red", 3.0, 0.0) + rng.normal(size=n)
    frame["label"] = np.where(frame.y > frame.y.median(), "high", "low")
    return frame


@pytest.fixture
def table_csv(table, tmp_path):
    path = tmp_path / "data.csv"
    table.to_csv(path, index=False)
    return path


def _fit(runner, *args):
    result = runner.invoke(app, ["fit", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _standardised(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _design(table):
    """The design matrix the command builds, written out by hand: z-scores, then one-hot colours (sorted)."""
    colours = np.column_stack([(table.color == c).to_numpy(float) for c in ("blue", "green", "red")])
    return np.column_stack([_standardised(table[["x1", "x2"]].to_numpy()), colours])


def test_fit_without_data_uses_diabetes_and_matches_lasso_cv(runner, tmp_path):
    summary = _fit(runner, "--out", tmp_path / "out", "--n-lams", 20)
    diabetes = load("diabetes")
    expected = LassoCV(cv=KFold(5, shuffle=True, random_state=0), n_lams=20).fit(
        _standardised(diabetes.X), diabetes.y
    )
    assert summary["n_samples"] == 442
    assert summary["lam_min"] == pytest.approx(expected.lam_min_, rel=1e-12)
    assert summary["lam_1se"] == pytest.approx(expected.lam_1se_, rel=1e-12)
    assert summary["cv_error_min"] == pytest.approx(expected.cv_mean_.min(), rel=1e-9)
    in_original_units = expected.coef_ / diabetes.X.std(axis=0)
    got = [summary["coefficients"][name][0] for name in diabetes.feature_names]
    np.testing.assert_allclose(got, in_original_units, rtol=1e-7, atol=1e-9)
    assert summary["coefficients"]["(intercept)"][0] == pytest.approx(
        expected.intercept_ - in_original_units @ diabetes.X.mean(axis=0), rel=1e-9
    )
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIT_FILES, MANIFEST])
    for figure in ("path.png", "cv.png"):
        assert (out / figure).read_bytes().startswith(PNG_SIGNATURE)


def test_fit_prints_the_lambdas_and_the_selected_coefficients(runner, tmp_path):
    result = runner.invoke(app, ["fit", "--out", str(tmp_path / "o"), "--n-lams", "10"])
    assert result.exit_code == 0, result.output
    for text in ("λ_min", "λ_1se", "CV error", "selected coefficients", "bmi", "(intercept)", "exactly zero"):
        assert text in result.output


@pytest.mark.parametrize(
    ("penalty", "expected"),
    [
        ("group", lambda groups, folds: GroupLassoCV(groups=groups, cv=folds, n_lams=10)),
        ("sgl", lambda groups, folds: SparseGroupLassoCV(groups=groups, l1_ratio=0.5, cv=folds, n_lams=10)),
    ],
)
def test_group_penalties_make_each_categorical_variable_a_group(
    runner, table, table_csv, tmp_path, penalty, expected
):
    out = tmp_path / penalty
    summary = _fit(
        runner,
        table_csv,
        "--target",
        "y",
        "--exclude",
        "label",
        "--penalty",
        penalty,
        "--n-lams",
        10,
        "--out",
        out,
    )
    groups = [np.array([0]), np.array([1]), np.array([2, 3, 4])]
    expected = expected(groups, KFold(5, shuffle=True, random_state=0))
    expected.fit(_design(table), table.y.to_numpy())
    assert summary["lam_min"] == pytest.approx(expected.lam_min_, rel=1e-12)
    saved = load_model(out).estimator
    assert [list(g) for g in saved.groups] == [[0], [1], [2, 3, 4]]
    np.testing.assert_allclose(saved.coef_, expected.coef_, rtol=1e-9, atol=1e-12)
    with open(out / "coefficients.csv") as file:
        rows = {row["feature"]: row for row in csv.DictReader(file)}
    assert float(rows["color=red"]["coefficient"]) == pytest.approx(expected.coef_[4], rel=1e-12)
    assert float(rows["x1"]["coefficient"]) == pytest.approx(
        expected.coef_[0] / table.x1.std(ddof=0), rel=1e-12
    )


@pytest.mark.parametrize("spelling", ["enet", "elasticnet"])  # the model's name and its penalty's (an alias)
def test_elastic_net_passes_l1_ratio(runner, table, table_csv, tmp_path, spelling):
    summary = _fit(
        runner,
        table_csv,
        "-t",
        "y",
        "--exclude",
        "label",
        "--exclude",
        "color",
        "--penalty",
        spelling,
        "--l1-ratio",
        0.3,
        "--n-lams",
        10,
        "--select",
        "1se",
        "--out",
        tmp_path / "e",
    )
    expected = ElasticNetCV(
        l1_ratio=0.3, cv=KFold(5, shuffle=True, random_state=0), n_lams=10, selection="1se"
    )
    expected.fit(_standardised(table[["x1", "x2"]].to_numpy()), table.y.to_numpy())
    assert summary["lam"] == summary["lam_1se"] == pytest.approx(expected.lam_1se_, rel=1e-12)
    np.testing.assert_allclose(load_model(tmp_path / "e").estimator.coef_, expected.coef_, rtol=1e-9)
    assert summary["penalty"] == "enet"


def test_predict_reproduces_the_library_and_scores_when_the_target_is_there(
    runner, table, table_csv, tmp_path
):
    out = tmp_path / "model"
    _fit(runner, table_csv, "--target", "y", "--exclude", "label", "--n-lams", 10, "--out", out)
    estimator = load_model(out).estimator
    result = runner.invoke(app, ["predict", str(out), str(table_csv), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    expected = estimator.predict(_design(table))
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-12)
    assert answer["score"]["value"] == pytest.approx(r2_score(table.y, expected), rel=1e-12)
    written = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(out), str(table_csv), "--out", str(written)])
    assert result.exit_code == 0, result.output
    # predict writes PREDICTION_DIGITS = 8 significant digits: a relative rounding error of at most 5e-8
    np.testing.assert_allclose(pd.read_csv(written)["prediction"], expected, rtol=5e-8)
    result = runner.invoke(app, ["predict", str(out), str(table_csv), "--out", str(written)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--force" in result.output


def test_logistic_fit_and_predict_with_text_labels(runner, table, tmp_path):
    path = tmp_path / "data.parquet"
    table.to_parquet(path)
    out = tmp_path / "logit"
    summary = _fit(
        runner,
        path,
        "--target",
        "label",
        "--exclude",
        "y",
        "--penalty",
        "logistic-l1",
        "--n-lams",
        8,
        "--out",
        out,
    )
    # the command's own design (its encoder, rebuilt from the summary), equal to the hand-written one up to
    # the standardisation's rounding: a z-score of |x| <= 4 is a few operations, 8 eps |x| at most. The
    # estimator is fitted on the command's design itself: a path stopped at tol 1e-4 may move by up to its
    # certified gap when the design moves by an ulp (a face step kept or refused on rounding), so only the
    # same bits give the same fit to the printed digits.
    design = TabularEncoder.from_dict(summary["encoder"]).transform(table, order="F")
    np.testing.assert_allclose(design, _design(table), rtol=0, atol=8 * np.finfo(float).eps * 4)
    expected = LogisticRegressionCV(
        penalty="l1", cv=StratifiedKFold(5, shuffle=True, random_state=0), n_lams=8
    )
    expected.fit(design, table.label.to_numpy())
    assert summary["classes"] == ["high", "low"]
    assert summary["lam_min"] == pytest.approx(expected.lam_min_, rel=1e-12)
    new_rows = table.drop(columns=["y", "label"]).iloc[:7]
    new_rows.to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "new.csv")])
    assert result.exit_code == 0, result.output
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert list(printed.columns) == ["row", "prediction", "p(high)", "p(low)"]
    np.testing.assert_array_equal(printed.prediction, expected.predict(design[:7]))
    # 8 significant digits printed: a relative rounding error of at most 5e-8
    np.testing.assert_allclose(printed[["p(high)", "p(low)"]], expected.predict_proba(design[:7]), rtol=5e-8)


def test_svm_fit_reports_misclassification(runner, table_csv, tmp_path, table):
    out = tmp_path / "svm"
    summary = _fit(
        runner,
        table_csv,
        "--target",
        "label",
        "--exclude",
        "y",
        "--penalty",
        "svm",
        "--n-lams",
        5,
        "--out",
        out,
    )
    assert summary["cv_error"] == "misclassification rate"
    result = runner.invoke(app, ["predict", str(out), str(table_csv), "--json"])
    answer = json.loads(result.stdout)
    # the same predictions counted twice: a fraction k / n, equal up to an ulp
    counted = accuracy_score(table.label, answer["predictions"])
    assert answer["score"]["value"] == pytest.approx(counted, rel=1e-15)
    assert answer["score"]["value"] > 0.8  # empirical, fixed seed: the label is y > median with noise sd 1


def test_existing_files_need_force(runner, tmp_path):
    out = tmp_path / "o"
    _fit(runner, "--out", out, "--penalty", "ridge", "--n-lams", 10)
    before = (out / "model.json").read_bytes()
    result = runner.invoke(app, ["fit", "--out", str(out), "--penalty", "lasso", "--n-lams", "10"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "already holds" in result.output and "--force" in result.output
    assert (out / "model.json").read_bytes() == before
    _fit(runner, "--out", out, "--penalty", "lasso", "--n-lams", 10, "--force")
    assert load_model(out).estimator.__class__.__name__ == "LassoCV"


def _with_nan(frame):
    frame.loc[4, "x2"] = np.nan
    return frame


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (None, ["--target", "price"], "target column 'price' is not in the file"),
        (None, [], "--target"),
        (None, ["--target", "label"], "not numeric.*logistic-l1"),
        (
            _with_nan,
            ["--target", "y", "--exclude", "label"],
            "'x2' has 1 missing.*--missing impute.*--missing drop",
        ),
        (None, ["--target", "y", "--penalty", "lars"], "not one of 'ridge', 'lasso'"),
        (None, ["--target", "y", "--lambdas", "1:0.1:5"], "--lambdas.*need 0 < a < b"),
        (None, ["--target", "y", "--lambdas", "0.1:1:5", "--n-lams", "5"], "either --lambdas or --n-lams"),
        (None, ["--target", "y", "--seed", "-1"], "--seed"),
        (None, ["--target", "y", "--penalty", "logistic-l2"], "non-integer numbers.*--penalty lasso"),
        (lambda f: f.assign(y=f.y.where(f.index != 3, np.inf)), ["--target", "y"], "infinite"),
        (
            lambda f: f.assign(code=np.arange(60)),
            ["--target", "code", "--penalty", "logistic-l1"],
            "60 classes",
        ),
        (None, ["--target", "y", "--exclude", "label", "--cv", "99"], "60 rows are too few for --cv 99"),
        (
            lambda f: f.assign(label="one"),
            ["--target", "label", "--exclude", "y", "--penalty", "svm"],
            "single class",
        ),
    ],
)
def test_bad_input_exits_2_naming_problem_and_fix(runner, table, tmp_path, change, args, message):
    frame = table if change is None else change(table)
    frame.to_csv(tmp_path / "bad.csv", index=False)
    result = runner.invoke(app, ["fit", str(tmp_path / "bad.csv"), *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert re.search(message, " ".join(result.output.split()))
    assert not (tmp_path / "o").exists()


def test_empty_file_is_bad_input(runner, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    result = runner.invoke(app, ["fit", str(tmp_path / "empty.csv"), "--target", "y"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "is empty" in result.output


@pytest.mark.parametrize(("policy", "rows"), [("drop", 58), ("impute", 60)])
def test_missing_values_can_be_dropped_or_imputed(runner, table, tmp_path, policy, rows):
    table.loc[[4, 9], "x2"] = np.nan
    table.to_csv(tmp_path / "na.csv", index=False)
    summary = _fit(
        runner,
        tmp_path / "na.csv",
        "--target",
        "y",
        "--exclude",
        "label",
        "--missing",
        policy,
        "--n-lams",
        5,
        "--out",
        tmp_path / "o",
    )
    assert summary["n_samples"] == rows
    assert summary["encoder"]["na"] == policy


def test_a_failing_solver_exits_3(runner, monkeypatch, tmp_path):
    def diverge(self, X, y, sample_weight=None, on_fold=None):
        raise FloatingPointError("overflow in the solver")

    monkeypatch.setattr(LassoCV, "fit", diverge)
    result = runner.invoke(app, ["fit", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_FIT_FAILED
    assert "the fit failed: overflow in the solver" in result.output
    assert not (tmp_path / "o").exists()


def test_predict_bad_input_exits_2(runner, table, table_csv, tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "nowhere"), str(table_csv)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "holds no model.json" in result.output
    out = tmp_path / "model"
    _fit(runner, table_csv, "--target", "y", "--exclude", "label", "--n-lams", 5, "--out", out)
    table.assign(color="purple").to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "new.csv")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "'color' holds level 'purple', not seen in training" in " ".join(result.output.split())


def test_column_names_are_printed_verbatim(runner, table, tmp_path):
    table.rename(columns={"x1": "[red]x:b:1"}).to_csv(tmp_path / "odd.csv", index=False)
    result = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "odd.csv"),
            "-t",
            "y",
            "--exclude",
            "label",
            "--n-lams",
            "5",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[red]x:b:1" in result.output


# ---- issue 14: real, messy tables ----------------------------------------------------------------------


def _messy(table):
    """The fixture table as people export it: comma thousands, an id, a date, many shops, a missing target."""
    n = len(table)
    frame = table.drop(columns="label").assign(
        customer=[f"C-{1000 + i}" for i in range(n)],
        day=pd.date_range("2021-03-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        shop=[f"shop {i % 45}" for i in range(n)],
    )
    frame["x2"] = [f"{1000 * v:,.1f}" for v in frame["x2"]]  # "-3,141.6"
    frame.loc[[5, 17], "y"] = np.nan
    return frame


def test_a_messy_table_is_read_as_a_person_would_and_every_decision_is_said(runner, table, tmp_path):
    path = tmp_path / "messy.csv"
    _messy(table).to_csv(path, index=False)
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["fit", str(path), "-t", "y", "--max-levels", "10", "--n-lams", "5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "what I did with your data" in printed and "dropped 2 of 60 rows" in printed
    summary = json.loads((out / "fit.json").read_text())
    said = {d["column"]: d["action"] for d in summary["data"]}
    assert said["customer"] == "left out" and said["day"].startswith("date")
    assert said["shop"].startswith(
        "kept its 4 most frequent levels"
    )  # 10% of 58 rows: 5 levels, one '(other)'

    assert summary["read"] == {"sep": ",", "decimal": ".", "thousands": ","}
    encoder = summary["encoder"]
    assert encoder["numeric"][:3] == ["x1", "x2", "day"] and encoder["categorical"] == ["color", "shop"]
    # x2 read as numbers: its mean is 1000 times the fixture's (rounded to 0.1 when written: 0.05 at most)
    assert encoder["means"][1] == pytest.approx(1000 * table.x2.drop(index=[5, 17]).mean(), abs=0.05)
    new = _messy(table).iloc[:3].assign(day="2030-01-01", shop="a shop never seen")
    new.to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "new.csv")])
    assert result.exit_code == 0, result.output


def test_a_semicolon_file_with_decimal_commas_fits_like_the_plain_one(runner, table, tmp_path):
    table.to_csv(tmp_path / "plain.csv", index=False)
    table.to_csv(tmp_path / "eu.csv.gz", sep=";", decimal=",", index=False)
    args = ["-t", "y", "--exclude", "label", "--n-lams", "5"]
    plain = _fit(runner, tmp_path / "plain.csv", *args, "-o", tmp_path / "a")
    european = _fit(runner, tmp_path / "eu.csv.gz", *args, "-o", tmp_path / "b")
    # the same numbers parsed from "1,5" instead of "1.5": the same fit to float64 rounding
    assert european["lam_min"] == pytest.approx(plain["lam_min"], rel=1e-12)
    assert european["read"]["sep"] == ";" and european["read"]["decimal"] == ","


def test_missing_target_rows_are_dropped_while_a_mostly_missing_feature_is_imputed_with_a_warning(
    runner, table, tmp_path
):
    table.loc[[1, 2], "y"] = np.nan
    table.loc[table.index[:57], "x2"] = np.nan  # 95% of the rows
    table.to_csv(tmp_path / "na.csv", index=False)
    result = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "na.csv"),
            "-t",
            "y",
            "--exclude",
            "label",
            "--penalty",
            "ridge",
            "--missing",
            "impute",
            "--n-lams",
            "5",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "fit.json").read_text())
    assert summary["n_samples"] == 58
    assert any(w.startswith("x2: imputed 55 missing values (95%)") for w in summary["warnings"])
    assert "warning: x2: imputed 55" in " ".join(result.output.split())


def test_a_lambda_at_the_end_of_the_grid_is_a_warning(runner, table_csv, tmp_path):
    # y depends strongly on x1: on a grid of large λ only, the smallest λ has the least CV error
    summary = _fit(
        runner, table_csv, "-t", "y", "--exclude", "label", "--lambdas", "1:3:3", "-o", tmp_path / "a"
    )
    assert summary["lams"] == pytest.approx([3.0, 3**0.5, 1.0], rel=1e-12)
    assert any("is the smallest λ of the grid" in w for w in summary["warnings"])
    wide = _fit(
        runner,
        table_csv,
        "-t",
        "y",
        "--exclude",
        "label",
        "--lam-min-ratio",
        "1e-4",
        "--n-lams",
        "20",
        "-o",
        tmp_path / "b",
    )
    assert not any("of the grid" in w for w in wide["warnings"])


def test_names_that_broke_the_outputs_are_escaped_and_extreme_values_survive(runner, table, tmp_path):
    table = table.rename(columns={"x1": "income_$_after_tax_$", "x2": '=HYPERLINK("http://x")'})
    table["\x1b]8;;http://evil\x07link"] = np.random.default_rng(0).normal(size=len(table))
    table.loc[3, "income_$_after_tax_$"] = 1e308
    table.to_csv(tmp_path / "odd.csv", index=False)
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "odd.csv"),
            "-t",
            "y",
            "--exclude",
            "label",
            "--penalty",
            "ridge",
            "--n-lams",
            "5",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b" in result.output
    names = [row[0] for row in csv.reader(io.StringIO((out / "coefficients.csv").read_text()))]
    assert '\'=HYPERLINK("http://x")' in names
    assert json.loads((out / "fit.json").read_text())["encoder"]["means"][0] > 1e300


def test_a_multiclass_fit_prints_within_80_columns_and_counts_zeros_over_the_classes(table, tmp_path):
    rng = np.random.default_rng(7)
    table["grade"] = rng.integers(1, 6, len(table)).astype(float)  # 5 classes, written 1.0 ... 5.0
    table.loc[0, "grade"] = np.nan
    table.to_csv(tmp_path / "g.csv", index=False)
    narrow = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"})
    out = tmp_path / "o"
    result = narrow.invoke(
        app,
        [
            "fit",
            str(tmp_path / "g.csv"),
            "-t",
            "grade",
            "--exclude",
            "y",
            "--exclude",
            "label",
            "--penalty",
            "logistic-l2",
            "--n-lams",
            "4",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    coef = load_model(out).estimator.coef_
    zeros = int((coef == 0).sum())
    assert f"{zeros} of 25 coefficients (5 features x 5 classes)" in " ".join(result.output.split())
    result = narrow.invoke(app, ["predict", str(out), str(tmp_path / "g.csv")])
    printed = pd.read_csv(io.StringIO(result.stdout), dtype=str)
    assert list(printed.columns[2:]) == [f"p({k})" for k in range(1, 6)]
    assert set(printed.prediction) <= {"1", "2", "3", "4", "5"}
    assert max(len(v.lstrip("-0.").replace(".", "").split("e")[0]) for v in printed["p(1)"]) <= 8


def test_fit_help_lists_choices_defaults_and_flags(runner):
    result = runner.invoke(app, ["fit", "--help"])
    assert result.exit_code == 0
    words = " ".join(result.output.split())
    assert "<ridge|lasso|enet|group|sgl|logistic-l1|logistic-l2|svm>" in words
    assert "MIN:MAX:N" in words and "[default: lasso]" in words and "--n-jobs" in words and "--quiet" in words
    assert "[default: 100; 30 for logistic, 20 for svm]" in words  # not eaten as markup
    assert not [line for line in result.output.splitlines() if "<bool>" in line and "--help" not in line]


def test_a_50000_row_mixed_table_fits_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    n = 50_000
    frame = pd.DataFrame({f"x{j}": rng.normal(size=n) for j in range(5)})
    frame["id"] = [f"row-{i}" for i in range(n)]
    frame["day"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="D")
    frame["city"] = rng.choice([f"city {k}" for k in range(5000)], n)  # 5,000 levels
    frame["kind"] = rng.choice(["a", "b", "c"], n)
    frame["amount"] = [f"{v:,.2f}" for v in rng.normal(5000, 2000, n)]
    frame["y"] = frame.x0 - 2 * frame.x1 + (frame.kind == "a") + rng.normal(size=n)
    frame.loc[rng.choice(n, 500, replace=False), "y"] = np.nan
    frame.to_csv(tmp_path / "big.csv", index=False)
    # the peak is the process's own VmHWM: Linux carries the parent's high-water mark across fork and exec
    # into ru_maxrss, so a child of a pytest process grown past 1 GB by earlier tests reported that
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak resident set size from /proc/self/status (Linux)")
    script = (
        "import re, sys\n"
        "from normpen.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as done:\n"
        "    code = done.code\n"
        "peak = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print(peak, code, file=sys.stderr)\n"
    )
    args = [
        "fit",
        str(tmp_path / "big.csv"),
        "-t",
        "y",
        "--cv",
        "2",
        "--n-lams",
        "3",
        "-q",
        "-o",
        str(tmp_path / "o"),
    ]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    peak_kib, code = done.stderr.split()[-2:]
    assert code in ("0", "None"), done.stderr
    # the 5,000-level city one-hot encoded densely would alone take 50,000 x 5,000 x 8 B = 2 GB; grouped to
    # 50 levels the design is 50,000 x ~60 x 8 B = 24 MB, next to the interpreter and its libraries (~400 MB)
    assert int(peak_kib) < 1_000_000, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"
    summary = json.loads((tmp_path / "o" / "fit.json").read_text())
    said = {d["column"]: d["action"] for d in summary["data"]}
    assert (
        said["id"] == "left out" and said["city"].startswith("kept its 49") and said["day"].startswith("date")
    )
    assert summary["n_samples"] == n - 500


def test_path_legend_names_the_largest_coefficients_of_every_class_and_groups_the_rest(table):
    from normpen.cli import TOP_CURVES, _path_figure

    rng = np.random.default_rng(2)
    X = _design(table)
    X = np.hstack([X, rng.normal(size=(len(X), 4))])
    y = rng.choice(["a", "b", "c"], len(X))
    y[X[:, 0] > 0.5] = "a"
    names = [f"f{j}" for j in range(X.shape[1])]
    estimator = LogisticRegressionCV(cv=StratifiedKFold(3), n_lams=4).fit(X, y)
    labels = [
        text.get_text() for text in _path_figure(estimator, X, y, names).axes[0].get_legend().get_texts()
    ]
    named = [label for label in labels if label.startswith("[")]
    path = estimator.fit_path(X, y)
    at_lam = path.coefs[int(np.argmin(np.abs(path.lams - estimator.lam_)))]  # (features, classes)
    largest = np.argsort(-np.abs(at_lam.ravel()))[:TOP_CURVES]
    # the path's warm-started solution and the refit each stop at the solver's tolerance (measured 1.1% of the
    # largest coefficient apart); laid out (classes, features) instead they would differ by O(100%)
    assert np.abs(at_lam - estimator.coef_.T).max() < 0.05 * np.abs(estimator.coef_).max()
    assert set(named) == {f"[{estimator.classes_[k % 3]}] {names[k // 3]}" for k in largest}
    assert labels[-3:] == ["other coefficients", "λ_min", "λ_1se"]


def test_quiet_prints_nothing_and_n_jobs_gives_the_same_fit(runner, table_csv, tmp_path):
    args = ["fit", str(table_csv), "-t", "y", "--exclude", "label", "--n-lams", "8"]
    quiet = runner.invoke(app, [*args, "--quiet", "--n-jobs", "2", "-o", str(tmp_path / "a")])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == ""
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "b")]).exit_code == 0
    parallel, serial = (json.loads((tmp_path / d / "fit.json").read_text()) for d in "ab")
    # the same folds and the same path per fold, only run in two processes: the same numbers exactly
    assert parallel["cv_error_min"] == serial["cv_error_min"] and parallel["lam_min"] == serial["lam_min"]


@pytest.mark.parametrize(("value", "message"), [(np.inf, "infinite"), (1e308, "overflow")])
def test_predict_refuses_infinite_and_overflowing_values_with_exit_2(
    runner, table, table_csv, tmp_path, value, message
):
    out = tmp_path / "model"
    _fit(runner, table_csv, "--target", "y", "--exclude", "label", "--n-lams", 5, "--out", out)
    table.loc[2, "x1"] = value
    table.to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "new.csv")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_progress_bar_advances_once_per_fold(runner, table_csv, tmp_path, monkeypatch):
    # the command hands the estimator an on_fold callback (None with --quiet); LassoCV calls it per fold
    seen = {}
    fit = LassoCV.fit

    def recording_fit(self, X, y, sample_weight=None, *, on_fold=None):
        seen["callback"], seen["calls"] = on_fold, []

        def record(done, total):
            seen["calls"].append((done, total))
            on_fold(done, total)

        return fit(self, X, y, sample_weight, on_fold=None if on_fold is None else record)

    monkeypatch.setattr(LassoCV, "fit", recording_fit)
    args = ["fit", str(table_csv), "-t", "y", "--exclude", "label", "--n-lams", "5", "--cv", "4"]
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "a")]).exit_code == 0
    assert seen["calls"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert runner.invoke(app, [*args, "--quiet", "-o", str(tmp_path / "b")]).exit_code == 0
    assert seen["callback"] is None
