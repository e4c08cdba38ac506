#!/usr/bin/env bash
# Create .venv (if missing) and install normpen with its dev extra.
# torch is pinned to 2.13.0 in pyproject.toml: on these machines that exact pin takes the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
