"""Every ```python block of the README and of the reference pages runs as written, so a copied example never
meets a stale API.

Most blocks are snippets that use names a reader already has (``X``, ``y``, ``model``, ``loader``...). Each
block is declared in ``CASES`` by its page and a marker, a string found in that block only: the entry
names the context that defines those names (tiny seeded data: scikit-learn's bundled diabetes and digits,
torch models built here) and, where a comment of the block makes a claim that is cheap to verify, a check
run on the namespace the block leaves. A block without an entry, or whose marker is ambiguous, fails with
the entry to add. Blocks that cannot run here are in ``SKIPPED`` with the reason. docs/frameworks.md is
run by tests/torch/test_torch_docs.py (each example in its own interpreter: they make process groups).

The blocks run in this process, each in a fresh namespace built by its context (an interpreter per block
would cost torch's import, about 2 s, each time).
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "README.md",
    "docs/penalties.md",
    "docs/penalties_structured.md",
    "docs/linear_ridge_svm_constrained.md",
    "docs/analysis.md",
    "docs/torch.md",
    "docs/linear.md",
)
FENCE = re.compile(r"^```python\n(.*?)^```$", flags=re.S | re.M)

# float64 rounding of the few operations (a sum of at most a few dozen terms) behind the values checked
# on float64 data: 100 * 2^-53 ~ 1e-14, with a hundredfold room.
FLOAT64_BALL = 1e-12


def _float32_ball(n):
    """Relative error bound of the norm of n float32 entries just rescaled onto a ball.

    One rounding per rescaled entry and at most n in the sum of squares (the worst case of recursive
    summation, Higham 2002, section 4.2), each 2^-24 relative; the square root halves them: (n + 1) * 2^-24
    covers the whole.
    """
    return (n + 1) * 2.0**-24


# ---- data (cached: the contexts copy what they hand out) ------------------------------------------------


@cache
def _diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X[:200], y[:200]


@cache
def _digits():
    images, target = load_digits(return_X_y=True)
    return images[:64].astype(np.float32) / 16.0, target[:64]


def _torch_digits(image):
    """Digits as torch tensors: flat (64, 64) inputs, or (64, 1, 8, 8) images; labels in 0..9."""
    images, target = _digits()
    X = torch.tensor(images).reshape(-1, 1, 8, 8) if image else torch.tensor(images)
    return X, torch.tensor(target)


# ---- contexts: each returns the namespace a block starts from ---------------------------------------------


def linear_context():
    """Standardized regression ``X, y`` (diabetes, 200 x 10), three feature ``groups``, 3-class ``labels``.

    The first group holds the three features with the weakest effects (age, s1, s2), so the group lasso at
    the README's strength zeroes it.
    """
    X, y = _diabetes()
    X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    groups = [np.array([0, 4, 5]), np.array([1, 2, 3]), np.arange(6, 10)]
    grad0 = -X.T @ (y - y.mean()) / len(y)
    return {"np": np, "X": X, "y": y, "labels": labels, "groups": groups, "grad0": grad0}


def lasso_context():
    """The regression data and ``Lasso``, which docs/linear.md's first block imported."""
    from normpen.linear import Lasso

    return {**linear_context(), "Lasso": Lasso}


def separable_context():
    """Two well separated classes in 3-D, labels in {-1, +1} (what the SVMs take)."""
    rng = np.random.default_rng(0)
    y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    X = rng.normal(size=(40, 3)) + 3.0 * y[:, None] * np.array([1.0, 0.5, 0.0])
    return {"np": np, "X": X, "y": y}


def vector_context():
    """A coefficient vector ``x`` of 8 entries and a gradient ``grad0`` (numpy)."""
    x = np.array([0.05, 2.0, -1.5, 0.02, 0.02, 0.9, -0.04, 0.01])
    grad0 = np.linspace(-1.0, 1.5, 8)
    return {"np": np, "x": x, "grad0": grad0}


