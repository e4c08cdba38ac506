"""The ``normpen`` command: one function per subcommand.

``normpen list`` lists the experiments; ``normpen report`` runs them and
writes the HTML report. ``normpen fit`` fits a penalized linear model with
cross-validated λ on a CSV/Parquet table (or the embedded diabetes data),
``normpen predict`` applies a saved one, and ``normpen sweep`` trains a small
network per λ and diagnoses over- and underfitting (docs/cli.md). Exit
codes: 0 done, 1 a report check failed, 2 bad input, 3 a fit or training
failed. A new subcommand is one more function decorated with
``@app.command()``. The experiments and the report machinery (matplotlib,
scikit-learn, torch, pandas) are imported inside the commands that use them,
so ``normpen --help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from normpen import __version__

__all__ = ["app"]

app = typer.Typer(
    name="normpen",
    help="Parameter norm penalties: reproduce the claims of the seed texts and report on them.",
    no_args_is_help=True,
    add_completion=False,
)


def _show_version(value: bool):
    if value:
        typer.echo(f"normpen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
):
    """Parameter norm penalties: reproduce the claims of the seed texts and report on them."""


@app.command("list")
def list_experiments():
    """List the experiments: name, verdict, the seed section each reproduces, and its claim."""
    from normpen.experiments import registry

    table = Table("name (verdict)", "seed section", "claim", show_lines=True)
    for experiment in registry.select():
        verdict = experiment.verdict.status if experiment.verdict is not None else "no verdict"
        table.add_row(f"{experiment.name}\n({verdict})", experiment.seed_section, experiment.claim)
    Console().print(table)


@app.command()
def report(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", help="Directory for index.html, results.json and the figures."
        ),
    ] = Path("normpen-report"),
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", metavar="NAME", help="Run only this experiment (repeatable); see `normpen list`."
        ),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller sizes, the same checks.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write the report's files into a directory holding files normpen did not write "
            "(they are overwritten where their names clash; nothing else is deleted).",
        ),
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", min=0, metavar="N",
            help="Run every experiment with this random seed [default: each experiment's own fixed seed].",
        ),
    ] = None,
):
    """Run the experiments and write a self-contained HTML report; exit 1 if any check fails."""
    from normpen.experiments import registry
    from normpen.report import ReportDirError, check_output_dir, run_experiments, write_report

    try:
        experiments = registry.select(only)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--only") from None
    try:
        check_output_dir(out, force)
    except ReportDirError as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    outcomes = run_experiments(experiments, quick, console=Console(stderr=True), seed=seed)
    try:
        index = write_report(out, outcomes, quick, force, seed)
    except ReportDirError as err:  # a figure's file name taken since the first check
        raise typer.BadParameter(str(err), param_hint="--out") from None
    console = Console()
    console.print(_summary_table(outcomes))
    console.print(f"report: {index}")
    failed = [outcome for outcome in outcomes if not outcome.passed]
    for outcome in failed:
        console.print(f"[red]FAILED[/red] {outcome.experiment.name}: {_failure_reason(outcome)}")
    if failed:
        raise typer.Exit(code=1)


def _summary_table(outcomes) -> Table:
    table = Table("experiment", "verdict", "checks passed", "time", "result")
    for outcome in outcomes:
        passed = sum(check.passed for check in outcome.checks)
        colour = "green" if outcome.passed else "red"
        verdict = outcome.experiment.verdict
        table.add_row(
            outcome.experiment.name,
            verdict.status if verdict is not None else "none",
            f"{passed}/{len(outcome.checks)}",
            f"{outcome.seconds:.2f} s",
            f"[{colour}]{outcome.result}[/{colour}]",
        )
    return table


def _failure_reason(outcome) -> str:
    """Why an outcome failed: the exception's last line, or each failed check with its numbers."""
    if outcome.error:
        return "raised " + outcome.error.strip().splitlines()[-1]
    return "; ".join(
        f"{check.name}: measured {check.measured}, expected {check.expected} "
        f"({check.criterion}, t = {check.tolerance}{'; ' + check.kind if check.empirical else ''})"
        for check in outcome.failed_checks
    )


