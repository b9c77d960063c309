"""4-bit PQ fast-scan kernels against numpy references: layouts, exact integer sums, fused top-k, fallbacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from vqsearch.kernels import fastscan as fs

LAYOUTS = ("pshufb", "vbmi")
NO_BOUNDS = np.zeros((0, 4), np.float32)
EMPTY_F = np.zeros(0, np.float32)
EMPTY_B = np.zeros(0, np.bool_)


# ----------------------------------------------------------------------------- references
def _nibbles(codes: np.ndarray, m: int) -> np.ndarray:
    """Plain codes (n, B) → sub-quantiser codes (n, m) (low nibble first)."""
    nib = np.empty((codes.shape[0], 2 * codes.shape[1]), np.int64)
    nib[:, 0::2] = codes & 15
    nib[:, 1::2] = codes >> 4
    return nib[:, :m]


def _ref_sums(lut_u8: np.ndarray, codes: np.ndarray) -> np.ndarray:
    nib = _nibbles(codes, lut_u8.shape[1])
    out = np.zeros((lut_u8.shape[0], codes.shape[0]), np.int64)
    for p in range(lut_u8.shape[1]):
        out += lut_u8[:, p, :][:, nib[:, p]]
    return out


def _ref_scores(lut_u8, scale, offset, codes, row_a, row_b):
    """Float32 scores before the range bias, in the kernel's operation order."""
    s = scale[:, None] * _ref_sums(lut_u8, codes).astype(np.float32) + offset[:, None]
    if row_b.size:
        s = s * row_b[None, :]
    if row_a.size:
        s = s + row_a[None, :]
    return s.astype(np.float32)


def _query_rows(base, ranges, bias, live, q):
    """(rows, float32 scores) a scan of query ``q`` sees: live rows of its ranges, scored ``base + bias``."""
    n = base.shape[1]
    cand_rows, cand_scores = [], []
    for r in range(ranges.shape[1]):
        lo, hi = max(ranges[q, r, 0], 0), min(ranges[q, r, 1], n)
        idx = np.arange(lo, hi)
        if live.size:
            idx = idx[live[idx]]
        cand_rows.append(idx)
        cand_scores.append(base[q, idx] + bias[q, r])
    return np.concatenate(cand_rows), np.concatenate(cand_scores).astype(np.float32)


def _check_topk(vals, rows, base, ranges, bias, live, k):
    """Scores equal the reference top-k exactly; returned rows are valid, distinct and carry their score."""
    for q in range(vals.shape[0]):
        cr, cs = _query_rows(base, ranges, bias, live, q)
        order = np.argsort(-cs, kind="stable")[:k]
        want = cs[order]
        got = min(k, cr.size)
        np.testing.assert_array_equal(vals[q, :got], want)
        assert np.all(rows[q, got:] == -1) and np.all(np.isneginf(vals[q, got:]))
        score_of = dict(zip(cr.tolist(), cs.tolist()))
        assert len(set(rows[q, :got].tolist())) == got
        for v, i in zip(vals[q, :got], rows[q, :got]):
            assert int(i) in score_of and np.float32(score_of[int(i)]) == v


def _data(rng, n, m, nq):
    nbytes = (m + 1) // 2
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    if m % 2:
        codes[:, -1] &= 15  # the phantom sub-quantiser's nibble is zero in real codes
    lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
    return codes, lut


