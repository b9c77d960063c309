"""Shared fixtures: seeded data, the shared Debian-MiniLM set (skipped with a message when absent)."""

from __future__ import annotations

import numpy as np
import pytest
from vqtest_data import DEBIAN


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


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
