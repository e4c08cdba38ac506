"""The normpen.torch tests run torch on one intra-op thread, and each starts with dynamo's caches empty.

Their tensors are tiny, so a second thread only adds synchronisation; on a
loaded 2-core machine OpenMP spin-waits then make a 1 ms step take 50 ms.
The previous setting is restored after each test.

Dynamo keeps the graphs of a function's code across tests, up to its
recompile limit (8), after which it runs that code eagerly: a test that
compares a compiled step with a compiled reference would then compare an
eager one, and pass or fail by the tests that ran before it in the process.
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


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
