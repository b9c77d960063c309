# Sourced by the scripts in this folder: creates ./.venv (or $VQSEARCH_VENV) and installs vqsearch with the
# extras in $1 from the lock of tested versions (requirements.lock), or the newest releases with --latest.
# PYTHONSAFEPATH=1: Python started in the repository root must not put it on sys.path, where the top-level
# kernels/ folder (installed as vqsearch.kernels) would shadow the PyPI package `kernels` used by transformers.
export PYTHONSAFEPATH=1
vq_install() {
  local extras="$1" latest="$2"
  local venv="${VQSEARCH_VENV:-.venv}"
  [ "$latest" = 1 ] && venv="${VQSEARCH_VENV:-.venv-latest}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  . "$venv/bin/activate"
  python -m pip install --quiet --upgrade pip
  if [ "$latest" = 1 ]; then
    python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[$extras]"
  else
    python -m pip install --quiet -c requirements.lock -e ".[$extras]"
  fi
}
