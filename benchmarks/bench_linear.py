"""normpen.linear against scikit-learn, skglm and celer, in one process, on the same data (issue 4).

Every library solves the same objective on the same data without an
intercept (regression data centred first), and every solution is certified
the same way: the duality gap of normpen's certificate
(:mod:`normpen.linear.problem`) at each strength, relative to the objective
at :math:`w = 0`. The table gives, per problem and library, the wall time,
the largest relative gap along the path, and our time divided by the
fastest peer's among those that reached an equal or better gap (``-`` when
no peer did: then the ratio to the fastest peer at any gap is in brackets).
normpen runs twice, at ``tol`` and at ten times it, because at equal
nominal tolerance its gaps are often ten times smaller than the peers'.
A separate table gives the first fit in a fresh process (cold start, import
excluded) for each library; the timed runs come after a warm-up call on a
corner of the data, so that just-in-time compilation (skglm, numba) is not
counted there.

Problems (the issue's list):

a. lasso path, AR(1) design with rho = 0.6, n = 1000, p = 5000, 50 strengths
   from lambda_max to lambda_max / 100;
b. elastic net path on the same data, l1_ratio = 0.5;
c. L1 logistic path, n = 2000, p = 2000;
d. group lasso path, groups of 5, n = 1000, p = 5000;
e. ridge path of 100 strengths with leave-one-out CV, n = 5000, p = 500;
f. lasso path on sparse X (1% nonzero), n = 20000, p = 50000 (20 strengths
   down to lambda_max / 20).

Run ``python benchmarks/bench_linear.py [--quick] [--only a,c] [--tol 1e-6]``.
BLAS is limited to one thread for every library (the solvers compared are
single-threaded). The peers are optional (``pip install skglm celer``); a
missing one is skipped. This is a benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import warnings

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

console = Console()


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


def problems(quick, seed=0):
    """The six problems as dicts: data, normpen datafit and penalty, path length and depth."""
    rng = np.random.default_rng(seed)
    s = 5 if quick else 1
    X, y = regression(1000 // s, 5000 // s, rng)
    Xl = rng.standard_normal((2000 // s, 2000 // s))
    wl = np.zeros(Xl.shape[1])
    wl[:20] = 1.0
    yl = np.where(Xl @ wl + 0.5 * rng.standard_normal(Xl.shape[0]) > 0, 1.0, -1.0)
    Xr = rng.standard_normal((5000 // s, 500 // s))
    yr = Xr @ rng.standard_normal(Xr.shape[1]) + 5 * rng.standard_normal(Xr.shape[0])
    Xs = sp.random(20000 // s, 50000 // s, density=0.01, format="csc", random_state=seed)
    ws = np.zeros(Xs.shape[1])
    ws[:50] = 1.0
    ys = Xs @ ws + 0.1 * rng.standard_normal(Xs.shape[0])
    groups = [np.arange(i, i + 5) for i in range(0, X.shape[1], 5)]
    return {
        "a": dict(title="lasso path", X=X, y=y, datafit=Quadratic(), penalty=L1(1.0), n_lams=50, eps=1e-2),
        "b": dict(
            title="elastic net path",
            X=X,
            y=y,
            datafit=Quadratic(),
            penalty=ElasticNet(1.0, 0.5),
            n_lams=50,
            eps=1e-2,
        ),
        "c": dict(
            title="L1 logistic path", X=Xl, y=yl, datafit=Logistic(), penalty=L1(1.0), n_lams=50, eps=1e-2
        ),
        "d": dict(
            title="group lasso path",
            X=X,
            y=y,
            datafit=Quadratic(),
            penalty=GroupLasso(1.0, groups),
            n_lams=50,
            eps=1e-2,
            groups=groups,
        ),
        "e": dict(title="ridge path + LOO", X=Xr, y=yr, datafit=Quadratic(), penalty=L2(1.0), n_lams=100),
        "f": dict(
            title="sparse lasso path", X=Xs, y=ys, datafit=Quadratic(), penalty=L1(1.0), n_lams=20, eps=5e-2
        ),
    }


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


def run_normpen(spec, lams, tol):
    if spec["penalty"].__class__ is L2:
        model = RidgeCV(lams=lams).fit(spec["X"], spec["y"])
        return [model.coef_]  # the selected strength's solution; the path comes from one SVD
    result = path(spec["X"], spec["y"], spec["datafit"], spec["penalty"], lams, fit_intercept=False, tol=tol)
    return list(result.coefs)


def run_sklearn(spec, lams, tol):
    from sklearn import linear_model

    X, y, n = spec["X"], spec["y"], spec["X"].shape[0]
    penalty = spec["penalty"]
    if isinstance(penalty, L2):
        model = linear_model.RidgeCV(alphas=lams * n, fit_intercept=False).fit(X, y)
        return [model.coef_]
    if isinstance(spec["datafit"], Logistic):
        model = linear_model.LogisticRegression(
            l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=tol
        )
        return [model.set_params(C=1 / (n * lam)).fit(X, y).coef_.ravel().copy() for lam in lams]
    if isinstance(penalty, GroupLasso):
        return None
    ratio = penalty.l1_ratio if isinstance(penalty, ElasticNet) else 1.0
    _, coefs, _ = linear_model.enet_path(X, y, l1_ratio=ratio, alphas=lams, tol=tol, max_iter=100_000)
    return list(coefs.T)


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
    return list(coefs.T)


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
    return coefs


def run_normpen_loose(spec, lams, tol):
    """normpen at ten times the tolerance: the peers' gaps are often ten times ours at equal ``tol``."""
    return run_normpen(spec, lams, 10 * tol)


