"""The ``normpen`` command: one function per subcommand.

``normpen list`` lists the experiments; ``normpen report`` runs them and
writes the HTML report. A new subcommand is one more function decorated with
``@app.command()``. The experiments and the report machinery (matplotlib,
scikit-learn, later torch) are imported inside the commands that use them,
so ``normpen --help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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
    """List the experiments: name, the seed section each reproduces, and its claim."""
    from normpen.experiments import registry

    table = Table("name", "seed section", "claim", show_lines=True)
    for experiment in registry.select():
        table.add_row(experiment.name, experiment.seed_section, experiment.claim)
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
        bool, typer.Option("--force", help="Write into a non-empty directory that holds no normpen report.")
    ] = False,
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
    outcomes = run_experiments(experiments, quick, console=Console(stderr=True))
    index = write_report(out, outcomes, quick, force)
    console = Console()
    console.print(_summary_table(outcomes))
    console.print(f"report: {index}")
    failed = [outcome for outcome in outcomes if not outcome.passed]
    for outcome in failed:
        console.print(f"[red]FAILED[/red] {outcome.experiment.name}: {_failure_reason(outcome)}")
    if failed:
        raise typer.Exit(code=1)


def _summary_table(outcomes) -> Table:
    table = Table("experiment", "checks passed", "time", "result")
    for outcome in outcomes:
        passed = sum(check.passed for check in outcome.checks)
        colour = "green" if outcome.passed else "red"
        table.add_row(
            outcome.experiment.name,
            f"{passed}/{len(outcome.checks)}",
            f"{outcome.seconds:.2f} s",
            f"[{colour}]{outcome.verdict}[/{colour}]",
        )
    return table


def _failure_reason(outcome) -> str:
    """Why an outcome failed: the exception's last line, or each failed check with its numbers."""
    if outcome.error:
        return "raised " + outcome.error.strip().splitlines()[-1]
    return "; ".join(
        f"{check.name}: measured {check.measured}, expected {check.expected} "
        f"({check.criterion}, t = {check.tolerance})"
        for check in outcome.failed_checks
    )
