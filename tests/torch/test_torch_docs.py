"""Every code block of docs/frameworks.md runs as written (tiny sizes, nothing downloaded)."""

from __future__ import annotations

import re
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
def test_each_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(PAGE), "exec"), {"__name__": "__main__"})