def matrix_context():
    """A 8 x 6 float64 torch matrix ``W``, singular values 10 ... 0.1, row norms 1.7 to 6.5; a ``step``."""
    gen = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(8, 6, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    sigma = torch.tensor([10.0, 4.0, 1.0, 0.6, 0.3, 0.1], dtype=torch.float64)
    W = (U * sigma) @ V.T
    return {"torch": torch, "W": W, "_W0": W.clone(), "step": 0.1}


def _torch_names():
    import normpen as npn
    from normpen import L2, GroupLasso
    from normpen.torch import Regularizer, Rule

    return {
        "torch": torch,
        "nn": nn,
        "npn": npn,
        "L2": L2,
        "GroupLasso": GroupLasso,
        "Regularizer": Regularizer,
        "Rule": Rule,
    }


def _classifier_context(model, image):
    """``model``, a batch ``x, y``, the whole set ``X`` (tensors), a ``loader`` of 2 batches, ``loss_fn``."""
    X, labels = _torch_digits(image)
    loader = [(X[:16], labels[:16]), (X[16:32], labels[16:32])]
    return {
        **_torch_names(),
        "model": model,
        "_model0": copy.deepcopy(model),
        "x": X[:16],
        "y": labels[:16],
        "X": X,
        "loader": loader,
        "loss_fn": nn.CrossEntropyLoss(),
        "task_loss": torch.tensor(0.0),
        "lr": 0.1,
    }


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def mlp_context():
    """An MLP ``nn.Sequential(Linear(64, 16), ReLU, Linear(16, 10))`` on flat digits."""
    return _classifier_context(_mlp(), image=False)


def mlp_whole_set_context():
    """The MLP with ``X, y`` the whole set (64 digits), for the blocks that evaluate a model on ``X, y``."""
    ns = _classifier_context(_mlp(), image=False)
    ns["y"] = _torch_digits(image=False)[1]
    return ns


def large_mlp_context():
    """The MLP with its weights scaled by 20 (rows of norm ~6 to 15), so a max-norm of 3 has work to do."""
    model = _mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)
    return _classifier_context(model, image=False)


def encoder_context():
    """A classifier with an ``encoder`` submodule (``encoder.0`` Linear, ``head`` Linear)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(encoder=nn.Sequential(nn.Linear(64, 16), nn.ReLU()), head=nn.Linear(16, 10)),
    )
    return _classifier_context(model, image=False)


def conv_context():
    """A conv net on (1, 8, 8) digit images (docs/analysis.md's, 4 channels), held-out ``X_test, y_test``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)
    )
    ns = _classifier_context(model, image=True)
    ns["X_test"], ns["y_test"] = ns["X"][32:], _torch_digits(image=True)[1][32:]
    return ns


def analysis_context():
    """The conv net, and the names docs/torch.md's model-level rules take from normpen.analysis."""
    from normpen.analysis import SpectralPenalty, path_norm

    return {**conv_context(), "path_norm": path_norm, "SpectralPenalty": SpectralPenalty}


def pretrained_context():
    """A ``pretrained`` model (``backbone``, ``head``), the MLP as ``model``, a ``task_a_loader``."""
    ns = _classifier_context(_mlp(), image=False)
    torch.manual_seed(1)
    ns["pretrained"] = nn.Sequential(
        OrderedDict(backbone=nn.Sequential(nn.Linear(64, 16), nn.ReLU()), head=nn.Linear(16, 10)),
    )
    ns["task_a_loader"] = ns["loader"]
    return ns


def anchored_context():
    """The MLP, a ``task_loss`` from it, and ``per_sample_grads`` (name -> (16, *shape)) of 16 samples."""
    ns = _classifier_context(_mlp(), image=False)
    model, loss_fn = ns["model"], ns["loss_fn"]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        return loss_fn(torch.func.functional_call(model, p, (xi[None],)), yi[None])

    ns["per_sample_grads"] = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(
        params, ns["x"], ns["y"]
    )
    ns["task_loss"] = loss_fn(model(ns["x"]), ns["y"])
    return ns


# ---- checks of what a block's comments claim ---------------------------------------------------------


def _check_l1_readme(ns):
    prox = ns["pen"].prox(ns["x"], step=1.0)
    assert np.count_nonzero(prox == 0) == 1  # "exact zeros": -0.05 is within the threshold 0.1
    assert np.abs(ns["pen"].project(ns["x"], 1.0)).sum() <= 1.0 + FLOAT64_BALL


def _check_lasso_readme(ns):
    assert ns["model"].lam_min_ > 0 and ns["model"].lam_1se_ >= ns["model"].lam_min_
    coef = ns["GroupLasso"](lam=0.1, groups=ns["groups"]).fit(ns["X"], ns["y"]).coef_
    zero = [bool(np.all(coef[g] == 0)) for g in ns["groups"]]
    assert any(zero) and all(
        z or np.all(coef[g] != 0) for z, g in zip(zero, ns["groups"], strict=True)
    )  # whole groups
    assert ns["result"].coefs.shape[0] == 50


