"""The report on disk: ``index.html``, ``results.json``, a PNG per figure and a manifest, written atomically.

Which files of an output directory belong to normpen is proven by the
manifest ``.normpen-manifest.json``: the SHA-256 of every file the report
wrote. A file is the report's own when it is a regular file (not a link)
with a report file name whose current content has a hash the manifest lists;
only such files are ever replaced or removed without ``force``. A file
anyone could have written (a ``results.json`` naming figures, say) proves
nothing. A missing or empty directory is taken; a non-empty one without a
manifest, or one where a report file name is taken by a file normpen did not
write (or that changed since), is refused unless ``force`` is given, and then
only the report's files are written into it: nothing else is deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from normpen import __version__
from normpen.experiments.base import VERDICT_STATUSES
from normpen.report.html import render_html
from normpen.report.runner import Outcome

__all__ = [
    "GENERATOR",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "RESULTS_FILE",
    "ReportDirError",
    "check_output_dir",
    "owned_files",
    "read_manifest",
    "results_document",
    "write_files",
    "write_report",
]

GENERATOR = "normpen report"
FORMAT_VERSION = 2
INDEX_FILE = "index.html"
RESULTS_FILE = "results.json"
MANIFEST_FILE = ".normpen-manifest.json"

#: The names a report writes: the page, the record, and ``<experiment>.<figure>.png`` (two slugs).
_SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_REPORT_FILE = re.compile(rf"index\.html|results\.json|{_SLUG}\.{_SLUG}\.png")


class ReportDirError(ValueError):
    """The output directory cannot take the report (a file, or files normpen did not write)."""


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(out: Path) -> dict[str, frozenset[str]] | None:
    """Report file name to the hashes the manifest in ``out`` lists; ``None`` if ``out`` holds no manifest.

    A manifest that is a link, is not JSON or was not written by normpen
    counts as none. Names that are not report file names (``holiday.png``,
    ``../x.png``) are dropped, so a forged manifest cannot claim other files.
    """
    path = Path(out) / MANIFEST_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("generator") != GENERATOR:
        return None
    files = document.get("files")
    return {
        name: frozenset(h for h in hashes if isinstance(h, str))
        for name, hashes in (files.items() if isinstance(files, dict) else ())
        if _REPORT_FILE.fullmatch(name) and isinstance(hashes, list)
    }


def owned_files(out: Path, manifest: Mapping[str, Collection[str]]) -> frozenset[str]:
    """The files of ``out`` that ``manifest`` proves normpen wrote: regular files whose hash it lists."""
    owned = set()
    for name, hashes in manifest.items():
        path = Path(out) / name
        if not path.is_symlink() and path.is_file() and sha256(path.read_bytes()) in hashes:
            owned.add(name)
    return frozenset(owned)


def check_output_dir(out: Path, force: bool, names: Collection[str] = (INDEX_FILE, RESULTS_FILE)) -> None:
    """Raise :class:`ReportDirError` unless a report whose files are ``names`` may be written to ``out``.

    Allowed: a missing or empty directory; a directory with a normpen
    manifest whose files at ``names`` (where they exist) are the report's
    own; and with ``force`` any directory, unless a report file name is taken
    by a directory.
    """
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise ReportDirError(f"{out} is a file (or a dangling link), not a directory; choose a directory")
    if not out.exists():
        return
    targets = [*names, MANIFEST_FILE]
    directories = [name for name in targets if not (out / name).is_symlink() and (out / name).is_dir()]
    if directories:
        raise ReportDirError(
            f"{out} holds directories named like the report's files ({', '.join(directories)}); "
            "move them or choose another directory"
        )
    if force:
        return
    manifest = read_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            raise ReportDirError(
                f"{out} is not empty and holds no normpen report (no {MANIFEST_FILE} written by normpen); "
                "choose a new or empty directory, or pass --force to write the report's files into it"
            )
        return
    owned = owned_files(out, manifest) | {MANIFEST_FILE}
    foreign = [name for name in targets if os.path.lexists(out / name) and name not in owned]
    if foreign:
        raise ReportDirError(
            f"{out} holds files the report would replace that normpen did not write or that changed "
            f"since (or links): {', '.join(foreign)}; move them, or pass --force to overwrite them"
        )


def _json_number(value):
    """JSON has no NaN or infinity: those become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _check_record(check, evidence: Collection[str]) -> dict:
    """A check's fields, NaN written as a string, and whether the verdict names it as evidence."""
    return {**check.to_dict(), "measured": _json_number(check.measured), "evidence": check.name in evidence}


