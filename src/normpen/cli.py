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

import ctypes
import math
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from normpen import __version__
from normpen.penalties import names
from normpen.tabular import MAX_LEVELS, NA_POLICIES

__all__ = ["app"]

app = typer.Typer(
    name="normpen",
    help=(
        "Penalized models from the command line. `normpen fit data.csv --target price` fits a lasso (or "
        "ridge, elastic net, group lasso, logistic, SVM) with cross-validated λ and says what it did with "
        "your data; `normpen predict` applies it to new rows; `normpen sweep` trains a small network per λ "
        "and says where it over- and underfits; `normpen report` reruns the experiments behind the "
        "library's claims. Run any command with --help for its options."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _show_version(value: bool):
    if value:
        typer.echo(f"normpen {__version__}")
        raise typer.Exit()


#: glibc's ``mallopt`` parameter: the memory kept free above the heap's top after a release
_M_TOP_PAD = -2


def _keep_freed_memory(pad_bytes: int = 64 << 20):
    """Let the C allocator keep ``pad_bytes`` of released memory instead of giving it back at once.

    The solvers' inner loops allocate and free numpy temporaries of a few
    megabytes many times a second; returned to the system after every use,
    each comes back as fresh pages that fault in one by one. On issue 14's
    fair table this padding took ``fit`` from 314,000 to 53,000 page faults
    and 0.6 to 0.2-0.3 s of system time, for 8 MB more peak memory. A process
    setting, so the command line makes it and the library does not; without
    glibc (macOS, musl) there is nothing to set.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TOP_PAD, pad_bytes)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", help="Show the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
):
    """Penalized models from the command line: fit, predict, sweep, and the experiments' report."""
    _keep_freed_memory()


@app.command("list")
def list_experiments():
    """List the experiments: name, verdict, the seed section each reproduces, and its claim."""
    from normpen.experiments import registry

    table = Table("name (verdict)", "seed section", "claim", show_lines=True)
    for experiment in registry.select():
        name = f"{experiment.name}\n({experiment.verdict.status})"
        table.add_row(name, experiment.seed_section, experiment.claim)
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
            "--seed",
            min=0,
            metavar="N",
            help="Run every experiment with this random seed [default: each experiment's own fixed seed].",
        ),
    ] = None,
):
    """Run the experiments and write a self-contained HTML report; exit 1 if any check fails."""
    from normpen.experiments import registry
    from normpen.report.runner import run_experiments
    from normpen.report.writer import ReportDirError, check_output_dir, write_report

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
        table.add_row(
            outcome.experiment.name,
            outcome.experiment.verdict.status,
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

FIT_FILES = ("model.json", "model.npz", "coefficients.csv", "path.png", "cv.png", "fit.json")
#: Significant digits of the numbers `normpen predict` writes (float64 carries 15 to 17; a model's
#: predictions are not that accurate, and 8 digits keep a prediction and a probability readable).
PREDICTION_DIGITS = 8
#: Most classes a classification target may have: more are nearly always a quantity or an identifier.
MAX_CLASSES = 50
#: One-hot columns from which the design matrix is stored sparse (when they outnumber the numeric ones).
SPARSE_MIN_COLUMNS = 100
#: Coefficient paths named in path.png's legend (the largest); the others are drawn grey, unnamed.
TOP_CURVES = 10
#: Their colours: matplotlib's ten, with its grey swapped for black (grey draws the unnamed curves).
TOP_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "black",
    "tab:olive",
    "tab:cyan",
)

Selection = Enum("Selection", {"min": "min", "1se": "1se"}, type=str)
Missing = Enum("Missing", {policy: policy for policy in NA_POLICIES}, type=str)


def _name_option(spellings: dict, resolve, help_text: str):
    """A ``typer.Option`` taking one of the names of ``spellings`` (name -> its aliases; the names are
    listed as the choices, the aliases after ``help_text``) or an alias of one: ``resolve(spelling)``
    returns the name or raises ``ValueError`` (normpen.penalties.names)."""
    choices = list(spellings)
    aliases = "; ".join(f"{name}: {', '.join(more)}" for name, more in spellings.items() if more)

    def parse(spelling: str) -> str:
        try:
            return resolve(spelling)
        except ValueError:
            listed = ", ".join(repr(choice) for choice in choices)
            raise typer.BadParameter(f"{spelling!r} is not one of {listed} (or an alias of one)") from None

    return typer.Option(
        parser=parse,
        metavar="<" + "|".join(choices) + ">",
        help=f"{help_text} Aliases: {aliases}.",
        autocompletion=lambda: choices,
    )


