"""The experiment contract (Check, Result, Experiment, registry) and the report runner, writer and html."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure

from normpen.experiments import registry
from normpen.experiments.base import SEED_SWEEP_SIZE, VERDICT_STATUSES, Check, Experiment, Result, Verdict
from normpen.report import figures as report_figures
from normpen.report import writer
from normpen.report.html import format_number, render_html
from normpen.report.runner import Outcome, run_experiment, run_experiments
from normpen.report.writer import (
    MANIFEST_FILE,
    ReportDirError,
    check_output_dir,
    owned_files,
    read_manifest,
    results_document,
    write_files,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
finite = st.floats(-1e12, 1e12, allow_nan=False)
tolerances = st.floats(0, 1e6, allow_nan=False)


# ---- Check -------------------------------------------------------------------


@given(measured=finite, expected=finite, rtol=tolerances, atol=tolerances)
def test_close_passes_exactly_within_atol_plus_rtol_times_expected(measured, expected, rtol, atol):
    if rtol + atol == 0:
        atol = 1.0
    check = Check.close("c", measured, expected, rtol=rtol, atol=atol)
    assert check.tolerance == atol + rtol * abs(expected)
    assert check.passed == (abs(measured - expected) <= atol + rtol * abs(expected))
    assert check.relation == "close"


@given(measured=finite, bound=finite, atol=tolerances)
def test_at_most_and_at_least_compare_with_the_bound_and_slack(measured, bound, atol):
    assert Check.at_most("c", measured, bound, atol=atol).passed == (measured <= bound + atol)
    assert Check.at_least("c", measured, bound, atol=atol).passed == (measured >= bound - atol)


@given(measured=st.integers(-5, 5), expected=st.integers(-5, 5))
def test_equal_is_exact(measured, expected):
    check = Check.equal("c", measured, expected)
    assert check.passed == (measured == expected)
    assert check.tolerance == 0.0


def test_a_check_just_outside_its_tolerance_fails():
    # IEEE arithmetic, the same everywhere: (1 + 1e-6) - 1 rounds to 9.99999999918e-7 <= 1e-6
    assert Check.close("c", 1.0 + 1e-6, 1.0, atol=1e-6).passed
    assert not Check.close("c", 1.0 + 2e-6, 1.0, atol=1e-6).passed
    assert not Check.at_most("c", 1.5, 1.0, atol=0.25).passed
    assert not Check.at_least("c", 0.5, 1.0, atol=0.25).passed


@pytest.mark.parametrize(
    "make",
    [
        lambda m: Check.close("c", m, 0.0, atol=1e300),
        lambda m: Check.at_most("c", m, 1e300),
        lambda m: Check.at_least("c", m, -1e300),
        lambda m: Check.equal("c", m, 0),
    ],
)
def test_nan_never_passes(make):
    assert not make(math.nan).passed


def test_passed_is_computed_and_cannot_be_set():
    check = Check.equal("c", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.passed = True
    with pytest.raises(TypeError):
        Check("c", 1, 2, 0.0, "equal", passed=True)
    assert not check.passed


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.float32(0.5), 0.5),
        (np.int64(3), 3),
        (np.bool_(True), 1),
        (np.array(2.5), 2.5),
        (torch.tensor(4), 4),
        (True, 1),
    ],
)
def test_measured_accepts_numpy_and_torch_scalars(value, expected):
    check = Check.equal("c", value, expected)
    assert check.measured == expected
    assert type(check.measured) in (int, float)
    assert check.passed


def test_integer_measurements_stay_integers_in_the_record():
    assert Check.equal("count", np.int64(3), 3).to_dict()["measured"] == 3
    assert isinstance(Check.equal("count", np.int64(3), 3).to_dict()["measured"], int)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Check.close("c", 1.0, 1.0), ValueError, "Check.equal"),
        (lambda: Check.close("c", 1.0, 1.0, rtol=-1.0, atol=1.0), ValueError, "rtol >= 0"),
        (lambda: Check.at_most("c", 1.0, 2.0, atol=-1.0), ValueError, "tolerance"),
        (lambda: Check.equal("c", np.ones(3), 1.0), TypeError, "reduce arrays"),
        (lambda: Check.equal("c", "1", 1.0), TypeError, "measured must be a real number"),
        (lambda: Check.equal("c", 1.0, math.nan), ValueError, "expected must be finite"),
        (lambda: Check.equal("", 1.0, 1.0), ValueError, "non-empty"),
        (lambda: Check("c", 1.0, 1.0, 0.0, "roughly"), ValueError, "relation must be one of"),
        (lambda: Check("c", 1.0, 1.0, 0.1, "equal"), ValueError, "tolerance 0"),
    ],
)
def test_bad_checks_are_refused_with_a_clear_message(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_to_dict_has_every_field_and_the_verdict():
    record = Check.at_most("kkt", 2e-15, 0.0, atol=1e-9).to_dict()
    assert record == {
        "name": "kkt",
        "measured": 2e-15,
        "expected": 0,
        "tolerance": 1e-9,
        "relation": "at_most",
        "criterion": "m ≤ e + t",
        "passed": True,
        "empirical": False,
        "pass_rate": None,
        "kind": "claim",
    }


def test_an_empirical_check_is_labelled_with_its_pass_rate_over_the_sweep():
    check = Check.at_least("mode gain", 0.5, 1.0, pass_rate=28 / 30)
    assert check.empirical and not check.passed
    assert check.kind == f"empirical, passes on 93% of {SEED_SWEEP_SIZE} seeds"
    assert check.to_dict()["kind"] == check.kind and check.to_dict()["pass_rate"] == 28 / 30


# ---- Result and Experiment ------------------------------------------------------


def _compute_passing(quick, seed):
    fig = Figure()
    fig.subplots().plot([0, 1], [seed, 1 if quick else 2])
    return Result(checks=[Check.equal("seed", seed, seed)], figures={"line": fig}, notes=f"quick={quick}")


WORKS = Verdict("confirmed", "It works.")


def _experiment(name="fake", compute=_compute_passing, seed=7, verdict=WORKS):
    return Experiment(
        name=name,
        title="Fake",
        seed_section="000 Nowhere",
        claim="It works.",
        compute=compute,
        seed=seed,
        verdict=verdict,
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"checks": []}, ValueError, "at least one Check"),
        ({"checks": [Check.equal("a", 1, 1), Check.equal("a", 2, 2)]}, ValueError, "repeated: \\['a'\\]"),
        ({"checks": [("a", 1, 1)]}, TypeError, "Check objects"),
        ({"checks": [Check.equal("a", 1, 1)], "figures": {"line": "png"}}, TypeError, "matplotlib Figure"),
        ({"checks": [Check.equal("a", 1, 1)], "figures": {"Bad Name": Figure()}}, ValueError, "slug"),
    ],
)
def test_bad_results_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Result(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "Has Spaces"}, "lowercase slug"),
        ({"name": "double--hyphen"}, "lowercase slug"),
        ({"claim": " "}, "claim must be a non-empty string"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": 1.5}, "seed must be an int >= 0"),
    ],
)
def test_bad_experiments_are_refused(kwargs, match):
    fields = {
        "name": "fake",
        "title": "Fake",
        "seed_section": "000",
        "claim": "It works.",
        "compute": _compute_passing,
        "verdict": WORKS,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        Experiment(**fields)


def test_run_passes_the_fixed_seed_and_quick_flag():
    result = _experiment(seed=7).run(quick=True)
    assert result.checks[0].measured == 7
    assert result.notes == "quick=True"


def test_run_refuses_a_compute_that_returns_something_else():
    with pytest.raises(TypeError, match="expected a Result"):
        _experiment(compute=lambda quick, seed: {"checks": []}).run()


# ---- registry -------------------------------------------------------------------


def test_registry_names_are_unique_slugs_and_select_keeps_registry_order(monkeypatch):
    names = [e.name for e in registry.select()]
    assert len(names) == len(set(names)) >= 1
    a, b = _experiment("a"), _experiment("b")
    monkeypatch.setattr(registry, "EXPERIMENTS", (a, b))
    assert registry.select(["b", "a"]) == [a, b]
    assert registry.select(["b"]) == [b]
    assert registry.select(None) == registry.select([]) == [a, b]


def test_registry_rejects_unknown_names_listing_the_known_ones(monkeypatch):
    monkeypatch.setattr(registry, "EXPERIMENTS", (_experiment("a"), _experiment("b")))
    with pytest.raises(ValueError, match="unknown experiment 'zzz'; choose from: a, b"):
        registry.select(["a", "zzz"])


def test_every_registered_experiment_declares_a_verdict_on_the_texts_claim():
    """Issue 12 item 4: confirmed, narrowed, refuted or literature, for every experiment of the report."""
    missing = [e.name for e in registry.EXPERIMENTS if not isinstance(e.verdict, Verdict)]
    assert missing == []


def test_registry_rejects_two_experiments_with_one_name(monkeypatch):
    monkeypatch.setattr(registry, "EXPERIMENTS", (_experiment("a"), _experiment("a")))
    with pytest.raises(ValueError, match="two registered experiments are named 'a'"):
        registry.select()


# ---- runner ---------------------------------------------------------------------


def test_run_experiment_renders_figures_to_png():
    outcome = run_experiment(_experiment(), quick=True)
    assert outcome.passed and outcome.result == "pass" and outcome.error is None
    assert outcome.figures["line"].startswith(PNG_SIGNATURE)
    assert outcome.figure_file("line") == "fake.line.png"
    assert outcome.seconds > 0


def test_a_raising_experiment_becomes_an_error_outcome_with_its_traceback():
    def compute(quick, seed):
        raise RuntimeError("the solver diverged")

    outcome = run_experiment(_experiment(compute=compute), quick=False)
    assert not outcome.passed and outcome.result == "error"
    assert "RuntimeError: the solver diverged" in outcome.error
    assert "in compute" in outcome.error
    assert outcome.checks == () and dict(outcome.figures) == {}


def test_a_failing_check_fails_the_outcome():
    def compute(quick, seed):
        return Result(checks=[Check.equal("ok", 1, 1), Check.at_most("bad", 2.0, 1.0)])

    outcome = run_experiment(_experiment(compute=compute), quick=True)
    assert outcome.result == "fail"
    assert [c.name for c in outcome.failed_checks] == ["bad"]


def test_pyplot_figures_are_closed_after_rendering():
    def compute(quick, seed):
        fig = plt.figure()
        return Result(checks=[Check.equal("ok", 1, 1)], figures={"pyplot": fig})

    before = set(plt.get_fignums())
    outcome = run_experiment(_experiment(compute=compute), quick=True)
    assert outcome.figures["pyplot"].startswith(PNG_SIGNATURE)
    assert set(plt.get_fignums()) == before


def test_run_experiments_runs_all_in_order_and_goes_on_after_an_error():
    from rich.console import Console

    def boom(quick, seed):
        raise ValueError("boom")

    console = Console(record=True, width=100)
    outcomes = run_experiments(
        [_experiment("a"), _experiment("b", compute=boom), _experiment("c")], True, console
    )
    assert [o.experiment.name for o in outcomes] == ["a", "b", "c"]
    assert [o.result for o in outcomes] == ["pass", "error", "pass"]
    assert "3/3" in console.export_text()


# ---- writer and html ---------------------------------------------------------------


CONFIRMED = Verdict("confirmed", "It works, as the text says.")
REFUTED = Verdict("refuted", "The gap does not close.", evidence=("gap",))


def _outcomes():
    def failing(quick, seed):
        return Result(checks=[Check.close("gap", math.nan, 0.0, atol=1e-9), Check.equal("count", 3, 3)])

    return [
        run_experiment(_experiment("a", verdict=CONFIRMED), quick=True),
        run_experiment(_experiment("b", compute=failing, verdict=REFUTED), quick=True),
    ]


def test_results_document_totals_and_records():
    document = results_document(_outcomes(), quick=True, version="9.9")
    assert document["generator"] == "normpen report" and document["normpen_version"] == "9.9"
    assert document["seed"] is None and document["statuses"] == dict(VERDICT_STATUSES)
    assert document["totals"] == {
        "experiments": 2,
        "experiments_passed": 1,
        "failing": ["b"],
        "checks": 3,
        "checks_passed": 2,
        "empirical_checks": 0,
        "statuses": {"confirmed": 1, "narrowed": 0, "refuted": 1, "literature": 0},
        "seconds": pytest.approx(sum(r["seconds"] for r in document["experiments"]), rel=1e-15),  # 2 terms
        "passed": False,
    }
    a, b = document["experiments"]
    assert a["figures"] == ["a.line.png"] and b["figures"] == []
    assert b["checks"][0]["measured"] == "NaN" and b["checks"][0]["passed"] is False
    assert (a["result"], b["result"]) == ("pass", "fail")
    assert a["verdict"] == {
        "status": "confirmed",
        "meaning": VERDICT_STATUSES["confirmed"],
        "reason": CONFIRMED.reason,
        "evidence": [],
    }
    assert b["verdict"]["status"] == "refuted" and b["verdict"]["evidence"] == ["gap"]
    assert [c["evidence"] for c in b["checks"]] == [True, False]
    assert a["seed"] == 7


def test_the_seed_given_to_the_runner_reaches_the_experiment_and_the_record():
    outcome = run_experiment(_experiment(seed=7), quick=True, seed=12)
    assert outcome.seed == 12 and outcome.checks[0].measured == 12
    document = results_document([outcome], quick=True, version="0", seed=12)
    assert document["seed"] == 12 and document["experiments"][0]["seed"] == 12
    assert run_experiment(_experiment(seed=7), quick=True).seed == 7


def test_an_experiment_needs_a_verdict_given_by_keyword():
    fields = dataclasses.asdict(_experiment()) | {"compute": _compute_passing}
    del fields["verdict"]
    with pytest.raises(TypeError, match="verdict"):
        Experiment(**fields)
    with pytest.raises(TypeError, match="verdict must be a Verdict"):
        Experiment(**fields, verdict="confirmed")


def test_run_refuses_a_verdict_whose_evidence_names_no_check():
    with pytest.raises(ValueError, match=r"evidence names no check \['gap'\]"):
        _experiment(verdict=Verdict("refuted", "The gap stays.", evidence=("gap",))).run()


def test_write_report_writes_strict_json_html_pngs_and_a_manifest_of_their_hashes(tmp_path):
    outcomes = _outcomes()
    index = write_report(tmp_path / "new" / "report", outcomes, quick=True)
    out = index.parent
    names = ["a.line.png", "index.html", "results.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, MANIFEST_FILE])
    document = json.loads((out / "results.json").read_text(encoding="utf-8"), parse_constant=_no_constants)
    assert document["totals"]["experiments"] == 2
    assert (out / "a.line.png").read_bytes() == outcomes[0].figures["line"]
    assert oct((out / "index.html").stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())
    manifest = read_manifest(out)
    assert sorted(manifest) == names
    for name in names:
        assert manifest[name] == {hashlib.sha256((out / name).read_bytes()).hexdigest()}
    assert owned_files(out, manifest) == set(names)


def _no_constants(name):
    raise AssertionError(f"results.json must be strict JSON, found {name}")


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _snapshot(directory):
    """Every entry of ``directory``: file content, or ``link -> target`` for a link (not followed)."""
    return {
        path.name: f"link -> {os.readlink(path)}" if path.is_symlink() else path.read_bytes()
        for path in directory.iterdir()
    }


def test_check_output_dir_accepts_new_empty_and_own_dirs_and_refuses_others(tmp_path):
    check_output_dir(tmp_path / "missing", force=False)
    check_output_dir(tmp_path, force=False)
    write_report(tmp_path / "own", _outcomes(), quick=True)
    check_output_dir(tmp_path / "own", force=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"generator": "normpen report"}')
    with pytest.raises(ReportDirError, match="--force"):
        check_output_dir(foreign, force=False)
    check_output_dir(foreign, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportDirError, match="is a file"):
        check_output_dir(tmp_path / "file", force=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ReportDirError, match="dangling link"):
        check_output_dir(tmp_path / "dangling", force=True)


def test_a_directory_named_like_a_report_file_is_refused_even_with_force(tmp_path):
    (tmp_path / "index.html").mkdir()
    with pytest.raises(ReportDirError, match="directories named like the report's files"):
        write_report(tmp_path, _outcomes(), quick=True, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_a_previous_report_is_replaced_and_only_its_own_stale_files_removed(tmp_path):
    write_report(tmp_path, _outcomes(), quick=True)
    (tmp_path / "notes.txt").write_text("mine")
    write_report(tmp_path, _outcomes()[1:], quick=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [MANIFEST_FILE, "index.html", "notes.txt", "results.json"]
    assert sorted(read_manifest(tmp_path)) == ["index.html", "results.json"]


def test_a_report_file_changed_since_it_was_written_is_neither_removed_nor_replaced(tmp_path):
    write_report(tmp_path, _outcomes(), quick=True)
    (tmp_path / "a.line.png").write_bytes(b"my edited figure")
    write_report(tmp_path, _outcomes()[1:], quick=True)  # no longer has a.line.png
    assert (tmp_path / "a.line.png").read_bytes() == b"my edited figure"
    (tmp_path / "index.html").write_text("my edited page")
    before = _snapshot(tmp_path)
    with pytest.raises(ReportDirError, match="changed since.*index.html.*--force"):
        write_report(tmp_path, _outcomes(), quick=True)
    assert _snapshot(tmp_path) == before


def test_a_dangling_link_named_like_a_report_file_is_not_followed(tmp_path):
    write_report(tmp_path, _outcomes(), quick=True)
    target = tmp_path.parent / f"{tmp_path.name}-target.json"
    (tmp_path / "results.json").unlink()
    (tmp_path / "results.json").symlink_to(target)
    before = _snapshot(tmp_path)
    with pytest.raises(ReportDirError, match="results.json"):
        write_report(tmp_path, _outcomes(), quick=True)
    assert _snapshot(tmp_path) == before and not target.exists()
    write_report(tmp_path, _outcomes(), quick=True, force=True)
    assert not (tmp_path / "results.json").is_symlink() and not target.exists()
    assert json.loads((tmp_path / "results.json").read_text())["generator"] == "normpen report"


def test_a_forged_manifest_cannot_claim_files_that_are_not_report_files(tmp_path):
    victim = tmp_path.parent / f"{tmp_path.name}-victim.png"
    victim.write_bytes(b"keep me")
    (tmp_path / "holiday.png").write_bytes(b"keep me too")
    digest = hashlib.sha256(b"keep me").hexdigest()
    forged = {name: [digest] for name in ["holiday.png", f"../{victim.name}", "x/../../y.png"]}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"generator": "normpen report", "files": forged}))
    assert read_manifest(tmp_path) == {}
    write_report(tmp_path, _outcomes(), quick=True)
    assert victim.read_bytes() == b"keep me" and (tmp_path / "holiday.png").read_bytes() == b"keep me too"


@pytest.mark.parametrize("manifest", ["not json", "[]", '{"generator": "other", "files": {}}'])
def test_a_manifest_normpen_did_not_write_proves_nothing(tmp_path, manifest):
    write_report(tmp_path, _outcomes(), quick=True)
    (tmp_path / MANIFEST_FILE).write_text(manifest)
    assert read_manifest(tmp_path) is None
    with pytest.raises(ReportDirError, match="holds no normpen report"):
        write_report(tmp_path, _outcomes(), quick=True)


def test_a_report_killed_while_removing_stale_files_leaves_them_all_proven_its_own(tmp_path, monkeypatch):
    write_report(tmp_path, _outcomes(), quick=True)

    def killed(self, missing_ok=False):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(writer.Path, "unlink", killed)
        with pytest.raises(KeyboardInterrupt):
            write_report(tmp_path, _outcomes()[1:], quick=True)
    assert owned_files(tmp_path, read_manifest(tmp_path)) == {"a.line.png", "index.html", "results.json"}
    write_report(tmp_path, _outcomes()[1:], quick=True)
    assert not (tmp_path / "a.line.png").exists()


def test_write_files_writes_all_or_nothing(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("old")
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(writer.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_files(tmp_path, {"a.png": b"a", "index.html": b"new", "results.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
    assert (tmp_path / "index.html").read_text() == "old"


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (12, "12"), (0.0, "0"), (2.2204e-15, "2.22e-15"), (1 / 3, "0.3333"), ("NaN", "NaN")],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_render_html_needs_every_named_figure():
    document = results_document(_outcomes(), quick=True, version="0")
    with pytest.raises(jinja2.UndefinedError):
        render_html(document, {})


def test_png_data_uri_round_trips():
    import base64

    png = report_figures.figure_png(Figure(figsize=(1, 1)))
    uri = report_figures.png_data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_outcome_figures_are_read_only():
    outcome = Outcome(_experiment(), 7, 0.1, figures={"a": b"x"})
    with pytest.raises(TypeError):
        outcome.figures["b"] = b"y"


# ---- benchmarks/seed_sweep.py ---------------------------------------------------------


def _seed_sweep():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_sweep.py"
    spec = importlib.util.spec_from_file_location("seed_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "check, margin",
    [
        (Check.close("c", 1.5, 1.0, atol=2.0), 0.75),  # (2 - 0.5) / 2
        (Check.at_most("m", 0.25, 1.0), 0.75),  # (1 - 0.25) / 1
        (Check.at_least("l", 1.0, 2.0, atol=1.0), 0.0),  # exactly on the threshold 1
        (Check.at_least("l", 0.5, 2.0), -0.75),  # (0.5 - 2) / 2
        (Check.equal("e", 3, 4), -0.25),  # -1 / 4
        (Check.equal("z", 1, 0), -1.0),  # |e| = 0: absolute
    ],
)
def test_seed_sweep_relative_margin_is_positive_exactly_when_the_check_passes(check, margin):
    record = _seed_sweep().check_record(check)
    assert record["relative_margin"] == pytest.approx(margin, abs=1e-15)  # dyadic inputs: exact in binary
    assert (record["margin"] >= 0) == check.passed


def test_seed_sweep_counts_pass_rates_over_seeds_and_an_error_as_a_failure(monkeypatch, tmp_path, capsys):
    def compute(quick, seed):
        if seed == 3:
            raise RuntimeError("diverged")
        return Result(checks=[Check.at_most("odd seeds fail", seed % 2, 0.5), Check.equal("always", 1, 1)])

    monkeypatch.setattr(registry, "EXPERIMENTS", (_experiment("wobbly", compute=compute),))
    sweep = _seed_sweep()
    assert sweep.main(["--seeds", "4", "--json", str(tmp_path / "sweep.json")]) == 0
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["seed"], r["error"] is None) for r in document["records"]] == [
        (0, True),
        (1, True),
        (2, True),
        (3, False),
    ]
    rows = {row["check"]: row for row in document["summary"]}
    assert rows["odd seeds fail"]["pass_rate"] == 0.5 and rows["odd seeds fail"]["failing_seeds"] == [1, 3]
    assert rows["always"]["pass_rate"] == 0.75 and rows["always"]["failing_seeds"] == [3]  # seed 3 raised
    # margins over the seeds that ran: (0.5 - seed % 2) / 0.5 = 1, -1, 1
    assert rows["odd seeds fail"]["min_margin"] == -1.0 and rows["odd seeds fail"]["median_margin"] == 1.0
    assert "wobbly seed 3: RuntimeError: diverged" in capsys.readouterr().out
