"""The ``normpen`` command, driven as a user drives it; the HTML it writes is checked by parsing it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from normpen import __version__
from normpen.cli import app
from normpen.experiments import registry
from normpen.experiments.base import Check, Experiment, Result, Verdict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_ELEMENTS = {"meta", "img", "br", "hr", "link", "input"}


def _runner():
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def runner():
    return _runner()


class ReportPage(HTMLParser):
    """What a reader of ``index.html`` sees: the summary rows, and per section its images and check rows.

    The parser also verifies that every element is closed in order.
    """

    def __init__(self, html):
        super().__init__()
        self.stack = []
        self.tags = []
        self.summary_links = []
        self.summary_rows = []
        self.failing_links = []
        self.summary_badges = []
        self._in_failing = False
        self.sections = {}
        self._section = self._table = self._row = self._cell = None
        self.feed(html)
        self.close()
        assert self.stack == [], f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)
        if tag == "section":
            self._section = {
                "images": [],
                "check_rows": [],
                "text": [],
                "classes": attrs.get("class"),
                "badges": [],
            }
            self.sections[attrs["id"]] = self._section
        elif tag == "table":
            self._table = attrs.get("class")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img" and self._section is not None:
            self._section["images"].append(attrs["src"])
        elif tag == "a" and self._table == "summary":
            self.summary_links.append(attrs["href"])
        elif tag == "a" and self._in_failing:
            self.failing_links.append(attrs["href"])
        elif tag == "p" and attrs.get("id") == "failing":
            self._in_failing = True
        elif tag == "span" and "badge" in attrs.get("class", "").split():
            badges = self._section["badges"] if self._section is not None else self.summary_badges
            badges.append(attrs["class"].split()[1])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "section":
            self._section = None
        elif tag == "p":
            self._in_failing = False
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row and self._row[0] != "check" and self._row[0] != "claim":
            if self._table == "checks":
                self._section["check_rows"].append(self._row)
            elif self._table == "summary":
                self.summary_rows.append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self._section["text"].append(data)

    def section_text(self, name):
        return " ".join("".join(self.sections[f"exp-{name}"]["text"]).split())


def _read_report(out):
    page = ReportPage((out / "index.html").read_text(encoding="utf-8"))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return page, results


def _figure():
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


CONFIRMED = Verdict("confirmed", "It holds as written.")


def _fake(name, checks, claim="The fake claim holds.", figures=("curve",), verdict=CONFIRMED):
    def compute(quick, seed):
        return Result(checks=checks(), figures={f: _figure() for f in figures}, notes=f"seed {seed}")

    return Experiment(
        name=name,
        title=f"Fake {name}",
        seed_section="000 Fake",
        claim=claim,
        compute=compute,
        seed=5,
        verdict=verdict,
    )


def _raising(quick, seed):
    raise RuntimeError("boom in the solver")


# a fake check built to pass: 1e-12 off with 1e-9 allowed (no computation is checked)
PASSING = _fake("passing", lambda: [Check.close("close enough", 1.0 + 1e-12, 1.0, atol=1e-9)])


def _failing_checks():
    return [Check.equal("ok", 1, 1), Check.at_most("gap shrinks", 0.5, 0.01)]


FAILING = _fake("failing", _failing_checks)
RAISING = Experiment(
    name="raising",
    title="Raising",
    seed_section="000",
    claim="It raises.",
    compute=_raising,
    verdict=Verdict("refuted", "The check that shows it is never made.", evidence=("never made",)),
)


@pytest.fixture
def fakes(monkeypatch):
    def register(*experiments):
        monkeypatch.setattr(registry, "EXPERIMENTS", tuple(experiments))

    return register


# ---- help, version, list -------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--help"], ["report", "list"]),
        (["report", "--help"], ["--out", "--only", "--quick", "--force", "--seed", "normpen-report"]),
        (["list", "--help"], ["List the experiments"]),
    ],
)
def test_every_command_has_help(runner, args, expected):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


def test_no_arguments_shows_help(runner):
    result = runner.invoke(app, [])
    assert "report" in result.output and "Usage" in result.output


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"normpen {__version__}"


def test_list_shows_every_registered_experiment_with_its_seed_section(runner):
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for experiment in registry.EXPERIMENTS:
        assert experiment.name in result.output
        assert experiment.seed_section.split(";")[0] in result.output


def test_list_shows_the_verdict_of_each_experiment(runner, fakes):
    cited = _fake("cited", lambda: [Check.equal("n", 1, 1)], verdict=Verdict("literature", "A paper."))
    fakes(PASSING, cited)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "(confirmed)" in result.output and "(literature)" in result.output


def test_the_installed_command_runs(tmp_path):
    """The ``normpen`` script pyproject installs beside the interpreter, run in a fresh process."""
    script = Path(sys.executable).parent / "normpen"
    completed = subprocess.run([script, "list"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "sparsity-dialogue" in completed.stdout


# ---- the real report ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """The real quick report, run once for the tests of this section: output, page, results, directory."""
    out = tmp_path_factory.mktemp("quick") / "report"
    result = _runner().invoke(app, ["report", "--quick", "--out", str(out)])
    return result, *_read_report(out), out


def test_quick_report_has_a_section_per_experiment_with_images_and_checks(quick_report):
    result, page, results, out = quick_report
    assert result.exit_code == 0, result.output
    assert results["quick"] is True and results["totals"]["passed"] is True
    assert [r["name"] for r in results["experiments"]] == [e.name for e in registry.EXPERIMENTS]
    assert page.summary_links == [f"#exp-{e.name}" for e in registry.EXPERIMENTS]
    for record in results["experiments"]:
        section = page.sections[f"exp-{record['name']}"]
        assert record["claim"] in page.section_text(record["name"])
        assert len(section["images"]) == len(record["figures"]) >= 1
        for src, file in zip(section["images"], record["figures"], strict=True):
            assert src.startswith("data:image/png;base64,")
            png = base64.b64decode(src.split(",", 1)[1])
            assert png.startswith(PNG_SIGNATURE)
            assert (out / file).read_bytes() == png
        assert [row[0] for row in section["check_rows"]] == [c["name"] for c in record["checks"]]
        assert all(row[-1] == "pass" for row in section["check_rows"])
        kinds = [row[5].split(" · ")[0] for row in section["check_rows"]]
        assert kinds == [c["kind"] for c in record["checks"]]
        assert section["badges"][0] == record["verdict"]["status"]
        assert set(record["checks"][0]) >= {"name", "measured", "expected", "tolerance", "passed"}


def test_the_recorded_full_run_in_docs_has_the_checks_the_experiments_make_now(quick_report):
    """docs/results.json (the figures of docs/) is stale when an experiment's checks changed since.

    Quick mode makes the same checks as the full run, so the names must agree;
    regenerate with the commands of docs/report.md ("The docs quote the recorded run").
    """
    _, _, results, _ = quick_report
    recorded = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results.json").read_text("utf-8"))
    checks = {r["name"]: [c["name"] for c in r["checks"]] for r in recorded["experiments"]}
    assert {r["name"]: [c["name"] for c in r["checks"]] for r in results["experiments"]} == checks


# ---- fake experiments: failures, errors, escaping -------------------------------------------


def test_a_failing_check_makes_the_command_fail_and_say_which(runner, tmp_path, fakes):
    fakes(PASSING, FAILING)
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 1
    assert "FAILED failing: gap shrinks: measured 0.5, expected 0.01" in result.output
    assert "FAILED passing" not in result.output
    page, results = _read_report(out)
    assert results["totals"] == {
        **results["totals"],
        "experiments_passed": 1,
        "checks": 3,
        "checks_passed": 2,
    }
    failing_rows = page.sections["exp-failing"]["check_rows"]
    assert [row[0] for row in failing_rows] == ["ok", "gap shrinks"]
    assert [row[-1] for row in failing_rows] == ["pass", "fail"]
    assert failing_rows[1][1:5] == ["0.5", "0.01", "0", "m ≤ e + t"]
    assert [row[-1] for row in page.summary_rows] == ["pass", "fail"]


def test_a_raising_experiment_is_a_failed_section_with_its_traceback_and_the_run_goes_on(
    runner, tmp_path, fakes
):
    fakes(RAISING, PASSING)
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 1
    assert "FAILED raising: raised RuntimeError: boom in the solver" in result.output
    page, results = _read_report(out)
    assert [r["result"] for r in results["experiments"]] == ["error", "pass"]
    assert page.failing_links == ["#exp-raising"]
    text = page.section_text("raising")
    assert "Traceback" in text and "RuntimeError: boom in the solver" in text
    assert page.sections["exp-raising"]["check_rows"] == []
    assert len(page.sections["exp-passing"]["images"]) == 1


def test_the_page_shows_each_verdict_and_the_header_names_the_failing_experiments(runner, tmp_path, fakes):
    narrowed = Verdict("narrowed", "Only for small gaps.", evidence=("gap shrinks",))
    literature = Verdict("literature", "From a paper, not the texts.")
    fakes(
        PASSING,
        _fake("failing", _failing_checks, verdict=narrowed),
        _fake("cited", lambda: [Check.equal("n", 1, 1)], verdict=literature),
        RAISING,
    )
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 1
    page, results = _read_report(out)
    assert page.failing_links == ["#exp-failing", "#exp-raising"]
    assert results["totals"]["failing"] == ["failing", "raising"]
    assert results["totals"]["statuses"] == {"confirmed": 1, "narrowed": 1, "refuted": 1, "literature": 1}
    assert {"confirmed", "narrowed", "refuted", "literature"} <= set(page.summary_badges)
    assert [row[1] for row in page.summary_rows] == ["confirmed", "narrowed", "literature", "refuted"]
    assert [row[-1] for row in page.summary_rows] == ["pass", "fail", "pass", "error"]
    assert page.sections["exp-failing"]["badges"][:2] == ["narrowed", "fail"]
    text = page.section_text("failing")
    assert "Verdict: narrowed" in text and "Only for small gaps." in text and "Evidence: gap shrinks" in text
    record = results["experiments"][1]["verdict"]
    assert record == {**record, "status": "narrowed", "evidence": ["gap shrinks"]}
    assert "condition the text does not state" in record["meaning"] and record["meaning"] in text
    assert page.sections["exp-failing"]["check_rows"][1][5] == "claim · evidence"


def test_an_empirical_check_is_labelled_with_its_pass_rate_and_still_fails_its_experiment(
    runner, tmp_path, fakes
):
    fakes(_fake("lucky", lambda: [Check.equal("n", 1, 1), Check.at_least("gain", 0.5, 1.0, pass_rate=0.9)]))
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 1
    assert "gain: measured 0.5, expected 1.0 (m ≥ e − t, t = 0.0; empirical, passes on 90% of 30 seeds)" in (
        result.output
    )
    page, results = _read_report(out)
    rows = page.sections["exp-lucky"]["check_rows"]
    assert [row[5] for row in rows] == ["claim", "empirical, passes on 90% of 30 seeds"]
    assert [row[-1] for row in rows] == ["pass", "fail"]
    gain = results["experiments"][0]["checks"][1]
    assert gain == {**gain, "empirical": True, "pass_rate": 0.9, "passed": False}
    assert results["totals"]["empirical_checks"] == 1 and results["totals"]["failing"] == ["lucky"]


@pytest.mark.parametrize("args, seeds", [([], [5, 5]), (["--seed", "11"], [11, 11])])
def test_the_seed_each_experiment_ran_with_is_recorded(runner, tmp_path, fakes, args, seeds):
    fakes(PASSING, _fake("other", lambda: [Check.equal("n", 1, 1)]))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out), *args]).exit_code == 0
    page, results = _read_report(out)
    assert [r["seed"] for r in results["experiments"]] == seeds
    assert [r["notes"] for r in results["experiments"]] == [f"seed {s}" for s in seeds]
    assert results["seed"] == (int(args[1]) if args else None)
    assert f"random seed {seeds[0]}" in page.section_text("passing")


def test_a_negative_seed_is_refused(runner, tmp_path, fakes):
    fakes(PASSING)
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "r"), "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output
    assert not (tmp_path / "r").exists()


def test_text_from_experiments_is_escaped(runner, tmp_path, fakes):
    claim = "<script>alert(1)</script> & <b>bold</b> claims"
    fakes(_fake("escaped", lambda: [Check.equal("<i>count</i>", 1, 1)], claim=claim))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
    page, _ = _read_report(out)
    assert "script" not in page.tags and "b" not in page.tags and "i" not in page.tags
    assert claim in page.section_text("escaped")
    assert page.sections["exp-escaped"]["check_rows"][0][0] == "<i>count</i>"


# ---- --only --------------------------------------------------------------------------------


def test_only_runs_the_named_experiment(runner, tmp_path, fakes):
    fakes(PASSING, FAILING)
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--only", "passing", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page, results = _read_report(out)
    assert [r["name"] for r in results["experiments"]] == ["passing"]
    assert list(page.sections) == ["exp-passing"]


def test_only_with_an_unknown_name_lists_the_names_and_writes_nothing(runner, tmp_path, fakes):
    fakes(PASSING, FAILING)
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--only", "nope", "--out", str(out)])
    assert result.exit_code == 2
    assert "unknown experiment 'nope'" in result.output
    assert "passing, failing" in result.output
    assert not out.exists()


# ---- the output directory ---------------------------------------------------------------------


def test_a_non_empty_foreign_directory_is_refused_unless_forced(runner, tmp_path, fakes):
    fakes(PASSING)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    refused = runner.invoke(app, ["report", "--out", str(out)])
    assert refused.exit_code == 2
    assert "--force" in refused.output and "not empty" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    forced = runner.invoke(app, ["report", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "thesis.tex").read_text() == "precious"
    assert {"index.html", "results.json", "passing.curve.png"} <= {p.name for p in out.iterdir()}


def test_a_previous_report_is_replaced_without_force_and_its_stale_figures_removed(runner, tmp_path, fakes):
    fakes(PASSING, _fake("other", lambda: [Check.equal("n", 1, 1)], figures=("a", "b")))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
    (out / "my-notes.txt").write_text("keep")
    assert (out / "other.a.png").exists()
    again = runner.invoke(app, ["report", "--only", "passing", "--out", str(out)])
    assert again.exit_code == 0, again.output
    names = sorted(p.name for p in out.iterdir())
    report = [".normpen-manifest.json", "index.html", "passing.curve.png", "results.json"]
    assert names == sorted([*report, "my-notes.txt"])


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_forged_results_json_cannot_make_the_report_delete_a_users_file(runner, tmp_path, force):
    """Issue 13 item 1, the exact repro: ownership is proven by the manifest, not by results.json."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"my holiday")
    forged = '{"generator":"normpen report","experiments":[{"figures":["holiday.png"]}]}'
    (out / "results.json").write_text(forged)
    args = ["report", "--only", "sparsity-dialogue", "--quick", "--out", str(out), *force]
    result = runner.invoke(app, args)
    assert (out / "holiday.png").read_bytes() == b"my holiday"
    if force:
        assert result.exit_code == 0, result.output
        assert json.loads((out / "results.json").read_text())["experiments"][0]["name"] == "sparsity-dialogue"
    else:
        assert result.exit_code == 2 and "--force" in result.output
        assert sorted(p.name for p in out.iterdir()) == ["holiday.png", "results.json"]
        assert (out / "results.json").read_text() == forged


def test_a_changed_report_file_or_a_dangling_link_stops_the_report_before_it_runs(runner, tmp_path, fakes):
    ran = []
    fakes(_fake("passing", lambda: ran.append(1) or [Check.equal("n", 1, 1)]))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
    (out / "index.html").write_text("my notes on the report")
    (out / "results.json").unlink()
    (out / "results.json").symlink_to(tmp_path / "elsewhere.json")
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 2 and ran == [1]
    assert "index.html, results.json" in " ".join(result.output.split())
    assert (out / "index.html").read_text() == "my notes on the report"
    assert (out / "results.json").is_symlink() and not (tmp_path / "elsewhere.json").exists()


def test_an_edited_figure_the_report_would_replace_is_kept_and_nothing_is_written(runner, tmp_path, fakes):
    fakes(PASSING)
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
    (out / "passing.curve.png").write_bytes(b"my annotated figure")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 2 and "passing.curve.png" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_pointing_at_a_file_is_refused(runner, tmp_path, fakes):
    fakes(PASSING)
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = runner.invoke(app, ["report", "--out", str(target), "--force"])
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text() == "x"