#: ``--penalty`` of fit: the models of normpen.penalties.names, also spelled as their penalties are.
FitModelOption = Annotated[
    str,
    _name_option(
        {m.name: m.spellings[1:] for m in names.MODELS.values()},
        lambda s: names.model(s).name,
        "The model; logistic-l1, logistic-l2 and svm classify.",
    ),
]

# Options that fit, predict and sweep share: how to read the file and what to do with its columns.
SepOption = Annotated[
    str | None,
    typer.Option(
        "--sep",
        metavar="CHAR",
        help="Column separator of a text file: ',' ';' '\\t' '|' ... "
        "\\[default: sniffed from the first lines]",
    ),
]
DecimalOption = Annotated[
    str | None,
    typer.Option(
        "--decimal",
        metavar="CHAR",
        help="Decimal mark of the numbers, '.' or ',' \\[default: detected: '3.078,5' reads as 3078.5]",
    ),
]
ThousandsOption = Annotated[
    str | None,
    typer.Option(
        "--thousands",
        metavar="CHAR",
        help="Thousands separator of the numbers, e.g. ',' \\[default: detected: '3,078.5' reads as 3078.5]",
    ),
]
CategoricalOption = Annotated[
    list[str] | None,
    typer.Option(metavar="COL", help="Treat this numeric column as categorical (repeatable)."),
]
ExcludeOption = Annotated[
    list[str] | None, typer.Option(metavar="COL", help="Leave this column out (repeatable).")
]
MissingOption = Annotated[
    Missing,
    typer.Option(
        "--missing",
        help="Missing feature values: refuse them, drop their rows, or impute the "
        "training mean / most frequent level. Rows with a missing target are always dropped.",
    ),
]
MaxLevelsOption = Annotated[
    int,
    typer.Option(
        min=2,
        metavar="N",
        help="Most one-hot columns per categorical column; rarer levels are grouped as '(other)'.",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", metavar="", help="Print only errors (no tables, notes or progress).")
]


def _terminal_text(text) -> str:
    """``text`` with control characters (ANSI and OSC escape sequences included) written as escapes."""
    text = str(text)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _spreadsheet_text(text) -> str:
    """``text`` with a leading ``'`` where a spreadsheet would read a formula (``=``, ``+``, ``-``, ``@``,
    tab, carriage return), so that a column name such as ``=HYPERLINK(...)`` stays text."""
    text = str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _note(label: str, colour: str, message: str):
    """Print ``label: message`` to stderr, the label coloured, the message verbatim (no markup, no emoji,
    control characters escaped)."""
    console = Console(stderr=True, emoji=False)
    console.print(
        f"[{colour}]{label}:[/{colour}] {escape(_terminal_text(message))}", highlight=False, soft_wrap=True
    )


def _fail(message: str, code: int):
    """Print ``message`` to stderr and exit with ``code``."""
    _note("error", "red", message)
    raise typer.Exit(code=code)


def _read(data: Path, sep, decimal, thousands):
    """:func:`normpen.tabular.read_table` of ``data``; ``--sep '\\t'`` (typed as two characters) is a tab."""
    from normpen.tabular import read_table

    if sep is not None:
        sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    return read_table(data, sep=sep, decimal=decimal, thousands=thousands)


def _grid(lambdas: str | None, n_lams: int | None, lam_min_ratio: float | None) -> dict:
    """The λ-grid options of the CV estimator: ``lams`` from ``--lambdas MIN:MAX:N``, or the size and the
    smallest-to-largest ratio of its own grid (which starts where every coefficient is zero)."""
    from normpen.sweep import parse_lambdas

    if lambdas is not None and (n_lams is not None or lam_min_ratio is not None):
        raise typer.BadParameter(
            "give either --lambdas or --n-lams / --lam-min-ratio", param_hint="--lambdas"
        )
    if lam_min_ratio is not None and not 0 < lam_min_ratio < 1:
        raise typer.BadParameter(f"{lam_min_ratio} is not in (0, 1), e.g. 1e-4", param_hint="--lam-min-ratio")
    if lambdas is not None:
        try:
            return {"lams": parse_lambdas(lambdas)}
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--lambdas") from None
    return {key: value for key, value in (("n_lams", n_lams), ("eps", lam_min_ratio)) if value is not None}


def _fit_estimator(penalty: str, groups, l1_ratio: float, folds, grid: dict, selection, n_jobs):
    """The CV estimator of ``--penalty`` with its options (a fresh, unfitted normpen.linear object)."""
    import normpen.linear as linear

    model = names.MODELS[penalty]
    options = {**model.fixed, **grid, "cv": folds, "selection": selection, "n_jobs": n_jobs}
    options.update(model.options(l1_ratio=l1_ratio, groups=groups))
    return getattr(linear, model.estimator)(**options)


def _folds(task: str, k: int, seed: int):
    """Shuffled K-fold (stratified for classification), seeded, so that refits see the same folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = StratifiedKFold if task == "classification" else KFold
    return splitter(n_splits=k, shuffle=True, random_state=seed)


def _load_training_table(data: Path | None, target: str | None, sep, decimal, thousands):
    """The table as read (:class:`normpen.tabular.TableRead`) and its target column: the user's file, or the
    embedded diabetes data."""
    if data is None:
        from normpen.datasets import load
        from normpen.tabular import TableRead, frame_from_arrays

        diabetes = load("diabetes")
        frame = frame_from_arrays(diabetes.X, diabetes.y, diabetes.feature_names, DIABETES_TARGET)
        return TableRead(frame, {}), target or DIABETES_TARGET
    if target is None:
        raise typer.BadParameter("name the column to predict, e.g. --target price", param_hint="--target")
    return _read(data, sep, decimal, thousands), target


def _use_sparse(encoder) -> bool:
    """Whether the design matrix pays to be sparse: many one-hot columns, more than the numeric ones."""
    one_hot = sum(len(levels) for levels in encoder.levels)
    return one_hot >= SPARSE_MIN_COLUMNS and one_hot > len(encoder.numeric)


_REGRESSION_MODELS = ", ".join(m.name for m in names.MODELS.values() if m.task == "regression")


def _check_classes(y):
    """Class labels fit for classification: finite, not a continuous quantity, 2 to MAX_CLASSES classes."""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("the target holds infinite values; class labels must be finite or text")
        if not np.all(y == np.round(y)):
            example = y[y != np.round(y)][0]
            raise ValueError(
                f"the target holds non-integer numbers (e.g. {example:g}): a quantity, not class labels; "
                f"use a regression penalty (--penalty lasso, or one of {_REGRESSION_MODELS})"
            )
    distinct = np.unique(y) if y.dtype.kind in "biuf" else y  # text is a function of the value: fewer calls
    classes = np.unique([_label_text(label) for label in distinct])
    if classes.size < 2:
        raise ValueError(f"the target has a single class ({classes[0]!r}); classification needs two or more")
    if classes.size > MAX_CLASSES:
        raise ValueError(
            f"the target has {classes.size} classes, more than {MAX_CLASSES}: it looks like a quantity or an "
            "identifier; for a quantity use a regression penalty (--penalty lasso), otherwise merge classes"
        )


def _check_trainable(X, y, task, k):
    """Enough rows for ``k`` folds and, for classification, labels fit for it (:func:`_check_classes`)."""
    if X.shape[0] < k:
        raise ValueError(f"{X.shape[0]} rows are too few for --cv {k}; lower --cv or add rows")
    if task == "classification":
        _check_classes(y)


def _label_text(label) -> str:
    """A class label as people write it: ``5`` for the float 5.0 a column with missing values holds."""
    from normpen.tabular import _level_key

    return _level_key(label)


def _mathtext_free(text: str) -> str:
    """``text`` for a matplotlib label: ``$`` escaped so that a name such as ``income_$_tax_$`` is no
    math text."""
    return _terminal_text(text).replace("$", r"\$")


def _path_figure(estimator, X, y, feature_names):
    """The coefficient path over the CV grid, from the estimator's own warm-started path on all the data,
    λ_min and λ_1se marked, the TOP_CURVES largest coefficients (at the refit's λ) named and the others
    drawn grey under one legend entry."""
    import math

    from normpen.sweep import plain_log_ticks

    path = estimator.fit_path(X, y)
    figure = path.plot()
    ax = figure.axes[0]
    scale = path.lambda_max if math.isfinite(path.lambda_max) and path.lambda_max > 0 else 1.0
    coefs = path.coefs.reshape(len(path.lams), -1)
    names = list(feature_names)
    if path.coefs.ndim == 3:  # (strengths, features, classes): the lines run over the classes fastest
        names = [f"[{_label_text(c)}] {name}" for name in feature_names for c in estimator.classes_]
    chosen = int(np.argmin(np.abs(path.lams - estimator.lam_)))
    order = np.argsort(-np.abs(coefs[chosen]), kind="stable")
    top = set(order[:TOP_CURVES][coefs[chosen, order[:TOP_CURVES]] != 0].tolist())
    others, colours = 0, iter(TOP_COLOURS)
    for j, (line, name) in enumerate(zip(ax.get_lines(), names, strict=False)):
        if j in top:
            line.set(label=_mathtext_free(name), color=next(colours), zorder=2)
            continue
        line.set(color="0.7", linewidth=0.6, zorder=1, label="_nolegend_" if others else "other coefficients")
        others += 1
    ax.axvline(estimator.lam_min_ / scale, color="k", ls="--", lw=1, label="λ_min")
    ax.axvline(estimator.lam_1se_ / scale, color="k", ls=":", lw=1, label="λ_1se")
    ax.set_ylabel("coefficient (standardised features)")
    plain_log_ticks(ax)
    handles, labels = ax.get_legend_handles_labels()
    last = ("other coefficients", "λ_min", "λ_1se")
    order_top = sorted(range(len(labels)), key=lambda i: labels[i] in last)
    ax.legend(
        [handles[i] for i in order_top],
        [labels[i] for i in order_top],
        fontsize=7,
        frameon=False,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
    )
    figure.set_layout_engine("constrained")
    return figure


def _cv_figure(estimator, error_name):
    """The estimator's CV curve (mean held-out error ± one standard error), its axis named by the error."""
    from normpen.sweep import plain_log_ticks

    figure = estimator.plot()
    figure.axes[0].set_ylabel(f"{error_name} (held-out, mean ± 1 s.e.)")
    plain_log_ticks(figure.axes[0])
    return figure


def _coefficient_rows(estimator, encoder) -> tuple[list[str], list[list]]:
    """Header and rows of the coefficient table: standardised and original-unit coefficients per feature."""
    coef = np.atleast_2d(estimator.coef_)
    intercept = np.atleast_1d(estimator.intercept_)
    original, original_intercept = encoder.original_units(coef, intercept)
    labels = [""] if coef.shape[0] == 1 else [f" [{_label_text(c)}]" for c in estimator.classes_]
    header = ["feature"]
    header += [f"coefficient{label}" for label in labels]
    header += [f"standardised{label}" for label in labels]
    names = [*encoder.feature_names, "(intercept)"]
    table_original = np.column_stack([original, np.atleast_1d(original_intercept)])
    table_standardised = np.column_stack([coef, intercept])
    rows = [[name, *table_original[:, j], *table_standardised[:, j]] for j, name in enumerate(names)]
    return header, rows


def _csv_bytes(header, rows, digits=17) -> bytes:
    """CSV of ``rows`` under ``header``: floats to ``digits`` significant digits, text made safe for a
    spreadsheet (:func:`_spreadsheet_text`)."""
    import csv
    import io

    def cell(value):
        if isinstance(value, float | np.floating):
            return f"{value:.{digits}g}"
        return _spreadsheet_text(value) if isinstance(value, str) else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([_spreadsheet_text(name) for name in header])
    writer.writerows([[cell(v) for v in row] for row in rows])
    return buffer.getvalue().encode("utf-8")


def _json_bytes(document) -> bytes:
    """``document`` as indented JSON, a non-finite float written as null (JSON has no inf or NaN)."""
    import json

    def finite(value):
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: finite(v) for key, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    text = json.dumps(finite(document), indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _grid_edge_warning(estimator) -> str | None:
    """A warning when λ_min is the largest or the smallest λ of the grid: the best λ may lie beyond it."""
    lams = estimator.lams_
    best = int(np.argmin(estimator.cv_mean_))
    if best == 0:
        return (
            f"λ_min = {lams[0]:.4g} is the largest λ of the grid, where the model is simplest: the "
            "features may not predict the target, or the best λ lies above; widen the grid with "
            "--lambdas MIN:MAX:N"
        )
    if best == len(lams) - 1:
        return (
            f"λ_min = {lams[-1]:.4g} is the smallest λ of the grid and the CV error may still fall "
            "below it; "
            "widen the grid with --lam-min-ratio (e.g. 1e-6) or --lambdas MIN:MAX:N"
        )
    return None


def _fit_summary(penalty, estimator, encoder, X, header, rows) -> dict:
    best = int(np.argmin(np.abs(estimator.lams_ - estimator.lam_min_)))
    one_se = int(np.argmin(np.abs(estimator.lams_ - estimator.lam_1se_)))
    width = (len(header) - 1) // 2
    return {
        "penalty": penalty,
        "estimator": type(estimator).__name__,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "cv_error": names.MODELS[penalty].error,
        "lams": [float(lam) for lam in estimator.lams_],
        "lam_min": estimator.lam_min_,
        "lam_1se": estimator.lam_1se_,
        "lam": estimator.lam_,
        "cv_error_min": float(estimator.cv_mean_[best]),
        "cv_se_min": float(estimator.cv_se_[best]),
        "cv_error_1se": float(estimator.cv_mean_[one_se]),
        "dual_gap": float(estimator.dual_gap_),
        "classes": [_label_text(c) for c in getattr(estimator, "classes_", [])],
        "coefficients": {row[0]: [float(v) for v in row[1 : 1 + width]] for row in rows},
        "encoder": encoder.to_dict(),
    }


def _decisions_table(decisions) -> Table:
    """The "what I did with your data" table: one row per decision, warnings in yellow."""
    table = Table("column", "what I did", "why", title="what I did with your data", title_justify="left")
    for decision in decisions:
        style = "yellow" if decision.warn else None
        cells = (decision.column, decision.action, decision.reason)
        table.add_row(*(escape(_terminal_text(cell)) for cell in cells), style=style)
    return table


def _zero_count(coef, n_features) -> str:
    """How many coefficients are exactly zero, counted over every class of a multiclass model."""
    coef = np.atleast_2d(coef)
    zeros = int(np.sum(coef == 0))
    if coef.shape[0] == 1:
        return f"{zeros} of {coef.size} coefficients are exactly zero"
    unused = int(np.sum(np.all(coef == 0, axis=0)))
    return (
        f"{zeros} of {coef.size} coefficients ({n_features} features x {coef.shape[0]} classes) are "
        "exactly "
        f"zero; {unused} of {n_features} features are zero for every class"
    )


def _coefficient_tables(header, rows, width, console_width) -> list[Table]:
    """The nonzero coefficients (original units) and the intercept, as tables that fit ``console_width``:
    numbers never clipped, the classes of a multiclass model split over several tables when needed."""
    selected = [row for row in rows[:-1] if any(v != 0 for v in row[1 : 1 + width])] + [rows[-1]]
    names = [escape(_terminal_text(row[0])) for row in selected]
    cells = [[f"{v:.6g}" for v in row[1 : 1 + width]] for row in selected]
    name_width = min(max(len(name) for name in names), 30)
    widths = [max(len(header[1 + c]), *(len(row[c]) for row in cells)) for c in range(width)]
    per_table = max(1, (console_width - name_width - 4) // (max(widths) + 3))
    tables = []
    for start in range(0, width, per_table):
        columns = range(start, min(start + per_table, width))
        title = "selected coefficients (original units)" if start == 0 else None
        table = Table(title=title, title_justify="left")
        table.add_column(header[0], overflow="fold", min_width=min(name_width, 12))
        for c in columns:
            table.add_column(
                escape(_terminal_text(header[1 + c])), justify="right", no_wrap=True, min_width=widths[c]
            )
        for name, row in zip(names, cells, strict=True):
            table.add_row(name, *(row[c] for c in columns))
        tables.append(table)
    return tables


def _print_fit(summary, decisions, header, rows, coef, out):
    console = Console(emoji=False)
    if decisions:
        console.print(_decisions_table(decisions))
    console.print(
        f"{summary['estimator']} on {summary['n_samples']} rows x {summary['n_features']} features; "
        f"{summary['cv_error']} by cross-validation",
        highlight=False,
    )
    console.print(
        f"λ_min = {summary['lam_min']:.4g} (CV error {summary['cv_error_min']:.4g} "
        f"± {summary['cv_se_min']:.2g}), λ_1se = {summary['lam_1se']:.4g} "
        f"(CV error {summary['cv_error_1se']:.4g}); refit at λ = {summary['lam']:.4g}",
        highlight=False,
    )
    width = (len(header) - 1) // 2
    for table in _coefficient_tables(header, rows, width, console.width):
        console.print(table)
    console.print(_zero_count(coef, len(rows) - 1), highlight=False)
    console.print(f"written to {escape(_terminal_text(out))}: {', '.join(FIT_FILES)}", highlight=False)


@contextmanager
def _fit_progress(quiet: bool, description: str):
    """A progress bar on stderr while the fit runs, advanced as each fold finishes; yields the estimator's
    ``on_fold`` callback (None with --quiet). A transient display: it leaves no line behind, and none at
    all when stderr is no terminal."""
    if quiet:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(escape(description), total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _one_blas_thread():
    """A context in which the BLAS behind numpy and scipy runs on one thread (threadpoolctl).

    The solvers' BLAS calls are on working-set-sized matrices, where a second
    thread's synchronisation costs more than it computes, and on a busy machine,
    where the threads wait for a free core, many times more: issue 14's
    multinomial L1 fit took 20-40 s of CPU with two BLAS threads on a loaded
    two-core machine, 4 s with one. ``--n-jobs`` uses more cores (folds in
    parallel; joblib sets its workers' own thread counts).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@app.command()
def fit(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Argument(
            help="CSV/TSV (optionally .gz, .bz2, .xz, .zip, .zst), Parquet or Excel file; the "
            "embedded diabetes data when left out."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Column to predict (diabetes: 'progression').")
    ] = None,
    penalty: FitModelOption = "lasso",
    l1_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="ρ of enet and sgl: ρ·L1 + (1−ρ)·(L2 or group).")
    ] = 0.5,
    cv: Annotated[int, typer.Option(help="Number of cross-validation folds.", min=2)] = 5,
    select: Annotated[
        Selection, typer.Option(help="λ of the refit: min (least CV error) or 1se (largest within 1 s.e.).")
    ] = Selection.min,
    lambdas: Annotated[
        str | None,
        typer.Option(
            metavar="MIN:MAX:N",
            help="The λ grid: N log-spaced values from MIN to MAX "
            "\\[default: from the λ where every coefficient is zero down to --lam-min-ratio times "
            "it]",
        ),
    ] = None,
    n_lams: Annotated[
        int | None,
        typer.Option(
            min=2, metavar="N", help="Size of the default grid \\[default: 100; 30 for logistic, 20 for svm]"
        ),
    ] = None,
    lam_min_ratio: Annotated[
        float | None,
        typer.Option(
            metavar="R",
            help="Smallest / largest λ of the default grid \\[default: 1e-3; 1e-6 for ridge, 1e-2 for svm]",
        ),
    ] = None,
    categorical: CategoricalOption = None,
    exclude: ExcludeOption = None,
    missing: MissingOption = Missing.error,
    max_levels: MaxLevelsOption = MAX_LEVELS,
    sep: SepOption = None,
    decimal: DecimalOption = None,
    thousands: ThousandsOption = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the shuffled folds.")] = 0,
    n_jobs: Annotated[
        int | None,
        typer.Option(metavar="N", help="Folds fitted in parallel (joblib; -1: every core) \\[default: 1]"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Directory for the files.")] = Path(
        "normpen-fit"
    ),
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="Replace files a previous fit wrote.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the summary as JSON.")
    ] = False,
    quiet: QuietOption = False,
):
    """Fit a penalized linear model with cross-validated λ; write the model, coefficients and figures.

    Exit codes: 0 done, 2 bad input (the message names the problem and the fix), 3 the fit failed.
    """
    import json
    import warnings

    from normpen.model_io import model_files
    from normpen.report.figures import figure_png
    from normpen.tabular import fit_encoder, training_data

    task = names.MODELS[penalty].task
    grid = _grid(lambdas, n_lams, lam_min_ratio)
    try:
        output = _claim_output(ctx, out, force, "normpen fit")
        table, target = _load_training_table(data, target, sep, decimal, thousands)
        encoder = fit_encoder(
            table.frame,
            target,
            na=missing.value,
            categorical=categorical or (),
            exclude=exclude or (),
            max_levels=max_levels,
        )
        # column-major: the layout the solvers work in, so the estimator takes X without copying it
        X, y = training_data(table.frame, encoder, task, sparse=_use_sparse(encoder), order="F")
        _check_trainable(X, y, task, cv)
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    decisions = [*table.decisions, *encoder.decisions]
    estimator = _fit_estimator(
        penalty, encoder.groups, l1_ratio, _folds(task, cv, seed), grid, select.value, n_jobs
    )
    size = len(grid["lams"]) if "lams" in grid else estimator.n_lams
    with (
        warnings.catch_warnings(record=True) as caught,
        _fit_progress(
            quiet or json_output,
            f"{type(estimator).__name__}: folds of {size} λ, then the refit and the path",
        ) as on_fold,
        _one_blas_thread(),
    ):
        warnings.simplefilter("always")
        try:
            estimator.fit(X, y, on_fold=on_fold)
            path_figure = _path_figure(estimator, X, y, encoder.feature_names)
        except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as err:
            _fail(f"the fit failed: {err}", EXIT_FIT_FAILED)
    if not np.all(np.isfinite(estimator.coef_)):
        _fail("the fit failed: non-finite coefficients; check the data for extreme values", EXIT_FIT_FAILED)
    header, rows = _coefficient_rows(estimator, encoder)
    summary = _fit_summary(penalty, estimator, encoder, X, header, rows)
    edge = _grid_edge_warning(estimator)
    summary["warnings"] = [
        *(f"{d.column}: {d.action} ({d.reason})" for d in decisions if d.warn),
        *([edge] if edge else []),
        *sorted({str(w.message) for w in caught}),
    ]
    summary["read"] = table.options
    summary["data"] = [decision.to_dict() for decision in decisions]
    metadata = {"penalty": penalty, "encoder": encoder.to_dict(), "task": task, "read": table.options}
    files = {
        **model_files(estimator, metadata),
        "coefficients.csv": _csv_bytes(header, rows),
        "path.png": figure_png(path_figure),
        "cv.png": figure_png(_cv_figure(estimator, summary["cv_error"])),
        "fit.json": _json_bytes(summary),
    }
    _commit_output(output, files)
    if json_output:
        typer.echo(json.dumps({**json.loads(_json_bytes(summary)), "out": str(out)}, ensure_ascii=False))
        return
    for message in summary["warnings"]:
        _note("warning", "yellow", message)
    if not quiet:
        _print_fit(summary, decisions, header, rows, estimator.coef_, out)


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


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Directory that `normpen fit --out` wrote.")],
    data: Annotated[Path, typer.Argument(help="Table (as for fit) with the model's feature columns.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Write the predictions to this CSV.")
    ] = None,
    sep: SepOption = None,
    decimal: DecimalOption = None,
    thousands: ThousandsOption = None,
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="Replace an existing --out file.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the predictions as JSON.")
    ] = False,
):
    """Predict with a saved model; score it too when DATA holds the target column.

    Prints CSV (row, prediction and, for logistic models, one probability per class) unless --out or
    --json. Exit codes: 0 done, 2 bad input.
    """
    import json

    from normpen._files import check_file_target
    from normpen.model_io import load_model

    try:
        saved = load_model(model)
        encoder = _saved_encoder(saved, model)
        if out is not None:
            check_file_target(out, force)
        if decimal is None and thousands is None:  # the number format the training file was read with
            decimal, thousands = (saved.metadata.get("read", {}).get(key) for key in ("decimal", "thousands"))
        frame = _read(data, sep, decimal, thousands).frame
        with np.errstate(over="ignore", invalid="ignore"):  # a value too large to standardise is named below
            X = encoder.transform(frame)
        rows = np.flatnonzero(encoder.rows(frame))
        _check_finite_design(X, rows, frame, encoder.feature_names, data)
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    estimator = saved.estimator
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite score is refused below
        header, columns = ["row", "prediction"], [rows, _prediction_column(estimator, X)]
        _check_finite_scores(estimator, X, rows, data)
        if hasattr(estimator, "predict_proba"):
            header += [f"p({_label_text(c)})" for c in estimator.classes_]
            columns += list(estimator.predict_proba(X).T)
    table = [list(values) for values in zip(*columns, strict=True)]
    result = {"predictions": _json_column(columns[1]), "rows": rows.tolist()}
    score = _score(estimator, frame, encoder, saved.metadata.get("task"))
    if score is not None:
        result["score"] = score
    if out is not None:
        _write_output_file(out, _csv_bytes(header, table, PREDICTION_DIGITS), force)
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False))
    elif out is None:
        typer.echo(_csv_bytes(header, table, PREDICTION_DIGITS).decode("utf-8"), nl=False)
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


def _prediction_column(estimator, X) -> np.ndarray:
    """Predictions of ``estimator``: class labels as text written as in the table (``5``, never ``5.0``),
    or numbers."""
    from sklearn.base import is_classifier

    predictions = estimator.predict(X)
    if is_classifier(estimator):
        return np.array([_label_text(label) for label in predictions], dtype=object)
    return predictions


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

SweepModel = Enum("SweepModel", {"mlp": "mlp", "linear": "linear"}, type=str)
#: ``--penalty`` of sweep: the penalties of normpen.penalties.names it applies to weight matrices.
SweepPenaltyOption = Annotated[
    str,
    _name_option(
        {p: names.PENALTIES[p].aliases for p in names.SWEEP_PENALTIES},
        lambda s: names.canonical(s, among=names.SWEEP_PENALTIES),
        "On the weight matrices; group: one group per unit.",
    ),
]
SweepMode = Enum("SweepMode", {m: m for m in ("coupled", "decoupled", "proximal")}, type=str)
SweepTask = Enum("SweepTask", {t: t for t in ("auto", "regression", "classification")}, type=str)


def _sweep_data(data, target, task, val_fraction, seed, na, categorical, exclude, max_levels, read_options):
    """The split to train on: the embedded digits, or the user's table (task from the target's type)."""
    from normpen.sweep import digits_data, table_data
    from normpen.tabular import is_numeric_column

    if data is None:
        return digits_data(val_fraction, seed)
    if target is None:
        raise typer.BadParameter("name the column to predict, e.g. --target label", param_hint="--target")
    table = _read(data, *read_options)
    if task == "auto" and target in table.frame.columns:
        task = "regression" if is_numeric_column(table.frame[target]) else "classification"
    return table_data(
        table.frame,
        target,
        task,
        val_fraction=val_fraction,
        seed=seed,
        na=na,
        categorical=categorical,
        exclude=exclude,
        max_levels=max_levels,
        decisions=table.decisions,
    )


def _sweep_table(result, title) -> Table:
    """λ, final losses and verdict per λ, λ* marked; numbers never clipped."""
    table = Table(title=escape(title), title_justify="left")
    for name in ("λ", "train loss", "validation loss"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict", overflow="fold")
    for k, (lam, verdict) in enumerate(zip(result.lams, result.verdicts(), strict=True)):
        mark = " ← λ*" if k == result.best else ""
        table.add_row(f"{lam:.3g}", f"{result.train[k]:.4g}", f"{result.val[k]:.4g}", verdict + mark)
    return table


@app.command()
def sweep(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Argument(help="Table (as for fit); the embedded digits when left out.")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Column to predict.")] = None,
    model: Annotated[
        SweepModel, typer.Option(help="mlp: one hidden ReLU layer; linear: none.")
    ] = SweepModel.mlp,
    penalty: SweepPenaltyOption = "l2",
    mode: Annotated[
        SweepMode, typer.Option(help="How the optimizer applies the penalty.")
    ] = SweepMode.coupled,
    lambdas: Annotated[
        str, typer.Option(metavar="MIN:MAX:N", help="The λ grid: N log-spaced values from MIN to MAX.")
    ] = "1e-6:1:7",
    epochs: Annotated[int, typer.Option(help="Passes over the training rows per λ.", min=1)] = 40,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layer.", min=1)] = 64,
    lr: Annotated[float, typer.Option(help="Adam's learning rate.", min=0.0)] = 1e-2,
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=1)] = 64,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Share of rows held out for validation \\[default: 0.25; digits: 0.8, to overfit]"),
    ] = None,
    task: Annotated[
        SweepTask, typer.Option(help="auto: regression for a numeric target, classification otherwise.")
    ] = SweepTask.auto,
    categorical: CategoricalOption = None,
    exclude: ExcludeOption = None,
    missing: MissingOption = Missing.error,
    max_levels: MaxLevelsOption = MAX_LEVELS,
    sep: SepOption = None,
    decimal: DecimalOption = None,
    thousands: ThousandsOption = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the split, the initial weights and the batches.")
    ] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Directory for the files.")] = Path(
        "normpen-sweep"
    ),
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="Replace files a previous sweep wrote.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the result as JSON.")
    ] = False,
    quiet: QuietOption = False,
):
    """Train a small network per λ; plot the losses, name the best λ, say where it over- and underfits.

    Exit codes: 0 done, 2 bad input, 3 training diverged (a non-finite or exploding loss).
    """
    import json
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from normpen.report.figures import figure_png
    from normpen.sweep import TrainingDiverged, parse_lambdas, train_sweep

    if val_fraction is None:
        val_fraction = DIGITS_VAL_FRACTION if data is None else 0.25
    if not 0 < val_fraction < 1:
        raise typer.BadParameter(f"{val_fraction} is not in (0, 1)", param_hint="--val-fraction")
    try:
        lams = parse_lambdas(lambdas)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--lambdas") from None
    model, mode = model.value, mode.value
    try:
        output = _claim_output(ctx, out, force, "normpen sweep")
        split = _sweep_data(
            data,
            target,
            task.value,
            val_fraction,
            seed,
            missing.value,
            categorical or (),
            exclude or (),
            max_levels,
            (sep, decimal, thousands),
        )
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    shown = quiet or json_output
    progress = nullcontext() if shown else Progress(*columns, console=Console(stderr=True), transient=True)
    with progress:
        bar = None if shown else progress.add_task(f"λ = {lams[0]:.2g}", total=len(lams) * epochs)

        def advance(k, epoch):
            if bar is not None:
                lam = lams[min(k + (epoch == epochs), len(lams) - 1)]
                progress.update(bar, advance=1, description=f"λ = {lam:.2g}")

        try:
            result = train_sweep(
                split,
                lams,
                penalty=penalty,
                mode=mode,
                model=model,
                hidden=hidden,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                on_epoch=advance,
            )
        except TrainingDiverged as err:
            _fail(f"training failed: {err}", EXIT_FIT_FAILED)
    document = {
        "model": model,
        "penalty": penalty,
        "mode": mode,
        "task": split.task,
        "n_train": int(split.X_train.shape[0]),
        "n_val": int(split.X_val.shape[0]),
        "data": [decision.to_dict() for decision in split.decisions],
        **result.to_dict(),
    }
    _commit_output(
        output,
        {
            "sweep.png": figure_png(result.figure()),
            "sweep.json": _json_bytes(document),
        },
    )
    if json_output:
        typer.echo(json.dumps({**json.loads(_json_bytes(document)), "out": str(out)}, ensure_ascii=False))
        return
    for decision in split.decisions:
        if decision.warn:
            _note("warning", "yellow", f"{decision.column}: {decision.action} ({decision.reason})")
    if quiet:
        return
    console = Console(emoji=False)
    if split.decisions:
        console.print(_decisions_table(split.decisions))
    console.print(_sweep_table(result, f"{model}, {penalty} ({mode})"))
    for line in result.diagnosis():
        console.print(line, highlight=False, markup=False)
    console.print(f"written to {escape(_terminal_text(out))}: {', '.join(SWEEP_FILES)}", highlight=False)