def _experiment_record(outcome: Outcome) -> dict:
    experiment = outcome.experiment
    return {
        "name": experiment.name,
        "title": experiment.title,
        "seed_section": experiment.seed_section,
        "claim": experiment.claim,
        "verdict": experiment.verdict.to_dict(),
        "seed": outcome.seed,
        "notes": outcome.notes,
        "seconds": outcome.seconds,
        "passed": outcome.passed,
        "result": outcome.result,
        "error": outcome.error,
        "checks_passed": sum(check.passed for check in outcome.checks),
        "checks": [_check_record(check, experiment.verdict.evidence) for check in outcome.checks],
        "figures": [outcome.figure_file(name) for name in outcome.figures],
    }


def results_document(outcomes: Sequence[Outcome], quick: bool, version: str, seed: int | None = None) -> dict:
    """The content of ``results.json``: one record per experiment plus totals.

    ``seed`` is the seed given to every experiment, ``None`` when each ran
    with its own fixed seed; each record has the seed it ran with.
    """
    records = [_experiment_record(outcome) for outcome in outcomes]
    statuses = [r["verdict"]["status"] for r in records]
    totals = {
        "experiments": len(records),
        "experiments_passed": sum(r["passed"] for r in records),
        "failing": [r["name"] for r in records if not r["passed"]],
        "checks": sum(len(r["checks"]) for r in records),
        "checks_passed": sum(r["checks_passed"] for r in records),
        "empirical_checks": sum(c["empirical"] for r in records for c in r["checks"]),
        "statuses": {status: statuses.count(status) for status in VERDICT_STATUSES},
        "seconds": sum(r["seconds"] for r in records),
    }
    totals["passed"] = totals["experiments_passed"] == totals["experiments"]
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "normpen_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(quick),
        "seed": seed,
        "statuses": dict(VERDICT_STATUSES),
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
    target; only when all are on disk are they renamed into place, in the
    order of ``files`` (a rename is atomic and replaces a link, never what
    it points to), so a failure while writing (a full disk, say) removes the
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


def _manifest(files: Mapping[str, Collection[str]]) -> bytes:
    """The manifest's bytes: generator and, per file name, the hashes its content may have."""
    document = {"generator": GENERATOR, "files": {name: sorted(files[name]) for name in sorted(files)}}
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def write_report(
    out: Path, outcomes: Sequence[Outcome], quick: bool, force: bool = False, seed: int | None = None
) -> Path:
    """Write the report of ``outcomes`` to ``out``; return the path of ``index.html``.

    Everything is rendered in memory and ``out`` is checked
    (:func:`check_output_dir`) before anything is written. Then the manifest
    and the report's files are written all or nothing (:func:`write_files`),
    the manifest first; the files of the previous report that this one no
    longer has are removed only where the previous manifest proves them the
    report's own (:func:`owned_files`), and the manifest is then rewritten
    with the new files alone. Until then it also lists the previous hashes of
    the files being replaced and removed, so a process killed in between
    leaves a directory whose every report file is still proven normpen's.
    """
    out = Path(out)
    document = results_document(outcomes, quick, __version__, seed)
    figures = {
        outcome.figure_file(name): png for outcome in outcomes for name, png in outcome.figures.items()
    }
    html = render_html(document, figures)
    results = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    files = {**figures, INDEX_FILE: html.encode("utf-8"), RESULTS_FILE: results.encode("utf-8")}
    check_output_dir(out, force, files.keys())
    out.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out) or {}
    owned = owned_files(out, previous)
    hashes = {name: {sha256(data)} for name, data in files.items()}
    in_transition = {
        name: hashes.get(name, set()) | (previous[name] if name in owned else set())
        for name in files.keys() | owned
    }
    write_files(out, {MANIFEST_FILE: _manifest(in_transition), **files})
    for name in owned - files.keys():
        (out / name).unlink(missing_ok=True)
    write_files(out, {MANIFEST_FILE: _manifest(hashes)})
    return out / INDEX_FILE
