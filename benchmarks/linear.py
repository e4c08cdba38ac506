"""normpen.linear against scikit-learn, skglm and celer, in one process, on the same data (issue 4).

Every library solves the same objective on the same data without an
intercept (regression data centred first), and every solution is certified
the same way: the duality gap of normpen's certificate
(:mod:`normpen.linear.problem`: residual dual point rescaled into the dual
ball) at each strength, relative to the objective at :math:`w = 0`, whatever
the library reports itself. The peers' own tolerances do not mean the same
gap (celer's is relative to another scale and certified with another dual
point), so each peer is run at ``tol`` and, while its largest gap is worse
than normpen's, again at a tenfold smaller tolerance (down to
``tol * 1e-4``), unless it already took ``--patience`` times normpen's time:
the row shows the tolerance it needed. The table gives, per problem and
library, the process CPU time (one BLAS thread, so CPU time is the solver's
time even on a loaded machine), the largest relative gap along the path, and
normpen's time divided by the fastest peer's among those that reached an
equal or better gap (in brackets, when no peer did: the ratio to the fastest
peer at any gap, an upper bound of the ratio at equal gap). A separate table
gives the first fit in a fresh process (cold start, import excluded) for
each library; the timed runs come after a warm-up call on a corner of the
data, so that just-in-time compilation (skglm, numba) is not counted there.

Problems (the issue's list; a new one is a builder in ``PROBLEMS`` and, where
a runner does not know it, a branch in the runners):

a. lasso path, AR(1) design with rho = 0.6, n = 1000, p = 5000, 50 strengths
   from lambda_max to lambda_max / 100;
b. elastic net path on the same data, l1_ratio = 0.5;
c. L1 logistic path, n = 2000, p = 2000;
d. group lasso path, groups of 5, n = 1000, p = 5000;
e. ridge path of 100 strengths with leave-one-out CV, n = 5000, p = 500
   (certified at the strength each library selects);
f. lasso path on sparse X (1% nonzero), n = 20000, p = 50000 (20 strengths
   down to lambda_max / 20).

g. linear SVMs (``benchmarks/svm_problem.py``, which has its own peers and
   reference optimum): its rows join the table under ``--only g``, where the
   gap column is the relative suboptimality that file defines.

Run ``python benchmarks/linear.py [--quick] [--only ac] [--tol 1e-6] [--patience 5]``.
The peers are optional (``pip install skglm celer``); a missing one is
skipped. This is a benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import warnings
from functools import partial

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from normpen.linear import RidgeCV, path
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Logistic, Quadratic
from normpen.linear.path import lambda_max
from normpen.linear.problem import Problem
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2

console = Console(width=130)


# ---- data -------------------------------------------------------------------------------


def ar1_design(n, p, rho, rng):
    """Rows with AR(1) correlation :math:`\\operatorname{corr}(x_j, x_k) = \\rho^{|j-k|}`."""
    X = np.empty((n, p))
    X[:, 0] = rng.standard_normal(n)
    scale = math.sqrt(1 - rho**2)
    for j in range(1, p):
        X[:, j] = rho * X[:, j - 1] + scale * rng.standard_normal(n)
    return X


def regression(n, p, rng, sparse_signal=20):
    X = ar1_design(n, p, 0.6, rng)
    w = np.zeros(p)
    w[rng.choice(p, sparse_signal, replace=False)] = rng.standard_normal(sparse_signal)
    y = X @ w + rng.standard_normal(n)
    return np.asfortranarray(X - X.mean(0)), y - y.mean()


def _regression_problems(quick, rng):
    """(a), (b), (d): lasso, elastic net and group lasso paths on one AR(1) design."""
    s = 5 if quick else 1
    X, y = regression(1000 // s, 5000 // s, rng)
    groups = [np.arange(i, i + 5) for i in range(0, X.shape[1], 5)]
    common = dict(X=X, y=y, datafit=Quadratic(), n_lams=50, eps=1e-2)
    return {
        "a": dict(common, title="lasso path", penalty=L1(1.0)),
        "b": dict(common, title="elastic net path", penalty=ElasticNet(1.0, 0.5)),
        "d": dict(common, title="group lasso path", penalty=GroupLasso(1.0, groups), groups=groups),
    }


def _logistic_problem(quick, rng):
    """(c): L1 logistic path."""
    s = 5 if quick else 1
    X = rng.standard_normal((2000 // s, 2000 // s))
    w = np.zeros(X.shape[1])
    w[:20] = 1.0
    y = np.where(X @ w + 0.5 * rng.standard_normal(X.shape[0]) > 0, 1.0, -1.0)
    return {
        "c": dict(
            title="L1 logistic path", X=X, y=y, datafit=Logistic(), penalty=L1(1.0), n_lams=50, eps=1e-2
        )
    }


def _ridge_problem(quick, rng):
    """(e): ridge path with leave-one-out CV."""
    s = 5 if quick else 1
    X = rng.standard_normal((5000 // s, 500 // s))
    y = X @ rng.standard_normal(X.shape[1]) + 5 * rng.standard_normal(X.shape[0])
    return {"e": dict(title="ridge path + LOO", X=X, y=y, datafit=Quadratic(), penalty=L2(1.0), n_lams=100)}


def _sparse_problem(quick, rng, seed):
    """(f): lasso path on a sparse design."""
    s = 5 if quick else 1
    X = sp.random(20000 // s, 50000 // s, density=0.01, format="csc", random_state=seed)
    w = np.zeros(X.shape[1])
    w[:50] = 1.0
    y = X @ w + 0.1 * rng.standard_normal(X.shape[0])
    return {
        "f": dict(
            title="sparse lasso path", X=X, y=y, datafit=Quadratic(), penalty=L1(1.0), n_lams=20, eps=5e-2
        )
    }


#: Problem builders, each ``(quick, rng) -> {letter: spec}`` (the SVM problems, g, come from svm_problem.py).
PROBLEMS = (_regression_problems, _logistic_problem, _ridge_problem, partial(_sparse_problem, seed=0))


def problems(quick, seed=0):
    """The problems as dicts: data, normpen datafit and penalty, path length and depth."""
    rng = np.random.default_rng(seed)
    specs = {}
    for build in PROBLEMS:
        specs.update(build(quick, rng))
    return dict(sorted(specs.items()))


# ---- the certificate every library is measured with -----------------------------------


def largest_relative_gap(problem, spec, lams, coefs):
    """max over the path of (duality gap / objective at zero), normpen's certificate, no intercept."""
    worst = 0.0
    for lam, coef in zip(lams, coefs, strict=True):
        block = as_block_penalty(spec["penalty"].with_lam(float(lam)), problem.coef_shape)
        state = problem.state(np.asarray(coef, dtype=np.float64))
        _, grad = problem.full_gradient(state)
        report = problem.duality_gap(state.z, block, state.W, grad)
        worst = max(worst, report.gap / problem.objective_at_zero())
    return worst


