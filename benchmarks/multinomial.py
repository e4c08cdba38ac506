"""The multinomial L1 path of issue 15, workload (f): time and certified gap, normpen against glmnet.

Data: ``X`` 1000 x 500 standard Gaussian (seed 0), ``K = 5`` classes drawn
from a sparse multinomial model (10 features with Gaussian coefficients, Gumbel
noise), 20 strengths from :math:`\\lambda_{\\max}` down to
:math:`\\lambda_{\\max}/100`, with an intercept. The objective is the mean
cross-entropy plus :math:`\\lambda\\|W\\|_1` (glmnet's multinomial objective
with ``alpha=1, standardize=False``).

Every solution is certified the same way, with normpen's duality gap
(:mod:`normpen.linear.problem`, the intercept refitted first) relative to the
objective at :math:`W = 0`; the table gives process CPU time (one BLAS thread)
and the largest relative gap on the path. normpen runs at ``tol = 1e-6`` and at
looser tolerances (``--tols``), and, when ``python-glmnet`` is installed, at the
gap glmnet reached with its defaults (time to equal certified gap).

Run ``python benchmarks/multinomial.py [--tols 1e-6 1e-4 7e-3] [--repeat 1]``. This is a
benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from normpen.linear import path
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Multinomial
from normpen.linear.path import lambda_grid, lambda_max
from normpen.linear.problem import Problem
from normpen.penalties.l1 import L1


def workload(n=1000, p=500, n_classes=5, n_informative=10, seed=0):
    """``X`` and integer labels of workload (f)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    W = np.zeros((p, n_classes))
    W[:n_informative] = rng.standard_normal((n_informative, n_classes))
    labels = np.argmax(X @ W + rng.gumbel(size=(n, n_classes)), axis=1)
    return X, labels


def largest_relative_gap(problem, lams, coefs, intercepts):
    """Largest duality gap over the path relative to the objective at zero, intercept refitted."""
    worst = 0.0
    for lam, coef, intercept in zip(lams, coefs, intercepts, strict=True):
        state = problem.state(np.asarray(coef, dtype=np.float64), intercept)
        problem.refit_intercept(state)
        _, grad = problem.full_gradient(state)
        block = as_block_penalty(L1(float(lam)), problem.coef_shape)
        report = problem.duality_gap(state.z, block, state.W, grad)
        worst = max(worst, report.gap / problem.objective_at_zero())
    return worst


def run_normpen(X, labels, lams, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = path(X, labels, Multinomial(), L1(1.0), lams, tol=tol)
    return list(result.coefs), list(result.intercepts)


def run_glmnet(X, labels, lams, tol):
    from glmnet import LogitNet

    model = LogitNet(
        alpha=1, lambda_path=lams, standardize=False, fit_intercept=True, n_splits=0, tol=tol
    ).fit(X, labels)
    coefs = [model.coef_path_[:, :, k].T for k in range(len(lams))]
    intercepts = [model.intercept_path_[:, k] for k in range(len(lams))]
    return coefs, intercepts


def timed(run, X, labels, lams, tol, repeat):
    """Best CPU time of ``repeat`` runs and the solutions of the last."""
    best = np.inf
    for _ in range(repeat):
        start = time.process_time()
        coefs, intercepts = run(X, labels, lams, tol)
        best = min(best, time.process_time() - start)
    return best, coefs, intercepts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-4, 7e-3])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    X, labels = workload()
    problem = Problem(X, labels, Multinomial())
    lams = lambda_grid(lambda_max(X, labels, Multinomial(), L1(1.0)), n_lams=20, eps=1e-2)
    rows = []
    with threadpool_limits(1):
        for tol in args.tols:
            seconds, coefs, intercepts = timed(run_normpen, X, labels, lams, tol, args.repeat)
            rows.append(("normpen", tol, seconds, largest_relative_gap(problem, lams, coefs, intercepts)))
        try:
            import glmnet  # noqa: F401
        except ImportError:
            print("python-glmnet is not installed: no peer row")
        else:
            seconds, coefs, intercepts = timed(run_glmnet, X, labels, lams, 1e-7, args.repeat)
            gap = largest_relative_gap(problem, lams, coefs, intercepts)
            rows.append(("glmnet (tol 1e-7, its default)", 1e-7, seconds, gap))
            seconds, coefs, intercepts = timed(run_normpen, X, labels, lams, gap, args.repeat)
            rows.append(
                (
                    "normpen at glmnet's gap",
                    gap,
                    seconds,
                    largest_relative_gap(problem, lams, coefs, intercepts),
                )
            )
    print(f"{'library':<34} {'tol':>8} {'CPU s':>8} {'largest rel. gap':>17}")
    for name, tol, seconds, gap in rows:
        print(f"{name:<34} {tol:8.1e} {seconds:8.2f} {gap:17.2e}")


if __name__ == "__main__":
    main()