# ---- fit and predict: penalized linear models on the user's table ----------------------------------------

#: Exit code of input the command cannot use (a missing column, NaN, a constant column, ...): typer's own.
EXIT_BAD_INPUT = 2
#: Exit code of a fit that failed on valid input (a solver error, non-finite coefficients).
EXIT_FIT_FAILED = 3
#: Target column of the embedded diabetes data (disease progression one year after baseline).
DIABETES_TARGET = "progression"

#: ``--penalty`` name: (task, CV estimator of normpen.linear, its fixed parameters, the error it minimises).
FIT_PENALTIES = {
    "ridge": ("regression", "RidgeCV", {}, "mean squared error"),
    "lasso": ("regression", "LassoCV", {}, "mean squared error"),
    "enet": ("regression", "ElasticNetCV", {}, "mean squared error"),
    "group": ("regression", "GroupLassoCV", {}, "mean squared error"),
    "sgl": ("regression", "SparseGroupLassoCV", {}, "mean squared error"),
    "logistic-l1": ("classification", "LogisticRegressionCV", {"penalty": "l1"}, "log loss"),
    "logistic-l2": ("classification", "LogisticRegressionCV", {"penalty": "l2"}, "log loss"),
    "svm": ("classification", "LinearSVCCV", {}, "misclassification rate"),
}
FIT_FILES = ("model.json", "model.npz", "coefficients.csv", "path.png", "cv.png", "fit.json")


def _note(label: str, colour: str, message: str):
    """Print ``label: message`` to stderr, the label coloured, the message verbatim (no markup, no emoji)."""
    console = Console(stderr=True, emoji=False)
    console.print(f"[{colour}]{label}:[/{colour}] {escape(message)}", highlight=False, soft_wrap=True)


def _fail(message: str, code: int):
    """Print ``message`` to stderr and exit with ``code``."""
    _note("error", "red", message)
    raise typer.Exit(code=code)


def _na_policy(drop_na: bool, impute: bool) -> str:
    """The missing-value policy of :func:`normpen.tabular.fit_encoder` that the two flags choose."""
    if drop_na and impute:
        raise typer.BadParameter("choose one of --drop-na and --impute", param_hint="--drop-na/--impute")
    return "drop" if drop_na else "impute" if impute else "error"


def _fit_estimator(penalty: str, groups, l1_ratio: float, folds, n_lams, selection):
    """The CV estimator of ``--penalty`` with its options (a fresh, unfitted normpen.linear object)."""
    import normpen.linear as linear

    _, name, fixed, _ = FIT_PENALTIES[penalty]
    options = {**fixed, "cv": folds, "selection": selection}
    if penalty in ("enet", "sgl"):
        options["l1_ratio"] = l1_ratio
    if penalty in ("group", "sgl"):
        options["groups"] = groups
    if n_lams is not None:
        options["n_lams"] = n_lams
    return getattr(linear, name)(**options)


def _folds(task: str, k: int, seed: int):
    """Shuffled K-fold (stratified for classification), seeded, so that refits see the same folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = StratifiedKFold if task == "classification" else KFold
    return splitter(n_splits=k, shuffle=True, random_state=seed)


def _load_training_table(data: Path | None, target: str | None):
    """The table and its target column: the user's file, or the embedded diabetes data."""
    from normpen.datasets import load
    from normpen.tabular import frame_from_arrays, read_table

    if data is None:
        diabetes = load("diabetes")
        target = target or DIABETES_TARGET
        return frame_from_arrays(diabetes.X, diabetes.y, diabetes.feature_names, DIABETES_TARGET), target
    if target is None:
        raise typer.BadParameter("name the column to predict, e.g. --target price", param_hint="--target")
    return read_table(data), target