# ---- the libraries ----------------------------------------------------------------------


# Each runner returns the strengths it solved and its coefficients there (None: problem not supported).


def run_normpen(spec, lams, tol):
    if spec["penalty"].__class__ is L2:
        model = RidgeCV(lams=lams, fit_intercept=False).fit(spec["X"], spec["y"])
        return [model.lam_], [model.coef_]  # the selected strength's solution; the path comes from one SVD
    result = path(spec["X"], spec["y"], spec["datafit"], spec["penalty"], lams, fit_intercept=False, tol=tol)
    return lams, list(result.coefs)


def run_sklearn(spec, lams, tol):
    from sklearn import linear_model

    X, y, n = spec["X"], spec["y"], spec["X"].shape[0]
    penalty = spec["penalty"]
    if isinstance(penalty, L2):
        model = linear_model.RidgeCV(alphas=lams * n, fit_intercept=False).fit(X, y)
        return [model.alpha_ / n], [model.coef_]
    if isinstance(spec["datafit"], Logistic):
        model = linear_model.LogisticRegression(
            l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=tol
        )
        return lams, [model.set_params(C=1 / (n * lam)).fit(X, y).coef_.ravel().copy() for lam in lams]
    if isinstance(penalty, GroupLasso):
        return None
    ratio = penalty.l1_ratio if isinstance(penalty, ElasticNet) else 1.0
    _, coefs, _ = linear_model.enet_path(X, y, l1_ratio=ratio, alphas=lams, tol=tol, max_iter=100_000)
    return lams, list(coefs.T)


