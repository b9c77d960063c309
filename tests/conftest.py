"""Shared fixtures: seeded data, the shared Debian-MiniLM set (skipped with a message when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VQSEARCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEBIAN = SHARED_DATA / "debian-minilm"

ODD_DIMS = (1, 3, 7, 97, 384, 1000)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def clustered(n: int, d: int, *, seed: int = 0, n_clusters: int = 32, intrinsic: int = 16) -> np.ndarray:
    """Seeded synthetic data with cluster structure and low intrinsic dimension (float32)."""
    r = np.random.default_rng(seed)
    basis = r.standard_normal((intrinsic, d)).astype(np.float32)
    centres = r.standard_normal((n_clusters, intrinsic)).astype(np.float32) * 2.0
    assign = r.integers(0, n_clusters, size=n)
    z = centres[assign] + r.standard_normal((n, intrinsic)).astype(np.float32)
    x = z @ basis + 0.1 * r.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def debian() -> dict[str, np.ndarray]:
    """The shared Debian-MiniLM vectors (float32), or skip with the path that was looked up."""
    if not (DEBIAN / "base.f16.npy").exists():
        pytest.skip(f"shared Debian-MiniLM data not found at {DEBIAN} (set VQSEARCH_SHARED_DATA)")
    return {
        "xb": np.load(DEBIAN / "base.f16.npy").astype(np.float32),
        "xq": np.load(DEBIAN / "queries.f16.npy").astype(np.float32),
        "gt": np.load(DEBIAN / "groundtruth.i32.npy"),
        "labels": np.load(DEBIAN / "labels.i32.npy"),
    }