def _path_figure(estimator, X, y, feature_names):
    """The coefficient path over the CV grid, from the estimator's own warm-started path on all the data,
    with λ_min and λ_1se marked and (for one coefficient vector of at most 20 features) named lines."""
    import math

    path = estimator.fit_path(X, y)
    figure = path.plot()
    ax = figure.axes[0]
    scale = path.lambda_max if math.isfinite(path.lambda_max) and path.lambda_max > 0 else 1.0
    ax.axvline(estimator.lam_min_ / scale, color="k", ls="--", lw=1, label="λ_min")
    ax.axvline(estimator.lam_1se_ / scale, color="k", ls=":", lw=1, label="λ_1se")
    if path.coefs.ndim == 2 and len(feature_names) <= 20:
        for line, name in zip(ax.get_lines(), feature_names, strict=False):
            line.set_label(name)
    ax.set_ylabel("coefficient (standardised features)")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.set_layout_engine("constrained")
    return figure


def _cv_figure(estimator, error_name):
    """The estimator's CV curve (mean held-out error ± one standard error), its axis named by the error."""
    figure = estimator.plot()
    figure.axes[0].set_ylabel(f"{error_name} (held-out, mean ± 1 s.e.)")
    return figure


def _coefficient_rows(estimator, encoder) -> tuple[list[str], list[list]]:
    """Header and rows of the coefficient table: standardised and original-unit coefficients per feature."""
    coef = np.atleast_2d(estimator.coef_)
    intercept = np.atleast_1d(estimator.intercept_)
    original, original_intercept = encoder.original_units(coef, intercept)
    labels = [""] if coef.shape[0] == 1 else [f" [{c}]" for c in estimator.classes_]
    header = ["feature"]
    header += [f"coefficient{label}" for label in labels]
    header += [f"standardised{label}" for label in labels]
    names = [*encoder.feature_names, "(intercept)"]
    table_original = np.column_stack([original, np.atleast_1d(original_intercept)])
    table_standardised = np.column_stack([coef, intercept])
    rows = [[name, *table_original[:, j], *table_standardised[:, j]] for j, name in enumerate(names)]
    return header, rows


def _csv_bytes(header, rows) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[f"{v:.17g}" if isinstance(v, float) else v for v in row] for row in rows])
    return buffer.getvalue().encode("utf-8")


def _fit_summary(penalty, estimator, encoder, X, header, rows) -> dict:
    best = int(np.argmin(np.abs(estimator.lams_ - estimator.lam_min_)))
    one_se = int(np.argmin(np.abs(estimator.lams_ - estimator.lam_1se_)))
    width = (len(header) - 1) // 2
    return {
        "penalty": penalty,
        "estimator": type(estimator).__name__,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "cv_error": FIT_PENALTIES[penalty][3],
        "lam_min": estimator.lam_min_,
        "lam_1se": estimator.lam_1se_,
        "lam": estimator.lam_,
        "cv_error_min": float(estimator.cv_mean_[best]),
        "cv_se_min": float(estimator.cv_se_[best]),
        "cv_error_1se": float(estimator.cv_mean_[one_se]),
        "dual_gap": float(estimator.dual_gap_),
        "classes": [str(c) for c in getattr(estimator, "classes_", [])],
        "coefficients": {row[0]: [float(v) for v in row[1 : 1 + width]] for row in rows},
        "encoder": encoder.to_dict(),
    }


def _print_fit(summary, header, rows, out):
    console = Console(emoji=False)
    console.print(
        f"{summary['estimator']} on {summary['n_samples']} rows x {summary['n_features']} features; "
        f"{summary['cv_error']} by cross-validation"
    )
    console.print(
        f"λ_min = {summary['lam_min']:.4g} (CV error {summary['cv_error_min']:.4g} "
        f"± {summary['cv_se_min']:.2g}), λ_1se = {summary['lam_1se']:.4g} "
        f"(CV error {summary['cv_error_1se']:.4g}); refit at λ = {summary['lam']:.4g}"
    )
    width = (len(header) - 1) // 2
    table = Table(*header[: 1 + width], title="selected coefficients (original units)")
    selected = [row for row in rows[:-1] if any(v != 0 for v in row[1 : 1 + width])]
    for row in [*selected, rows[-1]]:
        table.add_row(escape(row[0]), *(f"{v:.6g}" for v in row[1 : 1 + width]))
    console.print(table)
    console.print(f"{len(rows) - 1 - len(selected)} of {len(rows) - 1} coefficients are exactly zero")
    console.print(f"written to {escape(str(out))}: {', '.join(FIT_FILES)}", highlight=False)


