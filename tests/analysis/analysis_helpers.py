"""Test-side references and models: dense operator matrices from the layers' own forward, small nets."""

import contextlib

import torch
from torch import nn


def dense_operator(module, input_shape):
    """Jacobian of ``x -> module(x) - module(0)`` at one sample of ``input_shape``, as a float64 matrix.

    Built from the module's own ``forward`` (its padding, stride, dilation and
    groups), independently of normpen's operator code. Converts ``module`` to float64.
    """
    module = module.double()
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: module(z) - module(torch.zeros_like(z)), x)
    return jac.reshape(-1, x.numel())


def dense_norm(module, input_shape):
    """Spectral norm of :func:`dense_operator` (SVD)."""
    return float(torch.linalg.matrix_norm(dense_operator(module, input_shape), ord=2))


@contextlib.contextmanager
def threads(n):
    """Run with ``n`` torch threads, restoring the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(model, X, y, epochs, seed, penalty=None, lr=1e-2):
    """Full-batch Adam on cross-entropy plus ``penalty(model)``, seeded; the model comes back in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with threads(1):
        for _ in range(epochs):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X), y)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            opt.step()
    return model.eval()


def make_mlp(seed):
    """A 64-32-10 ReLU MLP for flat digits."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def make_cnn(seed):
    """A small CNN for 1x8x8 digits: conv, ReLU, max pool, linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