def _check_linear_page(ns):
    assert ns["model"].lam_min_ > 0 and ns["model"].lam_1se_ >= ns["model"].lam_min_
    assert ns["result"].coefs.shape == (50, ns["X"].shape[1])
    zero = np.all(ns["clf"].coef_ == 0, axis=0)  # coef_ is (classes, features)
    assert zero.any() and np.all(ns["clf"].coef_[:, ~zero] != 0)  # features dropped for every class at once


def _check_max_norm_rows(ns):
    for p in ns["model"].parameters():
        if p.ndim == 2:  # "every row norm <= 3 afterwards"; the rows start at norms 6 to 15
            assert p.norm(dim=1).max().item() <= 3.0 * (1 + _float32_ball(p.shape[1]))


def _check_lagrangian(ns):
    assert ns["rule"].multiplier.item() >= 0.0


def _check_measures(ns):
    model, model0, X = ns["model"], ns["_model0"], ns["X"]
    from normpen.analysis import path_norm

    with torch.no_grad():
        # "a guaranteed upper bound": above every slope between two digits. The slopes are float32
        # quotients of norms of 10 and 64 entries: (64 + 10 + 3) * 2^-24 relative covers their rounding.
        slopes = (model0(X[1:]) - model0(X[:-1])).norm(dim=1) / (X[1:] - X[:-1]).norm(dim=1)
        assert slopes.max().item() <= ns["bound"].bound * (1 + 77 * 2.0**-24)
        # rebalance: the same function and path norm, a smaller sum of squares. Each output is a sum over 16
        # hidden units of products rescaled by alpha and 1/alpha: a few float32 roundings per term; 1e-5
        # relative to the outputs' scale (~1) is over ten times 16 * 3 * 2^-24.
        torch.testing.assert_close(model(X), model0(X), rtol=1e-5, atol=1e-5)
        assert path_norm(model, q=2).item() == pytest.approx(path_norm(model0, q=2).item(), rel=1e-5)
        squares = [sum(p.pow(2).sum().item() for p in m.parameters() if p.ndim == 2) for m in (model, model0)]
        assert squares[0] <= squares[1] * (1 + 1e-5)


def _check_l1_page(ns):
    from normpen.penalties.l1 import L1

    np.testing.assert_allclose(L1(0.1).prox(ns["x"], 1.0), [2.9, 0.0, 0.4], rtol=0, atol=FLOAT64_BALL)
    np.testing.assert_allclose(L1(0.1).project(ns["x"], 1.0), [1.0, 0.0, 0.0], rtol=0, atol=FLOAT64_BALL)


def _check_l2_page(ns):
    assert ns["w"].norm().item() <= 3.0 * (1 + _float32_ball(ns["w"].numel()))  # "the constraint ||w|| <= 3"


def _check_elastic_net_page(ns):
    pen, x, grad0 = ns["pen"], ns["x"], ns["grad0"]
    # the printed digits are the values to 8 decimals
    np.testing.assert_allclose(pen.prox(x, 1.0), [1.43478261, 0.0, 0.47826087], rtol=0, atol=1e-8)
    assert pen.norm(ns["z"]) == pytest.approx(1.0, rel=FLOAT64_BALL)
    assert pen.lambda_max(grad0) == pytest.approx(np.abs(grad0).max() / 0.7, rel=FLOAT64_BALL)


def _check_sparse_group_lasso(ns):
    sgl, x, grad0 = ns["sgl"], ns["x"], ns["grad0"]
    prox = sgl.prox(x, step=1.0)
    assert np.all(prox[[0, 4, 7]] == 0)  # a whole group: x's entries there are small
    assert prox[3] == 0 and np.all(prox[[1, 2]] != 0)  # a single coordinate inside a kept group
    # lambda_max zeroes everything: w = 0 is the prox of -grad0 just above it, and not just below it
    # (1e-6 relative is far above the float64 rounding of the thresholds, ~1e-15)
    lam_max = sgl.lambda_max(grad0)
    above = type(sgl)(lam_max * (1 + 1e-6), ns["pathways"], l1_ratio=0.3).prox(-grad0, step=1.0)
    below = type(sgl)(lam_max * (1 - 1e-6), ns["pathways"], l1_ratio=0.3).prox(-grad0, step=1.0)
    assert np.all(above == 0) and np.any(below != 0)