@app.command()
def fit(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Argument(help="CSV or Parquet file; the embedded diabetes data when left out.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Column to predict (diabetes: 'progression').")
    ] = None,
    penalty: Annotated[str, typer.Option(help=f"One of: {', '.join(FIT_PENALTIES)}.")] = "lasso",
    l1_ratio: Annotated[float, typer.Option(help="ρ of enet and sgl: ρ·L1 + (1−ρ)·(L2 or group).")] = 0.5,
    cv: Annotated[int, typer.Option(help="Number of cross-validation folds.", min=2)] = 5,
    select: Annotated[str, typer.Option(help="λ of the refit: 'min' (least CV error) or '1se'.")] = "min",
    n_lams: Annotated[
        int | None, typer.Option(help="Number of λ on the grid (default: the estimator's).", min=2)
    ] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="Treat this numeric column as categorical (repeatable).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Leave this column out (repeatable).")] = None,
    drop_na: Annotated[bool, typer.Option("--drop-na", help="Drop rows with a missing value.")] = False,
    impute: Annotated[
        bool, typer.Option("--impute", help="Fill missing features with the mean / most frequent level.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the shuffled folds.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Directory for the files.")] = Path(
        "normpen-fit"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace files a previous fit wrote.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """Fit a penalized linear model with cross-validated λ; write the model, coefficients and figures.

    Exit codes: 0 done, 2 bad input (the message names the problem and the fix), 3 the fit failed.
    """
    import json
    import warnings

    from normpen.model_io import model_files
    from normpen.report.figures import figure_png
    from normpen.tabular import fit_encoder, training_data

    if penalty not in FIT_PENALTIES:
        choices = ", ".join(FIT_PENALTIES)
        raise typer.BadParameter(f"{penalty!r} is not one of {choices}", param_hint="--penalty")
    if select not in ("min", "1se"):
        raise typer.BadParameter(f"{select!r} is neither 'min' nor '1se'", param_hint="--select")
    if not 0 <= l1_ratio <= 1:
        raise typer.BadParameter(f"{l1_ratio} lies outside [0, 1]", param_hint="--l1-ratio")
    task = FIT_PENALTIES[penalty][0]
    try:
        output = _claim_output(ctx, out, force, "normpen fit")
        frame, target = _load_training_table(data, target)
        encoder = fit_encoder(frame, target, na=_na_policy(drop_na, impute), categorical=categorical or (),
                              exclude=exclude or ())
        X, y = training_data(frame, encoder, task)
        _check_trainable(X, y, task, cv)
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    estimator = _fit_estimator(penalty, encoder.groups, l1_ratio, _folds(task, cv, seed), n_lams, select)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(X, y)
            path_figure = _path_figure(estimator, X, y, encoder.feature_names)
        except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as err:
            _fail(f"the fit failed: {err}", EXIT_FIT_FAILED)
    if not np.all(np.isfinite(estimator.coef_)):
        _fail("the fit failed: non-finite coefficients; check the data for extreme values", EXIT_FIT_FAILED)
    header, rows = _coefficient_rows(estimator, encoder)
    summary = _fit_summary(penalty, estimator, encoder, X, header, rows)
    summary["warnings"] = sorted({str(w.message) for w in caught})
    files = {
        **model_files(estimator, {"penalty": penalty, "encoder": encoder.to_dict(), "task": task}),
        "coefficients.csv": _csv_bytes(header, rows),
        "path.png": figure_png(path_figure),
        "cv.png": figure_png(_cv_figure(estimator, summary["cv_error"])),
        "fit.json": (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    _commit_output(output, files)
    if json_output:
        typer.echo(json.dumps({**summary, "out": str(out)}, ensure_ascii=False))
        return
    for message in summary["warnings"]:
        _note("warning", "yellow", message)
    _print_fit(summary, header, rows, out)


def _claim_output(ctx: typer.Context, out: Path, force: bool, generator: str):
    """Claim the directory ``out`` until the command ``ctx`` ends (:func:`normpen._files.claim_output`: a
    second run on the same directory fails at once); raises ``ValueError`` when ``out`` may not be written."""
    from normpen._files import claim_output

    return ctx.with_resource(claim_output(out, force, generator))


def _commit_output(output, files: dict):
    """Write ``files`` as the claimed directory, in one rename; exit 2 if that is no longer allowed."""
    from normpen._files import OutputError

    try:
        output.commit(files)
    except OutputError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except OSError as err:
        _fail(f"cannot write {output.path}: {err.strerror}; nothing was written", EXIT_BAD_INPUT)


def _check_trainable(X, y, task, k):
    """Enough rows for ``k`` folds and, for classification, at least two classes."""
    if X.shape[0] < k:
        raise ValueError(f"{X.shape[0]} rows are too few for --cv {k}; lower --cv or add rows")
    if task == "classification" and np.unique(y.astype(str)).size < 2:
        raise ValueError(f"the target has a single class ({y[0]!r}); classification needs two or more")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Directory that `normpen fit --out` wrote.")],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file with the model's feature columns.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Write the predictions to this CSV.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
):
    """Predict with a saved model; score it too when DATA holds the target column.

    Prints CSV (row, prediction and, for logistic models, one probability per class) unless --out or
    --json. Exit codes: 0 done, 2 bad input.
    """
    import json

    from normpen._files import check_file_target
    from normpen.model_io import load_model
    from normpen.tabular import read_table

    try:
        saved = load_model(model)
        encoder = _saved_encoder(saved, model)
        if out is not None:
            check_file_target(out, force)
        frame = read_table(data)
        with np.errstate(over="ignore", invalid="ignore"):  # a value too large to standardise is named below
            X = encoder.transform(frame)
        rows = np.flatnonzero(encoder.rows(frame))
        _check_finite_design(X, rows, frame, encoder.feature_names, data)
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    estimator = saved.estimator
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite score is refused below
        header, columns = ["row", "prediction"], [rows, estimator.predict(X)]
        _check_finite_scores(estimator, X, rows, data)
        if hasattr(estimator, "predict_proba"):
            header += [f"p({c})" for c in estimator.classes_]
            columns += list(estimator.predict_proba(X).T)
    table = [list(values) for values in zip(*columns, strict=True)]
    result = {"predictions": _json_column(columns[1]), "rows": rows.tolist()}
    score = _score(estimator, frame, encoder, saved.metadata.get("task"))
    if score is not None:
        result["score"] = score
    if out is not None:
        _write_output_file(out, _csv_bytes(header, table), force)
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False))
    elif out is None:
        typer.echo(_csv_bytes(header, table).decode("utf-8"), nl=False)
    if score is not None and not json_output:
        message = f"{score['metric']} on the {score['n']} rows with a target: {score['value']:.6g}"
        Console(stderr=True).print(message, markup=False, highlight=False)


