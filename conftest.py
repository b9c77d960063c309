"""Keeps the repository root off ``sys.path`` for every pytest run.

``python -m pytest`` (and ``python`` started here) put the working directory first on ``sys.path``.
The repository's top-level ``kernels/`` folder (installed as ``vqsearch.kernels``) would then shadow
the PyPI package ``kernels`` that transformers imports.  pytest loads this file before any test
module, so removing the entry here comes before anything imports transformers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def _is_root(entry: str) -> bool:
    try:
        return Path(entry or os.getcwd()).resolve() == _ROOT
    except OSError:
        return False


sys.path[:] = [entry for entry in sys.path if not _is_root(entry)]
for _name in [name for name, module in sys.modules.items()
              if (name == "kernels" or name.startswith("kernels."))
              and str(getattr(module, "__file__", "") or "").startswith(str(_ROOT / "kernels"))]:
    del sys.modules[_name]
