"""Ray for vqsearch: the import guard, and the environment every vqsearch actor and task runs in.

Ray puts the driver's working directory (and script directory) at the front of every worker's
``sys.path``.  Started from a vqsearch source checkout, that makes the checkout's top-level ``kernels/``
folder (installed as ``vqsearch.kernels``) shadow the PyPI package ``kernels`` that transformers imports.
Ray applies those paths when a worker runs its first task, after any setup hook, so the fix has to run at
the start of each vqsearch actor and task: :func:`prepare_worker` drops source-checkout roots from
``sys.path``.  :func:`worker_runtime_env` also sets ``PYTHONSAFEPATH`` for processes the workers start, and
never ships a ``working_dir`` (vqsearch must be installed on every node, like any other dependency).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import MissingDependency


def require_ray() -> Any:
    """The ``ray`` module, or ``MissingDependency`` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise MissingDependency("vqsearch.cluster needs Ray: pip install 'vqsearch[cluster]'") from None
    return ray


def ensure_connected(address: str | None = None) -> Any:
    """Connect to Ray (``address``: ``"auto"``, ``"ray://..."``, ``host:port``) unless already connected; with
    neither a connection nor an address, start a local single-node Ray like ``ray.init()`` does."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, runtime_env=worker_runtime_env(), logging_level="WARNING")
    return ray


def worker_runtime_env() -> dict[str, Any]:
    """Runtime environment of vqsearch actors and tasks (see the module docstring)."""
    return {"env_vars": {"PYTHONSAFEPATH": "1"}}


def _is_source_checkout(entry: str) -> bool:
    """A vqsearch source tree: its root holds ``kernels/`` next to ``vqsearch/`` and ``pyproject.toml``."""
    root = Path(entry or os.getcwd())
    try:
        return ((root / "kernels" / "__init__.py").is_file() and (root / "vqsearch" / "__init__.py").is_file()
                and (root / "pyproject.toml").is_file())
    except OSError:
        return False


def prepare_worker() -> None:
    """Remove source-checkout roots from ``sys.path`` (and a ``kernels`` module already imported from one)."""
    kept = [p for p in sys.path if not _is_source_checkout(p)]
    if len(kept) != len(sys.path):
        sys.path[:] = kept
        importlib.invalidate_caches()
        shadow = sys.modules.get("kernels")
        origin = getattr(shadow, "__file__", None) or ""
        if shadow is not None and _is_source_checkout(str(Path(origin).parent.parent)):
            for name in [m for m in sys.modules if m == "kernels" or m.startswith("kernels.")]:
                del sys.modules[name]
