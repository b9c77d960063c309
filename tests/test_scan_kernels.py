"""Scan, top-k, IVF-selection and Hadamard kernels against the numpy references (odd sizes, ties, masks,
ranges)."""

from __future__ import annotations

import numpy as np
import pytest
import vqtest_reference as ref
from vqsearch.kernels import fastscan as fs
from vqsearch.kernels.hadamard import fwht_rows, fwht_rows_serial
from vqsearch.kernels.ivf import select_lists, select_lists_serial
from vqsearch.kernels.scan import (
    binary_cascade_topk,
    binary_cascade_topk_serial,
    binary_refine,
    binary_refine_serial,
    hamming_scan_topk,
    lut_scan_topk,
    lut_scan_topk_split,
    sign_nibble_luts,
    transpose_sign_words,
)
from vqsearch.kernels.topk import kth_largest, merge_topk, top_k_unordered, topk_rows

EMPTY_F = np.zeros(0, np.float32)
EMPTY_B = np.zeros(0, np.bool_)


def _full_ranges(nq: int, n: int) -> np.ndarray:
    r = np.zeros((nq, 1, 2), np.int64)
    r[:, 0, 1] = n
    return r


@pytest.mark.parametrize("n,nbytes,k", [(1, 1, 1), (37, 3, 5), (1000, 13, 17), (513, 48, 100)])
def test_lut_scan_matches_numpy(n, nbytes, k, rng):
    nq = 4
    codes = rng.integers(0, 256, (n, nbytes + 2), dtype=np.uint8)  # extra trailing bytes are ignored
    tables = rng.standard_normal((nq, nbytes, 256)).astype(np.float32)
    row_a = rng.standard_normal(n).astype(np.float32)
    row_b = rng.uniform(0.5, 2, n).astype(np.float32)
    live = rng.random(n) > 0.2
    bias = rng.standard_normal((nq, 1)).astype(np.float32)
    k_eff = min(k, int(live.sum()))
    vals, rows = lut_scan_topk(tables, codes, row_a, row_b, _full_ranges(nq, n), bias, live, k)
    want = ref.lut_scan_scores_ref(tables, codes, row_a, row_b) + bias
    want[:, ~live] = -np.inf
    rv, rr = ref.topk_ref(want, k_eff)
    np.testing.assert_allclose(vals[:, :k_eff], rv, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.sort(rows[:, :k_eff], axis=1), np.sort(rr, axis=1))
    assert (rows[:, k_eff:] == -1).all() and np.isneginf(vals[:, k_eff:]).all()


def test_lut_scan_ranges_and_split_agree(rng):
    n, nbytes, k = 2000, 7, 25
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    table = rng.standard_normal((1, nbytes, 256)).astype(np.float32)
    ranges = np.array([[[100, 400], [1500, 1500], [900, 1999]]], np.int64)
    bias = np.array([[0.0, 5.0, 1.0]], np.float32)
    v1, r1 = lut_scan_topk(table, codes, EMPTY_F, EMPTY_F, ranges, bias, EMPTY_B, k)
    for chunks in (1, 2, 3, 7):
        v2, r2 = lut_scan_topk_split(table[0], codes, EMPTY_F, EMPTY_F, ranges[0], bias[0], EMPTY_B, k, chunks)
        np.testing.assert_array_equal(r2, r1[0])
        np.testing.assert_allclose(v2, v1[0], rtol=1e-6)
    want = ref.lut_scan_scores_ref(table, codes)[0]
    want = want + np.where((np.arange(n) >= 900) & (np.arange(n) < 1999), 1.0, 0.0)
    want[:100] = -np.inf
    want[400:900] = -np.inf
    want[1999:] = -np.inf
    np.testing.assert_array_equal(np.sort(r1[0]), np.sort(ref.topk_ref(want[None], k)[1][0]))


