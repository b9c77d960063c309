"""pq / opq: ADC kernels vs numpy, codes/decodes/distances vs faiss with the same codebooks, round trips.

(The protocol checks shared by every family are in test_quantizer_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import vqtest_reference as ref
from vqsearch.kernels.pq import (
    adc_scan4,
    adc_scan4_serial,
    adc_scan8,
    adc_scan8_serial,
    pq_assign,
    pq_assign_serial,
)
from vqtest_data import ODD_DIMS, clustered

from vqsearch import errors, quantizers

faiss = pytest.importorskip("faiss")


def gauss(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x = clustered(3000, 48, seed=1)
    return {"xt": x[:2600], "x": x[2600:2900], "xq": x[2900:2910]}


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, object]:
    return {s: quantizers.get(s).fit(data["xt"]) for s in ("pq:m=12,nbits=8", "pq:m=13,nbits=4")}


@pytest.mark.parametrize("m", ODD_DIMS)
@pytest.mark.parametrize("scan8,scan4", [(adc_scan8, adc_scan4), (adc_scan8_serial, adc_scan4_serial)])
def test_adc_kernels_match_numpy(m, scan8, scan4):
    r = np.random.default_rng(m)
    lut8 = r.standard_normal((3, m, 256)).astype(np.float32)
    codes8 = r.integers(0, 256, size=(29, m), dtype=np.uint8)
    np.testing.assert_allclose(scan8(lut8, codes8), ref.adc_scan_ref(lut8, codes8.astype(np.int64)),
                               rtol=1e-5, atol=1e-5 * np.sqrt(m))
    lut4 = r.standard_normal((3, m, 16)).astype(np.float32)
    codes4 = r.integers(0, 256, size=(29, (m + 1) // 2), dtype=np.uint8)  # junk in an odd m's last nibble
    np.testing.assert_allclose(scan4(lut4, codes4), ref.adc_scan_ref(lut4, ref.unpack_nibbles(codes4, m)),
                               rtol=1e-5, atol=1e-5 * np.sqrt(m))


@pytest.mark.parametrize("dsub", (1, 3, 8))
@pytest.mark.parametrize("k", (16, 256))
@pytest.mark.parametrize("kernel", [pq_assign, pq_assign_serial])
def test_pq_assign_kernel_matches_brute_force(dsub, k, kernel):
    """Tie-aware: the chosen codeword is at the minimum distance (float32 vs float64 rounding)."""
    r = np.random.default_rng(dsub * k)
    m = 7
    cent = r.standard_normal((m, k, dsub)).astype(np.float32)
    y = r.standard_normal((200, m * dsub)).astype(np.float32)
    got = kernel(y, np.ascontiguousarray(cent.transpose(0, 2, 1)), np.einsum("mkd,mkd->mk", cent, cent))
    assert got.dtype == np.uint8 and got.shape == (200, m)
    dist = ref.pq_distances_ref(y, cent)
    chosen = np.take_along_axis(dist, got[:, :, None].astype(np.int64), axis=2)[:, :, 0]
    np.testing.assert_allclose(chosen, dist.min(axis=2), rtol=1e-5, atol=1e-5)
    assert np.mean(got == dist.argmin(axis=2)) > 0.99


def faiss_pq_with(q) -> object:
    """A faiss ProductQuantizer carrying exactly our codebooks."""
    pq = faiss.ProductQuantizer(q.work_dim, q.M, q.nbits)
    faiss.copy_array_to_vector(q.centroids.ravel(), pq.centroids)
    return pq


@pytest.mark.parametrize("spec", ["pq:m=12,nbits=8", "pq:m=13,nbits=4"])
def test_codes_and_decode_equal_faiss_with_same_codebooks(spec, data, fitted):
    q = fitted[spec]
    pq = faiss_pq_with(q)
    codes = q.encode(data["x"])
    theirs = pq.compute_codes(q.to_work(data["x"]))
    # Same packing.  Tie-aware: where codewords are equidistant (a sub-space of zero padding, as for
    # m=13 over 48 dimensions) faiss versions break ties differently; both choices must decode alike.
    differ = np.flatnonzero((codes != theirs).any(axis=0))
    assert differ.size <= 1, f"codes differ in bytes {differ.tolist()}"
    np.testing.assert_allclose(q.decode(codes), q.decode(theirs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q.decode(codes), pq.decode(codes)[:, :48], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["pq:m=12,nbits=8", "pq:m=13,nbits=4"])
def test_adc_equals_faiss_indexpq_and_reconstruction_distance(spec, data, fitted):
    q = fitted[spec]
    codes = q.encode(data["x"])
    xq = data["xq"]
    ours = q.adc(q.lut(xq, "l2"), codes)
    xw_hat = q.decode_work(codes).astype(np.float64)
    qw = q.work_queries(xq).astype(np.float64)
    direct = ((qw[:, None, :] - xw_hat[None]) ** 2).sum(-1)
    np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-4)
    index = faiss.IndexPQ(q.work_dim, q.M, q.nbits)
    faiss.copy_array_to_vector(q.centroids.ravel(), index.pq.centroids)
    index.is_trained = True
    index.add(q.to_work(data["x"]))
    dist, ids = index.search(qw.astype(np.float32), len(codes))
    theirs = np.empty_like(dist)
    np.put_along_axis(theirs, ids, dist, axis=1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    ip = q.estimate_ip(xq, codes)
    np.testing.assert_allclose(ip, xq @ q.decode(codes).T, rtol=1e-4, atol=1e-4 * np.abs(ip).max())


def test_lut_shapes_and_padding(data):
    q = quantizers.get("pq:m=5,nbits=4").fit(data["xt"])  # 48 → 50 work dims
    lut = q.lut(data["xq"], metric="ip")
    assert lut.shape == (10, 5, 16) and lut.dtype == np.float32
    assert q.code_size == 3 and q.dsub == 10
    np.testing.assert_array_equal(q.decode_work(q.encode(data["x"]))[:, 48:], 0)  # padding stays 0
    np.testing.assert_allclose(q.adc(q.lut(data["xq"], "l2"), q.encode(data["x"])),
                               ((data["xq"][:, None] - q.reconstruct(data["x"])[None]) ** 2).sum(-1),
                               rtol=1e-4, atol=1e-3)


def test_auto_m_uses_four_dims_per_subquantiser():
    q = quantizers.get("pq:nbits=4").fit(gauss(64, 10, 0))
    assert q.M == 3 and q.work_dim == 12 and q.code_size == 2
    q2 = quantizers.from_bytes(q.to_bytes())
    assert q2.M == 3 and q2.params()["m"] == 0


def test_mse_decreases_with_bits(data):
    mse = {}
    for spec in ("pq:m=6,nbits=4", "pq:m=12,nbits=4", "pq:m=12,nbits=8", "pq:m=24,nbits=8"):
        q = quantizers.get(spec).fit(data["xt"])
        mse[spec] = float(np.mean((q.reconstruct(data["x"]) - data["x"]) ** 2))
    values = list(mse.values())
    assert all(a > b for a, b in zip(values, values[1:])), mse


def test_opq_learns_an_orthogonal_rotation_that_helps():
    r = np.random.default_rng(3)
    base = gauss(2000, 32, 4) * np.geomspace(4, 0.25, 32).astype(np.float32)
    mix = np.linalg.qr(r.standard_normal((32, 32)))[0].astype(np.float32)
    xt = base @ mix
    x = xt[:500]
    pq = quantizers.get("pq:m=8,nbits=4").fit(xt)
    opq = quantizers.get("opq:m=8,nbits=4,opq_niter=8").fit(xt)
    rot = opq.rotation
    np.testing.assert_allclose(rot @ rot.T, np.eye(32), atol=1e-5)
    mse_pq = np.mean((pq.reconstruct(x) - x) ** 2)
    mse_opq = np.mean((opq.reconstruct(x) - x) ** 2)
    assert mse_opq < 0.9 * mse_pq, (mse_opq, mse_pq)
    # decode = Rᵀ · concatenated centroids; ADC in the rotated domain equals the input-domain distance
    codes = opq.encode(x[:20])
    idx = opq.unpack(codes)
    y = opq.centroids[np.arange(8)[None, :], idx].reshape(20, 32)
    np.testing.assert_allclose(opq.decode(codes), y @ rot, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(opq.adc(opq.lut(x[:3], "l2"), codes),
                               ((x[:3, None] - opq.decode(codes)[None]) ** 2).sum(-1), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("spec,d", [("pq:m=12,nbits=8", 48), ("pq:m=13,nbits=4", 52), ("opq:m=8,nbits=4", 48),
                                    ("pq:m=16,nbits=4,rht=true", 384)])
def test_decode_encode_is_idempotent_on_decoded_points(spec, d, data):
    xt = data["xt"] if d == 48 else gauss(600, d, 5)
    q = quantizers.get(spec, opq_niter=2) if spec.startswith("opq") else quantizers.get(spec)
    q.fit(xt)
    x1 = q.reconstruct(xt[:100])
    np.testing.assert_allclose(q.reconstruct(x1), x1, atol=1e-4)


def test_bad_inputs_raise_typed_errors(data):
    with pytest.raises(errors.InvalidSpec, match=r"nbits must be one of \[4, 8\], got 6"):
        quantizers.get("pq:nbits=6")
    with pytest.raises(errors.InvalidSpec, match="m must be >= 0"):
        quantizers.get("pq:m=-2")
    with pytest.raises(errors.InvalidSpec, match="opq_niter must be >= 1"):
        quantizers.get("opq:opq_niter=0")
    with pytest.raises(errors.InvalidInput, match="nbits=8 needs at least 256 training vectors .* got 100"):
        quantizers.get("pq:m=4").fit(gauss(100, 16, 0))
    q = quantizers.get("pq:m=4,nbits=4").fit(gauss(100, 16, 0))
    with pytest.raises(errors.InvalidSpec, match=r"metric must be one of \['ip', 'l2'\]"):
        q.lut(gauss(1, 16, 1), metric="cosine")
    with pytest.raises(errors.InvalidInput, match=r"lut must have shape \(nq, 4, 16\)"):
        q.adc(np.zeros((1, 4, 256), np.float32), q.encode(gauss(2, 16, 2)))