def _check_spectral_nuclear(ns):
    from normpen.penalties.nuclear import Nuclear
    from normpen.penalties.spectral import Spectral

    W = ns["W"]
    assert torch.linalg.matrix_rank(Nuclear(0.5).prox(W, step=1.0)).item() == 4  # sigma 10, 4, 1, 0.6 > 0.5
    assert torch.linalg.matrix_norm(Spectral(1.0).project(W, 1.0), ord=2).item() <= 1.0 + FLOAT64_BALL


def _check_max_norm_matrix(ns):
    W, W0 = ns["W"], ns["_W0"]
    expected = W0.norm(dim=1).clamp(max=3.0)  # rows above 3 rescaled onto 3, the others kept
    torch.testing.assert_close(W.norm(dim=1), expected, rtol=FLOAT64_BALL, atol=0)
    torch.testing.assert_close(ns["mn"].prox(W0, 7.0), ns["mn"].project(W0, 3.0), rtol=FLOAT64_BALL, atol=0)


def _check_ridge(ns):
    X = ns["X"]
    assert ns["path"].coefs.shape == (100, X.shape[1])
    assert ns["solution"].coef.shape == (X.shape[1],)


def _check_linear_svm(ns):
    assert ns["res"].converged


def _check_hard_margin(ns):
    res = ns["res"]
    assert res.margin == pytest.approx(1.0 / np.linalg.norm(res.coef), rel=FLOAT64_BALL)
    # "all ~ 1e-14": the rounding of float64 sums over 40 samples; 1e-10 leaves four orders of magnitude
    # for other BLAS kernels and still fails on a residual at any solver tolerance.
    assert max(abs(v) for v in res.kkt.values()) <= 1e-10 and abs(res.dual_gap) <= 1e-10


def _check_constrained(ns):
    res = ns["res"]
    assert np.abs(res.coef).sum() <= 1.5 * (1 + 1e-6)  # the solver's tol is 1e-6
    assert res.multiplier >= 0.0 and res.twin.lam == res.multiplier  # "twin: L1(mu*)"


def _check_certified(ns):
    assert ns["r"].shape == (16,) and bool((ns["r"] >= 0).all())
    assert 0.0 <= ns["acc"] <= 1.0


def _check_analysis_rules(ns):
    """Both regularizers of the block evaluated: the block's ``reg.penalty()`` is the spectral ball's (0)."""
    first = ns["_code"].split("# or:")[0]
    exec(first, ns)
    penalty = ns["reg"].penalty()
    assert penalty.ndim == 0 and torch.isfinite(penalty) and penalty.item() > 0
    penalty.backward()


def _check_model_level_rules(ns):
    """The block's bare ``Rule(...)`` lines, each used: put in a Regularizer, its penalty differentiated."""
    from normpen.torch import Regularizer

    for line in ns["_code"].splitlines():
        if line.startswith("Rule("):
            rule = eval(line.split("  #")[0], ns)
            penalty = Regularizer(ns["model"], rule).penalty()
            assert penalty.ndim == 0 and torch.isfinite(penalty)
            penalty.backward()


# ---- the declared blocks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    context: Callable[[], dict]
    check: Callable[[dict], None] | None = None


