"""The repository root is never importable as a top-level location.

Its ``kernels/`` folder is installed as ``vqsearch.kernels``; if the root were on ``sys.path`` it would
shadow the PyPI package ``kernels`` that transformers imports (``transformers.integrations.hub_kernels``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from vqtest_data import REPO_ROOT

SOURCE_DIRS = ("vqsearch", "kernels", "server", "tests", "benchmarks", "scripts")
PATH_EDIT = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*(\+=|=)")


def _resolves_to_root(entry: str) -> bool:
    return Path(entry or os.getcwd()).resolve() == REPO_ROOT


def test_repository_root_is_not_on_sys_path() -> None:
    offending = [entry for entry in sys.path if _resolves_to_root(entry)]
    assert offending == [], f"the repository root is on sys.path: {offending}"


def test_kernels_is_never_the_repository_folder() -> None:
    spec = importlib.util.find_spec("kernels")
    if spec is not None:
        origin = Path(spec.origin or next(iter(spec.submodule_search_locations or []), "")).resolve()
        assert REPO_ROOT / "kernels" not in (origin, origin.parent), f"'kernels' resolves to {origin}"
    ours = importlib.util.find_spec("vqsearch.kernels")
    assert ours is not None and Path(ours.origin).resolve().parent == REPO_ROOT / "kernels"


def test_no_package_init_in_tests_and_no_sys_path_edits() -> None:
    assert not (REPO_ROOT / "tests" / "__init__.py").exists(), (
        "tests/__init__.py makes pytest put the repository root on sys.path")
    assert not (REPO_ROOT / "benchmarks" / "__init__.py").exists()
    edits = [f"{path.relative_to(REPO_ROOT)}:{n}"
             for folder in SOURCE_DIRS for path in sorted((REPO_ROOT / folder).rglob("*.py"))
             if path.name != "test_import_hygiene.py"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if PATH_EDIT.search(line)]
    assert edits == [], f"sys.path is modified at {edits}"


def test_transformers_kernels_integration_imports() -> None:
    """The import that failed when the root shadowed ``kernels``; run where the models extra is installed."""
    pytest.importorskip("transformers", reason="the models extra (transformers) is not installed")
    out = subprocess.run([sys.executable, "-c", "import transformers.integrations.hub_kernels"],
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONSAFEPATH": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
