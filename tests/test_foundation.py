"""Registry, errors and RHT tests (the protocol of every quantiser: test_quantizer_conformance.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from vqtest_data import ODD_DIMS

from vqsearch import errors, quantizers
from vqsearch.rht import RandomizedHadamard, hadamard_size, paley_hadamard


@pytest.mark.parametrize("d", ODD_DIMS + (12, 20, 256, 768))
def test_rht_orthogonal_and_invertible(d, rng):
    t = RandomizedHadamard(d, seed=3)
    x = rng.standard_normal((17, d)).astype(np.float32)
    y = t.forward(x)
    assert y.shape == (17, t.n) and t.n >= d
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(t.inverse(y), x, atol=1e-5)
    # Inner products are preserved, i.e. the matrix is orthogonal.
    np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d", (5, 12, 64, 97))
def test_rht_matches_dense_matrix(d):
    t = RandomizedHadamard(d, seed=1)
    eye = np.eye(d, dtype=np.float32)
    dense = t.forward(eye)  # rows are images of basis vectors
    full = np.zeros((t.n, t.n), dtype=np.float64)
    full[:d] = dense
    # Columns of the transform restricted to the first d inputs are orthonormal.
    np.testing.assert_allclose(dense @ dense.T, np.eye(d), atol=1e-5)


@pytest.mark.parametrize("p", (12, 20, 24, 44, 104))
def test_paley_is_hadamard(p):
    h = paley_hadamard(p) * np.sqrt(p)
    assert set(np.unique(np.round(h))) == {-1.0, 1.0}
    np.testing.assert_allclose(h @ h.T, p * np.eye(p), atol=1e-9)


def test_hadamard_size_is_minimal_and_exact_for_embedding_dims():
    for d in (384, 768, 1024, 1536, 4096):
        assert hadamard_size(d)[0] == d
    for d in range(1, 300):
        n, p = hadamard_size(d)
        assert n >= d and n % p == 0 and (n // p) & (n // p - 1) == 0


def test_rht_spreads_heavy_tails():
    r = np.random.default_rng(0)
    x = r.standard_t(3, size=(64, 1024)).astype(np.float32)
    y = RandomizedHadamard(1024, seed=0).forward(x)
    kurt = float(np.mean(y**4) / np.mean(y**2) ** 2)
    assert abs(kurt - 3.0) < 0.5, f"kurtosis after RHT {kurt:.2f}, expected ≈ 3"


def test_registry_errors():
    with pytest.raises(errors.UnknownQuantizer, match="unknown quantiser 'nope'"):
        quantizers.get("nope")
    with pytest.raises(errors.InvalidSpec, match="has no parameter 'bogus'"):
        quantizers.get("float16:bogus=1")
    with pytest.raises(errors.InvalidSpec, match="expected key=value"):
        quantizers.get("float16:rht")
    with pytest.raises(errors.InvalidSpec, match="cannot parse rht='maybe'"):
        quantizers.get("float16:rht=maybe")
    with pytest.raises(errors.InvalidSpec, match="non-empty string"):
        quantizers.get("")
    assert "float16" in quantizers.available()


def test_errors_pickle_and_inherit_builtins():
    e = errors.DimensionMismatch("collection 'docs' has dim 384, got 383")
    e2 = pickle.loads(pickle.dumps(e))
    assert isinstance(e2, ValueError) and str(e2) == str(e) and e2.code == "dimension_mismatch"
    assert str(errors.UnknownIds("id 7 not found")) == "id 7 not found"


def test_float16_rejects_values_beyond_its_range():
    q = quantizers.get("float16").fit(np.ones((2, 4), np.float32))
    with pytest.raises(errors.NonFiniteInput, match=r"float16 range \(±65504\) in row 1"):
        q.encode(np.array([[1, 2, 3, 4], [1, 7e4, 0, 0]], np.float32))