CASES = {
    # README.md
    ("README.md", "pen = npn.L1(0.1)"): Case(linear_context, _check_l1_readme),
    ("README.md", "model = LassoCV(cv=5).fit(X, y)"): Case(linear_context, _check_lasso_readme),
    ("README.md", 'select="encoder.*"'): Case(encoder_context),
    ("README.md", 'candidates="all"'): Case(mlp_context),
    ("README.md", "CosineAnnealingLR"): Case(mlp_context),
    ("README.md", 'select="0.weight"'): Case(mlp_context),
    ("README.md", "MaxNorm(3.0)"): Case(large_mlp_context, _check_max_norm_rows),
    ("README.md", 'mode="lagrangian"'): Case(mlp_context, _check_lagrangian),
    ("README.md", "SpectralConstraint(model, 1.0, (1, 8, 8))"): Case(conv_context),
    ("README.md", "rebalance(model)"): Case(mlp_whole_set_context, _check_measures),
    # docs/penalties.md
    ("docs/penalties.md", "L1(0.1).prox(x, 1.0)"): Case(dict, _check_l1_page),
    ("docs/penalties.md", "L2(1e-2).prox(w, step=lr)"): Case(mlp_context, _check_l2_page),
    ("docs/penalties.md", "ElasticNet(0.5, l1_ratio=0.7)"): Case(linear_context, _check_elastic_net_page),
    ("docs/penalties.md", "Anchored(100.0"): Case(anchored_context),
    # docs/penalties_structured.md
    ("docs/penalties_structured.md", 'groups="rows"'): Case(dict),
    ("docs/penalties_structured.md", "SparseGroupLasso(0.1"): Case(vector_context, _check_sparse_group_lasso),
    ("docs/penalties_structured.md", "Nuclear(0.5).prox(W"): Case(matrix_context, _check_spectral_nuclear),
    ("docs/penalties_structured.md", "mn = MaxNorm(3.0)"): Case(matrix_context, _check_max_norm_matrix),
    # docs/linear_ridge_svm_constrained.md
    ("docs/linear_ridge_svm_constrained.md", "ridge_path(X, y"): Case(linear_context, _check_ridge),
    ("docs/linear_ridge_svm_constrained.md", "linear_svm(X, y"): Case(separable_context, _check_linear_svm),
    ("docs/linear_ridge_svm_constrained.md", "hard_margin_svm(X, y"): Case(
        separable_context, _check_hard_margin
    ),
    ("docs/linear_ridge_svm_constrained.md", "radius=1.5"): Case(linear_context, _check_constrained),
    # docs/analysis.md
    ("docs/analysis.md", "certified_radius(model, x"): Case(conv_context, _check_certified),
    ("docs/analysis.md", "PathNormPenalty(1e-4"): Case(conv_context, _check_analysis_rules),
    # docs/torch.md
    ("docs/torch.md", 'select="encoder.*"'): Case(encoder_context),
    ("docs/torch.md", "l2_sp(pretrained"): Case(pretrained_context),
    ("docs/torch.md", "Rule(lambda m: path_norm"): Case(analysis_context, _check_model_level_rules),
    ("docs/torch.md", "SpectralConstraint(model, radius=1.0"): Case(conv_context),
    # docs/linear.md
    ("docs/linear.md", "GroupLasso(1.0, groups)"): Case(linear_context, _check_linear_page),
    ("docs/linear.md", "warm_start=True"): Case(lasso_context),
}
DASK = "starts a dask cluster of worker processes; tests/linear/test_cv_dask.py fits LassoCV on one"
SKIPPED = {("docs/linear.md", "LocalCluster("): DASK}


def _blocks():
    """(page, line, code) of every ```python block of PAGES."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        for match in FENCE.finditer(text):
            found.append((page, text.count("\n", 0, match.start()) + 2, match.group(1)))
    return found


BLOCKS = _blocks()


def _declaration(page, line, code):
    """The one CASES or SKIPPED entry whose marker the block holds, or a message saying what to declare."""
    keys = [key for key in (*CASES, *SKIPPED) if key[0] == page and key[1] in code]
    if len(keys) == 1:
        return keys[0]
    first = next(s for s in code.splitlines() if s.strip())
    if not keys:
        return (
            f"{page}:{line} (a block starting {first!r}) has no declared context: add to CASES in "
            f"tests/test_docs_examples.py an entry ({page!r}, MARKER): Case(context, check) where MARKER is "
            "a string found in this block only and context defines the names the block uses (or to SKIPPED, "
            "with the reason it cannot run in a test)"
        )
    return f"{page}:{line} (a block starting {first!r}) holds the markers of {keys}: make one of them longer"


def test_every_declared_block_is_on_its_page():
    held = [_declaration(*block) for block in BLOCKS]
    stale = [key for key in (*CASES, *SKIPPED) if key not in held]
    assert not stale, f"CASES or SKIPPED name blocks no page holds (edited or removed): {stale}"


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_block_runs(page, line, code):
    key = _declaration(page, line, code)
    assert isinstance(key, tuple), key
    if key in SKIPPED:
        pytest.skip(SKIPPED[key])
    case = CASES[key]
    ns = case.context()
    ns["_code"] = code
    torch.manual_seed(0)
    try:
        exec(compile(code, f"{page}:{line}", "exec"), ns)
        if case.check is not None:
            case.check(ns)
    finally:
        plt.close("all")
