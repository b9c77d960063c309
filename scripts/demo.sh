#!/usr/bin/env bash
# Install vqsearch with the offline MiniLM model into ./.venv (versions from requirements.lock) and run the
# main job: embed the Python standard library's docstrings, build a quantised index, search it.
# Usage: bash scripts/demo.sh [vqsearch demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
vq_install "models" 0
exec vqsearch demo "$@"
