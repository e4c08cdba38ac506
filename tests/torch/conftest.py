"""The normpen.torch tests run torch on one intra-op thread.

Their tensors are tiny, so a second thread only adds synchronisation; on a
loaded 2-core machine OpenMP spin-waits then make a 1 ms step take 50 ms.
The previous setting is restored after each test.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
