#!/usr/bin/env bash
# Install the peers of benchmarks/linear.py into .venv (after scripts/setup.sh).
# The bench extra brings skglm, celer, python-glmnet and IPython (which adelie imports).
# adelie 1.1.52 declares numpy<2 although it runs on numpy 2: resolving it would downgrade
# numpy, so it is installed without its dependency metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install --quiet -e ".[bench]"
.venv/bin/python -m pip install --quiet --no-deps "adelie==1.1.52"
.venv/bin/python -c "import adelie, celer, glmnet, skglm"