def _saved_encoder(saved, model: Path):
    """The table encoder saved with the model, checked to make as many columns as the model has features
    (and, for a regressor, one coefficient per column: `normpen fit` saves single-output models)."""
    from sklearn.base import is_classifier

    from normpen.tabular import TabularEncoder

    if "encoder" not in saved.metadata:
        raise ValueError(f"{model} holds no table encoder; give a model directory `normpen fit` wrote")
    try:
        encoder = TabularEncoder.from_dict(saved.metadata["encoder"])
        width = len(encoder.feature_names)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{model} holds a malformed table encoder ({err!r}); give a model directory `normpen fit` wrote"
        ) from None
    estimator = saved.estimator
    if width != estimator.n_features_in_ or (estimator.coef_.ndim != 1 and not is_classifier(estimator)):
        raise ValueError(
            f"{model} is not a model `normpen fit` wrote: its encoder makes {width} columns but its coef_ "
            f"has shape {estimator.coef_.shape}"
        )
    return encoder


def _check_finite_design(X, rows, frame, feature_names, data):
    """Refuse a design matrix with inf or NaN (an infinite value, or one too large to standardise)."""
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        i, j = bad[0]
        name = feature_names[j]
        raise ValueError(
            f"column {name!r} holds {frame[name].iloc[rows[i]]} in row {rows[i]} of {data}, which is not "
            "finite once standardised; predictions need finite values: fix or remove that row"
        )


