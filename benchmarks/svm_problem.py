"""Linear SVMs: normpen's ``linear_svm`` against scikit-learn's liblinear and libsvm (issue 4, problem g).

Every library's answer :math:`(w, b)` is scored the same way, on normpen's
objective :math:`P(w, b) = \\tfrac\\lambda2\\|w\\|^2 + \\tfrac1n\\sum_i\\varphi(y_i(x_i^\\top w + b))`
with :math:`\\lambda = 1/(nC)`: the relative suboptimality
:math:`(P(w, b) - P^\\star)/P(0)`, where :math:`P^\\star` is certified by normpen
at ``tol = 1e-12`` (its interior point ends with a crossover to the exact
active set) and :math:`P(0)` is the objective at :math:`w = 0` with the best
constant intercept. That is a lower bound of any duality gap, so it is the
fair measure for peers that expose no dual point (liblinear); normpen's own
certified gap is printed next to it.

Problems (``C = 1``, scikit-learn's default, unless said otherwise):

- hinge with an unpenalized intercept, dense ``make_classification``
  (n = 5000, p = 500, 50 informative features, 5% flipped labels): peers are
  ``LinearSVC`` (liblinear, whose intercept is penalized: its suboptimality
  here has a floor, shown as it is) and, with ``--quick``,
  ``SVC(kernel="linear")`` (libsvm, the same exact intercept);
- hinge without intercept, same data: ``LinearSVC(fit_intercept=False)``
  solves exactly our problem;
- squared hinge without intercept, same data: ``LinearSVC`` dual coordinate
  descent and primal trust-region Newton;
- hinge without intercept on sparse X (1% nonzero, n = 20000, p = 2000):
  ``LinearSVC(fit_intercept=False)``;
- hinge without intercept, dense, ``C = 0.01``: the strongly regularized
  regime where dual coordinate descent converges in few epochs.

Each peer runs at ``--tol`` and, while its suboptimality is worse than
normpen's, again at a tenfold smaller tolerance (down to ``tol * 1e-4``),
unless a run already took ``--patience`` times normpen's time. Times are
process CPU seconds with one BLAS thread (liblinear and libsvm are
single-threaded), so a loaded machine changes them little.

Run ``python benchmarks/svm_problem.py [--quick] [--tol 1e-6]``; from
``benchmarks/linear.py``, :func:`svm_rows` gives rows in that table's format.
This is a benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.svm import SVC, LinearSVC
from threadpoolctl import threadpool_limits

from normpen.linear.solvers.svm import linear_svm

OURS = "normpen"
_TIGHTEST = 1e-4
_C = 1.0  # unless a spec gives its own "C"
console = Console(width=130)


def dense_problem(n, p, seed):
    """Noisy dense classification data, labels in {-1, +1}."""
    X, labels = make_classification(n, p, n_informative=50, flip_y=0.05, random_state=seed)
    return X, 2.0 * labels - 1.0


def sparse_problem(n, p, seed, density=0.01):
    """CSR data with 1% nonzero entries, labels from a sparse linear rule with 10% of them flipped."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", random_state=rng)
    score = X @ rng.normal(size=p)
    y = np.where(score > np.median(score), 1.0, -1.0)
    flip = rng.random(n) < 0.1
    y[flip] *= -1
    return X, y