@pytest.mark.parametrize("d", [1, 3, 7, 97, 384, 1000])
def test_hamming_and_cascade_match_numpy(d, rng):
    n, nq, k, m = 300, 3, 9, 40
    nbytes = (d + 7) // 8
    nwords = (nbytes + 7) // 8
    packed = np.zeros((n, nwords * 8 + 8), np.uint8)  # + one trailing word of other data
    packed[:, :nbytes] = np.packbits(rng.random((n, d)) > 0.5, axis=1)
    packed[:, nwords * 8:] = 0xFF
    q = rng.standard_normal((nq, d)).astype(np.float32)
    qbits = np.zeros((nq, nwords * 8), np.uint8)
    qbits[:, :nbytes] = np.packbits(q > 0, axis=1)
    ham = ref.hamming_ref(ref.unpack(qbits[:, :nbytes], d), ref.unpack(packed[:, :nbytes], d))
    words_t = transpose_sign_words(packed, nbytes)
    hv, hr = hamming_scan_topk(qbits.view(np.uint64), words_t, _full_ranges(nq, n), EMPTY_B, k)
    np.testing.assert_array_equal(-hv, np.take_along_axis(ham, hr, axis=1))
    # ties: exactly the k smallest distances, equal distances in row order (a stable argsort)
    np.testing.assert_array_equal(hr, ref.topk_ref(-ham, k)[1])
    # deleted rows are never returned, and fewer live rows than k pad with -1
    live = np.zeros(n, bool)
    live[rng.choice(n, k - 2, replace=False)] = True
    hv, hr = hamming_scan_topk(qbits.view(np.uint64), words_t, _full_ranges(nq, n), live, k)
    np.testing.assert_array_equal(np.sort(hr[:, : k - 2], axis=1), np.tile(np.flatnonzero(live), (nq, 1)))
    assert (hr[:, k - 2:] == -1).all() and np.isneginf(hv[:, k - 2:]).all()

    # cascade: Hamming top-m, then the best k of those by Σ q_i (2b_i − 1)·row_b + row_a + qconst.
    signs = np.unpackbits(packed[:, :nbytes], axis=1, count=d).astype(np.float64) * 2 - 1
    row_b = rng.uniform(0.5, 2, n).astype(np.float32)
    row_a = rng.standard_normal(n).astype(np.float32)
    qconst = rng.standard_normal(nq).astype(np.float32)
    qc = rng.standard_normal(nq).astype(np.float32)
    level = rng.uniform(0.01, 0.1, n).astype(np.float32)
    signed = q.astype(np.float64) @ signs.T
    est = signed * row_b + row_a + qconst[:, None]
    recon_ip = qc[:, None] + signed * level  # ⟨q, c + level·(2b − 1)⟩ with ⟨q, c⟩ = qc
    ranges = np.array([[[0, n]], [[5, 203]], [[17, 18]]], np.int64)  # unaligned starts/stops and a 1-row range
    for fn in (binary_cascade_topk, binary_cascade_topk_serial):
        vals, rows, ip = fn(q, qbits.view(np.uint64), words_t, nbytes, row_a, row_b, qconst, ranges, EMPTY_B, m, k,
                            qc, level)
        ok = rows >= 0
        np.testing.assert_allclose(vals[ok], np.take_along_axis(est, np.where(ok, rows, 0), axis=1)[ok], rtol=1e-4,
                                   atol=1e-3)
        np.testing.assert_allclose(ip[ok], np.take_along_axis(recon_ip, np.where(ok, rows, 0), axis=1)[ok],
                                   rtol=1e-4, atol=1e-4)
        for qi in range(nq):
            lo, hi = ranges[qi, 0]
            in_range = np.zeros(n, bool)
            in_range[lo:hi] = True
            assert ((rows[qi] >= lo) & (rows[qi] < hi) | (rows[qi] == -1)).all()
            if hi - lo <= m:  # everything in range passes the Hamming pass: exact top-k of the estimate
                best = np.sort(est[qi, lo:hi])[::-1][:k]
                np.testing.assert_allclose(vals[qi, : best.size], best, rtol=1e-4, atol=1e-3)
                continue
            ham_q = np.where(in_range, ham[qi], 10**6)
            pool_cut = np.sort(ham_q)[m - 1]
            assert (ham_q[rows[qi]] <= pool_cut).all()  # every result passed the Hamming pass
            inner = np.flatnonzero(ham_q < pool_cut)  # rows certainly in the pool
            best_inner = np.sort(est[qi, inner])[::-1][:k]
            if best_inner.size:  # the k-th result beats every certainly-pooled row ranked below it
                assert vals[qi, min(k, best_inner.size) - 1] >= best_inner[-1] - 1e-3


def test_topk_rows_ties_and_merge(rng):
    scores = np.round(rng.standard_normal((5, 200)), 1).astype(np.float32)  # many ties
    vals, cols = topk_rows(scores, 10)
    np.testing.assert_array_equal(vals, ref.topk_ref(scores, 10)[0])
    np.testing.assert_array_equal(np.take_along_axis(scores, cols, axis=1), vals)
    a_v, a_i = topk_rows(scores[:, :100], 10)
    b_v, b_i = topk_rows(scores[:, 100:], 10)
    m_v, m_i = merge_topk(a_v, a_i, b_v, b_i + 100, 10)
    np.testing.assert_array_equal(m_v, vals)
    np.testing.assert_array_equal(np.take_along_axis(scores, m_i, axis=1), vals)