def _check_finite_scores(estimator, X, rows, data):
    """Refuse predictions that overflow (finite but huge feature values): name the rows."""
    from sklearn.base import is_classifier

    scores = estimator.decision_function(X) if is_classifier(estimator) else estimator.predict(X)
    bad = rows[~np.isfinite(scores).reshape(len(rows), -1).all(axis=1)]
    if bad.size:
        _fail(
            f"the model's prediction overflows on row(s) {bad[:10].tolist()} of {data}: their feature "
            "values are too large for it; check those rows",
            EXIT_BAD_INPUT,
        )


def _write_output_file(out: Path, data: bytes, force: bool):
    """Write ``out`` in one step (:func:`normpen._files.write_file`); exit 2 if it may not be written."""
    from normpen._files import OutputError, write_file

    try:
        write_file(out, data, force)
    except OutputError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except OSError as err:
        _fail(f"cannot write {out}: {err.strerror}; nothing was written", EXIT_BAD_INPUT)


def _json_column(values) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _score(estimator, frame, encoder, task):
    """R² (regression) or accuracy (classification) on the rows of ``frame`` that have a target."""
    from normpen.tabular import training_data

    if encoder.target not in frame.columns or not frame[encoder.target].notna().any():
        return None
    kept = frame[frame[encoder.target].notna()]
    try:
        X, y = training_data(kept, encoder, task)
    except ValueError:
        return None
    if task == "classification":
        y = y.astype(estimator.classes_.dtype) if estimator.classes_.dtype.kind in "biuf" else y.astype(str)
    metric = "accuracy" if task == "classification" else "R²"
    return {"metric": metric, "value": float(estimator.score(X, y)), "n": int(X.shape[0])}


# ---- sweep: a small network per λ, and the over/underfit diagnosis -----------------------------------------

SWEEP_FILES = ("sweep.png", "sweep.json")
#: Validation share of the embedded digits: 360 training images, few enough for small λ to overfit.
DIGITS_VAL_FRACTION = 0.8


def _sweep_data(data, target, task, val_fraction, seed, na, categorical, exclude):
    """The split to train on: the embedded digits, or the user's table (task from the target's type)."""
    from normpen.sweep import digits_data, table_data
    from normpen.tabular import is_numeric_column, read_table

    if data is None:
        return digits_data(val_fraction, seed)
    if target is None:
        raise typer.BadParameter("name the column to predict, e.g. --target label", param_hint="--target")
    frame = read_table(data)
    if task == "auto" and target in frame.columns:
        task = "regression" if is_numeric_column(frame[target]) else "classification"
    return table_data(frame, target, task, val_fraction=val_fraction, seed=seed, na=na,
                      categorical=categorical, exclude=exclude)


