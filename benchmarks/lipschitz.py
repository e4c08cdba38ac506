"""Benchmark: Lipschitz bounds and certified accuracy of small networks on scikit-learn's digits.

For an MLP and a small CNN, the time and value of
(a) normpen's certified bound (Gram iteration, ``lipschitz_bound``),
(b) the product of exact operator norms (dense SVD per layer),
(c) the product of PyTorch's ``spectral_norm`` estimates (power iteration on the reshaped kernel),
(d) the empirical lower bound: the largest slope found by optimisation;
then the certified L2 accuracy at eps = 0.1 and 0.3 of models trained with and without the spectral
penalty. Run: ``.venv/bin/python benchmarks/lipschitz.py``.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from normpen.analysis import SpectralPenalty, certified_accuracy, layer_input_shapes, lipschitz_bound


def digits():
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    return X[:1400], torch.tensor(y[:1400]), X[1400:], torch.tensor(y[1400:])


def mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(build, X, y, lam, seed, epochs=300):
    torch.manual_seed(seed)
    model = build()
    penalty = SpectralPenalty(model, lam, (64,)) if lam > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward()
        opt.step()
    return model.eval()


def torch_power_iteration_product(model):
    """Product over layers of torch's spectral_norm estimate (15 iterations at registration, 1 per step)."""
    model = copy.deepcopy(model).train()
    product = 1.0
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            spectral_norm(module)
    model(torch.zeros(2, 64))  # one training-mode forward: one power iteration per layer
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            sn = module.parametrizations.weight[0]
            weight = module.parametrizations.weight.original.detach()
            matrix = weight.reshape(weight.shape[0], -1)
            product *= float(torch.dot(sn._u, matrix @ sn._v))
    return product


def largest_slope(model, X, seed, steps=200):
    """Largest ||J(x)||_2 over data points, then Adam ascent on difference quotients from the best ones."""
    model = copy.deepcopy(model).double()
    X = X.double()
    norms = []
    for x in X[:200]:
        jac = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x)
        norms.append(float(torch.linalg.matrix_norm(jac, ord=2)))
    best = max(norms)
    start = X[torch.tensor(norms).argsort(descending=True)[:16]].clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    delta = (1e-2 * torch.randn(start.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([start, delta], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        ratio = (model(start + delta) - model(start)).norm(dim=1) / delta.norm(dim=1)
        (-ratio.sum()).backward()
        opt.step()
        best = max(best, ratio.max().item())
    return best


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def exact_product(model):
    return lipschitz_bound(model, (64,), exact=True).bound


def main():
    console = Console()
    X, y, Xt, yt = digits()
    bounds = Table(title="Lipschitz bounds on digits (L2), trained without penalty")
    for column in ("model", "method", "value", "value / (d)", "seconds"):
        bounds.add_column(column, justify="right")
    models = {}
    for name, build in (("MLP", mlp), ("CNN", cnn)):
        for lam in (0.0, 0.01):
            models[name, lam], seconds = timed(lambda b=build, l=lam: train(b, X, y, l, seed=0))
            console.log(f"trained {name} lam={lam} in {seconds:.1f} s")
        model = models[name, 0.0]
        rows = [
            ("(a) normpen certified", *timed(lambda m=model: lipschitz_bound(m, (64,)).bound)),
            ("(b) exact norms product", *timed(lambda m=model: exact_product(m))),
            ("(c) torch spectral_norm", *timed(lambda m=model: torch_power_iteration_product(m))),
            ("(d) largest slope found", *timed(lambda m=model: largest_slope(m, Xt, seed=0))),
        ]
        lower = rows[-1][1]
        for method, value, seconds in rows:
            bounds.add_row(name, method, f"{value:.4g}", f"{value / lower:.3f}", f"{seconds:.3f}")
    console.print(bounds)
    shapes = {name: layer_input_shapes(m, (64,)) for name, m in ((n, models[n, 0.0]) for n in ("MLP", "CNN"))}
    console.log(f"layer input shapes: {shapes}")
    acc = Table(title="Certified L2 accuracy on the 397 held-out digits")
    for column in ("model", "spectral penalty", "clean", "eps = 0.1", "eps = 0.3", "L bound"):
        acc.add_column(column, justify="right")
    for (name, lam), model in models.items():
        L = lipschitz_bound(model, (64,))
        with torch.no_grad():
            clean = float((model(Xt).argmax(1) == yt).float().mean())
        row = [certified_accuracy(model, Xt, yt, eps, lipschitz=L) for eps in (0.1, 0.3)]
        acc.add_row(name, f"{lam:g}", f"{clean:.3f}", f"{row[0]:.3f}", f"{row[1]:.3f}", f"{L.bound:.3g}")
    console.print(acc)
    console.log(f"sqrt(2) = {math.sqrt(2):.4f}; threads = {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
