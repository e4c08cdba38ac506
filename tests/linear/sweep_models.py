"""The model the residual sweeps work with, formed directly, for the tests that check them."""

from __future__ import annotations

import numpy as np


def centred_model(X, h, centred):
    r"""``(q, hsum, Q, absQ)`` for the curvature weights ``h`` on the dense design ``X``.

    :math:`Q = X^\top HX - qq^\top/\sum h` with :math:`q = X^\top h` when ``centred``, else
    :math:`Q = X^\top HX` and ``q`` empty (as the kernels take it), and ``absQ``
    :math:`= |X|^\top H|X| + |q||q|^\top/\sum h`, the sum of the magnitudes of each entry's terms, which
    the tests' rounding tolerances scale.
    """
    hsum = float(h.sum())
    q = X.T @ h if centred else np.zeros(0)
    Q = X.T @ (h[:, None] * X) - (np.outer(q, q) / hsum if centred else 0.0)
    absQ = np.abs(X).T @ (h[:, None] * np.abs(X)) + (
        np.outer(np.abs(q), np.abs(q)) / hsum if centred else 0.0
    )
    return q, hsum, Q, absQ
