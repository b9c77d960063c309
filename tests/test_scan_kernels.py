"""Scan and top-k kernels against numpy references (odd sizes, ties, masks, ranges)."""

from __future__ import annotations

import numpy as np
import pytest
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
from vqsearch.kernels.topk import merge_topk, topk_rows

EMPTY_F = np.zeros(0, np.float32)
EMPTY_B = np.zeros(0, np.bool_)


def _full_ranges(nq: int, n: int) -> np.ndarray:
    r = np.zeros((nq, 1, 2), np.int64)
    r[:, 0, 1] = n
    return r


def _ref_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


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
    ref = np.stack([tables[q][np.arange(nbytes), codes[:, :nbytes]].sum(axis=1) for q in range(nq)])
    ref = ref * row_b + row_a + bias
    ref[:, ~live] = -np.inf
    rv, rr = _ref_topk(ref, k_eff)
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
    ref = table[0][np.arange(nbytes), codes].sum(axis=1)
    ref = ref + np.where((np.arange(n) >= 900) & (np.arange(n) < 1999), 1.0, 0.0)
    ref[:100] = -np.inf
    ref[400:900] = -np.inf
    ref[1999:] = -np.inf
    np.testing.assert_array_equal(np.sort(r1[0]), np.sort(np.argsort(-ref)[:k]))


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
    ham = (np.unpackbits(qbits[:, :nbytes], axis=1, count=d)[:, None, :]
           != np.unpackbits(packed[:, :nbytes], axis=1, count=d)[None]).sum(axis=2)
    words_t = transpose_sign_words(packed, nbytes)
    hv, hr = hamming_scan_topk(qbits.view(np.uint64), words_t, _full_ranges(nq, n), EMPTY_B, k)
    np.testing.assert_array_equal(-hv, np.take_along_axis(ham, hr, axis=1))
    # ties: exactly the k smallest distances, equal distances in row order (a stable argsort)
    ref_rows = np.argsort(ham, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(hr, ref_rows)
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
                ref = np.sort(est[qi, lo:hi])[::-1][:k]
                np.testing.assert_allclose(vals[qi, : ref.size], ref, rtol=1e-4, atol=1e-3)
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
    np.testing.assert_array_equal(vals, -np.sort(-scores, axis=1)[:, :10])
    np.testing.assert_array_equal(np.take_along_axis(scores, cols, axis=1), vals)
    a_v, a_i = topk_rows(scores[:, :100], 10)
    b_v, b_i = topk_rows(scores[:, 100:], 10)
    m_v, m_i = merge_topk(a_v, a_i, b_v, b_i + 100, 10)
    np.testing.assert_array_equal(m_v, vals)
    np.testing.assert_array_equal(np.take_along_axis(scores, m_i, axis=1), vals)


@pytest.mark.parametrize("n", [1, 2, 7, 400, 1024])
def test_kth_largest_matches_sort(n, rng):
    from vqsearch.kernels.topk import kth_largest

    for trial in range(20):
        # ties, negative values, zeros of both signs and infinities all keep their float order
        x = (rng.integers(-3, 4, n) if trial % 2 else rng.standard_normal(n) * 10).astype(np.float32)
        if n > 3 and trial % 4 == 1:
            x[:3] = [-0.0, np.inf, -np.inf]
        ref = np.sort(x)[::-1]
        for k in sorted({1, n, max(1, n // 2), max(1, n // 3)}):
            assert kth_largest(x.copy(), k) == ref[k - 1]


def test_select_lists_cut_ties_and_order(rng):
    """The cut keeps the nprobe best (ties at the cut to the lowest ids); the ``lead`` best come first, best
    first (ties: lower id first), then the others in ascending id order."""
    from vqsearch.kernels.ivf import select_lists, select_lists_serial

    for trial in range(10):
        scores = (rng.integers(0, 5, (6, 50)) if trial % 2 else rng.standard_normal((6, 50))).astype(np.float32)
        bias = (rng.standard_normal(50) * (trial % 3 == 0)).astype(np.float32)
        total = scores + bias
        for nprobe in (1, 7, 49, 50, 80):
            kept = min(nprobe, 50)
            for lead in (0, 1, 3, 8, 80):
                for fn in (select_lists, select_lists_serial):
                    got = fn(scores.copy(), bias, nprobe, lead)
                    assert got.shape == (6, kept)
                    nlead = min(lead, kept)
                    for q in range(6):
                        cut = np.sort(total[q])[::-1][kept - 1]
                        above = np.flatnonzero(total[q] > cut)
                        ties = np.flatnonzero(total[q] == cut)[: kept - above.size]
                        picked = np.sort(np.concatenate([above, ties]))
                        np.testing.assert_array_equal(np.sort(got[q]), picked)
                        best = picked[np.argsort(-total[q, picked], kind="stable")][:nlead]
                        np.testing.assert_array_equal(got[q, :nlead], best)
                        np.testing.assert_array_equal(got[q, nlead:], np.setdiff1d(picked, best))


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
    from vqsearch.kernels import fastscan as fs

    n, nq, k = 300, 5, 9
    nbytes = (d + 7) // 8
    bits = rng.integers(0, 2, (n, d)).astype(np.uint8)
    codes = np.packbits(bits, axis=1)
    qw = rng.standard_normal((nq, d)).astype(np.float32)
    exact = qw @ (2.0 * bits - 1).T  # (nq, n)
    lut = sign_nibble_luts(qw, nbytes)
    assert lut.shape == (nq, 2 * nbytes, 16)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    sums = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes), n)
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
