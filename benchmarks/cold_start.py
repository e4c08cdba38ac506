r"""Cold start: the first fit in a fresh process, import included, normpen against scikit-learn.

Issue 15: "a cold first fit (fresh process, import included) stays under
scikit-learn's". Each run is a new interpreter that imports numpy and one
library's estimator, draws the data and fits once, as a script would; the
runs of the two libraries alternate (normpen, scikit-learn, normpen, ...) so
that a change of machine load falls on both. Three times per run:

- *import + fit*: wall time inside the child, from its first line to the end
  of the fit (the interpreter's own start-up, the same for both, left out);
- *process*: wall time of the whole child process, measured by the parent
  (interpreter start-up and exit included);
- *CPU*: user + system CPU time of the whole child process, less sensitive to
  other processes on a shared machine than the wall times.

Printed per case: best and median over the runs, and the ratio normpen over
scikit-learn of each (below 1: normpen is faster). On a shared machine a few
tens of milliseconds drown in the spread of these times; ``--instructions``
counts instead the instructions each child executes, once, under valgrind's
callgrind (about 40 s a child; the count varies by well under 0.1% between
runs with ``PYTHONHASHSEED`` fixed, which it sets, and one thread per pool).

Bytecode: an installed package has its modules compiled to bytecode at
install time, but an editable install under ``PYTHONDONTWRITEBYTECODE=1``
compiles normpen's modules from source in every process. So that both
libraries start as installed, the children write and read bytecode under a
temporary ``PYTHONPYCACHEPREFIX``, filled by one untimed run of each case;
``--env-bytecode`` leaves the environment's setting as it is instead.

Cases, each library at its defaults apart from the strength, mapped so that
both solve the same objective:

- ``Lasso``: :math:`\frac1{2n}\|y - Xw - b\|^2 + \lambda\|w\|_1`,
  :math:`\lambda = \lambda_{\max}/10` (scikit-learn's ``alpha``);
- ``ElasticNet``: the same datafit plus
  :math:`\lambda(\rho\|w\|_1 + \frac{1-\rho}2\|w\|^2)`, :math:`\rho = 0.5`;
- ``LogisticRegression``, two classes, :math:`\ell_2` penalty,
  :math:`\lambda = 0.01` (scikit-learn's ``C = 1/(n\lambda)``);

on ``X`` with standard normal entries (seeded), ``y`` the sum of the first
ten columns plus noise (its sign for the classifier), at 200 x 1000 and
50 x 20. Thread pools as the environment sets them.

Run: ``.venv/bin/python benchmarks/cold_start.py [--runs 9] [--only Lasso,...] [--instructions]
[--env-bytecode]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = ((200, 1000), (50, 20))

ESTIMATORS = {
    "Lasso": {
        "normpen": "from normpen.linear import Lasso\nmodel = Lasso(lam)",
        "scikit-learn": "from sklearn.linear_model import Lasso\nmodel = Lasso(alpha=lam)",
    },
    "ElasticNet": {
        "normpen": "from normpen.linear import ElasticNet\nmodel = ElasticNet(lam, l1_ratio=0.5)",
        "scikit-learn": "from sklearn.linear_model import ElasticNet\n"
        "model = ElasticNet(alpha=lam, l1_ratio=0.5)",
    },
    "LogisticRegression": {
        "normpen": "from normpen.linear import LogisticRegression\nmodel = LogisticRegression(lam)",
        "scikit-learn": "from sklearn.linear_model import LogisticRegression\n"
        "model = LogisticRegression(C=1 / (n * lam))",
    },
}

DATA = {
    "regression": "y = X[:, :10].sum(axis=1) + rng.standard_normal(n)\n"
    "lam = np.abs(X.T @ (y - y.mean())).max() / n / 10",
    "classification": "y = np.sign(X[:, :10].sum(axis=1) + rng.standard_normal(n))\nlam = 0.01",
}

SCRIPT = """\
import time
start = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
n, p = {n}, {p}
X = rng.standard_normal((n, p))
{data}
{model}
model.fit(X, y)
print(time.perf_counter() - start)
"""


def script(estimator, library, n, p):
    """The child's source: import, data, one fit, its own elapsed time printed."""
    task = "classification" if estimator == "LogisticRegression" else "regression"
    return SCRIPT.format(n=n, p=p, data=DATA[task], model=ESTIMATORS[estimator][library])


