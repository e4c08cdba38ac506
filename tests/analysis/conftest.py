"""Shared fixtures of the analysis tests: one CPU thread, small seeded models trained on digits."""

import pytest
import torch
from analysis_helpers import make_cnn, make_mlp, threads, train
from sklearn.datasets import load_digits


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors run fastest on one thread, and the suite runs one process per core."""
    with threads(1):
        yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits scaled to [0, 1]: (X_train, y_train, X_test, y_test), float32."""
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return X[:1400], y[:1400], X[1400:], y[1400:]


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A 64-32-10 ReLU MLP trained briefly on digits (flat inputs of 64)."""
    X, y, _, _ = digits
    return train(make_mlp(0), X, y, epochs=150, seed=0)


@pytest.fixture(scope="session")
def digits_cnn(digits):
    """A small CNN trained briefly on digits as 1x8x8 images."""
    X, y, _, _ = digits
    return train(make_cnn(1), X.reshape(-1, 1, 8, 8), y, epochs=150, seed=1)
