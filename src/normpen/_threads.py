"""Thread limits for small numerical work (experiments, sweeps)."""

from __future__ import annotations

import contextlib

import threadpoolctl
import torch

__all__ = ["single_threaded"]


@contextlib.contextmanager
def single_threaded():
    """Run torch and the BLAS behind numpy and scipy on one thread, restoring the previous counts.

    Tiny tensors and matrices gain nothing from a second thread, and on a busy
    machine the threads' synchronisation makes every small operation many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