def _full(nq: int, n: int) -> np.ndarray:
    r = np.zeros((nq, 1, 2), np.int64)
    r[:, 0, 1] = n
    return r


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,nbytes", [(1, 1), (31, 3), (32, 4), (33, 48), (100, 7)])
def test_pack_roundtrip(layout, n, nbytes, rng):
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    blocks = fs.pack_fastscan(codes, layout)
    assert fs.fastscan_layout(blocks) == layout and blocks.shape[0] == (n + 31) // 32
    np.testing.assert_array_equal(fs.unpack_fastscan(blocks, n, nbytes), codes)
    assert not fs.unpack_fastscan(blocks, (n + 31) // 32 * 32)[n:].any()  # padding rows are zero codes


def test_pack_documented_positions(rng):
    codes = rng.integers(0, 256, (70, 6), dtype=np.uint8)
    p = fs.pack_fastscan(codes, "pshufb")
    v = fs.pack_fastscan(codes, "vbmi")
    assert p.shape == (3, 6, 32) and v.shape == (3, 2, 32, 4)
    for row in range(70):
        b, w = divmod(row, 32)
        h, u = divmod(w, 16)
        for j in range(6):
            assert p[b, j, 2 * u + h] == codes[row, j]
            assert v[b, j // 4, w, j % 4] == codes[row, j]
    assert not v[:, 1, :, 2:].any()  # bytes 6, 7 of the last chunk are padding


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError):
        fs.pack_fastscan(np.zeros(5, np.uint8))
    with pytest.raises(ValueError):
        fs.pack_fastscan(np.zeros((5, 2), np.uint8), "avx9")


# ----------------------------------------------------------------------------- tables
@pytest.mark.parametrize("m", [1, 7, 96, 300])
def test_quantize_luts_bounds(m, rng):
    lut = rng.standard_normal((5, m, 16)).astype(np.float32) * rng.uniform(0.1, 10, (5, m, 1)).astype(np.float32)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    levels = min(255, 65535 // m)
    assert lut_u8.shape == (5, m + m % 2, 16) and lut_u8.dtype == np.uint8
    assert lut_u8.max() <= levels and lut_u8.max() == levels  # the widest table spans all levels
    assert lut_u8[:, :m].min(axis=2).max() == 0  # every table's minimum maps to 0
    assert not lut_u8[:, m:].any()
    np.testing.assert_allclose(offset, lut.min(axis=2).sum(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scale, (lut.max(axis=2) - lut.min(axis=2)).max(axis=1) / levels, rtol=1e-6)
    serial = fs.quantize_luts(lut, parallel=False)
    for a, b in zip(serial, (lut_u8, scale, offset)):
        np.testing.assert_array_equal(a, b)


def test_quantize_constant_tables():
    lut_u8, scale, offset = fs.quantize_luts(np.full((2, 3, 16), 0.5, np.float32))
    assert not lut_u8.any() and not scale.any()
    np.testing.assert_allclose(offset, 1.5)


def test_ip_luts(rng):
    m, dsub = 12, 3
    xq = rng.standard_normal((6, m * dsub)).astype(np.float32)
    cent = rng.standard_normal((m, 16, dsub)).astype(np.float32)
    lut = fs.ip_luts(xq, cent)
    np.testing.assert_allclose(lut, np.einsum("qpd,pcd->qpc", xq.reshape(6, m, dsub), cent), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fs.ip_luts(xq, cent, parallel=False), lut)
    for a, b in zip(fs.ip_luts_u8(xq, cent), fs.quantize_luts(lut)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        fs.ip_luts(xq[:, :-1], cent)


# ----------------------------------------------------------------------------- block kernels
def _harness(kern):
    @njit
    def run(lut, lut_off, lut_stride, codes, off0, off1, nsteps, minsum, sums, masks):
        kern(lut, lut_off, lut_stride, codes, off0, off1, nsteps, minsum, sums, masks)

    return run


@pytest.mark.parametrize("kind,qb", [("avx2", 1), ("avx2", 4), ("avx512", 8), ("vbmi", 1), ("vbmi", 8)])
def test_simd_block_kernel_equals_scalar_twin(kind, qb, rng):
    need = {"avx2": fs.HAS_AVX2, "avx512": fs.HAS_AVX512, "vbmi": fs.HAS_VBMI}[kind]
    if not need:
        pytest.skip(f"CPU lacks the features of the {kind} kernel")
    m, n = 41, 96
    codes, lut = _data(rng, n, m, qb)
    lut_u8, _, _ = fs.quantize_luts(lut)
    blocks = fs.pack_fastscan(codes, "vbmi" if kind == "vbmi" else "pshufb")
    nsteps = blocks.shape[1]
    scratch = np.zeros(qb * nsteps * 128 + 64, np.uint8)
    tbase, tstride = fs._expand_luts(lut_u8, 0, qb, nsteps, kind == "vbmi", scratch)
    bstride = blocks[0].size
    ref = _ref_sums(lut_u8, codes)
    minsum = np.array([0, 65535, 1000, 1500, 2000, 2500, 3000, 3500][:qb], np.int64)
    twin = {"avx2": fs._scalar_avx2, "avx512": fs._scalar_avx512, "vbmi": fs._scalar_vbmi}[kind]
    run = _harness(fs._make_kernel(kind, qb))
    width = 64 if kind == "avx512" else 32
    for b in (0, 1) if width == 64 else (0, 1, 2):
        outs = []
        for fn in (run, twin):
            sums = np.zeros((qb, 64), np.uint16)
            masks = np.zeros(qb, np.int64)
            fn(scratch, tbase, tstride, blocks, b * bstride, (b + 1) * bstride, nsteps, minsum, sums, masks)
            outs.append((sums, masks))
        (s1, m1), (s2, m2) = outs
        np.testing.assert_array_equal(s1[:, :width], s2[:, :width])
        np.testing.assert_array_equal(m1, m2)
        want = ref[:, 32 * b:32 * b + width]
        np.testing.assert_array_equal(s1[:, :want.shape[1]], want)
        bits = (want >= minsum[:, None]).astype(np.uint64) << np.arange(want.shape[1], dtype=np.uint64)
        np.testing.assert_array_equal(m1.view(np.uint64), bits.sum(axis=1, dtype=np.uint64))


# ----------------------------------------------------------------------------- integer sums
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fn", [fs.fastscan_sums, fs.fastscan_sums_fallback], ids=["simd", "fallback"])
def test_sums_exact(layout, fn, rng):
    codes, lut = _data(rng, 517, 13, 5)  # odd M, n not a multiple of 32
    lut_u8, _, _ = fs.quantize_luts(lut)
    got = fn(lut_u8, fs.pack_fastscan(codes, layout), 517)
    np.testing.assert_array_equal(got, _ref_sums(lut_u8, codes))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sums_near_uint16_limit(layout, rng):
    """M = 257 tables at the top level: sums up to 65535 stay exact (the uint16 wrap-around cancels)."""
    m = 257
    codes, _ = _data(rng, 70, m, 2)
    lut_u8 = np.full((2, m + 1, 16), min(255, 65535 // m), np.uint8)
    lut_u8[:, m] = 0
    lut_u8[1, :, 3] = 0
    got = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes, layout), 70)
    np.testing.assert_array_equal(got, _ref_sums(lut_u8, codes))
    assert got[0].min() == 65535


def test_shape_mismatch_raises(rng):
    codes, lut = _data(rng, 40, 8, 2)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    blocks = fs.pack_fastscan(codes, "vbmi")
    with pytest.raises(ValueError):
        fs.fastscan_sums(lut_u8[:, :8 - 8], blocks, 40)
    with pytest.raises(ValueError):
        fs.fastscan_topk_serial(lut_u8, scale, offset, np.zeros((2, 1), np.float32), blocks, 41 + 64,
                                _full(2, 40), EMPTY_B, EMPTY_F, EMPTY_F, NO_BOUNDS, 3)


# ----------------------------------------------------------------------------- fused top-k
def _ranges_case(rng, nq, n):
    """Queries 0-7 share unaligned ranges (batched kernels), the rest get their own; some slots are empty."""
    r = 4
    ranges = np.zeros((nq, r, 2), np.int64)
    shared = np.array([[3, 70], [70, 70], [101, 333], [400, n]])
    for q in range(nq):
        if q < 8:
            ranges[q] = shared
        else:
            cuts = np.sort(rng.choice(np.arange(1, n), size=3, replace=False))
            ranges[q] = [[0, cuts[0]], [cuts[0], cuts[0]], [cuts[1] + 1, cuts[2]], [cuts[2] + 5, n + 40]]
    return ranges


def _scan_case(rng, layout, n, m, nq):
    """Random codes and tables of ``m`` sub-quantisers, packed, with the mixed ranges and random biases."""
    codes, lut = _data(rng, n, m, nq)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    ranges = _ranges_case(rng, nq, n)
    bias = rng.standard_normal((nq, ranges.shape[1])).astype(np.float32)
    return codes, lut_u8, scale, offset, fs.pack_fastscan(codes, layout), ranges, bias


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", ["plain", "a_b_signed", "b_positive", "a_b_positive_bounds"])
def test_topk_matches_reference(layout, affine, rng):
    """Plain sums, then affine row terms: b of either sign (no integer threshold), b ≥ 0 (a threshold from
    the range's own rows), and b ≥ 0 with per-block bounds (:func:`term_bounds`)."""
    n, nq, k = 517, 11, 17
    codes, lut_u8, scale, offset, blocks, ranges, bias = _scan_case(rng, layout, n, 13, nq)
    live = rng.random(n) > 0.25
    row_a = row_b = EMPTY_F
    if affine != "plain":
        row_a = rng.standard_normal(n).astype(np.float32)
        row_b = rng.uniform(-0.5 if affine == "a_b_signed" else 0.2, 2, n).astype(np.float32)
    bounds = fs.term_bounds(row_a, row_b, n) if affine.endswith("bounds") else NO_BOUNDS
    args = (lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, k)
    vals, rows = fs.fastscan_topk(*args)
    assert vals.dtype == np.float32 and rows.dtype == np.int64 and vals.shape == rows.shape == (nq, k)
    _check_topk(vals, rows, _ref_scores(lut_u8, scale, offset, codes, row_a, row_b), ranges, bias, live, k)
    assert not np.isin(rows[rows >= 0], np.flatnonzero(~live)).any()  # deleted rows never come back
    for twin in (fs.fastscan_topk_serial, fs.fastscan_topk_fallback_serial):
        v2, r2 = twin(*args)
        np.testing.assert_array_equal(v2, vals)
        np.testing.assert_array_equal(r2, rows)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kk", [6, 30, 400])
def test_confident_candidates_match_reference(layout, kk, rng):
    """fastscan_candidates returns rows whose interval s ± w reaches the exact k-th largest lower bound over
    the query's live rows (R), at most kk of them, and among them every row of R that is also among the kk
    best scores overall (a floor only sheds rows that kk better ones beat); every twin agrees."""
    n, nq, k = 700, 11, 4
    codes, lut_u8, scale, offset, blocks, ranges, bias = _scan_case(rng, layout, n, 14, nq)
    live = rng.random(n) > 0.2
    row_a = rng.standard_normal(n).astype(np.float32)
    row_b = rng.uniform(0.3, 2, n).astype(np.float32)
    row_e = rng.uniform(0, 1, n).astype(np.float32)
    qwidth = rng.uniform(0, 2, nq).astype(np.float32)
    base = _ref_scores(lut_u8, scale, offset, codes, row_a, row_b)
    results = []
    for bounds in (NO_BOUNDS, fs.term_bounds(row_a, row_b, n, row_e)):
        args = (lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, row_e, qwidth, k, kk)
        for fn in (fs.fastscan_candidates, fs.fastscan_candidates_serial, fs.fastscan_candidates_fallback):
            results.append(fn(*args))
    for vals, rows in results:
        np.testing.assert_array_equal(rows, results[0][1])
        assert vals.shape == rows.shape == (nq, kk)
        for q in range(nq):
            idx, sc = _query_rows(base, ranges, bias, live, q)
            w = qwidth[q] * row_e[idx]
            root = np.sort(sc - w)[::-1][k - 1]
            in_r = set(idx[sc + w >= root].tolist())
            top_kk = set(idx[np.argsort(-sc, kind="stable")[:kk]].tolist())
            got = rows[q] >= 0
            returned = set(rows[q, got].tolist())
            assert len(returned) == got.sum() <= kk
            assert returned <= in_r
            assert (in_r & top_kk) <= returned
            score_of = dict(zip(idx.tolist(), sc.tolist()))
            np.testing.assert_allclose(vals[q, got], [score_of[i] for i in rows[q, got]], rtol=1e-6, atol=1e-6)
            assert np.isneginf(vals[q, ~got]).all()
            if kk >= len(idx):
                assert returned == in_r


def test_topk_parallel_fallback_identical(rng):
    n, m, nq, k = 300, 10, 10, 5
    codes, lut = _data(rng, n, m, nq)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    blocks = fs.pack_fastscan(codes)
    args = (lut_u8, scale, offset, np.zeros((nq, 1), np.float32), blocks, n, _full(nq, n), EMPTY_B, EMPTY_F,
            EMPTY_F, NO_BOUNDS, k)
    for a, b in zip(fs.fastscan_topk_fallback(*args), fs.fastscan_topk(*args)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_k_larger_than_rows_pads(layout, rng):
    codes, lut = _data(rng, 40, 6, 3)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    live = np.zeros(40, bool)
    live[[2, 5, 33, 39]] = True
    ranges = np.array([[[0, 40]], [[3, 34]], [[7, 7]]], np.int64)
    vals, rows = fs.fastscan_topk(lut_u8, scale, offset, np.zeros((3, 1), np.float32), fs.pack_fastscan(codes, layout),
                                  40, ranges, live, EMPTY_F, EMPTY_F, NO_BOUNDS, 6)
    assert sorted(rows[0, :4].tolist()) == [2, 5, 33, 39] and sorted(rows[1, :2].tolist()) == [5, 33]
    assert np.all(rows[0, 4:] == -1) and np.all(rows[1, 2:] == -1) and np.all(rows[2] == -1)
    assert np.all(np.isneginf(vals[0, 4:])) and np.all(np.isneginf(vals[2]))


def test_quantised_scores_close_to_float(rng):
    m, n, nq = 96, 300, 6
    codes, lut = _data(rng, n, m, nq)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    sums = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes), n)
    approx = offset[:, None].astype(np.float64) + scale[:, None].astype(np.float64) * sums
    nib = _nibbles(codes, m)
    exact = np.zeros((nq, n))
    for p in range(m):
        exact += lut[:, p, :][:, nib[:, p]]
    bound = m * scale.astype(np.float64) / 2
    err = np.abs(approx - exact).max(axis=1)
    assert np.all(err <= bound + 1e-4), (err, bound)


def test_medium_flat_search(rng):
    """A flat search (all queries share one range) over 20k rows, M = 96: the batched kernels at scale."""
    n, m, nq, k = 20_011, 96, 20, 10
    codes, lut = _data(rng, n, m, nq)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    bias = np.zeros((nq, 1), np.float32)
    base = _ref_scores(lut_u8, scale, offset, codes, EMPTY_F, EMPTY_F)
    for layout in LAYOUTS:
        vals, rows = fs.fastscan_topk(lut_u8, scale, offset, bias, fs.pack_fastscan(codes, layout), n, _full(nq, n),
                                      EMPTY_B, EMPTY_F, EMPTY_F, NO_BOUNDS, k)
        _check_topk(vals, rows, base, _full(nq, n), bias, EMPTY_B, k)


# ----------------------------------------------------------------------------- on-disk cache
def test_cached_kernels_load_in_a_new_process(tmp_path):
    """``cache=True`` works with the intrinsics: another process loads the stored machine code and agrees."""
    script = textwrap.dedent("""
        import numpy as np
        from vqsearch.kernels import fastscan as fs
        rng = np.random.default_rng(7)
        codes = rng.integers(0, 256, (300, 12), dtype=np.uint8)
        lut_u8, scale, offset = fs.quantize_luts(rng.standard_normal((9, 24, 16)).astype(np.float32))
        ranges = np.zeros((9, 1, 2), np.int64)
        ranges[:, 0, 1] = 300
        e = np.zeros(0, np.float32)
        nb = np.zeros((0, 4), np.float32)
        vals, rows = fs.fastscan_topk_serial(lut_u8, scale, offset, np.zeros((9, 1), np.float32),
                                             fs.pack_fastscan(codes), 300, ranges, np.zeros(0, bool), e, e, nb, 5)
        print(len(fs.fastscan_topk_serial.stats.cache_hits), rows.tolist(), vals.tolist())
    """)
    here = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
                          cwd=tmp_path)
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
                          cwd=tmp_path)
    assert there.stdout.split(" ", 1)[0] == "1"  # loaded from the cache the first run wrote (or found)
    assert here.stdout.split(" ", 1)[1] == there.stdout.split(" ", 1)[1]
