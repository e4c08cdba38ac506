"""Every code block of docs/frameworks.md runs as written (tiny sizes, nothing downloaded), each in a fresh
interpreter: the DDP and FSDP2 examples make a process group, and gloo's threads left in the test worker by
one example once hung the next one's teardown (a destructor joining them), stalling the whole suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"
BLOCKS = re.findall(r"^## (.+?)$.*?^```python\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)


def test_the_page_has_one_example_per_framework():
    assert [title for title, _ in BLOCKS] == [
        "Plain loop",
        "transformers `Trainer`",
        "PyTorch Lightning",
        "accelerate",
        "DistributedDataParallel",
        "FSDP2 (`fully_shard`)",
        "torch.compile",
    ]


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[title for title, _ in BLOCKS])
def test_each_example_runs(code, tmp_path):
    # Each example took 2.1-6.0 s here (the imports of torch and the framework, then a few tiny steps); the
    # limit is for a hang only: 20 times the slowest measured, room for a loaded 2-core machine.
    command = [sys.executable, "-c", code]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
