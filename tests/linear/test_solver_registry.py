"""One agreement test over every (solver, datafit, penalty) that ``normpen.linear.path.SOLVERS`` lists.

For each datafit and penalty of the catalogue below, :func:`solvers_for` names the solvers that
take them; each of those solves the same problem through ``path(..., solver=name)`` and returns a
certified duality gap :math:`G \\ge P(w) - P^\\star`. Two solutions then satisfy

- :math:`|P(w_1) - P(w_2)| \\le G_1 + G_2` (both lie in :math:`[P^\\star, P^\\star + G_i]`), plus the
  rounding of two objectives, :math:`64\\epsilon(|P_1| + |P_2|)` (the floor the certificate itself
  uses, ``Problem.certifiable_tol``);
- with a ridge part :math:`\\tfrac\\mu2\\|W\\|^2` (:math:`\\mu` strong convexity),
  :math:`\\tfrac\\mu2\\|w_i - w^\\star\\|^2 \\le G_i`, so
  :math:`\\|w_1 - w_2\\| \\le \\sqrt{2G_1/\\mu} + \\sqrt{2G_2/\\mu}`.

A pair that only one solver takes is still solved, and must converge with a valid gap.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Hinge, Logistic, Multinomial, MultitaskQuadratic, Quadratic, SquaredHinge
from normpen.linear.path import SOLVERS, lambda_max, path, solvers_for
from normpen.penalties.elastic_net import ElasticNet
from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.nuclear import Nuclear
from normpen.penalties.sparse_group_lasso import SparseGroupLasso

N, P, K = 60, 8, 3
TOL = 1e-10
EPS = np.finfo(np.float64).eps


def _data(name):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, P))
    signal = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.5 * rng.standard_normal(N)
    if name in ("Quadratic",):
        return X, signal
    if name == "MultitaskQuadratic":
        return X, np.stack([signal, -signal + rng.standard_normal(N), rng.standard_normal(N)], axis=1)
    if name == "Multinomial":
        return X, np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
    return X, np.where(signal > 0, 1.0, -1.0)


DATAFITS = {
    "Quadratic": Quadratic(),
    "MultitaskQuadratic": MultitaskQuadratic(),
    "Logistic": Logistic(),
    "Multinomial": Multinomial(),
    "SquaredHinge": SquaredHinge(),
    "Hinge": Hinge(),
}


def _penalties(multi_output):
    groups = "rows" if multi_output else [np.arange(i, i + 2) for i in range(0, P, 2)]
    penalties = {
        "L1": L1(1.0),
        "ElasticNet": ElasticNet(1.0, 0.5),
        "L2": L2(1.0),
        "GroupLasso": GroupLasso(1.0, groups),
        "SparseGroupLasso": SparseGroupLasso(1.0, groups, l1_ratio=0.5),
    }
    if multi_output:
        penalties["Nuclear"] = Nuclear(1.0)
    return penalties


def _cases():
    for datafit_name, datafit in DATAFITS.items():
        X, y = _data(datafit_name)
        shape = (P, datafit.n_outputs(datafit.encode_target(y))) if datafit.multi_output else (P,)
        for penalty_name, penalty in _penalties(datafit.multi_output).items():
            names = solvers_for(datafit, penalty, shape)
            if names:
                yield pytest.param(datafit_name, penalty_name, names, id=f"{datafit_name}-{penalty_name}")


CASES = list(_cases())


def test_the_catalogue_reaches_every_solver():
    """Every solver of the registry is exercised by some case below."""
    assert {name for *_, names in (case.values for case in CASES) for name in names} == set(SOLVERS)


def _strength(X, y, datafit, penalty):
    """A tenth of lambda_max, or 0.05 for a penalty that never zeroes everything (ridge)."""
    top = lambda_max(X, y, datafit, penalty)
    return 0.1 * top if np.isfinite(top) else 0.05


@pytest.mark.parametrize(("datafit_name", "penalty_name", "names"), CASES)
def test_solvers_agree_within_their_certified_gaps(datafit_name, penalty_name, names):
    datafit = DATAFITS[datafit_name]
    X, y = _data(datafit_name)
    penalty = _penalties(datafit.multi_output)[penalty_name]
    lam = _strength(X, y, datafit, penalty)
    solved = {
        name: path(X, y, datafit, penalty, [lam], solver=name, tol=TOL, max_iter=100_000) for name in names
    }
    for name, result in solved.items():
        assert result.converged[0], name
        # a gap is >= 0 up to the rounding of the two objectives it subtracts
        assert result.dual_gaps[0] >= -64 * EPS * abs(result.objectives[0]), name
    try:
        ridge = as_block_penalty(penalty.with_lam(lam), solved[names[0]].coefs[0].shape).ridge
    except TypeError:
        ridge = 0.0
    for (name1, one), (name2, two) in itertools.combinations(solved.items(), 2):
        gaps = max(one.dual_gaps[0], 0.0) + max(two.dual_gaps[0], 0.0)
        rounding = 64 * EPS * (abs(one.objectives[0]) + abs(two.objectives[0]))
        assert abs(one.objectives[0] - two.objectives[0]) <= gaps + rounding, (name1, name2)
        if ridge > 0:
            radius = np.sqrt(2 * max(one.dual_gaps[0], 0.0) / ridge) + np.sqrt(
                2 * max(two.dual_gaps[0], 0.0) / ridge
            )
            # the coefficients' own rounding: 64 eps of their size (float64 solves)
            radius += 64 * EPS * np.abs(one.coefs[0]).max()
            assert np.linalg.norm(one.coefs[0] - two.coefs[0]) <= radius, (name1, name2)