@pytest.mark.parametrize("n", [1, 2, 7, 400, 1024])
def test_kth_largest_and_top_k_unordered_match_sort(n, rng):
    for trial in range(20):
        # ties, negative values, zeros of both signs and infinities all keep their float order
        x = (rng.integers(-3, 4, n) if trial % 2 else rng.standard_normal(n) * 10).astype(np.float32)
        if n > 3 and trial % 4 == 1:
            x[:3] = [-0.0, np.inf, -np.inf]
        for k in sorted({1, n, max(1, n // 2), max(1, n // 3)}):
            assert kth_largest(x.copy(), k) == ref.kth_largest_ref(x, k)
            picked = top_k_unordered(x, k)  # ascending indices, ties at the cut to lower indices
            np.testing.assert_array_equal(picked, np.sort(ref.topk_ref(x[None], k)[1][0]))


def test_select_lists_match_reference(rng):
    """The cut keeps the nprobe best (ties at the cut to the lowest ids); the ``lead`` best come first, best
    first (ties: lower id first), then the others in ascending id order."""
    for trial in range(10):
        scores = (rng.integers(0, 5, (6, 50)) if trial % 2 else rng.standard_normal((6, 50))).astype(np.float32)
        bias = (rng.standard_normal(50) * (trial % 3 == 0)).astype(np.float32)
        for nprobe in (1, 7, 49, 50, 80):
            for lead in (0, 1, 3, 8, 80):
                want = ref.select_lists_ref(scores, bias, nprobe, lead)
                for fn in (select_lists, select_lists_serial):
                    got = fn(scores.copy(), bias, nprobe, lead)
                    nlead = min(lead, want.shape[1])
                    np.testing.assert_array_equal(got[:, :nlead], want[:, :nlead])
                    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
                    np.testing.assert_array_equal(got[:, nlead:], want[:, nlead:])


def test_probe_matches_exact_nearest_lists(rng):
    from vqsearch.index.ivf import CoarseQuantizer, IVFConfig

    centroids = rng.standard_normal((64, 16)).astype(np.float32)
    xq = rng.standard_normal((9, 16)).astype(np.float32)
    for metric in ("ip", "l2"):
        got = CoarseQuantizer(centroids, metric, IVFConfig(nlist=64, hnsw=False)).probe(xq, 5, lead=0)
        if metric == "ip":
            s = xq @ centroids.T
        else:
            s = -((xq[:, None, :] - centroids[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(got, np.sort(np.argsort(-s, axis=1)[:, :5], axis=1))
        ranked = CoarseQuantizer(centroids, metric, IVFConfig(nlist=64, hnsw=False)).probe(xq, 5, lead=5)
        np.testing.assert_array_equal(ranked, np.argsort(-s, axis=1)[:, :5])


@pytest.mark.parametrize("d", [5, 8, 13, 64, 100])
def test_sign_nibble_luts_and_binary_refine_match_numpy(d, rng):
    """Nibble tables reproduce Σ_t q_t(2b_t − 1) for packbits-ordered sign bytes (odd dims pad with zero
    coordinates); the refinement scores kept rows exactly and hands the reconstruction's inner product on."""
    n, nq, k = 300, 5, 9
    nbytes = (d + 7) // 8
    bits = rng.integers(0, 2, (n, d)).astype(np.uint8)
    codes = np.packbits(bits, axis=1)
    qw = rng.standard_normal((nq, d)).astype(np.float32)
    exact = qw @ (2.0 * bits - 1).T  # (nq, n)
    lut = sign_nibble_luts(qw, nbytes)
    assert lut.shape == (nq, 2 * nbytes, 16)
    np.testing.assert_allclose(lut, ref.sign_nibble_luts_ref(qw, nbytes), rtol=1e-5, atol=1e-5)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    sums = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes))
    np.testing.assert_allclose(offset[:, None] + scale[:, None] * sums, exact, atol=float(scale.max()) * nbytes + 1e-4)

    rows = rng.integers(0, n, (nq, k)).astype(np.int64)
    rows[1, 3:] = -1
    row_a = rng.standard_normal(n).astype(np.float32)
    row_b = rng.uniform(0.5, 2, n).astype(np.float32)
    level = rng.uniform(0.1, 1, n).astype(np.float32)
    qconst = rng.standard_normal(nq).astype(np.float32)
    qc = rng.standard_normal(nq).astype(np.float32)
    for fn in (binary_refine, binary_refine_serial):
        vals, out_rows, ip = fn(lut, codes, rows, qconst, row_a, row_b, qc, level)
        np.testing.assert_array_equal(out_rows, rows)
        s = np.take_along_axis(exact, np.maximum(rows, 0), axis=1)
        ok = rows >= 0
        est = s * row_b[rows] + row_a[rows] + qconst[:, None]
        np.testing.assert_allclose(vals[ok], est[ok], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ip[ok], (qc[:, None] + level[rows] * s)[ok], rtol=1e-5, atol=1e-4)
        assert np.isneginf(vals[~ok]).all()


@pytest.mark.parametrize("m", [1, 2, 8, 256])
def test_fwht_rows_matches_hadamard_matrix(m, rng):
    x = rng.standard_normal((5, m)).astype(np.float32)
    for fn in (fwht_rows, fwht_rows_serial):
        y = x.copy()
        fn(y)  # in place
        np.testing.assert_allclose(y, ref.fwht_ref(x), rtol=1e-5, atol=1e-4)