def run_celer(spec, lams, tol):
    from celer import celer_path

    X, y, n = spec["X"], spec["y"], spec["X"].shape[0]
    penalty = spec["penalty"]
    if isinstance(penalty, L2):
        return None
    if isinstance(spec["datafit"], Logistic):
        _, coefs, _ = celer_path(X, y, "logreg", alphas=lams * n, tol=tol)
    elif isinstance(penalty, GroupLasso):
        _, coefs, _ = celer_path(X, y, "grouplasso", groups=5, alphas=lams * math.sqrt(5), tol=tol)
    elif isinstance(penalty, ElasticNet):
        # celer solves scikit-learn's elastic net, alpha*(r|w| + (1-r)/2 w^2), whatever its docstring says
        _, coefs, _ = celer_path(X, y, "lasso", alphas=lams, l1_ratio=penalty.l1_ratio, tol=tol)
    else:
        _, coefs, _ = celer_path(X, y, "lasso", alphas=lams, tol=tol)
    return lams, list(coefs.T)


def run_skglm(spec, lams, tol):
    from skglm import datafits, penalties, solvers

    X, y = spec["X"], spec["y"]
    penalty = spec["penalty"]
    if isinstance(penalty, L2):
        return None
    if isinstance(penalty, GroupLasso):
        grp_ptr = np.arange(0, X.shape[1] + 1, 5, dtype=np.int32)
        grp_indices = np.concatenate(spec["groups"]).astype(np.int32)
        datafit, solver = datafits.QuadraticGroup(grp_ptr, grp_indices), solvers.GroupBCD(tol=tol)
        weights = np.full(len(spec["groups"]), math.sqrt(5))

        def pen(lam):
            return penalties.WeightedGroupL2(lam, weights, grp_ptr, grp_indices)
    elif isinstance(spec["datafit"], Logistic):
        datafit, solver = datafits.Logistic(), solvers.ProxNewton(tol=tol, fit_intercept=False)

        def pen(lam):
            return penalties.L1(lam)
    else:
        datafit, solver = datafits.Quadratic(), solvers.AndersonCD(tol=tol, fit_intercept=False)

        def pen(lam):
            return (
                penalties.L1_plus_L2(lam, penalty.l1_ratio)
                if isinstance(penalty, ElasticNet)
                else penalties.L1(lam)
            )

    # warm-started solves along the grid, as skglm's own estimators and path do
    coefs, w = [], np.zeros(X.shape[1])
    for lam in lams:
        w = solver.solve(X, y, datafit, pen(float(lam)), w_init=w.copy(), Xw_init=np.asarray(X @ w))[0]
        coefs.append(w.copy())
    return lams, coefs


LIBRARIES = {"normpen": run_normpen, "scikit-learn": run_sklearn, "skglm": run_skglm, "celer": run_celer}
OURS = "normpen"
#: A peer whose gap is worse than normpen's is rerun at tolerances down to ``tol * _TIGHTEST``.
_TIGHTEST = 1e-4


def available(name):
    if name in (OURS, "scikit-learn"):
        return True
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# ---- cold start ---------------------------------------------------------------------------

COLD = {
    "normpen": "from normpen.linear import Lasso\nfit = lambda X, y: Lasso(0.05).fit(X, y)",
    "scikit-learn": "from sklearn.linear_model import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
    "skglm": "from skglm import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
    "celer": "from celer import Lasso\nfit = lambda X, y: Lasso(alpha=0.05).fit(X, y)",
}

COLD_SCRIPT = """
import time
import numpy as np
{setup}
rng = np.random.default_rng(0)
X = rng.standard_normal((200, 500)); y = X[:, :5].sum(1) + rng.standard_normal(200)
start = time.perf_counter(); fit(X, y); first = time.perf_counter() - start
start = time.perf_counter(); fit(X, y); second = time.perf_counter() - start
print(first, second)
"""


def cold_start(name):
    """First and second fit of a small lasso in a fresh interpreter (imports excluded)."""
    script = COLD_SCRIPT.format(setup=COLD[name])
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    first, second = map(float, out.stdout.split())
    return first, second


