"""The figures quoted in docs/ are generated from the recorded docs/results.json (issue 12, item 5)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from normpen.experiments import registry

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "scripts" / "docs_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_figures = _load_script()


@pytest.fixture(scope="module")
def records():
    return docs_figures.load_records()


def test_the_recorded_results_are_a_full_report_run():
    document = json.loads(docs_figures.RESULTS.read_text(encoding="utf-8"))
    assert document["generator"] == "normpen report" and document["quick"] is False


@pytest.mark.parametrize("path", docs_figures.doc_files(), ids=lambda path: path.name)
def test_every_block_is_what_the_script_generates_from_the_recorded_results(path, records):
    text = path.read_text(encoding="utf-8")
    assert docs_figures.render(text, records) == text, (
        f"{path.name}: a figures block differs from docs/results.json; run `python scripts/docs_figures.py`"
    )


def test_every_registered_experiment_has_one_block_and_a_recorded_result(records):
    names = [name for path in docs_figures.doc_files() for name in docs_figures.block_names(path.read_text())]
    registered = [experiment.name for experiment in registry.EXPERIMENTS]
    assert sorted(names) == sorted(registered)
    assert sorted(records) == sorted(registered)


RECORD = {
    "name": "fake",
    "seed": 3,
    "error": None,
    "verdict": {
        "status": "narrowed",
        "meaning": "holds under a condition",
        "reason": "Only if | small.",
        "evidence": ["gap"],
    },
    "checks": [
        {
            "name": "gap | ratio",
            "measured": 1 / 3,
            "expected": 0,
            "tolerance": 1e-9,
            "passed": False,
            "empirical": True,
            "kind": "empirical, passes on 90% of 30 seeds",
        },
        {
            "name": "count",
            "measured": "NaN",
            "expected": 2,
            "tolerance": 0.0,
            "passed": True,
            "empirical": False,
            "kind": "claim",
        },
    ],
}


def test_a_block_shows_the_verdict_and_each_check_with_its_status():
    lines = docs_figures.block(RECORD).splitlines()
    assert lines[0] == "<!-- figures:fake -->" and lines[-1] == "<!-- /figures:fake -->"
    assert lines[1] == r"Verdict: **narrowed** (holds under a condition). Only if \| small."
    assert r"| gap \| ratio | 0.3333 | 0 | 1e-09 | **fail** (empirical, passes on 90% of 30 seeds) |" in lines
    assert "| count | NaN | 2 | 0 | pass |" in lines


def test_render_replaces_only_the_blocks_and_refuses_unknown_names():
    text = "intro\n<!-- figures:fake -->\nold\n<!-- /figures:fake -->\noutro\n"
    rendered = docs_figures.render(text, {"fake": RECORD})
    assert rendered == f"intro\n{docs_figures.block(RECORD)}\noutro\n"
    assert docs_figures.render(rendered, {"fake": RECORD}) == rendered
    with pytest.raises(ValueError, match="'fake'"):
        docs_figures.render(text, {})


def test_check_mode_reports_a_stale_block_and_rewriting_fixes_it(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"experiments": [RECORD]}))
    page = tmp_path / "experiments_x.md"
    page.write_text("# X\n\n<!-- figures:fake -->\n| edited by hand |\n<!-- /figures:fake -->\n")
    (tmp_path / "report.md").write_text("# Report\n")
    args = ["--results", str(tmp_path / "results.json"), "--docs", str(tmp_path)]
    assert docs_figures.main([*args, "--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert docs_figures.main(args) == 0
    assert docs_figures.main([*args, "--check"]) == 0
    assert docs_figures.block(RECORD) in page.read_text()
