r"""Seed robustness of the report's checks: every experiment in quick mode over many seeds (issue 12, item 3).

Each experiment of the registry (or those named with ``--only``) runs in
quick mode once per seed ``0 .. N-1`` (``--seeds N``, default 30, the
sweep an empirical check's recorded ``pass_rate`` refers to), in
``--jobs`` worker processes. For every check the script prints its pass rate
over the seeds and how far its measured values land from the threshold: the
*signed margin* :math:`s`, positive when the check passes and negative when
it fails,

.. math::

    s = \begin{cases}
        t - |m - e|          & \text{close}, \\
        (e + t) - m          & \text{at\_most}, \\
        m - (e - t)          & \text{at\_least}, \\
        -|m - e|             & \text{equal},
    \end{cases}

divided by a scale so that checks of different units compare: the
tolerance :math:`t` for ``close`` (a margin of 1 is a measurement exactly on
the expected value), the magnitude of the threshold :math:`|e \pm t|` for
``at_most`` / ``at_least`` (a margin of 0.5 means the measurement is at half
the bound), and :math:`|e|` for ``equal``; where that scale is 0 the margin is
absolute. The table shows the minimum and the median of the relative margin
over the seeds: a claim check whose minimum is close to 0 passes with little
room, and one below 0 fails on some seed (the report must then label it
empirical, with the pass rate printed here). A seed on which the experiment
raised counts as a failure of every check and is listed under the table.

Run ``python benchmarks/seed_sweep.py [--seeds 30] [--only NAME ...] [--jobs 4] [--json sweep.json]``.
``--json`` writes the raw table: one record per experiment and seed with the
measured value, threshold, margin and pass of every check (NaN written as
``NaN``, as Python's json module reads it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from normpen.experiments import registry
from normpen.experiments.base import SEED_SWEEP_SIZE, Check


def signed_margin(check: Check) -> float:
    """How far ``check``'s measurement lies inside (> 0) or outside (< 0) its threshold; NaN stays NaN."""
    m, e, t = check.measured, check.expected, check.tolerance
    if check.relation == "close":
        return t - abs(m - e)
    if check.relation == "at_most":
        return (e + t) - m
    if check.relation == "at_least":
        return m - (e - t)
    return -abs(m - e)


def margin_scale(check: Check) -> float:
    """The scale the margin is divided by: tolerance (close), |threshold| (bounds), |e| (equal); 1 if 0."""
    e, t = check.expected, check.tolerance
    scale = {"close": t, "at_most": abs(e + t), "at_least": abs(e - t), "equal": abs(e)}[check.relation]
    return scale if scale > 0 else 1.0


def check_record(check: Check) -> dict:
    """The check's fields plus its signed margin, the scale and the relative margin."""
    margin = signed_margin(check)
    scale = margin_scale(check)
    return {**check.to_dict(), "margin": margin, "scale": scale, "relative_margin": margin / scale}


def run_one(name: str, seed: int) -> dict:
    """Run experiment ``name`` in quick mode with ``seed``; its check records, or the error it raised."""
    (experiment,) = registry.select([name])
    start = time.perf_counter()
    try:
        result = experiment.run(quick=True, seed=seed)
    except Exception:
        return {
            "experiment": name,
            "seed": seed,
            "seconds": time.perf_counter() - start,
            "error": traceback.format_exc(),
            "checks": [],
        }
    return {
        "experiment": name,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "error": None,
        "checks": [check_record(check) for check in result.checks],
    }


def sweep(names: list[str], seeds: list[int], jobs: int, console: Console) -> list[dict]:
    """Every (experiment, seed) pair run once, in ``jobs`` processes, with a progress bar; records sorted."""
    tasks = [(name, seed) for name in names for seed in seeds]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    records = []
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("seed sweep", total=len(tasks))
        if jobs == 1:
            for name, seed in tasks:
                progress.update(bar, description=f"{name} seed {seed}")
                records.append(run_one(name, seed))
                progress.advance(bar)
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(run_one, name, seed) for name, seed in tasks]
                for future in as_completed(futures):
                    record = future.result()
                    progress.update(bar, description=f"{record['experiment']} seed {record['seed']}")
                    records.append(record)
                    progress.advance(bar)
    return sorted(records, key=lambda r: (names.index(r["experiment"]), r["seed"]))


