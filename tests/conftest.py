"""Shared test configuration: hypothesis profiles and a reproducible random generator.

Hypothesis profiles (choose one with ``NORMPEN_HYPOTHESIS_PROFILE=<name>`` or
pytest's ``--hypothesis-profile=<name>``):

- ``ci`` (default): a modest, derandomized set of examples so the whole suite
  stays fast on a loaded 2-core machine and gives the same answer every run;
- ``dev``: more examples, for a change that touches numerics;
- ``thorough``: many examples, for a nightly or pre-release run.

No profile has a deadline: timings on shared machines are noise, and a
test that is slow is found by the suite's duration, not by a flaky failure.
Hypothesis keeps its example database in ``.hypothesis/`` (gitignored).
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# The suite runs one pytest-xdist worker per core: more torch threads per worker only contend
# (tiny models train ~10x slower with 2 threads on 2 busy cores).
torch.set_num_threads(1)

_COMMON = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
# "ci" is derandomized: the same examples on every run, so a red CI is reproducible and never luck.
settings.register_profile("ci", max_examples=25, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("NORMPEN_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's id: reproducible, and different for every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
