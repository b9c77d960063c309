#!/usr/bin/env bash
# Install vqsearch with the offline MiniLM model into ./.venv and run the main job:
# embed the Python standard library's docstrings, build a quantised index, search it.
# Usage: bash scripts/demo.sh [vqsearch demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[models]"
exec vqsearch demo "$@"