# ---- main -----------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="problems 5x smaller in each dimension")
    parser.add_argument("--only", default="abcdefg", help="problems to run, e.g. 'ac'")
    parser.add_argument("--tol", type=float, default=1e-6, help="tolerance of normpen and first one of peers")
    parser.add_argument(
        "--patience",
        type=float,
        default=5.0,
        help="no tighter peer reruns past this multiple of our time",
    )
    args = parser.parse_args(argv)
    specs = problems(args.quick)
    names = [name for name in LIBRARIES if available(name)]
    table = Table(title=f"normpen.linear vs peers (normpen tol={args.tol:g}, one BLAS thread, CPU seconds)")
    for column in ("problem", "library", "tol", "time (s)", "largest rel. gap", "normpen / fastest peer"):
        table.add_column(column, justify="right" if column != "library" else "left")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in args.only.replace("g", ""):
            spec = specs[key]
            lams = _strengths(spec)
            rows = {}
            for name in names:
                with console.status(f"({key}) {spec['title']}: {name}"):
                    row = _run_matched(name, spec, lams, args.tol, rows.get(OURS), args.patience)
                if row is not None:
                    rows[name] = row
            _add_rows(table, f"({key}) {spec['title']}", rows)
    if "g" in args.only:
        from svm_problem import svm_rows  # benchmarks/ is the script's directory, hence on sys.path

        for label, rows in svm_rows(args.quick, args.tol, args.patience):
            _add_rows(table, label, rows)
    console.print(table)
    cold = Table(title="cold start: first fit in a fresh process (small lasso, imports excluded)")
    for column in ("library", "first fit (s)", "second fit (s)"):
        cold.add_column(column)
    for name in names:
        with console.status(f"cold start: {name}"):
            first, second = cold_start(name)
        cold.add_row(name, f"{first:.3f}", f"{second:.4f}")
    console.print(cold)


def _strengths(spec):
    """The grid: geometric from lambda_max down to ``eps`` times it (a fixed grid for ridge)."""
    if isinstance(spec["penalty"], L2):
        return np.geomspace(1e2, 1e-4, spec["n_lams"])
    lam_max = lambda_max(spec["X"], spec["y"], spec["datafit"], spec["penalty"], fit_intercept=False)
    return lam_max * np.geomspace(1, spec["eps"], spec["n_lams"])


def _timed(name, spec, lams, tol):
    """``(CPU seconds, largest relative gap)`` of one library's path, or None if it lacks the problem."""
    LIBRARIES[name](_small(spec), lams[:2] * 10, tol)  # compile just-in-time code (numba) before timing
    start = time.process_time()
    solved = LIBRARIES[name](spec, lams, tol)
    elapsed = time.process_time() - start
    if solved is None:
        return None
    problem = Problem(spec["X"], spec["y"], spec["datafit"], fit_intercept=False)
    return elapsed, largest_relative_gap(problem, spec, *solved)


def _run_matched(name, spec, lams, tol, ours, patience):
    """``(tol, time, gap)``: normpen at ``tol``; a peer at ``tol`` and tenfold tighter until its gap is ours.

    A peer stops tightening once its gap is at most normpen's, at ``tol * _TIGHTEST``, or once a run
    took ``patience`` times normpen's time (then it is slower at a worse gap already).
    """
    current = tol
    while True:
        result = _timed(name, spec, lams, current)
        if result is None:
            return None
        elapsed, gap = result
        if (
            ours is None
            or _as_good(gap, ours[2])
            or current <= tol * _TIGHTEST * (1 + 1e-9)
            or elapsed > patience * ours[1]
        ):
            return current, elapsed, gap
        current /= 10


def _as_good(gap, ours):
    """An equal or better gap than ours (gaps below 1e-14 are rounding and all equal)."""
    return gap <= ours * (1 + 1e-9) or gap <= 1e-14


def _small(spec):
    """The same problem on a corner of the data, to compile just-in-time code before timing."""
    groups = spec.get("groups")
    small = dict(spec, X=spec["X"][:100, :100], y=spec["y"][:100])
    if groups is not None:
        small["groups"] = groups[:20]
        small["penalty"] = GroupLasso(1.0, groups[:20])
    return small


def _ratio(ours, peers):
    """Our time over the fastest peer's with an equal or better gap (bracketed: any gap, if none has)."""
    _, ours_time, ours_gap = ours
    matched = [t for _, t, g in peers.values() if _as_good(g, ours_gap)]
    fastest_any = min((t for _, t, _ in peers.values()), default=math.nan)
    return f"{ours_time / min(matched):.2f}" if matched else f"({ours_time / fastest_any:.2f})"


def _add_rows(table, label, rows):
    peers = {name: row for name, row in rows.items() if name != OURS}
    for i, (name, (tol, elapsed, gap)) in enumerate(rows.items()):
        ratio = _ratio(rows[name], peers) if name == OURS and peers else ""
        table.add_row(label if i == 0 else "", name, f"{tol:.0e}", f"{elapsed:.2f}", f"{gap:.1e}", ratio)


if __name__ == "__main__":
    main()