def summarize(records: list[dict]) -> list[dict]:
    """Per experiment and check: kind, pass rate over all seeds, failing seeds, min and median margin.

    A seed on which the experiment raised counts as a failing seed of each of its checks.
    """
    rows = {}
    seeds = {}
    raised = {}
    for record in records:
        seeds.setdefault(record["experiment"], set()).add(record["seed"])
        if record["error"] is not None:
            raised.setdefault(record["experiment"], []).append(record["seed"])
        for check in record["checks"]:
            row = rows.setdefault(
                (record["experiment"], check["name"]),
                {
                    "experiment": record["experiment"],
                    "check": check["name"],
                    "relation": check["relation"],
                    "empirical": check["empirical"],
                    "recorded_pass_rate": check["pass_rate"],
                    "passed": 0,
                    "failing_seeds": [],
                    "margins": [],
                },
            )
            row["passed"] += check["passed"]
            if not check["passed"]:
                row["failing_seeds"].append(record["seed"])
            row["margins"].append(check["relative_margin"])
    summary = []
    for row in rows.values():
        margins = [m for m in row.pop("margins") if not math.isnan(m)]
        runs = len(seeds[row["experiment"]])
        failing = sorted(row.pop("failing_seeds") + raised.get(row["experiment"], []))
        summary.append(
            {
                **row,
                "seeds": runs,
                "pass_rate": row["passed"] / runs,
                "failing_seeds": failing,
                "min_margin": min(margins, default=math.nan),
                "median_margin": statistics.median(margins) if margins else math.nan,
            }
        )
    return summary


def _rate(value: float) -> str:
    return f"{100 * value:.0f}%"


def summary_tables(summary: list[dict]) -> list[Table]:
    """The printed tables: one per experiment, one row per check; failing claim checks in red."""
    tables = {}
    for row in summary:
        table = tables.get(row["experiment"])
        if table is None:
            table = tables[row["experiment"]] = Table(
                "check",
                "kind",
                "pass rate",
                "min margin",
                "median margin",
                "failing seeds",
                title=row["experiment"],
                title_justify="left",
            )
        kind = f"empirical ({_rate(row['recorded_pass_rate'])} recorded)" if row["empirical"] else "claim"
        style = "red" if row["pass_rate"] < 1 and not row["empirical"] else None
        table.add_row(
            row["check"],
            kind,
            f"{_rate(row['pass_rate'])} of {row['seeds']}",
            f"{row['min_margin']:.3g}",
            f"{row['median_margin']:.3g}",
            " ".join(map(str, row["failing_seeds"])),
            style=style,
        )
    return list(tables.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=SEED_SWEEP_SIZE, help=f"run seeds 0 .. N-1 (default {SEED_SWEEP_SIZE})"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these experiments")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw table (every seed) here")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        names = [experiment.name for experiment in registry.select(args.only)]
    except ValueError as err:
        parser.error(str(err))
    console = Console(width=max(Console().width, 140))
    records = sweep(names, list(range(args.seeds)), args.jobs, Console(stderr=True))
    summary = summarize(records)
    console.print(
        "Relative margin: distance to the threshold over the tolerance (close) or |threshold| "
        "(bounds); < 0 fails. A seed on which an experiment raised fails all its checks."
    )
    for table in summary_tables(summary):
        console.print(table)
    for record in records:
        if record["error"] is not None:
            last = record["error"].strip().splitlines()[-1]
            console.print(f"[red]ERROR[/red] {record['experiment']} seed {record['seed']}: {last}")
    if args.json is not None:
        document = {"seeds": args.seeds, "records": records, "summary": summary}
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
