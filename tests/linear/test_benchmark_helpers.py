"""benchmarks/linear.py: its certificate, suboptimality and peer mappings are right (no timing)."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from normpen.linear import path
from normpen.linear.datafits import Logistic, Multinomial, Quadratic
from normpen.linear.path import lambda_max
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, loaded from its file; the thread variables it sets are restored after.

    Only its own entry leaves ``sys.modules`` at the end (its dataclasses need one while it loads):
    restoring the whole dict, as ``mock.patch.dict(sys.modules)`` does, would drop every module first
    imported meanwhile (parts of matplotlib, of normpen), and a later import would load second copies
    whose classes fail ``isinstance`` against the first (matplotlib's ``set_clip_path`` raised so in a
    later test of the same process).
    """
    file = Path(__file__).resolve().parents[2] / "benchmarks" / "linear.py"
    spec = importlib.util.spec_from_file_location("bench_linear", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_linear"] = module
    try:
        with mock.patch.dict(os.environ):
            spec.loader.exec_module(module)
            yield module
    finally:
        del sys.modules["bench_linear"]


def _cases(bench):
    """Small workloads of every kind and normpen's datafit and penalty for each."""
    rng = np.random.default_rng(1)
    X, y = bench.regression(50, 100, rng)
    Xc = np.asfortranarray(rng.standard_normal((60, 30)))
    signs = np.where(Xc[:, 0] + rng.standard_normal(60) > 0, 1.0, -1.0)
    labels = rng.integers(0, 3, 60)
    groups = [np.arange(i, i + 5) for i in range(0, 100, 5)]
    grid = bench._with_grid
    return {
        "lasso": (grid("a", "", X, y, "quadratic", 8, 1e-2), Quadratic(), L1(1.0)),
        "enet": (grid("b", "", X, y, "quadratic", 8, 1e-2, l1_ratio=0.5), Quadratic(), ElasticNet(1.0, 0.5)),
        "group": (
            grid("d", "", X, y, "quadratic", 8, 1e-2, group_size=5),
            Quadratic(),
            GroupLasso(1.0, groups),
        ),
        "logistic": (grid("c", "", Xc, signs, "logistic", 8, 1e-2), Logistic(), L1(1.0)),
        "multinomial": (grid("f", "", Xc, labels, "multinomial", 8, 1e-2), Multinomial(), L1(1.0)),
    }


KINDS = ("lasso", "enet", "group", "logistic", "multinomial")


@pytest.mark.parametrize("kind", KINDS)
def test_certificate_is_normpens(bench, kind):
    """The benchmark's gap, objective, P(0) and lambda_max are normpen's own, computed independently."""
    work, datafit, penalty = _cases(bench)[kind]
    result = path(work.X, work.y, datafit, penalty, work.lams, fit_intercept=False, tol=1e-3)
    gaps = [bench.relative_gap(work, lam, W) for lam, W in zip(work.lams, result.coefs, strict=True)]
    objectives = [bench.objective(work, lam, W) for lam, W in zip(work.lams, result.coefs, strict=True)]
    # The same formulas evaluated in another order: sums of <= 6000 products of O(1) numbers,
    # whose rounding is below 6000 * eps ~ 1.3e-12 relative to P(0) (measured: <= 1.2e-15).
    np.testing.assert_allclose(gaps, result.dual_gaps / result.gap_scale, rtol=0, atol=1e-12)
    np.testing.assert_allclose(objectives, result.objectives, rtol=1e-12)
    assert bench.objective_at_zero(work) == pytest.approx(result.gap_scale, rel=1e-12)
    ours = lambda_max(work.X, work.y, datafit, penalty, fit_intercept=False)
    assert work.lams[0] == pytest.approx(ours, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_implied_strength_finds_the_strength(bench, kind):
    """At a tight solution the KKT-implied strength is the one solved for; solved at 1.1 lam it reads 1.1."""
    work, datafit, penalty = _cases(bench)[kind]
    result = path(work.X, work.y, datafit, penalty, work.lams, fit_intercept=False, tol=1e-10)
    # Measured at tol 1e-10 over these five problems: median error <= 1e-11, largest single point 5e-6
    # (logistic); the check's threshold must accept such solutions with a hundredfold margin.
    assert bench.mapping_error(work, list(result.coefs)) <= bench.MAPPING_RTOL / 100
    if kind != "enet":  # homogeneous penalties: the solution at 1.1 lam satisfies the KKT at 1.1 lam exactly
        shifted = path(work.X, work.y, datafit, penalty, 1.1 * work.lams, fit_intercept=False, tol=1e-10)
        ratios = [
            bench.implied_strength(work, lam, W)
            for lam, W in zip(work.lams[1:], shifted.coefs[1:], strict=True)
        ]
        # measured: every point within 5e-6 of 1.1 (lam_max's own point, all zero, is left out)
        np.testing.assert_allclose(ratios, 1.1, rtol=1e-4)


def test_suboptimality_is_against_the_best_run(bench):
    """Suboptimality: objective minus the best over runs at each strength, over P(0), largest on the path."""
    work = _cases(bench)["lasso"][0]
    runs = [
        bench.Run("x", 0.0, 1.0, [], np.array([1.0, 2.0, 3.0]), 0.0),
        bench.Run("y", 0.0, 1.0, [], np.array([1.5, 1.0, 3.0]), 0.0),
    ]
    bench.measure(work, runs)
    scale = bench.objective_at_zero(work)
    assert runs[0].subopt == pytest.approx(1.0 / scale)
    assert runs[1].subopt == pytest.approx(0.5 / scale)


def test_ladder_to_subopt_is_normpens_first_run_as_suboptimal(bench):
    """Table 2's time to a peer's suboptimality: normpen's first tolerance of the tenfold ladder from the
    peer's gap whose run is as sub-optimal as the peer or better; the tenfold looser one is not (or is the
    start). The peer here: a tight normpen run reported with a loose gap, as glmnet and adelie are."""
    work = _cases(bench)["lasso"][0]
    ours = bench.timed_run(bench.OURS, bench.run_normpen, work, 1e-10)
    comparison = bench.Comparison(work, ours)
    peer = bench.timed_run("peer", bench.run_normpen, work, 1e-6)
    peer.gap = 1e-1
    comparison.ladders["peer"] = [peer]
    first = bench.timed_run(bench.OURS, bench.run_normpen, work, peer.gap)
    run = bench._ladder_to_subopt(work, comparison, first, peer)
    looser = bench.timed_run(bench.OURS, bench.run_normpen, work, run.tol * 10)
    bench.measure(work, [*comparison.runs(), first, run, looser, peer])
    assert bench.as_good(run.subopt, peer.subopt)
    assert run is first or not bench.as_good(looser.subopt, peer.subopt)
    assert run.tol >= peer.subopt * (1 - 1e-9)


def test_paired_rounds_time_both_sides_back_to_back(bench, monkeypatch):
    """Table 2's close calls: one ratio a round from the two runs of that round, the order alternating.

    A fake clock advances by each library's cost when it runs (normpen 3 units, the peer 2, the peer
    slowed to 6 in the third round as a machine slowing down would): the ratios are those of the rounds,
    1.5, 1.5, 0.5, 1.5, and the calls alternate normpen first, peer first."""
    clock, calls = [0.0], []
    peer_costs = iter([2.0, 2.0, 6.0, 2.0])

    def ours(work, tol):
        calls.append(("normpen", tol))
        clock[0] += 3.0

    def peer(work, tol):
        calls.append(("peer", tol))
        clock[0] += next(peer_costs)

    monkeypatch.setattr(bench, "run_normpen", ours)
    monkeypatch.setitem(bench.PEERS, "peer", bench.Peer(peer, 1e-4, "peer"))
    monkeypatch.setattr(bench.time, "process_time", lambda: clock[0])
    ratios = bench.paired_ratios(None, 1e-3, "peer", 4)
    np.testing.assert_array_equal(ratios, [1.5, 1.5, 0.5, 1.5])
    assert [name for name, _ in calls] == ["normpen", "peer", "peer", "normpen"] * 2
    assert {tol for name, tol in calls if name == "peer"} == {1e-4}
    assert {tol for name, tol in calls if name == "normpen"} == {1e-3}


def test_negative_rounds_are_refused_before_anything_runs(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "-1", "--only", "a"])
    assert "--rounds: give 0 (no paired rounds) or more, got -1" in capsys.readouterr().err


def test_ratio_cell_gives_the_paired_median_where_paired(bench):
    """A paired close call shows the median of its rounds and their range; another cell the plain ratio."""
    work = _cases(bench)["lasso"][0]
    ours = bench.Run("normpen", 1e-3, 0.30, [], np.zeros(1), 0.0)
    peer = bench.Run("peer", 1e-4, 0.25, [], np.zeros(1), 0.0)
    comparison = bench.Comparison(work, ours)
    assert bench._ratio_cell(comparison, "peer", ours, peer) == "1.20"
    comparison.paired["peer", 1e-3] = np.array([0.9, 1.3, 0.95, 1.0, 0.8])
    assert bench._ratio_cell(comparison, "peer", ours, peer) == "0.95 [0.80, 1.30]"


def test_glmnet_gaussian_map(bench):
    """glmnet's (lambda, alpha) from ours: sd(y) divides the ridge part's strength, not the l1 part's."""
    y = np.array([1.0, -3.0, 2.0, 0.0])
    s = np.std(y)
    lams, alpha = bench.glmnet_gaussian_strengths(np.array([2.0]), 0.25, y)
    assert lams[0] * alpha == pytest.approx(2.0 * 0.25)  # l1 strength lam * r
    assert lams[0] * (1 - alpha) / s == pytest.approx(2.0 * 0.75)  # ridge strength lam * (1 - r)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["scikit-learn", "skglm", "celer", "glmnet", "adelie"])
def test_peer_mapping_passes_the_check(bench, name, kind):
    """Every installed peer, at its tightest tolerance, meets our KKT conditions at the mapped strength."""
    if not bench.available(name):
        pytest.skip(f"{name} is not installed (scripts/setup_bench.sh)")
    work = _cases(bench)[kind][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peers' own convergence and deprecation warnings
        error = bench.corner_mapping_error(bench.PEERS[name], work)
    if error is None:
        pytest.skip(f"{name} does not solve the {kind} problem")
    assert error <= bench.MAPPING_RTOL


def test_wrong_glmnet_map_is_refused(bench):
    """glmnet's elastic net with (lambda, alpha) passed as ours (no sd(y) factor) fails the mapping check."""
    glmnet = pytest.importorskip("glmnet")
    work = bench.corner(_cases(bench)["enet"][0], 5)
    model = glmnet.ElasticNet(
        alpha=work.l1_ratio,
        lambda_path=work.lams,
        standardize=False,
        fit_intercept=False,
        n_splits=0,
        tol=1e-13,
    ).fit(work.X, work.y)
    assert np.std(work.y) > 2  # so that the sd(y) factor matters
    assert bench.mapping_error(work, list(model.coef_path_.T)) > bench.MAPPING_RTOL
