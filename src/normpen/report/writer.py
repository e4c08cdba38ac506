"""The report on disk: ``index.html``, ``results.json`` and one PNG per figure, written atomically.

``results.json`` is the report's record and its ownership marker: a directory
whose ``results.json`` says ``"generator": "normpen report"`` holds a previous
report, which a new one may replace. Any other non-empty directory is refused
unless ``force`` is given, and then only the report's own files are written
into it; nothing else is touched.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from normpen import __version__
from normpen.report.html import render_html
from normpen.report.runner import Outcome

__all__ = [
    "GENERATOR",
    "INDEX_FILE",
    "RESULTS_FILE",
    "ReportDirError",
    "check_output_dir",
    "results_document",
    "write_files",
    "write_report",
]

GENERATOR = "normpen report"
FORMAT_VERSION = 1
INDEX_FILE = "index.html"
RESULTS_FILE = "results.json"


class ReportDirError(ValueError):
    """The output directory cannot take the report (a file, or someone else's non-empty directory)."""


def _previous_figures(out: Path) -> frozenset[str] | None:
    """Figure files a previous normpen report in ``out`` wrote; ``None`` if ``out`` holds no such report.

    Only plain ``.png`` names are returned, so a tampered ``results.json``
    cannot point outside the directory.
    """
    try:
        document = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("generator") != GENERATOR:
        return None
    experiments = document.get("experiments")
    names = set()
    for experiment in experiments if isinstance(experiments, list) else []:
        figures = experiment.get("figures") if isinstance(experiment, dict) else None
        for name in figures if isinstance(figures, list) else []:
            if isinstance(name, str) and name.endswith(".png") and Path(name).name == name:
                names.add(name)
    return frozenset(names)


def check_output_dir(out: Path, force: bool) -> None:
    """Raise :class:`ReportDirError` unless the report may be written to ``out``.

    Allowed: a missing or empty directory, a directory holding a previous
    normpen report, and with ``force`` any directory.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportDirError(f"{out} is a file, not a directory; choose a directory for the report")
    if force or not out.exists() or not any(out.iterdir()) or _previous_figures(out) is not None:
        return
    raise ReportDirError(
        f"{out} is not empty and holds no normpen report (no {RESULTS_FILE} written by normpen); "
        "choose a new or empty directory, or pass --force to write the report's files into it"
    )


def _json_number(value):
    """JSON has no NaN or infinity: those become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _experiment_record(outcome: Outcome) -> dict:
    experiment = outcome.experiment
    checks = [{**check.to_dict(), "measured": _json_number(check.measured)} for check in outcome.checks]
    return {
        "name": experiment.name,
        "title": experiment.title,
        "seed_section": experiment.seed_section,
        "claim": experiment.claim,
        "seed": experiment.seed,
        "notes": outcome.notes,
        "seconds": outcome.seconds,
        "passed": outcome.passed,
        "verdict": outcome.verdict,
        "error": outcome.error,
        "checks_passed": sum(check.passed for check in outcome.checks),
        "checks": checks,
        "figures": [outcome.figure_file(name) for name in outcome.figures],
    }


def results_document(outcomes: Sequence[Outcome], quick: bool, version: str) -> dict:
    """The content of ``results.json``: one record per experiment plus totals."""
    records = [_experiment_record(outcome) for outcome in outcomes]
    totals = {
        "experiments": len(records),
        "experiments_passed": sum(r["passed"] for r in records),
        "checks": sum(len(r["checks"]) for r in records),
        "checks_passed": sum(r["checks_passed"] for r in records),
        "seconds": sum(r["seconds"] for r in records),
    }
    totals["passed"] = totals["experiments_passed"] == totals["experiments"]
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "normpen_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(quick),
        "totals": totals,
        "experiments": records,
    }


def _stage(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file in ``directory`` (flushed to disk); return its path."""
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a new file's mode
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write all of ``files`` (name to content) into ``directory``, or none of them.

    Every file is first written in full to a temporary file beside its
    target; only when all are on disk are they renamed into place (a rename
    is atomic), so a failure while writing (a full disk, say) removes the
    temporary files and leaves ``directory`` as it was.
    """
    directory = Path(directory)
    staged = {}
    try:
        for name, data in files.items():
            staged[name] = _stage(directory, name, data)
    except BaseException:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
        raise
    for name, temporary in staged.items():
        os.replace(temporary, directory / name)


def write_report(out: Path, outcomes: Sequence[Outcome], quick: bool, force: bool = False) -> Path:
    """Write the report of ``outcomes`` to ``out``; return the path of ``index.html``.

    Everything is rendered in memory first, then the figures, ``index.html``
    and ``results.json`` are written all or nothing (:func:`write_files`);
    figure files of a previous normpen report that this one no longer has
    are removed afterwards.
    """
    out = Path(out)
    check_output_dir(out, force)
    previous = _previous_figures(out) or frozenset()
    document = results_document(outcomes, quick, __version__)
    figures = {
        outcome.figure_file(name): png for outcome in outcomes for name, png in outcome.figures.items()
    }
    html = render_html(document, figures)
    results = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_files(out, {**figures, INDEX_FILE: html.encode("utf-8"), RESULTS_FILE: results.encode("utf-8")})
    for name in previous - figures.keys():
        (out / name).unlink(missing_ok=True)
    return out / INDEX_FILE