def child_env(pycache):
    """The children's environment: bytecode under ``pycache``, or the environment's own setting if None."""
    if pycache is None:
        return None
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": pycache}


def run_once(source, env):
    """One fresh interpreter: (import + fit wall, process wall, process CPU) in seconds."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return float(out.stdout.split()[-1]), wall, cpu


def measure(estimator, n, p, runs, env):
    """One untimed run of each library, then interleaved runs: {library: [(inner, wall, cpu), ...]}."""
    sources = {library: script(estimator, library, n, p) for library in ESTIMATORS[estimator]}
    for source in sources.values():
        run_once(source, env)
    times = {library: [] for library in sources}
    for _ in range(runs):
        for library, source in sources.items():
            times[library].append(run_once(source, env))
    return times


def instructions(source, env):
    """Instructions the child executes, counted by valgrind's callgrind (hash seed and thread pools fixed)."""
    env = dict(os.environ if env is None else env)
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as scratch:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out", sys.executable]
        out = subprocess.run([*command, "-c", source], capture_output=True, text=True, check=True, env=env)
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def print_instructions(estimator, n, p, env):
    """One count per library (after an untimed run that fills the bytecode cache), and their ratio."""
    counts = {}
    for library in ESTIMATORS[estimator]:
        source = script(estimator, library, n, p)
        run_once(source, env)
        counts[library] = instructions(source, env)
        print(f"| {estimator} | {n} x {p} | {library} | {counts[library] / 1e9:.3f} |")
    print(f"| {estimator} | {n} x {p} | ratio | {counts['normpen'] / counts['scikit-learn']:.3f} |")


def summary(samples):
    return min(samples), statistics.median(samples)


COLUMNS = ("import + fit", "process", "CPU")


def print_case(estimator, n, p, times):
    """Best / median of each column per library, and normpen's over scikit-learn's."""
    stats = {
        library: [summary([sample[k] for sample in samples]) for k in range(len(COLUMNS))]
        for library, samples in times.items()
    }
    for library, columns in stats.items():
        cells = " | ".join(f"{best:.3f} / {median:.3f}" for best, median in columns)
        print(f"| {estimator} | {n} x {p} | {library} | {cells} |")
    ours, theirs = stats["normpen"], stats["scikit-learn"]
    ratios = " | ".join(f"{o[0] / t[0]:.2f} / {o[1] / t[1]:.2f}" for o, t in zip(ours, theirs, strict=True))
    print(f"| {estimator} | {n} x {p} | ratio | {ratios} |")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=9, help="fresh processes per library and case (default 9)"
    )
    parser.add_argument("--only", help="comma-separated estimators (default: all)")
    parser.add_argument(
        "--env-bytecode", action="store_true", help="leave the environment's bytecode setting as it is"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead of timing"
    )
    args = parser.parse_args(argv)
    estimators = args.only.split(",") if args.only else list(ESTIMATORS)
    bytecode = "the environment's bytecode setting" if args.env_bytecode else "bytecode cached"
    if args.instructions:
        print(f"instructions of a fresh process to its first fit, exit included ({bytecode}), billions")
        columns = ("instructions",)
    else:
        print(f"cold first fit in a fresh process, {args.runs} interleaved runs each, {bytecode}")
        print("seconds, best / median")
        columns = COLUMNS
    print()
    print(f"| estimator | n x p | library | {' | '.join(columns)} |")
    print("|---|---|---|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as pycache:
        env = child_env(None if args.env_bytecode else pycache)
        for estimator in estimators:
            for n, p in SIZES:
                if args.instructions:
                    print_instructions(estimator, n, p, env)
                else:
                    print_case(estimator, n, p, measure(estimator, n, p, args.runs, env))


if __name__ == "__main__":
    main()
