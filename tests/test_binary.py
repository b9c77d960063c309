"""binary: sign-bit layout, popcount/LUT kernels vs numpy, RaBitQ estimator vs faiss, MSE, round trips.

(The protocol checks shared by every family are in test_quantizer_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import vqtest_reference as ref
from vqsearch.kernels.popcount import byte_luts, byte_luts_serial, hamming_u64, hamming_u64_serial
from vqsearch.kernels.pq import adc_scan8
from vqtest_data import ODD_DIMS

from vqsearch import errors, quantizers
from vqsearch.quantizers.binary import pack_words


def gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, d)) + shift).astype(np.float32)


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("kernel", [hamming_u64, hamming_u64_serial])
def test_hamming_kernel_matches_numpy(d, kernel):
    r = np.random.default_rng(d)
    a = r.standard_normal((13, d)) > 0
    b = r.standard_normal((17, d)) > 0
    got = kernel(pack_words(np.packbits(a, axis=1)), pack_words(np.packbits(b, axis=1)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.hamming_ref(a, b))


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("rht", [False, True])
def test_quantizer_hamming_is_sign_bit_hamming(d, rht):
    q = quantizers.get("binary", rht=rht).fit(gauss(64, d, 1, shift=0.2))
    ca, cb = q.encode(gauss(9, d, 2)), q.encode(gauss(11, d, 3))
    dim = q.work_dim
    want = ref.hamming_ref(ref.unpack(q.sign_bytes(ca), dim), ref.unpack(q.sign_bytes(cb), dim))
    np.testing.assert_array_equal(q.hamming(ca, cb), want)
    assert q.sign_bytes(ca).shape == (9, (dim + 7) // 8)


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("kernel", [byte_luts, byte_luts_serial])
def test_byte_luts_match_numpy(d, kernel):
    q = gauss(5, d, d)
    nbytes = (d + 7) // 8
    np.testing.assert_array_almost_equal(kernel(q, nbytes), ref.byte_luts_ref(q, nbytes), decimal=5)


def test_code_layout_is_documented_packbits_order():
    """Byte 0 bit 7 is coordinate 0, padding bits are 0, then float32 ‖o−c‖ and ⟨ō,o⟩."""
    x = np.array([[1.0, -2.0, 3.0, -4.0, 5.0, 6.0, -7.0, 8.0, 9.0, -1.0, 0.5]], np.float32)
    q = quantizers.get("binary:rht=false,centre=false").fit(x)
    codes = q.encode(x)
    assert q.code_size == 2 + 8
    assert codes[0, 0] == 0b10101101 and codes[0, 1] == 0b10100000
    r, rho = codes[0, 2:].view("<f4")
    np.testing.assert_allclose(r, np.linalg.norm(x), rtol=1e-6)
    np.testing.assert_allclose(rho, np.abs(x).sum() / (np.sqrt(11) * np.linalg.norm(x)), rtol=1e-6)
    # decode = MSE-best point on the sign pattern: mean|x| · sign(x)
    np.testing.assert_allclose(q.decode(codes), np.abs(x).mean() * np.sign(x), rtol=1e-6)
    np.testing.assert_array_equal(q.hamming_codes(x), codes[:, :2])


@pytest.mark.parametrize("d", ODD_DIMS)
def test_estimate_ip_matches_numpy_rabitq_formula(d):
    q = quantizers.get("binary").fit(gauss(200, d, 4, shift=0.3))
    x, xq = gauss(50, d, 5, shift=0.3), gauss(7, d, 6)
    codes = q.encode(x)
    dim = q.work_dim
    qw = q.work_queries(xq).astype(np.float64)
    s = 2.0 * ref.unpack(q.sign_bytes(codes), dim) - 1.0  # ±1
    f = codes[:, -8:].copy().view("<f4").astype(np.float64)
    want = (qw @ q.centroid)[:, None] + (qw @ s.T / np.sqrt(dim)) * (f[:, 0] / f[:, 1])[None, :]
    got = q.estimate_ip(xq, codes)
    assert got.dtype == np.float32 and got.shape == (7, 50)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_estimate_ip_matches_faiss_rabitq():
    """faiss IndexRaBitQ (float queries, training-mean centre) estimates ‖q − x‖²; compare ⟨q − c, x − c⟩."""
    faiss = pytest.importorskip("faiss")
    d = 97
    xt, x, xq = gauss(1000, d, 7, 0.3), gauss(300, d, 8, 0.3), gauss(6, d, 9)
    q = quantizers.get("binary:rht=false").fit(xt)
    codes = q.encode(x)
    c = q.centroid
    np.testing.assert_allclose(c, xt.mean(axis=0), atol=1e-6)
    ours = q.estimate_ip(xq, codes) - q.estimate_ip(c[None], codes) - ((xq - c) @ c)[:, None]
    index = faiss.IndexRaBitQ(d, faiss.METRIC_L2)
    index.qb = 0  # float queries
    index.train(xt)
    index.add(x)
    dist_sorted, ids = index.search(xq, len(x))
    dist = np.empty_like(dist_sorted)
    np.put_along_axis(dist, ids, dist_sorted, axis=1)
    theirs = (((x - c) ** 2).sum(1)[None, :] + ((xq - c) ** 2).sum(1)[:, None] - dist) / 2
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())


def test_rabitq_estimator_is_unbiased_with_predicted_error():
    """Unit vectors, D = 256: bias ≈ 0, error std ≈ sqrt(1 − ρ²)/ρ/sqrt(D − 1) (quantizers.md §5.2)."""
    d = 256
    x, xq = gauss(1000, d, 10), gauss(40, d, 11)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    q = quantizers.get("binary:centre=false").fit(x)
    codes = q.encode(x)
    err = (q.estimate_ip(xq, codes) - xq @ x.T).ravel()
    rho = codes[:, -4:].copy().view("<f4").ravel()
    assert abs(rho.mean() - np.sqrt(2 / np.pi)) < 0.01, f"mean <ō,o> {rho.mean():.4f}, expected 0.798"
    pred = np.sqrt(1 - 2 / np.pi) / np.sqrt(2 / np.pi) / np.sqrt(d - 1)
    assert abs(err.std() / pred - 1) < 0.1, f"error std {err.std():.4f}, predicted {pred:.4f}"
    assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(x)), f"bias {err.mean():.5f}"
    # On near neighbours (⟨q, x⟩ ≈ 0.8) the estimator stays unbiased, while decode-and-dot is
    # shrunk by ρ² ≈ 2/π.
    near = x[:40] + 0.75 * gauss(40, d, 12) / np.sqrt(d)
    true = np.einsum("ij,ij->i", near, x[:40])
    est = np.diag(q.estimate_ip(near, codes[:40]))
    dot = np.diag(q.work_queries(near) @ q.decode_work(codes[:40]).T)
    assert abs(np.mean(est - true)) < 0.01, f"estimator bias on neighbours {np.mean(est - true):.4f}"
    assert np.mean(dot / true) == pytest.approx(2 / np.pi, abs=0.02)


def test_simhash_hamming_estimates_angle():
    """Under the RHT, E[H]/D = θ/π for vectors at angle θ (quantizers.md §5.1)."""
    d, theta = 1024, np.pi / 3
    r = np.random.default_rng(12)
    u = r.standard_normal((300, d))
    v = r.standard_normal((300, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v -= (v * u).sum(1, keepdims=True) * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = np.cos(theta) * u + np.sin(theta) * v
    q = quantizers.get("binary:centre=false").fit(u.astype(np.float32))
    h = np.diag(q.hamming(q.encode(u.astype(np.float32)), q.encode(w.astype(np.float32))))
    assert abs(h.mean() / d - 1 / 3) < 0.01, f"mean H/D {h.mean() / d:.4f}, expected 1/3"


def test_gaussian_mse_is_one_minus_two_over_pi():
    x = gauss(512, 768, 13)
    q = quantizers.get("binary").fit(x)
    mse = float(np.mean((q.reconstruct(x) - x) ** 2))
    assert abs(mse / (1 - 2 / np.pi) - 1) < 0.02, f"binary MSE {mse:.4f}, expected 0.3634 ± 2 %"
    assert q.bits_per_dim == pytest.approx(1 + 64 / 768)


@pytest.mark.parametrize("spec,d", [("binary:rht=false", 97), ("binary", 384), ("binary:centre=false", 768)])
def test_decode_encode_is_idempotent_on_decoded_points(spec, d):
    q = quantizers.get(spec).fit(gauss(100, d, 14, 0.5))
    x1 = q.reconstruct(gauss(30, d, 15, 0.5))
    c2 = q.encode(x1)
    np.testing.assert_array_equal(q.sign_bytes(c2), q.sign_bytes(q.encode(x1)))
    np.testing.assert_allclose(q.decode(c2), x1, atol=2e-5)


def test_bad_inputs_raise_typed_errors():
    q = quantizers.get("binary").fit(gauss(10, 20, 18))
    codes = q.encode(gauss(3, 20, 19))
    with pytest.raises(errors.InvalidCodes, match="width 4 bytes, expected code_size 11"):
        q.hamming(codes, codes[:, :4])
    bad = codes.copy()
    bad[1, -4:] = np.array([np.nan], "<f4").view(np.uint8)
    with pytest.raises(errors.InvalidCodes, match="invalid factors .* in row 1"):
        q.decode(bad)
    with pytest.raises(errors.InvalidSpec, match="cannot parse centre='maybe'"):
        quantizers.get("binary:centre=maybe")
    with pytest.raises(errors.NotFitted, match="must be fitted"):
        quantizers.get("binary").hamming(codes, codes)


def test_hamming_ignores_junk_padding_bits():
    q = quantizers.get("binary:rht=false").fit(gauss(10, 13, 20))
    codes = q.encode(gauss(4, 13, 21))
    junk = codes.copy()
    junk[:, 1] |= 0b00000111  # the 3 padding bits of a 13-bit row
    np.testing.assert_array_equal(q.hamming(junk, codes), q.hamming(codes, codes))


def test_estimate_ip_kernel_is_the_adc_scan_of_byte_luts():
    """The binary scan reuses adc_scan8: one 256-entry table per code byte, first nbytes bytes read."""
    r = np.random.default_rng(22)
    lut = r.standard_normal((3, 5, 256)).astype(np.float32)
    codes = r.integers(0, 256, size=(40, 13), dtype=np.uint8)  # wider rows: trailing factors ignored
    want = ref.adc_scan_ref(lut, codes.astype(np.int64))
    np.testing.assert_allclose(adc_scan8(lut, codes), want, rtol=1e-5, atol=1e-5)