LIBRARIES = {
    "normpen": run_normpen,
    "normpen (10 tol)": run_normpen_loose,
    "scikit-learn": run_sklearn,
    "skglm": run_skglm,
    "celer": run_celer,
}
OURS = ("normpen", "normpen (10 tol)")


def available(name):
    if name in OURS or name == "scikit-learn":
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
    parser.add_argument("--only", default="abcdef", help="problems to run, e.g. 'ac'")
    parser.add_argument("--tol", type=float, default=1e-6, help="tolerance passed to every library")
    args = parser.parse_args(argv)
    specs = problems(args.quick)
    names = [name for name in LIBRARIES if available(name)]
    table = Table(title=f"normpen.linear vs peers (tol={args.tol:g}, one BLAS thread)")
    for column in ("problem", "library", "time (s)", "largest rel. gap", "normpen / fastest peer"):
        table.add_column(column, justify="right" if column != "library" else "left")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in args.only:
            spec = specs[key]
            problem = Problem(spec["X"], spec["y"], spec["datafit"], fit_intercept=False)
            if isinstance(spec["penalty"], L2):
                lams = np.geomspace(1e2, 1e-4, spec["n_lams"])
            else:
                lam_max = lambda_max(
                    spec["X"], spec["y"], spec["datafit"], spec["penalty"], fit_intercept=False
                )
                lams = lam_max * np.geomspace(1, spec["eps"], spec["n_lams"])
            rows = {}
            for name in names:
                with console.status(f"({key}) {spec['title']}: {name}"):
                    LIBRARIES[name](_small(spec), lams[:2] * 10, args.tol)  # compile (numba) before timing
                    start = time.perf_counter()
                    coefs = LIBRARIES[name](spec, lams, args.tol)
                    elapsed = time.perf_counter() - start
                if coefs is None:
                    continue
                solved_lams = lams if len(coefs) == len(lams) else lams[:0]
                gap = largest_relative_gap(problem, spec, solved_lams, coefs) if len(solved_lams) else 0.0
                rows[name] = (elapsed, gap)
            _add_rows(table, f"({key}) {spec['title']}", rows)
    console.print(table)
    cold = Table(title="cold start: first fit in a fresh process (small lasso, imports excluded)")
    for column in ("library", "first fit (s)", "second fit (s)"):
        cold.add_column(column)
    for name in [name for name in names if name != "normpen (10 tol)"]:
        with console.status(f"cold start: {name}"):
            first, second = cold_start(name)
        cold.add_row(name, f"{first:.3f}", f"{second:.4f}")
    console.print(cold)


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
    ours_time, ours_gap = ours
    matched = [t for t, g in peers.values() if g <= ours_gap * (1 + 1e-9) or g <= 1e-14]
    fastest_any = min((t for t, _ in peers.values()), default=math.nan)
    return f"{ours_time / min(matched):.2f}" if matched else f"- ({ours_time / fastest_any:.2f})"


def _add_rows(table, label, rows):
    peers = {name: row for name, row in rows.items() if name not in OURS}
    for i, (name, (elapsed, gap)) in enumerate(rows.items()):
        ratio = _ratio(rows[name], peers) if name in OURS and peers else ""
        table.add_row(label if i == 0 else "", name, f"{elapsed:.2f}", f"{gap:.1e}", ratio)


if __name__ == "__main__":
    main()