@app.command()
def sweep(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Argument(help="CSV or Parquet file; the embedded digits when left out.")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Column to predict.")] = None,
    model: Annotated[str, typer.Option(help="'mlp' (one hidden ReLU layer) or 'linear'.")] = "mlp",
    penalty: Annotated[str, typer.Option(help="'l2', 'l1' or 'group' (one group per unit).")] = "l2",
    mode: Annotated[str, typer.Option(help="'coupled', 'decoupled' or 'proximal'.")] = "coupled",
    lambdas: Annotated[str, typer.Option(help="a:b:n, n log-spaced λ from a to b.")] = "1e-6:1:7",
    epochs: Annotated[int, typer.Option(help="Passes over the training rows per λ.", min=1)] = 40,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layer.", min=1)] = 64,
    lr: Annotated[float, typer.Option(help="Adam's learning rate.", min=0.0)] = 1e-2,
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=1)] = 64,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Share of rows held out for validation (default 0.25; digits: 0.8, to overfit)."),
    ] = None,
    task: Annotated[
        str, typer.Option(help="'auto' (from the target's type), 'regression' or 'classification'.")
    ] = "auto",
    categorical: Annotated[
        list[str] | None, typer.Option(help="Treat this numeric column as categorical (repeatable).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Leave this column out (repeatable).")] = None,
    drop_na: Annotated[bool, typer.Option("--drop-na", help="Drop rows with a missing value.")] = False,
    impute: Annotated[bool, typer.Option("--impute", help="Fill missing features (mean / mode).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the split, the initial weights and the batches.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Directory for the files.")] = Path(
        "normpen-sweep"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace files a previous sweep wrote.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
):
    """Train a small network per λ; plot the losses, name the best λ, say where it over- and underfits.

    Exit codes: 0 done, 2 bad input, 3 training diverged.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from normpen.report.figures import figure_png
    from normpen.sweep import MODELS, PENALTIES, TrainingDiverged, parse_lambdas, train_sweep

    choices = {"--model": (model, MODELS), "--penalty": (penalty, PENALTIES),
               "--mode": (mode, ("coupled", "decoupled", "proximal")),
               "--task": (task, ("auto", "regression", "classification"))}
    for hint, (value, allowed) in choices.items():
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=hint)
    if val_fraction is None:
        val_fraction = DIGITS_VAL_FRACTION if data is None else 0.25
    if not 0 < val_fraction < 1:
        raise typer.BadParameter(f"{val_fraction} is not in (0, 1)", param_hint="--val-fraction")
    try:
        lams = parse_lambdas(lambdas)
        output = _claim_output(ctx, out, force, "normpen sweep")
        split = _sweep_data(data, target, task, val_fraction, seed, _na_policy(drop_na, impute),
                            categorical or (), exclude or ())
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"λ = {lams[0]:.2g}", total=len(lams) * epochs)

        def advance(k, epoch):
            shown = lams[min(k + (epoch == epochs), len(lams) - 1)]
            progress.update(bar, advance=1, description=f"λ = {shown:.2g}")

        try:
            result = train_sweep(split, lams, penalty=penalty, mode=mode, model=model, hidden=hidden,
                                 epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, on_epoch=advance)
        except TrainingDiverged as err:
            _fail(f"training failed: {err}", EXIT_FIT_FAILED)
    document = {
        "model": model, "penalty": penalty, "mode": mode, "task": split.task,
        "n_train": int(split.X_train.shape[0]), "n_val": int(split.X_val.shape[0]), **result.to_dict(),
    }
    _commit_output(output, {
        "sweep.png": figure_png(result.figure()),
        "sweep.json": (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    })
    if json_output:
        typer.echo(json.dumps({**document, "out": str(out)}, ensure_ascii=False))
        return
    console = Console(emoji=False)
    table = Table("λ", "train loss", "validation loss", "verdict", title=f"{model}, {penalty} ({mode})")
    for k, (lam, verdict) in enumerate(zip(result.lams, result.verdicts(), strict=True)):
        mark = " ← λ*" if k == result.best else ""
        table.add_row(f"{lam:.3g}", f"{result.train[k]:.4g}", f"{result.val[k]:.4g}", verdict + mark)
    console.print(table)
    for line in result.diagnosis():
        console.print(line, highlight=False, markup=False)
    console.print(f"written to {escape(str(out))}: {', '.join(SWEEP_FILES)}", highlight=False)