def problems(quick=False, seed=0):
    """The SVM problems: key -> spec (title, X, y, loss, fit_intercept, peers).

    libsvm's kernel solver is quadratic in n: it runs with ``--quick`` only (on the
    full 5000 x 500 problem it did not finish in 10 CPU minutes).
    """
    shrink = 5 if quick else 1
    X, y = dense_problem(5000 // shrink, 500 // shrink, seed)
    Xs, ys = sparse_problem(20000 // shrink, 2000 // shrink, seed)
    dense, sparse = "x".join(map(str, X.shape)), "x".join(map(str, Xs.shape))
    with_intercept = ("libsvm SVC", "liblinear (penalized b)") if quick else ("liblinear (penalized b)",)
    return {
        "g1": {"title": f"hinge + intercept, {dense}", "X": X, "y": y, "loss": "hinge",
               "fit_intercept": True, "peers": with_intercept},
        "g2": {"title": f"hinge, no intercept, {dense}", "X": X, "y": y, "loss": "hinge",
               "fit_intercept": False, "peers": ("liblinear",)},
        "g3": {"title": f"squared hinge, no intercept, {dense}", "X": X, "y": y, "loss": "squared_hinge",
               "fit_intercept": False, "peers": ("liblinear", "liblinear primal")},
        "g4": {"title": f"hinge, no intercept, sparse {sparse}", "X": Xs, "y": ys, "loss": "hinge",
               "fit_intercept": False, "peers": ("liblinear",)},
        "g5": {"title": f"hinge, no intercept, {dense}, C = 0.01", "X": X, "y": y, "loss": "hinge",
               "fit_intercept": False, "peers": ("liblinear",), "C": 0.01},
    }  # fmt: skip


def strength(spec):
    r""":math:`\lambda = 1/(nC)`."""
    return 1.0 / (spec["X"].shape[0] * spec.get("C", _C))


def objective(spec, w, b):
    """Normpen's :math:`P(w, b)` with :math:`\\lambda = 1/(nC)`."""
    X, y = spec["X"], spec["y"]
    lam = strength(spec)
    slack = np.clip(1 - y * (np.asarray(X @ w).ravel() + b), 0, None)
    return 0.5 * lam * float(w @ w) + float(np.mean(slack if spec["loss"] == "hinge" else slack**2))


def reference(spec):
    """``(P*, P(0))`` from normpen at ``tol = 1e-12``."""
    X = spec["X"]
    result = linear_svm(
        X,
        spec["y"],
        strength(spec),
        loss=spec["loss"],
        fit_intercept=spec["fit_intercept"],
        tol=1e-12,
    )
    return result.objective - result.dual_gap, result.gap_scale


def solve(name, spec, tol):
    """``(w, b)`` of one library at its tolerance ``tol``."""
    X, y, loss, C = spec["X"], spec["y"], spec["loss"], spec.get("C", _C)
    if name == OURS:
        result = linear_svm(X, y, strength(spec), loss=loss, fit_intercept=spec["fit_intercept"], tol=tol)
        return result.coef, result.intercept
    if name == "libsvm SVC":
        model = SVC(kernel="linear", C=C, tol=tol, cache_size=1000).fit(X, y)
        return model.coef_.ravel(), float(model.intercept_[0])
    model = LinearSVC(
        C=C,
        loss=loss,
        dual=name != "liblinear primal",
        fit_intercept=spec["fit_intercept"],
        tol=tol,
        max_iter=100_000,
    ).fit(X, y)
    return model.coef_.ravel(), float(model.intercept_[0]) if spec["fit_intercept"] else 0.0


def timed(name, spec, tol, optimum, scale):
    """``(tol, CPU seconds, relative suboptimality)`` of one run."""
    start = time.process_time()
    w, b = solve(name, spec, tol)
    elapsed = time.process_time() - start
    return tol, elapsed, max(objective(spec, w, b) - optimum, 0.0) / scale


def matched(name, spec, tol, ours, optimum, scale, patience):
    """A peer at ``tol`` and tenfold tighter until its suboptimality is at most ours (or too slow)."""
    current = tol
    while True:
        row = timed(name, spec, current, optimum, scale)
        if row[2] <= ours[2] * (1 + 1e-9) or row[2] <= 1e-14:
            return row
        if current <= tol * _TIGHTEST * (1 + 1e-9) or row[1] > patience * ours[1]:
            return row
        current /= 10


def ratio(rows):
    """normpen's time over the fastest peer's at equal or better suboptimality (bracketed: at any)."""
    _, ours_time, ours_gap = rows[OURS]
    peers = [row for name, row in rows.items() if name != OURS]
    equal = [t for _, t, g in peers if g <= ours_gap * (1 + 1e-9) or g <= 1e-14]
    if equal:
        return f"{ours_time / min(equal):.2f}"
    return f"({ours_time / min((t for _, t, _ in peers), default=math.nan):.2f})"


def svm_rows(quick=False, tol=1e-6, patience=5.0, only=None):
    """Per problem ``(label, {library: (tol, CPU s, rel. suboptimality)})``, normpen first.

    The rows have the shape of ``benchmarks/linear.py``'s ``_add_rows``.
    """
    out = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, spec in problems(quick).items():
            if only is not None and key not in only:
                continue
            with console.status(f"({key}) {spec['title']}: reference"):
                optimum, scale = reference(spec)
                solve(OURS, dict(spec, X=spec["X"][:50], y=spec["y"][:50]), tol)  # warm the imports
            rows = {OURS: timed(OURS, spec, tol, optimum, scale)}
            for name in spec["peers"]:
                with console.status(f"({key}) {spec['title']}: {name}"):
                    rows[name] = matched(name, spec, tol, rows[OURS], optimum, scale, patience)
            out.append((f"({key}) {spec['title']}", rows))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="problems 5x smaller in each dimension")
    parser.add_argument(
        "--tol", type=float, default=1e-6, help="normpen's tolerance and the peers' first one"
    )
    parser.add_argument(
        "--patience", type=float, default=5.0, help="no tighter peer rerun past this multiple"
    )
    parser.add_argument("--only", nargs="*", help="problem keys, e.g. g1 g3")
    args = parser.parse_args(argv)
    table = Table(title=f"linear SVMs (normpen tol={args.tol:g}, one BLAS thread, CPU seconds)")
    for column in ("problem", "library", "tol", "time (s)", "rel. suboptimality", "normpen / fastest peer"):
        table.add_column(column, justify="left" if column == "library" else "right")
    for label, rows in svm_rows(args.quick, args.tol, args.patience, args.only):
        for i, (name, (tol, elapsed, gap)) in enumerate(rows.items()):
            table.add_row(
                label if i == 0 else "", name, f"{tol:.0e}", f"{elapsed:.2f}", f"{gap:.1e}",
                ratio(rows) if name == OURS else "",
            )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
