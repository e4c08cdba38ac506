"""Active-block cycling of the implicit least-squares block sweep (``_ResidualBlockSweep``).

After each pass over every block of the working set the sweep passes over the blocks that are
nonzero only, until they settle; the compiled ``epoch_residual_blocks`` visits the blocks it is
given, in that order. Checked here: a pass over some blocks makes exactly the moves of the formed
epoch on the sub-problem of those blocks (the others fixed: their terms of the gradient are
constant), an extrapolated point of the active blocks is kept exactly when it lowers the model and
leaves the kept residual that of the point, and a group-lasso path whose wide working sets go
implicit (and cycle, with extrapolations kept) reaches the objectives of the path on the formed
Gram matrix.
"""

import numpy as np
import pytest
from sweep_models import centred_model

from normpen.linear import path
from normpen.linear.blocks import BlockPenalty
from normpen.linear.datafits import Quadratic
from normpen.linear.solvers import cd
from normpen.linear.solvers._sweeps import epoch_blocks, epoch_residual_blocks
from normpen.penalties.group_lasso import GroupLasso

EPS = np.finfo(np.float64).eps


def _top_eigenvalues(Q, pen):
    return np.array(
        [
            np.linalg.eigvalsh(Q[s : s + n, s : s + n])[-1]
            for s, n in zip(pen.block_starts, pen.block_sizes, strict=True)
        ]
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("equal_weights", [False, True])
def test_a_pass_over_some_blocks_makes_the_moves_of_their_formed_sub_problem(seed, centred, equal_weights):
    r"""``epoch_residual_blocks`` visiting blocks 3, 0, 4 against ``epoch_blocks`` on those blocks alone.

    With the other blocks fixed, the model over the visited ones is the sub-problem with
    :math:`Q_{vv}` and the gradient there: both kernels take the same steps from the same constants
    (the eigen data of the same diagonal blocks). Tolerance, as in
    ``test_sweeps.test_a_residual_block_epoch_makes_the_moves_of_the_formed_model``: each gradient is a
    sum of at most :math:`n + k + 1` products of magnitudes :math:`S`, each side within
    :math:`(n + k + 1)uS` of it; a block's move is :math:`1/\lambda_{min}`-Lipschitz in its gradient
    and an error reaches later blocks through the rows of :math:`|Q|`; the exact solves' own rounding
    adds :math:`\gamma(\|Q_{gg}\|\|b\| + S + \beta)/\lambda_{min}`, :math:`\gamma = 16(|g| + 2)u`.
    Blocks not visited do not move at all, and the returned change is the largest
    :math:`L_g\|\Delta_g\|^2`, within the moves' tolerance through
    :math:`|\|a\|^2 - \|b\|^2| \le \|a - b\|(\|a\| + \|b\|)`.
    """
    from normpen.linear.solvers.cd import _block_eigen, _block_steps, _ColumnReader

    rng = np.random.default_rng(seed)
    n, k, size = 40, 15, 3
    X = np.asfortranarray(rng.standard_normal((n, k)))
    # one weight for every sample takes the kernel's other move (one dgemv into v, scaled by it); 0.3 is
    # within the varied weights' range, so block 3's weight of 100 stays far above its linear term
    h = np.full(n, 0.3) if equal_weights else rng.uniform(0.1, 1.0, n)
    q, hsum, Q, absQ = centred_model(X, h, centred)
    w0, B, g0 = (rng.standard_normal((k, 1)) for _ in range(3))
    blocks = [np.arange(i, i + size) for i in range(0, k, size)]
    weights = rng.uniform(0.2, 2.0, len(blocks))
    weights[3] = 100.0  # far above its linear term: block 3 goes to 0
    pen = BlockPenalty.from_blocks(np.zeros((k, 1)), blocks, weights)
    L = _top_eigenvalues(Q, pen)
    visit = np.array([3, 0, 4], dtype=np.intp)

    rows = np.concatenate([blocks[g] for g in visit])
    sub = BlockPenalty.from_blocks(
        np.zeros((rows.size, 1)), [np.arange(i, i + size) for i in range(0, rows.size, size)], weights[visit]
    )
    Q_sub = np.ascontiguousarray(Q[np.ix_(rows, rows)])
    formed_B = B[rows].copy()
    formed_grad = (g0 + Q @ (B - w0))[rows]
    work = np.empty((2, size, 1))
    steps = _block_steps(sub, L[visit], _block_eigen(Q_sub[None], sub))
    formed_moves = epoch_blocks(Q_sub[None], formed_grad, formed_B, steps, False, work)

    columns = _ColumnReader(X)
    residual_B, grad = B.copy(), np.zeros((k, 1))
    v = (X * h[:, None]) @ (B[:, 0] - w0[:, 0])
    centre = float(q @ (B[:, 0] - w0[:, 0])) if centred else 0.0
    moves, centre, change = epoch_residual_blocks(
        columns.rows, columns.indptr, columns.indices, h, g0[:, 0], residual_B, grad, v, q,
        centre, hsum, _block_steps(pen, L, _block_eigen(Q[None], pen)), False, work, visit,
    )  # fmt: skip

    u = EPS / 2
    after = B.copy()
    after[rows] = formed_B
    S = np.abs(g0).max() + (absQ @ (np.abs(B - w0) + np.abs(after - w0))).max()
    least = min(np.linalg.eigvalsh(Q[np.ix_(blocks[g], blocks[g])])[0] for g in visit)
    growth = (1.0 + absQ.sum(axis=1).max() / least) ** visit.size
    gamma = 16 * (size + 2) * u
    solve = gamma * (np.abs(Q).sum(axis=1).max() * np.abs(formed_B).max() * size + S * size + weights.max())
    tol = (2 * (n + k + 1) * u * S * np.sqrt(size) + 2 * solve) * growth / least + 8 * u * np.abs(
        formed_B
    ).max()
    np.testing.assert_allclose(residual_B[rows], formed_B, rtol=0, atol=tol)
    untouched = np.setdiff1d(np.arange(k), rows)
    np.testing.assert_array_equal(residual_B[untouched], B[untouched])
    assert moves == formed_moves
    assert not np.any(residual_B[blocks[3]])
    deltas = [np.linalg.norm(formed_B[i * size : (i + 1) * size] - B[blocks[g]]) for i, g in enumerate(visit)]
    want = max(L[g] * d**2 for g, d in zip(visit, deltas, strict=True))
    slack = L.max() * np.sqrt(size) * tol * (2 * max(deltas) + np.sqrt(size) * tol) + 4 * size * u * want
    assert change == pytest.approx(want, rel=0, abs=slack)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("centred", [False, True])
def test_an_extrapolated_point_is_kept_when_it_lowers_the_model(seed, centred):
    r"""``_ResidualBlockSweep._move_if_lower`` on blocks 0 and 2 of five, against the formed model.

    A step along minus the model gradient (length :math:`0.1/\|Q\|`) lowers the model and is kept,
    one along plus the gradient raises it and is not. Kept, the residual :math:`v` and centre
    :math:`c` are those of the new point: each is the old one plus the step's :math:`HXe` and
    :math:`q^\top e`, against :math:`HX(B - W_0)` formed afresh; each entry of either side is a sum of
    at most :math:`k + 1` products, so within :math:`2(k + 2)u` times the sum of their magnitudes
    (:math:`h|X|(|B - W_0| + |e|)`, and :math:`|q|^\top(|B - W_0| + |e|)` for the centre).
    """
    rng = np.random.default_rng(seed)
    n, k, size = 40, 15, 3
    X = np.asfortranarray(rng.standard_normal((n, k)))
    h = rng.uniform(0.1, 1.0, n)
    q, hsum, Q, absQ = centred_model(X, h, centred)
    w0, B, g0 = (rng.standard_normal((k, 1)) for _ in range(3))
    blocks = [np.arange(i, i + size) for i in range(0, k, size)]
    pen = BlockPenalty.from_blocks(np.zeros((k, 1)), blocks, rng.uniform(0.2, 2.0, len(blocks)))
    model = cd._ImplicitGram.of(X, h, q if centred else None, hsum)
    eigen = cd._block_eigen(model, pen)
    sweep = cd._ResidualBlockSweep(model, g0, w0, pen, cd._block_lipschitz_of_model(pen, eigen[0]), eigen)
    sweep.rebase(B, g0 + Q @ (B - w0))
    rows = np.concatenate([blocks[0], blocks[2]])
    grad = (g0 + Q @ (B - w0))[rows, 0]
    step = 0.1 / np.linalg.norm(Q, 2) * grad

    def model_value(C):
        s = C - w0
        return float(g0[:, 0] @ s[:, 0] + 0.5 * s[:, 0] @ Q @ s[:, 0]) + pen.value(C)

    up = B[rows, 0] + step
    sweep._move_if_lower(rows, up)
    moved = B.copy()
    moved[rows, 0] = up
    assert model_value(moved) > model_value(B)
    np.testing.assert_array_equal(sweep.B, B)  # not kept

    down = B[rows, 0] - step
    moved = B.copy()
    moved[rows, 0] = down
    assert model_value(moved) < model_value(B)
    sweep._move_if_lower(rows, down)
    np.testing.assert_array_equal(sweep.B, moved)  # kept
    s, e = moved[:, 0] - w0[:, 0], moved[:, 0] - B[:, 0]
    u = EPS / 2
    magnitude = h * (np.abs(X) @ (np.abs(s) + np.abs(e)))
    np.testing.assert_allclose(sweep.residual, h * (X @ s), rtol=0, atol=2 * (k + 2) * u * magnitude.max())
    if centred:
        centre_tol = 2 * (k + 2) * u * float(np.abs(q) @ (np.abs(s) + np.abs(e)))
        assert sweep.centre == pytest.approx(float(q @ s), rel=0, abs=centre_tol)


def _group_path(X, y, groups, lams, tol):
    # solver="cd": its residual block sweeps are what these tests count ("auto" takes the covariance solver)
    return path(X, y, Quadratic(), GroupLasso(1.0, groups), lams, fit_intercept=True, tol=tol, solver="cd")


def test_a_path_whose_working_sets_cycle_implicitly_reaches_the_formed_objectives(monkeypatch):
    """Group lasso, 60 x 900 in groups of 3, every working set implicit: they cycle.

    Tolerance: each path certifies its relative gap (``dual_gaps``, an upper bound on its objective
    minus the optimum), so two objectives at one strength differ by at most the sum of their gaps.
    """
    rng = np.random.default_rng(0)
    n, p, size = 60, 900, 3
    X = np.asfortranarray(rng.standard_normal((n, p)))
    y = X[:, :12] @ rng.standard_normal(12) + 0.5 * rng.standard_normal(n)
    groups = [np.arange(i, i + size) for i in range(0, p, size)]
    lam_max = max(np.linalg.norm(X[:, g].T @ (y - y.mean())) / n / np.sqrt(size) for g in groups)
    lams = lam_max * np.geomspace(1.0, 0.05, 12)

    passes = []
    original = cd._ResidualBlockSweep._pass

    def counted(self, visit):
        passes.append(visit.size < self.every.size)
        return original(self, visit)

    kept = []
    move_if_lower = cd._ResidualBlockSweep._move_if_lower

    def recorded(self, rows, point):
        before = self.B.copy()
        move_if_lower(self, rows, point)
        kept.append(not np.array_equal(before, self.B))

    monkeypatch.setattr(cd._ResidualBlockSweep, "_pass", counted)
    monkeypatch.setattr(cd._ResidualBlockSweep, "_move_if_lower", recorded)
    # every working set implicit (the path's own starts keep them narrow: past 100 coordinates only without
    # them, where the rule took the implicit sweep on its own)
    monkeypatch.setattr(cd, "_implicit_blocks_are_cheaper", lambda X_ws, k_new: True)
    implicit = _group_path(X, y, groups, lams, 1e-8)
    assert any(passes)  # some passes went over the active blocks only
    assert any(kept)  # and some of their extrapolations were kept
    monkeypatch.setattr(cd, "_implicit_blocks_are_cheaper", lambda X_ws, k_new: False)
    formed = _group_path(X, y, groups, lams, 1e-8)
    assert implicit.converged.all() and formed.converged.all()
    # each within its gap of P*, so of each other; computed gaps carry the objectives' rounding
    # (Problem.objective_rounding, 64 eps |P| each), and at the optimum one can be negative by that much
    rounding = 2 * 64 * np.finfo(np.float64).eps * np.abs(formed.objectives)
    np.testing.assert_array_less(
        np.abs(implicit.objectives - formed.objectives), implicit.dual_gaps + formed.dual_gaps + rounding
    )
