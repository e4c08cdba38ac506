#!/usr/bin/env bash
# Create build/venv-min: normpen with the OLDEST version of every dependency pyproject.toml allows
# (each "name>=X" installed as "name==X", the dev extra's test tools too, ruff left out), so that CI
# proves what pyproject.toml promises. The floors are read from pyproject.toml itself: raising one there
# is all it takes. build/ is gitignored.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/venv-min
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
mapfile -t oldest < <(python3 - <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name, op, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*(>=|==)\s*([^,;\s]+)", requirement).groups()
    if name != "ruff":
        print(f"{name}=={version}")
EOF
)
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${oldest[@]}"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
# what was installed must be what was asked: pip may not silently take another version
"$venv/bin/python" - "${oldest[@]}" <<'EOF'
import sys
from importlib.metadata import version

from packaging.requirements import Requirement

wrong = []
for text in sys.argv[1:]:
    requirement = Requirement(text)
    if not requirement.specifier.contains(version(requirement.name), prereleases=True):
        wrong.append(f"{requirement.name} {version(requirement.name)} (asked {requirement.specifier})")
if wrong:
    sys.exit("build/venv-min does not hold the oldest allowed versions: " + ", ".join(wrong))
print("build/venv-min:", ", ".join(f"{Requirement(t).name} {version(Requirement(t).name)}" for t in sys.argv[1:]))
EOF
