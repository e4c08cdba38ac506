"""``normpen sweep`` driven as a user drives it; the training and the diagnosis checked against theory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from normpen.cli import EXIT_BAD_INPUT, EXIT_FIT_FAILED, app
from normpen.sweep import (
    SweepData,
    SweepResult,
    constant_loss,
    digits_data,
    parse_lambdas,
    train_sweep,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--epochs", "2", "--hidden", "8", "--lambdas", "1e-4:1:3"]


@pytest.fixture
def runner():
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def table_csv(tmp_path):
    rng = np.random.default_rng(5)
    n = 80
    frame = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(3.0, 5.0, n), "c": rng.choice(["p", "q"], n)}
    )
    frame["y"] = frame.a - 0.2 * frame.b + (frame.c == "p") + 0.1 * rng.normal(size=n)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _sweep(runner, *args):
    result = runner.invoke(app, ["sweep", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_default_sweep_on_digits_matches_the_library(runner, tmp_path):
    out = tmp_path / "sw"
    document = _sweep(runner, *TINY, "--out", out)
    assert document["task"] == "classification"
    assert document["n_train"] + document["n_val"] == 1797
    lams = parse_lambdas("1e-4:1:3")
    expected = train_sweep(digits_data(0.8, 0), lams, hidden=8, epochs=2)
    # the same float64 training in the same process, through JSON (exact): bit-equal up to an ulp of the grid
    np.testing.assert_allclose(document["lams"], lams, rtol=1e-15)
    np.testing.assert_allclose(document["val_curves"], expected.val_curves, rtol=1e-12)
    np.testing.assert_allclose(document["train_curves"], expected.train_curves, rtol=1e-12)
    assert document["best_lam"] == lams[int(np.argmin(expected.val))]
    assert document["diagnosis"] == expected.diagnosis()
    assert (out / "sweep.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((out / "sweep.json").read_text())["verdicts"] == document["verdicts"]


def test_sweep_prints_table_and_diagnosis(runner, tmp_path):
    result = runner.invoke(app, ["sweep", *TINY, "--out", str(tmp_path / "sw")])
    assert result.exit_code == 0, result.output
    for text in (
        "train loss",
        "validation loss",
        "λ*",
        "has the lowest validation cross-entropy",
        "underfits",
    ):
        assert text in result.output


@pytest.mark.parametrize("spelling", ["l1", "lasso"])  # the penalty's name and an alias of it
def test_sweep_on_a_csv_regression(runner, table_csv, tmp_path, spelling):
    document = _sweep(
        runner,
        table_csv,
        "--target",
        "y",
        "--model",
        "linear",
        "--penalty",
        spelling,
        "--mode",
        "proximal",
        "--epochs",
        10,
        "--batch-size",
        16,
        "--lr",
        0.05,
        "--lambdas",
        "1e-3:10:3",
        "--out",
        tmp_path / "o",
    )
    assert document["task"] == "regression" and document["penalty"] == "l1"
    assert document["n_train"] == 60 and document["n_val"] == 20
    # the target is standardised on the training rows: the constant prediction's loss is its variance, 1
    assert document["baseline"] == pytest.approx(1.0, rel=1e-12)
    # proximal L1 at λ = 10 zeroes the weights: the model predicts the mean, loss ≈ baseline measured 1.0014
    # (the bias's SGD error adds to 1); at λ = 1e-3 measured 0.016 against a noise floor of 0.01 / var(y) ~
    # 0.005
    assert document["train_curves"][-1][-1] == pytest.approx(1.0, abs=0.05)
    assert document["train_curves"][-1][0] < 0.1


def test_decoupled_l2_equals_adamw_on_the_weights():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    data = SweepData(
        torch.from_numpy(X[:30]),
        torch.from_numpy(y[:30]),
        torch.from_numpy(X[30:]),
        torch.from_numpy(y[30:]),
        "classification",
        3,
    )
    lam, lr = 0.1, 0.05
    result = train_sweep(
        data, [lam], mode="decoupled", model="mlp", hidden=5, epochs=3, batch_size=8, lr=lr, seed=2
    )
    from normpen.experiments.common import mlp

    network = mlp((4, 5, 3), 2)
    weights = [p for p in network.parameters() if p.ndim == 2]
    biases = [p for p in network.parameters() if p.ndim == 1]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": lam}, {"params": biases, "weight_decay": 0}], lr=lr
    )
    batches = torch.Generator().manual_seed(2)
    for _ in range(3):
        for index in torch.randperm(30, generator=batches).split(8):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(data.X_train[index]), data.y_train[index]).backward()
            optimizer.step()
    with torch.no_grad():
        val = float(torch.nn.functional.cross_entropy(network(data.X_val), data.y_val))
    # 12 float64 Adam steps written twice: ~eps per operation on a loss ~1 (measured bit-equal)
    assert result.val[0] == pytest.approx(val, rel=1e-12)


def test_huge_coupled_l2_leaves_the_constant_prediction():
    data = digits_data(0.8, 0)
    result = train_sweep(data, [50.0], model="linear", epochs=3, lr=0.05)
    pi = np.bincount(data.y_train.numpy(), minlength=10) / data.y_train.numel()
    entropy = float(-(pi * np.log(pi)).sum())
    assert constant_loss(data) == pytest.approx(entropy, rel=1e-12)  # 10-term sums: 10 eps (measured 0)
    # above the entropy by the bias's misfit after 3 epochs: measured 2.6e-3
    assert result.train[0] == pytest.approx(entropy, abs=2e-2)


def _result(train, val):
    """A sweep with given final losses over λ = 1e-3 .. 1e1; the validation curve flat over 3 epochs."""
    train, val = np.asarray(train, float), np.asarray(val, float)
    return SweepResult(
        np.geomspace(1e-3, 10, len(train)),
        np.arange(3),
        np.tile(train, (3, 1)),
        np.tile(val, (3, 1)),
        baseline=2.0,
        loss="cross-entropy",
    )


def test_verdicts_follow_the_documented_thresholds():
    # gaps 0.5, 0.25, 0.05 (at λ*), 0.05, 0.05; val(λ*) = 0.3
    result = _result([0.0, 0.2, 0.25, 0.35, 1.5], [0.5, 0.45, 0.3, 0.4, 1.55])
    assert result.best == 2
    # overfit: gap − gap(λ*) > 0.1·0.3 (0.45 and 0.2 are);
    # underfit: train − train(λ*) > 0.5·0.3 = 0.15 (0.1 is not, 1.25 is)
    assert result.verdicts() == ["overfits", "overfits", "fits", "fits", "underfits"]
    words = " ".join(result.diagnosis())
    assert "λ* = 0.1 has the lowest validation cross-entropy (0.3" in words
    assert "overfits for λ ≤ 0.01" in words and "underfits for λ ≥ 10" in words


def test_a_rising_validation_curve_is_overfitting_and_grid_ends_are_flagged():
    result = _result([0.1, 0.1], [0.32, 0.3])  # gap excess 0.02 < 0.1·0.3: not overfitting by the gap
    curves = result.val_curves.copy()
    curves[1, 0] = 0.2  # validation loss went down to 0.2, then back up to 0.32: a 60% rise
    rising = SweepResult(result.lams, result.epochs, result.train_curves, curves, 2.0, "cross-entropy")
    assert rising.verdicts()[0] == "overfits"
    flat = _result([0.1, 0.1], [0.31, 0.3])
    assert flat.verdicts() == ["fits", "fits"]
    assert "λ* is the largest λ of the grid" in " ".join(flat.diagnosis())
    assert "No λ of the grid overfits" in " ".join(flat.diagnosis())


@pytest.mark.parametrize("text", ["1e-5:1", "a:b:3", "1:0.1:3", "0:1:3", "1e-3:1:1", "1:2:3:4"])
def test_parse_lambdas_refuses_malformed_grids(text):
    with pytest.raises(ValueError, match="1e-5:1:7"):
        parse_lambdas(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "price"], "target column 'price' is not in the file"),
        (["--target", "y", "--lambdas", "1:0"], "is not a:b:n"),
        (["--target", "y", "--mode", "sideways"], "not one of 'coupled', 'decoupled', 'proximal'"),
        (["--target", "y", "--penalty", "nuclear"], "not one of 'l2', 'l1', 'group'"),
        (["--target", "y", "--seed", "-1"], "--seed"),
        (["--target", "c", "--task", "regression"], "not numeric.*--task classification"),
        (["--target", "y", "--val-fraction", "1.5"], "not in \\(0, 1\\)"),
        ([], "--target"),
    ],
)
def test_bad_input_exits_2(runner, table_csv, tmp_path, args, message):
    import re

    result = runner.invoke(app, ["sweep", str(table_csv), *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert re.search(message, " ".join(result.output.split()))
    assert not (tmp_path / "o").exists()


def test_missing_values_are_named_and_can_be_imputed(runner, table_csv, tmp_path):
    frame = pd.read_csv(table_csv)
    frame.loc[::2, "a"] = np.nan  # half the rows: more than MISSING_WARNING = 20% of the training rows
    frame.to_csv(table_csv, index=False)
    result = runner.invoke(app, ["sweep", str(table_csv), "--target", "y", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "'a' has" in result.output and "missing value(s)" in result.output  # those of the training rows
    assert "--missing impute" in result.output
    document = _sweep(
        runner, table_csv, "--target", "y", "--missing", "impute", *TINY, "--out", tmp_path / "o"
    )
    imputed = [d for d in document["data"] if d["column"] == "a"]
    assert imputed[0]["action"].startswith("imputed") and imputed[0]["warn"]


def test_existing_files_need_force(runner, table_csv, tmp_path):
    args = [table_csv, "--target", "y", "--model", "linear", *TINY, "--out", tmp_path / "o"]
    _sweep(runner, *args)
    result = runner.invoke(app, ["sweep", *map(str, args)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--force" in result.output
    _sweep(runner, *args, "--force")


def test_divergence_exits_3(runner, table_csv, tmp_path):
    result = runner.invoke(
        app, ["sweep", str(table_csv), "--target", "y", "--lr", "1e200", *TINY, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == EXIT_FIT_FAILED, result.output
    assert "non-finite loss" in result.output and "--lr" in result.output
    assert not (tmp_path / "o").exists()


def test_a_lambda_no_better_than_the_constant_prediction_underfits_wherever_it_lies():
    # baseline 2.0: a training loss of 1.99 is within BASELINE_MARGIN = 2% of it, 1.0 is well below
    result = _result([1.99, 1.0, 1.2], [2.3, 1.1, 1.3])
    assert result.best == 1
    assert result.verdicts() == ["underfits", "fits", "fits"]
    words = " ".join(result.diagnosis())
    assert (
        "At λ = 0.001 the training loss is not 2% below" in words and "No λ larger than λ* underfits" in words
    )
    hopeless = _result([1.99, 2.0], [2.1, 2.05])  # even λ* is no better than the constant on validation
    assert hopeless.verdicts() == ["underfits", "underfits"]
    assert "Even λ* does no better on the validation rows" in " ".join(hopeless.diagnosis())


def test_an_exploding_loss_exits_3_naming_the_lambda(runner, table_csv, tmp_path):
    # Adam at lr 1e4 moves every weight by about 1e4 per step: the standardised target's squared error
    # (constant prediction: 1) ends far above DIVERGENCE_FACTOR = 100 but finite
    result = runner.invoke(
        app, ["sweep", str(table_csv), "--target", "y", "--lr", "1e4", *TINY, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == EXIT_FIT_FAILED, result.output
    words = " ".join(result.output.split())
    assert "exploded at λ = 0.0001" in words and "constant prediction" in words and "--lr" in words
    assert not (tmp_path / "o").exists()


def test_sweep_reads_a_semicolon_file_with_decimal_commas(runner, table_csv, tmp_path):
    frame = pd.read_csv(table_csv)
    path = tmp_path / "eu.csv"
    frame.to_csv(path, sep=";", decimal=",", index=False)
    plain = _sweep(runner, table_csv, "--target", "y", *TINY, "--out", tmp_path / "a")
    european = _sweep(runner, path, "--target", "y", *TINY, "--out", tmp_path / "b")
    # the same numbers, parsed from "0,123" instead of "0.123": the same training to float64 rounding
    np.testing.assert_allclose(european["val_curves"], plain["val_curves"], rtol=1e-12)
    assert any("decimal ','" in d["action"] for d in european["data"])


def test_sweep_help_renders_the_grid_and_lists_choices(runner):
    result = runner.invoke(app, ["sweep", "--help"])
    assert result.exit_code == 0
    assert "MIN:MAX:N" in result.output and "\U0001f171" not in result.output
    assert "<l2|l1|group>" in result.output and "<coupled|decoupled|proximal>" in result.output
    assert not [line for line in result.output.splitlines() if "<bool>" in line and "--help" not in line]


def test_sweep_figure_axes_carry_plain_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _result([0.5, 0.55, 0.6, 0.62, 0.65], [0.7, 0.66, 0.64, 0.63, 0.66]).figure()
    FigureCanvasAgg(figure).draw()  # tick labels exist once drawn
    labels = [
        t.get_text()
        for ax in figure.axes
        for axis in (ax.xaxis, ax.yaxis)
        for t in (*axis.get_ticklabels(), *axis.get_ticklabels(minor=True))
    ]
    assert "0.6" in labels and "0.001" in labels
    assert not [label for label in labels if "×" in label or "^" in label or "$" in label]
