"""Seeded synthetic data and the location of the shared Debian-MiniLM set, for tests.

This folder (``tests/support``) is on pytest's ``pythonpath``; the repository root never is,
because its ``kernels/`` folder would shadow the PyPI package ``kernels`` that transformers imports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("VQSEARCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEBIAN = SHARED_DATA / "debian-minilm"

ODD_DIMS = (1, 3, 7, 97, 384, 1000)


def clustered(n: int, d: int, *, seed: int = 0, n_clusters: int = 32, intrinsic: int = 16) -> np.ndarray:
    """Seeded synthetic data with cluster structure and low intrinsic dimension (float32)."""
    r = np.random.default_rng(seed)
    basis = r.standard_normal((intrinsic, d)).astype(np.float32)
    centres = r.standard_normal((n_clusters, intrinsic)).astype(np.float32) * 2.0
    assign = r.integers(0, n_clusters, size=n)
    z = centres[assign] + r.standard_normal((n, intrinsic)).astype(np.float32)
    x = z @ basis + 0.1 * r.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float32)
