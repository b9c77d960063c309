#!/usr/bin/env bash
# Install vqsearch with its test extras into ./.venv (versions from requirements.lock) and run the test suite.
# Usage: bash scripts/test.sh [--latest] [--slow] [pytest args...]
#   --latest  test against the newest releases instead, in ./.venv-latest (see README: refreshing the lock)
#   --slow    also run the tests marked slow (whole-model fine-tuning, sharded Debian acceptance; tens of
#             minutes on 2 cores), which are otherwise left out to keep the suite within ~10 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
latest=0
slow=0
while [ $# -gt 0 ]; do
  case "$1" in
    --latest) latest=1; shift ;;
    --slow) slow=1; shift ;;
    *) break ;;
  esac
done
select=(-m "not slow")
if [ "$slow" = 1 ]; then select=(); fi
vq_install "dev,models,cluster" "$latest"
set +e
# Two worker processes (pytest-xdist), one test file each at a time: most tests are single-threaded
# (numba compilation, Python), so both cores are used.  VQSEARCH_TEST_WORKERS=0 runs in one process.
workers="${VQSEARCH_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  python -m pytest "${select[@]}" "$@"
else
  python -m pytest -n "$workers" --dist loadfile "${select[@]}" "$@"
fi
status=$?
set -e
if [ "$status" -eq 5 ]; then
  # pytest's "no tests collected" (e.g. a -k filter that matches nothing) is not a failure.
  echo "pytest collected no tests (exit 5); treating as success" >&2
  exit 0
fi
exit "$status"
