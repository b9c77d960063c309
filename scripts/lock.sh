#!/usr/bin/env bash
# Refresh requirements.lock: install the newest releases of every extra into a fresh virtual environment,
# run the whole test suite there, and only if it passes write the exact versions to requirements.lock.
# Usage: bash scripts/lock.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONSAFEPATH=1
extras="$(python3 -c 'import tomllib; print(",".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]))')"
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[$extras]"
python -m pytest -q "$@"
{
  echo "# Exact versions the test suite passed with: bash scripts/lock.sh on $(date -u +%Y-%m-%d), $(python --version)."
  echo "# Used as a pip constraints file by scripts/test.sh, scripts/demo.sh and .ci/run."
  # torch: pip freeze writes the CPU wheel's local label (+cpu); the plain pin selects the same wheel with pip
  python -m pip freeze --exclude-editable | grep -v '^vqsearch' | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' | sort -f
} > requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) pinned packages"
